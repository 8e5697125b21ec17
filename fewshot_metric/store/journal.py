"""The journal: the changes to a served store, made durable without rewriting the store.

A store folder may hold `journal.jsonl`, the changes made since its snapshot (the other
files), one JSON object per `\\n`-terminated line, seqs consecutive:

    {"seq":7,"op":"add","labels":["cat","cat"],"embeddings":"<base64>","shape":[2,64],...}
    {"seq":8,"op":"remove","label":"dog",...}
    {"seq":9,"op":"rename","old":"cat","new":"kitten","sha256":"<hex>"}

`embeddings` are the rows given to `PrototypeStore.add` as float32 little-endian [N, D]
(`shape`), base64; `sha256` is the hex sha256 of the canonical JSON (sorted keys, no spaces)
of the other keys. store.json's `journal_seq` is the last change the snapshot holds.

Reading: `PrototypeStore.load` is the snapshot plus the changes after journal_seq, replayed
through the store's own add / remove / rename, so the state is the live one (means bit for
bit). A last line that is not whole (no newline, bad JSON or checksum: a write cut by a
crash, never acknowledged) is left out; a bad line before the last one, or a gap in the seqs,
is a StoreFormatError naming the file and line. `load(path, mmap=True)` refuses pending
changes (JournalPendingError): a memory-mapped store cannot replay them.

Owning: `StoreOwner.open(path)` is the one writer of a store. It flocks `NAME.owner` beside
the folder for its lifetime; meanwhile every other save of the store and every
`exclusive_lock` of it (the CLI's register and store remove / rename / index) gets
StoreOwnedError naming the owner, while readers go on and see snapshot + journal. Its
`store` writes each add / remove / rename to the journal and fsyncs it before the call
returns; a failed write (disk full, EIO) is cut back from the file and the store undoes the
change: nothing changed, nothing acknowledged. Only those three are journaled: `set_index`
rebuilds are refused, and `store.info` stays what the snapshot holds (changes to it in
memory are not written).

Folding writes the changes into a new snapshot in three steps, the heavy one beside the
appends: (1) under the journal lock, n = the last seq; (2) without it, load the snapshot and
the changes <= n from disk into a second store and write that, with journal_seq = n, into
the atomic save's temp folder; (3) under the journal lock, copy the changes > n into the temp
folder's journal, fsync, swap the folders and append to the new journal from then on. At
every instant the folder (or its backup during the swap) is a snapshot plus a journal that
holds every acknowledged change. The owner folds when asked (`fold`; `fold_if_due`:
fold_entries changes pending, or the oldest fold_seconds old), when it closes, and when it
opens a store whose last owner left changes (killed, or stopped without folding).

A StoreOwner's methods may be called from any thread (a server folds in a worker thread
while changes come in); its `store` is a PrototypeStore like any other: serialise its
changes, and searches with changes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import numbers
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from fewshot_metric.atomic import atomic_write, fsync_dir
from fewshot_metric.store.persistence import (
    JOURNAL_FILE,
    META_FILE,
    SavedStore,
    StoreFormatError,
    StoreOwnedError,
    exclusive_lock,
    store_exists,
    take_ownership,
    writing_as_owner,
)
from fewshot_metric.store.prototype_store import PrototypeStore, ReadOnlyStoreError

__all__ = ["JOURNAL_FILE", "JournalEntry", "JournalPendingError", "StoreOwnedError",
           "StoreOwner", "encode_change", "pending_changes", "read_journal", "replay"]

FIELDS = {"add": ("labels", "shape", "embeddings"), "remove": ("label",),
          "rename": ("old", "new")}
FIX = ("restore the store folder from a backup; or, to keep the snapshot and the changes "
       "before that line, cut journal.jsonl just before it (the changes from it on are lost)")


class JournalPendingError(StoreFormatError):
    """A memory-mapped load of a store whose journal holds changes not yet folded."""

    @classmethod
    def of(cls, folder: Path | None, pending: int) -> JournalPendingError:
        return cls(f"the store {folder} has {pending} change(s) in its {JOURNAL_FILE} not yet "
                   f"folded into its snapshot, written by a server (a StoreOwner, e.g. "
                   f"fewshot-metric serve) that owns or owned it; a memory-mapped store cannot "
                   f"replay them. Load it without mmap, or wait for the server's fold (every "
                   f"few changes or seconds, and when it stops); a store whose server died is "
                   f"folded when a StoreOwner opens it")


@dataclass(frozen=True)
class JournalEntry:
    """Change `seq`, from line `line` (1-based) of the journal. `change`: {"op": "add",
    "labels": [N], "embeddings": float32 [N, D]}, {"op": "remove", "label"} or
    {"op": "rename", "old", "new"}."""

    seq: int
    line: int
    change: dict[str, Any]


def _digest(record: dict[str, Any]) -> str:
    """sha256 of a record's canonical JSON (the record without its sha256)."""
    return hashlib.sha256(json.dumps(record, sort_keys=True, separators=(",", ":"))
                          .encode()).hexdigest()


