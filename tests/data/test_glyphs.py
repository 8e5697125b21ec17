from __future__ import annotations

import numpy as np
import pytest

from fewshot_metric.data import EpisodeSampler, GlyphsDataset


def pixels(ds: GlyphsDataset, i: int) -> np.ndarray:
    return np.asarray(ds.load_image(i), dtype=np.float32)


def test_same_arguments_give_identical_pixels_and_seed_changes_them():
    a = GlyphsDataset("test", cache=False)
    b = GlyphsDataset("test", cache=True)
    other = GlyphsDataset("test", seed=1)
    for i in (0, 7, 1234, len(a) - 1):
        assert np.array_equal(pixels(a, i), pixels(b, i))
        assert not np.array_equal(pixels(a, i), pixels(other, i))
    assert b.load_image(7) is b.load_image(7)


def test_images_are_grayscale_glyphs_that_vary_within_a_class():
    ds = GlyphsDataset("val", image_size=32, images_per_class=4)
    image = ds.load_image(0)
    assert image.mode == "L" and image.size == (32, 32)
    first, second = pixels(ds, 0), pixels(ds, 1)
    assert first.min() < 64 and first.mean() > 170  # dark ink on mostly white paper
    assert not np.array_equal(first, second)
    assert ds[0][0].shape == (1, 32, 32)
    assert ds.labels.tolist()[:9] == [0, 0, 0, 0, 1, 1, 1, 1, 2]


def test_splits_are_disjoint_fixed_class_ranges_grouped_in_families():
    splits = {s: GlyphsDataset(s) for s in ("train", "val", "test")}
    names = {s: set(ds.class_names) for s, ds in splits.items()}
    assert [len(names[s]) for s in ("train", "val", "test")] == [700, 100, 200]
    assert not (names["train"] & names["val"] or names["train"] & names["test"]
                or names["val"] & names["test"])
    assert splits["val"].class_names[0] == "glyph00700"
    test = splits["test"]
    assert test.class_names[-1] == "glyph00999" and len(test) == 200 * 20
    families = sorted(set(test.class_groups))
    assert families == [f"family{f:03d}" for f in range(32, 40)]
    assert all(test.class_groups.count(f) == 25 for f in families)
    small = GlyphsDataset("train", n_classes=250)
    assert small.class_names[:3] == ["glyph00000", "glyph00001", "glyph00002"]
    assert len(small.class_names) == 175


def test_invalid_arguments_are_explained():
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        GlyphsDataset("dev")
    with pytest.raises(ValueError, match="n_classes=260 must be a multiple of 25"):
        GlyphsDataset(n_classes=260)


def test_raw_pixel_nearest_neighbour_is_above_chance_but_not_perfect():
    """5-way 1-shot nearest neighbour in raw pixel space on test classes (chance is 20%)."""
    ds = GlyphsDataset("test", n_classes=250, images_per_class=6)
    x = np.stack([pixels(ds, i).ravel() / 255 for i in range(len(ds))])
    sampler = EpisodeSampler(ds.labels, n_way=5, k_shot=1, n_query=5, n_episodes=100, seed=0)
    correct = []
    for indices in sampler:
        support, query = x[indices[:5]], x[indices[5:]]
        distances = ((query[:, None, :] - support[None, :, :]) ** 2).sum(-1)
        correct += (distances.argmin(1) == np.repeat(np.arange(5), 5)).tolist()
    accuracy = float(np.mean(correct))
    assert 0.3 < accuracy < 0.9, accuracy
