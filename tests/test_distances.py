"""Distances: hand-worked scores and logits on 2-D points, parity with cdist and FAISS, configs."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
import torch

from fewshot_metric.distances import (
    Cosine,
    SquaredEuclidean,
    build_distance,
    distance_from_config,
)


def test_squared_euclidean_by_hand():
    query = torch.tensor([[1.0, 1.0]])
    ref = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0]])
    # (1-0)^2 + (1-0)^2 = 2;  (1-2)^2 + (1-0)^2 = 2;  (1-0)^2 + (1-3)^2 = 1 + 4 = 5
    torch.testing.assert_close(SquaredEuclidean()(query, ref), torch.tensor([[2.0, 2.0, 5.0]]))
    # logits = -scale * d: scale 1 -> -2, -2, -5; scale 0.5 -> -1, -1, -2.5
    torch.testing.assert_close(SquaredEuclidean().logits(query, ref),
                               torch.tensor([[-2.0, -2.0, -5.0]]))
    torch.testing.assert_close(SquaredEuclidean(scale=0.5).logits(query, ref),
                               torch.tensor([[-1.0, -1.0, -2.5]]))


def test_squared_euclidean_matches_cdist_and_is_never_negative():
    gen = torch.Generator().manual_seed(0)
    query = torch.randn(40, 64, generator=gen, dtype=torch.float64)
    ref = torch.randn(30, 64, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(SquaredEuclidean()(query, ref), torch.cdist(query, ref) ** 2)
    # Identical large rows: the expanded form rounds around 0 and must be clamped there.
    big = 1e4 * torch.randn(8, 16, generator=gen)
    assert (SquaredEuclidean()(big, big) >= 0).all()


def test_cosine_by_hand():
    query = torch.tensor([[3.0, 4.0]])  # |q| = 5
    ref = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    # cos = q.r / (|q||r|): 3/5 = 0.6;  8/(5*2) = 0.8;  -3/5 = -0.6
    torch.testing.assert_close(Cosine()(query, ref), torch.tensor([[0.6, 0.8, -0.6]]))
    # logits = scale * cos with the default scale 10: 6, 8, -6
    torch.testing.assert_close(Cosine().logits(query, ref), torch.tensor([[6.0, 8.0, -6.0]]))


def test_pair_distances_by_hand():
    emb_a = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    emb_b = torch.tensor([[3.0, 4.0], [6.0, 0.0]])
    # Euclidean: sqrt(9 + 16) = 5;  sqrt(3^2 + 4^2) = 5
    torch.testing.assert_close(SquaredEuclidean().pair_distance(emb_a, emb_b),
                               torch.tensor([5.0, 5.0]))
    # 1 - cos: (3,4) vs (6,0): cos = 18/(5*6) = 0.6 -> 0.4
    torch.testing.assert_close(Cosine().pair_distance(emb_a[1:], emb_b[1:]), torch.tensor([0.4]))


def test_direction_names_and_faiss_metric():
    euclid, cosine = SquaredEuclidean(), Cosine()
    assert (euclid.name, euclid.larger_is_closer, euclid.normalize_for_index) == (
        "sqeuclidean", False, False)
    assert (cosine.name, cosine.larger_is_closer, cosine.normalize_for_index) == (
        "cosine", True, True)
    assert euclid.faiss_metric == faiss.METRIC_L2
    assert cosine.faiss_metric == faiss.METRIC_INNER_PRODUCT


@pytest.mark.parametrize("distance", [SquaredEuclidean(), Cosine()], ids=lambda d: d.name)
def test_faiss_search_returns_forward_scores(distance):
    gen = torch.Generator().manual_seed(1)
    query, ref = torch.randn(5, 8, generator=gen), torch.randn(12, 8, generator=gen)
    query_np, ref_np = query.numpy().copy(), ref.numpy().copy()
    if distance.normalize_for_index:
        faiss.normalize_L2(query_np)
        faiss.normalize_L2(ref_np)
    index = faiss.IndexFlat(8, distance.faiss_metric)
    index.add(ref_np)
    scores, ids = index.search(query_np, len(ref_np))
    expected = distance(query, ref).numpy()
    np.testing.assert_allclose(scores, np.take_along_axis(expected, ids, axis=1), atol=1e-5)
    # The store's raw scores give the same logits as the model.
    torch.testing.assert_close(
        distance.scores_to_logits(torch.from_numpy(scores)),
        torch.from_numpy(np.take_along_axis(distance.logits(query, ref).numpy(), ids, axis=1)),
        atol=1e-4, rtol=1e-5)


def test_learned_scale_gets_its_gradient():
    distance = Cosine(scale=10.0, learn_scale=True)
    query = torch.tensor([[3.0, 4.0]])
    ref = torch.tensor([[1.0, 0.0], [0.0, 2.0], [-1.0, 0.0]])
    distance.logits(query, ref).sum().backward()
    # sum(logits) = exp(log_scale) * (0.6 + 0.8 - 0.6); d/d log_scale = 10 * 0.8 = 8
    torch.testing.assert_close(distance.log_scale.grad, torch.tensor(8.0))
    assert list(Cosine().parameters()) == []  # a fixed scale is no parameter


def test_config_round_trip_keeps_a_learned_scale():
    distance = Cosine(scale=10.0, learn_scale=True)
    with torch.no_grad():
        distance.log_scale.fill_(np.log(4.0))
    config = json.loads(json.dumps(distance.config()))
    assert config == {"name": "cosine", "scale": pytest.approx(4.0), "learn_scale": True}
    rebuilt = distance_from_config(config)
    assert isinstance(rebuilt, Cosine)
    query, ref = torch.tensor([[3.0, 4.0]]), torch.tensor([[0.0, 2.0]])
    torch.testing.assert_close(rebuilt.logits(query, ref), torch.tensor([[3.2]]))  # 4 * 0.8
    assert distance_from_config(SquaredEuclidean(scale=2.0).config()).scale == 2.0


def test_factory_errors_name_the_valid_choices():
    assert isinstance(build_distance("sqeuclidean"), SquaredEuclidean)
    with pytest.raises(ValueError, match=r"unknown distance 'l1'.*'cosine', 'sqeuclidean'"):
        build_distance("l1")
    with pytest.raises(ValueError, match=r"unknown options \['temperature'\].*'scale'"):
        build_distance("cosine", temperature=0.1)
    with pytest.raises(ValueError, match="needs a 'name'"):
        distance_from_config({"scale": 1.0})
    with pytest.raises(ValueError, match="positive number"):
        Cosine(scale=0.0)


def test_shape_errors_show_the_shapes():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(4, 5\)"):
        SquaredEuclidean()(torch.zeros(2, 3), torch.zeros(4, 5))
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(3, 3\)"):
        Cosine().pair_distance(torch.zeros(2, 3), torch.zeros(3, 3))
