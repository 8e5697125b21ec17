"""Shared fixtures: the Omniglot data in ../shared (read in place, never copied)."""

from __future__ import annotations

# isort: off
import fewshot_metric.blas  # noqa: F401  (before any test module imports faiss: fast kernels)
# isort: on
import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OMNIGLOT_DIR = PROJECT_ROOT.parent / "shared" / "data" / "omniglot"


@pytest.fixture(scope="session")
def omniglot_dir() -> Path:
    """Folder with the Omniglot authors' zips; a failure in CI, a skip elsewhere."""
    if not (OMNIGLOT_DIR / "images_background_small1.zip").is_file():
        message = (
            f"Omniglot data not found at {OMNIGLOT_DIR}; see data/README.md "
            "for how to get it"
        )
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return OMNIGLOT_DIR


def train_tiny_checkpoint(out: Path) -> Path:
    """Trains the quickstart recipe for 2 tiny episodes into `out` -> its best.safetensors.
    (A plain function, so benchmarks/reliability.py can use it too.)"""
    from fewshot_metric.config import load_recipe
    from fewshot_metric.training.trainer import Trainer

    recipe = load_recipe(PROJECT_ROOT / "recipes" / "quickstart.yaml",
                         ["train.steps=2", "train.n_way=5", "train.k_shot=1", "train.n_query=1",
                          "train.val_interval=2", "train.val_episodes=2",
                          "train.val_n_query=1"])
    Trainer(recipe, out, progress=False).fit()
    return out / "best.safetensors"


def write_glyph_images(root: Path, classes: int, images: int) -> dict[str, list[Path]]:
    """PNG files of the first `classes` held-out glyph classes, `images` each:
    root/<class>/<i>.png -> {class: paths}."""
    from fewshot_metric.data import GlyphsDataset

    dataset = GlyphsDataset("test", images_per_class=images)
    found: dict[str, list[Path]] = {}
    for i in range(classes * images):
        path = root / dataset.class_names[dataset.labels[i]] / f"{i % images}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        dataset.load_image(i).save(path)
        found.setdefault(path.parent.name, []).append(path)
    return found


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    """best.safetensors of the quickstart recipe trained for 2 tiny episodes."""
    return train_tiny_checkpoint(tmp_path_factory.mktemp("tiny_run"))


@pytest.fixture(scope="session")
def glyph_images(tmp_path_factory) -> Path:
    """PNG files of 4 held-out glyph classes, 6 images each: ROOT/<class>/<i>.png."""
    root = tmp_path_factory.mktemp("glyph_images")
    write_glyph_images(root, 4, 6)
    return root
