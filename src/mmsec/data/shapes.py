"""The shapes world: a seeded, procedural image-caption generator.

Every sample is a pure function of ``(world seed, scene id)``: the same seed gives the same
bytes on every machine. Rendering avoids anything whose rounding can differ between platforms
(no transcendental functions, no floating-point reductions): coverage masks come from
comparisons of exactly representable coordinates, and anti-aliasing averages those masks with
integer arithmetic.

A scene has one primary object (shape, colour, size, position) on a textured background and,
optionally, a smaller second object. The primary object's ``shape x colour`` is the class label
used for zero-shot classification.

Splits are disjoint by construction: scene ids ``n`` with ``n % 10 < 8`` are train, ``8`` is
val and ``9`` is test, so no scene can appear in two splits.

Example::

    world = ShapesWorld(image_size=32)
    batch = world.batch("test", start=0, count=16)    # images (16, 3, 32, 32) uint8, labels, captions
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

SHAPES = ("circle", "square", "triangle", "diamond", "cross", "ring")
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 180, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 215, 40),
    "cyan": (40, 210, 220),
    "magenta": (210, 50, 200),
    "orange": (240, 140, 30),
    "purple": (120, 50, 170),
}
SIZES = ("small", "large")
POSITIONS = ("top left", "top right", "bottom left", "bottom right")
TEXTURES = ("plain", "striped", "noisy")

# Radius of an object as a fraction of the image side; position centres as fractions.
_SIZE_RADIUS = {"small": 0.16, "large": 0.26}
_POSITION_CENTRE = {
    "top left": (0.30, 0.30),
    "top right": (0.70, 0.30),
    "bottom left": (0.30, 0.70),
    "bottom right": (0.70, 0.70),
}
_SPLIT_OFFSETS = {"train": tuple(range(8)), "val": (8,), "test": (9,)}

CAPTION_TEMPLATES = (
    "a {size} {color} {shape} in the {position}",
    "a photo of a {color} {shape}",
    "a {color} {shape} on a {texture} background",
    "there is a {size} {color} {shape}",
    "a picture of a {color} {shape} in the {position}",
    "a {color} {shape}",
)
SECOND_OBJECT_SUFFIX = " and a {color2} {shape2}"

ZEROSHOT_TEMPLATES = (
    "a photo of a {color} {shape}",
    "a {color} {shape}",
    "a picture of a {color} {shape}",
)


@dataclass(frozen=True)
class Scene:
    """The attributes of one rendered sample (all strings are vocabulary words)."""

    scene_id: int
    shape: str
    color: str
    size: str
    position: str
    texture: str
    background: tuple[int, int, int]
    jitter: tuple[int, int]  # centre offset in 1/64 of the image side
    second: tuple[str, str] | None = None  # (shape, colour) of an optional second object

    @property
    def label(self) -> int:
        """Index of ``shape x colour`` in :func:`shape_color_classes` order."""
        return SHAPES.index(self.shape) * len(COLORS) + list(COLORS).index(self.color)

    def captions(self) -> list[str]:
        words = {"size": self.size, "color": self.color, "shape": self.shape, "position": self.position,
                 "texture": self.texture}
        caps = [t.format(**words) for t in CAPTION_TEMPLATES]
        if self.second is not None:
            suffix = SECOND_OBJECT_SUFFIX.format(shape2=self.second[0], color2=self.second[1])
            caps = [c + suffix for c in caps]
        return caps


@dataclass
class ShapesBatch:
    images: torch.Tensor  # (B, 3, H, W) uint8
    labels: torch.Tensor  # (B,) int64, shape x colour class
    captions: list[list[str]]  # B lists of caption variants
    scenes: list[Scene] = field(repr=False)

    def pixels(self) -> torch.Tensor:
        """Images as float pixels in [0, 1], NCHW."""
        return self.images.float() / 255.0


def shape_color_classes() -> list[str]:
    """The 48 zero-shot class names, ``"<colour> <shape>"``, label order."""
    return [f"{c} {s}" for s in SHAPES for c in COLORS]


def zeroshot_prompts(templates: tuple[str, ...] = ZEROSHOT_TEMPLATES) -> list[list[str]]:
    """For each class in label order, its prompts (one per template)."""
    return [[t.format(color=c, shape=s) for t in templates] for s in SHAPES for c in COLORS]


def split_scene_id(split: str, index: int) -> int:
    """The scene id of the ``index``-th sample of ``split`` (splits never share an id)."""
    if split not in _SPLIT_OFFSETS:
        raise ValueError(f"split must be one of {sorted(_SPLIT_OFFSETS)}, got {split!r}")
    if index < 0:
        raise ValueError(f"index must be >= 0, got {index}")
    offsets = _SPLIT_OFFSETS[split]
    return (index // len(offsets)) * 10 + offsets[index % len(offsets)]

# The smallest side the renderer accepts: below it the smallest objects of two shapes differ in too few
# pixels to tell apart (at 16 px, 12 pixels; at 8, 4; at 6, none), so the world's labels stop being visible.
MIN_IMAGE_SIZE = 16


class ShapesWorld:
    """Seeded generator of shapes-world scenes.

    Args:
        image_size: side of the square images in pixels (any size >= 16; 32 default).
        seed: world seed; the same seed gives byte-identical samples everywhere.
        second_object_prob: probability that a scene has a second, smaller object.
        textures: background textures to draw from (a subset of ``TEXTURES``), so held-out
            variants of the world can be made (e.g. train on plain, test on striped).
    """

    def __init__(self, image_size: int = 32, seed: int = 0, second_object_prob: float = 0.0,
                 textures: tuple[str, ...] = TEXTURES):
        if not isinstance(image_size, int) or image_size < MIN_IMAGE_SIZE:
            raise ValueError(f"image_size must be an int >= {MIN_IMAGE_SIZE}, got {image_size!r}")
        if not 0.0 <= second_object_prob <= 1.0:
            raise ValueError(f"second_object_prob must be in [0, 1], got {second_object_prob}")
        unknown = set(textures) - set(TEXTURES)
        if unknown or not textures:
            raise ValueError(f"textures must be a non-empty subset of {TEXTURES}, got {textures}")
        self.image_size = image_size
        self.seed = int(seed)
        self.second_object_prob = float(second_object_prob)
        self.textures = tuple(textures)
        # Supersampling factor for anti-aliasing: 4x at small sizes, less at large ones.
        self._ss = max(1, min(4, 128 // image_size))

    # -- scene sampling -------------------------------------------------------------------
    def scene(self, scene_id: int) -> Scene:
        rng = np.random.default_rng([self.seed, int(scene_id)])
        pick = lambda options: options[int(rng.integers(len(options)))]  # noqa: E731
        shape, color = pick(SHAPES), pick(list(COLORS))
        size, position, texture = pick(SIZES), pick(POSITIONS), pick(self.textures)
        # A grey with a faint tint, so that the object's colour is never matched by the background.
        grey = int(rng.integers(60, 161))
        background = tuple(grey + int(t) for t in rng.integers(-15, 16, size=3))
        jitter = (int(rng.integers(-4, 5)), int(rng.integers(-4, 5)))
        second = None
        # Draw in integer per-mille so the decision has no float rounding.
        if int(rng.integers(1000)) < round(self.second_object_prob * 1000):
            second = (pick(SHAPES), pick([c for c in COLORS if c != color]))
        return Scene(scene_id, shape, color, size, position, texture, background, jitter, second)

    # -- rendering --------------------------------------------------------------------------
    def render(self, scene: Scene) -> np.ndarray:
        """Render one scene as an (H, W, 3) uint8 array."""
        n, ss = self.image_size, self._ss
        img = self._background(scene)  # (n, n, 3) int32
        cx, cy = _POSITION_CENTRE[scene.position]
        cx, cy = cx + scene.jitter[0] / 64, cy + scene.jitter[1] / 64
        img = _paint(img, _coverage(scene.shape, cx, cy, _SIZE_RADIUS[scene.size], n, ss),
                     COLORS[scene.color], ss)
        if scene.second is not None:
            # The second object goes to the diagonally opposite quadrant, always small.
            ox, oy = 1.0 - cx, 1.0 - cy
            img = _paint(img, _coverage(scene.second[0], ox, oy, 0.13, n, ss), COLORS[scene.second[1]], ss)
        return img.astype(np.uint8)

    def render_background(self, scene: Scene) -> np.ndarray:
        """The scene's background alone, no object: an (H, W, 3) uint8 array (an image with no class)."""
        return self._background(scene).astype(np.uint8)

    def _background(self, scene: Scene) -> np.ndarray:
        n = self.image_size
        base = np.broadcast_to(np.array(scene.background, dtype=np.int32), (n, n, 3)).copy()
        if scene.texture == "striped":
            period = max(2, n // 8)
            stripes = ((np.arange(n)[:, None] + np.arange(n)[None, :]) // (period // 2 or 1)) % 2
            base += (stripes[..., None] * 40 - 20).astype(np.int32)
        elif scene.texture == "noisy":
            rng = np.random.default_rng([self.seed, int(scene.scene_id), 1])
            base += rng.integers(-30, 31, size=(n, n, 1), dtype=np.int32)
        return np.clip(base, 0, 255)

    def batch(self, split: str, start: int, count: int) -> ShapesBatch:
        """Samples ``start .. start+count-1`` of ``split``."""
        scenes = [self.scene(split_scene_id(split, start + i)) for i in range(count)]
        images = np.stack([self.render(s) for s in scenes]) if scenes else np.zeros((0, self.image_size,
                                                                                       self.image_size, 3), np.uint8)
        return ShapesBatch(
            images=torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(),
            labels=torch.tensor([s.label for s in scenes], dtype=torch.long),
            captions=[s.captions() for s in scenes],
            scenes=scenes,
        )


def _coverage(shape: str, cx: float, cy: float, r: float, n: int, ss: int) -> np.ndarray:
    """Boolean (n*ss, n*ss) mask of ``shape`` centred at (cx, cy) with radius r (image fractions)."""
    m = n * ss
    # Sub-pixel centres in units of the image side; (k + 0.5) / m is exact in binary for m a power of 2
    # and a deterministic IEEE division otherwise.
    coords = (np.arange(m, dtype=np.float64) + 0.5) / m
    x = (coords[None, :] - cx) / r
    y = (coords[:, None] - cy) / r
    ax, ay = np.abs(x), np.abs(y)
    if shape == "circle":
        return x * x + y * y <= 1.0
    if shape == "square":
        return np.maximum(ax, ay) <= 0.8
    if shape == "diamond":
        return ax + ay <= 1.0
    if shape == "triangle":  # apex up, base at y = 0.75; sides of slope 2 (constants, no sqrt)
        return (y <= 0.75) & (y >= -1.0 + 2.0 * ax)
    if shape == "cross":
        return ((ax <= 0.3) & (ay <= 1.0)) | ((ay <= 0.3) & (ax <= 1.0))
    if shape == "ring":
        d = x * x + y * y
        return (d <= 1.0) & (d >= 0.36)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _paint(img: np.ndarray, mask: np.ndarray, color: tuple[int, int, int], ss: int) -> np.ndarray:
    """Alpha-blend ``color`` into ``img`` with per-pixel coverage counted on the ss x ss grid."""
    n = img.shape[0]
    cover = mask.reshape(n, ss, n, ss).sum(axis=(1, 3), dtype=np.int32)[..., None]  # (n, n, 1) in 0..ss^2
    total = ss * ss
    col = np.array(color, dtype=np.int32)
    return (img * (total - cover) + col * cover + total // 2) // total
