"""Batch affine augmentation: identity, a hand-checked quarter turn, a hand-checked shift."""

from __future__ import annotations

import math

import torch

from fewshot_metric.training.augment import affine, random_affine


def test_identity_leaves_images_unchanged() -> None:
    images = torch.rand(3, 2, 5, 7)
    out = affine(images, torch.zeros(3), torch.ones(3), torch.zeros(3, 2))
    torch.testing.assert_close(out, images, atol=1e-6, rtol=0)


def test_quarter_turn_is_rot90_counterclockwise() -> None:
    image = torch.arange(16.0).reshape(1, 1, 4, 4)  # row 0 = 0 1 2 3
    out = affine(image, torch.tensor([math.pi / 2]), torch.ones(1), torch.zeros(1, 2))
    # counterclockwise as displayed: the top row (0 1 2 3) becomes the left column, read
    # bottom to top, which is torch.rot90 over (H, W)
    torch.testing.assert_close(out, torch.rot90(image, 1, dims=(2, 3)), atol=1e-5, rtol=0)


def test_shift_moves_content_right_and_repeats_the_border() -> None:
    image = torch.tensor([[[[0.0, 1.0, 2.0, 3.0]]]])  # 1 x 4
    out = affine(image, torch.zeros(1), torch.ones(1), torch.tensor([[0.25, 0.0]]))
    # a shift of a quarter of the width is one pixel: [0, 0, 1, 2] (border 0 repeated)
    torch.testing.assert_close(out, torch.tensor([[[[0.0, 0.0, 1.0, 2.0]]]]), atol=1e-6,
                               rtol=0)


def test_random_affine_depends_only_on_the_generator_seed() -> None:
    images = torch.rand(4, 1, 8, 8)
    a = random_affine(images, torch.Generator().manual_seed(5), 15.0, 0.1, 0.1)
    b = random_affine(images, torch.Generator().manual_seed(5), 15.0, 0.1, 0.1)
    c = random_affine(images, torch.Generator().manual_seed(6), 15.0, 0.1, 0.1)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == images.shape
    assert not torch.equal(a[0], a[1]) or not torch.equal(images[0], images[1])
