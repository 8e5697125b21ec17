"""PrototypeStore at scale: a 10-million-class IVF-PQ store built, saved and loaded within 8 GB.

Builds a prototype-mode, squared-L2 `PrototypeStore` of C classes (default 10M) x D dims (64
or 128) with an "ivf_pq" index (nlist lists, pq_m codes of pq_bits = 8 bits: 16 bytes per
class by default), saves it, and loads it back in two fresh processes. Prints markdown tables:

- build: seconds to generate the data (not part of the build), to add it (one `store.add` per
  chunk of classes; the add that first reaches the index's train_min, 39 * max(nlist, 256)
  vectors, trains it on all vectors stored by then, see `fewshot_metric.store.index_factory`:
  with --chunk >= train_min, the first add), of the first add alone, the median of the
  others, and to save.
- memory: VmRSS (/proc/self/status, after gc and glibc's malloc_trim) before and after the
  adds, the difference per class, VmRSS after the save and after the searches, RssAnon and
  RssFile, and the peak RSS (VmHWM) of the build process and of each load process.
- disk: the bytes of every file of the saved store folder, in all and per class.
- search: recall@1 against exact search and queries/s for each nprobe (--nprobe), set with
  `store.set_index("ivf_pq", nlist=..., pq_m=..., pq_bits=..., nprobe=X)` (a search-time
  option: it should not rebuild; its seconds are printed), on the built store and on both
  loaded ones. queries/s: the queries over the seconds of one `store.search(queries, k=1)`
  call on all of them, after a warm-up call on a few.
- load: in a new "spawn" process each, so that their RSS holds nothing of the build:
  (a) `PrototypeStore.load(path)`, all in RAM, and (b) `PrototypeStore.load(path, mmap=True)`,
  the index's inverted lists and the class table memory-mapped from the store's files (a
  read-only store); seconds to load, VmRSS before and after the load and after the searches,
  peak RSS, and the search table above. A stage that raises shows its error instead.

Target: C = 10M classes with every process's peak RSS <= 8 GB, where GB = 1e9 bytes
(8e9 B = 7.45 GiB), on a 2-core, 24 GiB machine; the PASS/FAIL line checks the build process
and both load processes (FAIL too where a stage raised before its end). GB in the tables are
1e9 bytes too. Every process starts at about 0.8 GB: `import fewshot_metric` loads torch.

Data (synthetic, as store_bench.py's but made chunk by chunk, so that the benchmark never holds
more than one chunk of vectors): C // 250 cluster centres ~ N(0, I/D) (norm about 1), drawn
once from the seed (seed, C, D); chunk j of --chunk classes comes from its own generator
seeded (seed, j): each class's prototype is a random centre + N(0, 0.5^2 I/D), and class i
is added with label f"c{i}", so its class id is i (ids count from 0 in insertion order). A
query is a random class's prototype + N(0, 0.25^2 I/D) (--query-noise sets the 0.25: at 0.5,
as far from its class as the classes are from their centre, the exact top-1 is often another
class and the approximate index has closer calls to get right; classes and noise from the
seed (seed, C, D)); the prototypes they need are picked up while adding. Ground truth is the
exact top-1 over all C prototypes, chunk by chunk (`faiss.knn` per chunk, the best kept in a
`faiss.ResultHeap`), the chunks generated again. The data depend on --chunk.

The store folder goes to --out, or to a temp folder deleted at the end unless --keep (on the
disk of the system temp dir: mind its free space, and that a tmpfs /tmp would hold it in RAM).

    .venv/bin/python benchmarks/store_scale.py [--classes 10000000] [--dim 64]
        [--chunk 1000000] [--queries 2000] [--seed 0] [--query-noise 0.25] [--nlist 4096]
        [--pq-m 16] [--nprobe 8,16,32,64] [--out DIR] [--keep] [--json out.json]
"""

from __future__ import annotations

# isort: off
import fewshot_metric.blas  # noqa: F401  (first: FAISS's OpenBLAS picks its kernels on load)
# isort: on
import argparse
import json
import math
import multiprocessing
import platform
import shlex
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import faiss
import numpy as np

from fewshot_metric.store import PrototypeStore

sys.path.insert(0, str(Path(__file__).resolve().parent))
from store_bench import (  # noqa: E402
    CLASS_SPREAD,
    CLASSES_PER_CENTRE,
    QUERY_NOISE,
    blocks,
    ivf_nlist,
    machine,
    print_machine,
    proc_status,
    rss_bytes,
    timed,
    verdict,
)

PQ_BITS, WARMUP_QUERIES = 8, 16
PEAK_LIMIT = 8e9  # bytes: 8 GB, not GiB
GB = 1e9


