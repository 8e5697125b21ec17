"""Exact flat search by the fused kernel in flat_topk.c instead of FAISS's.

FAISS's flat search (for fewer than 128,000 queries, `faiss.cvar.distance_compute_blas_
threshold`) computes each query's distances one vector at a time, at about half the
matrix-multiply floor at D=64 (benchmarks/store_bench.py). The kernel computes the products
as a blocked matrix multiply, keeping each tile of scores in registers and touching the
top-k only where a score beats the k-th best so far; the k distances it returns are then
computed directly, as FAISS does, and ties come in FAISS's order. Where the CPU has
AVX512-VNNI it screens first: int8 products (four times the multiply-adds of float32 per
instruction) with a bound on their error keep, per query, the few vectors that could make
its top-k, and those are scored in float32 exactly as without screening, so the answers are
the same to the bit; a query with too many such vectors (closer together than the int8
rounding) is searched in float32, and with few vectors (all in one packed group) the kernel
stops screening after the first 256 queries of a call where that cost more than it saved.
It is a C extension built at install (`setup.py`; optional: without a C compiler the
install succeeds and FAISS serves), loaded here with ctypes, and runs on CPUs with AVX-512.
`unavailable_reason()` says why it does not run; `serves(n_queries, k)` whether a search
should use it; `screens()` whether it screens.
"""

from __future__ import annotations

import ctypes
import functools

import faiss
import numpy as np

from fewshot_metric.native import load_extension, split_over_threads

EXTENSION = "fewshot_metric.store._flat_topk"
GROUP_BYTES = 1 << 20  # vectors packed per pass: half of a 2 MB L2 cache
CHUNK_BYTES = 1 << 25  # queries packed per pass (the vectors are packed again for each)
MIN_QUERIES = 64  # fewer: packing the vectors costs more than FAISS saves (1k x 512)
CENTRE_SAMPLE = 1024  # vectors (at an even stride) that choose the centre of squared L2
MIN_QUERIES_PER_THREAD = 48  # six tiles of 8 queries
SCREEN_CAP = 1024  # candidates per query (plus 2k) that int8 screening keeps (8 B each)

_POINTER, _INT64 = ctypes.c_void_p, ctypes.c_int64


@functools.cache
def _library() -> tuple[ctypes.CDLL | None, str | None]:
    """(the loaded kernel, None) or (None, why it cannot run)."""
    library, reason = load_extension(EXTENSION, {
        "fsm_supported": (ctypes.c_int, []),
        "fsm_screen_supported": (ctypes.c_int, []),
        "fsm_search": (ctypes.c_int, [_POINTER, _INT64, _POINTER, _INT64, _INT64, ctypes.c_int,
                                      _POINTER, _INT64, _POINTER, _POINTER, _INT64, _INT64,
                                      _INT64, _POINTER])})
    if library is not None and not library.fsm_supported():
        return None, "this CPU has no AVX-512"
    return library, reason


def unavailable_reason() -> str | None:
    """None when the kernel runs here, else why not (FAISS then serves exact search)."""
    return _library()[1]


def screens() -> bool:
    """Whether the kernel screens with int8 products here (a CPU with AVX512-VNNI)."""
    library = _library()[0]
    return library is not None and bool(library.fsm_screen_supported())


def serves(n_queries: int, k: int) -> bool:
    """Whether a flat search of n_queries for the k best should run on the kernel: enough
    queries, and k below FAISS's switch from heaps to a reservoir (100 in FAISS 1.15), whose
    order of ties the kernel does not reproduce."""
    return (n_queries >= MIN_QUERIES and k < faiss.cvar.distance_compute_min_k_reservoir
            and _library()[0] is not None)