def encode_change(seq: int, change: dict[str, Any]) -> bytes:
    """The journal line, newline included, of `change` (as in JournalEntry; the embeddings
    of "add" may be anything `PrototypeStore.add` takes) as change `seq`."""
    record = {"seq": seq, **change}
    if change["op"] == "add":
        vectors = np.asarray(change["embeddings"]).astype("<f4")  # as the store converts them
        record.update(labels=list(change["labels"]), shape=list(vectors.shape),
                      embeddings=base64.b64encode(vectors.tobytes()).decode("ascii"))
    record["sha256"] = _digest(record)
    return (json.dumps(record, separators=(",", ":")) + "\n").encode("ascii")


def _whole(line: bytes) -> dict[str, Any] | None:
    """The record of a journal line, or None if the line is not whole (bad JSON or
    checksum: cut by a crash, or damaged)."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    if not isinstance(record, dict) or record.pop("sha256", None) != _digest(record):
        return None
    return record


def _change(record: dict[str, Any], where: str) -> tuple[int, dict[str, Any]]:
    """A whole record -> its seq and change (see JournalEntry), checked field by field."""
    seq, op = record.get("seq"), record.get("op")

    def bad(problem: str) -> StoreFormatError:
        return StoreFormatError(f"{where}: {problem}; the file was edited or written by "
                                f"another program: {FIX}")

    if type(seq) is not int or seq < 1 or op not in FIELDS:
        raise bad(f"needs an int seq >= 1 and an op in {list(FIELDS)}, got {seq!r} and {op!r}")
    if set(record) != {"seq", "op", *FIELDS[op]}:
        raise bad(f"a {op!r} change has the keys seq, op, {', '.join(FIELDS[op])}; got "
                  f"{sorted(record)}")
    change = {key: record[key] for key in ("op", *FIELDS[op])}
    if op != "add":
        if not all(isinstance(change[key], str) for key in FIELDS[op]):
            raise bad(f"the labels of a {op!r} change must be strings")
        return seq, change
    labels, shape = change["labels"], change["shape"]
    if not (isinstance(labels, list) and all(isinstance(label, str) for label in labels)
            and isinstance(shape, list) and len(shape) == 2
            and all(type(n) is int and n >= 1 for n in shape) and shape[0] == len(labels)
            and isinstance(change["embeddings"], str)):
        raise bad("an 'add' change needs labels [N] (strings), shape [N, D] and embeddings "
                  "(base64)")
    try:
        raw = base64.b64decode(change["embeddings"], validate=True)
    except binascii.Error as error:
        raise bad(f"its embeddings are not base64 ({error})") from None
    if len(raw) != 4 * shape[0] * shape[1]:
        raise bad(f"its embeddings hold {len(raw)} bytes, not float32 {shape}")
    change["embeddings"] = np.frombuffer(raw, "<f4").reshape(shape)
    del change["shape"]
    return seq, change


def read_journal(data: bytes, path: Path, after: int = 0, until: int | None = None
                 ) -> list[JournalEntry]:
    """The changes with after < seq <= until (no bound: None) in the bytes `data` of the
    journal `path`, in order. A last line that is not whole is left out; a bad line before it,
    seqs out of order, or a first change after `after` + 1 raise StoreFormatError naming the
    line."""
    lines = data.split(b"\n")  # the last piece is what follows the last newline: b"" or cut
    entries: list[JournalEntry] = []
    expected = None
    for number, line in enumerate(lines, 1):
        record = _whole(line) if number < len(lines) else None  # no newline: not whole
        if record is None:
            if number == len(lines) or (number == len(lines) - 1 and not lines[-1]):
                break
            raise StoreFormatError(f"{path} line {number} is damaged (not a whole checksummed "
                                   f"JSON change) and lines follow it: {FIX}")
        seq, change = _change(record, f"{path} line {number}")
        if expected is None and seq > after + 1:
            raise StoreFormatError(f"{path} line {number} holds change {seq}, but the snapshot "
                                   f"({META_FILE} journal_seq) ends at change {after}: changes "
                                   f"{after + 1} to {seq - 1} are missing; {FIX}")
        if expected is not None and seq != expected:
            raise StoreFormatError(f"{path} line {number} holds change {seq} where change "
                                   f"{expected} should follow; {FIX}")
        expected = seq + 1
        if until is not None and seq > until:
            break
        if seq > after:
            entries.append(JournalEntry(seq, number, change))
    return entries


def pending_changes(saved: SavedStore, until: int | None = None) -> list[JournalEntry]:
    """The changes of a read store's journal that its snapshot does not hold (up to `until`)."""
    return read_journal(saved.journal, Path(saved.source, JOURNAL_FILE), saved.journal_seq,
                        until)


