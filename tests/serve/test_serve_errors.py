"""Every error status of the design, with the Python API's message, and a failed request
changes nothing."""

from __future__ import annotations

import errno
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from serve_helpers import b64, parts, shots, state

from fewshot_metric import FewShotClassifier
from fewshot_metric.data.base import open_image
from fewshot_metric.store import ClassExistsError, IncompatibleEmbedderError, UnknownClassError


def _error(response, status: int, kind: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == kind
    return body["detail"]


def _message(call, error_type: type[BaseException] = ValueError) -> str:
    """The message the Python API gives for the same input."""
    with pytest.raises(error_type) as raised:
        call()
    return str(raised.value)


def _bomb() -> bytes:
    """A 5000x5000 PNG (25M pixels, over the default 16M) of a few KB."""
    data = io.BytesIO()
    Image.new("1", (5000, 5000)).save(data, "PNG")
    return data.getvalue()


@pytest.fixture
def registered(serve, glyph_images: Path, names: list[str]):
    """serve(**options) with names[0] and names[1] registered (3 shots each)."""

    def start(**options):
        client = serve(**options)
        for name in names[:2]:
            assert client.post("/register", data={"label": name}, files=parts(
                shots(glyph_images, name, slice(0, 3)))).status_code == 201
        return client

    return start


def test_bad_values_are_400_with_the_python_message(registered, classifier: FewShotClassifier,
                                                    glyph_images: Path, names: list[str]
                                                    ) -> None:
    client = registered()
    image = shots(glyph_images, names[0], slice(0, 1))
    detail = _error(client.post("/register", data={"label": "  "}, files=parts(image)), 400,
                    "bad_value")
    assert detail == _message(lambda: classifier.register("  ", image))
    detail = _error(client.post("/query", data={"k": "0"}, files=parts(image)), 400,
                    "bad_value")
    assert detail == _message(lambda: classifier.query(image, k=0))
    ragged = [[1.0, 2.0], [3.0]]
    detail = _error(client.post("/query/embeddings", json={"embeddings": ragged}), 400,
                    "bad_value")
    assert detail == _message(lambda: classifier.predict(ragged))
    huge = np.full((1, classifier.embedder.dim), 1e39)  # JSON has no NaN; float32 no 1e39
    detail = _error(client.post("/query/embeddings", json={"embeddings": huge.tolist()}), 400,
                    "bad_value")
    assert detail == _message(lambda: classifier.predict(huge)) and "not finite" in detail
    detail = _error(client.post("/query/embeddings", json={"embeddings": [[0.5] * 3]}), 400,
                    "incompatible_embedder")
    assert detail == _message(lambda: classifier.predict([[0.5] * 3]), IncompatibleEmbedderError)
    detail = _error(client.post("/query", json={"images": [*b64(image), "no base64!"]}), 400,
                    "bad_value")
    assert detail.startswith("image 1 is not valid base64")
    detail = _error(client.post("/register_many", data={"labels": ["a", "b"]},
                                files=parts(image)), 400, "bad_value")
    assert detail.startswith("got 2 labels for 1 images")
    detail = _error(client.post("/register_many", json={"classes": {"a": b64(image), "b": []}}),
                    400, "bad_value")
    assert detail == _message(lambda: classifier.register_many({"a": image, "b": []}))


def test_an_empty_store_is_a_400_to_queries(serve, classifier: FewShotClassifier,
                                            glyph_images: Path, names: list[str]) -> None:
    image = shots(glyph_images, names[0], slice(0, 1))
    detail = _error(serve().post("/query", files=parts(image)), 400, "bad_value")
    assert detail == _message(lambda: classifier.query(image))


def test_unknown_class_is_404_and_rename_onto_a_class_is_409(registered, names: list[str],
                                                             classifier: FewShotClassifier
                                                             ) -> None:
    client = registered()
    expected = _message(lambda: classifier.store.count("nope"), UnknownClassError)
    assert "no class 'nope'" in expected
    for response in (client.get("/class", params={"label": "nope"}),
                     client.delete("/class", params={"label": "nope"}),
                     client.post("/rename", json={"label": "nope", "new_label": "x"})):
        assert _error(response, 404, "unknown_class") == expected
    detail = _error(client.post("/rename", json={"label": names[0], "new_label": names[1]}),
                    409, "class_exists")
    assert detail == _message(lambda: classifier.rename(names[0], names[1]), ClassExistsError)


def test_bodies_over_the_upload_limit_are_413(registered, glyph_images: Path,
                                              names: list[str]) -> None:
    client = registered(max_upload_mb=0.01)  # 10,485 bytes
    blob = bytes(11_000)  # over the limit, so never read: not even its type is checked
    detail = _error(client.post("/register", data={"label": "a"},
                                files=[("images", ("big.png", blob))]), 413, "too_large")
    assert "upload limit of 10485 bytes (--max-upload-mb 0.01)" in detail
    streamed = client.post("/query", headers={"content-type": "application/json"},
                           content=iter([b'{"images": ["' + b"A" * 6000, b"A" * 6000 + b'"]}']))
    assert "content-length" not in streamed.request.headers  # counted as it came in
    _error(streamed, 413, "too_large")
    under = client.post("/query", files=parts(shots(glyph_images, names[0], slice(0, 1))))
    assert under.status_code == 200


def test_images_over_the_pixel_limit_are_413(serve, classifier: FewShotClassifier,
                                             glyph_images: Path, names: list[str]) -> None:
    classifier.register(names[0], shots(glyph_images, names[0], slice(0, 3)))
    client = serve(max_image_pixels=783)  # a glyph has 28 x 28 = 784
    detail = _error(client.post("/query", files=parts(shots(glyph_images, names[0],
                                                            slice(0, 1)))), 413, "too_large")
    assert "has 28x28 = 784 pixels, more than this server's limit of 783" in detail
    default = serve()
    detail = _error(default.post("/register", data={"label": "bomb"},
                                 files=[("images", ("bomb.png", _bomb()))]), 413, "too_large")
    assert detail.startswith("image bomb.png has 5000x5000 = 25000000 pixels")


def test_wrong_content_types_and_undecodable_images_are_415(registered, tmp_path: Path
                                                            ) -> None:
    client = registered()
    detail = _error(client.post("/register", content=b"label=a",
                                headers={"content-type": "text/plain"}), 415,
                    "unsupported_media_type")
    assert detail.startswith("POST /register takes multipart/form-data or application/json, "
                             "got text/plain")
    detail = _error(client.post("/rename", data={"label": "a", "new_label": "b"}), 415,
                    "unsupported_media_type")
    assert "takes application/json, got application/x-www-form-urlencoded" in detail
    detail = _error(client.post("/query", content=b"{}"), 415, "unsupported_media_type")
    assert "got no Content-Type" in detail
    junk = b"text, not pixels"
    detail = _error(client.post("/register", data={"label": "a"},
                                files=[("images", ("notes.png", junk))]), 415, "bad_image")
    assert detail == _message(lambda: open_image(junk, "notes.png"), OSError)


def test_request_shape_errors_are_422_in_the_same_body(registered, glyph_images: Path,
                                                       names: list[str]) -> None:
    client = registered()
    image = shots(glyph_images, names[0], slice(0, 1))
    cases = [
        (client.post("/register", json={"label": "a"}), "body.images: Field required"),
        (client.post("/query", content=b"{", headers={"content-type": "application/json"}),
         "body: Invalid JSON"),
        (client.post("/query", json={"images": b64(image), "k": "many"}), "body.k"),
        (client.post("/query", json={"images": []}), "body.images: List should have at least"),
        (client.get("/classes", params={"limit": 5000}), "query.limit"),
        (client.get("/class"), "query.label: Field required"),
        (client.post("/register", files=parts(image)), "body.label: Field required"),
        (client.post("/register", data={"label": "a"}, files=[("other", ("x.png", b"x"))]),
         "body.images: Field required"),
        (client.post("/register", data={"label": "a", "images": "text, not a file"},
                     files=[("other", ("x.png", b"x"))]), "body.images.0"),
    ]
    for response, where in cases:
        detail = _error(response, 422, "invalid_request")
        assert where in detail, detail


def test_journal_write_failures_are_507_or_500(registered, classifier: FewShotClassifier,
                                               glyph_images: Path, names: list[str],
                                               monkeypatch) -> None:
    client = registered()
    probes = shots(glyph_images, names[2], slice(0, 2))
    before = state(client, probes)
    for code, status, kind, says in ((errno.ENOSPC, 507, "storage_full", "disk is full"),
                                     (errno.EIO, 500, "io_error", "journal append failed")):
        def fail(*args, code=code, **kwargs):  # as the store does: nothing changed, raise
            raise OSError(code, "journal append failed")

        monkeypatch.setattr(classifier.store, "add", fail)
        detail = _error(client.post("/register", data={"label": names[2]},
                                    files=parts(probes)), status, kind)
        assert "journal append failed" in detail and says in detail
    monkeypatch.undo()
    assert state(client, probes) == before


def test_a_failed_request_changes_nothing(registered, glyph_images: Path, names: list[str],
                                          tmp_path: Path) -> None:
    client = registered(max_upload_mb=1)
    good = shots(glyph_images, names[2], slice(0, 3))
    probes = shots(glyph_images, names[0], slice(3, 6)) + shots(glyph_images, names[2],
                                                                slice(3, 4))
    before = state(client, probes)
    bad_file = [("images", ("bad.png", b"not an image"))]
    failures = [
        (client.post("/register", data={"label": names[2]}, files=parts(good) + bad_file), 415),
        (client.post("/register", data={"label": names[0]}, files=parts(good) + bad_file), 415),
        (client.post("/register", data={"label": "bomb"},
                     files=parts(good) + [("images", ("bomb.png", _bomb()))]), 413),
        (client.post("/register", data={"label": "  "}, files=parts(good)), 400),
        (client.post("/register_many", json={"classes": {names[2]: b64(good), "x": []}}), 400),
        (client.post("/register_many", data={"labels": [names[2]] * 3 + ["x"]},
                     files=parts(good) + bad_file), 415),
        (client.post("/register", data={"label": names[3]},
                     files=[("images", ("huge.png", bytes(1_100_000)))]), 413),
        (client.post("/rename", json={"label": "nope", "new_label": "x"}), 404),
        (client.post("/rename", json={"label": names[0], "new_label": names[1]}), 409),
        (client.post("/rename", json={"label": names[0], "new_label": " "}), 400),
        (client.delete("/class", params={"label": "nope"}), 404),
        (client.post("/register", content=b"{", headers={"content-type": "application/json"}),
         422),
        (client.post("/register", content=b"x", headers={"content-type": "image/png"}), 415),
    ]
    assert [response.status_code for response, _ in failures] == [s for _, s in failures]
    assert state(client, probes) == before


def test_routing_and_multipart_errors_take_the_same_body(registered) -> None:
    client = registered()
    detail = _error(client.get("/no/such/route"), 404, "not_found")
    assert detail == "GET /no/such/route: Not Found; see /docs for this server's routes"
    assert _error(client.put("/class"), 405, "method_not_allowed").startswith("PUT /class")
    truncated = (b'--cut\r\nContent-Disposition: form-data; name="label"\r\n\r\na\r\n'
                 b'--cut\r\nContent-Disposition: form-data; name="images"; filename="x.png"'
                 b'\r\nContent-Type: image/png\r\n\r\n\x89PNG')
    response = client.post("/register", content=truncated,
                           headers={"content-type": "multipart/form-data; boundary=cut"})
    # the file part never ended (no closing boundary), so the form has no images
    assert "body.images: Field required" in _error(response, 422, "invalid_request")
    assert client.get("/health").status_code == 200


def test_a_client_that_went_away_is_not_a_server_error() -> None:
    from starlette.requests import ClientDisconnect

    from fewshot_metric.serve.errors import describe

    status, kind, _ = describe(ClientDisconnect())
    assert (status, kind) == (499, "client_disconnected")  # under 500: not logged as an error