def _centre(vectors: np.ndarray) -> np.ndarray:
    """The vector [D] (float32) to rank squared L2 around: of up to CENTRE_SAMPLE vectors at
    an even stride, the one nearest their mean. A stored vector keeps integer-valued data
    exact (and so their ties), and an outlier is never chosen."""
    sample = vectors[::max(1, len(vectors) // CENTRE_SAMPLE)]
    if not len(sample):
        return np.zeros(vectors.shape[1], np.float32)
    mean = sample.mean(0, dtype=np.float64).astype(np.float32)
    # einsum, not `@`: a BLAS call leaves OpenBLAS threads spinning on the cores the kernel
    # is about to use (1k x 512 searches ran 1.6x slower)
    nearest = np.argmin(np.einsum("ij,ij->i", sample, sample)
                        - 2 * np.einsum("ij,j->i", sample, mean))
    return np.ascontiguousarray(sample[nearest])


def flat_search(queries: np.ndarray, vectors: np.ndarray, k: int, inner_product: bool,
                screen_cap: int | None = None, counts: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """As FAISS's flat search of queries [n, D] among vectors [C, D] (C-contiguous float32):
    raw float32 [n, k], squared L2 distances (nearest first; +inf where C < k, where FAISS
    gives float32's largest number) or inner products when inner_product (largest first;
    -inf where C < k), and positions int64 [n, k] (rows of vectors; -1 where C < k). Exact
    ties come in FAISS's order (flat_topk.c) for k below 100; vectors whose distances differ
    by less than the float32 rounding of the ranking (about 1e-7 of ||q - m||^2 + ||p - m||^2,
    m the stored vector nearest the data's mean, `_centre`) may be ranked the other way.
    Threads: FAISS's (`faiss.omp_set_num_threads`), one slice of queries each; the GIL is
    released. screen_cap: candidates per query that int8 screening keeps (default SCREEN_CAP
    + 2k; 0: no screening); the answers are the same either way. counts: int64 [2] to add
    to: queries screened twice (their lists overflowed), and queries searched in float32
    after all."""
    library, reason = _library()
    if library is None:
        raise RuntimeError(f"the flat search kernel cannot run: {reason}")
    for name, array in (("queries", queries), ("vectors", vectors)):
        if array.dtype != np.float32 or array.ndim != 2 or not array.flags.c_contiguous:
            raise ValueError(f"{name} must be a C-contiguous float32 [N, D] array")
    if queries.shape[1] != vectors.shape[1] or queries.shape[1] < 1 or k < 1:
        raise ValueError(f"queries {queries.shape} and vectors {vectors.shape} must have the "
                         f"same D >= 1, and k ({k}) must be >= 1")
    n, dim = queries.shape
    raw = np.empty((n, k), np.float32)
    positions = np.empty((n, k), np.int64)
    centre = None if inner_product else _centre(vectors)  # inner product ranks unshifted
    cap = SCREEN_CAP + 2 * k if screen_cap is None else screen_cap

    def run(start: int, stop: int) -> tuple[int, np.ndarray]:
        slice_counts = np.zeros(2, np.int64)
        code = library.fsm_search(queries[start:].ctypes.data, stop - start,
                                  vectors.ctypes.data, len(vectors), dim, int(inner_product),
                                  None if centre is None else centre.ctypes.data, k,
                                  raw[start:].ctypes.data, positions[start:].ctypes.data,
                                  GROUP_BYTES, CHUNK_BYTES, cap, slice_counts.ctypes.data)
        return code, slice_counts

    threads = max(1, min(faiss.omp_get_max_threads(), n // MIN_QUERIES_PER_THREAD))
    codes, slice_counts = zip(*split_over_threads(run, n, threads, "flat-search"), strict=True)
    if counts is not None:
        counts += sum(slice_counts)
    if -2 in codes:
        raise RuntimeError("the flat search kernel found no AVX-512 on this CPU")
    if any(codes):
        raise MemoryError("the flat search kernel could not allocate its buffers")
    return raw, positions


def index_vectors(index: faiss.Index) -> tuple[np.ndarray, np.ndarray] | None:
    """For an `IndexIDMap2` over an `IndexFlat`: views of its vectors float32 [N, D] and ids
    int64 [N] (valid while the index is unchanged); None for any other index."""
    if not isinstance(index, faiss.IndexIDMap2):
        return None
    flat = faiss.downcast_index(index.index)
    if not isinstance(flat, faiss.IndexFlat) or index.ntotal == 0:
        return None
    n, dim = int(index.ntotal), int(index.d)
    vectors = faiss.rev_swig_ptr(flat.get_xb(), n * dim).reshape(n, dim)
    ids = faiss.rev_swig_ptr(index.id_map.data(), n)
    return vectors, ids
