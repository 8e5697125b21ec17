"""Prototypical networks (Snell et al. 2017): score queries against per-class mean embeddings."""

from __future__ import annotations

import torch

from fewshot_metric.heads import EpisodeHead


class PrototypicalHead(EpisodeHead):
    """Prototype c_k = mean of class k's support embeddings; logits[q, k] = distance.logits(q, c_k).

    With the default SquaredEuclidean (scale 1) that is -||q - c_k||^2. No parameters of its
    own; the distance may hold a learned scale.
    """

    @staticmethod
    def prototypes(support_emb: torch.Tensor, support_labels: torch.Tensor) -> torch.Tensor:
        """support_emb [S, D], support_labels [S] -> prototypes [n_way, D]."""
        members = EpisodeHead.class_mask(support_emb, support_labels).T.to(support_emb.dtype)
        return (members @ support_emb) / members.sum(1, keepdim=True)

    def episode_logits(self, support_emb: torch.Tensor, support_labels: torch.Tensor,
                       query_emb: torch.Tensor) -> torch.Tensor:
        """support_emb [S, D], support_labels [S], query_emb [Q, D] -> logits [Q, n_way]."""
        return self.distance.logits(query_emb, self.prototypes(support_emb, support_labels))
