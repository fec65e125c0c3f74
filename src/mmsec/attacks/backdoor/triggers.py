"""Backdoor triggers: the image transformations that every backdoor attack of mmsec stamps.

One small class per trigger type, all with the same contract (:class:`Trigger`)::

    trigger = PatchTrigger(pattern="checkerboard", size=4, position="bottom_right")
    poisoned = trigger(pixels)                        # (B, 3, H, W) in [0, 1] -> same shape
    record = trigger.to_dict()                        # JSON-able: {"name", "version", "params"}
    assert torch.equal(trigger_from_dict(record)(pixels), poisoned)

``apply(pixels, generator=None)`` takes float pixels in [0, 1], NCHW, of any size, returns a new
tensor of the same shape, dtype and device clamped to [0, 1] (the input is never modified) and is
differentiable (nothing runs under ``no_grad``). A trigger's own random pattern is drawn from the
``seed`` given to its ``__init__``, so the same trigger object (or one rebuilt from its record)
always stamps the same pattern; per-image random choices (``position="random"``, WaNet's noise
mode) come from the ``generator`` argument (an int seeds a fresh one; ``None`` means seed 0, as
everywhere in mmsec). ``params()`` returns the ``__init__`` arguments as a JSON-able dict (what a
poisoning record stores); ``build_trigger(name, **params)`` / ``trigger_from_dict(record)`` rebuild
the trigger exactly. Each trigger is registered (kind ``triggers``, under the names of
:data:`TRIGGERS`), so specs write it as a component ``{name, params}`` of the attack that stamps it
(``trigger: {name: patch, params: {size: 4}}``, or just ``trigger: patch``).

The triggers and their papers (defaults are the papers' unless said otherwise):

* :class:`PatchTrigger` -- a small opaque square pasted on the image: BadNets (Tianyu Gu, Brendan
  Dolan-Gavitt, Siddharth Garg, "BadNets: Identifying Vulnerabilities in the Machine Learning
  Model Supply Chain", arXiv 2017 / IEEE Access 2019), and the patches with which Nicholas Carlini
  and Andreas Terzis poison CLIP pre-training ("Poisoning and Backdooring Contrastive Learning",
  ICLR 2022). ``x' = x`` outside the square, ``x' = pattern`` inside. Patterns: ``"checkerboard"``
  (1-pixel black/white cells, white at the patch's top-left pixel) or ``"noise"`` (uniform in
  [0, 1] per pixel and channel, from ``seed``). Size in pixels (int) or as a fraction of each
  image side (float in (0, 1], rounded as :func:`mmsec.attacks.universal.patch_side`); position a
  corner name (``"top_left"``, ``"top_right"``, ``"bottom_left"``, ``"bottom_right"`` flush with the
  edges, ``"center"``), an explicit ``(y, x)`` top-left corner in pixels, or ``"random"`` (a uniform
  place per image, from ``generator``). Defaults: checkerboard, 1/8 of the side (4 px on the
  32 px shapes world, the project's calibration in DESIGN.md), bottom right (BadNets' corner).
  The noise pattern is drawn at the patch's pixel size, so a fraction-sized noise patch is a
  different (equally seeded) draw on each image size, never a blurred resize.
* :class:`BlendedTrigger` -- Xinyun Chen, Chang Liu, Bo Li, Kimberly Lu, Dawn Song, "Targeted
  Backdoor Attacks on Deep Learning Systems Using Data Poisoning", arXiv 2017 (blended injection):
  ``x' = (1 - alpha) * x + alpha * pattern`` over the whole image, alpha 0.2 (the paper's
  training blend ratio). Departure: the paper's Hello-Kitty image cannot ship, so the default
  pattern is the paper's other key, uniform random noise (per pixel and channel, drawn from
  ``seed`` at each image's size); any (3, h, w) image can be given instead and is resized
  (bilinear, antialiased) to each image's size.
* :class:`SIGTrigger` -- Mauro Barni, Kassem Kallas, Benedetta Tondi, "A New Backdoor Attack in
  CNNs by Training Set Corruption Without Label Poisoning", ICIP 2019: the horizontal sinusoid
  ``v(i, j) = delta * sin(2 * pi * j * f / m)`` for columns ``j = 1 .. m`` (``m`` the image width,
  1-based as in the paper), the same for every row and added to every channel, then clamped to
  [0, 1]. Defaults delta 20/255 (the paper's 20 on a 0-255 scale) and f 6. The paper's clean-label
  protocol (poison only target-class images, keep their labels) and its stronger test-time delta
  belong to the attack: build a second trigger with the larger delta.
* :class:`WaNetTrigger` -- Tuan Anh Nguyen, Anh Tuan Tran, "WaNet - Imperceptible Warping-based
  Backdoor Attack", ICLR 2021: a smooth warping field. A (2, k, k) control grid uniform in
  [-1, 1], divided by its mean absolute value, is upsampled bicubically (corners aligned) to the
  image size; the sampling grid is ``clamp((identity + s * field / size) * grid_rescale, -1, 1)``
  in grid_sample's [-1, 1] coordinates, and the image is resampled bilinearly. Defaults k 4,
  s 0.5, grid_rescale 1. :meth:`WaNetTrigger.apply_noise` is the paper's "noise mode": the same
  warp plus an independent per-pixel offset uniform in ``[-1, 1] / size`` (drawn from
  ``generator``), used on the "cross" samples that keep their labels (the paper poisons 10% and
  adds noise-mode samples at cross ratio 2: the attack's choice, not the trigger's). Departures:
  the field's x and y offsets are divided by the width and the height (the paper's code divides
  both by the height: identical on square images); the control grid comes from ``seed`` (the
  code uses the global RNG); sampling pads with the border (the clamped grid never leaves the
  image, so this only guards rounding).
* :class:`OptimizedPatch` -- a patch whose pattern is a given tensor, e.g. learnt by BadCLIP
  (Siyuan Liang, Mingli Zhu, Aishan Liu, Baoyuan Wu, Xiaochun Cao, Ee-Chien Chang, "BadCLIP:
  Dual-Embedding Guided Backdoor Attack on Multimodal Contrastive Learning", CVPR 2024) or
  BadMerging's universal trigger. ``apply`` is differentiable in the pattern: the trigger holds
  the tensor itself (not a copy), so an optimiser that updates it in place learns it through
  ``apply``. Pasted at its own pixel size unless ``size`` is given (then resized bilinearly,
  differentiably); placement as :class:`PatchTrigger`.

Records: ``to_dict()`` stores tensors (given patterns) as nested lists of floats (exact for float32
patterns; rebuilt as float32) and ``(y, x)`` positions as lists.
"""

