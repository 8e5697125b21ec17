"""Opens the data split a recipe names, with the backbone's preprocessing."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm import tqdm

from fewshot_metric.config import DataConfig
from fewshot_metric.data import FewShotDataset, build_dataset


def open_split(config: DataConfig, split: str, transform: Callable) -> FewShotDataset:
    """The dataset for `split` ("train", "val", "test", or a CSV/folder path) of a recipe."""
    kwargs: dict = {"cache": config.cache}
    if config.root is not None:
        kwargs["root"] = config.root
    if config.kind == "omniglot":
        kwargs["rotations"] = config.rotations
    dataset = build_dataset(config.kind, split=split, **kwargs)
    dataset.transform = transform
    return dataset


def preload_images(dataset: FewShotDataset, indices=None, progress: bool = True
                   ) -> torch.Tensor:
    """Preprocesses images `indices` [n] (default: all) into a contiguous tensor [n, C, H, W];
    `progress`: a bar on stderr for 2,000 images or more."""
    indices = range(len(dataset)) if indices is None else indices
    first, _ = dataset[int(indices[0])]
    images = torch.empty((len(indices), *first.shape), dtype=first.dtype)
    for row, i in enumerate(tqdm(indices, desc="preprocess", leave=False, mininterval=2.0,
                                 disable=not progress or len(indices) < 2000)):
        images[row] = dataset[int(i)][0]
    return images
