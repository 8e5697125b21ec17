"""Tiny clustered embeddings shared by the store tests."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def blobs():
    """blobs(n_classes, shots, dim, seed) -> (embeddings float32 [n_classes * shots, dim],
    labels [n_classes * shots] "c0".., interleaved, centres [n_classes, dim]): classes are
    well-separated centres (spread 10) with small noise (0.3)."""

    def make(n_classes: int, shots: int, dim: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        centres = rng.normal(0.0, 10.0, (n_classes, dim))
        which = np.tile(np.arange(n_classes), shots)
        emb = centres[which] + rng.normal(0.0, 0.3, (len(which), dim))
        return emb.astype(np.float32), [f"c{i}" for i in which], centres.astype(np.float32)

    return make
