"""Proto-MAML (Triantafillou et al. 2020): the linear classifier initialised from prototypes.

With prototypes c_k of the support embeddings, W_k = 2 c_k and b_k = -|c_k|^2 give
W_k . x + b_k = -|x - c_k|^2 + |x|^2: the Prototypical head's squared-Euclidean logits plus a
term that is the same for every class, so the same softmax. The inner loop then adapts this
classifier (and the backbone, if it adapts too). The initialisation is a function of the
support embeddings, so the meta-gradient also reaches the backbone through it.
Served through the store: the backbone's embeddings, like the Prototypical head.
"""

from __future__ import annotations

import torch

from fewshot_metric.heads.prototypical import PrototypicalHead


def prototype_init(support_emb: torch.Tensor, support_labels: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """support_emb [S, D], support_labels [S] in 0..n_way-1 -> (weight [n_way, D] = 2 c,
    bias [n_way] = -|c|^2) for a `LinearClassifier(n_way=None)`."""
    prototypes = PrototypicalHead.prototypes(support_emb, support_labels)
    return 2 * prototypes, -prototypes.pow(2).sum(1)
