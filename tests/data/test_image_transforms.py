from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_metric.data import build_transform, convert_mode


def config(channels: int, mean: float = 0.0, std: float = 1.0, **overrides):
    values = dict(image_size=(8, 6), channels=channels, mean=[mean] * channels,
                  std=[std] * channels, interpolation="bilinear")
    return SimpleNamespace(**{**values, **overrides})


def palette_image() -> Image.Image:
    image = Image.new("P", (5, 5), 0)
    image.putpalette([0, 0, 255] + [0, 0, 0] * 255)
    return image


# (image, expected value per output channel for 1 and for 3 channels), values / 255
CASES = {
    "L": (Image.new("L", (5, 5), 51), [51], [51, 51, 51]),
    "1": (Image.new("1", (5, 5), 1), [255], [255, 255, 255]),
    "RGB": (Image.new("RGB", (5, 5), (255, 0, 0)), [76], [255, 0, 0]),  # L = 0.299 R
    "RGBA transparent": (Image.new("RGBA", (5, 5), (255, 0, 0, 0)), [255], [255, 255, 255]),
    "LA opaque": (Image.new("LA", (5, 5), (51, 255)), [51], [51, 51, 51]),
    "P": (palette_image(), [29], [0, 0, 255]),  # L = 0.114 B
    "I;16": (Image.fromarray(np.full((5, 5), 257 * 51, dtype=np.uint16)), [51], [51, 51, 51]),
    "I": (Image.new("I", (5, 5), 65535), [255], [255, 255, 255]),
    "F": (Image.new("F", (5, 5), 0.2), [51], [51, 51, 51]),
    "CMYK": (Image.new("CMYK", (5, 5), (0, 0, 0, 0)), [255], [255, 255, 255]),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("channels", [1, 3])
def test_any_mode_to_normalised_tensor(case, channels):
    image, gray, rgb = CASES[case]
    out = build_transform(config(channels, mean=0.5, std=0.5))(image)
    assert out.shape == (channels, 8, 6) and out.dtype == torch.float32
    expected = torch.tensor(gray if channels == 1 else rgb, dtype=torch.float32) / 255
    assert torch.allclose(out, ((expected - 0.5) / 0.5)[:, None, None].expand_as(out), atol=1e-6)


def test_convert_mode_targets():
    assert convert_mode(Image.new("I;16", (2, 2)), 1).mode == "L"
    assert convert_mode(palette_image(), 3).mode == "RGB"
    with pytest.raises(ValueError, match="channels must be 1 or 3, got 4"):
        convert_mode(Image.new("L", (2, 2)), 4)


def test_bad_configs_are_explained():
    one_std = config(3)
    one_std.std = [1.0]
    with pytest.raises(ValueError, match="3 means, 1 stds"):
        build_transform(one_std)
    with pytest.raises(ValueError, match="unknown interpolation 'fancy'.*bilinear"):
        build_transform(config(1, interpolation="fancy"))


def test_batched_halves_equal_one_image_at_a_time():
    preprocess = build_transform(config(3, mean=0.4, std=0.2, interpolation="bicubic"))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
              for h, w in ((8, 6), (20, 13), (5, 9))]
    halves = [preprocess.to_uint8(image) for image in images]
    assert all(h.dtype == torch.uint8 and h.shape == (3, 8, 6) for h in halves)
    batch = preprocess.normalize(torch.stack(halves))
    assert torch.equal(batch, torch.stack([preprocess(image) for image in images]))
    # an image already at the target size is not resampled: its pixels come through exactly
    assert torch.equal(halves[0], torch.from_numpy(np.array(images[0])).permute(2, 0, 1))
