"""MAML (Finn et al. 2017), first-order MAML and Meta-SGD (Li et al. 2017), learn2learn style.

    maml = MAML(model, lr=0.4, first_order=False)
    learner = maml.clone()                                 # no copy of model
    learner.adapt(F.cross_entropy(learner(support), support_labels))   # one inner step
    F.cross_entropy(learner(query), query_labels).backward()  # meta-gradient into model

`adapt` picks the parameters the inner loop changes: all of them (None), or names and
prefixes of names (`adapt=["classifier"]`); the others are used as they are. ANIL (Raghu et
al. 2020) is MAML wrapped around the classifier alone, fed with the backbone's features
(`anil_logits`). `meta_sgd=True` (or `MetaSGD`) learns one inner lr per parameter
entry, a parameter of this module (`lrs`), initialised to `lr`. Forward passes use per-task
batch statistics (`meta.batch_norm`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from fewshot_metric.meta.learner import Learner
from fewshot_metric.meta.linear import LinearClassifier


def _differentiable(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor`, or a leaf copy that requires grad when it does not (a frozen parameter)."""
    return tensor if tensor.requires_grad else tensor.detach().requires_grad_()


def task_parameter_names(module: nn.Module) -> list[str]:
    """Dotted names of the parameters each task provides (`LinearClassifier(n_way=None)`)."""
    return [f"{prefix}.{name}" if prefix else name
            for prefix, sub in module.named_modules() if isinstance(sub, LinearClassifier)
            for name in sub.task_parameters()]


def adaptable_names(module: nn.Module) -> list[str]:
    """Every parameter name a learner over `module` can adapt: the module's own, then those
    each task provides (`task_parameter_names`)."""
    return [*(name for name, _ in module.named_parameters()), *task_parameter_names(module)]


def select_parameters(available: Sequence[str], adapt: str | Sequence[str] | None
                      ) -> list[str]:
    """The names in `available` that `adapt` picks: all for None, else each entry's exact
    name or every name under it as a prefix ("classifier" -> "classifier.weight", ...)."""
    if adapt is None:
        return list(available)
    keys = [adapt] if isinstance(adapt, str) else list(adapt)
    chosen: set[str] = set()
    for key in keys:
        hits = {name for name in available if name == key or name.startswith(f"{key}.")}
        if not hits:
            tops = sorted({name.split(".")[0] for name in available})
            raise ValueError(f"adapt: {key!r} names no parameter of the module; give parameter "
                             f"names or their prefixes (top-level ones: {tops})")
        chosen |= hits
    return [name for name in available if name in chosen]


def meta_sgd_lrs(module: nn.Module, adapted: Sequence[str], lr: float) -> nn.ParameterDict:
    """Meta-SGD's learned inner lrs, all `lr` at the start: one per entry of each adapted
    parameter of `module`, a scalar for a per-task one. Keys: the names with "/" for "."."""
    own = dict(module.named_parameters())
    return nn.ParameterDict({
        name.replace(".", "/"): nn.Parameter(
            torch.full_like(own[name], lr) if name in own else torch.tensor(float(lr)))
        for name in adapted})


def step_sizes(adapted: Sequence[str], lr: float, lrs: nn.ParameterDict | None
               ) -> dict[str, float | torch.Tensor]:
    """name -> inner step size of each adapted parameter: `lr`, or its Meta-SGD `lrs` entry."""
    return {name: lrs[name.replace(".", "/")] if lrs is not None else lr for name in adapted}


def clone_learner(module: nn.Module, steps: Mapping[str, float | torch.Tensor],
                  first_order: bool, init: Mapping[str, torch.Tensor] | None = None
                  ) -> Learner:
    """A learner over `module` at its initialisation; `steps`: name -> step size of each
    parameter that adapts (`step_sizes`); `init`: a tensor for each per-task parameter
    (`task_parameter_names`), e.g. {"classifier.weight": W, "classifier.bias": b}."""
    init = dict(init or {})
    task_names = task_parameter_names(module)
    unknown = sorted(set(init) - set(task_names))
    missing = sorted(set(task_names) - set(init))
    if unknown or missing:
        raise ValueError(f"clone(init=...) must give exactly the per-task parameters "
                         f"{task_names} (those of LinearClassifier(n_way=None)); "
                         f"unknown: {unknown}, missing: {missing}")
    params = {**dict(module.named_parameters()), **init}
    adapted = {name: _differentiable(params[name]) for name in steps}
    return Learner(module, {**init, **adapted}, steps, first_order)


def check_lr(lr: Any, key: str = "lr") -> float:
    """`lr` as a float; a ValueError naming `key` unless it is a finite number > 0."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (
            math.isfinite(lr) and lr > 0):
        raise ValueError(f"{key} must be a positive number (the inner-loop step size), got "
                         f"{lr!r}")
    return float(lr)


class MAML(nn.Module):
    """Wraps `module` for fast adaptation; `clone()` -> a `Learner` for one task.

    lr > 0: inner-loop step size (Meta-SGD: the initial value of every learned lr).
    first_order: drop the second-order term of the meta-gradient (first-order MAML).
    adapt: None (every parameter) or names / prefixes of the parameters that adapt.
    meta_sgd: learn a per-entry inner lr for each adapted parameter (a scalar for parameters
    given per task, whose shape may change from task to task).
    """

    def __init__(self, module: nn.Module, lr: float, first_order: bool = False,
                 adapt: str | Sequence[str] | None = None, meta_sgd: bool = False):
        super().__init__()
        self.lr = check_lr(lr)
        self.module = module
        self.first_order, self.meta_sgd = bool(first_order), bool(meta_sgd)
        self.task_names = task_parameter_names(module)
        self.adapted = select_parameters(
            [*(name for name, _ in module.named_parameters()), *self.task_names], adapt)
        self.lrs = meta_sgd_lrs(module, self.adapted, self.lr) if self.meta_sgd else None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The wrapped module at its initialisation (no adaptation)."""
        return self.module(*args, **kwargs)

    def clone(self, init: Mapping[str, torch.Tensor] | None = None) -> Learner:
        """A learner at the initialisation; `init`: a tensor for each per-task parameter
        (`task_names`), e.g. {"classifier.weight": W, "classifier.bias": b}."""
        return clone_learner(self.module, step_sizes(self.adapted, self.lr, self.lrs),
                             self.first_order, init)


class MetaSGD(MAML):
    """MAML with learned per-parameter inner learning rates (Li et al. 2017)."""

    def __init__(self, module: nn.Module, lr: float, first_order: bool = False,
                 adapt: str | Sequence[str] | None = None):
        super().__init__(module, lr, first_order, adapt, meta_sgd=True)
