"""LinearClassifier: the output layer the inner loop adapts, learned or given per task; and
TaskNetwork, a backbone with one on top: the network a task adapts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class LinearClassifier(nn.Module):
    """features [B, D] -> logits [B, n_way] = features @ weight.T + bias.

    `n_way` an int: a learned initialisation weight [n_way, D], bias [n_way], meta-learned by
    the outer loop (MAML, ANIL, Reptile); both start at zero, as episode labels are an
    arbitrary order of the classes, so no class should start ahead.
    `n_way=None`: no weights of its own (nothing in the state dict); every task provides them
    through `MAML.clone(init=...)`, e.g. from the support prototypes (`prototype_init`,
    Proto-MAML), so tasks may have any number of ways.
    """

    def __init__(self, embed_dim: int, n_way: int | None):
        super().__init__()
        for key, value in (("embed_dim", embed_dim), ("n_way", n_way)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                      or value < 1):
                raise ValueError(f"LinearClassifier {key} must be a positive integer, got "
                                 f"{value!r}")
        self.embed_dim, self.n_way = embed_dim, n_way
        if n_way is None:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        else:
            self.weight = nn.Parameter(torch.zeros(n_way, embed_dim))
            self.bias = nn.Parameter(torch.zeros(n_way))

    def task_parameters(self) -> tuple[str, ...]:
        """Names of the parameters each task must provide (`MAML.clone(init=...)`)."""
        return ("weight", "bias") if self.n_way is None else ()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [B, D] -> logits [B, n_way]."""
        if self.weight is None:
            raise ValueError("LinearClassifier(n_way=None) has no weights of its own: run it "
                             "through a learner, MAML(...).clone(init={'<name>.weight': W, "
                             "'<name>.bias': b}), e.g. with prototype_init(support_emb, "
                             "support_labels)")
        return F.linear(features, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, n_way={self.n_way}"


class TaskNetwork(nn.Module):
    """backbone + classifier: images [B, C, H, W] -> logits [B, n_way]. Built per task around
    the given modules (no copy), for a learner to run with adapted parameters; its parameter
    names start with "backbone." and "classifier."."""

    def __init__(self, backbone: nn.Module, classifier: LinearClassifier):
        super().__init__()
        self.backbone = backbone
        self.classifier = classifier

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.backbone(images))
