"""PrototypicalHead: hand-worked logits, parity with sklearn's NearestCentroid, label checks."""

from __future__ import annotations

import pytest
import torch
from sklearn.neighbors import NearestCentroid

from fewshot_metric.distances import Cosine, SquaredEuclidean
from fewshot_metric.heads import PrototypicalHead, build_head

# Class 0: (0,0), (2,0) -> prototype (1,0). Class 1: (0,2), (0,4) -> prototype (0,3).
# The labels are interleaved to check that supports are grouped by label, not by position.
SUPPORT = torch.tensor([[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 4.0]])
LABELS = torch.tensor([0, 1, 0, 1])


def test_prototypes_are_class_means():
    torch.testing.assert_close(PrototypicalHead().prototypes(SUPPORT, LABELS),
                               torch.tensor([[1.0, 0.0], [0.0, 3.0]]))


def test_logits_are_negative_squared_distances_to_prototypes():
    query = torch.tensor([[1.0, 1.0], [0.0, 2.0]])
    # (1,1): to (1,0) 0 + 1 = 1, to (0,3) 1 + 4 = 5 -> logits -1, -5
    # (0,2): to (1,0) 1 + 4 = 5, to (0,3) 0 + 1 = 1 -> logits -5, -1
    expected = torch.tensor([[-1.0, -5.0], [-5.0, -1.0]])
    head = PrototypicalHead(SquaredEuclidean())
    torch.testing.assert_close(head.episode_logits(SUPPORT, LABELS, query), expected)
    torch.testing.assert_close(head(SUPPORT, LABELS, query), expected)


def test_cosine_prototypes():
    query = torch.tensor([[3.0, 4.0]])
    # cos((3,4), (1,0)) = 3/5 = 0.6, cos((3,4), (0,3)) = 12/15 = 0.8; scale 2 -> 1.2, 1.6
    torch.testing.assert_close(PrototypicalHead(Cosine(scale=2.0))(SUPPORT, LABELS, query),
                               torch.tensor([[1.2, 1.6]]))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_argmax_matches_sklearn_nearest_centroid(seed):
    gen = torch.Generator().manual_seed(seed)
    n_way, k_shot, dim = 5, 4, 16
    support = torch.randn(n_way * k_shot, dim, generator=gen, dtype=torch.float64)
    labels = torch.arange(n_way).repeat(k_shot)[torch.randperm(n_way * k_shot, generator=gen)]
    query = torch.randn(60, dim, generator=gen, dtype=torch.float64)
    predicted = PrototypicalHead()(support, labels, query).argmax(1)
    centroid = NearestCentroid().fit(support.numpy(), labels.numpy())
    assert predicted.tolist() == centroid.predict(query.numpy()).tolist()


def test_support_label_errors():
    head = PrototypicalHead()
    with pytest.raises(ValueError, match=r"classes \[1\] have no support example"):
        head.prototypes(SUPPORT, torch.tensor([0, 2, 0, 2]))
    with pytest.raises(ValueError, match="int64"):
        head.prototypes(SUPPORT, LABELS.float())
    with pytest.raises(ValueError, match="S = 4"):
        head.prototypes(SUPPORT, LABELS[:3])
    with pytest.raises(ValueError, match="negative"):
        head.prototypes(SUPPORT, torch.tensor([0, 1, -1, 1]))


def test_build_head_by_name():
    distance = Cosine()
    head = build_head("prototypical", distance)
    assert isinstance(head, PrototypicalHead) and head.distance is distance
    assert isinstance(build_head("prototypical").distance, SquaredEuclidean)
    with pytest.raises(ValueError, match=r"unknown head 'relation'.*'matching'.*'prototypical'"):
        build_head("relation")
    with pytest.raises(ValueError, match=r"unknown options \['fce'\]; it takes none"):
        build_head("prototypical", fce=True)
