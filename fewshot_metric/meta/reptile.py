"""Reptile (Nichol et al. 2018): move the initialisation towards the task-adapted weights.

The update theta <- theta + epsilon (phi - theta), phi the weights after the inner loop,
is a plain gradient step on the surrogate 0.5 |theta - phi|^2 with phi held constant: its
gradient is theta - phi, so SGD with lr epsilon gives exactly theta + epsilon (phi - theta),
and a mean over a meta-batch of tasks moves towards the mean of their phi. Expressed as a
loss, Reptile trains in the same trainer, with the same optimizers, as every other method.
The inner loop needs no second-order terms: adapt with `first_order=True`.
"""

from __future__ import annotations

import torch

from fewshot_metric.meta.learner import Learner


def reptile_loss(learner: Learner) -> torch.Tensor:
    """0.5 * sum over the module's adapted parameters theta of |theta - phi.detach()|^2,
    phi the learner's adapted values -> a 0-d tensor (parameters given per task, with no
    theta, are left out)."""
    own = dict(learner.module.named_parameters())
    terms = [(own[name] - learner.params[name].detach()).pow(2).sum()
             for name in learner.lrs if name in own]
    if not terms:
        raise ValueError("reptile_loss needs adapted parameters of the module itself (the "
                         "learner adapts only per-task ones); adapt the module's parameters")
    return 0.5 * torch.stack(terms).sum()
