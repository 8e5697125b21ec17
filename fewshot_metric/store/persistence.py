"""The on-disk store folder: layout, atomic replacement, advisory lock, integrity checks.

A store folder holds fixed file names only (labels live inside store.json, never in paths):

- `store.json`: format name + version, dim, metric, mode, index kind + options, fingerprint,
  `info` (a JSON object the owner keeps with the store, e.g. the checkpoint it serves), next
  id, the number of classes, the sha256 of every other file, and `meta_sha256`, the sha256 of
  the rest of store.json, so a hand edit is detected; optional `journal_seq` (default 0),
  the last journal change folded into the other files.
- `labels.json`: the class labels in insertion order, a JSON array of C strings.
- `class_ids.npy` int64 [C] (increasing, as ids are given out) and `class_counts.npy` int64
  [C], the shots added to each class.
- `index.faiss`: `faiss.write_index` of the live index.
- prototype mode: `means.npy` float32 [C, D], the means of the classes' shots (of their unit
  vectors for cosine), rows in class order.
- instance mode: `vectors.npy` float32 [N, D] (the index-ready shots), `vector_ids.npy`
  int64 [N] (increasing), `vector_classes.npy` int64 [N] (the class id of each shot).
- `journal.jsonl` (optional, not in store.json's `files`: it grows): the changes a StoreOwner
  (`fewshot-metric serve`) made since the snapshot, one checksummed JSON line each; loading
  replays the lines after `journal_seq` (see `fewshot_metric.store.journal`).

Per-class data is in .npy columns, written chunk by chunk, so that a store of tens of millions
of classes saves without a second copy in memory, and loads (`mmap=True`) as memory maps.

Saving writes everything into a fresh temp folder `.NAME.partial-*.tmp` beside the store
(temp folders of earlier killed saves are deleted first; each file
fsynced), renames the old folder to the backup `.NAME.backup`, renames the temp folder to
NAME, fsyncs the parent and deletes the backup. At every instant NAME, or during the swap
`.NAME.backup`, is a complete store, and loading falls back to the backup when NAME is
missing. Saves and loads hold an advisory `fcntl.flock` on `NAME.lock` beside the folder
(exclusive to save, shared to load); a second process waits up to `lock_timeout` seconds,
then gets `StoreLockedError`. The lock file is left in place: deleting it would race.

A StoreOwner holds an exclusive flock on `NAME.owner` beside the folder for its lifetime (the
file holds JSON: pid, describe, started); meanwhile every other save of the store and every
`exclusive_lock` of it gets `StoreOwnedError` naming the owner (its own fold passes,
`writing_as_owner`). Readers are not refused: they see the snapshot and its journal.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import datetime
from functools import partial
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from fewshot_metric.atomic import (
    atomic_write,
    atomic_write_text,
    fsync_dir,
    remove_leftover_temps,
    temp_prefix,
)
from fewshot_metric.store.index_factory import IVF_KINDS, StoreIndex

FORMAT = "fewshot_metric.prototype_store"
VERSION = 2
META_FILE = "store.json"
LABELS_FILE = "labels.json"
JOURNAL_FILE = "journal.jsonl"
INDEX_FILE = "index.faiss"
CLASS_FILES = ("class_ids", "class_counts")
ARRAY_FILES: dict[str, tuple[str, ...]] = {
    "prototype": ("means",),
    "instance": ("vectors", "vector_ids", "vector_classes"),
}
RESTORE = ("restore the folder from a backup, or rebuild the store (add the classes again "
            "and save)")


class StoreFormatError(ValueError):
    """A store folder that is missing files, or whose files are corrupt or do not match."""


class StoreLockedError(TimeoutError):
    """Another process holds the store's lock for longer than `lock_timeout`."""


class StoreOwnedError(StoreLockedError):
    """A write to a store that a StoreOwner (e.g. `fewshot-metric serve`) owns."""


@dataclass(frozen=True)
class ArrayChunks:
    """An array of `dtype` and `shape` that `chunks()` gives as consecutive row blocks, so
    it is written without being assembled in memory."""

    dtype: type | np.dtype
    shape: tuple[int, ...]
    chunks: Callable[[], Iterable[np.ndarray]]


