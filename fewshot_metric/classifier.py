"""FewShotClassifier: an Embedder and a PrototypeStore served together.

Register classes from a few images each, query many images for their nearest classes, save
the store with the checkpoint it serves, load it back. Safe to share between threads: images
are embedded outside the lock, store changes and searches happen under it, so a query sees a
class completely or not at all.
"""

from __future__ import annotations

import math
import numbers
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fewshot_metric.embedder import Embedder, ImageInput
from fewshot_metric.store import PrototypeStore, check_label

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                  ".pgm")


def list_images(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders -> their image files (by suffix, recursively, sorted). Missing
    paths and folders without images are an error that names all of them."""
    found: list[Path] = []
    problems: list[str] = []
    for path in map(Path, paths):
        if path.is_dir():
            images = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
                            and p.is_file() and not p.name.startswith("."))
            if not images:
                problems.append(f"folder {path} holds no image files (looked for "
                                f"{', '.join(IMAGE_SUFFIXES)})")
            found.extend(images)
        elif path.exists():
            found.append(path)
        else:
            problems.append(f"no such image file or folder: {path}")
    if problems:
        raise FileNotFoundError("; ".join(problems))
    return found


def class_folders(folder: str | Path) -> dict[str, list[Path]]:
    """{subfolder name: its image files} for each class subfolder of `folder` (sorted; hidden
    ones skipped): the classes `register_folder` registers."""
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder} is not a folder; register_folder needs one "
                                 f"subfolder of images per class")
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not subfolders:
        raise FileNotFoundError(f"{folder} has no class subfolders; put each class's "
                                f"images in {folder}/<class name>/")
    return {p.name: list_images([p]) for p in subfolders}


def check_shots(label: str, images: Sequence[ImageInput]) -> None:
    """Raises ValueError unless `label` is a class label and `images` a non-empty list."""
    check_label(label, "label")
    if isinstance(images, str | Path):
        got = f"one path {str(images)!r}; pass a list: [{str(images)!r}]"
    elif isinstance(images, Image.Image):
        got = "one PIL image; pass a list: [image]"
    elif not len(images):
        got = "an empty list; pass the class's image files or PIL images"
    else:
        return
    raise ValueError(f"class {label!r} needs a non-empty list of images, got {got}")


def default_mode(head_name: str) -> str:
    """The store mode a head serves with: class means for Prototypical networks, every shot
    for the nearest-shot heads (Siamese, Matching)."""
    return "prototype" if head_name == "prototypical" else "instance"


@dataclass(frozen=True)
class Prediction:
    """One image's answer: its k nearest classes, nearest first. `labels[0]` is "unknown"
    when `rejected` (the nearest class was beyond the rejection distance)."""

    image: str
    labels: tuple[str, ...]
    scores: tuple[float, ...]
    distances: tuple[float, ...]
    rejected: bool

    @property
    def label(self) -> str:
        return self.labels[0]

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "labels": list(self.labels), "scores": list(self.scores),
                "distances": list(self.distances)}


def image_name(image: ImageInput, i: int) -> str:
    """How answers and errors name image i: its path as given, or "<image i>" for a PIL
    image."""
    return f"<image {i}>" if isinstance(image, Image.Image) else str(image)


class FewShotClassifier:
    """Embedder + PrototypeStore. A new store takes the embedder's dim, metric and fingerprint
    and the head's default mode unless `mode` is given; `index` and `index_options` pick the
    FAISS index (see `fewshot_metric.store.index_factory`). `reject_distance` (None: never
    reject) and `temperature` apply to every query and are saved with the store."""

    def __init__(self, embedder: Embedder, store: PrototypeStore | None = None, *,
                 mode: str | None = None, index: str = "flat",
                 reject_distance: float | None = None, temperature: float = 1.0,
                 **index_options: Any):
        if store is None:
            store = PrototypeStore(embedder.dim, embedder.metric,
                                   mode or default_mode(embedder.model.head_name), index,
                                   embedder.fingerprint, **index_options)
        else:
            store.check_compatible(embedder.dim, embedder.metric, embedder.fingerprint)
        self.embedder = embedder
        self.store = store
        self.reject_distance = reject_distance
        self.temperature = temperature
        self._lock = threading.RLock()

    @classmethod
    def from_checkpoint(cls, checkpoint: str | Path, device: str | None = None,
                        **kwargs: Any) -> FewShotClassifier:
        """A classifier with an empty store for `checkpoint` (kwargs as in __init__), embedding
        on `device` (default: CUDA when present)."""
        return cls(Embedder.from_checkpoint(checkpoint, device), **kwargs)

    # ----------------------------------------------------------------- description
    @property
    def classes(self) -> list[str]:
        with self._lock:
            return self.store.classes

    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, label: object) -> bool:
        return label in self.store

    def __repr__(self) -> str:
        return f"FewShotClassifier({self.embedder.source!r}, {self.store!r})"

    def _embed(self, images: Sequence[ImageInput], batch_size: int, progress: bool,
               outcome: str) -> np.ndarray:
        """embedder.embed(images); when images are unusable, an OSError that names all of
        them (found by preprocessing each image again, so a good call pays nothing)."""
        try:
            return self.embedder.embed(images, batch_size, progress)
        except OSError as first:
            problems = []
            for image in images:
                try:
                    self.embedder.preprocess(image)
                except OSError as error:
                    problems.append(str(error))
            if len(problems) < 2:
                raise
            raise OSError(f"{len(problems)} of {len(images)} images are unusable, so "
                          f"{outcome}:\n  " + "\n  ".join(problems)) from first

    # ----------------------------------------------------------------- changes
    def register(self, label: str, images: Sequence[ImageInput], batch_size: int = 64,
                 progress: bool = False) -> int:
        """Adds the shots `images` (paths or PIL images) to class `label`, new or existing:
        all of them, or on any error none. Returns the class's shot count."""
        return self.register_many({label: images}, batch_size, progress)[label]

    def register_folder(self, folder: str | Path, batch_size: int = 64,
                        progress: bool = False) -> dict[str, int]:
        """Registers one class per subfolder of `folder` (the subfolder name is the label, its
        image files the shots): all classes, or on any error none. -> {label: shot count}."""
        return self.register_many(class_folders(folder), batch_size, progress)

    def register_many(self, shots: dict[str, Sequence[ImageInput]], batch_size: int = 64,
                      progress: bool = False) -> dict[str, int]:
        """Registers {label: images} in one step: all, or on any error none."""
        labels: list[str] = []
        images: list[ImageInput] = []
        for label, class_images in shots.items():
            check_shots(label, class_images)
            labels += [label] * len(class_images)
            images += list(class_images)
        embeddings = self._embed(images, batch_size, progress, "nothing was registered")
        with self._lock:
            self.store.add(embeddings, labels)
            return {label: self.store.count(label) for label in shots}

    def remove(self, label: str) -> None:
        """Removes class `label` and its shots."""
        with self._lock:
            self.store.remove(label)

    def rename(self, old: str, new: str) -> None:
        with self._lock:
            self.store.rename(old, new)

    # ----------------------------------------------------------------- queries
    def query(self, images: Sequence[ImageInput], k: int = 1, batch_size: int = 64,
              progress: bool = False) -> list[Prediction]:
        """The k nearest classes of each image (paths or PIL images), in input order."""
        self.check_query(k)
        embeddings = self._embed(images, batch_size, progress, "no image was queried")
        names = [image_name(image, i) for i, image in enumerate(images)]
        return self.predict(embeddings, k, names)

    def predict(self, embeddings: np.ndarray, k: int = 1, names: Sequence[str] | None = None
                ) -> list[Prediction]:
        """The k nearest classes of each of embeddings [N, D] (as the embedder gives them), in
        input order; `names` [N] fill `Prediction.image` (default "<embedding i>")."""
        self.check_query(k)
        with self._lock:
            result = self.store.search(embeddings, k, self.temperature, self.reject_distance)
        if names is None:
            names = [f"<embedding {i}>" for i in range(len(result.rejected))]
        columns = zip(result.label_array.tolist(), result.scores.tolist(),  # one C loop each
                      result.distances.tolist(), result.rejected.tolist(), strict=True)
        return [Prediction(name, tuple(labels), tuple(scores), tuple(distances), rejected)
                for name, (labels, scores, distances, rejected)
                in zip(names, columns, strict=True)]

    def check_query(self, k: int) -> None:
        """Raises ValueError unless a query for the k nearest classes can be answered."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be an int >= 1 (classes per image), got {k!r}")
        if not len(self.store):
            raise ValueError("the store has no classes yet: register some first")

    def calibrate_rejection(self, known: Sequence[ImageInput], unknown: Sequence[ImageInput],
                            false_accept_rate: float = 0.05, batch_size: int = 64) -> float:
        """Sets `reject_distance` from held-out images of registered classes (`known`) and of
        other classes (`unknown`) so that at most `false_accept_rate` of the unknown ones are
        accepted; returns it."""
        known_emb = self.embedder.embed(known, batch_size)
        unknown_emb = self.embedder.embed(unknown, batch_size)
        with self._lock:
            self.reject_distance = self.store.pick_rejection_threshold(
                known_emb, unknown_emb, false_accept_rate)
        return self.reject_distance

    # ----------------------------------------------------------------- files
    def save(self, path: str | Path) -> None:
        """Saves the store to folder `path` atomically, remembering the checkpoint (absolute
        path), the rejection distance and the temperature."""
        reject = self.reject_distance
        if reject is not None and not (isinstance(reject, numbers.Real) and math.isfinite(reject)
                                       and reject >= 0):
            raise ValueError(f"reject_distance must be a number >= 0 or None, got {reject!r}")
        source = Path(self.embedder.source)
        with self._lock:
            self.store.info.update(
                checkpoint=str(source.resolve()) if source.is_file() else None,
                reject_distance=None if reject is None else float(reject),
                temperature=float(self.temperature))
            self.store.save(path)

    @classmethod
    def load(cls, path: str | Path, checkpoint: str | Path | None = None,
             device: str | None = None, mmap: bool = False) -> FewShotClassifier:
        """Loads a saved classifier. The checkpoint is the one it was saved with unless
        `checkpoint` is given; a checkpoint of another model is refused
        (IncompatibleEmbedderError). `device` as in `from_checkpoint`; `mmap=True` serves the
        store from its files, read-only (see `PrototypeStore.load`)."""
        return cls.from_store(PrototypeStore.load(path, mmap=mmap), path, checkpoint, device)

    @classmethod
    def from_store(cls, store: PrototypeStore, path: str | Path,
                   checkpoint: str | Path | None = None, device: str | None = None
                   ) -> FewShotClassifier:
        """A classifier around `store`, loaded from folder `path`, as `load` makes it (the
        checkpoint, rejection distance and temperature saved with it)."""
        if checkpoint is None:
            checkpoint = store.info.get("checkpoint")
            if checkpoint is None:
                raise ValueError(f"the store {path} does not say which checkpoint it serves; "
                                 f"pass the one it was built with (checkpoint=... or "
                                 f"--checkpoint)")
            if not Path(checkpoint).is_file():
                raise FileNotFoundError(f"the store {path} serves checkpoint {checkpoint}, which "
                                        f"is missing; pass its new location (checkpoint=... or "
                                        f"--checkpoint)")
        return cls(Embedder.from_checkpoint(checkpoint, device), store,
                   reject_distance=store.info.get("reject_distance"),
                   temperature=store.info.get("temperature", 1.0))