# ------------------------------------------------------------------ data
def make_queries(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres float32 [C // 250, D], query classes int64 [Q] and query noise float32 [Q, D]."""
    rng = np.random.default_rng([args.seed, args.classes, args.dim])
    scale = np.float32(1 / math.sqrt(args.dim))
    centres = rng.standard_normal((max(1, args.classes // CLASSES_PER_CENTRE), args.dim),
                                  np.float32) * scale
    query_classes = rng.integers(args.classes, size=args.queries)
    noise = rng.standard_normal((args.queries, args.dim), np.float32) * (args.query_noise * scale)
    return centres, query_classes, noise


def chunks(args: argparse.Namespace, centres: np.ndarray) -> Iterator[tuple[slice, np.ndarray]]:
    """(classes, prototypes float32 [chunk, D]) of each chunk, from the generator (seed, j)."""
    scale = np.float32(CLASS_SPREAD / math.sqrt(args.dim))
    for j, rows in enumerate(blocks(args.classes, args.chunk)):
        rng = np.random.default_rng([args.seed, j])
        owner = rng.integers(len(centres), size=rows.stop - rows.start)
        block = rng.standard_normal((rows.stop - rows.start, args.dim), np.float32)
        block *= scale
        block += centres[owner]
        del owner
        yield rows, block
        del block  # before the next chunk is made


def exact_top1(args: argparse.Namespace, centres: np.ndarray, queries: np.ndarray
               ) -> np.ndarray:
    """The class id int64 [Q] nearest each query over all C prototypes (squared L2)."""
    heap = faiss.ResultHeap(len(queries), 1)
    for rows, block in chunks(args, centres):
        distances, ids = faiss.knn(queries, block, 1)
        heap.add_result(distances, ids + rows.start)
        del block
    heap.finalize()
    return heap.I[:, 0].copy()


# ------------------------------------------------------------------ measurements
def memory(prefix: str) -> dict[str, int]:
    """VmRSS (after gc and malloc_trim), RssAnon, RssFile and the peak VmHWM, keys prefixed."""
    rss = rss_bytes()
    status = proc_status()
    return {f"{prefix}rss": rss, f"{prefix}anon": status["RssAnon"],
            f"{prefix}file": status["RssFile"], "peak": status["VmHWM"]}


def sweep(store: PrototypeStore, queries: np.ndarray, truth: np.ndarray,
          nprobes: list[int]) -> list[dict]:
    """recall@1 against `truth` and queries/s of the store at each nprobe."""
    options, rows = store.index_options, []
    for nprobe in nprobes:
        set_s = 0.0
        if nprobe != store.index_options["nprobe"]:  # the same settings again would retrain
            _, set_s = timed(lambda nprobe=nprobe: store.set_index(
                "ivf_pq", **{**options, "nprobe": nprobe}))
        store.search(queries[:WARMUP_QUERIES], k=1)
        ids, seconds = timed(lambda: store.search(queries, k=1).ids[:, 0])
        rows.append({"nprobe": nprobe, "set_index_s": set_s,
                     "recall": float(np.mean(ids == truth)), "qps": len(queries) / seconds})
        print(f"  nprobe {nprobe}: recall@1 {rows[-1]['recall']:.4f}, "
              f"{rows[-1]['qps']:,.0f} queries/s", flush=True)
    return rows


def folder_bytes(path: Path) -> dict[str, int]:
    """Bytes of each file under the store folder."""
    return {str(f.relative_to(path)): f.stat().st_size for f in sorted(path.rglob("*"))
            if f.is_file()}


# ------------------------------------------------------------------ stages
def build_stage(args: argparse.Namespace, path: Path) -> tuple[dict, np.ndarray, np.ndarray]:
    """Builds, saves and searches the store in this process -> (figures, queries [Q, D],
    their exact top-1 [Q])."""
    centres, query_classes, noise = make_queries(args)
    store = PrototypeStore(args.dim, index="ivf_pq", nlist=args.nlist, nprobe=args.nprobe[0],
                           pq_m=args.pq_m, pq_bits=PQ_BITS)
    result = {"stage": "build", **memory("before_")}
    queries = np.empty((args.queries, args.dim), np.float32)
    add_s, data_s, start = [], 0.0, time.perf_counter()
    for rows, block in chunks(args, centres):
        mine = (query_classes >= rows.start) & (query_classes < rows.stop)
        queries[mine] = block[query_classes[mine] - rows.start]
        labels = [f"c{i}" for i in range(rows.start, rows.stop)]
        data_s += time.perf_counter() - start
        start = time.perf_counter()
        store.add(block, labels)
        seconds = time.perf_counter() - start
        add_s.append(seconds)
        del block, labels
        print(f"  add: {rows.stop:,} classes, last chunk {seconds:.1f} s", flush=True)
        start = time.perf_counter()
    result |= memory("built_")
    queries += noise
    start = time.perf_counter()
    store.save(path)
    save_s = time.perf_counter() - start
    result |= memory("saved_")
    files = folder_bytes(path)
    print(f"  saved: {sum(files.values()) / GB:.2f} GB in {save_s:.1f} s", flush=True)
    truth, truth_s = timed(lambda: exact_top1(args, centres, queries))
    print(f"  exact top-1: {truth_s:.1f} s", flush=True)
    result |= {"classes": len(store), "index_options": store.index_options, "data_s": data_s,
               "add_s": sum(add_s), "first_add_s": add_s[0], "chunk_add_s": add_s,
               "save_s": save_s, "files": files, "truth_s": truth_s,
               "own_class": float(np.mean(truth == query_classes)),
               "sweep": sweep(store, queries, truth, args.nprobe)}
    result |= memory("searched_")
    del store
    result["dropped_rss"] = rss_bytes()
    return result, queries, truth


def stage_name(mmap: bool) -> str:
    return "load(path, mmap=True)" if mmap else "load(path)"


def load_stage(path: str, mmap: bool, queries: np.ndarray, truth: np.ndarray,
               nprobes: list[int]) -> dict:
    """Loads the store (mmap=True: memory-mapped) and searches it; run in a new process.
    An error is returned in "error", with the figures up to it."""
    result = {"stage": stage_name(mmap), **memory("before_")}
    try:
        kwargs = {"mmap": True} if mmap else {}
        store, result["load_s"] = timed(lambda: PrototypeStore.load(path, **kwargs))
        result |= memory("loaded_")
        result["classes"] = len(store)
        result["sweep"] = sweep(store, queries, truth, nprobes)
        result |= memory("searched_")
    except Exception as error:
        traceback.print_exc()
        result["error"] = f"{type(error).__name__}: {error}"
    result["peak"] = proc_status()["VmHWM"]
    return result


def run_load_stage(path: Path, mmap: bool, queries: np.ndarray, truth: np.ndarray,
                   nprobes: list[int]) -> dict:
    """load_stage in a new "spawn" process (a crash of it, e.g. killed for memory, is its
    error)."""
    print(f"\nstage {stage_name(mmap)}:", flush=True)
    context = multiprocessing.get_context("spawn")
    try:
        with ProcessPoolExecutor(1, mp_context=context) as pool:
            return pool.submit(load_stage, str(path), mmap, queries, truth, nprobes).result()
    except Exception as error:
        return {"stage": stage_name(mmap), "error": f"{type(error).__name__}: {error}"}


# ------------------------------------------------------------------ tables
def gb(value: float | None) -> str:
    return "-" if value is None else f"{value / GB:.2f}"


def print_tables(args: argparse.Namespace, build: dict, loads: list[dict]) -> bool:
    """Prints every table and the PASS/FAIL line -> whether the peaks passed."""
    n, opts = args.classes, build["index_options"]
    print(f"\n### Build: {n:,} classes, D={args.dim}, ivf_pq nlist={opts['nlist']}, "
          f"pq_m={opts['pq_m']} x {opts['pq_bits']} bits, chunks of {args.chunk:,}\n")
    later = build["chunk_add_s"][1:]
    print("| data generation s | add s (incl. training) | first add s | median later add s | "
          "save s | add + save s | exact top-1 s (ground truth) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    print(f"| {build['data_s']:.1f} | {build['add_s']:.1f} | {build['first_add_s']:.1f} | "
          f"{f'{np.median(later):.2f}' if later else '-'} | {build['save_s']:.1f} | "
          f"{build['add_s'] + build['save_s']:.1f} | {build['truth_s']:.1f} |")

    print("\n### Memory (GB = 1e9 bytes; VmRSS after gc and malloc_trim)\n")
    print("| process | VmRSS before GB | VmRSS after build / load GB | per class B | "
          "RssAnon GB | RssFile GB | after save GB | after searches GB | peak RSS (VmHWM) GB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    per_class = (build["built_rss"] - build["before_rss"]) / n
    print(f"| build | {gb(build['before_rss'])} | {gb(build['built_rss'])} | {per_class:,.0f} | "
          f"{gb(build['built_anon'])} | {gb(build['built_file'])} | {gb(build['saved_rss'])} | "
          f"{gb(build['searched_rss'])} | {gb(build['peak'])} |")
    for r in loads:
        loaded = r.get("loaded_rss")
        per = "-" if loaded is None else f"{(loaded - r['before_rss']) / n:,.0f}"
        print(f"| {r['stage']} | {gb(r.get('before_rss'))} | {gb(loaded)} | {per} | "
              f"{gb(r.get('loaded_anon'))} | {gb(r.get('loaded_file'))} | - | "
              f"{gb(r.get('searched_rss'))} | {gb(r.get('peak'))} |")
    print(f"\nbuild process after dropping the store: VmRSS {gb(build['dropped_rss'])} GB")

    files = build["files"]
    total = sum(files.values())
    print(f"\n### Disk: the saved store folder ({total / GB:.3f} GB)\n")
    print("| file | bytes | bytes per class |\n| --- | ---: | ---: |")
    for name, size in [*files.items(), ("all", total)]:
        print(f"| {name} | {size:,} | {size / n:,.1f} |")

    print(f"\n### Search: recall@1 against exact top-1, k=1, {args.queries:,} queries\n")
    print(f"exact top-1 is the query's own class for {build['own_class']:.4f} of queries\n")
    print("| store | nprobe | set_index s | recall@1 | queries/s |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for r in [{**build, "stage": "built (in RAM)"}, *loads]:
        for s in r.get("sweep", []):
            print(f"| {r['stage']} | {s['nprobe']} | {s['set_index_s']:.2f} | "
                  f"{s['recall']:.4f} | {s['qps']:,.0f} |")

    print("\n### Load (new process each)\n")
    print("| stage | load s | classes | VmRSS before GB | VmRSS after load GB | "
          "after searches GB | peak RSS GB | error |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in loads:
        load_s = f"{r['load_s']:.1f}" if "load_s" in r else "-"
        classes = f"{r['classes']:,}" if "classes" in r else "-"
        print(f"| {r['stage']} | {load_s} | {classes} | {gb(r.get('before_rss'))} | "
              f"{gb(r.get('loaded_rss'))} | {gb(r.get('searched_rss'))} | "
              f"{gb(r.get('peak'))} | {r.get('error', '')} |")

    peaks = {"build": build["peak"], **{r["stage"]: r.get("peak") for r in loads}}
    failed = [r["stage"] for r in loads if "error" in r]
    ok = not failed and all(p is not None and p <= PEAK_LIMIT for p in peaks.values())
    print(f"\npeak RSS <= 8 GB (8e9 bytes = {PEAK_LIMIT / 2**30:.2f} GiB) at {n:,} classes: "
          + ", ".join(f"{stage} {gb(p)} GB" for stage, p in peaks.items()) + f": {verdict(ok)}"
          + (f" (did not finish, so unmeasured: {'; '.join(failed)})" if failed else ""))
    return ok


# ------------------------------------------------------------------ main
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=10_000_000)
    parser.add_argument("--dim", type=int, default=64, choices=(64, 128))
    parser.add_argument("--chunk", type=int, default=1_000_000, help="classes per store.add")
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--query-noise", type=float, default=QUERY_NOISE,
                        help=f"about the norm of a query's offset from its class (classes lie "
                             f"about {CLASS_SPREAD} from their centre); larger: harder queries")
    parser.add_argument("--nlist", type=int,
                        help="IVF lists (default: the power of 2 nearest sqrt(classes), 4096 "
                             "at 10M)")
    parser.add_argument("--pq-m", type=int, default=16, help="PQ sub-quantizers (bytes/code)")
    parser.add_argument("--nprobe", default="8,16,32,64", help="comma-separated, swept")
    parser.add_argument("--out", type=Path, help="save the store here (kept)")
    parser.add_argument("--keep", action="store_true", help="keep the temp store folder")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    try:
        args.nprobe = [int(value) for value in args.nprobe.split(",") if value.strip()]
    except ValueError:
        parser.error(f"--nprobe takes comma-separated ints, got {args.nprobe!r}")
    if not args.nprobe or min(args.classes, args.chunk, args.queries, args.pq_m,
                              *args.nprobe) < 1:
        parser.error("--classes, --chunk, --queries, --pq-m and --nprobe must be positive")
    args.nlist = args.nlist or ivf_nlist(args.classes)

    wall_start = time.perf_counter()
    print("command: " + shlex.join([sys.executable, *sys.argv]))
    info = machine()
    print_machine(info)
    print(f"platform: {platform.platform()}, {info['cpus']} CPUs", flush=True)
    tmp = None if args.out else Path(tempfile.mkdtemp(prefix="store_scale-"))
    path = args.out or tmp / "store"
    try:
        print(f"\nstage build (store folder {path}):", flush=True)
        build, queries, truth = build_stage(args, path)
        loads = [run_load_stage(path, mmap, queries, truth, args.nprobe)
                 for mmap in (False, True)]
        ok = print_tables(args, build, loads)
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None:
            print(f"kept the store at {path}")
    wall = time.perf_counter() - wall_start
    print(f"\ntotal wall time: {wall:.0f} s")
    if args.json:
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"machine": info, "platform": platform.platform(),
                                         "options": options, "build": build, "loads": loads,
                                         "peak_limit_bytes": PEAK_LIMIT, "pass": ok,
                                         "wall_s": wall}, indent=2))


if __name__ == "__main__":
    main()
