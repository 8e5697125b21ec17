"""PrototypeStore search: hand-worked 2-D answers, k, scores, rejection, IVF, index switches."""

from __future__ import annotations

import math

import faiss
import numpy as np
import pytest

from fewshot_metric.store import PrototypeStore

# a: (0,0), (2,0) -> prototype (1,0); b: (0,2), (0,4) -> (0,3); c: (4,4).
SHOTS = np.array([[0, 0], [0, 2], [2, 0], [0, 4], [4, 4]], dtype=np.float32)
LABELS = ["a", "b", "a", "b", "c"]


def abc_store(**kwargs) -> PrototypeStore:
    store = PrototypeStore(2, **kwargs)
    store.add(SHOTS, LABELS)
    return store


def test_registry_ids_counts_and_order():
    store = abc_store()
    assert store.classes == ["a", "b", "c"] and len(store) == 3
    assert store.counts == {"a": 2, "b": 2, "c": 1}
    assert "a" in store and "z" not in store
    store.add(np.array([[9, 9]]), ["a"])
    store.remove("b")
    store.add(np.array([[5, 5]]), ["b"])  # a new class "b": a fresh id, at the end
    assert store.classes == ["a", "c", "b"] and store.counts == {"a": 3, "c": 1, "b": 1}
    ids = store.search(np.array([[1.0, 0.0], [4.0, 4.0], [5.0, 5.0]])).ids[:, 0].tolist()
    assert ids[:2] == [0, 2] and ids[2] == 3  # a, c keep ids 0, 2; the new b gets 3, not 1


def test_distances_and_scores_by_hand():
    # (1,1): to a (1,0) 1, to b (0,3) 1 + 4 = 5, to c (4,4) 9 + 9 = 18
    result = abc_store().search(np.array([[1.0, 1.0]]), k=2)
    assert result.labels == [["a", "b"]] and result.k == 2
    np.testing.assert_allclose(result.distances, [[1.0, 5.0]])
    assert result.distances.dtype == np.float32 and result.ids.dtype == np.int64
    e4 = math.exp(-4.0)  # softmax(-1, -5) = (1, e^-4) / (1 + e^-4)
    np.testing.assert_allclose(result.scores, [[1 / (1 + e4), e4 / (1 + e4)]], rtol=1e-6)
    # temperature 2: softmax(-0.5, -2.5) = (1, e^-2) / (1 + e^-2)
    warm = abc_store().search(np.array([[1.0, 1.0]]), k=2, temperature=2.0)
    e2 = math.exp(-2.0)
    np.testing.assert_allclose(warm.scores, [[1 / (1 + e2), e2 / (1 + e2)]], rtol=1e-6)


def test_k_larger_than_the_number_of_classes_is_clipped_never_padded():
    result = abc_store().search(np.array([[1.0, 1.0], [4.0, 3.0]]), k=10)
    assert result.k == 3 and result.ids.shape == result.distances.shape == (2, 3)
    assert [len(row) for row in result.labels] == [3, 3]
    # (4,3): to c (4,4) 1, to b (0,3) 16, to a (1,0) 9 + 9 = 18
    assert result.labels[0] == ["a", "b", "c"] and result.labels[1] == ["c", "b", "a"]
    assert (result.ids >= 0).all() and all(len(set(row)) == 3 for row in result.ids.tolist())
    np.testing.assert_allclose(result.scores.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(result.distances[1], [1.0, 16.0, 18.0])


def test_rejection_marks_far_queries_unknown():
    result = abc_store().search(np.array([[1.0, 1.0], [10.0, 10.0]]), k=2, reject_distance=2.0)
    # (10,10): nearest c (4,4) at 36 + 36 = 72 > 2 -> unknown; (1,1): a at 1 <= 2 -> a
    assert result.rejected.tolist() == [False, True]
    assert result.labels[0] == ["a", "b"] and result.labels[1][0] == "unknown"
    assert result.ids[1, 0] == 2 and result.distances[1, 0] == pytest.approx(72.0)
    assert abc_store().search(np.array([[10.0, 10.0]])).rejected.tolist() == [False]


def test_cosine_prototype_is_the_renormalised_mean_of_unit_shots():
    store = PrototypeStore(2, metric="cosine")
    # x: (1,0), (0,2) -> unit (1,0), (0,1) -> mean (.5,.5) -> (1,1)/sqrt2; y: (-3,0) -> (-1,0)
    store.add(np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]]), ["x", "x", "y"])
    query = np.array([[5.0, 0.0]])
    result = store.search(query, k=2)
    assert result.labels == [["x", "y"]]
    # 1 - cos 45deg = 0.2929 (the raw mean (.5, 1) would give 1 - 1/sqrt5 = 0.553); y: 1 + 1
    np.testing.assert_allclose(result.distances, [[1 - 1 / math.sqrt(2), 2.0]], rtol=1e-6)
    np.testing.assert_array_equal(query, [[5.0, 0.0]])  # normalised a copy, not the caller's


