"""MAML / first-order MAML / Meta-SGD on a tiny linear model, against closed forms worked by
hand, and against finite differences on a small nonlinear model (float64)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fewshot_metric.meta import MAML, LinearClassifier, MetaSGD, inner_loop

# Model f(x) = theta . x with theta = (1, 2); loss L(theta) = 0.5 * sum_i (theta . x_i - y_i)^2.
SUPPORT_X = torch.tensor([[1.0, 1.0], [0.0, 1.0]], dtype=torch.float64)
SUPPORT_Y = torch.tensor([0.0, 1.0], dtype=torch.float64)
QUERY_X = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
QUERY_Y = torch.tensor([0.0], dtype=torch.float64)
LR = 0.5


def linear_model() -> nn.Linear:
    model = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    return model


def squared_loss(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return 0.5 * (outputs.squeeze(1) - targets).pow(2).sum()


def meta_gradient(maml: MAML) -> torch.Tensor:
    """Query loss after one inner step, backpropagated -> d L_query / d theta [1, 2]."""
    learner = maml.clone()
    learner.adapt(squared_loss(learner(SUPPORT_X), SUPPORT_Y))
    squared_loss(learner(QUERY_X), QUERY_Y).backward()
    return maml.module.weight.grad


def test_one_inner_step_equals_the_closed_form():
    model = linear_model()
    learner = MAML(model, lr=LR).clone()
    assert learner.params["weight"] is model.weight  # the module's own tensor: no copy
    learner.adapt(squared_loss(learner(SUPPORT_X), SUPPORT_Y))
    # predictions (3, 2), residuals (3, 1), gradient X^T r = (3, 4);
    # phi = (1, 2) - 0.5 * (3, 4) = (-0.5, 0)
    torch.testing.assert_close(learner.params["weight"],
                               torch.tensor([[-0.5, 0.0]], dtype=torch.float64))
    torch.testing.assert_close(model.weight.detach(),
                               torch.tensor([[1.0, 2.0]], dtype=torch.float64))
    torch.testing.assert_close(learner(QUERY_X), torch.tensor([[-0.5]], dtype=torch.float64))


def test_second_order_and_first_order_meta_gradients_equal_their_closed_forms():
    # grad_phi L_query = x_q (x_q . phi - y_q) = (1, 1) * (-0.5) = (-0.5, -0.5).
    # Hessian of the support loss H = X^T X = [[1, 1], [1, 2]].
    # Second order: (I - 0.5 H) grad_phi = [[0.5, -0.5], [-0.5, 0]] (-0.5, -0.5) = (0, 0.25).
    # First order: grad_phi = (-0.5, -0.5). The difference -0.5 H grad_phi = (0.5, 0.75).
    second = meta_gradient(MAML(linear_model(), lr=LR))
    first = meta_gradient(MAML(linear_model(), lr=LR, first_order=True))
    torch.testing.assert_close(second, torch.tensor([[0.0, 0.25]], dtype=torch.float64))
    torch.testing.assert_close(first, torch.tensor([[-0.5, -0.5]], dtype=torch.float64))
    torch.testing.assert_close(second - first, torch.tensor([[0.5, 0.75]], dtype=torch.float64))


def test_meta_sgd_learned_lr_gets_the_gradient_of_the_query_loss():
    # phi = theta - alpha * g, so d L_query / d alpha = -g * grad_phi = -(3, 4) * (-0.5, -0.5)
    # = (1.5, 2); with alpha = 0.5 everywhere theta's gradient is MAML's (0, 0.25).
    for maml in (MetaSGD(linear_model(), lr=LR), MAML(linear_model(), lr=LR, meta_sgd=True),
                 MetaSGD(linear_model(), lr=LR, first_order=True)):
        theta_grad = meta_gradient(maml)
        assert list(maml.lrs) == ["weight"]
        torch.testing.assert_close(maml.lrs["weight"].grad,
                                   torch.tensor([[1.5, 2.0]], dtype=torch.float64))
        expected = [[-0.5, -0.5]] if maml.first_order else [[0.0, 0.25]]
        torch.testing.assert_close(theta_grad, torch.tensor(expected, dtype=torch.float64))


def small_network() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Tanh(),
                         LinearClassifier(4, 3)).double()


def task_data() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(1)
    support = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    query = torch.randn(9, 3, generator=gen, dtype=torch.float64)
    return support, torch.arange(3).repeat(2), query, torch.arange(3).repeat(3)


def query_loss(maml: MAML, steps: int = 2) -> torch.Tensor:
    support, support_labels, query, query_labels = task_data()
    learner = inner_loop(maml.clone(), support, support_labels, steps)
    return F.cross_entropy(learner(query), query_labels)


def test_second_order_meta_gradient_matches_finite_differences():
    network = small_network()
    with torch.no_grad():  # a classifier away from zero, so every entry has a gradient
        network[3].weight.copy_(torch.randn(3, 4, generator=torch.Generator().manual_seed(2)))
    maml = MAML(network, lr=0.3)
    params = list(network.parameters())
    analytic = torch.cat([g.flatten() for g in torch.autograd.grad(query_loss(maml), params)])
    first = MAML(network, lr=0.3, first_order=True)
    first_order = torch.cat([g.flatten() for g in torch.autograd.grad(query_loss(first),
                                                                       params)])
    flat = nn.utils.parameters_to_vector(params).detach()
    eps = 1e-6
    numeric = torch.empty_like(flat)
    for i in range(len(flat)):
        values = []
        for sign in (1, -1):
            shifted = flat.clone()
            shifted[i] += sign * eps
            with torch.no_grad():
                nn.utils.vector_to_parameters(shifted, params)
            values.append(query_loss(maml).item())
        numeric[i] = (values[0] - values[1]) / (2 * eps)
    with torch.no_grad():
        nn.utils.vector_to_parameters(flat, params)
    torch.testing.assert_close(analytic, numeric, rtol=1e-5, atol=1e-8)
    assert not torch.allclose(first_order, numeric, rtol=1e-3, atol=1e-5)  # a real difference


def test_adapt_picks_parameters_by_name_or_prefix():
    network = small_network()
    before = {name: p.detach().clone() for name, p in network.named_parameters()}
    maml = MAML(network, lr=0.5, adapt=["3", "1.bias"])
    assert maml.adapted == ["1.bias", "3.weight", "3.bias"]
    support, support_labels, _, _ = task_data()
    learner = inner_loop(maml.clone(), support, support_labels, 1)
    assert sorted(learner.params) == ["1.bias", "3.bias", "3.weight"]
    assert not torch.equal(learner.params["3.weight"], before["3.weight"])
    for name, p in network.named_parameters():  # the module itself never changes
        assert torch.equal(p, before[name]), name


def test_zero_steps_leave_the_learner_at_the_initialisation():
    network = small_network()
    support, support_labels, query, _ = task_data()
    learner = inner_loop(MAML(network, lr=0.5).clone(), support, support_labels, 0)
    torch.testing.assert_close(learner(query), network(query))


@pytest.mark.parametrize("lr", [0, -0.1, math.nan, math.inf, True, "0.1"])
def test_inner_lr_must_be_positive(lr):
    with pytest.raises(ValueError, match="lr must be a positive number"):
        MAML(linear_model(), lr=lr)


@pytest.mark.parametrize("steps", [-1, 1.5, True])
def test_steps_must_be_a_non_negative_integer(steps):
    learner = MAML(linear_model(), lr=LR).clone()
    with pytest.raises(ValueError, match=f"steps must be a non-negative integer.*{steps!r}"):
        inner_loop(learner, SUPPORT_X, SUPPORT_Y.long(), steps)


def test_unknown_adapted_parameter_names_are_named():
    with pytest.raises(ValueError, match=r"adapt: 'classifer' names no parameter.*\['0', '1', "
                                         r"'3'\]"):
        MAML(small_network(), lr=0.5, adapt=["3", "classifer"])


def test_a_loss_without_graph_is_explained():
    learner = MAML(linear_model(), lr=LR).clone()
    with torch.no_grad():
        loss = squared_loss(learner(SUPPORT_X), SUPPORT_Y)
    with pytest.raises(ValueError, match="torch.enable_grad"):
        learner.adapt(loss)


def test_frozen_parameters_still_adapt_in_the_inner_loop():
    model = linear_model().requires_grad_(False)
    learner = MAML(model, lr=LR).clone()
    learner.adapt(squared_loss(learner(SUPPORT_X), SUPPORT_Y))
    torch.testing.assert_close(learner.params["weight"],
                               torch.tensor([[-0.5, 0.0]], dtype=torch.float64))
