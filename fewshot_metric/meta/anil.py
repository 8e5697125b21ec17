"""ANIL (Raghu et al. 2020): the inner loop adapts the classifier only.

The backbone embeds the support and the query set once per task (per-task batch statistics,
like a learner's forward), and a learner over the classifier adapts on those features; the
outer loop still trains both, the backbone through the features. Cheaper than MAML by the
backbone's forward and backward at every inner step. Served through the store: the
backbone's embeddings.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fewshot_metric.meta.batch_norm import task_batch_norm
from fewshot_metric.meta.inner_loop import inner_loop
from fewshot_metric.meta.learner import Learner


def anil_logits(backbone: nn.Module, new_learner: Callable[[torch.Tensor, torch.Tensor], Learner],
                support: torch.Tensor, support_labels: torch.Tensor, query: torch.Tensor,
                steps: int) -> tuple[torch.Tensor, Learner]:
    """support [S, ...], support_labels [S], query [Q, ...] -> (query logits [Q, n_way], the
    adapted learner) after `steps` inner steps on the support features.

    new_learner(support_emb [S, D], support_labels [S]) -> a learner over the classifier:
    `lambda *_: MAML(classifier, lr).clone()`, or one initialised from the support set
    (Proto-MAML, `prototype_init`).
    """
    with task_batch_norm(backbone):
        support_emb, query_emb = backbone(support), backbone(query)
    learner = inner_loop(new_learner(support_emb, support_labels), support_emb, support_labels,
                         steps)
    return learner(query_emb), learner
