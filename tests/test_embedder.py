"""Embedder round trip: train a tiny model, save, load, embed: identical vectors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fewshot_metric import Embedder
from fewshot_metric.config import load_recipe
from fewshot_metric.data import build_transform
from fewshot_metric.training.trainer import Trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Trainer:
    out = tmp_path_factory.mktemp("run")
    recipe = load_recipe(None, ["train.steps=2", "train.n_way=5", "train.k_shot=1",
                                "train.n_query=1", "train.val_interval=2",
                                "train.val_episodes=2", "train.val_n_query=1"])
    trainer = Trainer(recipe, out, progress=False)
    trainer.fit()
    return trainer


def images(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (40, 30), dtype=np.uint8)) for _ in range(n)]


def test_saved_and_loaded_embedder_gives_identical_vectors(trained: Trainer,
                                                            tmp_path: Path) -> None:
    embedder = Embedder.from_checkpoint(trained.out_dir / "last.safetensors")
    pil = images(5)
    transform = build_transform(trained.model.backbone.input_config)
    batch = torch.stack([transform(image) for image in pil])
    batch = batch.contiguous(memory_format=torch.channels_last)  # the trainer's layout
    trained.model.eval()
    with torch.no_grad():
        expected = trained.model.embed(batch).numpy()
        loaded = embedder.model.embed(batch).numpy()
    np.testing.assert_array_equal(loaded, expected)  # the checkpoint holds the exact weights
    got = embedder.embed(pil, batch_size=5)
    assert got.dtype == np.float32 and got.shape == (5, embedder.dim) == (5, 64)
    # embed runs the copy with batch norm folded into the convolutions, and other batch
    # sizes run other kernels: equal up to float32 rounding
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(embedder.embed(batch), got)
    np.testing.assert_allclose(embedder.embed(pil, batch_size=2), expected, atol=1e-6)

    paths = []
    for i, image in enumerate(pil):
        paths.append(tmp_path / f"{i}.png")
        image.save(paths[-1])
    np.testing.assert_array_equal(embedder.embed(paths, batch_size=5), got)
    assert embedder.metric == "sqeuclidean"


def test_fingerprint_tells_models_apart(trained: Trainer) -> None:
    last = Embedder.from_checkpoint(trained.out_dir / "last.safetensors")
    same = Embedder.from_checkpoint(trained.out_dir / "last.safetensors")
    changed = Embedder.from_checkpoint(trained.out_dir / "last.safetensors")
    with torch.no_grad():
        changed.model.backbone.parameters().__next__().add_(1.0)
    assert last.fingerprint == same.fingerprint
    assert last.fingerprint != changed.fingerprint


def test_unreadable_image_is_named(trained: Trainer, tmp_path: Path) -> None:
    embedder = Embedder.from_checkpoint(trained.out_dir / "last.safetensors")
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    with pytest.raises(OSError, match=r"cannot decode image .*bad\.png"):
        embedder.embed([bad])
    with pytest.raises(FileNotFoundError, match="missing.png"):
        embedder.embed([tmp_path / "missing.png"])


def test_exif_rotated_photo_is_read_upright(tmp_path: Path) -> None:
    from fewshot_metric.data.base import open_image

    rng = np.random.default_rng(1)
    stored = Image.fromarray(rng.integers(0, 255, (30, 40), dtype=np.uint8))  # 40 wide, 30 high
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: a viewer turns the stored pixels 90 degrees clockwise
    stored.save(tmp_path / "photo.png", exif=exif)
    upright = open_image(tmp_path / "photo.png", "photo.png")
    assert upright.size == (30, 40)
    clockwise = stored.transpose(Image.Transpose.ROTATE_270)
    assert np.array_equal(np.asarray(upright), np.asarray(clockwise))
