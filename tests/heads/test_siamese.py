"""SiameseHead: pair distances and nearest-support episode logits, worked by hand."""

from __future__ import annotations

import math

import pytest
import torch

from fewshot_metric.distances import Cosine, SquaredEuclidean
from fewshot_metric.heads import SiameseHead, build_head


def test_pair_distance_is_euclidean():
    emb_a = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    emb_b = torch.tensor([[3.0, 4.0], [1.0, 1.0]])
    # sqrt(9 + 16 + eps) = 5;  equal points: sqrt(0 + 1e-8) = 1e-4
    torch.testing.assert_close(SiameseHead()(emb_a, emb_b), torch.tensor([5.0, 1e-4]))


def test_pair_distance_with_cosine():
    # (1,0) vs (1,1): cos = 1/sqrt(2) -> 1 - 0.70711 = 0.29289; (1,0) vs (-2,0): 1 - (-1) = 2
    emb_a = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    emb_b = torch.tensor([[1.0, 1.0], [-2.0, 0.0]])
    torch.testing.assert_close(SiameseHead(Cosine())(emb_a, emb_b),
                               torch.tensor([1.0 - 1.0 / math.sqrt(2.0), 2.0]))


def test_episode_logits_take_the_closest_support_of_each_class():
    support = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 3.0], [5.0, 5.0]])
    labels = torch.tensor([0, 0, 1, 1])
    query = torch.tensor([[1.0, 1.0], [4.0, 4.0]])
    # (1,1): squared distances 2, 2 (class 0) and 1+4 = 5, 16+16 = 32 (class 1) -> -2, -5
    # (4,4): 16+16 = 32, 4+16 = 20 (class 0) and 16+1 = 17, 1+1 = 2 (class 1) -> -20, -2
    logits = SiameseHead(SquaredEuclidean()).episode_logits(support, labels, query)
    torch.testing.assert_close(logits, torch.tensor([[-2.0, -5.0], [-20.0, -2.0]]))


def test_episode_gradient_reaches_only_the_closest_support():
    support = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], requires_grad=True)
    labels = torch.tensor([0, 0, 1])
    query = torch.tensor([[1.0, 0.0]])
    # class 0: (0,0) at 1 beats (3,0) at 4, so (3,0) gets no gradient
    SiameseHead().episode_logits(support, labels, query)[0, 0].backward()
    assert support.grad[0].abs().sum() > 0
    assert support.grad[1:].abs().sum() == 0


def test_build_head_siamese():
    distance = Cosine()
    head = build_head("siamese", distance)
    assert isinstance(head, SiameseHead) and head.distance is distance
    with pytest.raises(ValueError, match="same shape"):
        head(torch.zeros(3, 2), torch.zeros(2, 2))
