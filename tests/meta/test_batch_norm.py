"""Per-task batch statistics in the inner loop: used in both modes, tracked only in training."""

from __future__ import annotations

import torch
from torch import nn

from fewshot_metric.meta import MAML, task_batch_norm

X = torch.tensor([[1.0], [3.0]])  # batch mean 2, biased variance 1, unbiased variance 2


def test_eval_mode_uses_batch_statistics_and_leaves_running_ones_untouched():
    norm = nn.BatchNorm1d(1).eval()
    learner = MAML(norm, lr=0.1).clone()
    # (x - 2) / sqrt(1 + eps), weight 1, bias 0
    torch.testing.assert_close(learner(X), torch.tensor([[-1.0], [1.0]]), rtol=0, atol=1e-4)
    assert norm.running_mean.item() == 0.0 and norm.running_var.item() == 1.0
    assert norm.num_batches_tracked.item() == 0
    assert not norm.training and norm.track_running_stats  # restored after the call
    torch.testing.assert_close(norm(X), X / (1 + norm.eps) ** 0.5)  # plain eval: running stats


def test_train_mode_tracks_running_statistics_for_serving():
    norm = nn.BatchNorm1d(1)
    with task_batch_norm(norm):
        torch.testing.assert_close(norm(X), torch.tensor([[-1.0], [1.0]]), rtol=0, atol=1e-4)
    # momentum 0.1: mean 0.9 * 0 + 0.1 * 2 = 0.2, variance 0.9 * 1 + 0.1 * 2 = 1.1
    torch.testing.assert_close(norm.running_mean, torch.tensor([0.2]))
    torch.testing.assert_close(norm.running_var, torch.tensor([1.1]))
    assert norm.training


def test_modes_are_restored_when_the_forward_fails():
    network = nn.Sequential(nn.BatchNorm1d(1), nn.Linear(2, 1)).eval()
    try:
        with task_batch_norm(network):
            network(X)  # [2, 1] into Linear(2, 1): a shape error
    except RuntimeError:
        pass
    assert not network[0].training and network[0].track_running_stats
