"""Helpers of the server tests: images as request parts, the state a failed request must
leave alone, and a real uvicorn server on 127.0.0.1 in a thread."""

from __future__ import annotations

import base64
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn


def shots(glyph_images: Path, name: str, which: slice = slice(None)) -> list[Path]:
    return sorted((glyph_images / name).glob("*.png"))[which]


def parts(paths: list[Path]) -> list[tuple[str, tuple[str, bytes, str]]]:
    """Multipart `images` parts, each named by its path."""
    return [("images", (str(p), p.read_bytes(), "image/png")) for p in paths]


def b64(paths: list[Path]) -> list[str]:
    return [base64.b64encode(p.read_bytes()).decode("ascii") for p in paths]


def state(client, probes: list[Path]) -> dict[str, Any]:
    """Everything a request could change, as the API shows it: classes and counts, shots,
    thumbnails, and the answers to `probes`."""
    classes = client.get("/classes", params={"limit": 1000}).json()
    info = client.get("/info").json()
    return {"classes": classes, "shots": info["shots"],
            "thumbnails": {entry["label"]: client.get("/thumbnail", params={
                "label": entry["label"]}).content for entry in classes["classes"]},
            "answers": client.post("/query", data={"k": "4"}, files=parts(probes)).json()}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(app, timeout: float = 30.0) -> Iterator[str]:
    """Serves `app` with uvicorn on 127.0.0.1 (a free port) in a thread -> its URL; stops it
    (graceful shutdown, lifespan included) on exit."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError("the uvicorn server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout)
        assert not thread.is_alive(), "the uvicorn server did not stop"
