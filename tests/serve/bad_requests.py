"""A corpus of bad HTTP requests, for any httpx client of a running server (starlette's
TestClient in the tests, a real server in benchmarks/serve_bench.py).

`BAD_REQUESTS` names each request and the status it must get; `run_bad_requests(client,
image, token)` sends them all to a server that requires `token` for writes and has a 1 MB
upload limit (`serve --max-upload-mb 1`), with one class "known" (and "other") registered,
and says per request whether it was clean: the expected status, an `{"error", "detail"}`
JSON body with a message, the classes and shot counts unchanged, and the server still
answering /health. Labels with path tricks are not bad: they are accepted as plain names
and no file is made of them (`PATH_LABELS`, checked by the caller on its folder).
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from PIL import Image

PATH_LABELS = ("../../evil", "/tmp/evil", "a/b", "..\\evil", "con", ".")


@dataclass(frozen=True)
class BadRequest:
    """`send(client, image, token)` makes the request; `status` is what it must get."""

    name: str
    status: int
    send: Callable[[Any, bytes, str], Any]


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels but holds almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + chunk(b"IEND", b""))


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _register(label: str, files: list, token: str | None) -> Callable[[Any, bytes, str], Any]:
    def send(client: Any, image: bytes, real: str) -> Any:
        return client.post("/register", data={"label": label}, files=files or [
            ("images", ("shot.png", image, "image/png"))],
            headers=_auth(real if token is None else token))
    return send


def _truncated_multipart(client: Any, image: bytes, token: str) -> Any:
    boundary = "fewshotboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"label\"\r\n\r\nnew\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"images\"; "
            f"filename=\"a.png\"\r\nContent-Type: image/png\r\n\r\n").encode() + image[:20]
    return client.post("/register", content=body, headers={
        **_auth(token), "Content-Type": f"multipart/form-data; boundary={boundary}"})


def _big_png() -> bytes:
    """A 4000x4000 PNG of noise-free grey (16M pixels, a few KB compressed)."""
    data = io.BytesIO()
    Image.new("L", (4001, 4000), 128).save(data, "PNG")
    return data.getvalue()


BAD_REQUESTS: list[BadRequest] = [
    BadRequest("malformed JSON", 422, lambda c, i, t: c.post(
        "/register", content=b'{"label": "new", "images": [', headers={
            **_auth(t), "Content-Type": "application/json"})),
    BadRequest("wrong content type", 415, lambda c, i, t: c.post(
        "/register", content=b"label=new", headers={**_auth(t), "Content-Type": "text/plain"})),
    BadRequest("no content type", 415, lambda c, i, t: c.post(
        "/query", content=b"{}", headers=_auth(t))),
    # the file part never ends, so the form has no images: a request-shape error
    BadRequest("truncated multipart", 422, _truncated_multipart),
    BadRequest("oversized upload (2 MB over a 1 MB limit)", 413, _register(
        "new", [("images", ("big.png", bytes(2 << 20), "image/png"))], None)),
    BadRequest("image bomb (100000 x 100000 declared)", 413, _register(
        "new", [("images", ("bomb.png", png_header_only(100_000, 100_000), "image/png"))],
        None)),
    BadRequest("image over the pixel limit (4001 x 4000)", 413, _register(
        "new", [("images", ("large.png", _big_png(), "image/png"))], None)),
    BadRequest("zero-byte image", 415, _register(
        "new", [("images", ("empty.png", b"", "image/png"))], None)),
    BadRequest("text as an image", 415, _register(
        "new", [("images", ("notes.png", b"shopping list\n", "image/png"))], None)),
    BadRequest("empty label", 400, _register("", [], None)),
    BadRequest("whitespace label", 400, _register(" \t ", [], None)),
    # JSON may not hold a lone surrogate: the body is not valid JSON
    BadRequest("lone surrogate label", 422, lambda c, i, t: c.post(
        "/register", content=json.dumps({"label": "a\udc80", "images": ["AAAA"]}).encode(),
        headers={**_auth(t), "Content-Type": "application/json"})),
    BadRequest("invalid base64 image", 400, lambda c, i, t: c.post(
        "/register", json={"label": "new", "images": ["not base64!"]}, headers=_auth(t))),
    BadRequest("missing token", 401, lambda c, i, t: c.post(
        "/register", data={"label": "new"}, files=[("images", ("a.png", i, "image/png"))])),
    BadRequest("wrong token", 401, _register("new", [], "not the token")),
    BadRequest("remove an unknown class", 404, lambda c, i, t: c.delete(
        "/class", params={"label": "no such class"}, headers=_auth(t))),
    BadRequest("rename an unknown class", 404, lambda c, i, t: c.post(
        "/rename", json={"label": "no such class", "new_label": "x"}, headers=_auth(t))),
    BadRequest("rename onto an existing class", 409, lambda c, i, t: c.post(
        "/rename", json={"label": "known", "new_label": "other"}, headers=_auth(t))),
    BadRequest("an unknown class", 404, lambda c, i, t: c.get(
        "/class", params={"label": "no such class"})),
    BadRequest("k = 0", 400, lambda c, i, t: c.post(
        "/query", data={"k": "0"}, files=[("images", ("a.png", i, "image/png"))])),
    BadRequest("k not a number", 422, lambda c, i, t: c.post(
        "/query", data={"k": "many"}, files=[("images", ("a.png", i, "image/png"))])),
    BadRequest("embeddings of the wrong dim", 400, lambda c, i, t: c.post(
        "/query/embeddings", json={"embeddings": [[0.5, 0.5, 0.5]]})),
    BadRequest("embeddings not numbers", 422, lambda c, i, t: c.post(
        "/query/embeddings", json={"embeddings": [["a", "b"]]})),
    BadRequest("unknown route", 404, lambda c, i, t: c.get("/no/such/route")),
    BadRequest("wrong method", 405, lambda c, i, t: c.put("/register", headers=_auth(t))),
]


def _state(client: Any, token: str) -> tuple[Any, Any]:
    classes = client.get("/classes", params={"limit": 1000}, headers=_auth(token)).json()
    return classes, client.get("/info", headers=_auth(token)).json()["shots"]


def run_bad_requests(client: Any, image: bytes, token: str) -> list[tuple[str, bool, str]]:
    """(name, clean, what happened) for every request of BAD_REQUESTS; `image` is a valid
    image file's bytes."""
    rows = []
    for bad in BAD_REQUESTS:
        before = _state(client, token)
        response = bad.send(client, image, token)
        try:
            body = response.json()
        except ValueError:
            body = None
        shaped = (isinstance(body, dict) and set(body) == {"error", "detail"}
                  and isinstance(body["detail"], str) and bool(body["detail"].strip()))
        unchanged = _state(client, token) == before
        alive = client.get("/health").status_code == 200
        clean = response.status_code == bad.status and shaped and unchanged and alive
        detail = body.get("detail") if isinstance(body, dict) else response.text[:200]
        rows.append((bad.name, clean, f"{response.status_code} (expected {bad.status}); "
                                      f"unchanged {unchanged}; alive {alive}: {detail}"))
    return rows
