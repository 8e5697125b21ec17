"""fewshot_metric.client.Client against a real uvicorn server on 127.0.0.1: the methods of
FewShotClassifier, the same answers, the same exception types and messages."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
from PIL import Image
from serve_helpers import free_port, running_server, shots

import fewshot_metric.client as client_module
from fewshot_metric import FewShotClassifier
from fewshot_metric.client import Client
from fewshot_metric.data.base import open_image
from fewshot_metric.serve import ServeOptions, create_app
from fewshot_metric.store import ClassExistsError, UnknownClassError


def _message(call, error_type: type[BaseException]) -> str:
    with pytest.raises(error_type) as raised:
        call()
    return str(raised.value)


def test_client_methods_match_the_classifier(classifier: FewShotClassifier, glyph_images: Path,
                                             names: list[str], tmp_path: Path,
                                             monkeypatch) -> None:
    folder = tmp_path / "folder"
    for name in names[2:]:
        (folder / name).mkdir(parents=True)
        for path in shots(glyph_images, name, slice(0, 3)):
            (folder / name / path.name).write_bytes(path.read_bytes())
    with running_server(create_app(classifier)) as url, Client(url, timeout=10) as remote:
        assert remote.register(names[0], shots(glyph_images, names[0], slice(0, 2))) == 2
        pil = [Image.open(p) for p in shots(glyph_images, names[0], slice(2, 3))]
        assert remote.register(names[0], pil) == 3
        assert remote.register_many({names[1]: shots(glyph_images, names[1], slice(0, 3)),
                                     names[0]: shots(glyph_images, names[0], slice(3, 4))}
                                    ) == {names[1]: 3, names[0]: 4}
        assert remote.register_folder(folder) == {names[2]: 3, names[3]: 3}
        assert classifier.store.counts == {names[0]: 4, names[1]: 3, names[2]: 3, names[3]: 3}

        monkeypatch.setattr(client_module, "PAGE", 3)  # classes come in pages of 3
        assert remote.classes == classifier.classes == names
        assert len(remote) == 4 and names[3] in remote and "nope" not in remote
        info = remote.info()
        assert (info["classes"], info["shots"], info["dim"]) == (4, 13, classifier.embedder.dim)

        queries = [p for name in names for p in shots(glyph_images, name, slice(4, 6))]
        assert remote.query(queries, k=2) == classifier.query(queries, k=2)  # exactly
        chunked = remote.query(queries, k=2, batch_size=3)  # requests of 3, 3 and 2 images
        assert [(p.image, p.labels) for p in chunked] == [
            (p.image, p.labels) for p in classifier.query(queries, k=2)]
        [from_pil] = remote.query([Image.open(queries[0])])
        assert from_pil.image == "<image 0>"
        assert from_pil.labels == classifier.query([Image.open(queries[0])])[0].labels
        embeddings = classifier.embedder.embed(queries)
        assert remote.predict(embeddings, k=3) == classifier.predict(embeddings, 3)

        remote.rename(names[3], "renamed")
        assert classifier.classes[-1] == "renamed"
        remote.remove("renamed")
        assert remote.classes == names[:3]


def test_client_raises_the_python_api_errors(classifier: FewShotClassifier, glyph_images: Path,
                                             names: list[str], tmp_path: Path) -> None:
    classifier.register(names[0], shots(glyph_images, names[0], slice(0, 3)))
    classifier.register(names[1], shots(glyph_images, names[1], slice(0, 3)))
    image = shots(glyph_images, names[0], slice(3, 4))
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    app = create_app(classifier, ServeOptions(max_upload_mb=0.01))
    with running_server(app) as url, Client(url, timeout=10) as remote:
        for call, error_type in (
                (lambda c: c.remove("nope"), UnknownClassError),
                (lambda c: c.rename("nope", "x"), UnknownClassError),
                (lambda c: c.rename(names[0], names[1]), ClassExistsError),
                (lambda c: c.register("  ", image), ValueError),
                (lambda c: c.register("x", str(image[0])), ValueError),  # one path, no list
                (lambda c: c.register("x", []), ValueError),
                (lambda c: c.query(image, k=0), ValueError),
                (lambda c: c.register_many({"x": []}), ValueError)):
            assert _message(partial(call, remote), error_type) == _message(
                partial(call, classifier), error_type)
        assert _message(lambda: remote.register("x", [bad]), OSError) == _message(
            lambda: open_image(bad.read_bytes(), str(bad)), OSError)  # names the path given
        with pytest.raises(OSError, match="upload limit"):
            remote.register("x", image * 60)
        with pytest.raises(FileNotFoundError, match="image not found"):
            remote.query([tmp_path / "gone.png"])
    assert classifier.store.counts == {names[0]: 3, names[1]: 3}


def test_client_token_and_unreachable_server(classifier: FewShotClassifier, glyph_images: Path,
                                             names: list[str]) -> None:
    image = shots(glyph_images, names[0], slice(0, 2))
    app = create_app(classifier, ServeOptions(token="tok"))
    with running_server(app) as url:
        with Client(url, timeout=10) as anonymous, pytest.raises(PermissionError,
                                                                 match="needs a token"):
            anonymous.register(names[0], image)
        with Client(url, token="wrong", timeout=10) as wrong, pytest.raises(
                PermissionError, match="token is wrong"):
            wrong.register(names[0], image)
        with Client(url, token="tok", timeout=10) as right:
            assert right.register(names[0], image) == 2
            assert right.query(image)[0].label == names[0]
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    with Client(url, timeout=5) as nobody, pytest.raises(ConnectionError, match=url):
        nobody.info()
