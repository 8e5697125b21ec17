"""Test-time fine-tuning of any checkpoint on each episode's support set (`eval --adapt-steps`).

The baselines of Chen et al. 2019 and Dhillon et al. 2020: a linear head on the backbone's
embeddings, initialised from the support prototypes as in Proto-MAML (W = 2c, b = -|c|^2,
`prototype_init`), takes `steps` plain gradient steps of support cross-entropy (the inner
loop of `meta.inner_loop`, first order: no meta-gradient is needed), then scores the
queries. The linear head replaces the checkpoint's own head (Prototypical, Matching,
Siamese: all give embeddings), so every model is compared on the same seeded episodes with
and without adaptation. With steps = 0 the predictions are the Prototypical head's with
squared Euclidean distance: 2c.x - |c|^2 = -|x - c|^2 + |x|^2, the same argmax.

what = "head": only the linear head adapts, on embeddings computed once (the fast path).
what = "all": the backbone adapts too, per episode, on the support images, through a
learner over backbone + head (functional, no copy: the checkpoint's weights never change).
Batch norm uses the checkpoint's running statistics throughout (eval mode, as in the
fine-tuning baselines): the network starts as exactly the function that was trained, and
steps = 0 gives the same predictions as what = "head". MAML-family heads already adapt
with their own inner loop and are not fine-tuned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.func import functional_call

from fewshot_metric.meta.inner_loop import check_steps, inner_loop
from fewshot_metric.meta.learner import Learner
from fewshot_metric.meta.linear import LinearClassifier, TaskNetwork
from fewshot_metric.meta.maml import adaptable_names, check_lr, clone_learner
from fewshot_metric.meta.protomaml import prototype_init

DEFAULT_LR = 0.01  # SGD step size of Chen et al. 2019's fine-tuning baseline
TARGETS = ("head", "all")


class RunningStatsLearner(Learner):
    """A learner whose forward keeps the module's own batch-norm mode (eval: running
    statistics) instead of per-task batch statistics."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return functional_call(self.module, self.params, args, kwargs)


@dataclass(frozen=True)
class FineTune:
    """steps >= 0 gradient steps of size lr > 0 on each support set; what: "head" or "all"."""

    steps: int
    lr: float = DEFAULT_LR
    what: str = "head"

    def __post_init__(self) -> None:
        check_steps(self.steps, "steps")
        check_lr(self.lr, "lr")
        if self.what not in TARGETS:
            raise ValueError(f"what must be one of {TARGETS} (the linear head alone, or the "
                             f"whole network), got {self.what!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        target = "linear head" if self.what == "head" else "whole network"
        return (f"{target} fine-tuned on each support set ({self.steps} steps, "
                f"lr {self.lr:g}, Proto-MAML init)")

    def check_head(self, head: nn.Module) -> None:
        """A ValueError for a checkpoint whose head adapts per task (the MAML family)."""
        if head.scores_images:
            raise ValueError(
                f"--adapt-steps does not apply to a {head.name!r} checkpoint: its head already "
                f"adapts on each support set with its own inner loop (test_inner_steps="
                f"{head.test_inner_steps}, test_inner_lr={head.test_inner_lr} in its "
                "model.head_kwargs); evaluate it without --adapt-steps/--adapt/--adapt-lr")

    def head_logits(self, support_emb: torch.Tensor, support_labels: torch.Tensor,
                    query_emb: torch.Tensor) -> torch.Tensor:
        """support_emb [S, D], support_labels [S], query_emb [Q, D] -> query logits
        [Q, n_way] of the fine-tuned linear head (no graph)."""
        weight, bias = prototype_init(support_emb.detach(), support_labels)
        classifier = LinearClassifier(support_emb.shape[1], None)
        with torch.enable_grad():
            learner = clone_learner(classifier, {"weight": self.lr, "bias": self.lr}, True,
                                    {"weight": weight, "bias": bias})
            learner = inner_loop(learner, support_emb.detach(), support_labels, self.steps)
            return learner(query_emb).detach()

    def network_logits(self, backbone: nn.Module, support: torch.Tensor,
                       support_labels: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """support [S, C, H, W], support_labels [S], query [Q, C, H, W] -> query logits
        [Q, n_way]; what = "all": backbone and head fine-tuned, "head": the head alone.
        The backbone runs in eval mode (running statistics), its weights unchanged."""
        was_training = backbone.training
        backbone.eval()
        try:
            with torch.no_grad():
                support_emb = backbone(support)
                if self.what == "head":
                    return self.head_logits(support_emb, support_labels, backbone(query))
            weight, bias = prototype_init(support_emb, support_labels)
            network = TaskNetwork(backbone, LinearClassifier(weight.shape[1], None))
            sizes = dict.fromkeys(adaptable_names(network), self.lr)
            with torch.enable_grad():
                start = clone_learner(network, sizes, True, {"classifier.weight": weight,
                                                             "classifier.bias": bias})
                learner = inner_loop(RunningStatsLearner(network, start.params, sizes, True),
                                     support, support_labels, self.steps)
                return learner(query).detach()
        finally:
            backbone.train(was_training)
