"""fold_batch_norm: conv + batch norm folded by hand-worked numbers, the same outputs for the
zoo's backbones, in-place activations only where they are safe, the original untouched."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from fewshot_metric.backbones import create_backbone
from fewshot_metric.backbones.inference import fold_batch_norm


def test_conv_and_norm_fold_into_one_affine_map_worked_by_hand() -> None:
    conv = nn.Conv2d(1, 1, 1)
    norm = nn.BatchNorm2d(1)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(1.0)
        norm.running_mean.fill_(3.0)
        norm.running_var.fill_(4.0 - norm.eps)  # sqrt(var + eps) = 2
        norm.weight.fill_(5.0)
        norm.bias.fill_(6.0)
    # 5 * (2x + 1 - 3) / 2 + 6 = 5x + 1
    folded = fold_batch_norm(nn.Sequential(conv, norm).eval())
    assert isinstance(folded[1], nn.Identity)
    assert folded[0].weight.item() == pytest.approx(5.0)
    assert folded[0].bias.item() == pytest.approx(1.0)
    x = torch.tensor([[[[-1.0, 0.0], [0.5, 2.0]]]])
    assert torch.allclose(folded(x), 5 * x + 1)


def test_activation_after_a_conv_runs_in_place_others_do_not() -> None:
    network = nn.Sequential(nn.LeakyReLU(0.1), nn.Conv2d(1, 2, 1), nn.BatchNorm2d(2),
                            nn.LeakyReLU(0.1), nn.ReLU()).eval()
    folded = fold_batch_norm(network)
    assert not folded[0].inplace  # its input is the caller's tensor
    assert folded[3].inplace and folded[3].negative_slope == 0.1  # after conv (+ folded norm)
    assert not folded[4].inplace  # after an activation, not a conv
    assert not network[3].inplace  # the original keeps its own modules
    x = torch.randn(3, 1, 4, 4)
    before = x.clone()
    with torch.no_grad():
        assert torch.allclose(folded(x), network(x), atol=1e-6)
    assert torch.equal(x, before)


def randomise_norms(module: nn.Module) -> None:
    """Running statistics and affine parameters away from their initial 0 / 1."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for norm in module.modules():
            if isinstance(norm, nn.BatchNorm2d):
                shape = norm.running_mean.shape
                norm.running_mean.copy_(torch.rand(shape, generator=generator) * 2 - 1)
                norm.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
                norm.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                norm.bias.copy_(torch.rand(shape, generator=generator) - 0.5)


@pytest.mark.parametrize("name, kwargs, norms_left, in_place", [
    ("conv4", {"in_chans": 1, "image_size": 28}, 0, 4),  # conv-BN-ReLU x 4
    ("resnet12", {"in_chans": 3, "image_size": 32}, 0, 8),  # 2 LeakyReLUs after (conv-BN) x 4
    ("timm/resnet18", {"image_size": 32}, 17, 0),  # timm keeps bn1/bn2 as attributes
])
def test_backbones_give_the_same_embeddings_folded(name: str, kwargs: dict, norms_left: int,
                                                   in_place: int) -> None:
    torch.manual_seed(0)
    backbone = create_backbone(name, **kwargs)
    randomise_norms(backbone)
    backbone.eval()
    state = {key: value.clone() for key, value in backbone.state_dict().items()}
    folded = fold_batch_norm(backbone)
    assert folded is not backbone
    assert sum(isinstance(m, nn.BatchNorm2d) for m in folded.modules()) == norms_left
    def in_place_layers(network: nn.Module) -> int:
        return sum(getattr(layer, "inplace", False) is True for layer in network.modules())

    assert in_place_layers(folded) - in_place_layers(backbone) == in_place
    size = kwargs["image_size"]
    images = torch.randn(4, kwargs.get("in_chans", 3), size, size)
    with torch.no_grad():
        expected = backbone(images)
        got = folded(images)
    scale = expected.abs().max().item()
    assert scale > 0 and math.isfinite(scale)
    assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * scale)
    after = backbone.state_dict()
    assert all(torch.equal(after[key], value) for key, value in state.items())
    originals = {id(tensor) for tensor in backbone.parameters()}
    shared = [p for p in folded.parameters() if id(p) in originals]
    # every conv + norm left (weight; weight, bias) is shared, every folded conv is new
    assert len(shared) == 3 * norms_left


def test_nothing_to_fold_returns_the_module_itself() -> None:
    backbone = create_backbone("wrn16_4", image_size=32)  # pre-activation: norms before convs
    assert fold_batch_norm(backbone.eval()) is backbone
