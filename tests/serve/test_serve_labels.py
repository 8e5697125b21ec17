"""Labels over HTTP: one class per NFC form, and labels that look like paths stay labels."""

from __future__ import annotations

import os
from pathlib import Path

from serve_helpers import b64, parts, shots

from fewshot_metric.serve.thumbnails import Thumbnails

COMPOSED, DECOMPOSED = "caf\u00e9", "cafe\u0301"  # e + acute as one code point; e, combining


def test_nfc_equal_labels_are_one_class(serve, glyph_images: Path, names: list[str]) -> None:
    client = serve()
    first = client.post("/register", data={"label": COMPOSED},
                        files=parts(shots(glyph_images, names[0], slice(0, 2))))
    assert first.status_code == 201
    again = client.post("/register", json={"label": DECOMPOSED,
                                           "images": b64(shots(glyph_images, names[0],
                                                               slice(2, 3)))})
    assert again.status_code == 200
    assert again.json() == {"label": COMPOSED, "count": 3, "added": 1, "created": False}
    assert client.get("/classes").json()["classes"] == [{"label": COMPOSED, "count": 3}]
    assert client.get("/class", params={"label": DECOMPOSED}).json() == {"label": COMPOSED,
                                                                        "count": 3}
    thumbnail = client.get("/thumbnail", params={"label": COMPOSED}).content
    assert client.get("/thumbnail", params={"label": DECOMPOSED}).content == thumbnail
    assert client.delete("/class", params={"label": DECOMPOSED}).json() == {
        "removed": COMPOSED, "classes": 0}
    assert client.get("/thumbnail", params={"label": COMPOSED}).status_code == 404


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")}


def test_labels_that_look_like_paths_round_trip_and_make_no_file(
        serve, glyph_images: Path, names: list[str], tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "a" / "b" / "cwd"  # where "../../evil" would land, were it a path
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    thumbnails = tmp_path / "store.thumbnails.sqlite"
    client = serve(thumbnails=Thumbnails(thumbnails))
    before = _files(tmp_path)
    tricks = ["../../evil", "a/b", "..", "/etc/passwd", "C:\\Windows\\x", "x\x00y", "%2e%2e/z"]
    for i, label in enumerate(tricks):
        image = shots(glyph_images, names[i % 4], slice(0, 2))
        response = (client.post("/register", data={"label": label}, files=parts(image))
                    if i % 2 else client.post("/register", json={"label": label,
                                                                  "images": b64(image)}))
        assert response.status_code == 201, response.text
        assert response.json()["label"] == label
    assert [c["label"] for c in client.get("/classes").json()["classes"]] == tricks
    for label in tricks:
        assert client.get("/class", params={"label": label}).json() == {"label": label,
                                                                       "count": 2}
        assert client.get("/thumbnail", params={"label": label}).status_code == 200
    assert client.post("/rename", json={"label": "a/b", "new_label": "../c"}).json() == {
        "label": "../c"}
    assert client.get("/thumbnail", params={"label": "../c"}).status_code == 200
    assert client.delete("/class", params={"label": "../../evil"}).status_code == 200
    assert client.get("/classes").json()["total"] == len(tricks) - 1
    assert _files(tmp_path) - before <= {thumbnails.with_name(thumbnails.name + "-journal")}
    assert not any("evil" in name for _, _, files in os.walk(tmp_path) for name in files)