def test_instance_mode_dedupes_shots_into_distinct_classes():
    store = PrototypeStore(2, mode="instance")
    store.add(np.array([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]]), ["a", "a", "b"])
    # (1.9,0): shot (2,0) 0.01, shot (0,0) 3.61 (a again, skipped), b (0,3) 3.61 + 9 = 12.61
    result = store.search(np.array([[1.9, 0.0]]), k=5)
    assert result.k == 2 and result.labels == [["a", "b"]]
    np.testing.assert_allclose(result.distances, [[0.01, 12.61]], rtol=1e-5)
    assert store.counts == {"a": 2, "b": 1}


def test_pick_rejection_threshold_by_hand():
    store = PrototypeStore(2)
    store.add(np.array([[0.0, 0.0], [10.0, 0.0]]), ["left", "right"])
    known = np.array([[1.0, 0.0], [0.0, 2.0], [10.0, 3.0]])  # nearest distances 1, 4, 9
    unknown = np.array([[10.0, -2.5], [0.0, 4.0], [5.0, 0.0], [5.0, 5.0]])  # 6.25, 16, 25, 50
    # rate 0: none of 4 may pass -> threshold < 6.25 -> largest known below: 4
    assert store.pick_rejection_threshold(known, unknown, 0.0) == 4.0
    # rate .25: one may pass -> below 16 -> 9; .5 -> below 25 -> 9; 1 -> all pass -> 9
    for rate in (0.25, 0.5, 1.0):
        assert store.pick_rejection_threshold(known, unknown, rate) == 9.0
    result = store.search(np.vstack([known, unknown]), reject_distance=4.0)
    assert result.rejected.tolist() == [False, False, True, True, True, True, True]
    with pytest.raises(ValueError, match="no threshold accepts any known query"):
        store.pick_rejection_threshold(np.array([[3.0, 0.0]]), unknown, 0.0)  # 9 >= 6.25


def test_ivf_serves_exactly_until_trained_then_recalls_well(blobs):
    emb, labels, centres = blobs(8, 12, 4, seed=1)  # 96 shots; ivf_flat nlist 2 trains at 78
    flat = PrototypeStore(4, mode="instance")
    ivf = PrototypeStore(4, mode="instance", index="ivf_flat", nlist=2, nprobe=1)
    queries = centres + np.random.default_rng(2).normal(0, 3.0, centres.shape)
    for store in (flat, ivf):
        store.add(emb[:70], labels[:70])
    assert isinstance(ivf.index, faiss.IndexIDMap2)  # the exact stand-in
    exact, early = flat.search(queries, k=3), ivf.search(queries, k=3)
    np.testing.assert_array_equal(early.ids, exact.ids)
    np.testing.assert_array_equal(early.distances, exact.distances)
    for store in (flat, ivf):
        store.add(emb[70:], labels[70:])
    assert isinstance(ivf.index, faiss.IndexIVFFlat) and ivf.index.is_trained
    assert ivf.index.ntotal == 96
    many = centres[np.arange(80) % 8] + np.random.default_rng(3).normal(0, 2.0, (80, 4))
    recall = (ivf.search(many).ids[:, 0] == flat.search(many).ids[:, 0]).mean()
    assert recall >= 0.9


