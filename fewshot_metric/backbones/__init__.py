"""Backbone zoo: classic few-shot embedders and every timm model as `timm/<model>`."""

from __future__ import annotations

from fewshot_metric.backbones import classic  # noqa: F401  (registers the classic backbones)
from fewshot_metric.backbones.base import Backbone, InputConfig
from fewshot_metric.backbones.registry import create_backbone, list_backbones, register_backbone

__all__ = ["Backbone", "InputConfig", "create_backbone", "list_backbones", "register_backbone"]