def replay(store: PrototypeStore, entries: list[JournalEntry], folder: Path) -> None:
    """Applies the changes of `entries` (from `folder`'s journal) to `store` through its own
    add / remove / rename."""
    for entry in entries:
        change = entry.change
        try:
            if change["op"] == "add":
                store.add(change["embeddings"], change["labels"])
            elif change["op"] == "remove":
                store.remove(change["label"])
            else:
                store.rename(change["old"], change["new"])
        except (ValueError, KeyError) as error:
            raise StoreFormatError(f"{Path(folder, JOURNAL_FILE)} line {entry.line} "
                                   f"(change {entry.seq}) does not apply to the snapshot: "
                                   f"{error}; {FIX}") from None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


class StoreOwner:
    """The one writer of the store folder `path` (see the module docstring); make one with
    `StoreOwner.open`."""

    def __init__(self, path: Path, store: PrototypeStore, owner_fd: int, journal_fd: int,
                 fold_entries: int, fold_seconds: float, lock_timeout: float,
                 last_fold: float | None):
        self._path, self._store = path, store
        self._owner_fd, self._fd = owner_fd, journal_fd
        self._fold_entries, self._fold_seconds = fold_entries, fold_seconds
        self._lock_timeout = lock_timeout
        self._last_fold = last_fold
        self._seq = self._folded = store._journal_seq  # last change written / folded
        self._size = 0  # bytes in the journal file
        self._appended: list[tuple[int, float]] = []  # (end offset, monotonic time) per pending
        self._damaged: str | None = None  # why appends are refused, after a failed cut-back
        self._closed = False
        self._lock = threading.Lock()  # the journal lock: appends, and the fold's swap
        self._folding = threading.Lock()  # one fold at a time
        store._journal = self._append

    @classmethod
    def open(cls, path: str | Path, describe: str = "a StoreOwner", fold_entries: int = 1000,
             fold_seconds: float = 60.0, lock_timeout: float = 30.0) -> StoreOwner:
        """Owns the existing store folder `path` (StoreOwnedError if another owner holds it)
        and loads it, snapshot + journal; `describe` names the owner in the refusals others
        get. `fold_if_due` folds at `fold_entries` pending changes or when the oldest is
        `fold_seconds` old. Waits up to `lock_timeout` s for saves and loads of others."""
        if isinstance(fold_entries, bool) or not isinstance(fold_entries, int) \
                or fold_entries < 1:
            raise ValueError(f"fold_entries must be an int >= 1, got {fold_entries!r}")
        if not (isinstance(fold_seconds, numbers.Real) and fold_seconds > 0):
            raise ValueError(f"fold_seconds must be a number > 0, got {fold_seconds!r}")
        path = Path(path)
        if not store_exists(path):
            raise FileNotFoundError(f"no store at {path}: a StoreOwner serves an existing "
                                    f"store; create it first (store.save, or `fewshot-metric "
                                    f"register --checkpoint CKPT`)")
        with exclusive_lock(path, lock_timeout):  # no save, load or other owner meanwhile
            owner_fd = take_ownership(path, describe)
            try:
                store = PrototypeStore.load(path, lock_timeout)
                journal = path / JOURNAL_FILE
                last_fold = None
                if not path.is_dir() or (journal.is_file() and journal.stat().st_size):
                    with writing_as_owner(path):  # the last owner's changes, or a cut swap
                        store.save(path, lock_timeout)
                    last_fold = time.time()
                journal_fd = os.open(journal, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                fsync_dir(path)
            except BaseException:
                os.close(owner_fd)
                raise
        return cls(path, store, owner_fd, journal_fd, fold_entries, fold_seconds,
                   lock_timeout, last_fold)

    @property
    def store(self) -> PrototypeStore:
        """The live store: its add / remove / rename are durable when they return."""
        return self._store

    @property
    def pending(self) -> int:
        """Changes in the journal not yet folded into the snapshot."""
        return self._seq - self._folded

    @property
    def last_fold(self) -> float | None:
        """`time.time()` of the last fold, None before the first."""
        return self._last_fold

    def _append(self, change: dict[str, Any]) -> int:
        """The store's journal hook: writes `change` as the next line, fsyncs it and returns
        its seq. On failure the line is cut back off the file, and the error raised."""
        with self._lock:
            if self._closed or self._damaged:
                raise ReadOnlyStoreError(self._damaged or (
                    f"the StoreOwner of {self._path} is closed, so its store takes no more "
                    f"changes: open a StoreOwner again (or load the store) to change it"))
            seq = self._seq + 1
            line = encode_change(seq, change)
            try:
                _write_all(self._fd, line)
                os.fsync(self._fd)
            except BaseException as error:
                self._cut_back(error)
                if isinstance(error, OSError) and error.errno is not None:
                    raise OSError(error.errno, f"could not write the change to the journal "
                                               f"{self._path / JOURNAL_FILE} ({error.strerror})"
                                               f"; nothing was changed: free disk space or "
                                               f"check the disk, then retry") from error
                raise
            self._seq, self._size = seq, self._size + len(line)
            self._appended.append((self._size, time.monotonic()))
            return seq

    def _cut_back(self, error: BaseException) -> None:
        """Removes a failed write's bytes, so the next line does not follow a damaged one."""
        try:
            os.ftruncate(self._fd, self._size)
        except OSError as cut:
            self._damaged = (f"the journal {self._path / JOURNAL_FILE} could not be repaired "
                             f"after a failed write ({error}; then {cut}), so this StoreOwner "
                             f"takes no more changes: close it and open it again (loading the "
                             f"store replays every acknowledged change)")

    def fold_if_due(self) -> bool:
        """Folds when `fold_entries` changes are pending or the oldest has waited
        `fold_seconds`; returns whether it folded."""
        with self._lock:
            due = not self._closed and (self.pending >= self._fold_entries or bool(
                self._appended and time.monotonic() - self._appended[0][1] >= self._fold_seconds))
        if due:
            self.fold()
        return due

    def fold(self) -> None:
        """Writes the pending changes into a new snapshot and drops them from the journal
        (changes made meanwhile stay in it); a no-op when none are pending or after close.
        Appends wait only while the folders swap."""
        with self._folding:
            with self._lock:
                n = self._seq
            if self._closed or n == self._folded:
                return
            snapshot = PrototypeStore.load(self._path, self._lock_timeout, journal_until=n)
            with writing_as_owner(self._path):
                snapshot.save(self._path, self._lock_timeout, around_swap=partial(self._swap, n))

    @contextmanager
    def _swap(self, n: int, tmp: Path) -> Iterator[None]:
        """Step 3 of the fold: under the journal lock, the changes after n go into the new
        folder `tmp`'s journal, and appends go there once the folders have swapped."""
        with self._lock:
            done = n - self._folded  # folded changes, the first of self._appended
            cut = self._appended[done - 1][0]
            with open(self._path / JOURNAL_FILE, "rb") as old:
                old.seek(cut)
                carried = old.read(self._size - cut)  # not the bytes of a write not cut back
            atomic_write(tmp / JOURNAL_FILE, lambda file: file.write_bytes(carried))
            fd = os.open(tmp / JOURNAL_FILE, os.O_WRONLY | os.O_APPEND)  # moves with tmp
            try:
                yield
            finally:  # swapped, even if the swap then failed (fsync): append to the new file
                try:
                    swapped = os.path.samestat(os.fstat(fd), os.stat(self._path / JOURNAL_FILE))
                except FileNotFoundError:
                    swapped = False
                if swapped:
                    os.close(self._fd)
                    self._fd, self._folded, self._size = fd, n, len(carried)
                    self._appended = [(end - cut, at) for end, at in self._appended[done:]]
                    self._damaged = None  # the new journal holds whole lines only
                    self._last_fold = time.time()
                else:
                    os.close(fd)

    def close(self) -> None:
        """Folds what is pending and releases the store; idempotent. If the fold fails, the
        store is released all the same (its journal keeps the changes) and the error raised."""
        if self._closed:
            return
        try:
            self.fold()
        finally:
            with self._lock:
                if not self._closed:
                    self._closed = True
                    os.close(self._fd)
                    os.close(self._owner_fd)  # releases the flock

    def __enter__(self) -> StoreOwner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
