"""Shared fixtures: the Omniglot data in ../shared (read in place, never copied)."""

from __future__ import annotations

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
