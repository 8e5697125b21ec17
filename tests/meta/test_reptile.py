"""Reptile as a loss: one SGD step with lr epsilon is theta + epsilon (phi - theta)."""

from __future__ import annotations

import pytest
import torch
from test_maml import LR, SUPPORT_X, SUPPORT_Y, linear_model, squared_loss

from fewshot_metric.meta import MAML, LinearClassifier, reptile_loss


def adapted(maml: MAML, support_x: torch.Tensor, support_y: torch.Tensor):
    learner = maml.clone()
    learner.adapt(squared_loss(learner(support_x), support_y))
    return learner


def test_sgd_on_the_reptile_loss_is_the_interpolation():
    model = linear_model()
    maml = MAML(model, lr=LR, first_order=True)
    learner = adapted(maml, SUPPORT_X, SUPPORT_Y)  # phi = (-0.5, 0), see test_maml
    loss = reptile_loss(learner)
    torch.testing.assert_close(loss.item(), 0.5 * (1.5 ** 2 + 2.0 ** 2))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss.backward()
    optimizer.step()
    # theta + 0.1 (phi - theta) = (1, 2) + 0.1 * (-1.5, -2) = (0.85, 1.8)
    torch.testing.assert_close(model.weight.detach(),
                               torch.tensor([[0.85, 1.8]], dtype=torch.float64))


def test_a_meta_batch_moves_towards_the_mean_of_the_adapted_weights():
    model = linear_model()
    theta = model.weight.detach().clone()
    maml = MAML(model, lr=LR, first_order=True)
    tasks = [(SUPPORT_X, SUPPORT_Y), (SUPPORT_X.flip(0), SUPPORT_Y + 1)]
    learners = [adapted(maml, x, y) for x, y in tasks]
    mean_phi = torch.stack([learner.params["weight"].detach() for learner in learners]).mean(0)
    torch.stack([reptile_loss(learner) for learner in learners]).mean().backward()
    torch.optim.SGD(model.parameters(), lr=0.3).step()
    torch.testing.assert_close(model.weight.detach(), theta + 0.3 * (mean_phi - theta))


def test_a_learner_without_adapted_module_parameters_is_refused():
    maml = MAML(LinearClassifier(2, None), lr=LR)
    learner = maml.clone(init={"weight": torch.ones(3, 2), "bias": torch.zeros(3)})
    with pytest.raises(ValueError, match="reptile_loss needs adapted parameters"):
        reptile_loss(learner)
