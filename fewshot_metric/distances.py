"""Distance: the one metric a model is trained with, scored with and served with.

A `Distance` compares query embeddings [Q, D] with reference embeddings [R, D] and gives raw
scores [Q, R] (`forward`), which are exactly what a FAISS index built with `faiss_metric`
returns (over unit-normalised copies when `normalize_for_index`). `logits` turns scores into
"larger is closer" logits, `scale * score` or `-scale * score`, for softmax-based heads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

_OPTIONS = ("scale", "learn_scale")


def _check_pair(query: torch.Tensor, ref: torch.Tensor) -> None:
    if query.dim() != 2 or ref.dim() != 2 or query.shape[1] != ref.shape[1]:
        raise ValueError(f"distances compare embeddings [Q, D] with [R, D] of the same width D; "
                         f"got {tuple(query.shape)} and {tuple(ref.shape)}")


def _check_rows(emb_a: torch.Tensor, emb_b: torch.Tensor) -> None:
    if emb_a.dim() != 2 or emb_a.shape != emb_b.shape:
        raise ValueError(f"pairs need two [N, D] tensors of the same shape, row i paired with "
                         f"row i; got {tuple(emb_a.shape)} and {tuple(emb_b.shape)}")


class Distance(nn.Module):
    """Base class: `forward(query [Q, D], ref [R, D]) -> scores [Q, R]`.

    `scale` (> 0) multiplies the logits; with `learn_scale` it is trained as `exp(log_scale)`,
    which keeps it positive, and starts at the given value.
    """

    name: str
    larger_is_closer: bool
    normalize_for_index: bool
    _faiss_metric_name: str

    def __init__(self, scale: float, learn_scale: bool = False):
        super().__init__()
        if not (isinstance(scale, int | float) and math.isfinite(scale) and scale > 0):
            raise ValueError(f"{type(self).__name__} scale must be a positive number, "
                             f"got {scale!r}")
        self.learn_scale = bool(learn_scale)
        if self.learn_scale:
            self.log_scale = nn.Parameter(torch.tensor(math.log(scale)))
        else:
            self._fixed_scale = float(scale)

    @property
    def scale(self) -> torch.Tensor | float:
        """The logit multiplier: a 0-d tensor when learned, else a float."""
        return self.log_scale.exp() if self.learn_scale else self._fixed_scale

    def _scale_value(self) -> float:
        return float(self.scale.detach()) if self.learn_scale else self._fixed_scale

    def scores_to_logits(self, scores: torch.Tensor) -> torch.Tensor:
        """Raw scores [..] (from `forward` or a FAISS search) -> logits [..], larger = closer."""
        return self.scale * (scores if self.larger_is_closer else -scores)

    def logits(self, query: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        """query [Q, D], ref [R, D] -> logits [Q, R], larger = closer."""
        return self.scores_to_logits(self(query, ref))

    def pair_distance(self, emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
        """Row-wise pairs emb_a [N, D], emb_b [N, D] -> dissimilarity [N], >= 0, 0 when equal."""
        raise NotImplementedError

    @property
    def faiss_metric(self) -> int:
        """The FAISS metric whose search results equal `forward`'s scores."""
        import faiss  # the index is optional at training time; import only when asked

        return getattr(faiss, self._faiss_metric_name)

    def config(self) -> dict[str, Any]:
        """JSON-safe options; `distance_from_config(config())` rebuilds this distance."""
        return {"name": self.name, "scale": self._scale_value(), "learn_scale": self.learn_scale}

    def extra_repr(self) -> str:
        return f"scale={self._scale_value():g}, learn_scale={self.learn_scale}"


class SquaredEuclidean(Distance):
    """scores = ||q - r||^2 [Q, R] (smaller is closer); logits = -scale * ||q - r||^2.

    Computed as ||q||^2 + ||r||^2 - 2 q.r, clamped at 0 against rounding.
    """

    name = "sqeuclidean"
    larger_is_closer = False
    normalize_for_index = False
    _faiss_metric_name = "METRIC_L2"

    def __init__(self, scale: float = 1.0, learn_scale: bool = False):
        super().__init__(scale, learn_scale)

    def forward(self, query: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        _check_pair(query, ref)
        query_sq = query.pow(2).sum(1, keepdim=True)  # [Q, 1]
        ref_sq = ref.pow(2).sum(1).unsqueeze(0)  # [1, R]
        return (query_sq + ref_sq - 2.0 * query @ ref.T).clamp_min(0.0)

    def pair_distance(self, emb_a: torch.Tensor, emb_b: torch.Tensor, eps: float = 1e-8
                      ) -> torch.Tensor:
        """Euclidean distance sqrt(||a - b||^2 + eps) [N]; eps keeps the gradient finite at 0."""
        _check_rows(emb_a, emb_b)
        return ((emb_a - emb_b).pow(2).sum(1) + eps).sqrt()


class Cosine(Distance):
    """scores = cos(q, r) [Q, R] (larger is closer); logits = scale * cos(q, r).

    The default scale 10 lets a softmax over cosines in [-1, 1] become confident.
    """

    name = "cosine"
    larger_is_closer = True
    normalize_for_index = True
    _faiss_metric_name = "METRIC_INNER_PRODUCT"

    def __init__(self, scale: float = 10.0, learn_scale: bool = False):
        super().__init__(scale, learn_scale)

    def forward(self, query: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        _check_pair(query, ref)
        return F.normalize(query, dim=1) @ F.normalize(ref, dim=1).T

    def pair_distance(self, emb_a: torch.Tensor, emb_b: torch.Tensor) -> torch.Tensor:
        """Cosine distance 1 - cos(a, b) [N], in [0, 2]."""
        _check_rows(emb_a, emb_b)
        return 1.0 - F.cosine_similarity(emb_a, emb_b, dim=1)


DISTANCES: dict[str, type[Distance]] = {cls.name: cls for cls in (SquaredEuclidean, Cosine)}


def build_distance(name: str, **options: Any) -> Distance:
    """"sqeuclidean" | "cosine", with options `scale` (float > 0) and `learn_scale` (bool)."""
    if name not in DISTANCES:
        raise ValueError(f"unknown distance {name!r}; choose one of {sorted(DISTANCES)}")
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ValueError(f"distance {name!r} got unknown options {unknown}; "
                         f"valid options are {list(_OPTIONS)}")
    return DISTANCES[name](**options)


def distance_from_config(config: Mapping[str, Any]) -> Distance:
    """Inverse of `Distance.config()`: {"name": ..., **options} -> Distance."""
    if "name" not in config:
        raise ValueError(f"a distance config needs a 'name' ({sorted(DISTANCES)}); "
                         f"got keys {sorted(config)}")
    options = {key: value for key, value in config.items() if key != "name"}
    return build_distance(config["name"], **options)
