"""PrototypeStore save/load: round trips for every mode and index kind, atomic swap, lock."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time

import faiss
import numpy as np
import pytest

from fewshot_metric.store import PrototypeStore, StoreLockedError, persistence

KINDS = {
    "flat": {},
    "hnsw": {"M": 8, "efSearch": 16},
    "ivf_flat": {"nlist": 2, "nprobe": 1},
    "ivf_pq": {"nlist": 2, "nprobe": 1, "pq_m": 4, "pq_bits": 3},  # trains at 312 vectors
}
TRAINED = {"ivf_flat": faiss.IndexIVFFlat, "ivf_pq": faiss.IndexIVFPQ}


def assert_same_answers(first: PrototypeStore, second: PrototypeStore, queries: np.ndarray):
    a, b = first.search(queries, k=3), second.search(queries, k=3)
    assert a.labels == b.labels and a.k == b.k
    for name in ("ids", "distances", "scores", "rejected"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize("mode", ["prototype", "instance"])
@pytest.mark.parametrize("kind", list(KINDS))
def test_round_trip_gives_identical_answers(tmp_path, blobs, mode, kind):
    # prototype mode: 320 one-shot classes; instance mode: 8 classes x 40 shots
    emb, labels, _ = blobs(320, 1, 8) if mode == "prototype" else blobs(8, 40, 8)
    store = PrototypeStore(8, metric="cosine", mode=mode, index=kind, fingerprint="f00d",
                           **KINDS[kind])
    store.add(emb[:-20], labels[:-20])
    store.add(emb[-20:], labels[-20:])
    store.remove(labels[0])
    if kind in TRAINED:
        assert isinstance(store.index, TRAINED[kind])
    store.save(tmp_path / "s")
    loaded = PrototypeStore.load(tmp_path / "s")
    assert (loaded.classes, loaded.counts) == (store.classes, store.counts)
    assert (loaded.mode, loaded.metric, loaded.fingerprint, loaded.index_kind,
            loaded.index_options) == (mode, "cosine", "f00d", kind, store.index_options)
    assert type(loaded.index) is type(store.index)
    queries = np.random.default_rng(9).normal(0, 10, (15, 8))
    assert_same_answers(store, loaded, queries)
    more = np.random.default_rng(10).normal(0, 10, (4, 8))
    for target in (store, loaded):  # the loaded index stays live
        target.add(more, [labels[1], "fresh1", "fresh2", labels[-1]])
    n_vectors = len(store) if mode == "prototype" else sum(store.counts.values())
    assert loaded.index.ntotal == store.index.ntotal == n_vectors  # replaced, not duplicated
    if kind == "hnsw":  # level draws are not saved: the grown graph may differ
        assert loaded.search(more[1:3]).labels == [["fresh1"], ["fresh2"]]
    else:
        assert_same_answers(store, loaded, queries)


def test_saved_grown_saved_again_loads_everything(tmp_path, blobs):
    emb, labels, _ = blobs(6, 2, 4)
    store = PrototypeStore(4, mode="instance")
    store.add(emb[:6], labels[:6])
    store.save(tmp_path / "s")
    store.add(emb[6:], labels[6:])
    store.add(emb[:1] * 2, ["late"])
    store.save(tmp_path / "s")
    loaded = PrototypeStore.load(tmp_path / "s")
    assert loaded.classes == [f"c{i}" for i in range(6)] + ["late"]
    assert loaded.counts == {**{f"c{i}": 2 for i in range(6)}, "late": 1}
    assert sorted(os.listdir(tmp_path)) == ["s", "s.lock"]  # no temp or backup left over
    assert sorted(os.listdir(tmp_path / "s")) == [
        "class_counts.npy", "class_ids.npy", "index.faiss", "labels.json", "store.json",
        "vector_classes.npy", "vector_ids.npy", "vectors.npy"]


def test_rename_and_remove_survive_save_and_ids_are_not_reused(tmp_path):
    store = PrototypeStore(2)
    store.add(np.array([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0]]), ["a", "b", "c"])
    store.rename("a", "alpha")
    store.remove("c")
    store.save(tmp_path / "s")
    loaded = PrototypeStore.load(tmp_path / "s")
    assert loaded.classes == ["alpha", "b"] and loaded.counts == {"alpha": 1, "b": 1}
    loaded.add(np.array([[9.0, 9.0]]), ["d"])
    result = loaded.search(np.array([[0.0, 0.0], [5.0, 0.0], [9.0, 9.0]]))
    assert result.labels == [["alpha"], ["b"], ["d"]]
    assert result.ids[:, 0].tolist() == [0, 1, 3]  # d gets 3: c's 2 is never reused


def test_labels_never_become_paths(tmp_path):
    labels = ["a/b", "../..", "line\nbreak", "猫", "кошка", "  padded  ", "\\x", "unknown"]
    store = PrototypeStore(2)
    store.add(np.arange(16, dtype=np.float32).reshape(8, 2) * 3, labels)
    store.save(tmp_path / "s")
    assert sorted(os.listdir(tmp_path / "s")) == [
        "class_counts.npy", "class_ids.npy", "index.faiss", "labels.json", "means.npy",
        "store.json"]
    assert sorted(os.listdir(tmp_path)) == ["s", "s.lock"]
    loaded = PrototypeStore.load(tmp_path / "s")
    assert loaded.classes == labels
    assert_same_answers(store, loaded, np.arange(16, dtype=np.float32).reshape(8, 2) * 3)


def test_empty_store_round_trips(tmp_path):
    PrototypeStore(3, mode="prototype", fingerprint="x").save(tmp_path / "s")
    loaded = PrototypeStore.load(tmp_path / "s")
    assert len(loaded) == 0 and loaded.dim == 3 and loaded.fingerprint == "x"


def test_a_crash_between_the_renames_leaves_the_backup_loadable(tmp_path):
    store = PrototypeStore(2)
    store.add(np.array([[0.0, 0.0], [4.0, 0.0]]), ["a", "b"])
    store.save(tmp_path / "s")
    os.rename(tmp_path / "s", persistence.backup_path(tmp_path / "s"))  # old moved, new not in
    assert PrototypeStore.load(tmp_path / "s").classes == ["a", "b"]
    store.add(np.array([[9.0, 9.0]]), ["c"])
    store.save(tmp_path / "s")
    assert PrototypeStore.load(tmp_path / "s").classes == ["a", "b", "c"]
    assert sorted(os.listdir(tmp_path)) == ["s", "s.lock"]


def test_a_failed_save_keeps_the_previous_store(tmp_path, monkeypatch):
    store = PrototypeStore(2, mode="instance")
    store.add(np.array([[0.0, 0.0], [4.0, 0.0]]), ["a", "b"])
    store.save(tmp_path / "s")
    before = (tmp_path / "s" / "store.json").read_bytes()
    store.add(np.array([[9.0, 9.0]]), ["c"])

    def crash(tmp, path):
        raise OSError("disk full")

    monkeypatch.setattr(persistence, "_swap_in", crash)
    with pytest.raises(OSError, match="disk full"):
        store.save(tmp_path / "s")
    assert (tmp_path / "s" / "store.json").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["s", "s.lock"]  # the temp folder is gone
    assert PrototypeStore.load(tmp_path / "s").classes == ["a", "b"]


def test_a_held_lock_makes_save_and_load_wait_then_fail(tmp_path):
    store = PrototypeStore(2)
    store.add(np.array([[0.0, 0.0]]), ["a"])
    store.save(tmp_path / "s")
    fd = os.open(tmp_path / "s.lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # another "process" is saving
        with pytest.raises(StoreLockedError, match=r"store .*s is locked .*s\.lock"):
            store.save(tmp_path / "s", lock_timeout=0.2)
        with pytest.raises(StoreLockedError, match="is locked"):
            PrototypeStore.load(tmp_path / "s", lock_timeout=0.2)
        fcntl.flock(fd, fcntl.LOCK_SH)  # another process is loading: loads may share
        assert PrototypeStore.load(tmp_path / "s", lock_timeout=0.2).classes == ["a"]
    finally:
        os.close(fd)
    store.save(tmp_path / "s", lock_timeout=0.2)


def test_store_json_records_the_format(tmp_path):
    store = PrototypeStore(2, index="hnsw", fingerprint="abc", M=4)
    store.add(np.array([[1.0, 2.0], [3.0, 4.0]]), ["x", "x"])
    store.save(tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "store.json").read_text(encoding="utf-8"))
    assert meta["format"] == "fewshot_metric.prototype_store" and meta["version"] == 2
    assert (meta["dim"], meta["metric"], meta["mode"], meta["fingerprint"]) == (
        2, "sqeuclidean", "prototype", "abc")
    assert meta["index"] == {"kind": "hnsw", "options": {"M": 4, "efConstruction": 40,
                                                         "efSearch": 64}}
    assert meta["classes"] == 1 and meta["next_id"] == 1
    assert json.loads((tmp_path / "s" / "labels.json").read_text(encoding="utf-8")) == ["x"]
    columns = {name: np.load(tmp_path / "s" / f"{name}.npy", allow_pickle=False)
               for name in ("class_ids", "class_counts", "means")}
    assert columns["class_ids"].tolist() == [0] and columns["class_counts"].tolist() == [2]
    assert columns["means"].dtype == np.float32
    np.testing.assert_array_equal(columns["means"], [[2.0, 3.0]])


def test_a_save_waits_for_another_process_to_release_the_lock(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; fd = os.open(sys.argv[1], "
         "os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); "
         "time.sleep(float(sys.argv[2]))", str(tmp_path / "s.lock"), "1.0"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        store = PrototypeStore(2)
        store.add(np.array([[0.0, 0.0]]), ["a"])
        start = time.monotonic()
        store.save(tmp_path / "s", lock_timeout=10.0)
        assert time.monotonic() - start > 0.2  # it waited for the holder to finish
    finally:
        holder.wait(timeout=10)
    assert PrototypeStore.load(tmp_path / "s").classes == ["a"]


def test_info_round_trips_and_must_be_json(tmp_path):
    store = PrototypeStore(2)
    store.add(np.ones((1, 2), np.float32), ["a"])
    store.info = {"checkpoint": "/models/ünï.safetensors", "reject_distance": 1.5, "n": [1]}
    store.save(tmp_path / "s")
    assert PrototypeStore.load(tmp_path / "s").info == store.info
    before = (tmp_path / "s" / "store.json").read_bytes()
    for bad in ({"x": object()}, {"x": float("nan")}, ["not", "a", "dict"]):
        store.info = bad
        with pytest.raises(ValueError, match="store.info must"):
            store.save(tmp_path / "s")
    assert (tmp_path / "s" / "store.json").read_bytes() == before


def test_save_deletes_temp_folders_of_killed_saves_of_this_store_only(tmp_path):
    mine = tmp_path / ".s.partial-ab12cd_9.tmp"
    others = [tmp_path / ".s.x.partial-ab12cd_9.tmp",   # store "s.x"
              tmp_path / ".s.partial-ab12cd_9x.tmp",    # not the pattern
              tmp_path / "s.partial-ab12cd_9.tmp"]
    for folder in (mine, *others):
        folder.mkdir()
        (folder / "index.faiss").write_bytes(b"half")
    store = PrototypeStore(2)
    store.add(np.ones((1, 2), np.float32), ["a"])
    store.save(tmp_path / "s")
    assert not mine.exists() and all(folder.is_dir() for folder in others)
    assert PrototypeStore.load(tmp_path / "s").classes == ["a"]
