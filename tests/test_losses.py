"""Losses: cross-entropy and contrastive loss worked by hand; pair mining's counts and labels."""

from __future__ import annotations

import math

import pytest
import torch

from fewshot_metric.losses import contrastive_loss, episode_cross_entropy, mine_pairs


def test_episode_cross_entropy_two_way_by_hand():
    logits = torch.tensor([[math.log(3.0), 0.0], [math.log(3.0), 0.0]])
    # softmax of (ln 3, 0) = (3/4, 1/4). Query 0 (label 0): -ln(3/4) = ln(4/3) = 0.28768;
    # query 1 (label 1): -ln(1/4) = ln 4 = 1.38629; mean = ln(16/3) / 2 = 0.83699.
    # argmax is class 0 for both, so query 0 is right and query 1 wrong: accuracy 1/2.
    loss, accuracy = episode_cross_entropy(logits, torch.tensor([0, 1]))
    torch.testing.assert_close(loss, torch.tensor(math.log(16.0 / 3.0) / 2.0))
    assert loss.item() == pytest.approx(0.83699, abs=1e-5)
    assert accuracy == 0.5 and isinstance(accuracy, float)


def test_episode_cross_entropy_errors():
    with pytest.raises(ValueError, match=r"lie in 0\.\.1"):
        episode_cross_entropy(torch.zeros(2, 2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="Q = len"):
        episode_cross_entropy(torch.zeros(3, 2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="int64"):
        episode_cross_entropy(torch.zeros(2, 2), torch.tensor([0.0, 1.0]))


def test_contrastive_loss_by_hand():
    # margin 2: L_i = 1/2 [y d^2 + (1 - y) max(0, 2 - d)^2]
    #   positive d = 3:            1/2 * 9             = 4.5
    #   positive d = 0:            0
    #   negative d = 0.5 (inside): 1/2 * (2 - 0.5)^2   = 1.125
    #   negative d = 2.5 (beyond): 1/2 * max(0, -0.5)^2 = 0
    # mean = (4.5 + 0 + 1.125 + 0) / 4 = 1.40625
    distance = torch.tensor([3.0, 0.0, 0.5, 2.5], requires_grad=True)
    same = torch.tensor([True, True, False, False])
    loss = contrastive_loss(distance, same, margin=2.0)
    torch.testing.assert_close(loss, torch.tensor(1.40625))
    # dL/dd_i = (y d - (1 - y) max(0, m - d)) / 4 = 3/4, 0, -1.5/4, 0
    loss.backward()
    torch.testing.assert_close(distance.grad, torch.tensor([0.75, 0.0, -0.375, 0.0]))
    torch.testing.assert_close(contrastive_loss(distance, same.float(), 2.0), loss)


def test_contrastive_loss_errors():
    with pytest.raises(ValueError, match="margin must be positive"):
        contrastive_loss(torch.ones(2), torch.ones(2), margin=0.0)
    with pytest.raises(ValueError, match="one entry per pair"):
        contrastive_loss(torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="True/False"):
        contrastive_loss(torch.ones(2), torch.tensor([0.5, 1.0]))


LABELS = torch.tensor([0, 0, 0, 1, 1, 2])
# Same-class pairs {a, b}, a < b: (0,1), (0,2), (1,2), (3,4); the other 15 - 4 = 11 are mixed.
POSITIVE_PAIRS = {(0, 1), (0, 2), (1, 2), (3, 4)}


@pytest.mark.parametrize(("fraction", "n_pairs", "n_positive"),
                         [(0.25, 40, 10), (0.5, 5, 3), (1 / 3, 9, 3), (0.0, 5, 0), (1.0, 5, 5)])
def test_mine_pairs_counts_and_labels(fraction, n_pairs, n_positive):
    # 0.25 * 40 = 10; 0.5 * 5 = 2.5 rounds up to 3 (not to even); 9 / 3 = 3
    idx_a, idx_b, same = mine_pairs(LABELS, fraction, n_pairs, torch.Generator().manual_seed(0))
    assert len(idx_a) == len(idx_b) == len(same) == n_pairs
    assert same.dtype == torch.bool and int(same.sum()) == n_positive
    assert same[:n_positive].all()  # positives come first
    assert (idx_a < idx_b).all()
    assert torch.equal(LABELS[idx_a] == LABELS[idx_b], same)


def test_mine_pairs_draws_every_pair_and_is_reproducible():
    idx_a, idx_b, same = mine_pairs(LABELS, 0.5, 400, torch.Generator().manual_seed(0))
    pairs = list(zip(idx_a.tolist(), idx_b.tolist(), strict=True))
    assert set(pairs[:200]) == POSITIVE_PAIRS
    assert len(set(pairs[200:])) == 11
    again = mine_pairs(LABELS, 0.5, 400, torch.Generator().manual_seed(0))
    assert all(torch.equal(x, y) for x, y in zip((idx_a, idx_b, same), again, strict=True))
    other = mine_pairs(LABELS, 0.5, 400, torch.Generator().manual_seed(1))
    assert not torch.equal(idx_a, other[0])


def test_mine_pairs_errors():
    singletons, one_class = torch.tensor([0, 1, 2]), torch.tensor([4, 4, 4])
    with pytest.raises(ValueError, match="no class has 2 or more examples"):
        mine_pairs(singletons, 0.5, 10)
    with pytest.raises(ValueError, match="fewer than 2 classes"):
        mine_pairs(one_class, 0.5, 10)
    assert not mine_pairs(singletons, 0.0, 10)[2].any()  # no same-class pair needed
    assert mine_pairs(one_class, 1.0, 10)[2].all()
    with pytest.raises(ValueError, match=r"positive_fraction must lie in \[0, 1\]"):
        mine_pairs(LABELS, 1.5, 10)
    with pytest.raises(ValueError, match="n_pairs must be a positive integer"):
        mine_pairs(LABELS, 0.5, 0)
