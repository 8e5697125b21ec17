"""FewShotModel: a backbone that embeds images and a head that turns episodes into logits."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from fewshot_metric.backbones import Backbone, create_backbone
from fewshot_metric.config import ModelConfig
from fewshot_metric.distances import build_distance, distance_from_config
from fewshot_metric.heads import HEADS, build_head


class FewShotModel(nn.Module):
    """Backbone + Distance + head; `spec()` is the JSON that rebuilds it without weights."""

    def __init__(self, backbone: Backbone, head_name: str, head_kwargs: dict[str, Any],
                 distance: nn.Module):
        super().__init__()
        self.backbone = backbone
        self.head_name = head_name
        self.head_kwargs = dict(head_kwargs)
        self.head = build_head(head_name, distance, **self.head_kwargs)
        self.head.attach(backbone)

    @property
    def distance(self) -> nn.Module:
        """The metric, owned by the head (one parameter set, one state_dict key)."""
        return self.head.distance

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] -> embeddings [B, D]."""
        return self.backbone(images)

    def episode_logits(self, support_emb: torch.Tensor, support_labels: torch.Tensor,
                       query_emb: torch.Tensor) -> torch.Tensor:
        """support_emb [S, D], support_labels [S], query_emb [Q, D] -> logits [Q, n_way]."""
        return self.head.episode_logits(support_emb, support_labels, query_emb)

    def episode_loss(self, images: torch.Tensor, n_way: int, k_shot: int, n_query: int
                     ) -> tuple[torch.Tensor, torch.Tensor]:
        """images [n_way * (k_shot + n_query), C, H, W] in episode layout -> (loss [], query
        logits [n_way * n_query, n_way]): the head's one episode contract."""
        return self.head.episode_loss(self.backbone, images, n_way, k_shot, n_query)

    def spec(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone.config(),
            "input_config": self.backbone.input_config.to_dict(),
            "embed_dim": self.backbone.embed_dim,
            "head": {"name": self.head_name, "kwargs": self.head_kwargs},
            "distance": self.distance.config(),
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> FewShotModel:
        """Rebuilds the architecture (random weights) from `spec()`."""
        backbone = create_backbone(**spec["backbone"])
        distance = distance_from_config(spec["distance"])
        return cls(backbone, spec["head"]["name"], spec["head"]["kwargs"], distance)


def build_model(config: ModelConfig) -> FewShotModel:
    """Builds the model a recipe's `model:` section describes."""
    backbone = create_backbone(config.backbone, pretrained=config.pretrained,
                               weights=config.weights, **config.backbone_kwargs)
    distance = build_distance(config.metric, **config.metric_kwargs)
    head_kwargs = dict(config.head_kwargs)
    if (config.head == "matching" and head_kwargs.get("fce")) or (
            config.head in HEADS and HEADS[config.head].scores_images):
        head_kwargs.setdefault("embed_dim", backbone.embed_dim)
    return FewShotModel(backbone, config.head, head_kwargs, distance)
