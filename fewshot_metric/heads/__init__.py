"""Episode heads: a support set and queries -> logits [Q, n_way], larger = more likely.

One contract for every family: `episode_loss(backbone, images, n_way, k_shot, n_query)`
turns an episode's images (episode layout, see data/sampler.py) into a training loss and
query logits, and the trainer and `evaluate_images` call only that. Metric heads
(Prototypical, Matching, Siamese) implement it by embedding the images and calling
`episode_logits(support_emb [S, D], support_labels [S], query_emb [Q, D]) -> [Q, n_way]`,
which evaluation also calls on precomputed embeddings (each image embedded once: the fast
path). Heads that adapt per task (heads/adaptation.py, `scores_images = True`) run an inner
loop on the support images instead. For PrototypicalHead and MatchingHead `forward` is
`episode_logits`; SiameseHead's `forward` scores pairs (`[N, D], [N, D] -> [N]`), for the
contrastive loss the trainer gives it. `support_labels` are int64 values 0..n_way-1 with
every class present, so n_way = max label + 1.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from fewshot_metric.data import split_episode
from fewshot_metric.distances import Distance, SquaredEuclidean
from fewshot_metric.losses import episode_cross_entropy


class EpisodeHead(nn.Module):
    """Base class: holds the model's `distance` (None: `default_distance()`); subclasses
    implement `episode_logits`, and `forward` defaults to it."""

    default_distance: Callable[[], Distance] = SquaredEuclidean
    scores_images = False  # True: no logits from precomputed embeddings (adapts per task)

    def __init__(self, distance: Distance | None = None):
        super().__init__()
        self.distance = self.default_distance() if distance is None else distance

    def attach(self, backbone: nn.Module) -> None:
        """Called once by FewShotModel with its backbone, before any weights are loaded;
        heads with parameters shaped by the backbone create them here. Default: nothing."""

    def check_n_way(self, n_way: int, key: str) -> None:
        """A ValueError naming `key` if the head cannot score n_way-way tasks. Default: any."""

    def episode_loss(self, backbone: nn.Module, images: torch.Tensor, n_way: int, k_shot: int,
                     n_query: int) -> tuple[torch.Tensor, torch.Tensor]:
        """images [n_way * (k_shot + n_query), C, H, W] in episode layout -> (loss [], query
        logits [n_way * n_query, n_way]); here: embed all, `episode_logits`, cross-entropy."""
        emb = backbone(images)
        support, support_labels, query, query_labels = split_episode(emb, n_way, k_shot,
                                                                     n_query)
        logits = self.episode_logits(support, support_labels, query)
        return episode_cross_entropy(logits, query_labels)[0], logits

    def forward(self, support_emb: torch.Tensor, support_labels: torch.Tensor,
                query_emb: torch.Tensor) -> torch.Tensor:
        return self.episode_logits(support_emb, support_labels, query_emb)

    def episode_logits(self, support_emb: torch.Tensor, support_labels: torch.Tensor,
                       query_emb: torch.Tensor) -> torch.Tensor:
        """support_emb [S, D], support_labels [S], query_emb [Q, D] -> logits [Q, n_way]."""
        raise NotImplementedError

    @staticmethod
    def class_mask(support_emb: torch.Tensor, support_labels: torch.Tensor) -> torch.Tensor:
        """Checks the support set; -> bool [S, n_way], True where support j is of class k."""
        if support_emb.dim() != 2 or len(support_emb) == 0:
            raise ValueError(f"support_emb must be a non-empty [S, D] tensor, "
                             f"got shape {tuple(support_emb.shape)}")
        if support_labels.dim() != 1 or len(support_labels) != len(support_emb):
            raise ValueError(f"support_labels must be [S] with S = {len(support_emb)} (one per "
                             f"support embedding), got shape {tuple(support_labels.shape)}")
        if support_labels.dtype != torch.int64:
            raise ValueError(f"support_labels must be int64 class indices 0..n_way-1, "
                             f"got dtype {support_labels.dtype}; convert with .long()")
        if int(support_labels.min()) < 0:
            raise ValueError("support_labels must be class indices 0..n_way-1, got a negative "
                             "label; relabel the episode's classes as 0..n_way-1")
        counts = torch.bincount(support_labels)
        missing = (counts == 0).nonzero().flatten().tolist()
        if missing:
            raise ValueError(f"support_labels must use every class 0..{len(counts) - 1}, but "
                             f"classes {missing} have no support example; relabel the "
                             "episode's classes as 0..n_way-1")
        return support_labels.unsqueeze(1) == torch.arange(len(counts),
                                                           device=support_labels.device)


# The heads subclass EpisodeHead, imported from this module: import them once it is defined.
from fewshot_metric.heads.adaptation import (  # noqa: E402
    AdaptationHead,
    ANILHead,
    MAMLHead,
    ProtoMAMLHead,
    ReptileHead,
)
from fewshot_metric.heads.matching import MatchingHead  # noqa: E402
from fewshot_metric.heads.prototypical import PrototypicalHead  # noqa: E402
from fewshot_metric.heads.siamese import SiameseHead  # noqa: E402

HEADS: dict[str, type[EpisodeHead]] = {
    "prototypical": PrototypicalHead,
    "matching": MatchingHead,
    "siamese": SiameseHead,
    "maml": MAMLHead,
    "anil": ANILHead,
    "protomaml": ProtoMAMLHead,
    "reptile": ReptileHead,
}


def build_head(name: str, distance: Distance | None = None, **options: Any) -> EpisodeHead:
    """A name of HEADS with the model's `distance` (None: the head's default) and the head's
    own options (MatchingHead: fce, lstm_layers, process_steps, embed_dim; the adaptation
    heads: see heads/adaptation.py)."""
    if name not in HEADS:
        raise ValueError(f"unknown head {name!r}; choose one of {sorted(HEADS)}")
    cls = HEADS[name]
    valid = [p for p in inspect.signature(cls).parameters if p != "distance"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        takes = f"valid options are {valid}" if valid else "it takes none besides the distance"
        raise ValueError(f"head {name!r} got unknown options {unknown}; {takes}")
    return cls(distance, **options)


__all__ = ["ANILHead", "HEADS", "AdaptationHead", "EpisodeHead", "MAMLHead", "MatchingHead",
           "ProtoMAMLHead", "PrototypicalHead", "ReptileHead", "SiameseHead", "build_head"]