@dataclass
class SavedStore:
    """A store as plain values: what `write_store` writes and `read_store` returns.

    `labels` (list), `class_ids` and `counts` (int64 arrays) are [C] in insertion order;
    `arrays` maps the mode's ARRAY_FILES names to arrays (ArrayChunks to write; arrays, or
    read-only memory maps, when read; see the module docstring); `info` is a JSON object;
    `source` is the folder read; `journal_seq` the last journal change in the snapshot and
    `journal` the bytes of its journal.jsonl (read under the same lock as the snapshot).
    """

    dim: int
    metric: str
    mode: str
    fingerprint: str | None
    info: dict[str, Any]
    next_id: int
    labels: list[str]
    class_ids: np.ndarray
    counts: np.ndarray
    arrays: dict[str, Any]
    index: StoreIndex
    source: Path | None = None
    journal_seq: int = 0
    journal: bytes = b""


def backup_path(path: Path) -> Path:
    """Where the previous store sits while a save swaps folders."""
    return path.parent / f".{path.name}.backup"


def store_exists(path: str | Path) -> bool:
    """Whether `path` holds a saved store (or its backup from an interrupted save)."""
    path = Path(path)
    return (path / META_FILE).is_file() or (backup_path(path) / META_FILE).is_file()


def check_new_store_folder(path: str | Path) -> None:
    """Raises FileExistsError unless `path`, where no store is, can take a new one: a folder
    that is missing or empty."""
    path = Path(path)
    if path.is_file():
        raise FileExistsError(f"{path} is a file, not a store folder: pass the store's folder, "
                              f"or a new or empty folder for a new store")
    if path.exists() and any(path.iterdir()):
        raise FileExistsError(f"{path} is not a store (it has no {META_FILE}) but is not an "
                              f"empty folder either: choose a new or empty folder for a new "
                              f"store, or restore the store's {META_FILE} from a backup")


def lock_path(path: Path) -> Path:
    """The advisory lock file beside the store folder."""
    return path.parent / f"{path.name}.lock"


_held = threading.local()  # .paths: lock files this thread holds through `exclusive_lock`


@contextmanager
def _locked(path: Path, exclusive: bool, timeout: float) -> Iterator[None]:
    """Holds flock on `lock_path(path)` (a no-op inside this thread's `exclusive_lock` of the
    same store). A reader that cannot create the lock file (a read-only place, where nobody
    can save either) reads without it."""
    lock = lock_path(path)
    if lock.resolve() in getattr(_held, "paths", set()):
        yield
        return
    try:
        fd = os.open(lock, (os.O_RDWR if exclusive else os.O_RDONLY) | os.O_CREAT, 0o644)
    except OSError:
        if exclusive:
            raise
        fd = None
    try:
        deadline = time.monotonic() + timeout
        while fd is not None:
            try:
                fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise StoreLockedError(
                        f"store {path} is locked by another process (lock file {lock}); waited "
                        f"{timeout:g} s. Try again once its save or load has finished") from None
                time.sleep(0.05)
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


@contextmanager
def exclusive_lock(path: str | Path, timeout: float = 30.0) -> Iterator[None]:
    """Holds the store's lock across a load-modify-save, so that no other process saves in
    between (which would lose one of the two changes); loads and saves of the store by this
    thread inside the block do not lock again. Waits up to `timeout` s (StoreLockedError);
    StoreOwnedError while a StoreOwner owns the store. The lock file goes beside the store
    folder, whose parent must exist."""
    path = Path(path)
    key = lock_path(path).resolve()
    if key in getattr(_held, "paths", set()):  # nested: the outer block holds it
        yield
        return
    with _locked(path, exclusive=True, timeout=timeout):
        _refuse_if_owned(path)
        with _marked(_held, key):
            yield


@contextmanager
def _marked(marks: threading.local, key: Path) -> Iterator[None]:
    """Adds `key` to this thread's set `marks.paths` for the block."""
    paths = marks.__dict__.setdefault("paths", set())
    paths.add(key)
    try:
        yield
    finally:
        paths.discard(key)


