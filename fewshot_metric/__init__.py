"""fewshot_metric: train embedders for few-shot learning and serve them from a FAISS store."""

import fewshot_metric.blas  # noqa: F401  (first: chooses FAISS's BLAS kernels before it loads)
from fewshot_metric.backbones import Backbone, InputConfig, create_backbone, list_backbones
from fewshot_metric.classifier import FewShotClassifier, Prediction
from fewshot_metric.config import ConfigError, Recipe, load_recipe
from fewshot_metric.distances import Cosine, SquaredEuclidean
from fewshot_metric.embedder import Embedder
from fewshot_metric.model import FewShotModel, build_model
from fewshot_metric.store import PrototypeStore

__all__ = [
    "Backbone",
    "ConfigError",
    "Cosine",
    "Embedder",
    "FewShotClassifier",
    "FewShotModel",
    "InputConfig",
    "Prediction",
    "PrototypeStore",
    "Recipe",
    "SquaredEuclidean",
    "build_model",
    "create_backbone",
    "list_backbones",
    "load_recipe",
]
__version__ = "0.1.0"
