"""Data: few-shot datasets (glyphs, Omniglot, image folders, split CSVs), preprocessing and
the episode sampler."""

from fewshot_metric.data.base import FewShotDataset, FileListDataset
from fewshot_metric.data.factory import DATASET_KINDS, build_dataset
from fewshot_metric.data.glyphs import GlyphsDataset
from fewshot_metric.data.image_folder import ImageFolderDataset
from fewshot_metric.data.omniglot import OmniglotDataset
from fewshot_metric.data.sampler import EpisodeSampler, split_episode
from fewshot_metric.data.split_csv import SplitCSVDataset
from fewshot_metric.data.transforms import build_transform, convert_mode

__all__ = [
    "DATASET_KINDS",
    "EpisodeSampler",
    "FewShotDataset",
    "FileListDataset",
    "GlyphsDataset",
    "ImageFolderDataset",
    "OmniglotDataset",
    "SplitCSVDataset",
    "build_dataset",
    "build_transform",
    "convert_mode",
    "split_episode",
]