def owner_path(path: Path) -> Path:
    """The ownership file beside the store folder, flocked by its StoreOwner."""
    return path.parent / f"{path.name}.owner"


_owner_writes = threading.local()  # .paths: owner files whose owner saves in this thread


@contextmanager
def writing_as_owner(path: str | Path) -> Iterator[None]:
    """Lets this thread's saves of `path` pass the ownership check (a StoreOwner's fold)."""
    with _marked(_owner_writes, owner_path(Path(path)).resolve()):
        yield


def take_ownership(path: Path, describe: str) -> int:
    """Flocks `owner_path(path)` exclusively and writes who owns it (JSON: pid, describe,
    started); returns the file descriptor, whose closing releases it. StoreOwnedError when
    another owner holds it. Call it inside `exclusive_lock(path)`, under which the checks read
    the file, so that none reads it half-written."""
    fd = os.open(owner_path(path), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _owned_error(path, fd) from None
        started = datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "describe": describe,
                                  "started": started}).encode(), 0)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _refuse_if_owned(path: Path) -> None:
    """StoreOwnedError if a StoreOwner holds `path`, unless this thread is its fold."""
    file = owner_path(path)
    if file.resolve() in getattr(_owner_writes, "paths", set()):
        return
    try:
        fd = os.open(file, os.O_RDONLY)
    except FileNotFoundError:  # never owned
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)  # free: released by the close below
    except BlockingIOError:
        raise _owned_error(path, fd) from None
    finally:
        os.close(fd)


