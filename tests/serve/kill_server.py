"""SIGKILL a running `fewshot-metric serve` in the middle of a stream of registers and
removes, restart it, and check what the store kept (tests and benchmarks/serve_bench.py).

Each trial starts the server on the same store (the start folds what the killed one left in
the journal), streams up to `requests` changes from a client thread (a new class from one
image, or, three times in ten, the removal of a class this trial registered), SIGKILLs the
server after a random number of them, then loads the store folder in this process. An
acknowledged change is a response with status 2xx: it must be in the store (a registered
class present, a removed one gone). A change in flight when the server died may or may not
be; `unacknowledged_present` counts those that are.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np

from fewshot_metric.store import PrototypeStore


@dataclass
class KillReport:
    """Totals over the trials; `problems` lists what went wrong, one line each."""

    trials: int = 0
    loadable: int = 0
    acknowledged: int = 0
    acknowledged_present: int = 0
    unacknowledged_present: int = 0
    killed_after: list[int] = field(default_factory=list)  # acknowledged changes per trial
    problems: list[str] = field(default_factory=list)


def start_server(store: Path, port: int, extra: tuple[str, ...] = (),
                 timeout: float = 120.0) -> subprocess.Popen:
    """`fewshot-metric serve --store store --port port` in a new process, once /health
    answers (RuntimeError, with its stderr, if it exits or does not answer in time)."""
    log = tempfile.TemporaryFile("w+")  # not a pipe: a full one would block the server
    server = subprocess.Popen(
        [sys.executable, "-m", "fewshot_metric.cli", "serve", "--store", str(store), "--port",
         str(port), "--log-level", "warning", *extra],
        stdout=subprocess.DEVNULL, stderr=log, text=True)
    server.log = log
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited with {server.returncode}: "
                               f"{server_log(server)}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    server.kill()
    raise RuntimeError(f"the server did not answer /health within {timeout:g} s")


def server_log(server: subprocess.Popen) -> str:
    """What the server started by start_server wrote to stderr so far."""
    server.log.seek(0)
    return server.log.read()


def stop_server(server: subprocess.Popen, timeout: float = 120.0) -> int:
    """SIGTERM (graceful: the journal is folded) and wait -> the exit status."""
    server.send_signal(signal.SIGTERM)
    try:
        return server.wait(timeout)
    finally:
        if server.poll() is None:
            server.kill()
        server.log.close()


def _stream(url: str, image: bytes, trial: int, requests: int, seed: int,
            sent: list[tuple[str, str]], acked: list[tuple[str, str]]) -> None:
    """Sends the trial's changes until `requests` or the server dies; appends (op, label) to
    `sent` before each request and to `acked` after each 2xx."""
    rng = np.random.default_rng([seed, trial])
    present: list[str] = []
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for i in range(requests):
            if present and rng.random() < 0.3:
                op, label = "remove", present.pop(int(rng.integers(len(present))))
            else:
                op, label = "register", f"trial {trial} class {i}"
            sent.append((op, label))
            try:
                if op == "remove":
                    response = client.delete("/class", params={"label": label})
                else:
                    response = client.post("/register", data={"label": label},
                                           files=[("images", ("shot.png", image, "image/png"))])
            except httpx.TransportError:
                return  # killed
            if response.is_success:
                acked.append((op, label))
                if op == "register":
                    present.append(label)


def server_kill_trials(trials: int, store: Path, image: bytes, port: int, seed: int = 0,
                       requests: int = 200) -> KillReport:
    """Runs `trials` kill trials on the existing store folder `store` (see the module
    docstring); `image` is one valid image file's bytes."""
    report = KillReport()
    rng = np.random.default_rng(seed)
    url = f"http://127.0.0.1:{port}"
    for trial in range(trials):
        server = start_server(store, port)
        sent: list[tuple[str, str]] = []
        acked: list[tuple[str, str]] = []
        stream = threading.Thread(target=_stream, args=(url, image, trial, requests, seed,
                                                        sent, acked))
        kill_at = int(rng.integers(1, requests))
        stream.start()
        while stream.is_alive() and len(sent) < kill_at:
            time.sleep(0.0005)
        time.sleep(float(rng.uniform(0, 0.005)))  # anywhere inside that request
        os.kill(server.pid, signal.SIGKILL)
        server.wait(30)
        server.log.close()
        stream.join(60)
        report.trials += 1
        report.killed_after.append(len(acked))
        try:
            classes = set(PrototypeStore.load(store).classes)
        except Exception as error:  # a store that does not load is what the trial counts
            report.problems.append(f"trial {trial}: the store does not load: {error}")
            continue
        report.loadable += 1
        report.acknowledged += len(acked)
        # a class whose removal was sent (acknowledged, or in flight at the kill) may be gone
        removed = {label for op, label in sent if op == "remove"}
        for op, label in acked:
            kept = (label not in classes) if op == "remove" else (
                label in classes or label in removed)
            report.acknowledged_present += kept
            if not kept:
                report.problems.append(f"trial {trial}: acknowledged {op} of {label!r} lost")
        for op, label in set(sent) - set(acked):  # in flight when the server died
            report.unacknowledged_present += (label not in classes) if op == "remove" else (
                label in classes)
    return report
