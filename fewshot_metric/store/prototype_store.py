"""PrototypeStore: named classes registered from a few embeddings, searched with FAISS.

Two modes. "prototype": one vector per class, the mean of its shots, kept as a float64
running sum and a count so new shots update it without revisiting old ones; the index holds
it under the class id. "instance": every shot is its own vector with its own id; a query's
classes come from its nearest shots (over-fetched and de-duplicated).

Two metrics, those of `fewshot_metric.distances`: "sqeuclidean" (FAISS L2; distance =
||q - v||^2) and "cosine" (inner product over unit-normalised copies; distance = 1 - cos).
For cosine, shots are normalised before they are summed: a prototype is the mean of the unit
shots, re-normalised for the index. Smaller distance is closer for both.

Ids are int64, drawn from one counter for classes and shots, and never reused. The store keeps
its own float32 copy of every index vector (one [n, D] block per class, beside the index's
own storage, so memory is about twice the vectors'): indexes that cannot remove (HNSW) or
must be trained (IVF) are rebuilt from it, see `fewshot_metric.store.index_factory`, and
queries an approximate index cannot fill are answered exactly from it. Every mutating call
validates everything first and leaves the store unchanged when it fails.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from fewshot_metric.blas import warn_if_faiss_blas_is_generic
from fewshot_metric.distances import DISTANCES
from fewshot_metric.store.index_factory import StoreIndex
from fewshot_metric.store.persistence import (
    SavedStore,
    StoreFormatError,
    read_store,
    write_store,
)

MODES = ("prototype", "instance")
UNKNOWN = "unknown"


class IncompatibleEmbedderError(ValueError):
    """The embedder differs (dim, metric or weights) from the one the store was built with."""


class UnknownClassError(KeyError):
    """A label that is not a class of the store."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class SearchResult:
    """The k nearest classes of each of Q queries, nearest first.

    labels [Q][k] str; ids int64 [Q, k] class ids; distances float32 [Q, k] (squared L2, or
    1 - cos); scores float32 [Q, k], softmax over -distances / temperature (rows sum to 1);
    rejected bool [Q], True where the nearest distance exceeded `reject_distance`: then
    labels[q][0] is "unknown" while ids, distances and scores still describe the nearest
    classes (a class may itself be called "unknown": `rejected` is what tells). k = min(the
    k asked for, number of classes).
    """

    labels: list[list[str]]
    ids: np.ndarray
    distances: np.ndarray
    scores: np.ndarray
    rejected: np.ndarray
    k: int


@dataclass(frozen=True)
class _Entry:
    """One class: id, shots added, index vectors float32 [n, D] with ids int64 [n] (n = 1 in
    prototype mode, under the class id), and the float64 [D] shot sum (prototype mode)."""

    id: int
    count: int
    vector_ids: np.ndarray
    vectors: np.ndarray
    sum: np.ndarray | None = None


def check_label(label: object, where: str) -> str:
    """A class label: a str that is not empty or whitespace-only."""
    if not isinstance(label, str):
        raise ValueError(f"{where} must be a str class name, got {type(label).__name__} "
                         f"{label!r}")
    if not label.strip():
        raise ValueError(f"{where} = {label!r} is empty or whitespace-only; give every class a "
                         f"visible name")
    return label


