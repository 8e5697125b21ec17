"""Fast-adaptation heads: MAML (second or first order, Meta-SGD), ANIL, Proto-MAML, Reptile.

They keep the one episode contract (`EpisodeHead.episode_loss`: an episode's images -> loss
and query logits), here through an inner loop on the support set (`fewshot_metric.meta`),
so the one trainer, validation, eval, checkpoints, `--resume` and DDP serve them. They score
images, not precomputed embeddings: each task adapts from the support set and is normalised
with its own batch statistics (meta/batch_norm.py), in training and in evaluation. In
training the inner loop uses `inner_steps` / `inner_lr`, in eval mode (validation, `eval`)
`test_inner_steps` / `test_inner_lr`.

Options (recipe `model.head_kwargs`; a head takes only those its signature lists, others
are an error):
  n_way             outputs of the learned classifier; every task (train.n_way,
                    train.val_n_way, eval.n_way) must have that many ways (maml, anil,
                    reptile; protomaml builds its classifier from each support set)
  inner_steps       inner-loop gradient steps per training task, >= 0 (default 1)
  inner_lr          inner-loop step size in training, > 0 (default 0.4: Finn et al., Omniglot)
  test_inner_steps  steps for validation and eval (null: inner_steps)
  test_inner_lr     step size for validation and eval (null: inner_lr; not with meta_sgd,
                    whose learned step sizes are used)
  first_order       drop the second-order term of the meta-gradient (first-order MAML)
  meta_sgd          learn a step size per parameter entry (Li et al. 2017)
  adapt             "all", or names / prefixes of the parameters that adapt, among
                    backbone.* and classifier.* (e.g. "classifier", "backbone.network.3");
                    when only classifier.* adapts, the backbone embeds each set once
  embed_dim         the backbone's embedding width (build_model fills it in)

Served through the store: the backbone's embeddings compared with the model's metric, with
batch norm using the running statistics tracked during meta-training.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fewshot_metric.data import split_episode
from fewshot_metric.distances import Distance
from fewshot_metric.heads import EpisodeHead
from fewshot_metric.meta.anil import anil_logits
from fewshot_metric.meta.batch_norm import task_batch_norm
from fewshot_metric.meta.inner_loop import check_steps, inner_loop
from fewshot_metric.meta.learner import Learner
from fewshot_metric.meta.linear import LinearClassifier, TaskNetwork
from fewshot_metric.meta.maml import (
    adaptable_names,
    check_lr,
    clone_learner,
    meta_sgd_lrs,
    select_parameters,
    step_sizes,
)
from fewshot_metric.meta.protomaml import prototype_init
from fewshot_metric.meta.reptile import reptile_loss

Adapt = str | list[str]


class AdaptationHead(EpisodeHead):
    """Base of the heads that adapt per task; subclasses fix the algorithm and list their
    options. `distance`: the metric the store serves the backbone's embeddings with."""

    name = "adaptation"
    scores_images = True
    reptile = False  # meta-loss: Reptile's surrogate instead of the query cross-entropy

    def __init__(self, distance: Distance | None, embed_dim: int | None, n_way: int | None,
                 inner_steps: int, inner_lr: float, test_inner_steps: int | None,
                 test_inner_lr: float | None, first_order: bool, meta_sgd: bool,
                 adapt: Adapt):
        super().__init__(distance)
        if embed_dim is None:
            raise ValueError(f"head {self.name!r} needs embed_dim, the backbone's embedding "
                             "width: build the model with build_model, which sets it")
        self.inner_steps = check_steps(inner_steps, "inner_steps")
        self.inner_lr = check_lr(inner_lr, "inner_lr")
        self.test_inner_steps = (self.inner_steps if test_inner_steps is None
                                 else check_steps(test_inner_steps, "test_inner_steps"))
        if meta_sgd and test_inner_lr is not None:
            raise ValueError(f"head {self.name!r}: test_inner_lr does not apply with "
                             "meta_sgd: true (evaluation uses the learned step sizes); "
                             "remove test_inner_lr")
        self.test_inner_lr = (self.inner_lr if test_inner_lr is None
                              else check_lr(test_inner_lr, "test_inner_lr"))
        for key, value in (("first_order", first_order), ("meta_sgd", meta_sgd)):
            if not isinstance(value, bool):
                raise ValueError(f"head {self.name!r}: {key} must be true or false, got "
                                 f"{value!r}")
        if not (isinstance(adapt, str) or (isinstance(adapt, list) and adapt
                                           and all(isinstance(key, str) for key in adapt))):
            raise ValueError(f"head {self.name!r}: adapt must be \"all\", a parameter name or "
                             f"prefix (e.g. classifier), or a list of them; got {adapt!r}")
        self.first_order, self.meta_sgd, self.adapt = first_order, meta_sgd, adapt
        self.classifier = LinearClassifier(embed_dim, n_way)
        self.adapted: list[str] = []
        self.lrs: nn.ParameterDict | None = None

    def attach(self, backbone: nn.Module) -> None:
        """Resolves `adapt` against backbone.* and classifier.*; creates Meta-SGD's lrs."""
        network = TaskNetwork(backbone, self.classifier)
        self.adapted = select_parameters(adaptable_names(network),
                                         None if self.adapt == "all" else self.adapt)
        if self.meta_sgd:
            self.lrs = meta_sgd_lrs(network, self.adapted, self.inner_lr)

    @property
    def classifier_only(self) -> bool:
        """Whether only the classifier adapts (then the backbone embeds each set once)."""
        return all(name.startswith("classifier.") for name in self.adapted)

    def check_n_way(self, n_way: int, key: str) -> None:
        fixed = self.classifier.n_way
        if fixed is not None and n_way != fixed:
            raise ValueError(f"{key} is {n_way}, but head {self.name!r} has a {fixed}-way "
                             f"classifier (model.head_kwargs.n_way={fixed}): set {key} to "
                             f"{fixed}, or train a protomaml head, which works for any n_way")

    def task_init(self, support_emb: torch.Tensor, support_labels: torch.Tensor, prefix: str
                  ) -> dict[str, torch.Tensor]:
        """The per-task classifier (Proto-MAML: from the prototypes), names under `prefix`;
        {} for a learned classifier."""
        if self.classifier.n_way is not None:
            return {}
        weight, bias = prototype_init(support_emb, support_labels)
        return {f"{prefix}weight": weight, f"{prefix}bias": bias}

    def adapt_task(self, backbone: nn.Module, support: torch.Tensor,
                   support_labels: torch.Tensor, query: torch.Tensor
                   ) -> tuple[torch.Tensor, Learner]:
        """support [S, C, H, W], support_labels [S], query [Q, C, H, W] -> (query logits
        [Q, n_way], the adapted learner), with the train or test inner loop by mode."""
        steps, lr = ((self.inner_steps, self.inner_lr) if self.training
                     else (self.test_inner_steps, self.test_inner_lr))
        sizes = step_sizes(self.adapted, lr, self.lrs)
        # evaluation needs no meta-gradient: first order there gives the same logits, cheaper
        first_order = self.first_order or not self.training
        if self.classifier_only:
            head_sizes = {name.removeprefix("classifier."): size for name, size in sizes.items()}

            def new_learner(support_emb: torch.Tensor, labels: torch.Tensor) -> Learner:
                return clone_learner(self.classifier, head_sizes, first_order,
                                     self.task_init(support_emb, labels, ""))

            return anil_logits(backbone, new_learner, support, support_labels, query, steps)
        init = {}
        if self.classifier.n_way is None:
            with task_batch_norm(backbone):
                init = self.task_init(backbone(support), support_labels, "classifier.")
        network = TaskNetwork(backbone, self.classifier)
        learner = inner_loop(clone_learner(network, sizes, first_order, init), support,
                             support_labels, steps)
        return learner(query), learner

    def episode_loss(self, backbone: nn.Module, images: torch.Tensor, n_way: int, k_shot: int,
                     n_query: int) -> tuple[torch.Tensor, torch.Tensor]:
        """images [n_way * (k_shot + n_query), C, H, W] in episode layout -> (meta-loss [],
        query logits [n_way * n_query, n_way]). Gradients are on for the inner loop even
        under torch.no_grad (evaluation)."""
        self.check_n_way(n_way, "n_way")
        support, support_labels, query, query_labels = split_episode(images, n_way, k_shot,
                                                                     n_query)
        with torch.enable_grad():
            logits, learner = self.adapt_task(backbone, support, support_labels, query)
            loss = reptile_loss(learner) if self.reptile else F.cross_entropy(logits,
                                                                              query_labels)
        return loss, logits

    def episode_logits(self, support_emb: torch.Tensor, support_labels: torch.Tensor,
                       query_emb: torch.Tensor) -> torch.Tensor:
        raise TypeError(f"head {self.name!r} adapts on each episode's images, so it has no "
                        "logits for precomputed embeddings: use episode_loss (evaluation: "
                        "evaluate_dataset)")


