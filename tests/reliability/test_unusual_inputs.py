"""Valid but unusual images and labels are used as a viewer shows them, never refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from corpus import (
    STORED_UNUSUAL_LABELS,
    UNUSUAL_IMAGES,
    VALID_UNUSUAL_LABELS,
    exif_upright,
    write_good_images,
    write_unusual_images,
)
from PIL import Image

from fewshot_metric import Embedder, FewShotClassifier
from fewshot_metric.cli import main
from fewshot_metric.data.base import open_image
from fewshot_metric.data.transforms import convert_mode


@pytest.fixture(scope="module")
def unusual(tmp_path_factory) -> dict[str, Path]:
    return write_unusual_images(tmp_path_factory.mktemp("unusual"))


@pytest.fixture(scope="module")
def embedder(tiny_checkpoint: Path) -> Embedder:
    return Embedder.from_checkpoint(tiny_checkpoint)


def model_input(embedder: Embedder, image: Path | Image.Image) -> np.ndarray:
    """What the model sees of `image` (embedder.preprocess), back in 0..255: [28, 28]."""
    tensor = embedder.preprocess(image).numpy()[0]
    mean, std = embedder.transform.mean[0], embedder.transform.std[0]
    return np.rint((tensor * std + mean) * 255)


def rgb(path: Path) -> np.ndarray:
    return np.asarray(convert_mode(open_image(path, str(path)), 3)).astype(int)


def test_a_1x1_image_is_upsampled_to_the_model_size(embedder: Embedder,
                                                    unusual: dict[str, Path]) -> None:
    pixels = model_input(embedder, unusual["one_by_one"])
    assert pixels.shape == (28, 28) and (pixels == 200).all()


def test_16_bit_gray_is_scaled_to_8_bits(embedder: Embedder, unusual: dict[str, Path]) -> None:
    image = open_image(unusual["gray16"], "gray16")
    assert image.mode == "I;16" and np.asarray(image).max() == 200 * 257
    pixels = model_input(embedder, unusual["gray16"])
    assert (pixels[:, :14] == 50).all() and (pixels[:, 14:] == 200).all()


def test_a_palette_image_uses_its_colours(embedder: Embedder, unusual: dict[str, Path]) -> None:
    pixels = model_input(embedder, unusual["palette"])
    # gray = 0.299 R + 0.587 G + 0.114 B, rounded down: red 76.2 -> 76, blue 29.1 -> 29
    assert (pixels[:, :14] == 76).all() and (pixels[:, 14:] == 29).all()
    colours = rgb(unusual["palette"])
    assert (colours[:, :14] == [255, 0, 0]).all() and (colours[:, 14:] == [0, 0, 255]).all()


def test_transparency_is_composited_on_white(embedder: Embedder,
                                             unusual: dict[str, Path]) -> None:
    pixels = model_input(embedder, unusual["rgba"])
    assert (pixels[:14] == 0).all()  # opaque black
    assert (pixels[14:, :14] == 255).all()  # transparent: the white background
    assert (pixels[14:, 14:] == 127).all()  # alpha 128: 255 * (255 - 128) / 255 = 127
    assert (rgb(unusual["rgba"])[14:, :14] == 255).all()


def test_a_cmyk_jpeg_is_converted(embedder: Embedder, unusual: dict[str, Path]) -> None:
    assert Image.open(unusual["cmyk_jpeg"]).mode == "CMYK"
    # CMYK (0, 255, 255, 0) is red: gray 76 (JPEG may move it a little)
    assert np.abs(model_input(embedder, unusual["cmyk_jpeg"]) - 76).max() <= 2
    assert np.abs(rgb(unusual["cmyk_jpeg"]) - [255, 0, 0]).max() <= 3


def test_an_exif_rotated_photo_is_read_upright(embedder: Embedder,
                                               unusual: dict[str, Path]) -> None:
    image = open_image(unusual["exif_rotated"], "exif_rotated")
    assert image.size == exif_upright().size == (32, 48)
    upright = model_input(embedder, exif_upright())
    assert np.abs(model_input(embedder, unusual["exif_rotated"]) - upright).max() <= 2
    with Image.open(unusual["exif_rotated"]) as stored:  # as stored, not turned: different
        assert np.abs(model_input(embedder, stored.copy()) - upright).max() > 200


def test_an_animated_gif_gives_its_first_frame(embedder: Embedder,
                                               unusual: dict[str, Path]) -> None:
    with Image.open(unusual["animated_gif"]) as gif:
        assert gif.n_frames == 2
        gif.seek(1)
        assert np.asarray(gif.convert("L")).min() == 220
    assert (model_input(embedder, unusual["animated_gif"]) == 30).all()


def test_unusual_images_register_through_the_api_and_the_cli(
        tiny_checkpoint: Path, unusual: dict[str, Path], tmp_path: Path, capsys) -> None:
    images = [unusual[name] for name in UNUSUAL_IMAGES]
    classifier = FewShotClassifier.from_checkpoint(tiny_checkpoint)
    assert classifier.register("unusual", images) == 7
    assert main(["register", "--store", str(tmp_path / "store"), "--checkpoint",
                 str(tiny_checkpoint), "--label", "unusual", *map(str, images), "--quiet"]) == 0
    assert "unusual: 7 shots" in capsys.readouterr().out


def test_unusual_labels_work_and_survive_save_and_load(tiny_checkpoint: Path,
                                                       tmp_path: Path) -> None:
    given, labels = list(VALID_UNUSUAL_LABELS.values()), list(STORED_UNUSUAL_LABELS.values())
    good = write_good_images(tmp_path / "good")
    classifier = FewShotClassifier.from_checkpoint(tiny_checkpoint)
    counts = classifier.register_many({label: [good["h0"], good["h1"]] for label in given})
    assert counts == dict.fromkeys(given, 2)
    classifier.register("a/b", [good["v0"]])  # now the nearest class of v0
    classifier.save(tmp_path / "store")
    loaded = FewShotClassifier.load(tmp_path / "store")
    assert loaded.classes == labels and loaded.store.counts["a/b"] == 3
    assert loaded.query([good["v1"]], k=len(labels))[0].labels[0] == "a/b"
    assert sorted(loaded.query([good["h0"]], k=len(labels))[0].labels) == sorted(labels)