from __future__ import annotations

import difflib
import inspect
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ... import registry
from ...checks import check_budget, check_int, check_pixels, make_generator
from ...methods import Method
from ..universal.advclip import patch_side

registry.declare_kind("triggers", "backdoor triggers: trigger.apply(pixels, generator) -> pixels; to_dict() / "
                      "trigger_from_dict(record) rebuild it exactly", "mmsec.attacks.backdoor.triggers:Trigger")

CORNERS = ("top_left", "top_right", "bottom_left", "bottom_right", "center")
POSITIONS = (*CORNERS, "random")
PATCH_PATTERNS = ("checkerboard", "noise")
TRIGGER_RECORD_VERSION = 1  # bump when a trigger's pattern generation changes

Position = str | tuple[int, int]
Size = int | float


# ------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------
def _suggest(value: object, choices: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(str(value), choices, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_seed(seed: int) -> int:
    """A pattern seed: an int >= 0."""
    return check_int("seed", seed, 0)


def check_position(position: object) -> Position:
    """A patch position: a name of :data:`POSITIONS` or a ``(y, x)`` pair of ints >= 0 (a list is accepted)."""
    if isinstance(position, str):
        if position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS} or a (y, x) pair of pixel ints, "
                             f"got {position!r}{_suggest(position, POSITIONS)}")
        return position
    if (isinstance(position, (tuple, list)) and len(position) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in position)):
        y, x = position
        if y < 0 or x < 0:
            raise ValueError(f"position (y, x) must be non-negative pixel coordinates of the patch's top-left "
                             f"corner, got {tuple(position)}")
        return (y, x)
    raise TypeError(f"position must be one of {POSITIONS} or a (y, x) pair of pixel ints (the patch's top-left "
                    f"corner), got {type(position).__name__} {position!r}")


def check_size(size: object, name: str = "size") -> Size:
    """A patch size: an int >= 1 (pixels) or a float in (0, 1] (fraction of each image side)."""
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise TypeError(f"{name} must be an int (pixels) or a float in (0, 1] (fraction of the image side), "
                        f"got {type(size).__name__} {size!r}")
    if isinstance(size, int):
        if size < 1:
            raise ValueError(f"{name} in pixels must be an int >= 1, got {size}")
        return size
    if not (math.isfinite(size) and 0 < size <= 1):
        raise ValueError(f"{name} given as a float is a fraction of the image side and must lie in (0, 1], "
                         f"got {size}; give an int for a size in pixels")
    return float(size)


