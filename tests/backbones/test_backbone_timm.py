"""timm models as backbones: input config, image size, channels, the download failure."""

from __future__ import annotations

import pytest
import timm
import torch

from fewshot_metric.backbones import create_backbone


def test_timm_input_config_comes_from_timm() -> None:
    backbone = create_backbone("timm/resnet18")
    config = backbone.input_config
    assert config.image_size == (224, 224)
    assert config.mean == pytest.approx((0.485, 0.456, 0.406))
    assert config.interpolation == "bicubic"
    assert backbone.embed_dim == 512
    assert backbone.config() == {"name": "timm/resnet18", "in_chans": 3, "image_size": [224, 224]}


def test_vit_image_size_reaches_the_model_and_the_input_config() -> None:
    backbone = create_backbone("timm/vit_tiny_patch16_224", image_size=(32, 48)).eval()
    assert backbone.input_config.image_size == (32, 48)
    assert backbone.network.patch_embed.grid_size == (2, 3)
    with torch.no_grad():
        assert backbone(torch.randn(2, 3, 32, 48)).shape == (2, 192)


def test_one_channel_timm_model_averages_mean_and_std() -> None:
    backbone = create_backbone("timm/resnet18", in_chans=1, image_size=32)
    assert backbone.network.conv1.in_channels == 1
    assert backbone.input_config.channels == 1
    assert backbone.input_config.mean == pytest.approx(((0.485 + 0.456 + 0.406) / 3,))
    assert backbone.input_config.std == pytest.approx(((0.229 + 0.224 + 0.225) / 3,))


def test_embed_dim_is_what_the_model_outputs_not_num_features() -> None:
    backbone = create_backbone("timm/mobilenetv3_small_050", image_size=32)
    assert backbone.network.num_features != backbone.embed_dim  # a conv head follows the pool
    assert backbone.eval()(torch.randn(2, 3, 32, 32)).shape == (2, backbone.embed_dim)


def test_a_failed_download_points_to_local_weights(monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(RuntimeError, match="'timm/resnet18'.*no network.*weights=<local file>"):
        create_backbone("timm/resnet18", pretrained=True)
