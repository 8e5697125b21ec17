"""Training augmentation on batches of preprocessed images: small random affine warps.

Works on the cached tensors (no per-image PIL work), and draws from a generator seeded by the
step, so a resumed run sees the same augmented episodes as an uninterrupted one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def affine(images: torch.Tensor, angle: torch.Tensor, scale: torch.Tensor,
           shift: torch.Tensor) -> torch.Tensor:
    """Rotates each image [B, C, H, W] by `angle` [B] radians (counterclockwise as displayed),
    zooms by `scale` [B] and moves it by `shift` [B, 2] (x, y, in fractions of the width and
    height) about the centre; pixels from outside repeat the border (the background)."""
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([
        torch.stack([cos, -sin, -2 * shift[:, 0]], dim=1),
        torch.stack([sin, cos, -2 * shift[:, 1]], dim=1),
    ], dim=1)  # [B, 2, 3]: output pixel -> where to read in the input, coordinates in [-1, 1]
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border",
                         align_corners=False)


def random_affine(images: torch.Tensor, generator: torch.Generator, rotate_degrees: float,
                  scale: float, shift: float) -> torch.Tensor:
    """images [B, C, H, W] -> warped [B, C, H, W]: angle uniform in +-rotate_degrees, zoom in
    1 +- scale, shift in +-shift of the size, drawn independently per image."""
    n = len(images)

    def uniform(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator) * 2 - 1

    return affine(images, uniform(n) * math.radians(rotate_degrees), 1 + uniform(n) * scale,
                  uniform(n, 2) * shift)