def _stack(parts: Iterable[tuple[np.ndarray, np.ndarray]], dim: int
           ) -> tuple[np.ndarray, np.ndarray]:
    """(vectors float32 [n_i, D], ids int64 [n_i]) pairs -> vectors [N, D], ids [N]."""
    parts = list(parts)
    if not parts:
        return np.empty((0, dim), np.float32), np.empty(0, np.int64)
    return np.concatenate([v for v, _ in parts]), np.concatenate([i for _, i in parts])


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
        self._entries: dict[str, _Entry] = {}  # label -> entry, insertion order
        self._owner: dict[int, int] = {}  # vector id -> class id
        self._label_of: dict[int, str] = {}  # class id -> label
        self._next_id = 0
        self._max_vectors = 0  # most index vectors of any class
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
    def classes(self) -> list[str]:
        """Class labels in insertion order (a rename keeps the position)."""
        return list(self._entries)

    @property
    def counts(self) -> dict[str, int]:
        """Shots added per class, in insertion order."""
        return {label: entry.count for label, entry in self._entries.items()}

    def count(self, label: str) -> int:
        """The number of shots added to class `label`."""
        return self._entry(label).count

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, label: object) -> bool:
        return label in self._entries

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
        if isinstance(labels, str | bytes):
            raise ValueError(f"labels must be a sequence of N class names, one per row, not a "
                             f"single string {labels!r}; wrap it: [{labels!r}] * N")
        labels = [check_label(label, f"labels[{i}]") for i, label in enumerate(labels)]
        rows = self._rows(embeddings, "embeddings", labels)
        if len(labels) != len(rows):
            raise ValueError(f"got {len(rows)} embeddings but {len(labels)} labels; give one "
                             f"label per row")
        groups: dict[str, list[int]] = {}
        for i, label in enumerate(labels):
            groups.setdefault(label, []).append(i)
        next_id = self._next_id
        changes: dict[str, _Entry | None] = {}
        removed: list[np.ndarray] = []  # vector ids
        added: list[tuple[np.ndarray, np.ndarray]] = []  # (vectors, vector ids)
        for label, members in groups.items():
            old, shots = self._entries.get(label), rows[members]
            if old is None:
                class_id, next_id = next_id, next_id + 1
            else:
                class_id = old.id
            count = len(members) + (old.count if old else 0)
            if self.mode == "prototype":  # replace the class's one vector
                total = shots.sum(0, dtype=np.float64) + (old.sum if old else 0.0)
                vectors = self._prototype(total, count, label)
                ids = np.array([class_id], np.int64)
                entry = _Entry(class_id, count, ids, vectors, total)
                if old:
                    removed.append(old.vector_ids)
            else:  # append the shots
                vectors = shots
                ids = np.arange(next_id, next_id + len(members), dtype=np.int64)
                next_id += len(members)
                entry = _Entry(class_id, count, ids, vectors)
                if old:
                    entry = _Entry(class_id, count, np.concatenate([old.vector_ids, ids]),
                                   np.concatenate([old.vectors, vectors]))
            changes[label] = entry
            added.append((vectors, ids))
        self._apply(changes, removed, added)
        self._next_id = next_id

    def remove(self, label: str) -> None:
        """Removes class `label` and its shots; its ids are never reused."""
        entry = self._entry(label)
        self._apply({label: None}, [entry.vector_ids], [])

    def rename(self, old: str, new: str) -> None:
        """Renames class `old` to `new` (which must not exist), keeping its id and position."""
        entry = self._entry(old)
        check_label(new, "the new label")
        if new in self._entries:
            raise ValueError(f"cannot rename {old!r} to {new!r}: a class {new!r} already exists; "
                             f"remove it first or choose another name")
        self._entries = {(new if label == old else label): value
                         for label, value in self._entries.items()}
        self._label_of[entry.id] = new

    def set_index(self, kind: str, **options: Any) -> None:
        """Switches to index `kind` with `options`, rebuilt (and trained) from the stored
        vectors."""
        index = StoreIndex(kind, self.dim, self.metric, **options)
        index.rebuild(*self._vectors(self._entries))
        self._index = index

    def _entry(self, label: str) -> _Entry:
        if label not in self._entries:
            known = ", ".join(map(repr, list(self._entries)[:10])) or "none"
            raise UnknownClassError(f"no class {label!r} in the store (classes: {known}"
                                    f"{', ...' if len(self) > 10 else ''}); check the spelling")
        return self._entries[label]

    def _prototype(self, total: np.ndarray, count: int, label: str) -> np.ndarray:
        """Shot sum float64 [D] and count -> index vector float32 [1, D] (unit for cosine)."""
        vector = (total / count).astype(np.float32)[None]
        if self._normalize:
            if not vector.any():
                raise ValueError(f"the shots of class {label!r} cancel out: the mean of their "
                                 f"unit vectors is zero, so it has no cosine prototype; add "
                                 f"other shots")
            faiss.normalize_L2(vector)
        return vector

    @property
    def _normalize(self) -> bool:
        return DISTANCES[self.metric].normalize_for_index

    def _vectors(self, entries: dict[str, _Entry]) -> tuple[np.ndarray, np.ndarray]:
        """The index vectors of `entries`: float32 [N, D] and their ids int64 [N]."""
        return _stack(((e.vectors, e.vector_ids) for e in entries.values()), self.dim)

    def _apply(self, changes: dict[str, _Entry | None], removed: list[np.ndarray],
               added: list[tuple[np.ndarray, np.ndarray]]) -> None:
        """Updates the index (removing the vector ids `removed`, adding the (vectors, ids)
        `added`), then commits `changes` (label -> new entry, or None to drop it). If the index
        update fails it is rebuilt from the unchanged entries and the error re-raised.
        Touches only the changed classes, so a change costs O(changed), not O(classes)."""

        def entries_after() -> dict[str, _Entry]:  # only for a rebuild, which is O(N) anyway
            merged = {**self._entries, **changes}
            return {label: entry for label, entry in merged.items() if entry is not None}

        remove_ids = np.concatenate(removed) if removed else np.empty(0, np.int64)
        try:
            self._index.update(remove_ids, *_stack(added, self.dim),
                               lambda: self._vectors(entries_after()))
        except BaseException:
            self._index.rebuild(*self._vectors(self._entries))
            raise
        for label, entry in changes.items():
            old = self._entries.get(label)
            if old is not None:
                for vector_id in old.vector_ids.tolist():
                    del self._owner[vector_id]
                del self._label_of[old.id]
            if entry is None:
                del self._entries[label]
            else:
                self._entries[label] = entry  # an existing label keeps its position
                self._link(label, entry)
        if any(entry is None for entry in changes.values()):
            self._count_max_vectors()
        else:
            self._max_vectors = max([self._max_vectors,
                                     *(len(e.vector_ids) for e in changes.values() if e)])

    def _link(self, label: str, entry: _Entry) -> None:
        """Registers the ids of a committed entry for search."""
        self._owner.update(dict.fromkeys(entry.vector_ids.tolist(), entry.id))
        self._label_of[entry.id] = label

    def _count_max_vectors(self) -> None:
        self._max_vectors = max((len(e.vector_ids) for e in self._entries.values()), default=0)

    def _rows(self, embeddings: Any, name: str, labels: list[str] | None = None) -> np.ndarray:
        """Checks embeddings [N, D] -> an index-ready float32 copy [N, D] (unit rows for
        cosine); the caller's array is never modified."""
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
            rows = np.array(array, dtype=np.float32, order="C")  # a copy, normalised in place
        _refuse_rows(~np.isfinite(rows).all(1), "is not finite (NaN or inf, or too large for "
                     "float32)", name, labels)
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
        if not self._entries:
            raise ValueError("the store has no classes: register classes first with "
                             "store.add(embeddings, labels)")
        queries = self._rows(query_emb, "query_emb")
        k_eff = min(int(k), len(self))
        n_vectors = self._index.ntotal
        # among (k - 1) * m + 1 shots, with at most m per class, are at least k classes
        n = min(n_vectors, (k_eff - 1) * self._max_vectors + 1)
        class_ids, raw = self._nearest_classes(*self._index.search(queries, n), k_eff)
        short = (class_ids < 0).any(1)
        if short.any():  # an approximate index found too few vectors: answer those exactly
            vectors, ids = self._vectors(self._entries)
            exact_raw, positions = faiss.knn(queries[short], vectors, n,
                                             metric=self._index.faiss_metric)
            class_ids[short], raw[short] = self._nearest_classes(exact_raw, ids[positions],
                                                                 k_eff)
        distances = (1.0 - raw if DISTANCES[self.metric].larger_is_closer else raw)
        distances = np.maximum(distances, 0.0).astype(np.float32)
        logits = -distances.astype(np.float64) / temperature
        scores = np.exp(logits - logits.max(1, keepdims=True))
        scores /= scores.sum(1, keepdims=True)
        labels = [[self._label_of[c] for c in row] for row in class_ids.tolist()]
        rejected = np.zeros(len(queries), bool)
        if reject_distance is not None:
            rejected = distances[:, 0] > reject_distance
            for q in np.flatnonzero(rejected):
                labels[q][0] = UNKNOWN
        return SearchResult(labels, class_ids, distances, scores.astype(np.float32), rejected,
                            k_eff)

    def _nearest_classes(self, raw: np.ndarray, vector_ids: np.ndarray, k: int
                         ) -> tuple[np.ndarray, np.ndarray]:
        """FAISS results raw [Q, n], vector ids [Q, n] (nearest first, -1 = none) -> the first
        k distinct classes: class ids int64 [Q, k] (-1 where too few) and their raw scores."""
        class_ids = np.full((len(raw), k), -1, np.int64)
        scores = np.zeros((len(raw), k), np.float32)
        if self.mode == "prototype":  # one vector per class, under the class id: no repeats
            n = min(k, raw.shape[1])
            found = np.logical_and.accumulate(vector_ids[:, :n] >= 0, axis=1)  # up to the first -1
            class_ids[:, :n] = np.where(found, vector_ids[:, :n], -1)
            scores[:, :n] = np.where(found, raw[:, :n], 0.0)
            return class_ids, scores
        for q, (row_raw, row_ids) in enumerate(zip(raw.tolist(), vector_ids.tolist(),
                                                   strict=True)):
            found: list[int] = []
            for score, vector_id in zip(row_raw, row_ids, strict=True):
                if vector_id < 0 or len(found) == k:
                    break
                class_id = self._owner[vector_id]
                if class_id not in found:
                    scores[q, len(found)] = score
                    found.append(class_id)
            class_ids[q, :len(found)] = found
        return class_ids, scores

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
    def save(self, path: str | Path, lock_timeout: float = 5.0) -> None:
        """Writes the store to folder `path` atomically (see `fewshot_metric.store.persistence`);
        waits up to `lock_timeout` s for another process saving or loading it."""
        if not isinstance(self.info, dict):
            raise ValueError(f"store.info must be a dict, got {type(self.info).__name__}")
        try:
            json.dumps(self.info, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ValueError(f"store.info must hold JSON values only (str, number, bool, None, "
                             f"list, dict): {error}") from None
        entries = list(self._entries.values())
        counts = [e.count for e in entries]
        if self.mode == "prototype":
            sums = np.stack([e.sum for e in entries]) if entries else np.empty((0, self.dim))
            arrays = {"sums": sums}
        else:
            vectors, vector_ids = self._vectors(self._entries)
            class_ids = np.repeat(np.array([e.id for e in entries], np.int64), counts)
            arrays = {"vectors": vectors, "vector_ids": vector_ids, "vector_classes": class_ids}
        write_store(path, SavedStore(self.dim, self.metric, self.mode, self.fingerprint,
                                     self.info, self._next_id, self.classes,
                                     [e.id for e in entries], counts, arrays, self._index),
                    lock_timeout)

    @classmethod
    def load(cls, path: str | Path, lock_timeout: float = 5.0) -> PrototypeStore:
        """Reads a store saved by `save`; StoreFormatError names a missing or corrupt file."""
        saved = read_store(path, lock_timeout)
        store = cls(saved.dim, saved.metric, saved.mode, saved.index.kind, saved.fingerprint,
                    **saved.index.options)
        store._index, store._next_id, store.info = saved.index, saved.next_id, saved.info
        rows = 0
        for i, (label, class_id, count) in enumerate(zip(saved.labels, saved.class_ids,
                                                         saved.counts, strict=True)):
            try:
                check_label(label, f"classes[{i}].label")
            except ValueError as error:
                raise StoreFormatError(f"{saved.source}/store.json: {error}") from None
            if store.mode == "prototype":
                total = saved.arrays["sums"][i]
                entry = _Entry(class_id, count, np.array([class_id], np.int64),
                               store._prototype(total, count, label), total)
            else:
                span = slice(rows, rows + count)
                rows += count
                entry = _Entry(class_id, count, saved.arrays["vector_ids"][span],
                               saved.arrays["vectors"][span])
            store._entries[label] = entry
            store._link(label, entry)
        store._count_max_vectors()
        return store
