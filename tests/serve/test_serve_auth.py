"""Tokens (writes, and reads when asked), CORS only when asked, and the options' checks."""

from __future__ import annotations

from pathlib import Path

import pytest
from serve_helpers import parts, shots

from fewshot_metric.serve import ServeOptions
from fewshot_metric.serve.server import read_token_file

TOKEN = "s3cret-token"


def _writes(client, glyph_images: Path, name: str, headers: dict) -> list:
    image = shots(glyph_images, name, slice(0, 1))
    return [
        client.post("/register", data={"label": "new"}, files=parts(image), headers=headers),
        client.post("/register_many", data={"labels": ["new"]}, files=parts(image),
                    headers=headers),
        client.post("/rename", json={"label": name, "new_label": "x"}, headers=headers),
        client.delete("/class", params={"label": "new"}, headers=headers),
    ]


def _reads(client, glyph_images: Path, name: str, headers: dict) -> list:
    return [
        client.get("/info", headers=headers),
        client.get("/metrics", headers=headers),
        client.get("/classes", headers=headers),
        client.get("/class", params={"label": name}, headers=headers),
        client.get("/thumbnail", params={"label": name}, headers=headers),
        client.post("/query", files=parts(shots(glyph_images, name, slice(1, 2))),
                    headers=headers),
        client.post("/query/embeddings", json={"embeddings": [[0.0] * 64]}, headers=headers),
    ]


def test_writes_need_the_token(serve, glyph_images: Path, names: list[str]) -> None:
    client = serve(token=TOKEN)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/register", data={"label": names[0]}, headers=bearer, files=parts(
        shots(glyph_images, names[0], slice(0, 3)))).status_code == 201
    for headers, says in (({}, "needs a token for writes"),
                          ({"Authorization": "Bearer wrong"}, "token is wrong"),
                          ({"Authorization": f"Basic {TOKEN}"}, "needs a token for writes")):
        for response in _writes(client, glyph_images, names[0], headers):
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"] == "unauthorized"
            assert says in response.json()["detail"]
    assert client.get("/classes").json()["classes"] == [{"label": names[0], "count": 3}]
    assert all(r.status_code == 200 for r in _reads(client, glyph_images, names[0], {}))
    lower = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    assert [r.status_code for r in _writes(client, glyph_images, names[0], lower)] == [
        201, 200, 200, 200]


def test_reads_need_the_token_when_asked(serve, glyph_images: Path, names: list[str]) -> None:
    client = serve(token=TOKEN, token_for_reads=True)
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    client.post("/register", data={"label": names[0]}, headers=bearer,
                files=parts(shots(glyph_images, names[0], slice(0, 3))))
    for response in _reads(client, glyph_images, names[0], {}):
        assert response.status_code == 401, response.text
        assert "needs a token for reads" in response.json()["detail"]
    assert all(r.status_code == 200 for r in _reads(client, glyph_images, names[0], bearer))
    for path in ("/health", "/", "/docs", "/openapi.json"):  # never need it
        assert client.get(path).status_code == 200


def test_cors_only_for_the_origins_given(serve) -> None:
    origin = {"Origin": "http://page.example"}
    closed = serve().get("/health", headers=origin)
    assert "access-control-allow-origin" not in closed.headers
    client = serve(cors_origins=("http://page.example",))
    assert client.get("/health", headers=origin).headers[
        "access-control-allow-origin"] == "http://page.example"
    other = client.get("/health", headers={"Origin": "http://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers
    preflight = client.options("/register", headers={
        **origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200
    assert "POST" in preflight.headers["access-control-allow-methods"]


def test_options_and_token_files_are_checked(tmp_path: Path) -> None:
    for options, says in (({"token": "  "}, "the token is empty"),
                          ({"token_for_reads": True}, "--token-for-reads needs a token"),
                          ({"max_batch": 0}, "--max-batch must be an int >= 1, got 0"),
                          ({"max_wait_ms": -1}, "--max-wait-ms must be a number >= 0"),
                          ({"max_upload_mb": 0}, "--max-upload-mb must be a number > 0"),
                          ({"max_image_pixels": 0.5}, "--max-image-pixels must be an int")):
        with pytest.raises(ValueError, match=says):
            ServeOptions(**options)
    token_file = tmp_path / "token"
    token_file.write_text("  tok-1 \nnot this line\n")
    assert read_token_file(token_file) == "tok-1"
    token_file.write_text("\n\n")
    with pytest.raises(ValueError, match=f"the token file {token_file} has no token"):
        read_token_file(token_file)
