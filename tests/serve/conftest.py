"""Fixtures of the server tests: a classifier on the tiny checkpoint, its app under
starlette's TestClient, and the glyph images as upload parts."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from fewshot_metric import FewShotClassifier
from fewshot_metric.serve import ServeOptions, create_app


@pytest.fixture
def classifier(tiny_checkpoint: Path) -> FewShotClassifier:
    return FewShotClassifier.from_checkpoint(tiny_checkpoint)


@pytest.fixture
def names(glyph_images: Path) -> list[str]:
    """The 4 glyph class names, sorted."""
    return sorted(p.name for p in glyph_images.iterdir())


@pytest.fixture
def serve(classifier: FewShotClassifier) -> Iterator[Callable[..., TestClient]]:
    """serve(owner=None, thumbnails=None, **options) -> a TestClient of create_app(classifier,
    ServeOptions(**options), owner=owner, thumbnails=thumbnails), its lifespan running until
    the end of the test."""
    clients: list[TestClient] = []

    def start(owner=None, thumbnails=None, **options) -> TestClient:
        app = create_app(classifier, ServeOptions(**options), owner=owner, thumbnails=thumbnails)
        clients.append(TestClient(app).__enter__())
        return clients[-1]

    yield start
    for client in reversed(clients):
        client.__exit__(None, None, None)
