"""Embedder: a trained checkpoint as a function from images to np.float32 embeddings [N, D]."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from fewshot_metric.data import build_transform
from fewshot_metric.data.base import open_image
from fewshot_metric.model import FewShotModel
from fewshot_metric.training.checkpoint import load_model

ImageInput = str | Path | Image.Image


class Embedder:
    """Checkpoint -> preprocessing + backbone. `embed(images)` -> np.float32 [N, D]."""

    def __init__(self, model: FewShotModel, meta: dict[str, Any], source: str = "<memory>"):
        self.model = model.eval().to(memory_format=torch.channels_last)  # as in training
        self.meta = meta
        self.source = source
        self.transform = build_transform(model.backbone.input_config)

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> Embedder:
        model, meta = load_model(path)
        return cls(model, meta, str(path))

    @property
    def dim(self) -> int:
        return self.model.backbone.embed_dim

    @property
    def metric(self) -> str:
        """The metric the model was trained with: "sqeuclidean" or "cosine"."""
        return self.model.distance.name

    @property
    def fingerprint(self) -> str:
        """sha256 over the weights: identifies the model a store was built with."""
        digest = hashlib.sha256()
        for key, value in sorted(self.model.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def preprocess(self, image: ImageInput) -> torch.Tensor:
        """A path or PIL image -> tensor [C, H, W] exactly as in training."""
        if not isinstance(image, Image.Image):
            image = open_image(image, str(image))
        return self.transform(image)

    @torch.no_grad()
    def embed(self, images: Sequence[ImageInput] | torch.Tensor, batch_size: int = 64,
              progress: bool = False) -> np.ndarray:
        """Paths, PIL images, or preprocessed tensors [N, C, H, W] -> np.float32 [N, D]."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if isinstance(images, torch.Tensor) and images.dim() == 3:
            images = images.unsqueeze(0)
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in tqdm(range(0, len(images), batch_size), desc="embed",
                          disable=not progress, leave=False):
            chunk = images[start:start + batch_size]
            if not isinstance(chunk, torch.Tensor):
                chunk = torch.stack([self.preprocess(image) for image in chunk])
            chunk = chunk.float().contiguous(memory_format=torch.channels_last)
            out[start:start + len(chunk)] = self.model.embed(chunk).cpu().numpy()
        return out
