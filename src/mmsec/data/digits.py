"""Hand-drawn-looking digits, MNIST-style: an image domain the shapes world lacks (TrojDiff's Out-D2D target).

TrojDiff's out-of-domain target (Chen, Song, Li, CVPR 2023) is one MNIST digit class, for models trained
on CIFAR-10 or CelebA. mmsec ships no MNIST, so this module draws digits procedurally, as MNIST looks:
a light grey stroke on black, the grey copied to the three channels (the paper's code loads MNIST as RGB).
Each digit is a polyline in a unit box (:data:`DIGIT_STROKES`), drawn with a per-image random slant, size,
place, stroke width and brightness; coverage is counted on a supersampled grid (anti-aliasing). The
shapes world never has a black background (its greys lie in 45..175), white strokes or digit shapes, and
the shapes judge has no class for them.

A draw is a pure function of ``(seed, digit, index)``: numpy's PCG64 seeded with ``[seed, digit, index]``
picks the geometry. Floating-point geometry is used, so bytes may differ across platforms in the last
bit of a few edge pixels (unlike :mod:`mmsec.data.shapes`); sets drawn on one machine are reproducible.

Example::

    sevens = draw_digits(7, count=256, image_size=16, seed=0)   # (256, 3, 16, 16) float in [0, 1]
"""

from __future__ import annotations

import numpy as np
import torch

# Polylines (x right, y down) in the unit box, one per digit; several strokes where the pen lifts.
DIGIT_STROKES: dict[int, tuple[tuple[tuple[float, float], ...], ...]] = {
    0: (((0.5, 0.0), (0.85, 0.2), (0.9, 0.5), (0.85, 0.8), (0.5, 1.0), (0.15, 0.8), (0.1, 0.5), (0.15, 0.2),
         (0.5, 0.0)),),
    1: (((0.3, 0.2), (0.55, 0.0), (0.55, 1.0)),),
    2: (((0.15, 0.2), (0.4, 0.0), (0.75, 0.05), (0.85, 0.3), (0.15, 1.0), (0.9, 1.0)),),
    3: (((0.15, 0.05), (0.85, 0.05), (0.45, 0.45), (0.85, 0.65), (0.75, 0.95), (0.15, 0.95)),),
    4: (((0.65, 1.0), (0.65, 0.0), (0.1, 0.7), (0.9, 0.7)),),
    5: (((0.85, 0.0), (0.2, 0.0), (0.15, 0.45), (0.7, 0.4), (0.85, 0.7), (0.65, 1.0), (0.15, 0.9)),),
    6: (((0.75, 0.0), (0.25, 0.45), (0.15, 0.8), (0.45, 1.0), (0.8, 0.8), (0.75, 0.55), (0.45, 0.45),
         (0.2, 0.65)),),
    7: (((0.1, 0.0), (0.9, 0.0), (0.4, 1.0)),),
    8: (((0.5, 0.45), (0.2, 0.25), (0.5, 0.0), (0.8, 0.25), (0.5, 0.45), (0.15, 0.72), (0.5, 1.0), (0.85, 0.72),
         (0.5, 0.45)),),
    9: (((0.8, 0.35), (0.5, 0.5), (0.2, 0.3), (0.5, 0.0), (0.8, 0.3), (0.7, 1.0)),),
}
DIGIT_CLASSES = tuple(f"digit {d}" for d in range(10))  # the class names ("digit 7")
SUPERSAMPLE = 4


def digit_of(class_name: str) -> int:
    """The digit of a class name of :data:`DIGIT_CLASSES` ("digit 7" -> 7)."""
    if class_name not in DIGIT_CLASSES:
        raise ValueError(f"{class_name!r} is not a digit class; expected one of {DIGIT_CLASSES}")
    return int(class_name.split()[1])


def _segment_distance(px: np.ndarray, py: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of the points (px, py) to the segment a-b."""
    d = b - a
    length2 = float(d @ d) or 1e-12
    u = np.clip(((px - a[0]) * d[0] + (py - a[1]) * d[1]) / length2, 0.0, 1.0)
    return np.hypot(px - (a[0] + u * d[0]), py - (a[1] + u * d[1]))


def draw_digit(digit: int, image_size: int, rng: np.random.Generator) -> np.ndarray:
    """One (S, S) float32 grey image in [0, 1] of ``digit``, its geometry drawn from ``rng``."""
    if digit not in DIGIT_STROKES:
        raise ValueError(f"digit must be an int in 0..9, got {digit!r}")
    height = rng.uniform(0.6, 0.78)  # of the image side (MNIST: a 20 px box in 28 px)
    width = height * rng.uniform(0.55, 0.75)
    slant = rng.uniform(-0.25, 0.25)  # x shift per unit of height, upwards
    cx, cy = 0.5 + rng.uniform(-0.07, 0.07), 0.5 + rng.uniform(-0.07, 0.07)
    pen = rng.uniform(0.075, 0.11)  # stroke width, of the image side
    ink = rng.uniform(0.85, 1.0)
    m = image_size * SUPERSAMPLE
    coords = (np.arange(m) + 0.5) / m
    px, py = np.meshgrid(coords, coords)  # (m, m), x right, y down
    near = np.full((m, m), np.inf)
    for stroke in DIGIT_STROKES[digit]:
        pts = np.array([(cx + (x - 0.5) * width + slant * (0.5 - y) * height, cy + (y - 0.5) * height)
                        for x, y in stroke])
        for a, b in zip(pts[:-1], pts[1:], strict=True):
            near = np.minimum(near, _segment_distance(px, py, a, b))
    cover = (near <= pen / 2).reshape(image_size, SUPERSAMPLE, image_size, SUPERSAMPLE).mean(axis=(1, 3))
    return (cover * ink).astype(np.float32)


def draw_digits(digit: int, count: int, image_size: int = 16, seed: int = 0, start: int = 0) -> torch.Tensor:
    """Draws ``start .. start + count - 1`` of ``digit`` as (count, 3, S, S) float pixels in [0, 1] (grey on black)."""
    if not isinstance(count, int) or count < 0:
        raise ValueError(f"count must be an int >= 0, got {count!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    grey = [draw_digit(digit, image_size, np.random.default_rng([int(seed), int(digit), int(start + i)]))
            for i in range(count)]
    out = torch.from_numpy(np.stack(grey)) if grey else torch.zeros(0, image_size, image_size)
    return out[:, None].expand(-1, 3, -1, -1).contiguous()


__all__ = ["DIGIT_CLASSES", "DIGIT_STROKES", "digit_of", "draw_digit", "draw_digits"]
