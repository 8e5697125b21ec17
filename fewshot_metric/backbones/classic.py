"""Classic few-shot backbones trained from scratch: Conv-4, ResNet-12 and Wide ResNets."""

from __future__ import annotations

from collections.abc import Sequence

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch import Tensor, nn

from fewshot_metric.backbones.base import Backbone, InputConfig, image_hw
from fewshot_metric.backbones.registry import register_backbone

RESNET12_WIDTHS = (64, 160, 320, 640)


def _classic_backbone(
    name: str,
    network: nn.Module,
    embed_dim: int,
    in_chans: int,
    hw: tuple[int, int],
    **extra_kwargs: object,
) -> Backbone:
    """Wrap `network`; ImageNet normalisation for 3 channels, mean 0.5 / std 0.5 otherwise."""
    if in_chans == 3:
        mean, std = IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
    else:
        mean, std = (0.5,) * in_chans, (0.5,) * in_chans
    return Backbone(
        name,
        network,
        embed_dim,
        InputConfig(hw, in_chans, mean, std, "bilinear"),
        build_kwargs={"in_chans": in_chans, "image_size": list(hw), **extra_kwargs},
    )


def _kaiming_init(network: nn.Module, nonlinearity: str, slope: float = 0.0) -> nn.Module:
    """Kaiming-normal (fan_out) convolutions; BatchNorm scale 1, shift 0."""
    for module in network.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, a=slope, mode="fan_out",
                                    nonlinearity=nonlinearity)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    return network


def _halving_hw(name: str, image_size: int | Sequence[int]) -> tuple[int, int]:
    """(H, W) of `image_size` for a network that halves it four times (>= 16 each)."""
    height, width = image_hw(image_size)
    if height < 16 or width < 16:
        raise ValueError(
            f"{name} halves the image four times, so image_size must be at least 16x16; "
            f"got {height}x{width}"
        )
    return height, width


def conv4_network(in_chans: int = 1, hidden: int = 64) -> nn.Sequential:
    """Prototypical Networks' Conv-4: 4 x [conv3x3-BN-ReLU-maxpool2], flattened.
    [B, in_chans, H, W] -> [B, hidden * (H // 16) * (W // 16)]."""
    def block(cin: int) -> nn.Sequential:
        return nn.Sequential(
            nn.Conv2d(cin, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(), nn.MaxPool2d(2)
        )

    return nn.Sequential(block(in_chans), block(hidden), block(hidden), block(hidden), nn.Flatten())


@register_backbone("conv4")
def conv4(
    name: str, *, in_chans: int = 1, image_size: int | Sequence[int] = 28, hidden: int = 64
) -> Backbone:
    """Conv-4 (Snell et al. 2017); embed_dim = hidden * (H // 16) * (W // 16)."""
    height, width = _halving_hw(name, image_size)
    embed_dim = hidden * (height // 16) * (width // 16)
    return _classic_backbone(name, conv4_network(in_chans, hidden), embed_dim, in_chans,
                             (height, width), hidden=hidden)


def _conv3x3_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))


class ResNet12Block(nn.Module):
    """3 x conv3x3-BN (LeakyReLU 0.1 between), plus a 1x1 conv-BN shortcut, LeakyReLU,
    maxpool2: [B, cin, H, W] -> [B, cout, H // 2, W // 2]."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv3x3_bn(cin, cout), nn.LeakyReLU(0.1),
            _conv3x3_bn(cout, cout), nn.LeakyReLU(0.1),
            _conv3x3_bn(cout, cout),
        )
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.LeakyReLU(0.1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: Tensor) -> Tensor:
        return self.pool(self.act(self.body(x) + self.shortcut(x)))


def resnet12_network(in_chans: int = 3) -> nn.Sequential:
    """Few-shot ResNet-12 (TADAM / MetaOptNet widths 64-160-320-640), global average pooled:
    [B, in_chans, H, W] -> [B, 640]."""
    widths = (in_chans, *RESNET12_WIDTHS)
    blocks = [ResNet12Block(cin, cout) for cin, cout in zip(widths[:-1], widths[1:], strict=True)]
    network = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return _kaiming_init(network, "leaky_relu", slope=0.1)


@register_backbone("resnet12")
def resnet12(name: str, *, in_chans: int = 3, image_size: int | Sequence[int] = 84) -> Backbone:
    """ResNet-12; embed_dim 640 at any image size >= 16."""
    return _classic_backbone(name, resnet12_network(in_chans), RESNET12_WIDTHS[-1], in_chans,
                             _halving_hw(name, image_size))


class WideBasicBlock(nn.Module):
    """Pre-activation block BN-ReLU-conv3x3(stride)-BN-ReLU-dropout-conv3x3 with an identity
    shortcut, or a 1x1 conv on the activated input when the shape changes:
    [B, cin, H, W] -> [B, cout, H / stride, W / stride]."""

    def __init__(self, cin: int, cout: int, stride: int, drop_rate: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.dropout = nn.Dropout(drop_rate)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.shortcut = (
            nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            if cin != cout or stride != 1 else None
        )

    def forward(self, x: Tensor) -> Tensor:
        activated = self.relu(self.bn1(x))
        shortcut = x if self.shortcut is None else self.shortcut(activated)
        out = self.conv2(self.dropout(self.relu(self.bn2(self.conv1(activated)))))
        return out + shortcut


def wide_resnet(
    depth: int, widen_factor: int, in_chans: int = 3, drop_rate: float = 0.0
) -> nn.Sequential:
    """WRN-depth-k (Zagoruyko & Komodakis 2016): 3 groups of (depth - 4) / 6 blocks, widths
    16k, 32k, 64k, strides 1, 2, 2; global average pooled: [B, in_chans, H, W] -> [B, 64k]."""
    if depth < 10 or (depth - 4) % 6:
        raise ValueError(
            f"wide_resnet depth must be 6n + 4 with n >= 1 (10, 16, 28, ...); got {depth}"
        )
    blocks_per_group = (depth - 4) // 6
    layers: list[nn.Module] = [nn.Conv2d(in_chans, 16, 3, padding=1, bias=False)]
    cin = 16
    for width, stride in ((16 * widen_factor, 1), (32 * widen_factor, 2), (64 * widen_factor, 2)):
        for index in range(blocks_per_group):
            layers.append(WideBasicBlock(cin, width, stride if index == 0 else 1, drop_rate))
            cin = width
    layers += [nn.BatchNorm2d(cin), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return _kaiming_init(nn.Sequential(*layers), "relu")


def _register_wide_resnet(depth: int, widen_factor: int) -> None:
    """Register `wrn{depth}_{widen_factor}`: embed_dim 64 * widen_factor."""

    def factory(
        name: str,
        *,
        in_chans: int = 3,
        image_size: int | Sequence[int] = 80,
        drop_rate: float = 0.0,
    ) -> Backbone:
        network = wide_resnet(depth, widen_factor, in_chans, drop_rate)
        return _classic_backbone(name, network, 64 * widen_factor, in_chans,
                                 image_hw(image_size), drop_rate=drop_rate)

    register_backbone(f"wrn{depth}_{widen_factor}")(factory)


_register_wide_resnet(28, 10)
_register_wide_resnet(16, 4)
