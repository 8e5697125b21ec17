"""Recipe schema: typed sections, YAML loading with `safe_load`, and `--set section.key=value`.

Unknown keys and wrong types are errors that name the recipe file and the dotted key.
Values left out (or given as null where the default is not null) keep their defaults.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A recipe or override that does not match the schema."""


@dataclass
class DataConfig:
    kind: str = "glyphs"  # glyphs | omniglot | folder | csv
    root: str | None = None  # data folder (omniglot zips, class folders, split CSVs)
    train_split: str = "train"
    val_split: str = "val"
    test_split: str = "test"
    rotations: bool = False  # Omniglot: 90/180/270-degree copies as extra classes
    cache: bool = True  # keep decoded images in memory
    preload: bool = True  # keep preprocessed train/val images in memory (filled on first use)


@dataclass
class ModelConfig:
    backbone: str = "conv4"
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    pretrained: bool = False
    weights: str | None = None  # local weights file for the backbone (offline)
    head: str = "prototypical"  # prototypical | matching | siamese
    metric: str = "sqeuclidean"  # sqeuclidean | cosine
    head_kwargs: dict[str, Any] = field(default_factory=dict)
    metric_kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class TrainConfig:
    steps: int = 2000
    n_way: int = 20
    k_shot: int = 5
    n_query: int = 5
    optimizer: str = "adam"  # adam | adamw | sgd
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    scheduler: str = "step"  # step | cosine | none
    step_size: int = 1000  # step scheduler: decay every step_size steps
    gamma: float = 0.5
    positive_fraction: float = 0.5  # siamese: share of positive pairs
    pairs_per_step: int = 256  # siamese: pairs mined from each labelled batch
    margin: float = 1.0  # siamese: contrastive margin
    val_interval: int = 200
    val_episodes: int = 200
    val_n_way: int = 5
    val_k_shot: int = 1
    val_n_query: int = 15
    augment: bool = False  # random affine warp of each training image (after the cache)
    augment_rotate: float = 10.0  # degrees, +-
    augment_scale: float = 0.1  # zoom 1 +- this
    augment_shift: float = 0.1  # shift, +- this fraction of the image size
    amp: str = "none"  # mixed precision: none | bf16 | fp16 (fp16: CUDA only)
    sync_batchnorm: bool = False  # distributed on CUDA: batch-norm statistics over all ranks
    meta_batch: int | None = None  # tasks per step, split over torchrun ranks; null: 1 a rank


@dataclass
class EvalConfig:
    n_way: int = 5
    k_shot: int = 1
    n_query: int = 15
    episodes: int = 1000
    same_group: bool = False  # all classes of a task from one group (e.g. one alphabet)


@dataclass
class Recipe:
    name: str = "run"
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _type_ok(value: Any, annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is Any:
        return True
    if origin is dict or annotation is dict:
        return isinstance(value, dict)
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    return isinstance(value, annotation)


def _build(cls: type, values: dict[str, Any], prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        dotted = f"{prefix}{key}"
        if key not in known:
            raise ConfigError(
                f"{source}: unknown key '{dotted}'; valid keys here: {', '.join(sorted(known))}"
            )
        annotation = hints[key]
        if dataclasses.is_dataclass(annotation):
            if not isinstance(value, dict):
                raise ConfigError(f"{source}: '{dotted}' must be a mapping of keys")
            kwargs[key] = _build(annotation, value, f"{dotted}.", source)
            continue
        if value is None and not _type_ok(None, annotation):
            continue  # None never overrides a default
        if not _type_ok(value, annotation):
            expected = getattr(annotation, "__name__", str(annotation))
            raise ConfigError(
                f"{source}: '{dotted}' must be {expected}, got {type(value).__name__} "
                f"{value!r}"
            )
        kwargs[key] = float(value) if annotation is float else value
    return cls(**kwargs)


def _apply_override(values: dict[str, Any], assignment: str) -> None:
    if "=" not in assignment:
        raise ConfigError(f"--set '{assignment}': expected section.key=value")
    dotted, raw = assignment.split("=", 1)
    keys = dotted.strip().split(".")
    node = values
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set '{assignment}': '{key}' is not a section")
    node[keys[-1]] = yaml.safe_load(raw)


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Reads a recipe YAML (or the defaults when path is None) and applies `--set` overrides."""
    source = str(path) if path is not None else "<defaults>"
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"recipe file not found: {path}; see recipes/ for examples")
        try:
            with open(path, encoding="utf-8") as stream:  # marks name the file, not a str
                values = yaml.safe_load(stream) or {}
        except (yaml.YAMLError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{source}: not valid YAML: {exc}. Fix the place shown; a recipe "
                              f"is UTF-8 text of mappings, lists, strings, numbers and booleans "
                              f"(tags such as !!python/... are refused)") from exc
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: a recipe must be a mapping of sections")
        values.setdefault("name", path.stem)
    for assignment in overrides or []:
        _apply_override(values, assignment)
    if overrides:
        source = f"{source} with --set {' '.join(overrides)}"
    return _build(Recipe, values, "", source)


def recipe_from_dict(values: dict[str, Any], source: str = "<checkpoint>") -> Recipe:
    """Rebuilds a resolved recipe saved with a run."""
    return _build(Recipe, values, "", source)
