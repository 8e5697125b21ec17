"""timm models as backbones, named `timm/<model_name>` (a `<model>.<tag>` name works too)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import timm
from timm.data import resolve_model_data_config
from timm.models import get_pretrained_cfg

from fewshot_metric.backbones.base import Backbone, InputConfig, image_hw

TIMM_PREFIX = "timm/"


@functools.cache
def timm_backbone_names() -> tuple[str, ...]:
    """`timm/<model>` for every architecture timm knows (computed once)."""
    return tuple(TIMM_PREFIX + name for name in timm.list_models())


def is_timm_backbone(name: str) -> bool:
    """Whether `name` is `timm/<model>` for a model timm can create."""
    return name.startswith(TIMM_PREFIX) and timm.is_model(name[len(TIMM_PREFIX):])


def create_timm_backbone(
    name: str,
    *,
    pretrained: bool = False,
    in_chans: int = 3,
    image_size: int | Sequence[int] | None = None,
    **kwargs: Any,
) -> Backbone:
    """`timm/<model>` built with num_classes=0, so it outputs the pooled embedding [B, D].

    `image_size` is passed to timm as `img_size` for fixed-size models (ViTs); for the others
    it only sets the InputConfig. Other kwargs go to `timm.create_model` unchanged.
    """
    model_name = name[len(TIMM_PREFIX):]
    pretrained_cfg = get_pretrained_cfg(model_name)
    hw = None if image_size is None else image_hw(image_size)
    timm_kwargs = dict(kwargs)
    if hw is not None and pretrained_cfg is not None and pretrained_cfg.fixed_input_size:
        timm_kwargs["img_size"] = hw
    try:
        model = timm.create_model(
            model_name, pretrained=pretrained, num_classes=0, in_chans=in_chans, **timm_kwargs
        )
    except OSError as err:
        if not pretrained:
            raise
        raise RuntimeError(
            f"could not fetch timm's pretrained weights for {name!r} ({err}). Without network "
            "access, download the weights file elsewhere and pass weights=<local file> "
            "instead of pretrained=True"
        ) from err
    data = resolve_model_data_config(model)
    mean, std = data["mean"], data["std"]
    if len(mean) != in_chans:
        mean = (sum(mean) / len(mean),) * in_chans
        std = (sum(std) / len(std),) * in_chans
    hw = hw or tuple(data["input_size"][1:])
    classifiers = model.pretrained_cfg.get("classifier") or ()
    classifiers = (classifiers,) if isinstance(classifiers, str) else tuple(classifiers)
    return Backbone(
        name,
        model,
        embed_dim=getattr(model, "head_hidden_size", None) or model.num_features,
        input_config=InputConfig(hw, in_chans, mean, std, data["interpolation"]),
        build_kwargs={"in_chans": in_chans, "image_size": list(hw), **kwargs},
        ignored_weight_keys=frozenset(f"{c}.{p}" for c in classifiers for p in ("weight", "bias")),
    )
