"""ANIL: the classifier adapts on features computed once; the backbone is not touched."""

from __future__ import annotations

import torch
from torch import nn

from fewshot_metric.meta import MAML, LinearClassifier, anil_logits, inner_loop

FEATURES = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
LABELS = torch.tensor([0, 1])


def test_one_step_of_a_zero_classifier_equals_the_closed_form():
    # At zero weights every class has p = 1/2. Mean cross-entropy gradient (P - Y)^T F / S:
    # class 0: (-0.5 (1, 0) + 0.5 (0, 2)) / 2 = (-0.25, 0.5), class 1 its negative; the bias
    # gradient sum(P - Y) / S = 0. With lr 1: W = [[0.25, -0.5], [-0.25, 0.5]], b = 0.
    learner = inner_loop(MAML(LinearClassifier(2, 2), lr=1.0).clone(), FEATURES, LABELS, 1)
    torch.testing.assert_close(learner.params["weight"],
                               torch.tensor([[0.25, -0.5], [-0.25, 0.5]]))
    torch.testing.assert_close(learner.params["bias"], torch.zeros(2))


def test_backbone_runs_once_per_set_and_is_untouched_by_the_inner_loop():
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.ReLU())
    head = MAML(LinearClassifier(4, 2), lr=0.5)
    calls = []
    backbone.register_forward_hook(lambda module, inputs, output: calls.append(len(inputs[0])))
    before = {name: p.detach().clone() for name, p in backbone.named_parameters()}
    support, query = torch.randn(4, 3), torch.randn(6, 3)
    logits, learner = anil_logits(backbone, lambda *_: head.clone(), support,
                                  torch.tensor([0, 1, 0, 1]), query, steps=3)
    assert calls == [4, 6]  # support once, query once, whatever the number of inner steps
    assert sorted(learner.params) == ["bias", "weight"]
    assert not torch.equal(learner.params["weight"], head.module.weight)
    for name, p in backbone.named_parameters():
        assert torch.equal(p, before[name]), name
    # the outer loop trains both: the query loss reaches the backbone through the features
    nn.functional.cross_entropy(logits, torch.tensor([0, 1, 0, 1, 0, 1])).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in backbone.parameters())
    assert head.module.weight.grad.abs().sum() > 0