def _owned_error(path: Path, fd: int) -> StoreOwnedError:
    """The refusal, naming the owner that `owner_path(path)`, open as `fd`, describes."""
    try:
        owner = json.loads(os.pread(fd, 1 << 16, 0))
        who = f"{owner['describe']} (pid {owner['pid']}, since {owner['started']})"
    except (ValueError, KeyError, TypeError):  # damaged, or not written by a StoreOwner
        who = f"another process (see {owner_path(path)})"
    return StoreOwnedError(f"store {path} is owned by {who}: send changes to it (its HTTP API, "
                           f"fewshot_metric.client.Client) or stop it first")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(partial(handle.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_npy(array: ArrayChunks, path: Path) -> None:
    """Writes the .npy file of `array`, chunk by chunk."""
    dtype = np.dtype(array.dtype)
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_2_0(handle, {
            "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
            "shape": array.shape})
        rows = 0
        for chunk in array.chunks():
            handle.write(np.ascontiguousarray(chunk, dtype).data)
            rows += len(chunk)
    if rows != array.shape[0]:
        raise RuntimeError(f"{path}: wrote {rows} rows, expected {array.shape[0]}")


def write_store(path: str | Path, saved: SavedStore, lock_timeout: float,
                around_swap: Callable[[Path], AbstractContextManager[None]] | None = None
                ) -> None:
    """Atomically replaces the store folder `path` by `saved` (see the module docstring);
    StoreOwnedError while a StoreOwner owns it. `around_swap(tmp)`: a context manager that
    the swap runs inside, given the complete new folder (a StoreOwner's fold adds the journal
    there, then holds appends back until the new folder is in place)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise FileExistsError(f"cannot save the store to {path}: it is a file; choose a folder")
    if path.is_dir() and any(path.iterdir()) and not (path / META_FILE).is_file():
        raise FileExistsError(f"cannot save the store to {path}: the folder is not empty and is "
                              f"not a store (no {META_FILE}); choose a new or empty folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    with _locked(path, exclusive=True, timeout=lock_timeout):
        _refuse_if_owned(path)
        remove_leftover_temps(path)  # of saves killed earlier; we hold the lock
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(path), suffix=".tmp", dir=path.parent))
        try:
            atomic_write(tmp / INDEX_FILE,
                         lambda file: faiss.write_index(saved.index.faiss_index, str(file)))
            columns = {"class_ids": _whole(saved.class_ids), "class_counts": _whole(saved.counts),
                       **saved.arrays}
            for name in (*CLASS_FILES, *ARRAY_FILES[saved.mode]):
                atomic_write(tmp / f"{name}.npy", partial(_write_npy, columns[name]))
            atomic_write_text(tmp / LABELS_FILE, json.dumps(saved.labels, ensure_ascii=False))
            meta = {
                "format": FORMAT, "version": VERSION, "dim": saved.dim, "metric": saved.metric,
                "mode": saved.mode,
                "index": {"kind": saved.index.kind, "options": saved.index.options},
                "fingerprint": saved.fingerprint, "info": saved.info, "next_id": saved.next_id,
                "classes": len(saved.labels), "journal_seq": saved.journal_seq,
                "files": {file.name: _sha256(file) for file in sorted(tmp.iterdir())},
            }
            meta["meta_sha256"] = _meta_digest(meta)
            atomic_write_text(tmp / META_FILE, json.dumps(meta, indent=1))
            with around_swap(tmp) if around_swap else nullcontext():
                _swap_in(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _whole(array: np.ndarray) -> ArrayChunks:
    """An array already in memory, as one chunk."""
    return ArrayChunks(array.dtype, array.shape, lambda: [array])


def _swap_in(tmp: Path, path: Path) -> None:
    """Renames the complete folder `tmp` to `path`, keeping the old one as the backup until
    the new one is in place."""
    backup = backup_path(path)
    if path.exists():
        shutil.rmtree(backup, ignore_errors=True)  # left by a crashed save; `path` is whole
        os.rename(path, backup)
    try:
        os.rename(tmp, path)
    except BaseException:
        if backup.exists() and not path.exists():
            os.rename(backup, path)
        raise
    fsync_dir(path.parent)
    shutil.rmtree(backup, ignore_errors=True)


def read_store(path: str | Path, lock_timeout: float, mmap: bool = False) -> SavedStore:
    """Reads and checks the store folder `path` (or its backup, see the module docstring);
    with `mmap`, the .npy columns and the index's lists are read-only memory maps."""
    path = Path(path)
    if path.is_file():
        raise NotADirectoryError(f"no store at {path}: it is a file, and a store is a folder; "
                                 f"pass the store's folder (the one holding {META_FILE})")
    if not path.is_dir() and not backup_path(path).is_dir():
        raise FileNotFoundError(f"no store at {path}: there is no such folder; save one with "
                                f"store.save({str(path)!r})")
    with _locked(path, exclusive=False, timeout=lock_timeout):
        folder = path if path.is_dir() else backup_path(path)
        meta = _read_meta(folder)
        mode, dim, n_classes = meta["mode"], meta["dim"], meta["classes"]
        columns = (*CLASS_FILES, *ARRAY_FILES[mode])
        names = [INDEX_FILE, LABELS_FILE] + [f"{name}.npy" for name in columns]
        if sorted(meta["files"]) != sorted(names):
            raise _meta_error(folder, f"'files' lists {sorted(meta['files'])}; a {mode}-mode "
                                      f"store has {sorted(names)}")
        for name in names:
            _check_file(folder / name, meta["files"][name])
        labels = _read_labels(folder / LABELS_FILE, n_classes)
        class_ids = _read_npy(folder / "class_ids.npy", np.int64, (n_classes,), mmap)
        counts = _read_npy(folder / "class_counts.npy", np.int64, (n_classes,), mmap)
        _check_increasing(folder, "class_ids.npy", class_ids, meta["next_id"])
        if n_classes and counts.min() < 1:
            raise _file_error(folder / "class_counts.npy", "holds a count below 1")
        n_rows = n_classes if mode == "prototype" else int(counts.sum())
        shapes = {"means": (np.float32, (n_rows, dim)), "vectors": (np.float32, (n_rows, dim)),
                  "vector_ids": (np.int64, (n_rows,)), "vector_classes": (np.int64, (n_rows,))}
        arrays = {name: _read_npy(folder / f"{name}.npy", *shapes[name], mmap)
                  for name in ARRAY_FILES[mode]}
        if mode == "instance":
            _check_instance(folder, arrays, class_ids, counts, meta["next_id"])
        index = _read_index(folder, meta, n_rows, mmap)
        journal = folder / JOURNAL_FILE
        changes = journal.read_bytes() if journal.exists() else b""
    return SavedStore(dim, meta["metric"], mode, meta["fingerprint"], meta["info"],
                      meta["next_id"], labels, class_ids, counts, arrays, index, folder,
                      meta.get("journal_seq", 0), changes)


def _file_error(path: Path, detail: str) -> StoreFormatError:
    """A store file whose content is inconsistent (its sha256 matched: written so, or edited
    with store.json updated to match)."""
    return StoreFormatError(f"{path} {detail}; the file was edited or is corrupt: {RESTORE}")


def _meta_error(folder: Path, detail: str) -> StoreFormatError:
    return StoreFormatError(f"{folder / META_FILE}: {detail}. The file was edited or is "
                            f"corrupt: {RESTORE}")


def _field(folder: Path, mapping: dict[str, Any], key: str, types: tuple[type, ...],
           where: str = "") -> Any:
    """mapping[key], checked to be one of `types` (never a bool)."""
    if key not in mapping:
        raise _meta_error(folder, f"key {where}{key!r} is missing")
    value = mapping[key]
    if isinstance(value, bool) or not isinstance(value, types):
        wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
        raise _meta_error(folder, f"key {where}{key!r} must be {wanted}, got {value!r}")
    return value


def _meta_digest(meta: dict[str, Any]) -> str:
    """sha256 of store.json's content without its own digest (canonical JSON)."""
    rest = {key: value for key, value in meta.items() if key != "meta_sha256"}
    return hashlib.sha256(json.dumps(rest, sort_keys=True).encode()).hexdigest()


def _read_meta(folder: Path) -> dict[str, Any]:
    """store.json, checked key by key."""
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise StoreFormatError(f"{meta_path} is missing, so {folder} is not a readable store: "
                               f"{RESTORE}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _meta_error(folder, f"not valid JSON ({error})") from None
    if not isinstance(meta, dict):
        raise _meta_error(folder, f"must hold a JSON object, got {type(meta).__name__}")
    version = meta.get("version")
    if meta.get("format") == FORMAT and isinstance(version, int) and 0 < version < VERSION:
        raise StoreFormatError(f"{folder} holds a store of format version {version}, written by "
                               f"an older fewshot_metric; this one reads version {VERSION}: "
                               f"build the store again (register its classes) with this version")
    if meta.get("format") != FORMAT or version != VERSION:
        raise _meta_error(folder, f"format {meta.get('format')!r} version {version!r}; this "
                                  f"fewshot_metric reads {FORMAT!r} version {VERSION}")
    if meta.get("meta_sha256") != _meta_digest(meta):
        raise _meta_error(folder, "its content does not match its meta_sha256 (a class, count "
                                  "or setting was changed by hand)")
    for key, types in (("dim", (int,)), ("metric", (str,)), ("mode", (str,)),
                       ("index", (dict,)), ("fingerprint", (str, type(None))),
                       ("info", (dict,)), ("next_id", (int,)), ("classes", (int,)),
                       ("files", (dict,))):
        _field(folder, meta, key, types)
    if meta["mode"] not in ARRAY_FILES:
        raise _meta_error(folder, f"unknown mode {meta['mode']!r}; expected one of "
                                  f"{list(ARRAY_FILES)}")
    if meta["dim"] < 1 or meta["next_id"] < 0 or meta["classes"] < 0:
        raise _meta_error(folder, f"dim must be >= 1, next_id and classes >= 0, got "
                                  f"{meta['dim']}, {meta['next_id']} and {meta['classes']}")
    if "journal_seq" in meta and _field(folder, meta, "journal_seq", (int,)) < 0:
        raise _meta_error(folder, f"journal_seq must be >= 0, got {meta['journal_seq']}")
    _field(folder, meta["index"], "kind", (str,), "index.")
    _field(folder, meta["index"], "options", (dict,), "index.")
    return meta


def _read_labels(path: Path, n_classes: int) -> list[str]:
    """labels.json: a JSON array of n_classes strings (checked as labels by the store)."""
    try:
        labels = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise StoreFormatError(f"{path}: not valid JSON ({error}); {RESTORE}") from None
    if (not isinstance(labels, list) or len(labels) != n_classes
            or not all(isinstance(label, str) for label in labels)):
        raise StoreFormatError(f"{path} must hold a JSON array of {n_classes} strings (the "
                               f"class count in {META_FILE}); {RESTORE}")
    return labels


def _check_increasing(folder: Path, name: str, ids: np.ndarray, next_id: int) -> None:
    """ids [N] must increase strictly, within [0, next_id)."""
    if len(ids) and (ids[0] < 0 or ids[-1] >= next_id or (np.diff(ids) <= 0).any()):
        raise _file_error(folder / name, f"needs increasing ids in [0, next_id={next_id}) "
                                         f"(next_id from {META_FILE})")


def _check_file(path: Path, sha256: Any) -> None:
    if not path.is_file():
        raise StoreFormatError(f"{path} is missing, so the store is incomplete: {RESTORE}")
    if _sha256(path) != sha256:
        raise StoreFormatError(f"{path} does not match {META_FILE} (its sha256 differs): it was "
                               f"replaced or edited; {RESTORE}")


def _read_npy(path: Path, dtype: type, shape: tuple[int, ...], mmap: bool) -> np.ndarray:
    try:
        array = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise StoreFormatError(f"{path} is not a readable .npy array ({error}); "
                               f"{RESTORE}") from None
    if array.dtype != dtype or array.shape != shape:
        raise StoreFormatError(f"{path} holds {array.dtype} {array.shape}; {META_FILE} needs "
                               f"{np.dtype(dtype)} {shape}; {RESTORE}")
    return array


def _check_instance(folder: Path, arrays: dict[str, np.ndarray], class_ids: np.ndarray,
                    counts: np.ndarray, next_id: int) -> None:
    """Every shot belongs to a class, each class has `counts` shots, shot ids increase."""
    owners = arrays["vector_classes"]
    rows = np.minimum(np.searchsorted(class_ids, owners), max(len(class_ids) - 1, 0))
    if len(owners) and (not len(class_ids) or (class_ids[rows] != owners).any()
                        or (np.bincount(rows, minlength=len(class_ids)) != counts).any()):
        raise _file_error(folder / "vector_classes.npy", "does not match the class ids and "
                                                        "counts in class_ids.npy and "
                                                        "class_counts.npy")
    _check_increasing(folder, "vector_ids.npy", arrays["vector_ids"], next_id)


def _read_index(folder: Path, meta: dict[str, Any], n_rows: int, mmap: bool) -> StoreIndex:
    """index.faiss, checked against the kind, dim, metric and vector count in store.json;
    with `mmap`, its inverted lists (or flat codes) are a read-only memory map."""
    try:
        index = StoreIndex(meta["index"]["kind"], meta["dim"], meta["metric"],
                           **meta["index"]["options"])
    except ValueError as error:
        raise _meta_error(folder, f"bad index settings: {error}") from None
    path = folder / INDEX_FILE
    try:
        loaded = faiss.read_index(str(path), _mmap_flag(index.kind) if mmap else 0)
    except RuntimeError as error:
        raise StoreFormatError(f"{path} could not be read by FAISS ({error}); "
                               f"{RESTORE}") from None
    try:
        index.adopt(loaded)
    except ValueError as error:
        raise StoreFormatError(f"{path} does not match {META_FILE}: {error}; "
                               f"{RESTORE}") from None
    if index.ntotal != n_rows:
        raise StoreFormatError(f"{path} holds {index.ntotal} vectors; {META_FILE} describes "
                               f"{n_rows}; {RESTORE}")
    return index


def _mmap_flag(kind: str) -> int:
    """FAISS's read flag that maps an index of `kind` from its file: the inverted lists of an
    IVF index (`IO_FLAG_MMAP`), the vectors of a flat or HNSW one (`IO_FLAG_MMAP_IFC`; the
    two cannot be combined). Either index aborts the process if changed: the store refuses."""
    return faiss.IO_FLAG_MMAP if kind in IVF_KINDS else faiss.IO_FLAG_MMAP_IFC
