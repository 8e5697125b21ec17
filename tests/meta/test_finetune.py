"""Test-time fine-tuning (FineTune): the Proto-MAML head's gradient step in closed form,
0 steps = the Prototypical head, whole-network fine-tuning leaves the model as it was."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fewshot_metric.heads import PrototypicalHead
from fewshot_metric.meta import FineTune

# Class 0: (1,0), (-1,0) -> c_0 = (0,0). Class 1: (1,1), (1,-1) -> c_1 = (1,0).
SUPPORT = torch.tensor([[1.0, 0.0], [1.0, 1.0], [-1.0, 0.0], [1.0, -1.0]])
LABELS = torch.tensor([0, 1, 0, 1])
QUERY = torch.tensor([[0.5, 0.0], [2.0, 1.0]])


def test_one_step_is_the_closed_form_cross_entropy_step_of_a_linear_head():
    lr = 0.5
    # W = 2c = [[0, 0], [2, 0]], b = -|c|^2 = [0, -1]; support logits z = [0, 2 x_1 - 1]:
    # [0, 1], [0, 1], [0, -3], [0, 1]. With s = sigmoid(1), t = sigmoid(-3), P - Y is
    # [-s, s], [1 - s, s - 1], [-t, t], [1 - s, s - 1]; the mean loss's gradients are
    # dW = (P - Y)^T X / 4, db = column sums of (P - Y) / 4.
    s, t = 1 / (1 + math.exp(-1)), 1 / (1 + math.exp(3))
    residual = torch.tensor([[-s, s], [1 - s, s - 1], [-t, t], [1 - s, s - 1]])
    weight = torch.tensor([[0.0, 0.0], [2.0, 0.0]]) - lr * residual.T @ SUPPORT / 4
    bias = torch.tensor([0.0, -1.0]) - lr * residual.sum(0) / 4
    logits = FineTune(1, lr=lr).head_logits(SUPPORT, LABELS, QUERY)
    torch.testing.assert_close(logits, QUERY @ weight.T + bias)
    assert not logits.requires_grad


def test_zero_steps_are_the_prototypical_logits_up_to_the_squared_query_norm():
    torch.manual_seed(0)
    support, query = torch.randn(15, 8), torch.randn(20, 8)
    labels = torch.arange(5).repeat(3)
    logits = FineTune(0).head_logits(support, labels, query)
    proto = PrototypicalHead()(support, labels, query)  # -|q - c|^2
    torch.testing.assert_close(logits - query.pow(2).sum(1, keepdim=True), proto)
    assert torch.equal(logits.argmax(1), proto.argmax(1))


def test_steps_fix_a_support_point_the_prototypes_get_wrong():
    # class 0: (0,0), (4,0) -> c_0 = (2,0); class 1: (1,1) twice -> c_1 = (1,1). (0,0) is
    # closer to c_1 (2 against 4), but y = 0.5 separates the classes: descent must find it.
    support = torch.tensor([[0.0, 0.0], [1.0, 1.0], [4.0, 0.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 0, 1])
    before = FineTune(0).head_logits(support, labels, support)
    assert before.argmax(1).tolist() == [1, 1, 0, 1]
    after = FineTune(100, lr=0.1).head_logits(support, labels, support)
    assert after.argmax(1).tolist() == [0, 1, 0, 1]


def network() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_whole_network_fine_tuning_uses_running_statistics_and_changes_nothing():
    backbone = network()
    backbone(torch.randn(16, 1, 6, 6))  # running statistics away from their defaults
    state = {k: v.clone() for k, v in backbone.state_dict().items()}
    images = torch.randn(8, 1, 6, 6)
    support, query, labels = images[:4], images[4:], torch.tensor([0, 1, 0, 1])
    with torch.no_grad():  # as in evaluation
        head = FineTune(0).head_logits(backbone.eval()(support), labels, backbone(query))
        same = FineTune(0, what="all").network_logits(backbone.train(), support, labels, query)
        moved = FineTune(3, lr=0.5, what="all").network_logits(backbone, support, labels, query)
    torch.testing.assert_close(same, head)  # 0 steps: the checkpoint's function, eval mode
    assert not torch.allclose(moved, head)
    assert backbone.training  # its mode is restored
    for key, value in backbone.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("kwargs, message", [
    ({"steps": -1}, "steps must be a non-negative integer"),
    ({"steps": True}, "steps must be a non-negative integer"),
    ({"steps": 1, "lr": 0.0}, "lr must be a positive number"),
    ({"steps": 1, "what": "backbone"}, "what must be one of"),
])
def test_bad_settings_name_the_key(kwargs, message):
    with pytest.raises(ValueError, match=message):
        FineTune(**kwargs)
