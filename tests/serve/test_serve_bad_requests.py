"""The bad-request corpus (bad_requests.py) against the app: each a clean 4xx, nothing
changed, the server still answering; labels with path tricks are plain names."""

from __future__ import annotations

from pathlib import Path

from bad_requests import BAD_REQUESTS, PATH_LABELS, run_bad_requests
from serve_helpers import parts, shots


def test_every_bad_request_gets_a_clean_4xx_and_changes_nothing(
        serve, glyph_images: Path, names: list[str], tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a label used as a relative path would land here
    client = serve(token="t0ken", max_upload_mb=1.0)
    auth = {"Authorization": "Bearer t0ken"}
    for label, name in (("known", names[0]), ("other", names[1])):
        assert client.post("/register", data={"label": label}, headers=auth,
                           files=parts(shots(glyph_images, name, slice(0, 2)))).status_code == 201
    image = shots(glyph_images, names[2], slice(0, 1))[0].read_bytes()
    rows = run_bad_requests(client, image, "t0ken")
    assert [name for name, _, _ in rows] == [bad.name for bad in BAD_REQUESTS]
    assert [(name, why) for name, clean, why in rows if not clean] == []
    assert {status for status in (bad.status for bad in BAD_REQUESTS)} == {
        400, 401, 404, 405, 409, 413, 415, 422}

    for label in PATH_LABELS:
        response = client.post("/register", data={"label": label}, headers=auth,
                               files=parts(shots(glyph_images, names[3], slice(0, 1))))
        assert response.status_code == 201 and response.json()["label"] == label
    assert list(tmp_path.iterdir()) == []
    assert not Path("/tmp/evil").exists()
    listed = client.get("/classes", params={"limit": 100}).json()["classes"]
    assert [entry["label"] for entry in listed] == ["known", "other", *PATH_LABELS]
