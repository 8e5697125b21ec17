"""The embedding contract every backbone meets: [B, C, H, W] -> finite [B, embed_dim]."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from fewshot_metric.backbones import create_backbone, list_backbones

CLASSIC = [name for name in list_backbones() if not name.startswith("timm/")]
TIMM = ["timm/resnet18", "timm/vit_tiny_patch16_224", "timm/mobilenetv3_small_050"]


@pytest.mark.parametrize("name", CLASSIC + TIMM)
def test_embedding_contract(name: str) -> None:
    torch.manual_seed(0)
    backbone = create_backbone(name, image_size=28 if name == "conv4" else 32)
    config = backbone.input_config
    images = torch.randn(2, config.channels, *config.image_size)

    backbone.eval()
    with torch.no_grad():
        first, second = backbone(images), backbone(images)
    assert first.shape == (2, backbone.embed_dim)
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)

    # A random readout, not .sum(): a LayerNorm-ed embedding (ViT) sums to a constant.
    backbone.train()
    weights = torch.randn(2, backbone.embed_dim, generator=torch.Generator().manual_seed(1))
    (backbone(images) * weights).sum().backward()
    first_conv = next(m for m in backbone.modules() if isinstance(m, nn.Conv2d))
    assert first_conv.weight.grad is not None
    assert first_conv.weight.grad.abs().sum() > 0