def _required_n_way(name: str, n_way: int | None) -> int:
    if n_way is None:
        raise ValueError(f"head {name!r} needs model.head_kwargs.n_way, the number of classes "
                         "of its learned classifier (the n_way of its tasks)")
    return n_way


class MAMLHead(AdaptationHead):
    """MAML (Finn et al. 2017); `first_order`: first-order MAML; `meta_sgd`: Meta-SGD."""

    name = "maml"

    def __init__(self, distance: Distance | None = None, n_way: int | None = None,
                 inner_steps: int = 1, inner_lr: float = 0.4,
                 test_inner_steps: int | None = None, test_inner_lr: float | None = None,
                 first_order: bool = False, meta_sgd: bool = False, adapt: Adapt = "all",
                 embed_dim: int | None = None):
        super().__init__(distance, embed_dim, _required_n_way(self.name, n_way), inner_steps,
                         inner_lr, test_inner_steps, test_inner_lr, first_order, meta_sgd,
                         adapt)


class ANILHead(AdaptationHead):
    """ANIL (Raghu et al. 2020): MAML whose inner loop adapts the classifier only."""

    name = "anil"

    def __init__(self, distance: Distance | None = None, n_way: int | None = None,
                 inner_steps: int = 1, inner_lr: float = 0.4,
                 test_inner_steps: int | None = None, test_inner_lr: float | None = None,
                 first_order: bool = False, meta_sgd: bool = False,
                 embed_dim: int | None = None):
        super().__init__(distance, embed_dim, _required_n_way(self.name, n_way), inner_steps,
                         inner_lr, test_inner_steps, test_inner_lr, first_order, meta_sgd,
                         "classifier")


