"""GlyphsDataset: procedurally drawn handwriting-like glyph classes, needing no download.

A class is a few cubic Bezier strokes drawn from a class seed; every image of the class redraws
the same strokes with its own jitter of the control points, stroke width and a small affine
transform, drawn from an (class, image) seed. Classes come in families of FAMILY_SIZE that share
a stroke style and two "radical" strokes (as characters share an alphabet), so the class group
is the family. Splits are disjoint, fixed class ranges: the first 70% of the families train,
the next 10% val, the last 20% test. Images are grayscale 'L', black ink on white.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageDraw

from fewshot_metric.data.base import FewShotDataset, Transform

FAMILY_SIZE = 25
SPLIT_FRACTIONS = {"train": (0.0, 0.7), "val": (0.7, 0.8), "test": (0.8, 1.0), "all": (0.0, 1.0)}
SUPERSAMPLE = 4  # drawn at 4x the image size, then box-filtered down (anti-aliasing)
CURVE_POINTS = 24  # polyline points per Bezier stroke
_FAMILY, _CLASS, _IMAGE = 1, 2, 3  # seed-stream tags, so the three kinds of draws never collide


def _random_stroke(rng: np.random.Generator, curviness: float,
                   start: np.ndarray | None = None) -> np.ndarray:
    """Control points [4, 2] of a cubic Bezier in the unit square (optionally from `start`)."""
    p0 = rng.uniform(0.15, 0.85, 2) if start is None else start
    p3 = rng.uniform(0.15, 0.85, 2)
    chord = p3 - p0
    normal = np.array([-chord[1], chord[0]])
    bend = rng.normal(0.0, curviness, 2)
    p1 = p0 + chord / 3 + bend[0] * normal
    p2 = p0 + 2 * chord / 3 + bend[1] * normal
    return np.clip(np.stack([p0, p1, p2, p3]), 0.05, 0.95)


def _bezier(control: np.ndarray) -> np.ndarray:
    """Control points [4, 2] -> polyline [CURVE_POINTS, 2]."""
    t = np.linspace(0.0, 1.0, CURVE_POINTS)[:, None]
    u = 1.0 - t
    return (u**3 * control[0] + 3 * u**2 * t * control[1] + 3 * u * t**2 * control[2]
            + t**3 * control[3])


class GlyphsDataset(FewShotDataset):
    """`n_classes` glyph classes (a multiple of FAMILY_SIZE, at least 10 families), each with
    `images_per_class` images of `image_size` x `image_size`; same arguments -> same pixels.
    Images are drawn lazily on first access (and kept if `cache`)."""

    def __init__(
        self,
        split: str = "train",
        n_classes: int = 1000,
        images_per_class: int = 20,
        image_size: int = 28,
        seed: int = 0,
        cache: bool = True,
        transform: Transform | None = None,
    ):
        if split not in SPLIT_FRACTIONS:
            raise ValueError(
                f"GlyphsDataset: unknown split '{split}'; choose one of "
                f"{', '.join(SPLIT_FRACTIONS)}"
            )
        n_families = n_classes // FAMILY_SIZE
        if n_classes % FAMILY_SIZE or n_families < 10:
            raise ValueError(
                f"GlyphsDataset: n_classes={n_classes} must be a multiple of {FAMILY_SIZE} "
                f"and at least {10 * FAMILY_SIZE} (10 families), so every split has classes"
            )
        if images_per_class < 1 or image_size < 8 or seed < 0:
            raise ValueError(
                f"GlyphsDataset: need images_per_class >= 1 (got {images_per_class}), "
                f"image_size >= 8 (got {image_size}) and seed >= 0 (got {seed})"
            )
        low, high = SPLIT_FRACTIONS[split]
        first = round(low * n_families) * FAMILY_SIZE
        last = round(high * n_families) * FAMILY_SIZE
        self.class_ids = np.arange(first, last)  # global class index of each local class
        self.images_per_class = images_per_class
        self.image_size = image_size
        self.seed = seed
        super().__init__(
            [f"glyph{c:05d}" for c in self.class_ids],
            np.repeat(np.arange(len(self.class_ids)), images_per_class),
            [f"family{c // FAMILY_SIZE:03d}" for c in self.class_ids],
            transform=transform,
            cache=cache,
        )

    def _strokes(self, class_id: int) -> tuple[list[np.ndarray], float]:
        """Control points [4, 2] per stroke of a class, and the family's stroke width."""
        family = np.random.default_rng([self.seed, _FAMILY, class_id // FAMILY_SIZE])
        width = family.uniform(0.06, 0.1)
        curviness = family.uniform(0.1, 0.6)
        radicals = [_random_stroke(family, curviness) for _ in range(2)]
        rng = np.random.default_rng([self.seed, _CLASS, class_id])
        strokes = [radicals[rng.integers(2)]] if rng.random() < 0.5 else []
        for _ in range(rng.integers(2, 4)):
            start = strokes[-1][-1] if strokes and rng.random() < 0.5 else None
            strokes.append(_random_stroke(rng, curviness, start))
        return strokes, width

    def _decode(self, i: int) -> Image.Image:
        class_id = int(self.class_ids[self.labels[i]])
        strokes, width = self._strokes(class_id)
        rng = np.random.default_rng([self.seed, _IMAGE, class_id, i % self.images_per_class])
        angle, shear = rng.normal(0.0, 0.15), rng.normal(0.0, 0.12)
        sx, sy = rng.uniform(0.8, 1.15, 2)
        shift = rng.normal(0.0, 0.07, 2)
        cos, sin = math.cos(angle), math.sin(angle)
        # rotation @ shear @ diag(sx, sy), applied elementwise (no BLAS: same bits everywhere)
        (a, b), (c, d) = (cos * sx, (cos * shear - sin) * sy), (sin * sx, (sin * shear + cos) * sy)
        size = self.image_size * SUPERSAMPLE
        canvas = Image.new("L", (size, size), 255)
        draw = ImageDraw.Draw(canvas)
        pen = max(1, round(width * size * rng.uniform(0.75, 1.3)))
        for control in strokes:
            jittered = control + rng.normal(0.0, 0.05, control.shape)
            x, y = (_bezier(jittered) - 0.5).T
            points = np.stack([a * x + b * y, c * x + d * y], axis=1) + 0.5 + shift
            xy = [(float(px), float(py)) for px, py in points * size]
            draw.line(xy, fill=0, width=pen, joint="curve")
            for cx, cy in (xy[0], xy[-1]):  # round caps
                draw.ellipse((cx - pen / 2, cy - pen / 2, cx + pen / 2, cy + pen / 2), fill=0)
        return canvas.resize((self.image_size, self.image_size), Image.Resampling.BOX)

    def source(self, i: int) -> str:
        image = i % self.images_per_class
        return f"glyphs(seed={self.seed}) class {self.class_names[self.labels[i]]} image {image}"
