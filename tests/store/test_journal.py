"""The journal and StoreOwner: a served store's changes are durable on return, replayed on
load, folded into the snapshot, and nobody else writes the store meanwhile. Stores are 2-D
with values worked out by hand."""

from __future__ import annotations

import base64
import errno
import hashlib
import json
import math
import multiprocessing
import os
import re
import select
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from fewshot_metric.cli import main
from fewshot_metric.store import (
    JournalPendingError,
    PrototypeStore,
    ReadOnlyStoreError,
    StoreFormatError,
    StoreLockedError,
    StoreOwnedError,
    StoreOwner,
    exclusive_lock,
    journal,
    persistence,
)
from fewshot_metric.store.journal import encode_change

FORK = multiprocessing.get_context("fork")
KILLS = 5  # SIGKILLed appending children
CHILD_TIMEOUT = 60.0  # seconds a child may take to acknowledge a change
# the answers to the query (3, 0), k=2, after `changes`: classes a and c, distances by hand
EXPECTED = {
    # a = mean of (2, 0), (4, 0) = (3, 0); c = mean of (0, 2), (2, 2) = (1, 2): 2^2 + 2^2
    ("prototype", "sqeuclidean"): [0.0, 8.0],
    # nearest shots: (2, 0) or (4, 0) at 1; (2, 2) at 1^2 + 2^2
    ("instance", "sqeuclidean"): [1.0, 5.0],
    # c = the mean of the unit shots at 90 and 45 degrees: at 67.5 degrees; 1 - cos 67.5
    ("prototype", "cosine"): [0.0, 1.0 - math.cos(math.radians(67.5))],
    # c's nearest unit shot is at 45 degrees: 1 - cos 45
    ("instance", "cosine"): [0.0, 1.0 - math.cos(math.radians(45.0))],
}


def changes(store: PrototypeStore) -> None:
    """Five changes (lists of floats: the journal keeps float32 of what the store was given)."""
    store.add([[2.0, 0.0], [0.0, 2.0], [4.0, 0.0]], ["a", "b", "a"])
    store.add([[2.0, 2.0]], ["b"])
    store.add([[0.0, -3.0]], ["d"])
    store.rename("b", "c")
    store.remove("d")


def new_store(path: Path, mode: str = "prototype", metric: str = "sqeuclidean") -> Path:
    PrototypeStore(2, metric=metric, mode=mode).save(path)
    return path


def columns(store: PrototypeStore, folder: Path) -> dict[str, bytes]:
    """The bytes of the labels and per-class columns (means or shots, ids, counts) that
    `store` saves to `folder`."""
    store.save(folder)
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))
            if name.endswith(".npy") or name == "labels.json"}


def answers(store: PrototypeStore) -> tuple:
    result = store.search(np.array([[3.0, 0.0], [1.0, 1.0]]), k=2)
    return result.labels, result.ids.tolist(), result.distances.tobytes()


def journal_lines(path: Path) -> list[bytes]:
    return (path / "journal.jsonl").read_bytes().splitlines(keepends=True)


def journal_seq(path: Path) -> int:
    return json.loads((path / "store.json").read_text(encoding="utf-8"))["journal_seq"]


def copied(owner: StoreOwner, path: Path, to: Path) -> Path:
    """A copy of the served folder `path` (snapshot + journal), as a killed owner leaves it."""
    assert owner.pending  # the copy holds a journal
    shutil.copytree(path, to)
    return to


def three_adds_left_by_a_killed_owner(tmp_path: Path) -> Path:
    """A served store's folder copied after adds of a (0, 1), b (1, 1), c (2, 1): an empty
    snapshot and three journal lines."""
    path = new_store(tmp_path / "s")
    with StoreOwner.open(path) as owner:
        for i, label in enumerate("abc"):
            owner.store.add([[float(i), 1.0]], [label])
        return copied(owner, path, tmp_path / "copy")


