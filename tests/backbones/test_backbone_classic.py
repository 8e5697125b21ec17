"""Hand-checkable facts about the classic backbones."""

from __future__ import annotations

import pytest
import torch

from fewshot_metric.backbones import create_backbone
from fewshot_metric.backbones.classic import wide_resnet


@pytest.mark.parametrize(
    ("name", "image_size", "embed_dim"),
    [
        ("conv4", 28, 64),  # 28 -> 14 -> 7 -> 3 -> 1: 64 * 1 * 1
        ("conv4", 84, 1600),  # 84 -> 42 -> 21 -> 10 -> 5: 64 * 5 * 5
        ("resnet12", 32, 640),
        ("wrn28_10", 32, 640),  # 64 * widen_factor
        ("wrn16_4", 32, 256),
    ],
)
def test_embed_dim(name: str, image_size: int, embed_dim: int) -> None:
    backbone = create_backbone(name, image_size=image_size).eval()
    images = torch.randn(2, backbone.input_config.channels, image_size, image_size)
    with torch.no_grad():
        assert backbone(images).shape == (2, embed_dim)
    assert backbone.embed_dim == embed_dim


@pytest.mark.parametrize(("name", "millions"), [("resnet12", 12.4), ("wrn28_10", 36.5)])
def test_parameter_count_matches_the_papers(name: str, millions: float) -> None:
    backbone = create_backbone(name)
    assert round(sum(p.numel() for p in backbone.parameters()) / 1e6, 1) == millions


def test_conv4_defaults_and_rectangular_size() -> None:
    backbone = create_backbone("conv4", image_size=(32, 64), hidden=8)
    assert backbone.input_config.channels == 1
    assert backbone.input_config.mean == (0.5,)
    assert backbone.embed_dim == 8 * 2 * 4


def test_conv4_too_small_image_names_the_size() -> None:
    with pytest.raises(ValueError, match="conv4.*16x16.*8x8"):
        create_backbone("conv4", image_size=8)


def test_wide_resnet_rejects_bad_depth() -> None:
    with pytest.raises(ValueError, match="6n \\+ 4.*got 20"):
        wide_resnet(20, 2)
