"""`fewshot-metric serve` as a process: create the store, own it, answer the client, stop on
SIGTERM with every change folded into the store folder."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from serve_helpers import free_port, shots

from fewshot_metric import FewShotClassifier, PrototypeStore
from fewshot_metric.cli import main
from fewshot_metric.client import Client


def _serve(store: Path, port: int, log: Path, *flags: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "fewshot_metric.cli", "serve", "--store", str(store),
               "--port", str(port), "--device", "cpu", *flags]
    with open(log, "w") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


def _wait_for_health(url: str, server: subprocess.Popen, log: Path,
                     timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the server exited with {server.returncode}:\n{log.read_text()}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"the server did not answer /health within {timeout} s:\n{log.read_text()}")


def test_serve_creates_owns_and_folds_the_store(tiny_checkpoint: Path, glyph_images: Path,
                                                names: list[str], tmp_path: Path) -> None:
    store, log = tmp_path / "store", tmp_path / "serve.log"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = _serve(store, port, log, "--checkpoint", str(tiny_checkpoint))
    try:
        _wait_for_health(url, server, log)
        queries = [p for name in names for p in shots(glyph_images, name, slice(4, 6))]
        with Client(url, timeout=30) as remote:
            assert remote.register_folder(glyph_images) == {name: 6 for name in names}
            remote.rename(names[3], "renamed")
            answers = remote.query(queries, k=2)
            journal = remote.info()["journal"]
        assert journal["pending"] == 2  # one register_many, one rename; not yet folded
        second = subprocess.run(
            [sys.executable, "-m", "fewshot_metric.cli", "serve", "--store", str(store),
             "--port", str(free_port())], capture_output=True, text=True, timeout=120)
        assert second.returncode == 2
        assert f"owned by fewshot-metric serve {url}" in second.stderr
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0, log.read_text()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=30)
    counts = {**{name: 6 for name in names[:3]}, "renamed": 6}
    loaded = FewShotClassifier.load(store, device="cpu")
    assert loaded.store.counts == counts
    assert loaded.query(queries, k=2) == answers
    assert PrototypeStore.load(store, mmap=True).counts == counts  # folded: nothing pending
    assert (tmp_path / "store.thumbnails.sqlite").is_file()


def test_serve_refuses_bad_starts(tmp_path: Path, capsys) -> None:
    assert main(["serve", "--store", str(tmp_path / "none")]) == 2
    assert "pass --checkpoint CKPT to create one" in capsys.readouterr().err
    empty = tmp_path / "token"
    empty.write_text("\n")
    assert main(["serve", "--store", str(tmp_path / "none"), "--token-file", str(empty)]) == 2
    assert f"the token file {empty} has no token" in capsys.readouterr().err
    assert main(["serve", "--store", str(tmp_path / "none"), "--token-for-reads"]) == 2
    assert "--token-for-reads needs a token" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()
