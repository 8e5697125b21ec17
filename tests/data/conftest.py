"""Fixtures for the data tests: tiny constant images written with PIL."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image

WriteImage = Callable[..., Path]


def _write_image(path: Path, value: int | tuple[int, ...] = 0, mode: str = "L",
                 size: tuple[int, int] = (6, 4)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, value).save(path)
    return path


@pytest.fixture
def write_image() -> WriteImage:
    """`write_image(path, value=0, mode="L", size=(W, H))` saves a constant image, returns path."""
    return _write_image
