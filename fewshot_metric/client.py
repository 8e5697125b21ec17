"""Client: a `fewshot-metric serve` server with FewShotClassifier's methods.

`Client(url, token=None, timeout=30.0)` has `register`, `register_many`, `register_folder`,
`query`, `predict`, `remove`, `rename`, `classes`, `len()` and `in` with the classifier's
names, arguments and return types, plus `info()`, so code moves between in-process and remote
with one line changed. Errors come back as the Python API's exception types with the
server's message (the kind in the error body picks the type: see `fewshot_metric.serve.errors`):
ValueError (400), PermissionError (401), UnknownClassError (404), ClassExistsError (409),
OSError (413, 415, 5xx storage). Images are sent as multipart files (httpx encodes them).
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

from fewshot_metric.classifier import Prediction, check_shots, class_folders, image_name
from fewshot_metric.embedder import ImageInput
from fewshot_metric.serve.errors import ERRORS

PAGE = 1000  # classes per request when listing them all
_TYPES: dict[str, type[BaseException]] = {kind: error_type for error_type, _, kind in ERRORS}


class Client:
    """A server at `url` (e.g. "http://127.0.0.1:8000"); `token` for a server started with
    --token-file; `timeout` seconds per request."""

    def __init__(self, url: str, token: str | None = None, timeout: float = 30.0):
        headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # ----------------------------------------------------------------- description
    def info(self) -> dict[str, Any]:
        """The server's /info: classes, shots, dim, metric, mode, index, fingerprint, ..."""
        return self._call("GET", "/info")

    @property
    def classes(self) -> list[str]:
        """Class labels in insertion order (every page of /classes)."""
        return [entry["label"] for entry in self._pages()]

    def _pages(self) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self._call("GET", "/classes", params={"offset": offset, "limit": PAGE})
            yield from page["classes"]
            offset += len(page["classes"])
            if not page["classes"] or offset >= page["total"]:
                return

    def __len__(self) -> int:
        return self._call("GET", "/classes", params={"limit": 0})["total"]

    def __contains__(self, label: object) -> bool:
        if not isinstance(label, str):
            return False
        response = self._http.get("/class", params={"label": label})
        if response.status_code == 404:
            return False
        _check(response)
        return True

    # ----------------------------------------------------------------- changes
    def register(self, label: str, images: Sequence[ImageInput]) -> int:
        """Adds the shots `images` (paths or PIL images) to class `label`, new or existing:
        all of them, or on any error none. Returns the class's shot count."""
        check_shots(label, images)
        files = [("images", part) for part in _parts(images)]
        return self._call("POST", "/register", data={"label": label}, files=files)["count"]

    def register_many(self, shots: dict[str, Sequence[ImageInput]]) -> dict[str, int]:
        """Registers {label: images} in one step: all, or on any error none."""
        labels, files = [], []
        for label, images in shots.items():
            check_shots(label, images)
            for part in _parts(images):
                labels.append(label)
                files.append(("images", part))
        answers = self._call("POST", "/register_many", data={"labels": labels},
                             files=files)["classes"]
        return {label: answer["count"] for label, answer in zip(shots, answers, strict=True)}

    def register_folder(self, folder: str | Path) -> dict[str, int]:
        """Registers one class per subfolder of `folder` (its name the label, its image files
        the shots): all classes, or on any error none. -> {label: shot count}."""
        return self.register_many(class_folders(folder))

    def remove(self, label: str) -> None:
        """Removes class `label` and its shots."""
        self._call("DELETE", "/class", params={"label": label})

    def rename(self, old: str, new: str) -> None:
        self._call("POST", "/rename", json={"label": old, "new_label": new})

    # ----------------------------------------------------------------- queries
    def query(self, images: Sequence[ImageInput], k: int = 1, batch_size: int = 64
              ) -> list[Prediction]:
        """The k nearest classes of each image (paths or PIL images), in input order,
        `batch_size` images per request; `Prediction.image` is str(path) (or "<image i>")."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
        predictions = []
        for start in range(0, len(images), batch_size):
            chunk = images[start:start + batch_size]
            files = [("images", part) for part in _parts(chunk, start)]
            answers = self._call("POST", "/query", data={"k": str(k)}, files=files)
            predictions += [_prediction(answer, image_name(image, start + i))
                            for i, (image, answer)
                            in enumerate(zip(chunk, answers["predictions"], strict=True))]
        return predictions

    def predict(self, embeddings: np.ndarray, k: int = 1) -> list[Prediction]:
        """The k nearest classes of each of embeddings [N, D], in input order."""
        rows = np.asarray(embeddings, dtype=np.float64).tolist()
        answers = self._call("POST", "/query/embeddings", json={"embeddings": rows, "k": k})
        return [_prediction(answer, answer["image"]) for answer in answers["predictions"]]

    # ----------------------------------------------------------------- transport
    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise ConnectionError(f"cannot reach the fewshot-metric server at {self.url} "
                                  f"({type(error).__name__}: {error}); is `fewshot-metric "
                                  f"serve` running there?") from error
        _check(response)
        return response.json()


def _check(response: httpx.Response) -> None:
    """Raises the Python API's exception for an error response, with the server's message."""
    if response.is_success:
        return
    try:
        body = response.json()
        kind, detail = body["error"], body["detail"]
    except (ValueError, KeyError, TypeError):
        kind, detail = None, response.text or response.reason_phrase
    status = response.status_code
    error_type = _TYPES.get(kind) or (PermissionError if status == 401 else
                                      OSError if status in (413, 415) or status >= 500 else
                                      ValueError)
    raise error_type(detail)


def _parts(images: Sequence[ImageInput], first: int = 0) -> Iterator[tuple[str, bytes]]:
    """(name, bytes) of each image: a file's path as given and its contents (the server's
    errors name it as the Python API would), a PIL image as PNG named "<image i>" (i counted
    from `first`, the image's place in the caller's list)."""
    for i, image in enumerate(images, first):
        if isinstance(image, Image.Image):
            png = io.BytesIO()
            image.save(png, "PNG")
            yield image_name(image, i), png.getvalue()
        else:
            path = Path(image)
            if not path.is_file():
                raise FileNotFoundError(f"image not found: {image}; check the path")
            yield str(image), path.read_bytes()


def _prediction(answer: dict[str, Any], image: str) -> Prediction:
    return Prediction(image, tuple(answer["labels"]), tuple(answer["scores"]),
                      tuple(answer["distances"]), answer["rejected"])
