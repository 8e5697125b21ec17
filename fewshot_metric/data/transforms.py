"""Preprocessing: PIL image (any mode) -> normalised float tensor [C, H, W] for a backbone."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torchvision.transforms import InterpolationMode, v2


class InputSpec(Protocol):
    """What build_transform needs of a backbone's input config."""

    image_size: Sequence[int]  # (H, W)
    channels: int
    mean: Sequence[float]
    std: Sequence[float]
    interpolation: str


def _to_8bit(image: Image.Image) -> Image.Image:
    """High-bit-depth grayscale to 'L': 'I;16*' and 'I' scaled from 0..65535, 'F' from 0..1."""
    values = np.asarray(image, dtype=np.float64)
    top = 1.0 if image.mode == "F" else 65535.0
    return Image.fromarray(np.rint(np.clip(values / top, 0.0, 1.0) * 255).astype(np.uint8), "L")


def convert_mode(image: Image.Image, channels: int) -> Image.Image:
    """Any PIL mode -> 'L' (channels=1) or 'RGB' (channels=3); transparency is composited onto
    white, palettes and CMYK/YCbCr are converted, 16-bit and float grayscale are rescaled."""
    if channels not in (1, 3):
        raise ValueError(f"convert_mode: channels must be 1 or 3, got {channels}")
    target = "L" if channels == 1 else "RGB"
    if image.mode == target:
        return image
    if image.mode.startswith("I") or image.mode == "F":
        image = _to_8bit(image)
    elif image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
        image.mode == "P" and "transparency" in image.info
    ):
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    return image.convert(target)


class ConvertMode:
    """Callable form of `convert_mode` for a fixed channel count (picklable, unlike a lambda)."""

    def __init__(self, channels: int):
        self.channels = channels

    def __call__(self, image: Image.Image) -> Image.Image:
        return convert_mode(image, self.channels)


def build_transform(input_config: InputSpec) -> v2.Compose:
    """PIL image -> float tensor [channels, H, W], resized to `image_size` and normalised.

    Training augmentation works on batches of these tensors (fewshot_metric.training.augment),
    so the same preprocessing serves training, evaluation and inference.
    `input_config` is any object with image_size, channels, mean, std and
    interpolation (a torchvision InterpolationMode name such as "bilinear" or "bicubic").
    """
    size = tuple(int(s) for s in input_config.image_size)
    channels = int(input_config.channels)
    mean, std = list(input_config.mean), list(input_config.std)
    if len(size) != 2 or channels not in (1, 3) or len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"build_transform: need image_size (H, W), channels 1 or 3 and one mean/std per "
            f"channel; got image_size={size}, channels={channels}, {len(mean)} means, "
            f"{len(std)} stds"
        )
    try:
        interpolation = InterpolationMode(str(getattr(input_config.interpolation, "value",
                                                      input_config.interpolation)).lower())
    except ValueError:
        options = ", ".join(mode.value for mode in InterpolationMode)
        raise ValueError(
            f"build_transform: unknown interpolation '{input_config.interpolation}'; "
            f"choose one of {options}"
        ) from None
    return v2.Compose([
        ConvertMode(channels),
        v2.Resize(size, interpolation=interpolation, antialias=True),
        v2.PILToTensor(),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(mean, std),
    ])
