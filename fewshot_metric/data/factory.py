"""build_dataset: a dataset from a kind name, a split and a root folder (as recipes give them)."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from fewshot_metric.data.base import FewShotDataset
from fewshot_metric.data.glyphs import GlyphsDataset
from fewshot_metric.data.image_folder import ImageFolderDataset
from fewshot_metric.data.omniglot import OmniglotDataset
from fewshot_metric.data.split_csv import SplitCSVDataset

DATASET_KINDS = {
    "glyphs": GlyphsDataset,
    "omniglot": OmniglotDataset,
    "folder": ImageFolderDataset,
    "csv": SplitCSVDataset,
}


def _split_path(kind: str, split: str, root: str | Path | None, suffix: str) -> Path:
    """A split given as a path (has a '/' or ends in `suffix`) as is, a name as
    `root/<split><suffix>`."""
    if "/" in split or (suffix and split.endswith(suffix)):
        return Path(split)
    if root is None:
        raise ValueError(
            f"build_dataset: kind '{kind}' needs a root folder for split '{split}' "
            f"(read from root/{split}{suffix}); set data.root or give the split as a path"
        )
    return Path(root) / f"{split}{suffix}"


def build_dataset(kind: str, split: str, root: str | Path | None = None,
                  **kwargs: Any) -> FewShotDataset:
    """The `split` of a dataset `kind`; extra keyword arguments go to the dataset class.

    glyphs: built in, no root; split train | val | test | all.
    omniglot: root holds the zips or folders; split train | val | test | all.
    folder: root/<split>/<class>/<images>, or split given as a folder path ("data/test").
    csv: root/<split>.csv with images in root/images, or split given as a path ("x/test.csv").
    """
    if kind not in DATASET_KINDS:
        raise ValueError(
            f"build_dataset: unknown data kind '{kind}'; choose one of {', '.join(DATASET_KINDS)}"
        )
    cls = DATASET_KINDS[kind]
    accepted = set(inspect.signature(cls).parameters)
    unknown = sorted(set(kwargs) - accepted)
    if unknown:
        raise TypeError(
            f"build_dataset: kind '{kind}' does not take {', '.join(unknown)}; "
            f"it takes {', '.join(sorted(accepted))}"
        )
    if kind == "glyphs":
        if root is not None:
            raise ValueError(
                f"build_dataset: kind 'glyphs' is generated and takes no root (got {root}); "
                "leave data.root unset"
            )
        return GlyphsDataset(split=split, **kwargs)
    if kind == "omniglot":
        if root is None:
            raise ValueError(
                "build_dataset: kind 'omniglot' needs root, the folder with the Omniglot zips "
                "(e.g. ../shared/data/omniglot); see data/README.md"
            )
        return OmniglotDataset(root, split=split, **kwargs)
    if kind == "folder":
        return ImageFolderDataset(_split_path(kind, split, root, ""), **kwargs)
    return SplitCSVDataset(_split_path(kind, split, root, ".csv"), **kwargs)
