"""InputConfig and the Backbone wrapper: channel adaptation, size checks, config()."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from fewshot_metric.backbones import Backbone, InputConfig, create_backbone


def test_input_config_round_trips_through_json() -> None:
    config = InputConfig((32, 48), 3, (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "bicubic")
    restored = InputConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert restored == config
    assert restored.image_size == (32, 48)
    assert isinstance(restored.mean, tuple)


def test_input_config_accepts_a_square_int() -> None:
    assert InputConfig(28, 1, (0.5,), (0.5,)).image_size == (28, 28)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mean": (0.5, 0.5)}, "mean needs one value per channel"),
        ({"std": (0.0,)}, "std values must be > 0"),
        ({"interpolation": "cubic"}, "interpolation 'cubic'"),
        ({"image_size": (28, 0)}, "image_size"),
    ],
)
def test_input_config_rejects_bad_values(kwargs: dict, message: str) -> None:
    values = {"image_size": 28, "channels": 1, "mean": (0.5,), "std": (0.5,), **kwargs}
    with pytest.raises(ValueError, match=message):
        InputConfig(**values)


def test_input_config_from_dict_names_missing_and_unknown_keys() -> None:
    data = InputConfig(28, 1, (0.5,), (0.5,)).to_dict()
    del data["std"]
    data["size"] = 28
    with pytest.raises(ValueError, match=r"missing keys \['std'\], unknown keys \['size'\]"):
        InputConfig.from_dict(data)


def test_gray_images_are_repeated_for_an_rgb_backbone() -> None:
    backbone = create_backbone("resnet12", image_size=32).eval()
    gray = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(backbone(gray), backbone(gray.repeat(1, 3, 1, 1)))


def test_rgb_images_are_averaged_for_a_gray_backbone() -> None:
    backbone = create_backbone("conv4").eval()
    assert backbone.input_config.channels == 1
    rgb = torch.randn(2, 3, 28, 28)
    with torch.no_grad():
        assert torch.allclose(backbone(rgb), backbone(rgb.mean(dim=1, keepdim=True)))


def test_other_channel_counts_are_an_error_naming_both() -> None:
    backbone = create_backbone("conv4")
    with pytest.raises(ValueError, match="expects 1 input channel.*with 4"):
        backbone(torch.randn(2, 4, 28, 28))


def test_images_must_be_4d() -> None:
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        create_backbone("conv4")(torch.randn(1, 28, 28))


def test_images_of_another_size_than_built_for_are_an_error() -> None:
    backbone = create_backbone("conv4", image_size=28)
    with pytest.raises(ValueError, match=r"expected \[B, 64\].*image_size \(28, 28\)"):
        backbone(torch.randn(2, 1, 84, 84))


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("conv4", {"image_size": (32, 48), "hidden": 16, "in_chans": 3}),
        ("resnet12", {"image_size": 32, "in_chans": 1}),
        ("timm/vit_tiny_patch16_224", {"image_size": 32}),
    ],
)
def test_config_rebuilds_the_same_architecture(name: str, kwargs: dict) -> None:
    original = create_backbone(name, **kwargs).eval()
    config = json.loads(json.dumps(original.config()))
    assert config["name"] == name
    rebuilt = create_backbone(**config).eval()
    assert rebuilt.input_config == original.input_config
    assert rebuilt.embed_dim == original.embed_dim
    images = torch.randn(2, original.input_config.channels, *original.input_config.image_size)
    with torch.no_grad():
        assert not torch.allclose(rebuilt(images), original(images))  # fresh random init
        rebuilt.load_state_dict(original.state_dict())
        assert torch.equal(rebuilt(images), original(images))


def test_config_with_a_non_json_kwarg_names_the_kwarg() -> None:
    backbone = create_backbone("timm/resnet18", act_layer=nn.ReLU)
    with pytest.raises(TypeError, match="act_layer"):
        backbone.config()


def test_backbone_wraps_any_pooled_network() -> None:
    network = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    config = InputConfig(8, 3, (0.5,) * 3, (0.5,) * 3)
    backbone = Backbone("tiny", network, 4, config, build_kwargs={})
    assert backbone(torch.randn(2, 1, 8, 8)).shape == (2, 4)
    assert backbone.config() == {"name": "tiny"}