def check_pattern(pattern: object, name: str = "pattern") -> torch.Tensor:
    """A (3, h, w) float pattern in [0, 1] without NaNs; nested lists (from a record) become float32."""
    if isinstance(pattern, (list, tuple)):
        try:
            pattern = torch.tensor(pattern, dtype=torch.float32)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} given as a list must be a nested (3, h, w) list of numbers: {err}") from None
    if not isinstance(pattern, torch.Tensor):
        raise TypeError(f"{name} must be a (3, h, w) tensor in [0, 1], got {type(pattern).__name__}")
    if pattern.ndim != 3 or pattern.shape[0] != 3 or pattern.shape[1] < 1 or pattern.shape[2] < 1:
        raise ValueError(f"{name} must have shape (3, h, w), got {tuple(pattern.shape)}")
    if not pattern.is_floating_point():
        raise ValueError(f"{name} must be float values in [0, 1], got dtype {pattern.dtype} (divide uint8 by 255)")
    if not torch.isfinite(pattern).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    if pattern.min() < 0 or pattern.max() > 1:
        raise ValueError(f"{name} must lie in [0, 1], got range [{pattern.min().item():.3f}, "
                         f"{pattern.max().item():.3f}]")
    return pattern


# ------------------------------------------------------------------------------------------
# Shared building blocks: seeded patterns, patch size and placement, stamping
# ------------------------------------------------------------------------------------------
def seeded_uniform(seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Uniform [0, 1) float32 values on the CPU, a pure function of ``(seed, shape)``."""
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def patch_hw(size: Size, image_hw: tuple[int, int]) -> tuple[int, int]:
    """(h, w) in pixels of a patch of ``size`` (int pixels, or float fraction of each side)."""
    if isinstance(size, int):
        return size, size
    return patch_side(size, image_hw[0]), patch_side(size, image_hw[1])


def patch_corners(position: Position, image_hw: tuple[int, int], hw: tuple[int, int], batch: int,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-left corners (ys, xs), each (B,) long, of an (h, w) patch on (H, W) images."""
    (H, W), (h, w) = image_hw, hw
    if h > H or w > W:
        raise ValueError(f"the {h}x{w} patch does not fit on the {H}x{W} images; give a smaller size "
                         "(or a float fraction of the side)")
    if position == "random":
        ys = torch.randint(0, H - h + 1, (batch,), generator=generator)  # (B,)
        xs = torch.randint(0, W - w + 1, (batch,), generator=generator)  # (B,)
        return ys, xs
    if isinstance(position, tuple):
        y, x = position
        if y > H - h or x > W - w:
            raise ValueError(f"position {position} puts the {h}x{w} patch outside the {H}x{W} images "
                             f"(the top-left corner must lie in [0, {H - h}] x [0, {W - w}])")
    else:
        y, x = {"top_left": (0, 0), "top_right": (0, W - w), "bottom_left": (H - h, 0),
                "bottom_right": (H - h, W - w), "center": ((H - h) // 2, (W - w) // 2)}[position]
    return torch.full((batch,), y, dtype=torch.long), torch.full((batch,), x, dtype=torch.long)


def stamp(pixels: torch.Tensor, patch: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor) -> torch.Tensor:
    """A copy of ``pixels`` (B, 3, H, W) with ``patch`` (3, h, w) pasted at each image's (ys[i], xs[i]).

    Differentiable in both ``pixels`` and ``patch``; ``pixels`` is not modified.
    """
    dev = pixels.device
    h, w = patch.shape[-2:]
    rows = (ys.to(dev)[:, None] + torch.arange(h, device=dev))[:, :, None]  # (B, h, 1)
    cols = (xs.to(dev)[:, None] + torch.arange(w, device=dev))[:, None, :]  # (B, 1, w)
    batch = torch.arange(pixels.shape[0], device=dev)[:, None, None]  # (B, 1, 1)
    out = pixels.clone()
    out[batch, :, rows, cols] = patch.to(pixels.dtype).permute(1, 2, 0)  # the indexed region is (B, h, w, 3)
    return out


def resize_pattern(pattern: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """``pattern`` (3, h, w) resized to ``hw`` (bilinear, antialiased when shrinking; differentiable)."""
    if tuple(pattern.shape[-2:]) == tuple(hw):
        return pattern
    shrink = hw[0] < pattern.shape[-2] or hw[1] < pattern.shape[-1]
    return F.interpolate(pattern[None], size=hw, mode="bilinear", align_corners=False, antialias=shrink)[0]


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, tuple):
        return [_jsonable(v) for v in value]
    return value


# ------------------------------------------------------------------------------------------
# The contract
# ------------------------------------------------------------------------------------------
class Trigger(Method):
    """Base of all triggers: ``apply(pixels, generator) -> pixels``, ``params()``, ``to_dict()``.

    Subclasses set ``name`` (their registered name), validate their ``__init__`` arguments into
    attributes of the same names, and implement :meth:`_apply` (validated input, a
    ``torch.Generator``; no clamping). A trigger needs no model (``family`` None); its config
    (:meth:`config`) holds a given pattern as nested lists, as its record does, so a trigger of any
    kind can be written in a spec as ``{name, params}``.
    """

    name: ClassVar[str]
    family: ClassVar[str | None] = None

    def apply(self, pixels: torch.Tensor, generator: torch.Generator | int | None = None) -> torch.Tensor:
        """Stamp the trigger on ``pixels`` (B, 3, H, W) in [0, 1]; returns a new (B, 3, H, W) tensor in [0, 1]."""
        check_pixels(pixels, "pixels")
        return self._apply(pixels, make_generator(generator)).clamp(0, 1)

    __call__ = apply

    def _apply(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The ``__init__`` arguments as configured, JSON-able (tensors as nested lists)."""
        sig = inspect.signature(type(self).__init__)
        return {k: _jsonable(getattr(self, k)) for k in sig.parameters if k != "self"}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able record from which :func:`trigger_from_dict` rebuilds this trigger exactly."""
        return {"name": self.name, "version": TRIGGER_RECORD_VERSION, "params": self.params()}

    def config(self) -> dict[str, Any]:
        """``{"name", "params"}`` as a spec writes it (given patterns as nested lists of floats)."""
        entry = registry.entry_of(self)
        if entry is None or entry.name != self.name:
            raise TypeError(f"{type(self).__name__} is not registered as trigger {self.name!r}, so it has no config name")
        return {"name": self.name, "params": self.params()}

    def __repr__(self) -> str:
        def short(v: Any) -> str:
            return f"<tensor {tuple(v.shape)}>" if isinstance(v, torch.Tensor) else repr(v)

        sig = inspect.signature(type(self).__init__)
        args = ", ".join(f"{k}={short(getattr(self, k))}" for k in sig.parameters if k != "self")
        return f"{type(self).__name__}({args})"


@registry.register("triggers", "patch")
class PatchTrigger(Trigger):
    """BadNets-style opaque square (checkerboard or seeded noise), any size and position."""

    name = "patch"
    paper = "Gu et al., arXiv 2017 (BadNets); Carlini & Terzis, ICLR 2022"

    def __init__(self, pattern: str = "checkerboard", size: Size = 0.125, position: Position = "bottom_right",
                 seed: int = 0):
        if pattern not in PATCH_PATTERNS:
            raise ValueError(f"pattern must be one of {PATCH_PATTERNS}, got {pattern!r}"
                             f"{_suggest(pattern, PATCH_PATTERNS)}; for a given tensor use OptimizedPatch")
        self.pattern = pattern  # "checkerboard": BadNets-like; "noise": uniform, from seed
        self.size = check_size(size)  # int pixels or fraction of the side; 1/8 = 4 px on 32 px images
        self.position = check_position(position)  # BadNets' corner by default
        self.seed = check_seed(seed)  # the noise pattern's seed (unused by the checkerboard)

    def make_patch(self, h: int, w: int) -> torch.Tensor:
        """The (3, h, w) float32 pattern on the CPU (noise: a pure function of (seed, h, w))."""
        if self.pattern == "noise":
            return seeded_uniform(self.seed, (3, h, w))
        i, j = torch.arange(h)[:, None], torch.arange(w)[None, :]
        return ((i + j) % 2 == 0).float().expand(3, h, w).clone()  # white at the top-left pixel

    def _apply(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        image_hw = tuple(pixels.shape[-2:])
        hw = patch_hw(self.size, image_hw)
        ys, xs = patch_corners(self.position, image_hw, hw, pixels.shape[0], generator)
        return stamp(pixels, self.make_patch(*hw).to(pixels.device), ys, xs)


@registry.register("triggers", "blended")
class BlendedTrigger(Trigger):
    """Chen et al.'s blended injection: ``(1 - alpha) x + alpha pattern`` over the whole image."""

    name = "blended"
    paper = "Chen et al., arXiv 2017"

    def __init__(self, alpha: float = 0.2, pattern: str | torch.Tensor = "noise", seed: int = 0):
        self.alpha = check_budget("alpha", alpha, 0.0, 1.0, hint=" (blend ratio; the paper trains with 0.2)")
        if isinstance(pattern, str):
            if pattern != "noise":
                raise ValueError(f"pattern must be 'noise' (seeded uniform noise) or a (3, h, w) tensor in [0, 1], "
                                 f"got {pattern!r}")
            self.pattern: str | torch.Tensor = pattern
        else:  # a private copy: the trigger must not change when the caller's tensor does
            self.pattern = check_pattern(pattern).detach().clone()
        self.seed = check_seed(seed)  # the noise pattern's seed (unused with a given pattern)

    def blend_pattern(self, height: int, width: int) -> torch.Tensor:
        """The (3, height, width) key image on the CPU: seeded noise at that size, or the given pattern resized."""
        if isinstance(self.pattern, str):
            return seeded_uniform(self.seed, (3, height, width))
        return resize_pattern(self.pattern, (height, width)).clamp(0, 1)

    def _apply(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        key = self.blend_pattern(*pixels.shape[-2:]).to(pixels.device, pixels.dtype)  # (3, H, W)
        return (1 - self.alpha) * pixels + self.alpha * key


@registry.register("triggers", "sig")
class SIGTrigger(Trigger):
    """Barni et al.'s SIG: a horizontal sinusoid ``delta * sin(2 pi j f / m)`` added to the image."""

    name = "sig"
    paper = "Barni et al., ICIP 2019"

    def __init__(self, delta: float = 20 / 255, frequency: float = 6.0):
        self.delta = check_budget("delta", delta, 0.0, 1.0, hint=" (amplitude in pixel units; the paper's 20/255)")
        self.frequency = check_budget("frequency", frequency, 0.0, math.inf,
                                      hint=" (periods across the image width; the paper's 6)")

    def signal(self, height: int, width: int) -> torch.Tensor:
        """The (height, width) float64 signal ``v(i, j)``, constant along each column."""
        j = torch.arange(1, width + 1, dtype=torch.float64)  # columns 1 .. m, as in the paper
        v = self.delta * torch.sin(2 * math.pi * j * self.frequency / width)  # (W,)
        return v.expand(height, width)

    def _apply(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        v = self.signal(*pixels.shape[-2:]).to(pixels.device, pixels.dtype)  # (H, W), broadcast over B and C
        return pixels + v


@registry.register("triggers", "wanet")
class WaNetTrigger(Trigger):
    """Nguyen & Tran's WaNet: a smooth, seeded warping field (k x k control grid, strength s)."""

    name = "wanet"
    paper = "Nguyen & Tran, ICLR 2021"

    def __init__(self, k: int = 4, strength: float = 0.5, grid_rescale: float = 1.0, seed: int = 0):
        self.k = check_int("k", k, 2)  # control-grid side; the paper's 4
        self.strength = check_budget("strength", strength, 0.0, math.inf,
                                     hint=" (warping strength s; the paper's 0.5)")
        self.grid_rescale = check_budget("grid_rescale", grid_rescale, 1e-6, math.inf,
                                         hint=" (scale of the sampling grid; the paper's 1)")
        self.seed = check_seed(seed)  # the control grid's seed
        control = seeded_uniform(self.seed, (1, 2, self.k, self.k)) * 2 - 1  # (1, 2, k, k) in [-1, 1]
        self._control = control / control.abs().mean()  # mean absolute value 1

    def field(self, height: int, width: int) -> torch.Tensor:
        """The (1, height, width, 2) upsampled control grid (x, y), float32, mean |value| ~1."""
        up = F.interpolate(self._control, size=(height, width), mode="bicubic", align_corners=True)  # (1, 2, H, W)
        return up.permute(0, 2, 3, 1)  # (1, H, W, 2)

    def grid(self, height: int, width: int) -> torch.Tensor:
        """The (1, height, width, 2) sampling grid of ``F.grid_sample`` (x, y in [-1, 1], corners aligned)."""
        ys = torch.linspace(-1, 1, height)
        xs = torch.linspace(-1, 1, width)
        identity = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)[None]  # (1, H, W, 2): (x, y)
        scale = torch.tensor([width, height], dtype=torch.float32)  # the field is in units of 1/size
        return ((identity + self.strength * self.field(height, width) / scale) * self.grid_rescale).clamp(-1, 1)

    def _warp(self, pixels: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        grid = grid.to(pixels.device, pixels.dtype).expand(pixels.shape[0], -1, -1, -1)  # (B, H, W, 2)
        return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=True)

    def _apply(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self._warp(pixels, self.grid(*pixels.shape[-2:]))

    def apply_noise(self, pixels: torch.Tensor, generator: torch.Generator | int | None = None) -> torch.Tensor:
        """The paper's noise mode: the warp plus a per-pixel offset in [-1, 1] / size, drawn per image from
        ``generator``; applied to "cross" samples that keep their true labels. (B, 3, H, W) in [0, 1]."""
        check_pixels(pixels, "pixels")
        B, _, H, W = pixels.shape
        g = make_generator(generator)
        offsets = (torch.rand(B, H, W, 2, generator=g) * 2 - 1) / torch.tensor([W, H], dtype=torch.float32)
        grid = (self.grid(H, W) + offsets).clamp(-1, 1)  # (B, H, W, 2)
        return self._warp(pixels, grid).clamp(0, 1)


@registry.register("triggers", "optimized_patch")
class OptimizedPatch(Trigger):
    """A patch whose pattern is a given (3, h, w) tensor (e.g. BadCLIP's); differentiable in it."""

    name = "optimized_patch"
    paper = "Liang et al., CVPR 2024 (BadCLIP)"

    def __init__(self, pattern: torch.Tensor, size: Size | None = None, position: Position = "bottom_right"):
        # Held by reference (not copied), so that an optimiser's in-place updates are what ``apply`` stamps.
        self.pattern = check_pattern(pattern)
        self.size = None if size is None else check_size(size)  # None: the pattern's own pixel size
        self.position = check_position(position)

    def _apply(self, pixels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if not torch.isfinite(self.pattern).all():
            raise ValueError("OptimizedPatch pattern contains NaN or infinite values (a diverged optimisation?)")
        image_hw = tuple(pixels.shape[-2:])
        hw = tuple(self.pattern.shape[-2:]) if self.size is None else patch_hw(self.size, image_hw)
        patch = resize_pattern(self.pattern.to(pixels.device), hw)  # (3, h, w)
        ys, xs = patch_corners(self.position, image_hw, hw, pixels.shape[0], generator)
        return stamp(pixels, patch, ys, xs)


# ------------------------------------------------------------------------------------------
# Rebuilding triggers from their names and records
# ------------------------------------------------------------------------------------------
TRIGGERS: dict[str, type[Trigger]] = {
    cls.name: cls for cls in (PatchTrigger, BlendedTrigger, SIGTrigger, WaNetTrigger, OptimizedPatch)
}


def build_trigger(name: str, **params: Any) -> Trigger:
    """The trigger registered as ``name`` (see :data:`TRIGGERS`) configured with ``params``."""
    if name not in TRIGGERS:
        raise ValueError(f"unknown trigger {name!r}{_suggest(name, tuple(TRIGGERS))}; known: {sorted(TRIGGERS)}")
    cls = TRIGGERS[name]
    allowed = [k for k in inspect.signature(cls.__init__).parameters if k != "self"]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise TypeError(f"trigger {name!r} got unknown parameter(s) {unknown}; it takes {allowed}")
    return cls(**params)


def trigger_from_dict(record: dict[str, Any]) -> Trigger:
    """Rebuild a trigger from :meth:`Trigger.to_dict`'s record (e.g. read back from a results store)."""
    if not isinstance(record, dict):
        raise TypeError(f"record must be a dict from Trigger.to_dict() ({{'name', 'version', 'params'}}), "
                        f"got {type(record).__name__}")
    if not isinstance(record.get("name"), str):
        raise ValueError(f"record must have a string 'name' (from Trigger.to_dict()), got keys {sorted(record)}")
    version = record.get("version", TRIGGER_RECORD_VERSION)
    if version != TRIGGER_RECORD_VERSION:
        raise ValueError(f"trigger record version {version!r} is not supported (this mmsec writes version "
                         f"{TRIGGER_RECORD_VERSION}); the pattern it describes cannot be rebuilt exactly")
    params = record.get("params", {})
    if not isinstance(params, dict):
        raise ValueError(f"record 'params' must be a dict, got {type(params).__name__}")
    return build_trigger(record["name"], **params)
