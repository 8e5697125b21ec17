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


def test_decode_steps_are_the_batches_that_fit_in_decode_bytes(
        trained: Trainer, monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = Embedder.from_checkpoint(trained.out_dir / "last.safetensors")
    image_bytes = 1 * 28 * 28  # the quickstart's Conv-4 input
    monkeypatch.setattr("fewshot_metric.embedder.DECODE_BYTES", 75 * image_bytes)
    # batches of 10: 7 of them (70 images) fit in 75 images' pixels
    steps = [(s.start, s.stop) for s in embedder._decode_steps(215, 10)]
    assert steps == [(0, 70), (70, 140), (140, 210), (210, 215)]
    assert list(embedder._decode_steps(0, 10)) == []
    monkeypatch.setattr("fewshot_metric.embedder.DECODE_BYTES", 1)  # less than one batch
    assert [s.stop for s in embedder._decode_steps(25, 10)] == [10, 20, 25]


def test_embedding_files_in_many_steps_equals_one_step(trained: Trainer, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    embedder = Embedder.from_checkpoint(trained.out_dir / "last.safetensors")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(23):  # at the model's size (batch-decoded) and not (decoded one by one)
        size = (28, 28) if i % 4 else (35, 30)
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(rng.integers(0, 256, size, dtype=np.uint8)).save(paths[-1])
    whole = embedder.embed(paths, batch_size=4)
    monkeypatch.setattr("fewshot_metric.embedder.DECODE_BYTES", 28 * 28)  # steps of one batch
    np.testing.assert_array_equal(embedder.embed(paths, batch_size=4), whole)
    expected = embedder.embed(torch.stack([embedder.preprocess(path) for path in paths]), 4)
    np.testing.assert_array_equal(whole, expected)
