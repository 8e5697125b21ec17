"""Learner: one task's view of a module, with its own adapted parameters (no copy of the module).

`MAML.clone()` makes one. `learner(x)` runs the module through `torch.func.functional_call`
with the learner's parameters in place of the module's, and `learner.adapt(loss)` takes one
inner-loop step (`gradient_step`), replacing the parameter dict. The module itself, its
parameters and its buffers are never copied or changed, so the query loss of an adapted
learner backpropagates to the module's parameters (the meta-gradient). Forward passes use
per-task batch statistics (`task_batch_norm`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from fewshot_metric.meta.batch_norm import task_batch_norm
from fewshot_metric.meta.inner_loop import gradient_step


class Learner:
    """`module` run with `params` (name -> tensor: the adapted parameters and any parameters
    given per task); `lrs` (name -> float, or tensor for Meta-SGD) names the ones that adapt.
    """

    def __init__(self, module: nn.Module, params: Mapping[str, torch.Tensor],
                 lrs: Mapping[str, float | torch.Tensor], first_order: bool):
        self.module = module
        self.params = dict(params)
        self.lrs = dict(lrs)
        self.first_order = first_order

    def adapt(self, loss: torch.Tensor) -> None:
        """One gradient step of every adapted parameter on `loss` (a 0-d tensor computed
        from this learner's outputs)."""
        self.params = gradient_step(self.params, loss, self.lrs, self.first_order)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The module's forward with this learner's parameters."""
        with task_batch_norm(self.module):
            return functional_call(self.module, self.params, args, kwargs)
