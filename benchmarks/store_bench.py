"""PrototypeStore benchmark: exact search against baselines, approximate indexes, adding a class
to a large store, bytes per class.

Sections (pick with --sections; each prints a markdown table and its wall time):

- exact: queries/s of `PrototypeStore.search` (prototype mode, squared L2, flat index, k=1) for
  C classes x D dims, against numpy brute force (||q||^2 - 2 q.P^T + ||p||^2, argmin), sklearn's
  `NearestCentroid.predict` (one sample per class: `fit(P, arange(C))`; above 10k classes, where
  fit's loop over classes is O(C^2), about 35 s at 100k, the attributes that fit would set are
  assigned instead), `torch.cdist` + argmin, and the bare float32 product Q @ P.T (numpy or
  torch, the faster): the matrix-multiply floor, the least work a float32 exact search can
  do. Also FAISS's own flat search on the store's index (what the store ran before its fused
  kernel, `fewshot_metric/store/flat_kernel.py`), and that kernel alone on the prototypes
  (the store's search without its per-query bookkeeping: checks, classes, labels, scores),
  as the store runs it (int8 products screen the vectors with a certified error bound, and
  the few that could be nearest are re-scored in float32: the same answers, so it can beat
  the float32 floor; the note says how many queries needed a second screening pass or
  float32) and float32 only. Ratios, and how often each method's argmin agrees with the
  store's. Targets: store >= 0.85 of the floor; >= 3x NearestCentroid at 100k classes.
- approx: HNSW, IVF-Flat and IVF-PQ at the largest C, D = 64 only (to fit the time budget):
  recall@1 against exact search's top-1, queries/s, build time (`set_index`, which trains and
  fills the index from the store's vectors), speedup over exact search. The search-time knob
  (nprobe, efSearch) is swept on the built index through `faiss.ParameterSpace`, which gives
  the same index as building with that option. Target: some index >= 10x exact with recall@1
  >= 0.95.
- add: milliseconds of `store.add` of one new 5-shot class into a store holding the largest C
  (flat, and at D = 64 also ivf_flat and hnsw). Target: median < 10 ms.
- bytes: bytes per class in memory (VmRSS delta from /proc/self/status around building the
  store, in a new process per D, after gc and glibc's malloc_trim before each reading) and on
  disk (the saved folder) for each index kind.
- query: the whole `FewShotClassifier.query` path (image files in: decode, preprocess, embed,
  search 1k classes, top-5 out) against the bare backbone forward it runs (batch norm folded;
  the unfolded model too, for reference) on the same images already decoded, for Conv-4 on
  28x28 PNGs and ResNet-12 on 84x84 JPEGs, best of 7 alternating runs each. Target: >= 0.8.
  `--backbones conv4` runs one of them (the Conv-4 row takes about 15 s, ResNet-12 about 3 min).

Data (synthetic, seeded by (--seed, C, D)): C // 250 cluster centres ~ N(0, I/D) (norm about
1); each class's prototype is a random centre + N(0, 0.5^2 I/D) (about 0.5 from it); a query
is a random class's prototype + N(0, 0.25^2 I/D) noise (norm about 0.25), below the distance
from a class to its nearest other class (the approx section prints both), so a query lands
near its own class. Ground truth for recall is exact search's top-1 on the same queries.

Brute-force methods work on blocks of FAISS's own flat-search shape (4096 queries x 1024
classes, `faiss.cvar.distance_compute_blas_{query,database}_bs`), so memory stays bounded;
NearestCentroid gets 4096 queries per call (its argmin reduction chunks internally). Timing:
`time.perf_counter`, one warm-up call on 256 queries, then the best of up to 20 calls, repeated
only while they took under 1 s in all (calls of a few ms vary most: threads another library
left spinning slow the next ones). The store searches all queries; the other methods time
the first 2048 where C x D > 5e7 (100k x 512 and up). Flat stores and exact-search results are
shared between sections for the same (C, D): a build is timed where it first happens.

    .venv/bin/python benchmarks/store_bench.py [--quick] [--sections exact,approx,add,bytes,query]
        [--backbones conv4,resnet12] [--seed 0] [--json out.json]
"""

from __future__ import annotations

# isort: off
import fewshot_metric.blas  # noqa: F401  (first: FAISS's OpenBLAS picks its kernels on load)
# isort: on
import argparse
import ctypes
import gc
import json
import math
import multiprocessing
import os
import platform
import resource
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import sklearn
import torch
from PIL import Image
from sklearn.neighbors import NearestCentroid
from threadpoolctl import threadpool_info

from fewshot_metric import Embedder, FewShotClassifier
from fewshot_metric.backbones import create_backbone
from fewshot_metric.data import png
from fewshot_metric.distances import build_distance
from fewshot_metric.model import FewShotModel
from fewshot_metric.store import PrototypeStore, flat_kernel
from fewshot_metric.store.index_factory import resolve_options

