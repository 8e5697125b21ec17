"""What every backbone is: an image embedder [B, C, H, W] -> [B, embed_dim] with an InputConfig."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fewshot_metric.backbones.weights import load_checked, read_state_dict

INTERPOLATIONS = ("nearest", "nearest-exact", "bilinear", "bicubic", "box", "hamming", "lanczos")


def image_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    """`image_size` as an int (square) or (H, W) -> (H, W) of positive ints."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int) and s > 0 for s in size):
        raise ValueError(
            "image_size must be a positive int or a pair (H, W) of positive ints; "
            f"got {image_size!r}"
        )
    return size


@dataclass(frozen=True)
class InputConfig:
    """Preprocessing a backbone expects: images resized to `image_size` (H, W) with
    `interpolation`, `channels` channels, normalised as (x - mean) / std per channel."""

    image_size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_size", image_hw(self.image_size))
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if not isinstance(self.channels, int) or self.channels < 1:
            raise ValueError(f"InputConfig channels must be a positive int; got {self.channels!r}")
        for key in ("mean", "std"):
            if len(getattr(self, key)) != self.channels:
                raise ValueError(
                    f"InputConfig {key} needs one value per channel ({self.channels}); "
                    f"got {getattr(self, key)}"
                )
        if any(s <= 0 for s in self.std):
            raise ValueError(f"InputConfig std values must be > 0; got {self.std}")
        if self.interpolation not in INTERPOLATIONS:
            raise ValueError(
                f"InputConfig interpolation {self.interpolation!r} is not one of {INTERPOLATIONS}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (lists for tuples); `InputConfig.from_dict` inverts it."""
        return {
            "image_size": list(self.image_size),
            "channels": self.channels,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputConfig:
        """Inverse of `to_dict`; names missing or unknown keys."""
        expected = {"image_size", "channels", "mean", "std", "interpolation"}
        missing, unknown = expected - data.keys(), data.keys() - expected
        if missing or unknown:
            raise ValueError(
                f"InputConfig.from_dict: missing keys {sorted(missing)}, unknown keys "
                f"{sorted(unknown)}; expected exactly {sorted(expected)}"
            )
        return cls(**data)


class Backbone(nn.Module):
    """An image embedder: images [B, C, H, W] -> embeddings [B, embed_dim].

    Wraps `network` (whose output is already pooled/flattened to [B, embed_dim]). Inputs with
    1 channel are repeated to 3 for an RGB network; 3-channel inputs are averaged to gray for
    a 1-channel network. `config()` holds the name and constructor kwargs, so
    `create_backbone(**backbone.config())` rebuilds the same architecture.
    """

    def __init__(
        self,
        name: str,
        network: nn.Module,
        embed_dim: int,
        input_config: InputConfig,
        build_kwargs: dict[str, Any],
        ignored_weight_keys: frozenset[str] = frozenset(),
    ) -> None:
        """`ignored_weight_keys`: keys dropped from a weights file when `network` lacks them
        (a timm classifier head)."""
        super().__init__()
        self.name = name
        self.network = network
        self.embed_dim = embed_dim
        self.input_config = input_config
        self.ignored_weight_keys = ignored_weight_keys
        self._build_kwargs = dict(build_kwargs)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] -> embeddings [B, embed_dim]."""
        embeddings = self.network(self.match_channels(images))
        if embeddings.shape[1:] != (self.embed_dim,):
            raise ValueError(
                f"backbone {self.name!r} gave embeddings of shape {tuple(embeddings.shape)} for "
                f"images {tuple(images.shape)}; expected [B, {self.embed_dim}]. Resize images to "
                f"image_size {self.input_config.image_size} or rebuild the backbone with "
                "image_size set to the size you feed"
            )
        return embeddings

    def match_channels(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, C, H, W] -> [B, channels, H, W]: 1 -> 3 by repeating, 3 -> 1 by mean."""
        if images.ndim != 4:
            raise ValueError(
                f"backbone {self.name!r} expects images [B, C, H, W]; got shape "
                f"{tuple(images.shape)}"
            )
        have, want = images.shape[1], self.input_config.channels
        if have == want:
            return images
        if have == 1 and want == 3:
            return images.expand(-1, 3, -1, -1)
        if have == 3 and want == 1:
            return images.mean(dim=1, keepdim=True)
        raise ValueError(
            f"backbone {self.name!r} expects {want} input channel(s) but got images with {have}; "
            "only 1 <-> 3 channels are converted. Build it with in_chans="
            f"{have} or convert the images"
        )

    def config(self) -> dict[str, Any]:
        """JSON-safe {"name": ..., **constructor kwargs} for `create_backbone(**config)`."""
        for key, value in self._build_kwargs.items():
            try:
                json.dumps(value)
            except (TypeError, ValueError) as err:
                raise TypeError(
                    f"backbone {self.name!r} was built with {key}={value!r}, which is not "
                    "JSON-safe, so a checkpoint cannot rebuild it; pass plain values "
                    "(str, int, float, bool, list, dict)"
                ) from err
        return {"name": self.name, **copy.deepcopy(self._build_kwargs)}

    def load_weights(self, path: str | os.PathLike[str]) -> None:
        """Load a weights file holding this backbone's `state_dict()` or its bare network's
        (e.g. a timm model's own state dict, classifier head included or not)."""
        state = read_state_dict(path)
        prefix = "network."
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix):]: value for key, value in state.items()}
        load_checked(self.network, state, source=path, owner=self.name,
                     ignored_keys=self.ignored_weight_keys)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, embed_dim={self.embed_dim}"
