"""What a store of tens of millions of classes relies on, checked small: per-class columns in
many blocks and chunked index rebuilds give the answers of a store built in one go; a store
loaded with mmap=True answers like one read into memory and refuses changes; search-time
options change without a rebuild; float32 means stay exact enough over many updates."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from fewshot_metric.store import PrototypeStore, ReadOnlyStoreError, row_table
from fewshot_metric.store.index_factory import StoreIndex
from fewshot_metric.store.prototype_store import MODES

KINDS = {
    "flat": {},
    "hnsw": {"M": 8, "efSearch": 64},
    "ivf_flat": {"nlist": 4, "nprobe": 1},
    "ivf_pq": {"nlist": 2, "nprobe": 1, "pq_m": 4, "pq_bits": 3},
}


def same_answers(first, second, queries, k, same_ids=True):
    a, b = first.search(queries, k=k), second.search(queries, k=k)
    assert a.labels == b.labels
    if same_ids:
        np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_allclose(a.distances, b.distances, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_many_small_adds_in_many_blocks_answer_like_one_add(monkeypatch, blobs, mode):
    """Blocks of 2 rows and chunks of 3: every add, remove, exact fallback and IVF training
    crosses block and chunk edges."""
    monkeypatch.setattr(row_table, "MIN_BLOCK_ROWS", 2)
    monkeypatch.setattr(row_table, "CHUNK_ROWS", 3)
    emb, labels, _ = blobs(40, 3, 8)  # 120 shots, interleaved c0..c39 three times
    grown = PrototypeStore(8, mode=mode, index="ivf_flat", nlist=2, nprobe=1)
    for start in range(0, 120, 7):
        grown.add(emb[start:start + 7], labels[start:start + 7])
    grown.remove("c5")
    grown.remove("c30")
    assert len(grown._classes._blocks) >= 3
    keep = [i for i, label in enumerate(labels) if label not in ("c5", "c30")]
    whole = PrototypeStore(8, mode=mode)  # exact, built in one call from the same shots
    whole.add(emb[keep], [labels[i] for i in keep])
    assert grown.classes == whole.classes and grown.counts == whole.counts
    queries = np.random.default_rng(3).normal(0, 10, (25, 8)).astype(np.float32)
    # nprobe=1 over 2 lists finds too few classes for k=38: the exact fallback, in chunks
    result = grown.search(queries, k=38)
    assert result.k == 38 and (result.ids >= 0).all()
    same_answers(grown, whole, queries, k=38, same_ids=False)  # (ids count removed classes)
    grown.set_index("flat")  # a rebuild from the blocks, chunk by chunk
    same_answers(grown, whole, queries, k=5, same_ids=False)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("mode", MODES)
def test_a_store_loaded_with_mmap_answers_the_same_and_is_read_only(tmp_path, blobs, kind,
                                                                    mode):
    emb, labels, _ = blobs(160, 2, 8)  # 320 shots: both IVF kinds train
    store = PrototypeStore(8, metric="cosine", mode=mode, index=kind, **KINDS[kind])
    store.add(emb, labels)
    store.remove("c7")
    store.save(tmp_path / "s")
    mapped = PrototypeStore.load(tmp_path / "s", mmap=True)
    loaded = PrototypeStore.load(tmp_path / "s")
    assert mapped.read_only and not loaded.read_only
    assert mapped.classes == store.classes and mapped.counts == store.counts
    queries = np.random.default_rng(4).normal(0, 10, (20, 8)).astype(np.float32)
    same_answers(mapped, loaded, queries, k=3)
    before = mapped.classes
    for change in (lambda: mapped.add(emb[:1], ["new"]), lambda: mapped.remove("c1"),
                   lambda: mapped.rename("c1", "one"), lambda: mapped.save(tmp_path / "t"),
                   lambda: mapped.set_index("flat" if kind != "flat" else "hnsw")):
        with pytest.raises(ReadOnlyStoreError, match=r"loaded with mmap=True, which is "
                                                     r"read-only; load it with "):
            change()
    assert mapped.classes == before and not (tmp_path / "t").exists()
    same_answers(mapped, loaded, queries, k=3)


@pytest.mark.parametrize(("kind", "knob"), [("ivf_flat", "nprobe"), ("ivf_pq", "nprobe"),
                                            ("hnsw", "efSearch")])
def test_search_time_options_change_without_a_rebuild(tmp_path, blobs, kind, knob):
    emb, labels, _ = blobs(320, 1, 8)
    store = PrototypeStore(8, index=kind, **KINDS[kind])
    store.add(emb, labels)
    store.save(tmp_path / "s")
    for target in (store, PrototypeStore.load(tmp_path / "s", mmap=True)):
        index = target.index
        target.set_index(kind, **{**KINDS[kind], knob: 7})
        assert target.index is index and target.index_options[knob] == 7
        live = (faiss.downcast_index(index.index).hnsw.efSearch if kind == "hnsw"
                else faiss.extract_index_ivf(index).nprobe)
        assert live == 7
    other = {"ivf_flat": {"nlist": 8}, "ivf_pq": {"pq_m": 2}, "hnsw": {"M": 4}}[kind]
    store.set_index(kind, **{**KINDS[kind], **other})  # a build option: rebuilt
    assert store.index is not index


def test_float32_means_track_many_single_shot_updates(blobs):
    """A class fed one shot at a time, 2,000 times, keeps the float64 mean to 1e-5 (each
    update rounds the mean to float32: about 3e-6 here, 12 float32 steps at 3.0)."""
    rng = np.random.default_rng(5)
    shots = rng.normal(3.0, 1.0, (2000, 16))
    store = PrototypeStore(16)
    for shot in shots:
        store.add(shot[None], ["x"])
    mean = store._classes.get("mean", np.array([0]))[0]
    np.testing.assert_allclose(mean, shots.mean(0), rtol=0, atol=1e-5)
    assert store.count("x") == 2000


def test_the_same_settings_again_retrain_an_ivf_index(blobs):
    emb, labels, _ = blobs(320, 1, 8)
    store = PrototypeStore(8, index="ivf_flat", **KINDS["ivf_flat"])
    store.add(emb, labels)
    trained = store.index
    store.set_index("ivf_flat", **KINDS["ivf_flat"])
    assert store.index is not trained and store.index.ntotal == 320


def test_a_failed_change_keeps_a_trained_ivf_index_and_its_answers(monkeypatch, blobs):
    """Rolling back re-adds the vectors to the same centroids instead of retraining, so the
    answers are exactly those from before, even after removals took the store below the
    size at which it trained."""
    emb, labels, _ = blobs(400, 1, 8)
    store = PrototypeStore(8, index="ivf_flat", **KINDS["ivf_flat"])
    store.add(emb[:320], labels[:320])  # trains on these
    store.add(emb[320:] * 3, labels[320:])  # grown far from the training data
    for label in labels[:250]:
        store.remove(label)  # 150 left: below train_min, 39 x nlist = 156
    queries = np.random.default_rng(6).normal(0, 20, (30, 8)).astype(np.float32)
    before = store.search(queries, k=3)
    index_type = type(store.index)

    def half_done(self, remove_ids, add_vectors, add_ids, n_after, all_vectors):
        self.faiss_index.add_with_ids(add_vectors, add_ids)
        raise MemoryError("out of memory")

    monkeypatch.setattr(StoreIndex, "update", half_done)
    with pytest.raises(MemoryError):
        store.add(emb[:5] * -2, ["x", "y", "z", labels[300], labels[301]])
    with pytest.raises(MemoryError):
        store.remove(labels[399])
    after = store.search(queries, k=3)
    assert type(store.index) is index_type and after.labels == before.labels
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_array_equal(after.distances, before.distances)


def test_shots_that_cancel_an_existing_class_are_refused():
    shots = np.array([[1, 2, 3, 4], [-3, 1, 2, 5], [2, -2, 1, 1]], np.float32)
    store = PrototypeStore(4, metric="cosine")
    store.add(shots, ["a"] * 3)
    before = store.search(shots, k=1)
    with pytest.raises(ValueError, match="the shots of class 'a' cancel out"):
        store.add(-shots, ["a"] * 3)
    assert store.count("a") == 3
    np.testing.assert_array_equal(store.search(shots, k=1).distances, before.distances)
    store.add(-shots[:2], ["a"] * 2)  # a real change of direction is still accepted
    assert store.count("a") == 5


def test_a_page_of_counts_and_the_shot_total_skip_removed_classes() -> None:
    store = PrototypeStore(2, mode="instance")
    store.add(np.zeros((6, 2), np.float32), ["a", "b", "b", "c", "d", "d"])
    store.remove("b")
    assert store.counts_page(0, 2) == {"a": 1, "c": 1}
    assert store.counts_page(1, 10) == {"c": 1, "d": 2}
    assert store.counts_page(3, 5) == {}
    assert store.shots == 4
