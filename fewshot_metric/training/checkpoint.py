"""Checkpoints: weights as safetensors, everything else as JSON in the file's metadata.

A serving checkpoint (`best.safetensors`, `last.safetensors`) holds the weights, the model spec
(backbone name and config, input preprocessing, head, metric), the resolved recipe and run info.
Optimizer, scheduler, step and RNG state for `--resume` live beside it in `<name>.state.pt`,
written with `torch.save` and read with `torch.load(weights_only=True)`: no pickled objects.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from fewshot_metric.atomic import atomic_write
from fewshot_metric.backbones.weights import UNSAFE_PICKLE
from fewshot_metric.model import FewShotModel

FORMAT = "fewshot_metric.checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A file that is missing, damaged or not a fewshot_metric checkpoint."""


def save_checkpoint(path: str | Path, model: FewShotModel, recipe: dict[str, Any],
                    info: dict[str, Any]) -> None:
    """Atomically writes weights + spec + recipe + info to `path` (.safetensors)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "spec": json.dumps(model.spec()),
        "recipe": json.dumps(recipe),
        "info": json.dumps(info),
    }
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def read_checkpoint(path: str | Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Returns (metadata with spec/recipe/info decoded, tensors); CheckpointError if unusable."""
    path = Path(path)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "not found"
        raise CheckpointError(f"checkpoint {problem}: {path}; pass a .safetensors file, or "
                              "train one with `fewshot-metric train RECIPE` (it writes "
                              "<out>/best.safetensors)")
    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint ({exc}); it may be "
                              "truncated or another kind of file: use a .safetensors file "
                              "written by `fewshot-metric train`") from exc
    if raw.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a fewshot_metric "
                              "checkpoint (no model spec in its metadata)")
    try:
        version = int(raw.get("format_version", "0"))
        meta = {key: json.loads(raw[key]) for key in ("spec", "recipe", "info")}
    except (KeyError, ValueError) as exc:  # json.JSONDecodeError is a ValueError
        raise CheckpointError(f"{path}: checkpoint metadata is damaged ({exc!r}); use an "
                              f"undamaged copy or train again") from exc
    if version > FORMAT_VERSION:
        raise CheckpointError(f"{path} has checkpoint format {version}; this fewshot_metric "
                              f"reads up to {FORMAT_VERSION}: upgrade fewshot_metric")
    meta["format_version"] = version
    return meta, tensors


def load_model(path: str | Path) -> tuple[FewShotModel, dict[str, Any]]:
    """Rebuilds the model from a checkpoint; returns (model in eval mode, metadata)."""
    meta, tensors = read_checkpoint(path)
    try:
        model = FewShotModel.from_spec(meta["spec"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: the model spec in its metadata does not describe a "
                              f"model ({exc!r}); use an undamaged copy or train again") from exc
    try:
        model.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not match the model spec ({exc}); use an "
                              f"undamaged copy or train again") from exc
    return model.eval(), meta


def save_train_state(path: str | Path, state: dict[str, Any]) -> None:
    """Atomically writes optimizer/scheduler/step/RNG state (tensors and plain values only)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_train_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no training state at {path}: --resume needs the run folder "
                              "of an earlier `fewshot-metric train` (with last.state.pt)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # torch's text suggests weights_only=False: not shown
        raise CheckpointError(f"{path}: cannot load training state safely: {UNSAFE_PICKLE}; "
                              "restore the last.state.pt that `fewshot-metric train` wrote, "
                              "or start a new run without --resume") from exc
    except Exception as exc:  # torch raises several types for bad files
        raise CheckpointError(f"{path}: cannot load training state safely ({exc})") from exc
