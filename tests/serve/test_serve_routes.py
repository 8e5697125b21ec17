"""Every route of the app answers as the design's table says, with the Python API's answers."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps
from prometheus_client.parser import text_string_to_metric_families
from serve_helpers import b64, parts, shots

import fewshot_metric
from fewshot_metric import FewShotClassifier


def _as_json(predictions) -> list[dict]:
    return [{**p.to_dict(), "label": p.label} for p in predictions]


def test_register_and_list_classes(serve, classifier: FewShotClassifier, glyph_images: Path,
                                   names: list[str], tiny_checkpoint: Path) -> None:
    client = serve()
    assert client.get("/health").json() == {"status": "ok"}
    first = client.post("/register", data={"label": names[0]},
                        files=parts(shots(glyph_images, names[0], slice(0, 3))))
    assert first.status_code == 201
    assert first.json() == {"label": names[0], "count": 3, "added": 3, "created": True}
    more = client.post("/register", json={"label": names[0],
                                          "images": b64(shots(glyph_images, names[0],
                                                              slice(3, 5)))})
    assert more.status_code == 200
    assert more.json() == {"label": names[0], "count": 5, "added": 2, "created": False}

    files = shots(glyph_images, names[1], slice(0, 3)) + shots(glyph_images, names[2],
                                                              slice(0, 2))
    many = client.post("/register_many", data={"labels": [names[1]] * 3 + [names[2]] * 2},
                       files=parts(files))
    assert many.status_code == 201
    assert many.json() == {"classes": [
        {"label": names[1], "count": 3, "added": 3, "created": True},
        {"label": names[2], "count": 2, "added": 2, "created": True}]}
    json_many = client.post("/register_many", json={"classes": {
        names[3]: b64(shots(glyph_images, names[3], slice(0, 2))),
        names[2]: b64(shots(glyph_images, names[2], slice(2, 3)))}})
    assert json_many.status_code == 201  # one class new
    assert [c["count"] for c in json_many.json()["classes"]] == [2, 3]

    counts = {names[0]: 5, names[1]: 3, names[2]: 3, names[3]: 2}
    assert classifier.store.counts == counts  # the app changed the classifier it serves
    page = client.get("/classes").json()
    assert page == {"total": 4, "offset": 0, "limit": 100,
                    "classes": [{"label": n, "count": c} for n, c in counts.items()]}
    assert client.get("/classes", params={"offset": 1, "limit": 2}).json()["classes"] == [
        {"label": names[1], "count": 3}, {"label": names[2], "count": 3}]
    assert client.get("/classes", params={"limit": 0}).json()["classes"] == []
    assert client.get("/classes", params={"offset": 9}).json() == {
        "total": 4, "offset": 9, "limit": 100, "classes": []}
    assert client.get("/class", params={"label": names[3]}).json() == {"label": names[3],
                                                                      "count": 2}
    assert client.get("/info").json() == {
        "classes": 4, "shots": 13, "dim": classifier.embedder.dim, "metric": "sqeuclidean",
        "mode": "prototype", "index": {"kind": "flat", "options": {}},
        "fingerprint": classifier.embedder.fingerprint, "checkpoint": str(tiny_checkpoint),
        "reject_distance": None, "temperature": 1.0, "journal": None,
        "version": fewshot_metric.__version__}


def test_query_answers_equal_the_python_api(serve, classifier: FewShotClassifier,
                                            glyph_images: Path, names: list[str]) -> None:
    client = serve()
    for name in names:
        client.post("/register", data={"label": name},
                    files=parts(shots(glyph_images, name, slice(0, 3))))
    queries = [p for name in names for p in shots(glyph_images, name, slice(3, 6))]
    expected = _as_json(classifier.query(queries, k=2))
    assert len(expected) == 12 and expected[0]["image"] == str(queries[0])

    multipart = client.post("/query", data={"k": "2"}, files=parts(queries))
    assert multipart.status_code == 200
    assert multipart.json() == {"predictions": expected}  # parts are named by their paths
    base64 = client.post("/query", json={"images": b64(queries), "k": 2})
    assert base64.json() == {"predictions": [{**answer, "image": f"image {i}"}
                                             for i, answer in enumerate(expected)]}
    default_k = client.post("/query", json={"images": b64(queries[:2])}).json()
    assert [p["labels"] for p in default_k["predictions"]] == [
        list(p.labels) for p in classifier.query(queries[:2])]  # k=1, as the Python API

    embeddings = classifier.embedder.embed(queries)
    raw = client.post("/query/embeddings", json={"embeddings": embeddings.tolist(), "k": 3})
    assert raw.json() == {"predictions": _as_json(classifier.predict(embeddings, 3))}
    assert raw.json()["predictions"][5]["image"] == "<embedding 5>"


def test_remove_rename_and_thumbnails(serve, glyph_images: Path, names: list[str]) -> None:
    client = serve()
    first_shot = shots(glyph_images, names[0])[0]
    client.post("/register", data={"label": names[0]},
                files=parts(shots(glyph_images, names[0], slice(0, 3))))
    client.post("/register", data={"label": names[1]},
                files=parts(shots(glyph_images, names[1], slice(0, 3))))
    thumbnail = client.get("/thumbnail", params={"label": names[0]})
    assert thumbnail.status_code == 200 and thumbnail.headers["content-type"] == "image/png"
    shown = Image.open(io.BytesIO(thumbnail.content))
    assert shown.format == "PNG" and shown.size == (64, 64)
    # the first shot, scaled up from 28x28 to fill 64x64
    expected = ImageOps.pad(Image.open(first_shot).convert("RGB"), (64, 64), color="white")
    assert np.array_equal(np.asarray(shown), np.asarray(expected))
    client.post("/register", data={"label": names[0]},
                files=parts(shots(glyph_images, names[0], slice(5, 6))))
    assert client.get("/thumbnail", params={"label": names[0]}).content == thumbnail.content

    assert client.post("/rename", json={"label": names[0], "new_label": "renamed"}).json() == {
        "label": "renamed"}
    assert client.get("/class", params={"label": "renamed"}).json()["count"] == 4
    assert client.get("/thumbnail", params={"label": "renamed"}).content == thumbnail.content
    gone = client.get("/thumbnail", params={"label": names[0]})
    assert gone.status_code == 404 and gone.json()["error"] == "not_found"
    assert [c["label"] for c in client.get("/classes").json()["classes"]] == ["renamed",
                                                                              names[1]]

    removed = client.delete("/class", params={"label": "renamed"})
    assert removed.json() == {"removed": "renamed", "classes": 1}
    assert client.get("/thumbnail", params={"label": "renamed"}).status_code == 404
    assert client.get("/classes").json()["classes"] == [{"label": names[1], "count": 3}]
    assert client.get("/info").json()["shots"] == 3


def _samples(client) -> dict[tuple[str, tuple], float]:
    text = client.get("/metrics").text
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def test_metrics(serve, glyph_images: Path, names: list[str]) -> None:
    client = serve()
    other = serve()  # a second app: its own registry
    client.get("/health")
    client.get("/health")
    client.get("/class", params={"label": "nope"})
    client.get("/no/such/route")
    client.post("/register", data={"label": names[0]},
                files=parts(shots(glyph_images, names[0], slice(0, 3))))
    client.post("/query", files=parts(shots(glyph_images, names[0], slice(3, 5))))
    samples = _samples(client)
    request = "fewshot_http_requests_total"
    assert samples[request, (("method", "GET"), ("route", "/health"), ("status", "200"))] == 2
    assert samples[request, (("method", "GET"), ("route", "/class"), ("status", "404"))] == 1
    assert samples[request, (("method", "GET"), ("route", "other"), ("status", "404"))] == 1
    assert samples[request, (("method", "POST"), ("route", "/register"), ("status", "201"))] == 1
    assert samples["fewshot_http_errors_total", (("kind", "unknown_class"),
                                                 ("route", "/class"))] == 1
    assert samples["fewshot_http_request_seconds_count", (("method", "GET"),
                                                          ("route", "/health"))] == 2
    assert samples["fewshot_query_batch_images_count", ()] == 1  # one embed call
    assert samples["fewshot_query_batch_images_sum", ()] == 2  # of two images
    assert samples["fewshot_store_classes", ()] == 1
    assert samples["fewshot_store_shots", ()] == 3
    assert samples["fewshot_journal_pending", ()] == 0
    assert not any(name == request and ("route", "/health") in labels and value
                   for (name, labels), value in _samples(other).items())


def test_page_docs_and_openapi(serve) -> None:
    client = serve()
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "fewshot-metric" in page.text
    assert client.get("/static/index.html").text == page.text
    docs = client.get("/docs")  # Swagger UI from the fastapi-offline package: no CDN
    assert docs.status_code == 200 and "cdn" not in docs.text
    for asset in ("swagger-ui-bundle.js", "swagger-ui.css"):
        assert f'"/static-offline-docs/{asset}"' in docs.text
        assert client.get(f"/static-offline-docs/{asset}").status_code == 200
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/health", "/info", "/metrics", "/classes", "/class",
                                  "/register", "/register_many", "/rename", "/query",
                                  "/query/embeddings", "/thumbnail"}
    register = spec["paths"]["/register"]["post"]["requestBody"]["content"]
    assert set(register) == {"application/json", "multipart/form-data"}
    assert register["multipart/form-data"]["schema"]["properties"]["images"]["items"] == {
        "type": "string", "format": "binary"}
