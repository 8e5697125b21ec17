"""Siamese head (Hadsell et al. 2006, Koch et al. 2015): pair distances, nearest-support logits."""

from __future__ import annotations

import torch

from fewshot_metric.heads import EpisodeHead


class SiameseHead(EpisodeHead):
    """Trained on pairs, used on episodes by one-shot verification against every support.

    `forward(emb_a [N, D], emb_b [N, D]) -> [N]` is `distance.pair_distance`, smaller = same
    class (Euclidean sqrt(||a - b||^2 + eps) for SquaredEuclidean, 1 - cos for Cosine), the
    input of `contrastive_loss`. `episode_logits` scores each class by its closest support:
    logits[q, k] = max over supports j of class k of distance.logits(q, s_j).
    """

    def forward(self, emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
        """emb_a [N, D], emb_b [N, D] (row i is pair i) -> pair distances [N]."""
        return self.distance.pair_distance(emb_a, emb_b)

    def episode_logits(self, support_emb: torch.Tensor, support_labels: torch.Tensor,
                       query_emb: torch.Tensor) -> torch.Tensor:
        """support_emb [S, D], support_labels [S], query_emb [Q, D] -> logits [Q, n_way]."""
        members = self.class_mask(support_emb, support_labels)  # [S, n_way]
        per_support = self.distance.logits(query_emb, support_emb)  # [Q, S]
        per_class = per_support.unsqueeze(2).masked_fill(~members, float("-inf"))
        return per_class.amax(1)
