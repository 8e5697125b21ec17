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


class Preprocess:
    """PIL image (any mode) -> float tensor [C, H, W], resized to `size` (H, W) and
    normalised. Batches take the two halves: `to_uint8(image)` -> uint8 [C, H, W] per image
    (mode conversion and resizing, on PIL), then `normalize(uint8 [..., C, H, W])` -> float32
    once per batch; `preprocess(image)` is `normalize(to_uint8(image))`, identical values."""

    def __init__(self, size: tuple[int, int], channels: int, interpolation: InterpolationMode,
                 mean: list[float], std: list[float]):
        self.size, self.channels, self.interpolation = size, channels, interpolation
        self.mean, self.std = mean, std

    def __repr__(self) -> str:
        return (f"Preprocess(size={self.size}, channels={self.channels}, "
                f"interpolation={self.interpolation.value}, mean={self.mean}, std={self.std})")

    def to_uint8(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        """A PIL image (any mode), or uint8 pixels [channels, H, W] already in this
        transform's channels -> uint8 [channels, *size]; both give the same values for the
        same pixels (pixels of another size are resized on PIL)."""
        if isinstance(image, torch.Tensor):
            if tuple(image.shape[1:]) == self.size:
                return image
            image = Image.fromarray(image.permute(1, 2, 0).squeeze(2).numpy())
        image = v2.functional.resize(convert_mode(image, self.channels), list(self.size),
                                     interpolation=self.interpolation, antialias=True)
        return v2.functional.pil_to_tensor(image)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        images = v2.functional.to_dtype(images, torch.float32, scale=True)
        return v2.functional.normalize(images, self.mean, self.std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalize(self.to_uint8(image))


def build_transform(input_config: InputSpec) -> Preprocess:
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
    return Preprocess(size, channels, interpolation, mean, std)