class ProtoMAMLHead(AdaptationHead):
    """Proto-MAML (Triantafillou et al. 2020): each task's classifier starts from its
    prototypes (W = 2c, b = -|c|^2), then adapts; any n_way."""

    name = "protomaml"

    def __init__(self, distance: Distance | None = None, inner_steps: int = 1,
                 inner_lr: float = 0.4, test_inner_steps: int | None = None,
                 test_inner_lr: float | None = None, first_order: bool = False,
                 meta_sgd: bool = False, adapt: Adapt = "all", embed_dim: int | None = None):
        super().__init__(distance, embed_dim, None, inner_steps, inner_lr, test_inner_steps,
                         test_inner_lr, first_order, meta_sgd, adapt)


class ReptileHead(AdaptationHead):
    """Reptile (Nichol et al. 2018): first-order inner loop on the support set, meta-loss
    0.5 |theta - phi|^2 (`reptile_loss`, the loss the run logs): with train.optimizer sgd,
    train.momentum 0 and train.lr epsilon each step is theta + epsilon (mean phi - theta).
    The queries only give the accuracy."""

    name = "reptile"
    reptile = True

    def __init__(self, distance: Distance | None = None, n_way: int | None = None,
                 inner_steps: int = 5, inner_lr: float = 0.4,
                 test_inner_steps: int | None = None, test_inner_lr: float | None = None,
                 adapt: Adapt = "all", embed_dim: int | None = None):
        super().__init__(distance, embed_dim, _required_n_way(self.name, n_way), inner_steps,
                         inner_lr, test_inner_steps, test_inner_lr, True, False, adapt)
