"""PrototypeStore: named classes registered from a few embeddings, searched with FAISS.

Two modes. "prototype": one vector per class, the mean of its shots, kept as a float32 mean
and a count so new shots update it without revisiting old ones (the update sums in float64);
the index holds it under the class id. "instance": every shot is its own vector with its own
id; a query's classes come from its nearest shots (over-fetched and de-duplicated).

Two metrics, those of `fewshot_metric.distances`: "sqeuclidean" (FAISS L2; distance =
||q - v||^2) and "cosine" (inner product over unit-normalised copies; distance = 1 - cos).
For cosine, shots are normalised before they are summed: a prototype is the mean of the unit
shots, re-normalised for the index. Smaller distance is closer for both.

Ids are int64, drawn from one counter for classes and shots, and never reused. Per-class state
lives in columns, not Python objects (`fewshot_metric.store.row_table`): a class costs its
label, a dict entry, 16 bytes of id and count, and its float32 mean (prototype mode) or its
shots' vectors (instance mode). That table is the store's own copy of the index vectors
(beside the index's storage): indexes that cannot remove (HNSW) or must be trained (IVF) are
rebuilt from it chunk by chunk, see `fewshot_metric.store.index_factory`, and queries an
approximate index cannot fill are answered exactly from it. Every mutating call validates
everything first and leaves the store unchanged when it fails. A store that a StoreOwner
serves also records each add / remove / rename in the folder's journal before the call
returns (`fewshot_metric.store.journal`); `load` replays the journal onto the snapshot.
"""

from __future__ import annotations

import json
import math
import numbers
import unicodedata
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import cached_property, partial
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from fewshot_metric.blas import warn_if_faiss_blas_is_generic
from fewshot_metric.distances import DISTANCES
from fewshot_metric.store.index_factory import IndexVectors, StoreIndex
from fewshot_metric.store.label_column import LabelColumn
from fewshot_metric.store.labels import check_label, resolve_collisions
from fewshot_metric.store.persistence import (
    ArrayChunks,
    SavedStore,
    read_store,
    write_store,
)
from fewshot_metric.store.row_table import ColumnSpec, RowTable

MODES = ("prototype", "instance")
UNKNOWN = "unknown"


class IncompatibleEmbedderError(ValueError):
    """The embedder differs (dim, metric or weights) from the one the store was built with."""


class ReadOnlyStoreError(ValueError):
    """A change to a store loaded with mmap=True."""


class ClassExistsError(ValueError):
    """A new label (of a rename) that is already a class of the store."""


