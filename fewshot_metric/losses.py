"""Training losses: episode cross-entropy, the contrastive pair loss and the pair mining for it."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _check_integer_labels(labels: torch.Tensor, what: str) -> None:
    if labels.dim() != 1 or labels.dtype != torch.int64:
        raise ValueError(f"{what} must be a 1-D int64 tensor of class indices, got shape "
                         f"{tuple(labels.shape)} and dtype {labels.dtype}; convert with .long()")


def episode_cross_entropy(logits: torch.Tensor, query_labels: torch.Tensor
                          ) -> tuple[torch.Tensor, float]:
    """logits [Q, n_way], query_labels [Q] in 0..n_way-1 -> (mean cross-entropy, a 0-d tensor
    to backpropagate; accuracy of the argmax over the Q queries, a float in [0, 1])."""
    _check_integer_labels(query_labels, "query_labels")
    if logits.dim() != 2 or len(logits) != len(query_labels) or len(logits) == 0:
        raise ValueError(f"logits must be [Q, n_way] with Q = len(query_labels) = "
                         f"{len(query_labels)} > 0, got shape {tuple(logits.shape)}")
    if int(query_labels.min()) < 0 or int(query_labels.max()) >= logits.shape[1]:
        raise ValueError(f"query_labels must lie in 0..{logits.shape[1] - 1} (the logits have "
                         f"{logits.shape[1]} classes), got values {query_labels.unique().tolist()}")
    loss = F.cross_entropy(logits, query_labels)
    accuracy = (logits.argmax(1) == query_labels).float().mean().item()
    return loss, accuracy


def contrastive_loss(distance: torch.Tensor, same: torch.Tensor, margin: float = 1.0
                     ) -> torch.Tensor:
    """Hadsell et al. 2006, with their factor 1/2, averaged over the N pairs:

    L = mean_i 1/2 [y_i d_i^2 + (1 - y_i) max(0, margin - d_i)^2], y_i = 1 for a same-class pair.

    distance [N] (>= 0, e.g. `SiameseHead(emb_a, emb_b)`), same [N] bool or 0/1 -> scalar.
    Same-class pairs are pulled together; different-class pairs are pushed out to the margin
    and cost nothing beyond it.
    """
    if not margin > 0:
        raise ValueError(f"margin must be positive, got {margin!r}")
    if distance.dim() != 1 or distance.shape != same.shape:
        raise ValueError(f"distance and same must both be [N], one entry per pair; got shapes "
                         f"{tuple(distance.shape)} and {tuple(same.shape)}")
    y = same.to(distance.dtype)
    if not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("same must be True/False (or 1/0) per pair: 1 for a same-class pair")
    pull = y * distance.pow(2)
    push = (1 - y) * (margin - distance).clamp_min(0).pow(2)
    return 0.5 * (pull + push).mean()


def _draw(pairs: torch.Tensor, count: int, generator: torch.Generator | None) -> torch.Tensor:
    """pairs [P, 2] -> count rows drawn uniformly with replacement [count, 2]."""
    if count == 0:
        return pairs[:0]
    return pairs[torch.randint(len(pairs), (count,), generator=generator)]


def mine_pairs(labels: torch.Tensor, positive_fraction: float, n_pairs: int,
               generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """labels [B] of a labelled batch -> (idx_a [P], idx_b [P], same [P] bool), P = n_pairs.

    Exactly round(positive_fraction * n_pairs) pairs (halves round up) are same-class pairs,
    listed first, and the rest different-class pairs. Each kind is drawn uniformly, with
    replacement, from the batch's unordered pairs {a, b}, a < b. `generator`: a CPU generator
    for reproducible draws. Indices come back on labels' device.
    """
    _check_integer_labels(labels, "labels")
    if not 0.0 <= positive_fraction <= 1.0:
        raise ValueError(f"positive_fraction must lie in [0, 1], got {positive_fraction!r}")
    if not (isinstance(n_pairs, int) and n_pairs >= 1):
        raise ValueError(f"n_pairs must be a positive integer, got {n_pairs!r}")
    n_pos = int(positive_fraction * n_pairs + 0.5)
    n_neg = n_pairs - n_pos
    cpu_labels = labels.detach().cpu()
    same_class = cpu_labels.unsqueeze(1) == cpu_labels.unsqueeze(0)  # [B, B]
    upper = torch.ones_like(same_class).triu(1)
    positives = (same_class & upper).nonzero()  # [P+, 2]
    negatives = (~same_class & upper).nonzero()  # [P-, 2]
    if n_pos and len(positives) == 0:
        raise ValueError(f"mine_pairs needs {n_pos} same-class pairs, but no class has 2 or "
                         "more examples in this batch; sample at least 2 examples per class "
                         "or set positive_fraction=0")
    if n_neg and len(negatives) == 0:
        raise ValueError(f"mine_pairs needs {n_neg} different-class pairs, but the batch holds "
                         "fewer than 2 classes; sample batches with 2 or more classes or set "
                         "positive_fraction=1")
    pairs = torch.cat([_draw(positives, n_pos, generator), _draw(negatives, n_neg, generator)])
    same = torch.arange(n_pairs) < n_pos
    pairs, same = pairs.to(labels.device), same.to(labels.device)
    return pairs[:, 0], pairs[:, 1], same