# ----------------------------------------------------------------------------- format
def test_a_journal_line_is_the_change_and_the_sha256_of_its_canonical_json(tmp_path) -> None:
    line = encode_change(3, {"op": "remove", "label": "dog"})
    canonical = b'{"label":"dog","op":"remove","seq":3}'
    assert line == (b'{"seq":3,"op":"remove","label":"dog","sha256":"'
                    + hashlib.sha256(canonical).hexdigest().encode() + b'"}\n')
    line = encode_change(1, {"op": "add", "labels": ["x"], "embeddings": [[1.0, -2.5]]})
    vectors = base64.b64encode(struct.pack("<2f", 1.0, -2.5)).decode()  # float32, little-endian
    record = json.loads(line)
    assert record == {"seq": 1, "op": "add", "labels": ["x"], "shape": [1, 2],
                      "embeddings": vectors, "sha256": record["sha256"]}
    entries = journal.read_journal(line, tmp_path / "journal.jsonl")
    assert [(entry.seq, entry.line) for entry in entries] == [(1, 1)]
    assert entries[0].change["labels"] == ["x"]
    np.testing.assert_array_equal(entries[0].change["embeddings"], [[1.0, -2.5]])


def test_the_journal_holds_labels_as_the_store_does_in_nfc(tmp_path) -> None:
    path = new_store(tmp_path / "s")
    with StoreOwner.open(path) as owner:
        owner.store.add([[1.0, 0.0]], ["cafe\u0301"])  # e + combining acute
        owner.store.add([[0.0, 1.0]], ["x"])
        owner.store.rename("caf\u00e9", "the\u0301")
        owner.store.remove("th\u00e9")
        records = [json.loads(line) for line in journal_lines(path)]
        assert [record["labels"] for record in records[:2]] == [["caf\u00e9"], ["x"]]
        assert (records[2]["old"], records[2]["new"], records[3]["label"]) == (
            "caf\u00e9", "th\u00e9", "th\u00e9")
        assert PrototypeStore.load(path).classes == ["x"]


# ----------------------------------------------------------------------------- replay
@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
@pytest.mark.parametrize("mode", ["prototype", "instance"])
def test_snapshot_plus_journal_is_the_live_store(tmp_path, mode, metric) -> None:
    path = new_store(tmp_path / "s", mode, metric)
    with StoreOwner.open(path) as owner:
        changes(owner.store)
        assert owner.pending == 5 and owner.last_fold is None
        assert [json.loads(line)["op"] for line in journal_lines(path)] == [
            "add", "add", "add", "rename", "remove"]
        loaded = PrototypeStore.load(path)  # the empty snapshot + 5 changes
        assert loaded.counts == owner.store.counts == {"a": 2, "c": 2}
        result = loaded.search(np.array([[3.0, 0.0]]), k=2)
        assert result.labels == [["a", "c"]]
        np.testing.assert_allclose(result.distances[0], EXPECTED[mode, metric], atol=1e-6)
        assert answers(loaded) == answers(owner.store)  # bit for bit
        assert columns(loaded, tmp_path / "replayed") == columns(owner.store, tmp_path / "live")


