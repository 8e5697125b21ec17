"""`fewshot-metric serve` measured from outside, every rate beside the in-process baseline
measured in the same run on the same images.

The server runs as `fewshot-metric serve` in its own process on 127.0.0.1 (access log off:
`--log-level warning`). Queries come from wrk (Debian's `wrk`: C, one thread, so it takes
little of the CPU; an httpx client spent 3-5 ms of CPU per request, more than the server),
registers and the other sections from httpx in this process. On a 2-core machine clients and
server share the cores, as they would on one host. Models are untrained (the speed does not
depend on the weights): Conv-4 on 28x28 grey PNGs (the quickstart's model) and ResNet-12 on
84x84 RGB JPEGs, as in store_bench.py's query section.

Sections (`--sections`, default all):
- query: single-image `POST /query` (top-5 of 1,000 classes) latency p50 / p99 and images/s
  at 1, 8 and 64 concurrent clients, and one client sending 64 images per request (16 for
  ResNet-12), against `FewShotClassifier.query` on the same files in batches of 64 (target
  >= 0.6x at 64 clients); the server's CPU time per request; the answers compared with the
  in-process ones.
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
import json
import shutil
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
BATCH = {"conv4": 64, "resnet12": 16}  # images per request of the batched row


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
def wrk_script(images: list[bytes], suffix: str, path: Path, per_request: int = 1) -> Path:
    """A wrk Lua script whose requests are multipart `POST /query` (k=5) of `per_request`
    images each, the images one after the other, each body as httpx encodes it (with its own
    boundary)."""
    kind = "image/png" if suffix == "png" else "image/jpeg"
    bodies, types = [], []
    for i in range(0, len(images), per_request):
        request = httpx.Request("POST", "http://server/query", data={"k": str(K)}, files=[
            ("images", (f"{j}.{suffix}", images[j], kind)) for j in range(i, i + per_request)])
        bodies.append('  "' + "".join(f"\\{byte}" for byte in request.read()) + '",')
        types.append(f'  "{request.headers["content-type"]}",')
    path.write_text("\n".join([
        "local bodies = {", *bodies, "}", "local types = {", *types, "}", "local i = 0",
        "request = function()", "  i = i % #bodies + 1",
        '  return wrk.format("POST", "/query", {["Content-Type"] = types[i]}, bodies[i])',
        "end", ""]))
    return path


def wrk(url: str, script: Path, clients: int, seconds: float) -> dict[str, float]:
    """Runs wrk (one thread, `clients` connections) -> requests/s, latency p50 / p99 ms and
    the count of non-2xx answers."""
    done = subprocess.run(["wrk", "-t1", f"-c{clients}", f"-d{seconds:g}s", "--latency",
                           "-s", str(script), f"{url}/query"], capture_output=True, text=True,
                          check=True, timeout=seconds + 60)
    out = done.stdout

    def after(marker: str) -> str:
        return out.split(marker, 1)[1].split()[0]

    def ms(text: str) -> float:
        for unit, scale in (("us", 1e-3), ("ms", 1.0), ("s", 1e3)):
            if text.endswith(unit):
                return float(text[:-len(unit)]) * scale
        raise ValueError(f"wrk printed a latency without unit: {text!r}")

    bad = int(after("Non-2xx or 3xx responses:")) if "Non-2xx" in out else 0
    return {"per_s": float(after("Requests/sec:")), "p50_ms": ms(after(" 50%")),
            "p99_ms": ms(after(" 99%")), "non_2xx": bad}


def served_answers(url: str, images: list[bytes], suffix: str) -> list[list[str]]:
    """The top-5 labels the server gives each image, one request each."""
    kind = "image/png" if suffix == "png" else "image/jpeg"
    with httpx.Client(base_url=url, timeout=60.0) as client:
        return [client.post("/query", data={"k": str(K)}, files=[
            ("images", (f"{i}.{suffix}", image, kind))]).json()["predictions"][0]["labels"]
            for i, image in enumerate(images)]


def bench_query(args: argparse.Namespace, work: Path) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit("the query section drives the server with wrk: install it "
                         "(Debian/Ubuntu: apt-get install wrk)")
    rows = []
    for name, kwargs, size, fmt in QUERY_PATH_MODELS:
        if name not in args.backbones:
            continue
        # many times the latency at 64 clients (ResNet-12: a batch of 64 takes about 1.5 s)
        seconds = {"conv4": 6.0, "resnet12": 24.0}[name] / (3 if args.quick else 1)
        n_images = {"conv4": 256, "resnet12": 128}[name] // (2 if args.quick else 1)
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
        script = wrk_script(images, fmt, folder / "query.lua")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(folder / "store", port, ("--max-batch", "64",
                                                       "--max-wait-ms", "2"))
        try:
            answers = served_answers(url, images, fmt)
            same = sum(got == list(want.labels) for got, want in zip(answers, expected,
                                                                     strict=True))
            batched = wrk_script(images, fmt, folder / "batched.lua", BATCH[name])
            for clients, per_request in [(c, 1) for c in CLIENTS] + [(1, BATCH[name])]:
                before = cpu_seconds(server.pid)
                load = wrk(url, batched if per_request > 1 else script, clients, seconds)
                cpu_ms = 1000 * (cpu_seconds(server.pid) - before) / (load["per_s"] * seconds)
                per_s = load["per_s"] * per_request
                rows.append({"backbone": name, "clients": clients, **load, "images_per_s": per_s,
                             "images_per_request": per_request,
                             "batch_images_per_s": batch_rate, "ratio": per_s / batch_rate,
                             "server_cpu_ms_per_request": cpu_ms,
                             "answers_same": f"{same}/{len(answers)}"})
        finally:
            stop_server(server)
    print(f"\n### Single-image queries over HTTP (top-{K} of {QUERY_CLASSES:,} classes; wrk, "
          f"6 s per Conv-4 row, 24 s per ResNet-12 row) against FewShotClassifier.query in "
          f"batches of 64\n")
    print("| backbone | concurrent clients | images per request | images/s | latency p50 ms "
          "| p99 ms | in-process batches, images/s | ratio (target >= 0.6 at 64 clients) | "
          "server CPU ms / request | non-2xx | top-5 as in-process |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        verdict = (" PASS" if r["ratio"] >= TARGET_QUERY else " FAIL") if r["clients"] == 64 \
            else ""
        print(f"| {r['backbone']} | {r['clients']} | {r['images_per_request']} | "
              f"{r['images_per_s']:,.0f} | {r['p50_ms']:.1f} | "
              f"{r['p99_ms']:.1f} | {r['batch_images_per_s']:,.0f} | {r['ratio']:.2f}{verdict} "
              f"| {r['server_cpu_ms_per_request']:.2f} | {r['non_2xx']} | "
              f"{r['answers_same']} |")
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
                     "p99_ms": p99, "max_ms": 1000 * max(latencies),
                     "slowest": int(np.argmax(latencies)) + 1, "cli_s": cli_s,
                     "server_start_s": start_s, "server_stop_s": stop_s, "build_s": build_s})
    print("\n### Durable register of 5 shots (response = change fsync'd to the journal) "
          "against `fewshot-metric register` (load + save)\n")
    print("| store classes | registers | server p50 ms | p99 ms (target < 50 at 1M) | max ms "
          "(the n-th register) | `fewshot-metric register` s | server start s (load) | server "
          "stop s (fold) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        verdict = (" PASS" if r["p99_ms"] < TARGET_REGISTER_P99_MS else " FAIL") \
            if r["classes"] >= 1_000_000 else ""
        print(f"| {r['classes']:,} | {r['registers']} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f}"
              f"{verdict} | {r['max_ms']:.1f} ({r['slowest']}) | {r['cli_s']:.1f} | "
              f"{r['server_start_s']:.1f} | "
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