class UnknownClassError(KeyError):
    """A label that is not a class of the store."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class SearchResult:
    """The k nearest classes of each of Q queries, nearest first.

    label_array object [Q, k] of str, and the same as lists, labels [Q][k] (made on first
    use: lists for 10,000 queries take about 1 ms); ids int64 [Q, k] class ids; distances
    float32 [Q, k] (squared L2, or 1 - cos); scores float32 [Q, k], softmax over -distances
    / temperature (rows sum to 1); rejected bool [Q], True where the nearest distance
    exceeded `reject_distance`: then the first label is "unknown" while ids, distances and
    scores still describe the nearest classes (a class may itself be called "unknown":
    `rejected` is what tells). k = min(the k asked for, number of classes).
    """

    label_array: np.ndarray
    ids: np.ndarray
    distances: np.ndarray
    scores: np.ndarray
    rejected: np.ndarray
    k: int

    @cached_property
    def labels(self) -> list[list[str]]:
        return self.label_array.tolist()


def _refuse_rows(bad: np.ndarray, problem: str, name: str, labels: list[str] | None) -> None:
    """Raises naming the first row where bad [N] is True (and its label, if given)."""
    where = np.flatnonzero(bad)
    if len(where):
        row = int(where[0])
        label = f" (label {labels[row]!r})" if labels and row < len(labels) else ""
        raise ValueError(f"row {row}{label} of {name} {problem}; fix or drop that row")


class PrototypeStore:
    """Class names -> embeddings [*, dim] in a FAISS index of kind `index` (index_options:
    see `fewshot_metric.store.index_factory`). `fingerprint` identifies the embedder; `info`
    is a JSON-serialisable dict saved with the store for its owner (e.g. the checkpoint)."""

    def __init__(self, dim: int, metric: str = "sqeuclidean", mode: str = "prototype",
                 index: str = "flat", fingerprint: str | None = None, **index_options: Any):
        if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim < 1:
            raise ValueError(f"dim must be a positive int (the embedder's dim), got {dim!r}")
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; choose one of {list(MODES)}")
        if fingerprint is not None and not (isinstance(fingerprint, str) and fingerprint):
            raise ValueError(f"fingerprint must be a non-empty str or None, got {fingerprint!r}")
        warn_if_faiss_blas_is_generic()
        self._index = StoreIndex(index, int(dim), metric, **index_options)
        self._mode = mode
        self._fingerprint = fingerprint
        self._classes = RowTable(_class_columns(mode, int(dim)))
        self._shots = RowTable(_shot_columns(int(dim))) if mode == "instance" else None
        self._labels = LabelColumn()  # by class row (a removed class's row keeps its label)
        self._row_of: dict[str, int] = {}  # label -> class row, live classes only
        self._next_id = 0
        self._max_vectors = 0  # most index vectors of any class
        self._read_only: str | None = None  # why changes are refused, if they are
        # set by a StoreOwner: records a change durably (or raises) and returns its journal seq
        self._journal: Callable[[dict[str, Any]], int] | None = None
        self._journal_seq = 0  # the last journal change the state holds (saved as journal_seq)
        self.info: dict[str, Any] = {}

    # ----------------------------------------------------------------- description
    @property
    def dim(self) -> int:
        return self._index.dim

    @property
    def metric(self) -> str:
        return self._index.metric

    @property
    def mode(self) -> str:
        return self._mode

    @property
    def fingerprint(self) -> str | None:
        return self._fingerprint

    @property
    def index_kind(self) -> str:
        return self._index.kind

    @property
    def index_options(self) -> dict[str, int]:
        return dict(self._index.options)

    @property
    def index(self) -> faiss.Index:
        """The live FAISS index (read it, do not modify it): the kind's index, or while an IVF
        kind has fewer than its train_min vectors, an exact flat one."""
        return self._index.faiss_index

    @property
    def read_only(self) -> bool:
        """True for a store loaded with mmap=True: it answers searches but cannot change."""
        return self._read_only is not None

    @property
    def classes(self) -> list[str]:
        """Class labels in insertion order (a rename keeps the position)."""
        return self._labels_at(self._classes.live_rows())

    @property
    def counts(self) -> dict[str, int]:
        """Shots added per class, in insertion order."""
        rows = self._classes.live_rows()
        return dict(zip(self._labels_at(rows),
                        self._classes.get("count", rows).tolist(), strict=True))

    def counts_page(self, offset: int, limit: int) -> dict[str, int]:
        """Shots per class of the classes offset .. offset + limit - 1 in insertion order: a
        page of `counts`, at the cost of the page (labels of the other classes not made)."""
        rows = self._classes.live_rows()[offset:offset + limit]
        return dict(zip(self._labels_at(rows), self._classes.get("count", rows).tolist(),
                        strict=True))

    @property
    def shots(self) -> int:
        """The number of shots added to all classes."""
        return int(self._classes.get("count", self._classes.live_rows()).sum())

    def count(self, label: str) -> int:
        """The number of shots added to class `label`."""
        return int(self._classes.get("count", [self._row(label)])[0])

    def __len__(self) -> int:
        return len(self._classes)

    def __contains__(self, label: object) -> bool:
        return isinstance(label, str) and unicodedata.normalize("NFC", label) in self._row_of

    def __repr__(self) -> str:
        return (f"PrototypeStore(dim={self.dim}, metric={self.metric!r}, mode={self.mode!r}, "
                f"index={self.index_kind!r}, classes={len(self)})")

    def check_compatible(self, dim: int, metric: str, fingerprint: str | None = None) -> None:
        """Raises IncompatibleEmbedderError unless an embedder with this dim, metric and
        fingerprint (compared when both it and the store's are known) fits the store."""
        problems = []
        if dim != self.dim:
            problems.append(f"dim {dim} != the store's {self.dim}")
        if metric != self.metric:
            problems.append(f"metric {metric!r} != the store's {self.metric!r}")
        if None not in (fingerprint, self.fingerprint) and fingerprint != self.fingerprint:
            problems.append(f"fingerprint {fingerprint} != the store's {self.fingerprint}")
        if problems:
            raise IncompatibleEmbedderError(
                "this embedder is not the one the store was built with: " + "; ".join(problems)
                + ". Use the store's embedder, or build a new store with this one")

    # ----------------------------------------------------------------- changes
    def add(self, embeddings: np.ndarray, labels: Sequence[str]) -> None:
        """Adds shots embeddings [N, D] with labels [N] to new or existing classes: all of
        them, or on any error none."""
        self._check_writable()
        if isinstance(labels, str | bytes):
            raise ValueError(f"labels must be a sequence of N class names, one per row, not a "
                             f"single string {labels!r}; wrap it: [{labels!r}] * N")
        labels = [check_label(label, f"labels[{i}]") for i, label in enumerate(labels)]
        shots = self._rows(embeddings, "embeddings", labels)
        if len(labels) != len(shots):
            raise ValueError(f"got {len(shots)} embeddings but {len(labels)} labels; give one "
                             f"label per row")
        # group the shots by label, groups in order of first appearance
        group_of: dict[str, int] = {}
        group = np.fromiter((group_of.setdefault(label, len(group_of)) for label in labels),
                            np.int64, len(labels))
        names = list(group_of)
        if (np.diff(group) < 0).any():  # not yet grouped (one shot per class always is)
            order = np.argsort(group, kind="stable")
            shots, group = shots[order], group[order]
        sizes = np.bincount(group, minlength=len(names))
        firsts = np.cumsum(sizes) - sizes  # first shot of each group
        old_rows = np.fromiter((self._row_of.get(name, -1) for name in names), np.int64,
                               len(names))
        is_new, old = old_rows < 0, np.flatnonzero(old_rows >= 0)
        counts = sizes.copy()
        counts[old] += self._classes.get("count", old_rows[old])
        # ids: a new class takes the next id, then its shots theirs (instance mode)
        taken = is_new + (sizes if self.mode == "instance" else 0)
        base = self._next_id + np.cumsum(taken) - taken
        class_ids = base.copy()
        class_ids[old] = self._classes.get("id", old_rows[old])
        means = None
        if self.mode == "prototype":
            means = self._means(shots, firsts, sizes, counts, old_rows, names)
            add_vectors, add_ids = self._index_ready(means), class_ids
            remove_ids = class_ids[old]
        else:
            add_vectors = shots
            add_ids = (base + is_new)[group] + np.arange(len(shots)) - firsts[group]
            remove_ids = np.zeros(0, np.int64)
        undo: list[Callable[[], None]] = []
        try:
            new = np.flatnonzero(is_new)
            rows = old_rows.copy()
            rows[new] = self._append_classes([names[g] for g in new.tolist()], class_ids[new],
                                             counts[new], None if means is None else means[new],
                                             undo)
            if len(old):
                self._update_classes(old_rows[old], counts[old],
                                     None if means is None else means[old], undo)
            if self._shots is not None:
                n_shot_rows = self._shots.n_rows
                self._shots.append(id=add_ids, class_row=rows[group], vector=add_vectors)
                undo.append(lambda: self._shots.truncate(n_shot_rows))
            self._index.update(remove_ids, add_vectors, add_ids, *self._index_source())
            self._record({"op": "add", "labels": labels, "embeddings": embeddings})
        except BaseException:
            self._revert(undo)
            raise
        self._next_id = int(base[-1] + taken[-1])
        self._max_vectors = max(self._max_vectors,
                                int(counts.max()) if self.mode == "instance" else 1)

    def _means(self, shots: np.ndarray, firsts: np.ndarray, sizes: np.ndarray,
               counts: np.ndarray, old_rows: np.ndarray, names: list[str]) -> np.ndarray:
        """The new means float32 [G, D] of G classes after adding shots [N, D] (grouped:
        group g from firsts[g], sizes[g] shots; old_rows[g] >= 0 for an existing class, which
        then has counts[g] shots in all). Sums are float64; the array may be `shots` itself."""
        if len(names) == len(shots):  # one shot per class: the shot is its mean
            sums = means = shots
        else:
            sums = np.add.reduceat(shots, firsts, axis=0, dtype=np.float64)
            means = (sums / sizes[:, None]).astype(np.float32)
        old = np.flatnonzero(old_rows >= 0)
        # an existing class's sum is rebuilt from its float32 mean: shots that cancel it leave
        # rounding noise, up to about eps * sqrt(D) of the old shots' weight in the new mean
        noise = np.zeros(len(names))
        if len(old):
            old_counts = counts[old] - sizes[old]
            old_sums = self._classes.get("mean", old_rows[old]).astype(np.float64)
            old_sums *= old_counts[:, None]
            means[old] = (old_sums + sums[old]) / counts[old, None]
            noise[old] = (4 * np.finfo(np.float32).eps * math.sqrt(self.dim) * old_counts
                          / counts[old])
        cancelled = (np.flatnonzero(np.linalg.norm(means, axis=1) <= noise)
                     if self._normalize else [])
        if len(cancelled):
            raise ValueError(f"the shots of class {names[cancelled[0]]!r} cancel out: the mean of "
                             f"their unit vectors is zero, so it has no cosine prototype; add "
                             f"other shots")
        return means

    def _append_classes(self, labels: list[str], ids: np.ndarray, counts: np.ndarray,
                        means: np.ndarray | None, undo: list[Callable[[], None]]) -> np.ndarray:
        """Appends new classes; returns their rows [G]."""
        if not labels:
            return np.zeros(0, np.int64)
        n_rows = self._classes.n_rows
        columns = {"id": ids, "count": counts}
        if means is not None:
            columns["mean"] = means
        rows = self._classes.append(**columns)

        def forget() -> None:
            self._classes.truncate(n_rows)
            self._labels.truncate(n_rows)
            for label in labels:
                self._row_of.pop(label, None)

        undo.append(forget)
        self._labels.extend(labels)
        self._row_of.update(zip(labels, rows.tolist(), strict=True))
        return rows

    def _update_classes(self, rows: np.ndarray, counts: np.ndarray, means: np.ndarray | None,
                        undo: list[Callable[[], None]]) -> None:
        """Sets the counts [R] (and means [R, D]) of existing classes at rows [R]."""
        names = ["count"] + (["mean"] if means is not None else [])
        before = {name: self._classes.get(name, rows) for name in names}
        undo.append(lambda: [self._classes.set(name, rows, before[name]) for name in names])
        self._classes.set("count", rows, counts)
        if means is not None:
            self._classes.set("mean", rows, means)

    def _revert(self, undo: list[Callable[[], None]]) -> None:
        """Undoes the table changes in `undo` and refills the index from the tables, keeping
        its training, so that answers are as before."""
        for step in reversed(undo):
            step()
        self._index.refill(*self._index_source())

    def remove(self, label: str) -> None:
        """Removes class `label` and its shots; its ids are never reused."""
        self._check_writable()
        row = self._row(label)
        label = self._labels[row]  # as the store holds it (NFC)
        rows = np.array([row], np.int64)
        undo: list[Callable[[], None]] = []
        try:
            self._classes.set_live(rows, False)
            undo.append(lambda: self._classes.set_live(rows, True))
            del self._row_of[label]
            undo.append(lambda: self._row_of.__setitem__(label, row))
            if self._shots is None:
                remove_ids = self._classes.get("id", rows)
            else:
                shot_rows = self._shots.live_rows()
                shot_rows = shot_rows[self._shots.get("class_row", shot_rows) == row]
                remove_ids = self._shots.get("id", shot_rows)
                self._shots.set_live(shot_rows, False)
                undo.append(lambda: self._shots.set_live(shot_rows, True))
            self._index.update(remove_ids, np.zeros((0, self.dim), np.float32),
                               np.zeros(0, np.int64), *self._index_source())
            self._record({"op": "remove", "label": label})
        except BaseException:
            self._revert(undo)
            raise
        if self.mode == "instance":
            self._max_vectors = int(self._classes.get("count", self._classes.live_rows())
                                    .max(initial=0))
        elif not len(self):
            self._max_vectors = 0

    def rename(self, old: str, new: str) -> None:
        """Renames class `old` to `new` (which must not exist), keeping its id and position."""
        self._check_writable()
        row = self._row(old)
        old, new = self._labels[row], check_label(new, "the new label")
        if new in self._row_of:
            raise ClassExistsError(f"cannot rename {old!r} to {new!r}: a class {new!r} already "
                                   f"exists; remove it first or choose another name")
        self._record({"op": "rename", "old": old, "new": new})  # nothing below can fail
        self._labels[row] = new
        self._row_of[new] = self._row_of.pop(old)

    def set_index(self, kind: str, **options: Any) -> None:
        """Switches to index `kind` with `options`. Changing only search-time options (nprobe,
        efSearch) of the current kind is instant; anything else, the same settings again
        included, rebuilds (and retrains) the index from the stored vectors."""
        index = StoreIndex(kind, self.dim, self.metric, **options)
        if self._index.retune(index):
            return
        self._check_writable()
        if self._journal is not None:
            raise ValueError(f"cannot rebuild the index of a served store as {kind!r}: its "
                             f"journal records add, remove and rename only. Stop the server "
                             f"(StoreOwner.close), then run `fewshot-metric store index`")
        index.rebuild(*self._index_source())
        self._index = index

    def _labels_at(self, rows: np.ndarray) -> list:
        """The labels of class rows of any shape ([R] -> list of str, [Q, k] -> lists)."""
        return self._labels.at(rows).tolist()

    def _check_writable(self) -> None:
        if self._read_only is not None:
            raise ReadOnlyStoreError(self._read_only)

    def _record(self, change: dict[str, Any]) -> None:
        """Has the attached journal, if any, record `change` durably; raises if it cannot
        (the caller then undoes the change)."""
        if self._journal is not None:
            self._journal_seq = self._journal(change)

    def _row(self, label: str) -> int:
        """The class row of `label` (any normalisation form); UnknownClassError if it is not a
        class."""
        if label not in self:
            classes = self._labels_at(self._classes.live_rows()[:11])
            known = ", ".join(map(repr, classes[:10])) or "none"
            raise UnknownClassError(f"no class {label!r} in the store (classes: {known}"
                                    f"{', ...' if len(classes) > 10 else ''}); check the spelling")
        return self._row_of[unicodedata.normalize("NFC", label)]

    @property
    def _normalize(self) -> bool:
        return DISTANCES[self.metric].normalize_for_index

    def _index_ready(self, means: np.ndarray) -> np.ndarray:
        """Class means float32 [G, D] -> the prototypes the index holds (unit copies for
        cosine)."""
        if not self._normalize:
            return means
        vectors = np.array(means, np.float32, order="C")
        faiss.normalize_L2(vectors)
        return vectors

    def _index_source(self) -> tuple[int, IndexVectors]:
        """How many vectors the index holds, and a callable giving them in chunks:
        (vectors float32 [n, D], ids int64 [n])."""
        if self._shots is not None:
            return len(self._shots), lambda: zip(self._shots.chunks("vector"),
                                                 self._shots.chunks("id"), strict=True)
        return len(self._classes), lambda: zip(map(self._index_ready, self._classes.chunks("mean")),
                                               self._classes.chunks("id"), strict=True)

    def _rows(self, embeddings: Any, name: str, labels: list[str] | None = None,
              read_only: bool = False) -> np.ndarray:
        """Checks embeddings [N, D] -> an index-ready float32 copy [N, D] (unit rows for
        cosine); the caller's array is never modified. `read_only`: for a result that is
        only read, which is then the caller's array itself where that is already an
        index-ready C-contiguous float32 array (squared L2: no copy of a big query batch)."""
        try:
            array = np.asarray(embeddings)
        except ValueError as error:  # ragged rows
            raise ValueError(f"{name} must be an [N, D] array of numbers: {error}") from None
        if array.ndim != 2 or len(array) == 0:
            raise ValueError(f"{name} must be a non-empty [N, D] array, got shape {array.shape}")
        if array.shape[1] != self.dim:
            raise IncompatibleEmbedderError(
                f"{name} have dim {array.shape[1]} but this store holds dim {self.dim} "
                f"embeddings; embed with the model the store was built with")
        if array.dtype.kind not in "fiu":
            raise ValueError(f"{name} must hold real numbers, got dtype {array.dtype}")
        with np.errstate(over="ignore"):  # values beyond float32 become inf, refused below
            rows = np.array(array, dtype=np.float32, order="C",  # normalised in place
                            copy=None if read_only and not self._normalize else True)
        if not (np.isfinite(rows.max()) and np.isfinite(rows.min())):  # NaN propagates
            _refuse_rows(~np.isfinite(rows).all(1), "is not finite (NaN or inf, or too large "
                         "for float32)", name, labels)
        if self._normalize:
            _refuse_rows(~rows.any(1), "is all zeros, which has no cosine direction", name,
                         labels)
            faiss.normalize_L2(rows)
        return rows

    # ----------------------------------------------------------------- queries
    def search(self, query_emb: np.ndarray, k: int = 1, temperature: float = 1.0,
               reject_distance: float | None = None) -> SearchResult:
        """The k nearest classes of each query in query_emb [Q, D]; see SearchResult."""
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be an int >= 1 (how many classes per query), got {k!r}")
        if not (isinstance(temperature, numbers.Real) and math.isfinite(temperature)
                and temperature > 0):
            raise ValueError(f"temperature must be a number > 0, got {temperature!r}")
        if reject_distance is not None and not (
                isinstance(reject_distance, numbers.Real) and math.isfinite(reject_distance)
                and reject_distance >= 0):
            raise ValueError(f"reject_distance must be a number >= 0 or None, got "
                             f"{reject_distance!r}")
        if not len(self):
            raise ValueError("the store has no classes: register classes first with "
                             "store.add(embeddings, labels)")
        queries = self._rows(query_emb, "query_emb", read_only=True)
        k_eff = min(int(k), len(self))
        # among (k - 1) * m + 1 shots, with at most m per class, are at least k classes
        n = min(self._index.ntotal, (k_eff - 1) * self._max_vectors + 1)
        rows, raw = self._nearest_classes(*self._index.search(queries, n), k_eff)
        short = (rows < 0).any(1)
        if short.any():  # an approximate index found too few vectors: answer those exactly
            rows[short], raw[short] = self._nearest_classes(
                *self._exact_search(queries[short], n), k_eff)
        distances = (1.0 - raw if DISTANCES[self.metric].larger_is_closer else raw)
        distances = np.maximum(distances, 0.0).astype(np.float32)
        logits = -distances.astype(np.float64) / temperature
        scores = np.exp(logits - logits.max(1, keepdims=True))
        scores /= scores.sum(1, keepdims=True)
        labels = self._labels.at(rows)
        class_ids = self._classes.get("id", rows.ravel()).reshape(rows.shape)
        rejected = np.zeros(len(queries), bool)
        if reject_distance is not None:
            rejected = distances[:, 0] > reject_distance
            labels[rejected, 0] = UNKNOWN
        return SearchResult(labels, class_ids, distances, scores.astype(np.float32), rejected,
                            k_eff)

    def _exact_search(self, queries: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Brute force over the index vectors, chunk by chunk: queries [Q, D] -> raw scores
        [Q, n] and vector ids [Q, n], as `StoreIndex.search` gives them."""
        larger_is_closer = DISTANCES[self.metric].larger_is_closer
        heap = faiss.ResultHeap(len(queries), n, keep_max=larger_is_closer)
        for vectors, ids in self._index_source()[1]():
            raw, positions = faiss.knn(queries, np.ascontiguousarray(vectors),
                                       min(n, len(vectors)), metric=self._index.faiss_metric)
            heap.add_result(raw, ids[positions])
        heap.finalize()
        return heap.D, heap.I

    def _nearest_classes(self, raw: np.ndarray, vector_ids: np.ndarray, k: int
                         ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS results raw [Q, n], vector ids [Q, n] (nearest first, -1 = none) -> the first
        k distinct classes: class rows int64 [Q, k] (-1 where too few) and their raw scores."""
        found = np.logical_and.accumulate(vector_ids >= 0, axis=1)  # up to the first -1
        hits = np.full(vector_ids.shape, -1, np.int64)
        if self._shots is None:  # one vector per class, under the class id: no repeats
            hits[found] = self._classes.find("id", vector_ids[found])
        else:
            hits[found] = self._shots.get("class_row", self._shots.find("id", vector_ids[found]))
        rows = np.full((len(raw), k), -1, np.int64)
        scores = np.zeros((len(raw), k), np.float32)
        if self._shots is None:
            n = min(k, raw.shape[1])
            rows[:, :n] = hits[:, :n]
            scores[:, :n] = np.where(hits[:, :n] >= 0, raw[:, :n], 0.0)
            return rows, scores
        for q, (line_raw, line_rows) in enumerate(zip(raw.tolist(), hits.tolist(), strict=True)):
            seen: list[int] = []
            for score, row in zip(line_raw, line_rows, strict=True):
                if row < 0 or len(seen) == k:
                    break
                if row not in seen:
                    scores[q, len(seen)] = score
                    seen.append(row)
            rows[q, :len(seen)] = seen
        return rows, scores

    def pick_rejection_threshold(self, known_emb: np.ndarray, unknown_emb: np.ndarray,
                                 false_accept_rate: float) -> float:
        """A `reject_distance` from held-out queries of the store's classes, known_emb [N, D],
        and of classes not in it, unknown_emb [M, D].

        A query is accepted when its nearest distance d <= threshold. With a = floor(rate * M)
        unknown queries allowed through, every threshold below c, the (a+1)-th smallest
        unknown distance (inf when a = M), keeps the false accepts <= rate; among those this
        returns the smallest that accepts the most known queries: the largest known distance
        below c. Raises if no known query is closer than c.
        """
        if not (isinstance(false_accept_rate, numbers.Real) and 0 <= false_accept_rate <= 1):
            raise ValueError(f"false_accept_rate must be in [0, 1], got {false_accept_rate!r}")
        known = self.search(known_emb).distances[:, 0]
        unknown = np.sort(self.search(unknown_emb).distances[:, 0])
        allowed = math.floor(false_accept_rate * len(unknown) + 1e-9)
        cap = unknown[allowed] if allowed < len(unknown) else np.inf
        accepted = known[known < cap]
        if not len(accepted):
            raise ValueError(f"no threshold accepts any known query while letting through at "
                             f"most {false_accept_rate:g} of the unknown ones: every known "
                             f"query is at distance >= {cap:g}; allow a higher "
                             f"false_accept_rate or check the embeddings")
        return float(accepted.max())

    # ----------------------------------------------------------------- files
    def save(self, path: str | Path, lock_timeout: float = 5.0, *,
             around_swap: Callable[[Path], AbstractContextManager[None]] | None = None) -> None:
        """Writes the store to folder `path` atomically (see `fewshot_metric.store.persistence`);
        waits up to `lock_timeout` s for another process saving or loading it; StoreOwnedError
        while a StoreOwner owns `path`. `around_swap`: see `write_store` (a StoreOwner's fold)."""
        self._check_writable()
        if not isinstance(self.info, dict):
            raise ValueError(f"store.info must be a dict, got {type(self.info).__name__}")
        try:
            json.dumps(self.info, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"store.info must hold JSON values only (str, number, bool, None, "
                             f"list, dict): {error}") from None
        rows = self._classes.live_rows()
        arrays: dict[str, ArrayChunks]
        if self._shots is None:
            arrays = {"means": ArrayChunks(np.float32, (len(rows), self.dim),
                                           partial(self._classes.chunks, "mean"))}
        else:
            n = len(self._shots)
            arrays = {
                "vectors": ArrayChunks(np.float32, (n, self.dim),
                                       partial(self._shots.chunks, "vector")),
                "vector_ids": ArrayChunks(np.int64, (n,), partial(self._shots.chunks, "id")),
                "vector_classes": ArrayChunks(np.int64, (n,), lambda: (
                    self._classes.get("id", chunk) for chunk in self._shots.chunks("class_row"))),
            }
        write_store(path, SavedStore(self.dim, self.metric, self.mode, self.fingerprint,
                                     self.info, self._next_id,
                                     self._labels_at(rows),
                                     self._classes.get("id", rows),
                                     self._classes.get("count", rows), arrays, self._index,
                                     journal_seq=self._journal_seq),
                    lock_timeout, around_swap)

    @classmethod
    def load(cls, path: str | Path, lock_timeout: float = 5.0, mmap: bool = False,
             label_collisions: str = "refuse", *, journal_until: int | None = None
             ) -> PrototypeStore:
        """Reads a store saved by `save`; StoreFormatError names a missing or corrupt file.
        Labels are put in NFC (`fewshot_metric.store.labels`); `label_collisions` says what
        to do with labels saved before that rule that are one label in NFC: "refuse"
        (LabelCollisionError naming them), "merge" or "rename" (see `resolve_collisions`).

        mmap=True maps the class table and the IVF index's lists (flat codes too) from the
        store's files instead of reading them into memory: a store much larger than memory
        answers searches, paging in what they touch. Such a store is read-only (changing
        search-time options with `set_index` still works).

        The changes in the folder's journal after the snapshot (made by a StoreOwner, e.g.
        `fewshot-metric serve`) are replayed, up to change `journal_until` if given (a fold);
        with mmap=True, pending changes raise JournalPendingError instead."""
        # imported here: the journal module builds on this one (StoreOwner loads stores)
        from fewshot_metric.store.journal import JournalPendingError, pending_changes, replay

        saved = read_store(path, lock_timeout, mmap)  # the journal's bytes with the snapshot
        pending = pending_changes(saved, journal_until)
        if mmap and pending:
            raise JournalPendingError.of(saved.source, len(pending))
        merged = resolve_collisions(saved, label_collisions, mmap)
        store = cls(saved.dim, saved.metric, saved.mode, saved.index.kind, saved.fingerprint,
                    **saved.index.options)
        store._index, store._next_id, store.info = saved.index, saved.next_id, saved.info
        store._labels = LabelColumn(saved.labels)
        store._row_of = {label: row for row, label in enumerate(saved.labels)}
        columns = {"id": saved.class_ids, "count": saved.counts}
        if store.mode == "prototype":
            store._classes = RowTable.from_arrays(_class_columns(store.mode, store.dim),
                                                  {**columns, "mean": saved.arrays["means"]})
            store._max_vectors = 1 if len(store) else 0
        else:
            store._classes = RowTable.from_arrays(_class_columns(store.mode, store.dim), columns)
            class_rows = np.searchsorted(saved.class_ids, saved.arrays["vector_classes"])
            store._shots = RowTable.from_arrays(_shot_columns(store.dim), {
                "id": saved.arrays["vector_ids"], "class_row": class_rows,
                "vector": saved.arrays["vectors"]})
            store._max_vectors = int(saved.counts.max(initial=0))
        if merged:  # merged classes' vectors changed; an IVF index keeps its training
            store._index.refill(*store._index_source())
        replay(store, pending, saved.source)
        store._journal_seq = pending[-1].seq if pending else saved.journal_seq
        if mmap:
            store._read_only = (f"the store {saved.source} was loaded with mmap=True, which is "
                                f"read-only; load it with PrototypeStore.load(path) to change it")
        return store


def _class_columns(mode: str, dim: int) -> ColumnSpec:
    """The class table: id, shot count, and in prototype mode the float32 mean [D] of the
    shots (of their unit vectors for cosine)."""
    columns: ColumnSpec = {"id": (np.int64, ()), "count": (np.int64, ())}
    if mode == "prototype":
        columns["mean"] = (np.float32, (dim,))
    return columns


def _shot_columns(dim: int) -> ColumnSpec:
    """The shot table (instance mode): id, class row, index-ready vector [D]."""
    return {"id": (np.int64, ()), "class_row": (np.int64, ()), "vector": (np.float32, (dim,))}