def test_a_last_line_cut_by_a_crash_is_left_out(tmp_path) -> None:
    folder = three_adds_left_by_a_killed_owner(tmp_path)
    first, second, third = journal_lines(folder)
    assert PrototypeStore.load(folder).classes == ["a", "b", "c"]
    flipped = third.replace(b'"op":"add"', b'"op":"adD"')  # bad checksum, newline kept
    for cut in (third[:len(third) // 2], third[:-1], flipped, b"\0" * 40):
        (folder / "journal.jsonl").write_bytes(first + second + cut)
        assert PrototypeStore.load(folder).counts == {"a": 1, "b": 1}


def test_a_damaged_line_before_the_last_or_a_gap_is_refused_naming_the_line(tmp_path) -> None:
    folder = three_adds_left_by_a_killed_owner(tmp_path)
    first, second, third = journal_lines(folder)
    file = re.escape(str(folder / "journal.jsonl"))
    damaged = second.replace(b'"b"', b'"B"')  # its checksum no longer matches
    cases = [
        ([first, damaged, third], rf"{file} line 2 is damaged .* lines follow it"),
        ([first, third], rf"{file} line 2 holds change 3 where change 2 should follow"),
        ([second, third], rf"{file} line 1 holds change 2, but the snapshot \(store.json "
                          r"journal_seq\) ends at change 0: changes 1 to 1 are missing"),
        ([first, second, encode_change(3, {"op": "explode"})],  # checksummed, yet wrong
         rf"{file} line 3: needs .* op in \['add', 'remove', 'rename'\], got 3 and 'explode'"),
        ([first, second, encode_change(3, {"op": "remove", "label": "zzz"})],
         rf"{file} line 3 \(change 3\) does not apply to the snapshot: no class 'zzz'"),
    ]
    for lines, message in cases:
        (folder / "journal.jsonl").write_bytes(b"".join(lines))
        with pytest.raises(StoreFormatError, match=message):
            PrototypeStore.load(folder)


@pytest.mark.parametrize("change", ["add", "remove", "rename"])
def test_a_failed_append_changes_nothing(tmp_path, monkeypatch, change) -> None:
    path = new_store(tmp_path / "s", mode="instance")
    with StoreOwner.open(path) as owner:
        owner.store.add([[1.0, 0.0], [0.0, 1.0]], ["a", "b"])
        before = (answers(owner.store), owner.store.counts, journal_lines(path))
        write_all = journal._write_all

        def disk_full(fd: int, data: bytes) -> None:
            write_all(fd, data[:len(data) // 2])  # half the line reaches the file
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(journal, "_write_all", disk_full)
        do = {"add": lambda: owner.store.add([[9.0, 9.0], [1.0, 1.0]], ["new", "a"]),
              "remove": lambda: owner.store.remove("a"),
              "rename": lambda: owner.store.rename("a", "z")}[change]
        with pytest.raises(OSError, match="could not write the change to the journal .*No "
                                          "space left.*nothing was changed") as caught:
            do()
        assert caught.value.errno == errno.ENOSPC
        assert (answers(owner.store), owner.store.counts, journal_lines(path)) == before
        assert owner.pending == 1
        monkeypatch.undo()
        do()  # the same change, now written
        assert owner.pending == 2
        assert answers(PrototypeStore.load(path)) == answers(owner.store)


# ----------------------------------------------------------------------------- ownership
def test_a_second_owner_and_writes_in_this_process_are_refused(tmp_path) -> None:
    path = new_store(tmp_path / "s")
    with StoreOwner.open(path, describe="test server") as owner:
        owner.store.add([[1.0, 0.0]], ["a"])
        refusal = (rf"store {re.escape(str(path))} is owned by test server \(pid {os.getpid()}, "
                   rf"since .+\): send changes to it \(its HTTP API, fewshot_metric.client."
                   rf"Client\) or stop it first")
        with pytest.raises(StoreOwnedError, match=refusal):
            StoreOwner.open(path)
        with pytest.raises(StoreOwnedError, match=refusal):
            owner.store.save(path)  # would drop the journal from under the owner
        with pytest.raises(StoreOwnedError, match=refusal):
            PrototypeStore(2).save(path)
        with pytest.raises(StoreOwnedError, match=refusal), exclusive_lock(path):
            pass
        with pytest.raises(ValueError, match="cannot rebuild the index of a served store"):
            owner.store.set_index("hnsw")
        assert issubclass(StoreOwnedError, StoreLockedError)
        assert json.loads((tmp_path / "s.owner").read_text())["describe"] == "test server"
    assert main(["store", "rename", str(path), "a", "b"]) == 0  # released by close
    assert PrototypeStore.load(path).classes == ["b"]


def test_another_process_is_refused_writes_and_reads_snapshot_plus_journal(tmp_path) -> None:
    path = new_store(tmp_path / "s")
    script = ("import json, sys; from fewshot_metric.cli import main; "
              "from fewshot_metric.store import PrototypeStore; "
              "code = main(['store', 'remove', sys.argv[1], 'a']); "
              "print(json.dumps([code, PrototypeStore.load(sys.argv[1]).counts]))")
    with StoreOwner.open(path, describe="test server") as owner:
        owner.store.add([[1.0, 0.0], [3.0, 0.0]], ["a", "a"])
        owner.store.add([[0.0, 1.0]], ["b"])
        child = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True,
                               text=True, timeout=120)
        assert json.loads(child.stdout) == [2, {"a": 2, "b": 1}]
        assert (f"fewshot-metric store: error: store {path} is owned by test server (pid "
                f"{os.getpid()}, since ") in child.stderr
        assert owner.store.counts == {"a": 2, "b": 1}


def test_a_closed_owner_takes_no_changes_and_releases_the_store(tmp_path) -> None:
    path = new_store(tmp_path / "s")
    owner = StoreOwner.open(path)
    owner.store.add([[1.0, 0.0]], ["a"])
    owner.close()
    owner.close()  # idempotent
    owner.fold()  # nothing to do
    assert owner.pending == 0 and journal_seq(path) == 1
    with pytest.raises(ReadOnlyStoreError, match=f"the StoreOwner of {re.escape(str(path))} is "
                                                 f"closed"):
        owner.store.add([[0.0, 1.0]], ["b"])
    assert owner.store.classes == ["a"]
    with StoreOwner.open(path) as again:
        assert again.store.classes == ["a"] and again.pending == 0


# ----------------------------------------------------------------------------- folds
def test_a_fold_keeps_every_change_and_empties_the_journal_of_those_it_wrote(
        tmp_path, monkeypatch) -> None:
    path = new_store(tmp_path / "s", mode="instance")
    with StoreOwner.open(path) as owner:
        changes(owner.store)
        load = PrototypeStore.load

        def load_then_a_change_arrives(*args, **kwargs) -> PrototypeStore:
            snapshot = load(*args, **kwargs)
            if kwargs.get("journal_until") is not None:  # step 2 of the fold: no lock held
                owner.store.add([[7.0, 7.0]], ["late"])
            return snapshot

        monkeypatch.setattr(PrototypeStore, "load", load_then_a_change_arrives)
        owner.fold()
        monkeypatch.undo()
        assert owner.pending == 1 and owner.last_fold is not None
        assert journal_seq(path) == 5  # the snapshot holds changes 1-5 ...
        assert [json.loads(line)["seq"] for line in journal_lines(path)] == [6]  # ... not "late"
        loaded = PrototypeStore.load(path)
        assert loaded.counts == owner.store.counts == {"a": 2, "c": 2, "late": 1}
        assert answers(loaded) == answers(owner.store)
        owner.fold()
        assert owner.pending == 0 and journal_lines(path) == [] and journal_seq(path) == 6
        owner.store.remove("late")  # appends go to the new folder's journal
        assert [json.loads(line)["seq"] for line in journal_lines(path)] == [7]
    assert journal_seq(path) == 7 and journal_lines(path) == []  # close folded
    assert PrototypeStore.load(path).counts == {"a": 2, "c": 2}


def test_folds_in_a_thread_while_changes_come_in_lose_nothing(tmp_path) -> None:
    path = new_store(tmp_path / "s")
    stop = threading.Event()
    with StoreOwner.open(path, fold_entries=5) as owner:

        def fold_until_stopped() -> None:
            while not stop.is_set():
                owner.fold_if_due()
                time.sleep(0.001)

        folder = threading.Thread(target=fold_until_stopped)
        folder.start()
        try:
            for i in range(60):
                owner.store.add([[float(i), 1.0]], [f"c{i}"])
                if i % 4 == 3:
                    owner.store.rename(f"c{i}", f"r{i}")
        finally:
            stop.set()
            folder.join(timeout=60)
        assert owner.last_fold is not None  # the thread folded meanwhile
        assert owner.pending == len(journal_lines(path))
        assert journal_seq(path) + owner.pending == 75  # 60 adds and 15 renames
        loaded = PrototypeStore.load(path)
        assert loaded.classes == owner.store.classes and len(loaded) == 60
        assert columns(loaded, tmp_path / "replayed") == columns(owner.store, tmp_path / "live")


def test_a_failed_fold_keeps_the_journal(tmp_path, monkeypatch) -> None:
    path = new_store(tmp_path / "s")
    with StoreOwner.open(path) as owner:
        changes(owner.store)
        before = journal_lines(path)

        def crash(tmp: Path, target: Path) -> None:
            raise OSError("disk full")

        monkeypatch.setattr(persistence, "_swap_in", crash)
        with pytest.raises(OSError, match="disk full"):
            owner.fold()
        monkeypatch.undo()
        assert journal_lines(path) == before and owner.pending == 5 and journal_seq(path) == 0
        owner.store.add([[5.0, 5.0]], ["e"])  # still appended to the folder's journal
        assert PrototypeStore.load(path).counts == {"a": 2, "c": 2, "e": 1}
        owner.fold()
        assert owner.pending == 0 and journal_seq(path) == 6
    assert sorted(os.listdir(tmp_path)) == ["s", "s.lock", "s.owner"]  # no temp folder left


def test_the_snapshot_s_journal_seq_skips_changes_already_folded(tmp_path) -> None:
    path = new_store(tmp_path / "s")
    with StoreOwner.open(path) as owner:
        owner.store.add([[1.0, 0.0]], ["a"])
        owner.store.add([[3.0, 0.0]], ["a"])
        early = copied(owner, path, tmp_path / "early")  # journal: changes 1, 2
        owner.fold()
        owner.store.add([[0.0, 2.0]], ["b"])
        owner.store.rename("a", "z")
        late = copied(owner, path, tmp_path / "late")  # snapshot of 1, 2; journal: 3, 4
    (late / "journal.jsonl").write_bytes(b"".join(journal_lines(early) + journal_lines(late)))
    assert journal_seq(late) == 2
    loaded = PrototypeStore.load(late)  # 1 and 2 again would make a 4 shots
    assert loaded.counts == {"z": 2, "b": 1}
    assert loaded.search(np.array([[2.0, 0.0]])).distances[0, 0] == 0.0  # z = (2, 0)
    (late / "journal.jsonl").write_bytes(journal_lines(early)[0])  # folded changes only
    assert PrototypeStore.load(late).counts == {"a": 2}  # what the snapshot holds


def test_mmap_refuses_pending_changes_and_loads_after_a_fold(tmp_path) -> None:
    path = new_store(tmp_path / "s")
    with StoreOwner.open(path) as owner:
        owner.store.add([[1.0, 0.0]], ["a"])
        owner.store.add([[0.0, 1.0]], ["b"])
        with pytest.raises(JournalPendingError, match=rf"the store {re.escape(str(path))} has 2 "
                                                      r"change\(s\) in its journal.jsonl not yet "
                                                      r"folded.* Load it without mmap"):
            PrototypeStore.load(path, mmap=True)
        assert issubclass(JournalPendingError, StoreFormatError)
        owner.fold()
        mapped = PrototypeStore.load(path, mmap=True)
        assert mapped.counts == {"a": 1, "b": 1} and mapped.read_only


def test_store_info_shows_the_changes_a_server_has_not_folded(tmp_path, capsys) -> None:
    path = new_store(tmp_path / "s")
    with StoreOwner.open(path) as owner:
        owner.store.add([[1.0, 0.0], [3.0, 0.0]], ["a", "a"])
        assert main(["store", "info", str(path)]) == 0  # mmap refused: replayed instead
        out = capsys.readouterr().out
        assert "classes:      1 (2 shots)" in out and "  a: 2 shots" in out


def test_fold_if_due_counts_changes_and_waits_fold_seconds(tmp_path, monkeypatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(journal, "time", SimpleNamespace(monotonic=lambda: clock[0],
                                                         time=time.time))
    path = new_store(tmp_path / "s")
    with StoreOwner.open(path, fold_entries=3, fold_seconds=10.0) as owner:
        assert not owner.fold_if_due()  # nothing pending
        owner.store.add([[1.0, 0.0]], ["a"])
        clock[0] = 5.0
        owner.store.add([[0.0, 1.0]], ["b"])
        clock[0] = 9.5
        assert not owner.fold_if_due() and owner.pending == 2
        owner.store.add([[1.0, 1.0]], ["c"])
        assert owner.fold_if_due() and owner.pending == 0  # 3 changes
        owner.store.add([[2.0, 2.0]], ["d"])  # at 9.5
        clock[0] = 19.25
        assert not owner.fold_if_due()
        clock[0] = 19.5
        assert owner.fold_if_due() and owner.pending == 0  # the oldest waited 10 s
    for bad in ({"fold_entries": 0}, {"fold_seconds": 0.0}):
        with pytest.raises(ValueError, match="must be"):
            StoreOwner.open(path, **bad)


@pytest.mark.parametrize("left", ["journal", "cut journal", "swap"])
def test_open_folds_what_a_killed_owner_left(tmp_path, left) -> None:
    path = new_store(tmp_path / "s")
    with StoreOwner.open(path) as owner:
        changes(owner.store)
        folder = copied(owner, path, tmp_path / "copy")
    if left == "cut journal":
        with open(folder / "journal.jsonl", "ab") as file:
            file.write(encode_change(6, {"op": "remove", "label": "a"})[:30])
    if left == "swap":  # killed between the two renames of a save
        os.rename(folder, persistence.backup_path(folder))
    with StoreOwner.open(folder) as owner:
        assert owner.pending == 0 and owner.last_fold is not None
        assert journal_lines(folder) == [] and journal_seq(folder) == 5
        assert owner.store.counts == {"a": 2, "c": 2}
        owner.store.add([[8.0, 8.0]], ["f"])
        assert [json.loads(line)["seq"] for line in journal_lines(folder)] == [6]
    assert not persistence.backup_path(folder).exists()


def test_a_missing_store_is_not_created(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="no store at .*missing: a StoreOwner serves an "
                                                "existing store; create it first"):
        StoreOwner.open(tmp_path / "missing")
    assert os.listdir(tmp_path) == []


# ----------------------------------------------------------------------------- SIGKILL
def _ops(first: int):
    """The changes of a child that starts at class `first`: add c{i} = (i, 1), and for every
    third i rename it to r{i}."""
    for i in range(first, first + 10_000):
        yield "add", i
        if i % 3 == 0:
            yield "rename", i


def _apply(state: dict[str, int], op: tuple[str, int]) -> dict[str, int]:
    """The classes (label -> i, in insertion order) after `op`."""
    kind, i = op
    if kind == "add":
        return {**state, f"c{i}": i}
    return {(f"r{i}" if label == f"c{i}" else label): j for label, j in state.items()}


def _append_until_killed(path: Path, first: int, ack_fd: int) -> None:
    """A child: owns the store and makes the changes of `_ops(first)`, writing a byte to
    `ack_fd` after each returns (acknowledged), folding when due (every 4 changes)."""
    with StoreOwner.open(path, fold_entries=4) as owner:
        for kind, i in _ops(first):
            if kind == "add":
                owner.store.add(np.array([[i, 1.0]], np.float32), [f"c{i}"])
            else:
                owner.store.rename(f"c{i}", f"r{i}")
            os.write(ack_fd, b"+")
            owner.fold_if_due()


def _acknowledgements(read_fd: int) -> int:
    """The bytes a dead child wrote to its pipe, read to the end."""
    count = 0
    while chunk := os.read(read_fd, 1 << 16):
        count += len(chunk)
    return count


def test_every_acknowledged_change_survives_sigkill(tmp_path) -> None:
    """Children append in a loop and are SIGKILLed at random moments (half of them after
    their first acknowledgement, so mid-append or mid-fold; the others from their start, so
    also while opening); each time the store loads with every acknowledged change and at
    most the one in flight besides."""
    rng = np.random.default_rng(0)
    path = new_store(tmp_path / "s")
    state: dict[str, int] = {}
    first = 0
    for trial in range(KILLS):
        read_fd, write_fd = os.pipe()
        child = FORK.Process(target=_append_until_killed, args=(path, first, write_fd))
        child.start()
        os.close(write_fd)
        try:
            if trial % 2 == 0:
                ready, _, _ = select.select([read_fd], [], [], CHILD_TIMEOUT)
                assert ready, f"trial {trial}: the child acknowledged no change"
            time.sleep(rng.uniform(0.0, 0.3))
        finally:
            child.kill()
            child.join()
        acked = _acknowledgements(read_fd)
        os.close(read_fd)
        assert child.exitcode == -signal.SIGKILL
        ops = _ops(first)
        for _ in range(acked):
            state = _apply(state, next(ops))
        candidates = [state, _apply(state, next(ops))]  # the change in flight, if it landed
        loaded = PrototypeStore.load(path)
        assert loaded.classes in [list(c) for c in candidates], f"trial {trial}"
        state = candidates[[list(c) for c in candidates].index(loaded.classes)]
        means = np.load(_saved(loaded, tmp_path / f"check{trial}") / "means.npy")
        np.testing.assert_array_equal(means, [[i, 1.0] for i in state.values()])
        first = max(state.values(), default=-1) + 1
    with StoreOwner.open(path) as owner:  # folds what the last child left
        assert owner.store.classes == list(state)
    assert journal_lines(path) == [] and PrototypeStore.load(path, mmap=True).classes == list(
        state)


def _saved(store: PrototypeStore, folder: Path) -> Path:
    store.save(folder)
    return folder