CLASSES_PER_CENTRE, CLASS_SPREAD, QUERY_NOISE = 250, 0.5, 0.25
QUERY_BLOCK = faiss.cvar.distance_compute_blas_query_bs
CLASS_BLOCK = faiss.cvar.distance_compute_blas_database_bs
ADD_BATCH = 100_000  # classes per store.add call while building
WARMUP_QUERIES, REPEATS, REPEAT_BUDGET_S = 256, 20, 1.0
QUERY_PATH_REPEATS = 7  # the query section's runs are short (about 0.5 s) and vary more
SUBSET_WORK, SUBSET_QUERIES = 5 * 10**7, 2048  # baselines time a subset where C * D > SUBSET_WORK
NC_FIT_MAX = 10_000  # above, NearestCentroid gets the attributes fit would set (fit is O(C^2))
APPROX_DIM = 64
HNSW_M, HNSW_EF_SEARCH = 32, (16, 32, 64, 128)
NPROBES = (1, 2, 4, 8, 16)
SHOTS, ADDS = 5, 50
TARGET_FLOOR, TARGET_NC, TARGET_SPEEDUP, TARGET_RECALL, TARGET_ADD_MS = 0.85, 3.0, 10.0, 0.95, 10.0
SECTIONS = ("exact", "approx", "add", "bytes", "query")


@dataclass(frozen=True)
class Sizes:
    classes: tuple[int, ...]  # exact section
    dims: tuple[int, ...]
    queries: int
    big: int  # approx and add sections
    memory_classes: int  # bytes section
    pq_m: int  # ivf_pq sub-quantizers (FAISS's polysemous training costs about 1 s each)


FULL = Sizes((1_000, 100_000, 1_000_000), (64, 512), 10_000, 1_000_000, 100_000, 16)
QUICK = Sizes((1_000, 10_000), (64, 512), 1_000, 10_000, 10_000, 4)


@dataclass(frozen=True)
class Data:
    prototypes: np.ndarray  # float32 [C, D]
    queries: np.ndarray  # float32 [Q, D]
    query_classes: np.ndarray  # int64 [Q], the class each query was drawn around


