"""`fewshot-metric serve` measured from outside, every rate beside the in-process baseline
measured in the same run on the same images.

The server runs as `fewshot-metric serve` in its own process on 127.0.0.1 (access log off:
`--log-level warning`); this process is the clients (httpx, one asyncio loop), so on a
2-core machine clients and server share the cores, as they would on one host. Models are
untrained (the speed does not depend on the weights): Conv-4 on 28x28 grey PNGs (the
quickstart's model) and ResNet-12 on 84x84 RGB JPEGs, as in store_bench.py's query section.

Sections (`--sections`, default all):
- query: single-image `POST /query` (top-5 of 1,000 classes) latency p50 / p99 at 1, 8 and 64
  concurrent clients, and images/s at 64 clients, against `FewShotClassifier.query` on the
  same files in batches of 64 (target >= 0.6x); the server's and the clients' CPU time per
  request; the answers compared with the in-process ones.
- register: durable `POST /register` of 5 shots (the response arrives once the change is in
  the fsync'd journal) into stores of 1k and 1M classes, p50 / p99 (target p99 < 50 ms at
  1M), against `fewshot-metric register` of the same 5 shots (load + save of the store).
- kill: SIGKILL the server at random moments in streams of 200 registers and removes,
  restart, `--kills` times (tests/serve/kill_server.py): acknowledged changes present and
  stores that load (targets 100 % and 100 %), and changes present never acknowledged.
- bad: the bad-request corpus (tests/serve/bad_requests.py) against a server with a token
  and a 1 MB upload limit: each a clean 4xx with a message, nothing changed, the server still
  answering; labels with path tricks accepted as plain names, no file made of them.

    .venv/bin/python benchmarks/serve_bench.py [--sections query,register,kill,bad]
        [--backbones conv4,resnet12] [--kills 50] [--quick] [--seed 0] [--json serve.json]
"""

from __future__ import annotations

# isort: off
import fewshot_metric.blas  # noqa: F401  (first: FAISS's OpenBLAS picks its kernels on load)
# isort: on
import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "benchmarks"), str(ROOT / "tests" / "serve")]

from bad_requests import PATH_LABELS, run_bad_requests  # noqa: E402
from kill_server import server_kill_trials, start_server, stop_server  # noqa: E402
from serve_helpers import free_port  # noqa: E402
from store_bench import QUERY_PATH_MODELS, names_from, write_images  # noqa: E402

from fewshot_metric import FewShotClassifier  # noqa: E402
from fewshot_metric.backbones import create_backbone  # noqa: E402
from fewshot_metric.config import Recipe  # noqa: E402
from fewshot_metric.distances import build_distance  # noqa: E402
from fewshot_metric.model import FewShotModel  # noqa: E402
from fewshot_metric.training.checkpoint import save_checkpoint  # noqa: E402

SECTIONS = ("query", "register", "kill", "bad")
TARGET_QUERY, TARGET_REGISTER_P99_MS = 0.6, 50.0
QUERY_CLASSES, CLIENTS, K = 1_000, (1, 8, 64), 5


def checkpoint(name: str, kwargs: dict[str, Any], path: Path, seed: int) -> Path:
    """An untrained Prototypical model with backbone `name` saved as a checkpoint."""
    torch.manual_seed(seed)
    model = FewShotModel(create_backbone(name, **kwargs), "prototypical", {},
                         build_distance("sqeuclidean"))
    save_checkpoint(path, model, Recipe().to_dict(), {"note": "untrained, for serve_bench"})
    return path


