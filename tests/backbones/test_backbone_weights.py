"""Offline weights: local .safetensors / torch.save files round trip; bad files are named."""

from __future__ import annotations

import pytest
import timm
import torch
from safetensors.torch import save_file
from torch import nn

from fewshot_metric.backbones import create_backbone


def _save(state: dict[str, torch.Tensor], path) -> None:
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, path)
    else:
        torch.save(state, path)


def _embed(backbone, images: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return backbone.eval()(images)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
@pytest.mark.parametrize(
    ("name", "kwargs"),
    [("conv4", {"hidden": 16}), ("timm/mobilenetv3_small_050", {"image_size": 32})],
)
def test_weights_round_trip(tmp_path, name: str, kwargs: dict, suffix: str) -> None:
    source = create_backbone(name, **kwargs)
    # Non-default BatchNorm statistics, so they must travel in the file too.
    source.train()(torch.randn(2, source.input_config.channels, *source.input_config.image_size))
    path = tmp_path / f"weights{suffix}"
    _save(source.state_dict(), path)
    images = torch.randn(2, source.input_config.channels, *source.input_config.image_size)
    loaded = create_backbone(name, weights=path, **kwargs)
    fresh = create_backbone(name, **kwargs)
    assert torch.equal(_embed(loaded, images), _embed(source, images))
    assert not torch.allclose(_embed(fresh, images), _embed(source, images))


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_timm_weights_with_a_classifier_head_load_without_it(tmp_path, suffix: str) -> None:
    """A timm-native state dict (as timm publishes it, head included) drops the head keys."""
    full = timm.create_model("mobilenetv3_small_050", num_classes=10).eval()
    path = tmp_path / f"timm{suffix}"
    _save(full.state_dict(), path)
    assert "classifier.weight" in full.state_dict()
    backbone = create_backbone("timm/mobilenetv3_small_050", weights=path)
    images = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = full.forward_head(full.forward_features(images), pre_logits=True)
    assert torch.equal(_embed(backbone, images), expected)


def test_missing_weights_file_is_named(tmp_path) -> None:
    path = tmp_path / "absent.safetensors"
    with pytest.raises(FileNotFoundError, match="absent.safetensors"):
        create_backbone("conv4", weights=path)


def test_weights_of_another_architecture_are_named(tmp_path) -> None:
    path = tmp_path / "conv4.safetensors"
    _save(create_backbone("conv4").state_dict(), path)
    with pytest.raises(ValueError, match=r"conv4\.safetensors.*'resnet12'.*missing keys"):
        create_backbone("resnet12", weights=path)


def test_weights_of_another_shape_are_named(tmp_path) -> None:
    path = tmp_path / "rgb.pt"
    _save(create_backbone("conv4", in_chans=3).state_dict(), path)
    with pytest.raises(ValueError, match=r"rgb\.pt.*shape mismatches: 0\.0\.weight"):
        create_backbone("conv4", in_chans=1, weights=path)


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("junk.pt", b"not a checkpoint", "could not be read"),
        ("junk.safetensors", b"not a checkpoint", "could not be read"),
        ("module.pt", None, "could not be read"),  # a pickled nn.Module: refused by weights_only
        ("mixed.pt", {"x": torch.zeros(1), "epoch": 3}, "does not hold a state dict"),
    ],
)
def test_unreadable_weights_files_are_named(tmp_path, filename, content, message) -> None:
    path = tmp_path / filename
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content if content is not None else {"model": nn.Linear(2, 2)}, path)
    with pytest.raises(ValueError, match=f"{filename}.*{message}"):
        create_backbone("conv4", weights=path)


def test_a_wrapped_state_dict_is_unwrapped(tmp_path) -> None:
    source = create_backbone("conv4")
    path = tmp_path / "checkpoint.pt"
    torch.save({"state_dict": source.state_dict()}, path)
    images = torch.randn(2, 1, 28, 28)
    assert torch.equal(_embed(create_backbone("conv4", weights=path), images),
                       _embed(source, images))
