"""The inner loop: gradient steps on a task's support set, on parameters passed as a dict.

One step is phi = theta - lr * grad_theta L_support(theta), computed with
`torch.autograd.grad`. Second order (`first_order=False`) keeps the graph of the gradient
(`create_graph=True`), so the meta-gradient of a query loss through phi holds the Hessian
term: d L_query / d theta = (I - lr * H_support) grad_phi L_query for one step. First order
takes the gradient as a constant, which drops exactly that term: d L_query / d theta =
grad_phi L_query. A learned lr tensor (Meta-SGD) stays in the graph in both cases.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

if TYPE_CHECKING:  # learner.py imports gradient_step from here
    from fewshot_metric.meta.learner import Learner


def gradient_step(params: Mapping[str, torch.Tensor], loss: torch.Tensor,
                  lrs: Mapping[str, float | torch.Tensor], first_order: bool
                  ) -> dict[str, torch.Tensor]:
    """One step on the parameters named in `lrs` -> a new dict (the others as given).

    params: name -> tensor (any shape), loss: a 0-d tensor computed from them, lrs: name ->
    a float or a tensor broadcastable to that parameter (Meta-SGD: the parameter's shape).
    A parameter the loss does not depend on has gradient 0 and stays as it is.
    """
    if not loss.requires_grad:
        raise ValueError("the inner-loop loss has no autograd graph: compute it from the "
                         "learner's outputs, with gradients enabled (inside torch.no_grad(), "
                         "wrap the adaptation in torch.enable_grad())")
    names = list(lrs)
    grads = torch.autograd.grad(loss, [params[name] for name in names],
                                create_graph=not first_order, retain_graph=True,
                                allow_unused=True, materialize_grads=True)
    stepped = {name: params[name] - lrs[name] * grad
               for name, grad in zip(names, grads, strict=True)}
    return {**params, **stepped}


def check_steps(steps: object, key: str = "steps") -> int:
    """`steps` as an int; a ValueError naming `key` unless it is an integer >= 0."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"{key} must be a non-negative integer (inner-loop gradient steps per "
                         f"task), got {steps!r}")
    return steps


def inner_loop(learner: Learner, inputs: torch.Tensor, labels: torch.Tensor, steps: int
               ) -> Learner:
    """`steps` steps of cross-entropy on one task's support set, in place; -> `learner`.

    inputs [S, ...] (images, or features for a learner over a classifier), labels [S] int64
    in 0..n_way-1. steps = 0 leaves the learner at its initialisation.
    """
    for _ in range(check_steps(steps)):
        learner.adapt(F.cross_entropy(learner(inputs), labels))
    return learner
