"""Local weights files: read a state dict without pickle and load it strictly into a module."""

from __future__ import annotations

import os
import pickle
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

FILE_HINT = "a .safetensors file or a state_dict saved with torch.save"
UNSAFE_PICKLE = ("torch.load(weights_only=True) refused it: it is damaged, or it holds pickled "
                 "Python objects beyond tensors and plain values, which are never loaded "
                 "because loading them can run code")


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Tensors by key from `path`: safetensors if it ends in .safetensors, otherwise
    `torch.load(..., weights_only=True)`; a {"state_dict": {...}} wrapper is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; pass {FILE_HINT}")
    try:
        if path.suffix == ".safetensors":
            state = load_file(path, device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:  # torch's text suggests weights_only=False: not shown
        raise ValueError(f"weights file {path} could not be read: {UNSAFE_PICKLE}; "
                         f"pass {FILE_HINT}") from err
    except (SafetensorError, RuntimeError, EOFError) as err:
        raise ValueError(
            f"weights file {path} could not be read ({err}); pass {FILE_HINT}"
        ) from err
    if isinstance(state, Mapping) and isinstance(state.get("state_dict"), Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in state.items()
    ):
        raise ValueError(
            f"weights file {path} does not hold a state dict (str keys -> tensors); "
            f"pass {FILE_HINT}"
        )
    return dict(state)


def _preview(keys: Iterable[str], limit: int = 5) -> str:
    keys = sorted(keys)
    more = f" ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


def load_checked(
    module: nn.Module,
    state: Mapping[str, torch.Tensor],
    *,
    source: str | os.PathLike[str],
    owner: str,
    ignored_keys: frozenset[str] = frozenset(),
) -> None:
    """Load `state` into `module` strictly, after dropping `ignored_keys` the module lacks;
    any missing, unexpected or mis-shaped key raises a ValueError naming `source`."""
    expected = module.state_dict()
    state = {k: v for k, v in state.items() if k in expected or k not in ignored_keys}
    missing = expected.keys() - state.keys()
    unexpected = state.keys() - expected.keys()
    mismatched = [
        f"{key} {tuple(value.shape)} in file vs {tuple(expected[key].shape)} in model"
        for key, value in sorted(state.items())
        if key in expected and value.shape != expected[key].shape
    ]
    problems = [
        f"{label}: {text}"
        for label, text in (
            ("missing keys", _preview(missing)),
            ("unexpected keys", _preview(unexpected)),
            ("shape mismatches", "; ".join(mismatched[:5])),
        )
        if text
    ]
    if problems:
        raise ValueError(
            f"weights file {source} does not fit backbone {owner!r}: " + " | ".join(problems)
            + ". Build the backbone with the name and kwargs (in_chans, image_size, ...) the "
            "weights were saved with"
        )
    module.load_state_dict(state)