def make_data(n_classes: int, dim: int, n_queries: int, seed: int) -> Data:
    """Clustered prototypes and noisy queries, see the module docstring."""
    rng = np.random.default_rng([seed, n_classes, dim])
    scale = np.float32(1 / math.sqrt(dim))
    centres = rng.standard_normal((max(1, n_classes // CLASSES_PER_CENTRE), dim), np.float32)
    centres *= scale
    owner = rng.integers(len(centres), size=n_classes)
    prototypes = np.empty((n_classes, dim), np.float32)
    for rows in blocks(n_classes, ADD_BATCH):
        block = rng.standard_normal((rows.stop - rows.start, dim), np.float32)
        block *= CLASS_SPREAD * scale
        prototypes[rows] = block + centres[owner[rows]]
    query_classes = rng.integers(n_classes, size=n_queries)
    noise = rng.standard_normal((n_queries, dim), np.float32) * (QUERY_NOISE * scale)
    return Data(prototypes, prototypes[query_classes] + noise, query_classes)


def blocks(n: int, size: int) -> Iterator[slice]:
    return (slice(start, min(start + size, n)) for start in range(0, n, size))


def build_store(prototypes: np.ndarray, kind: str = "flat", **options: int) -> PrototypeStore:
    """A prototype-mode store with class i = label f"c{i}" = prototypes[i] (one shot each)."""
    store = PrototypeStore(prototypes.shape[1], index=kind, **options)
    for rows in blocks(len(prototypes), ADD_BATCH):
        store.add(prototypes[rows], [f"c{i}" for i in range(rows.start, rows.stop)])
    return store


def store_top1(store: PrototypeStore) -> Callable[[np.ndarray], np.ndarray]:
    return lambda queries: store.search(queries, k=1).ids[:, 0]  # class id i = prototype i


def ivf_nlist(n_classes: int) -> int:
    """The power of two nearest sqrt(C), the usual IVF list count."""
    return 2 ** round(math.log2(math.sqrt(n_classes)))


def rate(search: Callable[[np.ndarray], Any], queries: np.ndarray) -> tuple[float, Any]:
    """(queries/s, result) of search(queries), best of the timed calls after a warm-up."""
    search(queries[:WARMUP_QUERIES])
    best, spent, result = math.inf, 0.0, None
    for _ in range(REPEATS):
        start = time.perf_counter()
        result = search(queries)
        elapsed = time.perf_counter() - start
        best, spent = min(best, elapsed), spent + elapsed
        if spent > REPEAT_BUDGET_S:
            break
    return len(queries) / best, result


def timed(make: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    return make(), time.perf_counter() - start


class Lab:
    """The data, flat store and exact top-1 of one (C, D) at a time, shared between sections
    (one at a time keeps memory bounded: a 1M x 512 store takes about 9 GB)."""

    def __init__(self, sizes: Sizes, seed: int):
        self.sizes, self.seed = sizes, seed
        self.drop()

    def drop(self) -> None:
        self.key: tuple[int, int] | None = None
        self.data: Data | None = None
        self.store: PrototypeStore | None = None
        self.build_s = math.nan
        self.exact: tuple[float, np.ndarray] | None = None  # (queries/s, top-1 ids)
        gc.collect()

    def get_data(self, n_classes: int, dim: int) -> Data:
        if self.key != (n_classes, dim):
            self.drop()
            self.data = make_data(n_classes, dim, self.sizes.queries, self.seed)
            self.key = (n_classes, dim)
        return self.data

    def get_store(self, n_classes: int, dim: int) -> PrototypeStore:
        data = self.get_data(n_classes, dim)
        if self.store is None:
            self.store, self.build_s = timed(lambda: build_store(data.prototypes))
        return self.store

    def get_exact(self, n_classes: int, dim: int) -> tuple[float, np.ndarray]:
        """Flat-store search of all queries: (queries/s, top-1 class ids)."""
        store = self.get_store(n_classes, dim)
        if self.exact is None:
            self.exact = rate(store_top1(store), self.data.queries)
        return self.exact


# ------------------------------------------------------------------ exact-search baselines
def numpy_top1(prototypes: np.ndarray, sq_norms: np.ndarray) -> Callable:
    """Chunked ||q||^2 - 2 q.P^T + ||p||^2 and argmin, keeping the running minimum."""

    def search(queries: np.ndarray) -> np.ndarray:
        top = np.empty(len(queries), np.int64)
        for rows in blocks(len(queries), QUERY_BLOCK):
            q = queries[rows]
            q_sq = np.einsum("ij,ij->i", q, q)[:, None]
            best, best_at = np.full(len(q), np.inf, np.float32), top[rows]  # a view of top
            arange = np.arange(len(q))
            for cols in blocks(len(prototypes), CLASS_BLOCK):
                d = q @ prototypes[cols].T
                d *= -2.0
                d += sq_norms[cols]
                d += q_sq
                at = d.argmin(1)
                value = d[arange, at]
                closer = value < best
                best[closer], best_at[closer] = value[closer], at[closer] + cols.start
        return top

    return search


def faiss_top1(store: PrototypeStore) -> Callable:
    """FAISS's flat search on the store's own index, without the store's fused kernel."""
    index = store._index.faiss_index  # noqa: SLF001  (the store's index, searched directly)
    return lambda queries: index.search(queries, 1)[1][:, 0]


def kernel_top1(prototypes: np.ndarray, screen_cap: int | None = None) -> Callable:
    """The store's fused flat-search kernel alone (`flat_kernel.flat_search`): with int8
    screening as the store runs it, or float32 only (screen_cap 0)."""
    return lambda queries: flat_kernel.flat_search(queries, prototypes, 1, False,
                                                   screen_cap)[1][:, 0]


def screening_note(prototypes: np.ndarray, queries: np.ndarray) -> str:
    """How many of the queries the kernel screened twice or searched in float32 after all."""
    counts = np.zeros(2, np.int64)
    flat_kernel.flat_search(queries, prototypes, 1, False, counts=counts)
    return (f"int8 screening, exact re-check; of {len(queries):,} queries {counts[0]:,} "
            f"screened twice, {counts[1]:,} in float32")


def cdist_top1(prototypes: torch.Tensor) -> Callable:
    """Chunked torch.cdist and min, keeping the running minimum."""

    def search(queries: np.ndarray) -> np.ndarray:
        queries_t, top = torch.from_numpy(queries), []
        for rows in blocks(len(queries), QUERY_BLOCK):
            q = queries_t[rows]
            best = torch.full((len(q),), math.inf)
            best_at = torch.zeros(len(q), dtype=torch.int64)
            for cols in blocks(len(prototypes), CLASS_BLOCK):
                value, at = torch.cdist(q, prototypes[cols]).min(1)
                closer = value < best
                best, best_at = torch.where(closer, value, best), torch.where(
                    closer, at + cols.start, best_at)
            top.append(best_at)
        return torch.cat(top).numpy()

    return search


def matmul_floor(prototypes: np.ndarray | torch.Tensor) -> Callable:
    """The bare products of the same blocks (numpy arrays or torch tensors), results dropped."""

    def search(queries: np.ndarray) -> None:
        queries = queries if isinstance(prototypes, np.ndarray) else torch.from_numpy(queries)
        for rows in blocks(len(queries), QUERY_BLOCK):
            q = queries[rows]
            for cols in blocks(len(prototypes), CLASS_BLOCK):
                q @ prototypes[cols].T

    return search


def nearest_centroid(prototypes: np.ndarray) -> tuple[NearestCentroid, str]:
    """NearestCentroid as fit(P, arange(C)) leaves it, and how it got there."""
    n_classes = len(prototypes)
    model = NearestCentroid()
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")  # one sample per class: zero within-class variance
        if n_classes <= NC_FIT_MAX:
            model.fit(prototypes, np.arange(n_classes))
            return model, "fit"
        # fit loops over classes, each scanning all samples (O(C^2)): fit two, then set the
        # attributes predict reads to what fit(P, arange(C)) gives
        model.fit(prototypes[:2], np.arange(2))
    model.classes_ = np.arange(n_classes)
    model.centroids_ = prototypes.astype(np.float64)
    model.class_prior_ = np.full(n_classes, 1 / n_classes)
    return model, "fit's attributes"


def nc_top1(model: NearestCentroid) -> Callable:
    def search(queries: np.ndarray) -> np.ndarray:
        return np.concatenate([model.predict(queries[rows])
                               for rows in blocks(len(queries), QUERY_BLOCK)])

    return search


def exact_at(lab: Lab, n_classes: int, dim: int) -> tuple[list[dict], dict]:
    """The store and the baselines at one (C, D): table rows, and the store's ratios."""
    data = lab.get_data(n_classes, dim)
    prototypes, queries = data.prototypes, data.queries
    n_sub = len(queries) if n_classes * dim <= SUBSET_WORK else SUBSET_QUERIES
    subset, prototypes_t = queries[:n_sub], torch.from_numpy(prototypes)
    model, how = nearest_centroid(prototypes)
    baselines = {"NearestCentroid.predict": (*rate(nc_top1(model), subset), how)}
    del model  # its float64 centroids take 4 GB at 1M x 512
    sq_norms = np.einsum("ij,ij->i", prototypes, prototypes)
    baselines["numpy brute force"] = (*rate(numpy_top1(prototypes, sq_norms), subset), "")
    baselines["torch.cdist + argmin"] = (*rate(cdist_top1(prototypes_t), subset), "")
    baselines["FAISS flat search"] = (*rate(faiss_top1(lab.get_store(n_classes, dim)), subset),
                                      "the store's index, no fused kernel")
    if flat_kernel.unavailable_reason() is None:
        baselines["fused kernel alone"] = (*rate(kernel_top1(prototypes), subset),
                                           screening_note(prototypes, subset))
        baselines["fused kernel, float32 only"] = (*rate(kernel_top1(prototypes, 0), subset),
                                                   "no int8 screening")
    floors = {lib: rate(matmul_floor(p), subset)[0]
              for lib, p in (("numpy", prototypes), ("torch", prototypes_t))}
    lib = max(floors, key=floors.get)
    store_qps, store_ids = lab.get_exact(n_classes, dim)
    shape = {"classes": n_classes, "dim": dim}
    rows = [{**shape, "method": "PrototypeStore.search", "queries": len(queries),
             "qps": store_qps, "agree": None, "note": f"build {lab.build_s:.1f} s"}]
    rows += [{**shape, "method": method, "queries": n_sub, "qps": qps,
              "agree": float(np.mean(ids == store_ids[:n_sub])), "note": note}
             for method, (qps, ids, note) in baselines.items()]
    rows.append({**shape, "method": f"matmul floor ({lib})", "queries": n_sub,
                 "qps": floors[lib], "agree": None,
                 "note": ", ".join(f"{name} {qps:,.0f}/s" for name, qps in floors.items())})
    qps = {method: qps for method, (qps, _, _) in baselines.items()}
    return rows, {**shape, "store_qps": store_qps,
                  "vs_nc": store_qps / qps["NearestCentroid.predict"],
                  "vs_numpy": store_qps / qps["numpy brute force"],
                  "vs_cdist": store_qps / qps["torch.cdist + argmin"],
                  "vs_faiss": store_qps / qps["FAISS flat search"],
                  "of_floor": store_qps / floors[lib], "floor_lib": lib,
                  "kernel_of_floor": qps.get("fused kernel alone", math.nan) / floors[lib],
                  "float32_of_floor": (qps.get("fused kernel, float32 only", math.nan)
                                       / floors[lib])}


def bench_exact(lab: Lab, args: argparse.Namespace) -> dict:
    """Section exact: store vs baselines at every (C, D)."""
    rows, summary = [], []
    for n_classes in lab.sizes.classes:
        for dim in sorted(lab.sizes.dims, reverse=True):  # ends on D = 64, which approx reuses
            shape_rows, ratios = exact_at(lab, n_classes, dim)
            rows += shape_rows
            summary.append(ratios)
            print(f"  exact: C={n_classes:,} D={dim} done", flush=True)
    rows.sort(key=lambda r: (r["classes"], r["dim"]))
    summary.sort(key=lambda r: (r["classes"], r["dim"]))
    print("\n### Exact search (flat, k=1, squared L2, prototype mode)\n")
    print("| classes | D | method | queries timed | queries/s | argmin agrees with store | "
          "note |")
    print("| ---: | ---: | --- | ---: | ---: | ---: | --- |")
    for r in rows:
        agree = "-" if r["agree"] is None else f"{r['agree']:.4f}"
        print(f"| {r['classes']:,} | {r['dim']} | {r['method']} | {r['queries']:,} | "
              f"{r['qps']:,.0f} | {agree} | {r['note']} |")
    print(f"\n| classes | D | store / NearestCentroid | store / numpy | store / cdist | "
          f"store / FAISS flat | store / matmul floor (target >= {TARGET_FLOOR}) | "
          f"3x NearestCentroid at 100k | kernel alone / floor | float32 kernel / floor |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
    for s in summary:
        floor_ok = verdict(s["of_floor"] >= TARGET_FLOOR)
        nc_ok = (verdict(s["vs_nc"] >= TARGET_NC) if s["classes"] == 100_000 else "-")
        print(f"| {s['classes']:,} | {s['dim']} | {s['vs_nc']:.2f}x | {s['vs_numpy']:.2f}x | "
              f"{s['vs_cdist']:.2f}x | {s['vs_faiss']:.2f}x | {s['of_floor']:.2f} {floor_ok} | "
              f"{nc_ok} | {s['kernel_of_floor']:.2f} | {s['float32_of_floor']:.2f} |")
    return {"rows": rows, "summary": summary}


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


# ------------------------------------------------------------------ approximate indexes
def approx_grid(sizes: Sizes) -> list[tuple[str, dict[str, int], str, tuple[int, ...]]]:
    """(kind, build options, swept search option, its values)."""
    nlist = ivf_nlist(sizes.big)
    return [("ivf_flat", {"nlist": nlist}, "nprobe", NPROBES),
            ("ivf_pq", {"nlist": nlist, "pq_m": sizes.pq_m}, "nprobe", NPROBES),
            ("hnsw", {"M": HNSW_M}, "efSearch", HNSW_EF_SEARCH)]


def set_search_option(store: PrototypeStore, name: str, value: int) -> None:
    faiss.ParameterSpace().set_index_parameter(store.index, name, value)


def bench_approx(lab: Lab, args: argparse.Namespace) -> dict:
    """Section approx: recall@1 / speed / build time of the approximate kinds at the largest C."""
    n_classes, dim = lab.sizes.big, APPROX_DIM
    exact_qps, exact_ids = lab.get_exact(n_classes, dim)
    store, data = lab.store, lab.data
    nn = np.sqrt(store.search(data.prototypes[:1000], k=2).distances[:, 1])
    noise = np.linalg.norm(data.queries - data.prototypes[data.query_classes], axis=1)
    rows = []
    for kind, options, knob, values in approx_grid(lab.sizes):
        _, build_s = timed(lambda kind=kind, options=options: store.set_index(kind, **options))
        for value in values:
            set_search_option(store, knob, value)
            qps, ids = rate(store_top1(store), data.queries)
            rows.append({"kind": kind, "options": {**store.index_options, knob: value},
                         "build_s": build_s, "recall": float(np.mean(ids == exact_ids)),
                         "qps": qps, "speedup": qps / exact_qps})
        set_search_option(store, knob, store.index_options[knob])
        print(f"  approx: {kind} done", flush=True)
    good = [r for r in rows if r["recall"] >= TARGET_RECALL]
    best = max(good, key=lambda r: r["speedup"]) if good else None
    print(f"\n### Approximate indexes at {n_classes:,} classes, D={dim}, "
          f"{len(data.queries):,} queries, k=1\n")
    print(f"data: {len(data.prototypes) // CLASSES_PER_CENTRE or 1:,} cluster centres; median "
          f"query-to-own-prototype distance {np.median(noise):.3f}, median class-to-nearest-"
          f"other-class distance {np.median(nn):.3f} (1,000 classes); exact top-1 is the "
          f"query's own class for {np.mean(exact_ids == data.query_classes):.4f} of queries")
    print(f"exact (flat) search: {exact_qps:,.0f} queries/s\n")
    print("| index | options | build s | recall@1 | queries/s | speedup vs exact |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        options = ", ".join(f"{k}={v}" for k, v in r["options"].items())
        print(f"| {r['kind']} | {options} | {r['build_s']:.1f} | {r['recall']:.4f} | "
              f"{r['qps']:,.0f} | {r['speedup']:.1f}x |")
    if best:
        options = ", ".join(f"{k}={v}" for k, v in best["options"].items())
        print(f"\nfastest with recall@1 >= {TARGET_RECALL}: {best['kind']} ({options}), "
              f"{best['speedup']:.1f}x exact, recall@1 {best['recall']:.4f} (target >= "
              f"{TARGET_SPEEDUP:g}x: {verdict(best['speedup'] >= TARGET_SPEEDUP)})")
    else:
        print(f"\nno setting reached recall@1 >= {TARGET_RECALL} (target: FAIL)")
    return {"classes": n_classes, "dim": dim, "exact_qps": exact_qps,
            "median_noise": float(np.median(noise)), "median_nn_distance": float(np.median(nn)),
            "rows": rows, "best": best}


# ------------------------------------------------------------------ adding a class
def time_adds(store: PrototypeStore, name: str, rng: np.random.Generator) -> np.ndarray:
    """Milliseconds of ADDS store.add calls, each one new SHOTS-shot class, after a warm-up."""
    dim = store.dim
    centres = rng.standard_normal((ADDS + 1, 1, dim), np.float32) / math.sqrt(dim)
    shots = centres + rng.standard_normal((ADDS + 1, SHOTS, dim), np.float32) * (
        QUERY_NOISE / math.sqrt(dim))
    ms = []
    for i, class_shots in enumerate(shots):
        start = time.perf_counter()
        store.add(class_shots, [f"new-{name}-{i}"] * SHOTS)
        ms.append((time.perf_counter() - start) * 1e3)
    return np.array(ms[1:])


def bench_add(lab: Lab, args: argparse.Namespace) -> dict:
    """Section add: one new class at a time into a store of the largest C."""
    n_classes, rows = lab.sizes.big, []
    nlist = ivf_nlist(n_classes)
    rng = np.random.default_rng([args.seed, 1])
    for dim in sorted(lab.sizes.dims):  # D = 64 first: approx may have left that store built
        store = lab.get_store(n_classes, dim)
        kinds = {"flat": {}}
        if dim == APPROX_DIM:
            kinds |= {"ivf_flat": {"nlist": nlist}, "hnsw": {"M": HNSW_M}}
        current = store.index_kind
        for kind in sorted(kinds, key=lambda kind: kind != current):  # the built one first
            build_s = 0.0
            if (store.index_kind, store.index_options) != (
                    kind, resolve_options(kind, dim, kinds[kind])):
                start = time.perf_counter()
                store.set_index(kind, **kinds[kind])
                build_s = time.perf_counter() - start
            before = len(store)
            ms = time_adds(store, kind, rng)
            rows.append({"dim": dim, "kind": kind, "options": store.index_options,
                         "classes": before, "build_s": build_s,
                         "median_ms": float(np.median(ms)),
                         "p90_ms": float(np.percentile(ms, 90)), "max_ms": float(ms.max())})
        del store
        lab.drop()  # classes were added: no longer the shared data's store
    print(f"\n### Adding one {SHOTS}-shot class ({ADDS} adds, after 1 warm-up)\n")
    print(f"| D | index | options | classes before | index rebuild s | median ms | p90 ms | "
          f"max ms | median < {TARGET_ADD_MS:g} ms |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        options = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "-"
        print(f"| {r['dim']} | {r['kind']} | {options} | {r['classes']:,} | {r['build_s']:.1f} | "
              f"{r['median_ms']:.3f} | {r['p90_ms']:.3f} | {r['max_ms']:.3f} | "
              f"{verdict(r['median_ms'] < TARGET_ADD_MS)} |")
    return {"rows": rows}


# ------------------------------------------------------------------ bytes per class
def proc_status() -> dict[str, int]:
    """The memory figures (kB lines) of /proc/self/status, in bytes."""
    with open("/proc/self/status") as status:
        fields = (line.split() for line in status)
        return {f[0].rstrip(":"): int(f[1]) * 1024 for f in fields if f[-1] == "kB"}


def rss_bytes() -> int:
    """VmRSS of this process, after a full collection and handing glibc's free heap back."""
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
    return proc_status()["VmRSS"]


def measure_bytes(n_classes: int, dim: int, kinds: dict[str, dict[str, int]], seed: int
                  ) -> list[dict]:
    """Memory and disk bytes per class of a store of each kind. Run in a fresh process, whose
    heap has no holes left by earlier stores to hide a new one's memory in; every store is kept
    until the end for the same reason."""
    prototypes = make_data(n_classes, dim, 1, seed).prototypes
    kept = [build_store(prototypes[:4096])]  # thread pools and BLAS buffers, outside the deltas
    faiss.knn(prototypes[:4096], prototypes[:4096], 1)
    rows = []
    for kind, options in kinds.items():
        before = rss_bytes()
        kept.append(build_store(prototypes, kind, **options))
        memory = rss_bytes() - before
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp) / "store"
            kept[-1].save(folder)
            disk = sum(f.stat().st_size for f in folder.iterdir())
            index_file = (folder / "index.faiss").stat().st_size
        rows.append({"dim": dim, "kind": kind, "options": kept[-1].index_options,
                     "memory": memory / n_classes, "disk": disk / n_classes,
                     "index_file": index_file / n_classes})
    return rows


def bench_bytes(lab: Lab, args: argparse.Namespace) -> dict:
    """Section bytes: memory and disk per class of each index kind, one new process per D."""
    n_classes = lab.sizes.memory_classes
    nlist = ivf_nlist(n_classes)
    kinds = {"flat": {}, "hnsw": {"M": HNSW_M}, "ivf_flat": {"nlist": nlist},
             "ivf_pq": {"nlist": nlist, "pq_m": lab.sizes.pq_m}}
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        rows = [row for dim in lab.sizes.dims
                for row in pool.apply(measure_bytes, (n_classes, dim, kinds, args.seed))]
    print(f"\n### Bytes per class at {n_classes:,} classes (prototype mode)\n")
    print("memory: VmRSS after building minus before (one new process per D, every store kept "
          "to its end; gc and malloc_trim before each reading); disk: the saved folder "
          "(store.json, labels.json, the .npy columns, index.faiss)\n")
    print("| D | index | options | memory B/class | disk B/class | of which index.faiss | "
          "one float32 vector |")
    print("| ---: | --- | --- | ---: | ---: | ---: | ---: |")
    for r in rows:
        options = ", ".join(f"{k}={v}" for k, v in r["options"].items()) or "-"
        print(f"| {r['dim']} | {r['kind']} | {options} | {r['memory']:,.0f} | {r['disk']:,.0f} | "
              f"{r['index_file']:,.0f} | {4 * r['dim']:,} |")
    return {"classes": n_classes, "rows": rows}


# ------------------------------------------------------------------ query path
QUERY_PATH_MODELS = (  # backbone, its kwargs, image file (W, H) and format
    ("conv4", {"in_chans": 1, "image_size": 28}, (28, 28), "png"),
    ("resnet12", {"in_chans": 3, "image_size": 84}, (84, 84), "jpeg"),
)
QUERY_PATH_CLASSES, QUERY_PATH_BATCH, TARGET_QUERY_PATH = 1_000, 128, 0.8


def write_images(folder: Path, n: int, size: tuple[int, int], fmt: str, channels: int,
                 rng: np.random.Generator) -> list[Path]:
    """n smooth random images (upsampled noise, which compresses like a picture) as files."""
    paths = []
    for i in range(n):
        small = rng.integers(0, 256, (size[1] // 4, size[0] // 4, channels), np.uint8)
        image = Image.fromarray(small[..., 0] if channels == 1 else small)
        paths.append(folder / f"{i:05d}.{fmt}")
        image.resize(size, Image.Resampling.BICUBIC).save(paths[-1])
    return paths


def query_path_rates(classifier: FewShotClassifier, paths: list[Path]
                     ) -> tuple[dict[str, float], dict[str, int]]:
    """Best images/s of the bare backbone the query path runs (batch norm folded) on the
    decoded images, of the model as trained (unfolded) on them, of classifier.query on the
    files, timed alternately after one warm-up each, and of decoding + preprocessing alone
    as the query path does it (`decode_many`), on one core (torch on one thread); and the
    median page faults per run of the first three (memory the allocator handed back to the
    system and touches again)."""
    embedder = classifier.embedder
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        decoded, decode_s = timed(lambda: embedder.transform.normalize(
            embedder.decode_many(paths)))
    finally:
        torch.set_num_threads(threads)
    decoded = decoded.contiguous(memory_format=torch.channels_last)

    def forward(network: torch.nn.Module) -> Callable[[], None]:
        @torch.no_grad()
        def run() -> None:
            for rows in blocks(len(decoded), QUERY_PATH_BATCH):
                network(decoded[rows])
        return run

    def query() -> None:
        classifier.query(paths, k=5, batch_size=QUERY_PATH_BATCH)

    # the model as trained first: runs right after its larger forward measured slower
    runs = {"unfolded": forward(embedder.model.backbone), "bare": forward(embedder.backbone),
            "query": query}
    best = {"decode": len(paths) / decode_s}
    faults: dict[str, list[int]] = {label: [] for label in runs}
    for label, run in runs.items():
        run()
        best[label] = 0.0
    for _ in range(QUERY_PATH_REPEATS):
        for label, run in runs.items():
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            _, seconds = timed(run)
            faults[label].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
            best[label] = max(best[label], len(paths) / seconds)
    return best, {label: int(np.median(counts)) for label, counts in faults.items()}


def bench_query(lab: Lab, args: argparse.Namespace) -> dict:
    """Section query: FewShotClassifier.query on image files (decode, preprocess, embed,
    search 1k classes, top-5) against the bare backbone forward it runs (the Embedder's copy
    with batch norm folded into the convolutions) on the same images already decoded and
    preprocessed, same batch size; the model as trained (unfolded) for reference. Untrained
    weights: speed does not depend on them. Target: >= 0.8 of the bare backbone's images/s.
    Also decoding + preprocessing alone as the query path does it, on one core, and the
    best ratio this machine's cores allow (decoding spread over all cores, or overlapped
    with the forward, at no cost beyond its own): the bare forward takes cores / bare
    core-seconds per image (it uses all cores), decoding 1 / decode, so at best
    query = cores / (cores / bare + 1 / decode)."""
    rows = []
    rng = np.random.default_rng([args.seed, 2])
    n_images = {"conv4": 2048 if not lab.sizes.queries < 10_000 else 256,
                "resnet12": 256 if not lab.sizes.queries < 10_000 else 32}
    for name, kwargs, size, fmt in QUERY_PATH_MODELS:
        if name not in args.backbones:
            continue
        torch.manual_seed(args.seed)
        backbone = create_backbone(name, **kwargs)
        model = FewShotModel(backbone, "prototypical", {}, build_distance("sqeuclidean"))
        classifier = FewShotClassifier(Embedder(model, {}, device="cpu"))
        classifier.store.add(rng.standard_normal((QUERY_PATH_CLASSES, backbone.embed_dim),
                                                 np.float32),
                             [f"class {i}" for i in range(QUERY_PATH_CLASSES)])
        n = n_images[name]
        with tempfile.TemporaryDirectory() as tmp:
            paths = write_images(Path(tmp), n, size, fmt, kwargs["in_chans"], rng)
            best, faults = query_path_rates(classifier, paths)
        cores = torch.get_num_threads()
        bound = cores / (cores / best["bare"] + 1 / best["decode"]) / best["bare"]
        rows.append({"backbone": name, "input": f"{size[0]}x{size[1]} {fmt}", "images": n,
                     "bare_per_s": best["bare"], "unfolded_per_s": best["unfolded"],
                     "query_per_s": best["query"],
                     "ratio": best["query"] / best["bare"], "decode_per_s": best["decode"],
                     "cores": cores, "overlap_bound": bound, "page_faults_per_run": faults})
    print(f"\n### Whole query path: image files in, top-5 of {QUERY_PATH_CLASSES:,} classes "
          f"out (batch {QUERY_PATH_BATCH}, best of {QUERY_PATH_REPEATS})\n")
    print("| backbone | image files | images | model as trained images/s (decoded batch) | "
          "bare backbone images/s (the query path's, batch norm folded) | "
          "FewShotClassifier.query images/s | ratio to bare (target >= 0.8) | decode + "
          "preprocess images/s (1 core) | best ratio with perfect overlap |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['backbone']} | {r['input']} | {r['images']:,} | "
              f"{r['unfolded_per_s']:,.0f} | {r['bare_per_s']:,.0f} | "
              f"{r['query_per_s']:,.0f} | {r['ratio']:.2f} "
              f"{verdict(r['ratio'] >= TARGET_QUERY_PATH)} | {r['decode_per_s']:,.0f} | "
              f"{r['overlap_bound']:.2f} ({r['cores']} cores) |")
    print("\nPage faults per run (median; memory handed back to the system and touched again): "
          + "; ".join(f"{r['backbone']}: model as trained {r['page_faults_per_run']['unfolded']:,}"
                      f", bare {r['page_faults_per_run']['bare']:,}"
                      f", query {r['page_faults_per_run']['query']:,}" for r in rows))
    return {"rows": rows}


# ------------------------------------------------------------------ machine and main
def machine() -> dict:
    """CPU, memory, library versions and thread counts, load average."""
    with open("/proc/cpuinfo") as cpuinfo:
        cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo
                    if line.startswith("model name")), platform.processor())
    with open("/proc/meminfo") as meminfo:
        mem_kib = int(next(line.split()[1] for line in meminfo if line.startswith("MemTotal")))
    blas = [{"file": Path(info["filepath"]).name, "api": info["internal_api"],
             "version": info.get("version"), "architecture": info.get("architecture"),
             "threads": info["num_threads"]} for info in threadpool_info()]
    return {"cpu": cpu, "cpus": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "python": platform.python_version(), "numpy": np.__version__,
            "torch": torch.__version__, "faiss": faiss.__version__,
            "sklearn": sklearn.__version__, "torch_threads": torch.get_num_threads(),
            "faiss_threads": faiss.omp_get_max_threads(), "thread_pools": blas,
            "flat_kernel": flat_kernel.unavailable_reason() or (
                "runs, int8 screening" if flat_kernel.screens() else "runs, float32 only"),
            "png_decoder": png.unavailable_reason() or "runs",
            "load_average": os.getloadavg()[0]}


def print_machine(info: dict) -> None:
    print(f"CPU: {info['cpu']}, {info['cpus']} cores, {info['memory_gib']} GiB; python "
          f"{info['python']}, numpy {info['numpy']}, torch {info['torch']}, faiss "
          f"{info['faiss']}, scikit-learn {info['sklearn']}")
    print(f"threads: torch {info['torch_threads']}, faiss (OpenMP) {info['faiss_threads']}; "
          "thread pools: " + "; ".join(
              f"{p['file']} ({p['api']} {p['version'] or ''} {p['architecture'] or ''}) "
              f"x{p['threads']}" for p in info["thread_pools"]))
    for pool in info["thread_pools"]:
        if "faiss" in pool["file"] and pool["architecture"] == "Prescott":
            print("WARNING: FAISS's bundled OpenBLAS does not know this CPU and runs its generic "
                  "Prescott (SSE3) kernels: its matrix products (flat search, IVF training) "
                  "are several times slower than numpy's. OPENBLAS_CORETYPE=SkylakeX (AVX-512) "
                  "or Haswell (AVX2) in the environment selects a fast kernel.")
    print(f"fused flat-search kernel: {info['flat_kernel']}; PNG batch decoder: "
          f"{info['png_decoder']}")
    print(f"load average at start: {info['load_average']:.2f}")
    if info["load_average"] > 0.5:
        print("WARNING: other work was running; the rates below are wall-clock and may be low")


def names_from(parser: argparse.ArgumentParser, option: str, value: str,
               choices: Sequence[str]) -> list[str]:
    """The comma-separated names in an option's value; a usage error unless there is at least
    one and each is among choices."""
    names = [name.strip() for name in value.split(",") if name.strip()]
    if set(names) - set(choices) or not names:
        parser.error(f"{option} takes names from {list(choices)}; got {value!r}")
    return names


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes (1k and 10k classes, 1k queries): a smoke test")
    parser.add_argument("--sections", default=",".join(SECTIONS),
                        help=f"comma-separated, from {','.join(SECTIONS)} (default all)")
    backbones = [model[0] for model in QUERY_PATH_MODELS]
    parser.add_argument("--backbones", default=",".join(backbones),
                        help=f"the query section's rows, from {','.join(backbones)} (default all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args(argv)
    chosen = names_from(parser, "--sections", args.sections, SECTIONS)
    args.backbones = names_from(parser, "--backbones", args.backbones, backbones)
    sizes = QUICK if args.quick else FULL
    info = machine()
    print_machine(info)
    print(f"sizes: {asdict(sizes)}, seed {args.seed}", flush=True)
    lab, results, wall = Lab(sizes, args.seed), {}, {}
    benches = {"exact": bench_exact, "approx": bench_approx, "add": bench_add,
               "bytes": bench_bytes, "query": bench_query}
    for name in SECTIONS:
        if name in chosen:
            results[name], wall[name] = timed(lambda name=name: benches[name](lab, args))
            print(f"\n{name} section: {wall[name]:.0f} s wall", flush=True)
    lab.drop()
    print("\n| section | wall s |\n| --- | ---: |")
    for name, seconds in wall.items():
        print(f"| {name} | {seconds:.0f} |")
    load = os.getloadavg()[0]
    print(f"load average at end: {load:.2f}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "sizes": asdict(sizes),
                                         "seed": args.seed, "wall_s": wall,
                                         "load_average_end": load, **results}, indent=2))


if __name__ == "__main__":
    main()
