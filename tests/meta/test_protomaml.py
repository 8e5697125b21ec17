"""Proto-MAML: prototype-initialised classifier, Prototypical logits up to -|x|^2 per query."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fewshot_metric.heads import PrototypicalHead
from fewshot_metric.meta import MAML, LinearClassifier, MetaSGD, inner_loop, prototype_init

# Class 0: (0,0), (2,0) -> c_0 = (1,0). Class 1: (0,2), (0,4) -> c_1 = (0,3).
SUPPORT = torch.tensor([[0.0, 0.0], [0.0, 2.0], [2.0, 0.0], [0.0, 4.0]])
LABELS = torch.tensor([0, 1, 0, 1])
QUERY = torch.tensor([[1.0, 1.0], [0.0, 2.0]])


def test_prototype_init_is_twice_the_prototypes_and_minus_their_squared_norms():
    weight, bias = prototype_init(SUPPORT, LABELS)
    torch.testing.assert_close(weight, torch.tensor([[2.0, 0.0], [0.0, 6.0]]))
    torch.testing.assert_close(bias, torch.tensor([-1.0, -9.0]))


def test_initial_logits_are_the_prototypical_heads_plus_the_squared_query_norm():
    weight, bias = prototype_init(SUPPORT, LABELS)
    learner = MAML(LinearClassifier(2, None), lr=0.1).clone(init={"weight": weight,
                                                                   "bias": bias})
    logits = learner(QUERY)
    # (1,1): (2 - 1, 6 - 9) = (1, -3); (0,2): (0 - 1, 12 - 9) = (-1, 3)
    torch.testing.assert_close(logits, torch.tensor([[1.0, -3.0], [-1.0, 3.0]]))
    proto = PrototypicalHead()(SUPPORT, LABELS, QUERY)  # (-1, -5), (-5, -1)
    norms = QUERY.pow(2).sum(1, keepdim=True)  # 2, 4
    torch.testing.assert_close(logits - norms, proto)


def test_whole_network_adapts_from_the_prototypes_and_learns_through_them():
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(2, 3), LinearClassifier(3, None))
    maml = MAML(network, lr=0.1)
    assert maml.task_names == ["1.weight", "1.bias"] and not list(network[1].parameters())
    for n_way in (2, 3):  # tasks of any width: the classifier comes from each support set
        labels = torch.arange(n_way).repeat(2)
        support = torch.randn(2 * n_way, 2)
        weight, bias = prototype_init(network[0](support), labels)
        learner = inner_loop(maml.clone(init={"1.weight": weight, "1.bias": bias}),
                             support, labels, 2)
        assert learner(support).shape == (2 * n_way, n_way)
        assert not torch.equal(learner.params["0.weight"], network[0].weight)
        network.zero_grad()
        F.cross_entropy(learner(support), labels).backward()
        assert network[0].weight.grad.abs().sum() > 0


def test_meta_sgd_gives_per_task_parameters_a_scalar_lr():
    maml = MetaSGD(nn.Sequential(nn.Linear(2, 3), LinearClassifier(3, None)), lr=0.1)
    assert maml.lrs["0/weight"].shape == (3, 2) and maml.lrs["1/weight"].shape == ()


def test_clone_needs_exactly_the_per_task_parameters():
    maml = MAML(LinearClassifier(2, None), lr=0.1)
    with pytest.raises(ValueError, match=r"missing: \['bias', 'weight'\]"):
        maml.clone()
    with pytest.raises(ValueError, match=r"unknown: \['scale'\]"):
        maml.clone(init={"weight": torch.ones(2, 2), "bias": torch.zeros(2),
                         "scale": torch.ones(())})
    with pytest.raises(ValueError, match="has no weights of its own"):
        maml(SUPPORT)
