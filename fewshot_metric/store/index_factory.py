"""FAISS indexes by kind name, kept in step with the vectors a store owns.

Kinds and their options (all positive ints; unspecified ones take the defaults below):

- "flat": exact search. `IndexIDMap2` over `IndexFlat`.
- "hnsw": approximate graph search; options M, efConstruction, efSearch. `IndexIDMap2` over
  `IndexHNSWFlat`. HNSW cannot delete, so any removal (including replacing a prototype)
  rebuilds the graph from the store's vectors: batch shots into few `add` calls.
- "ivf_flat": inverted lists of full vectors; options nlist, nprobe.
- "ivf_pq": inverted lists of product-quantised codes; options nlist, nprobe, pq_m (must
  divide the embedding dim), pq_bits. Both IVF kinds keep the ids in their inverted lists
  (not `IndexIDMap2`, whose `remove_ids` returns wrong ids over an IVF index).

An IVF index must be trained. Until the store holds `train_min` vectors, it serves from an
exact flat index; the first update that reaches `train_min` trains the quantizers on all
stored vectors and switches. `train_min` is 39 points per k-means centroid, FAISS's own
minimum for a warning-free fit: 39 * nlist for "ivf_flat" and 39 * max(nlist, 2**pq_bits)
for "ivf_pq". A trained index is not retrained as the store grows, nor dropped when removals
take it below `train_min`; `PrototypeStore.set_index` rebuilds (and retrains) from the current
vectors. Training uses at most 256 vectors per centroid (FAISS's own k-means sample size),
taken at an even stride over the store's vectors, so a rebuild of tens of millions of vectors
never holds them all in one array: they are added chunk by chunk.

Options a search reads (nprobe, efSearch) change on the live index without a rebuild
(`retune`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import faiss
import numpy as np

from fewshot_metric.distances import DISTANCES
from fewshot_metric.store import flat_kernel

KIND_OPTIONS: dict[str, dict[str, int]] = {
    "flat": {},
    "hnsw": {"M": 32, "efConstruction": 40, "efSearch": 64},
    "ivf_flat": {"nlist": 1024, "nprobe": 16},
    "ivf_pq": {"nlist": 1024, "nprobe": 16, "pq_m": 8, "pq_bits": 8},
}
SEARCH_OPTIONS = ("nprobe", "efSearch")  # read at search time: changing them needs no rebuild
IVF_KINDS = ("ivf_flat", "ivf_pq")
_KMEANS_POINTS_PER_CENTROID = 39
_KMEANS_MAX_POINTS_PER_CENTROID = 256
# () -> the store's index vectors in chunks: (vectors float32 [n, D], ids int64 [n])
IndexVectors = Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]]
_METRIC_NAMES = {faiss.METRIC_L2: "L2", faiss.METRIC_INNER_PRODUCT: "inner product"}


def resolve_options(kind: str, dim: int, options: dict[str, Any]) -> dict[str, int]:
    """Checks `options` of index `kind` for `dim`-wide vectors -> all options, defaults filled."""
    if kind not in KIND_OPTIONS:
        raise ValueError(f"unknown index kind {kind!r}; choose one of {list(KIND_OPTIONS)}")
    defaults = KIND_OPTIONS[kind]
    unknown = sorted(set(options) - set(defaults))
    if unknown:
        valid = f"valid options are {list(defaults)}" if defaults else "it takes none"
        raise ValueError(f"index kind {kind!r} got unknown options {unknown}; {valid}")
    resolved = {**defaults, **options}
    for name, value in resolved.items():
        if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
            raise ValueError(f"index option {name!r} must be a positive int, got {value!r}")
    resolved = {name: int(value) for name, value in resolved.items()}
    if kind == "ivf_pq":
        if dim % resolved["pq_m"]:
            raise ValueError(f"index option pq_m={resolved['pq_m']} must divide the embedding "
                             f"dim {dim}; pick a divisor of {dim}")
        if resolved["pq_bits"] > 16:
            raise ValueError(f"index option pq_bits must be 1..16, got {resolved['pq_bits']}")
    return resolved


def _centroids(kind: str, options: dict[str, int]) -> int:
    """The most centroids any k-means of an IVF kind fits."""
    centroids = options["nlist"]
    if kind == "ivf_pq":
        centroids = max(centroids, 2 ** options["pq_bits"])
    return centroids


def train_min(kind: str, options: dict[str, int]) -> int:
    """Vectors needed before an IVF index trains (see the module docstring); 0 for others."""
    if kind not in IVF_KINDS:
        return 0
    return _KMEANS_POINTS_PER_CENTROID * _centroids(kind, options)


def training_sample(n: int, chunks: IndexVectors, max_points: int) -> np.ndarray:
    """At most `max_points` of the n vectors that `chunks` gives, at an even stride, float32
    [<= max_points, D]."""
    stride = -(-n // max_points)
    parts, seen = [], 0
    for vectors, _ in chunks():
        parts.append(vectors[(-seen) % stride::stride])
        seen += len(vectors)
    return np.ascontiguousarray(np.concatenate(parts), np.float32)


class StoreIndex:
    """The FAISS index of one `kind` over a store's index-ready vectors [N, D] float32 with
    int64 ids. `faiss_index` is the live index: the kind itself, or an exact `IndexIDMap2`
    flat index while an IVF kind waits for `train_min` vectors (`waiting`)."""

    def __init__(self, kind: str, dim: int, metric: str, **options: Any):
        if metric not in DISTANCES:
            raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(DISTANCES)}")
        self.kind, self.dim, self.metric = kind, dim, metric
        self.options = resolve_options(kind, dim, options)
        self.train_min = train_min(kind, self.options)
        self.faiss_metric = DISTANCES[metric]().faiss_metric
        self.faiss_index = self._build(ready=kind not in IVF_KINDS)

    @property
    def waiting(self) -> bool:
        """True while an IVF kind serves from its exact flat stand-in."""
        return self.kind in IVF_KINDS and isinstance(self.faiss_index, faiss.IndexIDMap2)

    @property
    def ntotal(self) -> int:
        return int(self.faiss_index.ntotal)

    def _build(self, ready: bool) -> faiss.Index:
        """An empty index of this kind (`ready`) or its flat stand-in, search options set."""
        opts = self.options
        description = {
            "flat": "IDMap2,Flat",
            "hnsw": f"IDMap2,HNSW{opts.get('M')}",
            "ivf_flat": f"IVF{opts.get('nlist')},Flat",
            # "np": no polysemous training (about 1 s per sub-quantizer, unused by search)
            "ivf_pq": f"IVF{opts.get('nlist')},PQ{opts.get('pq_m')}x{opts.get('pq_bits')}np",
        }[self.kind if ready else "flat"]
        index = faiss.index_factory(self.dim, description, self.faiss_metric)
        self._configure(index)
        return index

    def _configure(self, index: faiss.Index) -> None:
        """Sets the search-time options on a built or loaded index."""
        if self.kind == "hnsw":
            hnsw = faiss.downcast_index(index.index).hnsw
            hnsw.efConstruction = self.options["efConstruction"]
            hnsw.efSearch = self.options["efSearch"]
        elif self.kind in IVF_KINDS and not isinstance(index, faiss.IndexIDMap2):
            faiss.extract_index_ivf(index).nprobe = self.options["nprobe"]

    def adopt(self, index: faiss.Index) -> None:
        """Takes over a loaded index; ValueError says how it differs from this kind."""
        stand_in = self.kind in IVF_KINDS and isinstance(index, faiss.IndexIDMap2)
        expected = self._build(ready=not stand_in)
        got, want = _layers(index), _layers(expected)
        if (len(got) != len(want) or not all(map(isinstance, got, map(type, want)))
                or (index.d, index.metric_type) != (expected.d, expected.metric_type)):
            raise ValueError(f"it holds {_describe(index)}; a {self.kind!r} {self.metric} store "
                             f"of dim {self.dim} needs {_describe(expected)}")
        if not index.is_trained:
            raise ValueError(f"its {self.kind!r} index is not trained")
        self._configure(index)
        self.faiss_index = index

    def retune(self, other: StoreIndex) -> bool:
        """Takes `other`'s search-time options if they differ and nothing else does (same
        kind, dim, metric, build options); returns whether it did."""
        def build(index: StoreIndex) -> tuple:
            options = {k: v for k, v in index.options.items() if k not in SEARCH_OPTIONS}
            return index.kind, index.dim, index.metric, options

        if build(other) != build(self) or other.options == self.options:
            return False
        self.options = dict(other.options)
        self._configure(self.faiss_index)
        return True

    def rebuild(self, n: int, chunks: IndexVectors) -> None:
        """Replaces the index by one over the n vectors that `chunks` gives, training an IVF
        kind when n >= train_min; the old index stays if this fails."""
        ready = self.kind not in IVF_KINDS or n >= self.train_min
        index = self._build(ready)
        if not index.is_trained:
            max_points = _KMEANS_MAX_POINTS_PER_CENTROID * _centroids(self.kind, self.options)
            index.train(training_sample(n, chunks, max_points))
        for vectors, ids in chunks():
            index.add_with_ids(np.ascontiguousarray(vectors), ids)
        self.faiss_index = index

    def refill(self, n: int, chunks: IndexVectors) -> None:
        """Replaces the index's vectors by the n that `chunks` gives. A trained IVF index keeps
        its training (centroids, codebooks) whatever n is, so its answers do not change;
        other indexes are rebuilt."""
        if self.kind not in IVF_KINDS or self.waiting:
            self.rebuild(n, chunks)
            return
        index = faiss.clone_index(self.faiss_index)
        index.reset()
        for vectors, ids in chunks():
            index.add_with_ids(np.ascontiguousarray(vectors), ids)
        self._configure(index)
        self.faiss_index = index

    def update(self, remove_ids: np.ndarray, add_vectors: np.ndarray, add_ids: np.ndarray,
               n_after: int, all_vectors: IndexVectors) -> None:
        """Removes ids [R] and adds vectors [A, D] with ids [A]. Rebuilds from the n_after
        vectors that `all_vectors` gives, the state after the update, when the kind cannot
        remove (HNSW) or an IVF kind reaches `train_min`."""
        if ((self.waiting and n_after >= self.train_min)
                or (self.kind == "hnsw" and len(remove_ids))):
            self.rebuild(n_after, all_vectors)
            return
        if len(remove_ids):
            self.faiss_index.remove_ids(remove_ids)
        if len(add_ids):
            self.faiss_index.add_with_ids(add_vectors, add_ids)

    def search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """queries [Q, D] float32 -> raw FAISS scores [Q, n] float32, ids [Q, n] int64 (-1
        where an approximate index found fewer than n). A flat index with enough queries is
        searched by the fused kernel (`flat_kernel`): FAISS's answers up to float rounding,
        faster."""
        stored = (flat_kernel.index_vectors(self.faiss_index)
                  if flat_kernel.serves(len(queries), n) else None)
        if stored is None:
            return self.faiss_index.search(queries, n)
        vectors, ids = stored
        raw, positions = flat_kernel.flat_search(
            queries, vectors, n, inner_product=self.faiss_metric == faiss.METRIC_INNER_PRODUCT)
        return raw, np.where(positions >= 0, ids[positions], -1)


def _layers(index: faiss.Index) -> list[faiss.Index]:
    """[index] or, for an IndexIDMap2, [index, the index it wraps]."""
    if isinstance(index, faiss.IndexIDMap2):
        return [index, faiss.downcast_index(index.index)]
    return [index]


def _describe(index: faiss.Index) -> str:
    """"IndexIDMap2 > IndexFlat of dim 4, metric L2": what `adopt` reports."""
    names = " > ".join(type(layer).__name__ for layer in _layers(index))
    metric = _METRIC_NAMES.get(index.metric_type, str(index.metric_type))
    return f"{names} of dim {index.d}, metric {metric}"
