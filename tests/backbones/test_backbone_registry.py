"""Listing and creating backbones by name."""

from __future__ import annotations

import pytest

from fewshot_metric.backbones import create_backbone, list_backbones, register_backbone


def test_list_backbones_has_classic_and_timm_names() -> None:
    names = list_backbones()
    for name in ("conv4", "resnet12", "wrn28_10", "timm/resnet18"):
        assert name in names
    assert len(names) == len(set(names))
    assert len(names) > 500  # every timm architecture


def test_list_backbones_filters_with_a_case_insensitive_pattern() -> None:
    assert list_backbones("WRN*") == ["wrn16_4", "wrn28_10"]
    timm_resnets = list_backbones("timm/resnet1?")
    assert "timm/resnet18" in timm_resnets
    assert all(name.startswith("timm/resnet") for name in timm_resnets)
    assert list_backbones("no-such-*") == []


@pytest.mark.parametrize(
    ("typo", "suggestion"), [("conv5", "conv4"), ("timm/resnet81", "timm/resnet18")]
)
def test_unknown_name_suggests_close_matches(typo: str, suggestion: str) -> None:
    with pytest.raises(ValueError, match=f"unknown backbone '{typo}'.*{suggestion}") as info:
        create_backbone(typo)
    assert "fewshot-metric backbones" in str(info.value)


def test_unknown_kwarg_names_it_and_the_accepted_ones() -> None:
    with pytest.raises(TypeError, match=r"'conv4'.*widht.*in_chans"):
        create_backbone("conv4", widht=3)


def test_classic_backbones_have_no_download() -> None:
    with pytest.raises(ValueError, match="weights=<local file>"):
        create_backbone("conv4", pretrained=True)


def test_pretrained_and_weights_are_exclusive(tmp_path) -> None:
    with pytest.raises(ValueError, match="not both"):
        create_backbone("timm/resnet18", pretrained=True, weights=tmp_path / "w.pt")


def test_register_backbone_refuses_duplicates_and_timm_names() -> None:
    with pytest.raises(ValueError, match="'conv4' is already registered"):
        register_backbone("conv4")(lambda name: None)
    with pytest.raises(ValueError, match="reserved"):
        register_backbone("timm/mine")
