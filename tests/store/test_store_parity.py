"""PrototypeStore agrees with PrototypicalHead, NearestCentroid and brute-force numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.neighbors import NearestCentroid

from fewshot_metric.heads import PrototypicalHead
from fewshot_metric.store import PrototypeStore


def episode(seed: int, n_way: int = 5, k_shot: int = 4, dim: int = 16, n_query: int = 60):
    """Random support float32 [n_way * k_shot, dim] with shuffled int labels, and queries."""
    rng = np.random.default_rng(seed)
    support = rng.normal(size=(n_way * k_shot, dim)).astype(np.float32)
    labels = rng.permutation(np.arange(n_way).repeat(k_shot))
    return support, labels, rng.normal(size=(n_query, dim)).astype(np.float32)


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prototype_mode_matches_head_and_nearest_centroid(seed):
    support, labels, queries = episode(seed)
    store = PrototypeStore(16)
    store.add(support, [f"class{i}" for i in labels])
    predicted = [int(row[0].removeprefix("class")) for row in store.search(queries).labels]
    head = PrototypicalHead()(torch.from_numpy(support), torch.from_numpy(labels),
                              torch.from_numpy(queries)).argmax(1).tolist()
    centroid = NearestCentroid().fit(support, labels).predict(queries).tolist()
    assert predicted == head == centroid
    logits = PrototypicalHead()(torch.from_numpy(support), torch.from_numpy(labels),
                                torch.from_numpy(queries)).numpy()
    result = store.search(queries, k=5)
    order = [[int(label.removeprefix("class")) for label in row] for row in result.labels]
    np.testing.assert_allclose(result.distances, -np.take_along_axis(logits, np.array(order), 1),
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("seed", [0, 1])
def test_cosine_prototype_mode_matches_brute_force(seed):
    support, labels, queries = episode(seed)
    store = PrototypeStore(16, metric="cosine")
    store.add(support, [f"class{i}" for i in labels])
    prototypes = unit(np.stack([unit(support)[labels == c].mean(0) for c in range(5)]))
    cosines = unit(queries) @ prototypes.T  # [60, 5]
    result = store.search(queries, k=3)
    expected = np.argsort(-cosines, axis=1)[:, :3]
    assert [[f"class{c}" for c in row] for row in expected.tolist()] == result.labels
    np.testing.assert_allclose(result.distances,
                               1 - np.take_along_axis(cosines, expected, 1), atol=1e-5)


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_instance_mode_matches_brute_force_nearest_shots(metric):
    support, labels, queries = episode(3, k_shot=6)
    store = PrototypeStore(16, metric=metric, mode="instance")
    store.add(support, [f"class{i}" for i in labels])
    if metric == "cosine":
        dist = 1 - unit(queries) @ unit(support).T  # [60, 30]
    else:
        dist = ((queries[:, None, :] - support[None]) ** 2).sum(-1)
    per_class = np.stack([dist[:, labels == c].min(1) for c in range(5)], 1)  # [60, 5]
    expected = np.argsort(per_class, axis=1)[:, :3]
    result = store.search(queries, k=3)
    assert [[f"class{c}" for c in row] for row in expected.tolist()] == result.labels
    np.testing.assert_allclose(result.distances, np.take_along_axis(per_class, expected, 1),
                               rtol=1e-4, atol=1e-4)
    nearest_shot = labels[dist.argmin(1)]
    assert [row[0] for row in result.labels] == [f"class{c}" for c in nearest_shot]


@pytest.mark.parametrize("metric", ["sqeuclidean", "cosine"])
def test_running_mean_equals_mean_from_scratch(metric):
    rng = np.random.default_rng(8)
    store = PrototypeStore(3, metric=metric)
    shots: dict[str, list[np.ndarray]] = {}
    for step in range(60):
        if shots and step % 7 == 3:
            label = sorted(shots)[rng.integers(len(shots))]
            store.remove(label)
            del shots[label]
            continue
        n = int(rng.integers(1, 5))
        batch = rng.normal(size=(n, 3)).astype(np.float32) * 5 + 1
        names = [f"k{i}" for i in rng.integers(0, 6, n)]
        store.add(batch, names)
        for row, name in zip(batch, names, strict=True):
            shots.setdefault(name, []).append(row)
    assert sorted(store.classes) == sorted(shots)
    assert store.counts == {label: len(shots[label]) for label in store.classes}
    queries = rng.normal(size=(20, 3)) * 5
    result = store.search(queries, k=len(shots))
    for label in shots:
        rows = np.stack(shots[label]).astype(np.float64)
        if metric == "cosine":
            prototype = unit(unit(rows).mean(0, keepdims=True))
            expected = 1 - unit(queries) @ prototype[0]
        else:
            expected = ((queries - rows.mean(0)) ** 2).sum(1)
        got = [result.distances[q, result.labels[q].index(label)] for q in range(20)]
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