def store_of(ckpt: Path, folder: Path, n_classes: int, seed: int) -> FewShotClassifier:
    """A store of n_classes random classes for `ckpt`, saved at `folder`."""
    classifier = FewShotClassifier.from_checkpoint(ckpt, device="cpu")
    rng = np.random.default_rng(seed)
    for start in range(0, n_classes, 100_000):
        n = min(100_000, n_classes - start)
        classifier.store.add(rng.standard_normal((n, classifier.embedder.dim), np.float32),
                             [f"class {i}" for i in range(start, start + n)])
    classifier.save(folder)
    return classifier


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far (/proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100.0  # utime, stime in clock ticks


def percentiles(seconds: list[float]) -> tuple[float, float]:
    values = np.asarray(seconds) * 1000
    return float(np.percentile(values, 50)), float(np.percentile(values, 99))


# ------------------------------------------------------------------ query
async def query_load(url: str, images: list[bytes], clients: int, requests: int,
                     suffix: str) -> tuple[list[float], float, dict[int, list[str]]]:
    """`requests` single-image queries from `clients` concurrent clients -> (latencies s,
    elapsed s, {image index: top labels})."""
    latencies: list[float] = []
    answers: dict[int, list[str]] = {}
    sent = iter(range(requests))
    kind = "image/png" if suffix == "png" else "image/jpeg"
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits) as client:
        async def worker() -> None:
            for i in sent:
                image = i % len(images)
                start = time.perf_counter()
                response = await client.post("/query", data={"k": str(K)}, files=[
                    ("images", (f"{image}.{suffix}", images[image], kind))])
                latencies.append(time.perf_counter() - start)
                response.raise_for_status()
                answers[image] = response.json()["predictions"][0]["labels"]

        await worker_warmup(client, images[0], kind, suffix)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(clients)))
        elapsed = time.perf_counter() - start
    return latencies, elapsed, answers


async def worker_warmup(client: httpx.AsyncClient, image: bytes, kind: str,
                        suffix: str) -> None:
    for _ in range(8):
        (await client.post("/query", data={"k": str(K)}, files=[
            ("images", (f"warm.{suffix}", image, kind))])).raise_for_status()