def test_ivf_pq_trains_on_a_few_hundred_vectors(blobs):
    emb, labels, centres = blobs(8, 40, 8, seed=4)  # 320 >= 39 * max(2, 2**3) = 312
    store = PrototypeStore(8, mode="instance", index="ivf_pq", nlist=2, nprobe=2, pq_m=4,
                           pq_bits=3)
    store.add(emb[:300], labels[:300])
    assert isinstance(store.index, faiss.IndexIDMap2)
    store.add(emb[300:], labels[300:])
    assert isinstance(store.index, faiss.IndexIVFPQ) and store.index.is_trained
    queries = centres + np.random.default_rng(5).normal(0, 0.5, centres.shape)
    assert store.search(queries).labels == [[f"c{i}"] for i in range(8)]


def test_hnsw_removal_rebuilds_and_matches_flat(blobs):
    emb, labels, _ = blobs(6, 5, 4)
    queries = np.random.default_rng(6).normal(0, 10, (20, 4))
    answers = []
    for kind in ("flat", "hnsw"):
        store = PrototypeStore(4, mode="instance", index=kind)
        store.add(emb, labels)
        store.remove("c2")
        store.add(emb[:3] + 1.0, ["c0", "c1", "new"])
        answers.append(store.search(queries, k=4))
    assert answers[0].labels == answers[1].labels
    assert all("c2" not in row for row in answers[1].labels)
    np.testing.assert_allclose(answers[0].distances, answers[1].distances, rtol=1e-5)


def test_set_index_switches_kind_and_keeps_answers(blobs):
    emb, labels, _ = blobs(5, 4, 4)
    store = PrototypeStore(4, metric="cosine")
    store.add(emb, labels)
    queries = np.random.default_rng(7).normal(0, 10, (10, 4))
    before = store.search(queries, k=3)
    store.set_index("hnsw", M=8, efSearch=32)
    assert store.index_kind == "hnsw" and store.index_options["M"] == 8
    after = store.search(queries, k=3)
    assert after.labels == before.labels
    store.set_index("ivf_flat", nlist=4)  # 5 classes < 39 * 4: the exact stand-in
    assert isinstance(store.index, faiss.IndexIDMap2)
    np.testing.assert_array_equal(store.search(queries, k=3).ids, before.ids)


def test_rows_an_ivf_probe_cannot_fill_are_answered_exactly(blobs):
    emb, labels, _ = blobs(80, 1, 4, seed=11)  # 80 classes >= 39 * 2: trained, 1 of 2 probed
    flat, ivf = PrototypeStore(4), PrototypeStore(4, index="ivf_flat", nlist=2, nprobe=1)
    for store in (flat, ivf):
        store.add(emb, labels)
    assert isinstance(ivf.index, faiss.IndexIVFFlat)
    queries = np.random.default_rng(12).normal(0, 10, (5, 4)).astype(np.float32)
    assert (ivf.index.search(queries, 80)[1] == -1).any()  # one list holds fewer than 80
    exact, answered = flat.search(queries, k=80), ivf.search(queries, k=80)
    assert answered.labels == exact.labels and (answered.ids >= 0).all()
    np.testing.assert_allclose(answered.distances, exact.distances, rtol=1e-5)


def test_label_array_holds_the_labels_as_an_object_array():
    result = abc_store().search(np.array([[1.0, 1.0], [10.0, 10.0]]), k=2, reject_distance=2.0)
    assert result.label_array.dtype == object and result.label_array.shape == (2, 2)
    assert result.label_array.tolist() == result.labels == [["a", "b"], ["unknown", "b"]]
    assert abc_store().search(np.array([[10.0, 10.0]]), k=1).label_array.tolist() == [["c"]]
