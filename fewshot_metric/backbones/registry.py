"""The backbone zoo: registered classic names plus `timm/<model>`, created by name."""

from __future__ import annotations

import difflib
import fnmatch
import inspect
import os
from collections.abc import Callable
from typing import Any

from fewshot_metric.backbones.base import Backbone
from fewshot_metric.backbones.timm_adapter import (
    TIMM_PREFIX,
    create_timm_backbone,
    is_timm_backbone,
    timm_backbone_names,
)

BackboneFactory = Callable[..., Backbone]
_REGISTRY: dict[str, BackboneFactory] = {}


def register_backbone(name: str) -> Callable[[BackboneFactory], BackboneFactory]:
    """Decorator: register `factory(name, **kwargs) -> Backbone` under `name`."""
    if name.startswith(TIMM_PREFIX):
        raise ValueError(
            f"backbone name {name!r} is reserved: {TIMM_PREFIX!r} names come from timm"
        )

    def decorate(factory: BackboneFactory) -> BackboneFactory:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered; pick another name")
        _REGISTRY[name] = factory
        return factory

    return decorate


def list_backbones(pattern: str | None = None) -> list[str]:
    """Classic names then `timm/<model>` names, optionally filtered by a case-insensitive
    fnmatch pattern such as "timm/*vit*"."""
    names = sorted(_REGISTRY) + list(timm_backbone_names())
    if pattern is None:
        return names
    pattern = pattern.lower()
    return [name for name in names if fnmatch.fnmatchcase(name.lower(), pattern)]


def create_backbone(
    name: str,
    pretrained: bool = False,
    weights: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> Backbone:
    """Build backbone `name` with constructor `kwargs` (e.g. in_chans, image_size).

    `pretrained=True` fetches timm's published weights (network needed); `weights` loads a
    local file (.safetensors or a torch.save'd state dict) and works offline for every name.
    """
    if pretrained and weights is not None:
        raise ValueError(
            f"backbone {name!r}: pass pretrained=True (download) or weights=<local file>, not both"
        )
    if is_timm_backbone(name):
        backbone = create_timm_backbone(name, pretrained=pretrained, **kwargs)
    elif name in _REGISTRY:
        if pretrained:
            raise ValueError(
                f"backbone {name!r} has no published pretrained weights; pass "
                "weights=<local file> instead"
            )
        factory = _REGISTRY[name]
        try:
            inspect.signature(factory).bind(name, **kwargs)
        except TypeError as err:
            accepted = list(inspect.signature(factory).parameters)[1:]
            raise TypeError(f"backbone {name!r}: {err}; it accepts {accepted}") from None
        backbone = factory(name, **kwargs)
    else:
        close = difflib.get_close_matches(name.lower(), list_backbones(), n=5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown backbone {name!r}.{hint} Run `fewshot-metric backbones` to list the names"
        )
    if weights is not None:
        backbone.load_weights(weights)
    return backbone