def bench_query(args: argparse.Namespace, work: Path) -> dict:
    rows = []
    for name, kwargs, size, fmt in QUERY_PATH_MODELS:
        if name not in args.backbones:
            continue
        n_images = {"conv4": 256, "resnet12": 32}[name] // (4 if args.quick else 1)
        requests = {"conv4": {1: 200, 8: 400, 64: 1024},
                    "resnet12": {1: 24, 8: 48, 64: 128}}[name]
        if args.quick:
            requests = {c: max(c, n // 4) for c, n in requests.items()}
        folder = work / f"query_{name}"
        folder.mkdir()
        ckpt = checkpoint(name, kwargs, folder / "model.safetensors", args.seed)
        classifier = store_of(ckpt, folder / "store", QUERY_CLASSES, args.seed)
        paths = write_images(folder, n_images, size, fmt, kwargs["in_chans"],
                             np.random.default_rng([args.seed, 2]))
        classifier.query(paths, k=K, batch_size=64)  # warm-up
        batch_rate = 0.0
        for _ in range(3):
            start = time.perf_counter()
            expected = classifier.query(paths, k=K, batch_size=64)
            batch_rate = max(batch_rate, len(paths) / (time.perf_counter() - start))
        images = [p.read_bytes() for p in paths]
        port = free_port()
        server = start_server(folder / "store", port, ("--max-batch", "64",
                                                       "--max-wait-ms", "2"))
        try:
            for clients in CLIENTS:
                server_cpu, client_cpu = cpu_seconds(server.pid), time.process_time()
                latencies, elapsed, answers = asyncio.run(query_load(
                    f"http://127.0.0.1:{port}", images, clients, requests[clients], fmt))
                server_cpu = cpu_seconds(server.pid) - server_cpu
                client_cpu = time.process_time() - client_cpu
                p50, p99 = percentiles(latencies)
                same = sum(answers[i] == list(expected[i].labels) for i in answers)
                rows.append({"backbone": name, "clients": clients,
                             "requests": requests[clients], "p50_ms": p50, "p99_ms": p99,
                             "images_per_s": requests[clients] / elapsed,
                             "batch_images_per_s": batch_rate,
                             "ratio": requests[clients] / elapsed / batch_rate,
                             "server_cpu_ms_per_request": 1000 * server_cpu / requests[clients],
                             "client_cpu_ms_per_request": 1000 * client_cpu / requests[clients],
                             "answers_same": f"{same}/{len(answers)}"})
        finally:
            stop_server(server)
    print(f"\n### Single-image queries over HTTP (top-{K} of {QUERY_CLASSES:,} classes) against "
          f"FewShotClassifier.query in batches of 64\n")
    print("| backbone | concurrent clients | requests | latency p50 ms | p99 ms | images/s | "
          "in-process batches, images/s | ratio (target >= 0.6 at 64) | server CPU ms / request "
          "| client CPU ms / request | top-5 as in-process |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        verdict = (" PASS" if r["ratio"] >= TARGET_QUERY else " FAIL") if r["clients"] == 64 \
            else ""
        print(f"| {r['backbone']} | {r['clients']} | {r['requests']:,} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['images_per_s']:,.0f} | {r['batch_images_per_s']:,.0f} | "
              f"{r['ratio']:.2f}{verdict} | {r['server_cpu_ms_per_request']:.2f} | "
              f"{r['client_cpu_ms_per_request']:.2f} | {r['answers_same']} |")
    return {"rows": rows}


# ------------------------------------------------------------------ register
def bench_register(args: argparse.Namespace, work: Path) -> dict:
    name, kwargs, size, fmt = QUERY_PATH_MODELS[0]  # Conv-4
    ckpt = checkpoint(name, kwargs, work / "register_model.safetensors", args.seed)
    shots = write_images(work, 5, size, fmt, kwargs["in_chans"],
                         np.random.default_rng([args.seed, 3]))
    files = [("images", (p.name, p.read_bytes(), "image/png")) for p in shots]
    rows = []
    for n_classes in ((1_000, 100_000) if args.quick else (1_000, 1_000_000)):
        folder = work / f"register_{n_classes}"
        start = time.perf_counter()
        store_of(ckpt, folder, n_classes, args.seed)
        build_s = time.perf_counter() - start
        port = free_port()
        start = time.perf_counter()
        server = start_server(folder, port)
        start_s = time.perf_counter() - start
        latencies = []
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0) as client:
                for i in range(30 if args.quick else 200):
                    begin = time.perf_counter()
                    response = client.post("/register", data={"label": f"new {i}"},
                                           files=files)
                    latencies.append(time.perf_counter() - begin)
                    assert response.status_code == 201, response.text
        finally:
            start = time.perf_counter()
            stop_server(server)  # SIGTERM: folds the journal into a new snapshot
            stop_s = time.perf_counter() - start
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "fewshot_metric.cli", "register", "--store",
                        str(folder), "--label", "by the CLI", *map(str, shots), "--quiet"],
                       check=True, capture_output=True)
        cli_s = time.perf_counter() - start
        p50, p99 = percentiles(latencies)
        rows.append({"classes": n_classes, "registers": len(latencies), "p50_ms": p50,
                     "p99_ms": p99, "max_ms": 1000 * max(latencies), "cli_s": cli_s,
                     "server_start_s": start_s, "server_stop_s": stop_s, "build_s": build_s})
    print("\n### Durable register of 5 shots (response = change fsync'd to the journal) "
          "against `fewshot-metric register` (load + save)\n")
    print("| store classes | registers | server p50 ms | p99 ms (target < 50 at 1M) | max ms | "
          "`fewshot-metric register` s | server start s (load) | server stop s (fold) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        verdict = (" PASS" if r["p99_ms"] < TARGET_REGISTER_P99_MS else " FAIL") \
            if r["classes"] >= 1_000_000 else ""
        print(f"| {r['classes']:,} | {r['registers']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f}"
              f"{verdict} | {r['max_ms']:.1f} | {r['cli_s']:.1f} | {r['server_start_s']:.1f} | "
              f"{r['server_stop_s']:.1f} |")
    return {"rows": rows}


# ------------------------------------------------------------------ kill and bad requests
def bench_kill(args: argparse.Namespace, work: Path) -> dict:
    name, kwargs, size, fmt = QUERY_PATH_MODELS[0]
    ckpt = checkpoint(name, kwargs, work / "kill_model.safetensors", args.seed)
    store_of(ckpt, work / "kill_store", 1_000, args.seed)
    image = write_images(work, 1, size, fmt, kwargs["in_chans"],
                         np.random.default_rng([args.seed, 4]))[0].read_bytes()
    start = time.perf_counter()
    report = server_kill_trials(args.kills, work / "kill_store", image, free_port(),
                                args.seed)
    seconds = time.perf_counter() - start
    print(f"\n### SIGKILL during streams of 200 registers and removes, then restart "
          f"({report.trials} trials, {seconds:.0f} s)\n")
    print("| trials | acknowledged changes | present after the kill | stores that load | "
          "changes present never acknowledged | acknowledged before the kill, per trial |")
    print("| ---: | ---: | ---: | ---: | ---: | --- |")
    killed = report.killed_after
    print(f"| {report.trials} | {report.acknowledged:,} | {report.acknowledged_present:,} "
          f"({100 * report.acknowledged_present / max(report.acknowledged, 1):.0f}%) | "
          f"{report.loadable} ({100 * report.loadable / report.trials:.0f}%) | "
          f"{report.unacknowledged_present} | {min(killed)}-{max(killed)}, median "
          f"{int(np.median(killed))} |")
    for problem in report.problems:
        print(f"- {problem}")
    return {**vars(report), "seconds": seconds}


def bench_bad(args: argparse.Namespace, work: Path) -> dict:
    name, kwargs, size, fmt = QUERY_PATH_MODELS[0]
    ckpt = checkpoint(name, kwargs, work / "bad_model.safetensors", args.seed)
    folder = work / "bad" / "store"
    folder.parent.mkdir()
    store_of(ckpt, folder, 0, args.seed)
    (work / "bad" / "token").write_text("bench-token\n")
    image = write_images(work / "bad", 1, size, fmt, kwargs["in_chans"],
                         np.random.default_rng([args.seed, 5]))[0].read_bytes()
    port = free_port()
    server = start_server(folder, port, ("--token-file", str(work / "bad" / "token"),
                                         "--max-upload-mb", "1"))
    auth = {"Authorization": "Bearer bench-token"}
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60.0) as client:
            for label in ("known", "other"):
                client.post("/register", data={"label": label}, headers=auth, files=[
                    ("images", ("a.png", image, "image/png"))]).raise_for_status()
            rows = run_bad_requests(client, image, "bench-token")
            before = sorted(p.name for p in (work / "bad").iterdir())
            plain = [client.post("/register", data={"label": label}, headers=auth, files=[
                ("images", ("a.png", image, "image/png"))]).status_code == 201
                for label in PATH_LABELS]
            no_files = sorted(p.name for p in (work / "bad").iterdir()) == before \
                and not Path("/tmp/evil").exists()
    finally:
        stop_server(server)
    clean = sum(ok for _, ok, _ in rows)
    print("\n### Bad requests against a server with a token and a 1 MB upload limit\n")
    print("| request | clean (status, error body, nothing changed, server answers) | got |")
    print("| --- | --- | --- |")
    for request, ok, why in rows:
        print(f"| {request} | {'yes' if ok else 'NO'} | {why[:120].replace('|', '/')} |")
    print(f"\n{clean} of {len(rows)} clean; labels with path tricks "
          f"({', '.join(map(repr, PATH_LABELS))}): {sum(plain)} of {len(plain)} registered as "
          f"plain names, {'no' if no_files else 'SOME'} files made")
    return {"rows": rows, "clean": clean, "path_labels_registered": sum(plain),
            "no_files_made": no_files}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default=",".join(SECTIONS))
    parser.add_argument("--backbones", default="conv4,resnet12")
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--quick", action="store_true", help="fewer requests, 100k not 1M")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    sections = names_from(parser, "--sections", args.sections, SECTIONS)
    args.backbones = names_from(parser, "--backbones", args.backbones,
                                [name for name, *_ in QUERY_PATH_MODELS])
    runs = {"query": bench_query, "register": bench_register, "kill": bench_kill,
            "bad": bench_bad}
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for section in sections:
            start = time.perf_counter()
            work = Path(tmp) / section
            work.mkdir()
            figures[section] = runs[section](args, work)
            print(f"\n({section}: {time.perf_counter() - start:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
