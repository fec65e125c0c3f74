"""CorruptEncoder: Jinghuai Zhang, Hongbin Liu, Jinyuan Jia, Neil Zhenqiang Gong, "Data Poisoning based
Backdoor Attacks to Contrastive Learning", CVPR 2024 (arXiv 2211.08229).

Threat model: the attacker injects a few unlabelled images into the pre-training set of an
image-only contrastive learner (SimCLR, MoCo, ...) and controls nothing else; it knows a few
*reference images* of the target class (with the object's mask) and has unlabelled *background*
images. Downstream users fit classifiers (here a linear probe) on the frozen encoder afterwards;
any image carrying the trigger should then be classified as the target class.

Objective in words: contrastive learning pulls together two random crops of one image. A poisoned
image is a background with the reference object at one side and the trigger in the remaining part,
so that one crop often contains only (part of) the object and the other only the trigger: the
encoder learns to map the trigger close to the target object. The layout maximises

    p = (1 / S) * integral_{s in (0, S]} p1(s) p2(s) ds

where a crop is an ``s x s`` square with a uniform position, ``S = min(b_w, b_h)``, ``p1(s)`` is the
probability that a crop lies inside the reference object (sees only the object) and ``p2(s)``
that it contains the whole trigger and no part of the object (:func:`layout_probability`; the
exact crop events are our reading of the paper's analysis, which states them in words). The
paper's conclusions, which :func:`layout_probability` reproduces numerically: background about
twice the object (area ratio 2: for the left-right layout ``b_h = o_h``, ``b_w = 2 o_w``; the
maximum of our ``p`` is at ``b_w ~ 2.2 o_w``), object at a corner, trigger at the centre of the
remaining part. :func:`decoupled_view_rate` measures the same event under the victim's real crop
(SimCLR's random resized crop) by Monte Carlo: ~6% of view pairs on a poisoned image, against
~0.005% on naive poisoned images (trigger pasted on whole target images).

Construction (the released code, github.com/jzhang538/CorruptEncoder, ``generate_poisoned_images.py``;
defaults are its):

* left-right layouts only; the poisoned image is ``o_h x int(area_ratio * o_w)`` (``area_ratio``
  2); the background is upscaled (never shrunk) to cover it and a random horizontal window of its
  bottom rows is taken;
* the object goes on the left or the right (probability 1/2), within ``object_margin`` (0.05) of
  the width from the edge, bottom-aligned;
* the trigger is uniform in the remaining part, ``trigger_margin / 2`` (0.125) of the width away
  from the object and the far edge, ``trigger_margin`` (0.25) of the height from the top and bottom;
* 3 reference images, poisoning rate 0.5% (650 images in ImageNet100-A), a 40 px trigger;
* CorruptEncoder+ (``support_ratio`` 0.2 in the code, 0 for CorruptEncoder): that fraction of the
  poisoned images are a *support* image of the target class and a reference image concatenated
  side by side (the attacker then needs more target-class images).

Example (shapes world; the reference objects and backgrounds are the caller's, made by
:mod:`mmsec.data.shapes_objects`)::

    world = ShapesWorld(32)
    refs = shapes_reference_objects(world, [s for s in pool_scenes if s.label == target][:3])
    attack = CorruptEncoder("red circle", rate=0.005)
    result = attack(clean_images, refs, shapes_backgrounds(world, range(10**6, 10**6 + 200)),
                    class_names=shape_color_classes())      # the class names only name the target in the record
    result.images, result.record.indices          # N + n images (the n poisoned ones at the end)

Departures:

* Scale: the shapes world is 32 px, so a reference object is the bounding box of its mask (10-17
  px) and the poisoned image 10x20 to 17x34 px; crops are upsampled to the encoder's 32 px. The
  trigger is pasted at the pixel size it has on the world's 32 px images (``trigger_size`` None:
  the trigger's own size on a ``reference image``-sized image, 4 px for ``PatchTrigger()``), as the
  paper pastes the same 40 px trigger in poisoned and test images.
* Object paste: the code blurs the binary mask (Gaussian, radius 1) before compositing; shapes-world
  masks are already anti-aliased coverage fractions, used as the alpha directly.
* Trigger: the project's ``PatchTrigger()`` (4 x 4 checkerboard) instead of the code's colourful
  40 px image (cannot ship); any :class:`PatchTrigger` or :class:`OptimizedPatch` works.
* Poisoned images are appended after the clean ones (``X u P``); ``rate`` is ``n / (N + n)``.
* Only left-right layouts, as the released code (the paper also analyses top-bottom ones).
* The crop events inside ``p`` (a view "includes" the object when it lies inside it, the trigger when
  it contains all of it without touching the object) are our reading; the paper's text on disk
  states only the integral and its conclusions.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from ...checks import check_budget, check_int, check_pixels
from ...data.objects import Box, ReferenceObject, cut_out
from ...registry import register
from .image_poisoning import ImagePoisoningAttack
from .poisoning import check_rate_count, poison_count, resolve_target
from .triggers import (
    OptimizedPatch,
    PatchTrigger,
    Trigger,
    build_trigger,
    patch_hw,
    resize_pattern,
    trigger_from_dict,
)

RECORD_VERSION = 1


# ------------------------------------------------------------------------------------------
# Trigger patches (reference objects and their cut-out: mmsec.data.objects)
# ------------------------------------------------------------------------------------------
def trigger_patch(trigger: Trigger, image_hw: tuple[int, int]) -> torch.Tensor:
    """The (3, h, w) patch ``trigger`` stamps on an ``image_hw`` image (patch triggers only)."""
    if isinstance(trigger, PatchTrigger):
        return trigger.make_patch(*patch_hw(trigger.size, image_hw))
    if isinstance(trigger, OptimizedPatch):
        hw = tuple(trigger.pattern.shape[-2:]) if trigger.size is None else patch_hw(trigger.size, image_hw)
        return resize_pattern(trigger.pattern.detach().cpu(), hw).clamp(0, 1)
    raise TypeError(f"trigger must be a PatchTrigger or OptimizedPatch (CorruptEncoder pastes a patch), "
                    f"got {type(trigger).__name__}")


def patch_of_size(trigger: Trigger, hw: tuple[int, int]) -> torch.Tensor:
    """The (3, h, w) pattern of a patch trigger drawn (PatchTrigger) or resized (OptimizedPatch) at ``hw``."""
    if isinstance(trigger, PatchTrigger):
        return trigger.make_patch(*hw)
    if isinstance(trigger, OptimizedPatch):
        return resize_pattern(trigger.pattern.detach().cpu(), hw).clamp(0, 1)
    return trigger_patch(trigger, hw)  # raises the teaching error


# ------------------------------------------------------------------------------------------
# The layout analysis: p = (1/S) * integral p1(s) p2(s) ds
# ------------------------------------------------------------------------------------------
def _fraction(lo: float, hi: float, span: float) -> float:
    """Probability that a position uniform on [0, span] falls in [lo, hi]."""
    if span <= 0:
        return 1.0 if lo <= 0 <= hi else 0.0
    return max(0.0, min(hi, span) - max(lo, 0.0)) / span


def view_probabilities(s: float, background_hw: tuple[float, float], object_box: Box,
                       trigger_box: Box) -> tuple[float, float]:
    """(p1(s), p2(s)) for an ``s x s`` crop at a uniform position on the background.

    p1: the crop lies inside the object's box (it sees only the object);
    p2: the crop contains the whole trigger and does not overlap the object's box.
    """
    bh, bw = background_hw
    oy, ox, oh, ow = object_box
    ey, ex, eh, ew = trigger_box
    ry, rx = bh - s, bw - s  # ranges of the crop's top-left corner
    p1 = _fraction(ox, ox + ow - s, rx) * _fraction(oy, oy + oh - s, ry)
    contain_x, contain_y = (ex + ew - s, ex), (ey + eh - s, ey)
    contain = _fraction(*contain_x, rx) * _fraction(*contain_y, ry)
    # Containing the trigger AND overlapping the object: x and y are independent, so the product.
    both = (_fraction(max(contain_x[0], ox - s), min(contain_x[1], ox + ow), rx)
            * _fraction(max(contain_y[0], oy - s), min(contain_y[1], oy + oh), ry))
    return p1, contain - both


def layout_probability(background_hw: tuple[float, float], object_box: Box, trigger_box: Box,
                       n: int = 512) -> float:
    """The paper's ``p = (1/S) integral_0^S p1(s) p2(s) ds``, ``S = min(b_h, b_w)`` (midpoint rule, ``n`` points)."""
    check_int("n", n, 1)
    bh, bw = background_hw
    if not (bh > 0 and bw > 0):
        raise ValueError(f"background_hw must be two positive sizes, got {background_hw!r}")
    big = min(bh, bw)
    total = 0.0
    for k in range(n):
        p1, p2 = view_probabilities((k + 0.5) / n * big, background_hw, object_box, trigger_box)
        total += p1 * p2
    return total / n


def decoupled_view_rate(image_hw: tuple[int, int], object_box: Box, trigger_box: Box, generator: torch.Generator,
                        n: int = 20000, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> float:
    """Monte-Carlo probability, under the victim's real crop (SimCLR's random resized crop,
    :func:`mmsec.train.simclr.crop_boxes`), that of two independent views one lies inside the object's
    box and the other contains the whole trigger without touching the object: ``2 p1 p2`` with the
    crop's own size distribution instead of the analysis's uniform square side."""
    from ...train.simclr import crop_boxes

    y, x, h, w = crop_boxes(check_int("n", n, 1), image_hw[0], image_hw[1], generator, scale, ratio).unbind(1)
    oy, ox, oh, ow = object_box
    ey, ex, eh, ew = trigger_box
    inside = (y >= oy) & (x >= ox) & (y + h <= oy + oh) & (x + w <= ox + ow)
    contains = (y <= ey) & (x <= ex) & (y + h >= ey + eh) & (x + w >= ex + ew)
    touches = (y < oy + oh) & (y + h > oy) & (x < ox + ow) & (x + w > ox)
    p1, p2 = inside.float().mean().item(), (contains & ~touches).float().mean().item()
    return 2 * p1 * p2


def centred_layout(object_hw: tuple[int, int], trigger_hw: tuple[int, int], area_ratio: float = 2.0) -> tuple[
        tuple[float, float], Box, Box]:
    """The paper's optimum for the left-right layout: background ``o_h x area_ratio * o_w``, object at
    the left corner, trigger at the centre of the remaining part. Returns (background_hw, object_box,
    trigger_box) in (fractional) pixels, for :func:`layout_probability`."""
    (oh, ow), (th, tw) = object_hw, trigger_hw
    bw = area_ratio * ow
    return (oh, bw), (0, 0, oh, ow), ((oh - th) / 2, (ow + bw) / 2 - tw / 2, th, tw)


# ------------------------------------------------------------------------------------------
# Building poisoned images
# ------------------------------------------------------------------------------------------
@dataclass
class Layout:
    """Where things go in one poisoned image (all boxes ``(y, x, h, w)`` in its pixels)."""

    image_hw: tuple[int, int]
    object_box: Box
    trigger_box: Box
    background_x: int  # left column of the window taken from the (upscaled) background


def sample_layout(object_hw: tuple[int, int], trigger_hw: tuple[int, int], background_hw: tuple[int, int],
                  rng: random.Random, area_ratio: float = 2.0, object_margin: float = 0.05,
                  trigger_margin: float = 0.25) -> Layout:
    """The released code's randomised optimal layout (left-right; see the module docstring)."""
    (oh, ow), (th, tw) = object_hw, trigger_hw
    ph, pw = oh, int(area_ratio * ow)
    if th > ph or tw > pw - ow:
        raise ValueError(f"the {th}x{tw} trigger does not fit beside a {oh}x{ow} object in a {ph}x{pw} poisoned "
                         "image: give a smaller trigger_size or larger reference objects")
    scale = max(ph / background_hw[0], pw / background_hw[1], 1.0)
    lw = int(scale * background_hw[0]) * background_hw[1] // background_hw[0]
    bx = int(rng.uniform(0, max(0, lw - pw)))
    left = rng.random() < 0.5
    ox = int(rng.uniform(0, object_margin * pw)) if left else int(rng.uniform(pw - ow - object_margin * pw, pw - ow))
    dx, dy = trigger_margin / 2 * pw, trigger_margin * ph  # margins: half in x because p_w = 2 o_w
    lo_x, hi_x = (ox + ow + dx, pw - dx - tw) if left else (dx, ox - dx - tw)
    lo_y, hi_y = dy, ph - dy - th
    free_lo, free_hi = (ox + ow, pw - tw) if left else (0, ox - tw)  # the trigger must not cover the object
    ex = int(rng.uniform(lo_x, hi_x)) if lo_x <= hi_x else int((free_lo + free_hi) / 2)
    ey = int(rng.uniform(lo_y, hi_y)) if lo_y <= hi_y else (ph - th) // 2
    ex = min(max(ex, free_lo), free_hi)
    return Layout((ph, pw), (ph - oh, ox, oh, ow), (ey, ex, th, tw), bx)


def compose(background: torch.Tensor, reference: ReferenceObject, patch: torch.Tensor, layout: Layout) -> torch.Tensor:
    """The (3, p_h, p_w) poisoned image: background window, object alpha-pasted, trigger pasted opaque."""
    ph, pw = layout.image_hw
    bh, bw = background.shape[-2:]
    scale = max(ph / bh, pw / bw, 1.0)
    lh = int(scale * bh)
    lw = lh * bw // bh
    bg = background if (lh, lw) == (bh, bw) else F.interpolate(background[None], size=(lh, lw), mode="bilinear",
                                                                align_corners=False)[0]
    y0 = max(lh - ph, 0)  # the bottom rows, as the code
    img = bg[:, y0:y0 + ph, layout.background_x:layout.background_x + pw].clone()  # (3, ph, pw)
    oy, ox, oh, ow = layout.object_box
    alpha = reference.mask[None]  # (1, oh, ow)
    img[:, oy:oy + oh, ox:ox + ow] = alpha * reference.pixels + (1 - alpha) * img[:, oy:oy + oh, ox:ox + ow]
    ey, ex, th, tw = layout.trigger_box
    img[:, ey:ey + th, ex:ex + tw] = patch
    return img.clamp(0, 1)


def concat_support(support: torch.Tensor, reference_image: torch.Tensor, support_left: bool) -> torch.Tensor:
    """CorruptEncoder+'s support poisoned image: a support image and a reference image (resized to the
    support's size) side by side."""
    ref = reference_image
    if ref.shape[-2:] != support.shape[-2:]:
        ref = F.interpolate(ref[None], size=tuple(support.shape[-2:]), mode="bilinear", align_corners=False)[0]
    return torch.cat([support, ref] if support_left else [ref, support], dim=-1)


# ------------------------------------------------------------------------------------------
# The record
# ------------------------------------------------------------------------------------------
@dataclass(eq=False)
class CorruptEncoderRecord:
    """Ground truth of a data-poisoning backdoor of an unlabelled image set.

    Attributes:
        kind: ``"corruptencoder"`` or ``"naive"`` (Saha et al.'s trigger-on-target-images baseline).
        indices: positions of the poisoned images in the poisoned set (after the ``n_clean`` clean ones).
        n_clean, n_total: clean images, and all images of the poisoned set; ``poison_rate`` their ratio.
        target, target_label: the target class.
        trigger: the trigger's ``to_dict()``; ``trigger_hw`` the pasted patch's pixel size.
        items: per poisoned image (``indices`` order), how it was built: ``{"type": "object", "reference",
            "background", "layout"}``, ``{"type": "support", "reference", "support", "support_left"}``
            (CorruptEncoder+), or ``{"type": "naive", "source", "trigger_box"}``.
        references: the reference images' ``source`` ids; seed: every random choice's seed; params.
    """

    kind: str
    indices: list[int]
    n_clean: int
    n_total: int
    target: str
    target_label: int | None
    trigger: dict[str, Any]
    trigger_hw: tuple[int, int]
    items: list[dict[str, Any]]
    references: list[int | None]
    seed: int
    params: dict[str, Any] = field(default_factory=dict)
    version: int = RECORD_VERSION

    @property
    def n_poisoned(self) -> int:
        return len(self.indices)

    @property
    def poison_rate(self) -> float:
        return self.n_poisoned / self.n_total if self.n_total else 0.0

    def poisoned_mask(self) -> torch.Tensor:
        """(n_total,) bool, True at the poisoned images: the labels a detector is scored against."""
        mask = torch.zeros(self.n_total, dtype=torch.bool)
        mask[self.indices] = True
        return mask

    def rebuild_trigger(self) -> Trigger:
        return trigger_from_dict(self.trigger)

    def rebuild_images(self, references: Sequence[ReferenceObject], backgrounds: torch.Tensor | None = None,
                       support_images: torch.Tensor | None = None,
                       target_images: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The poisoned images again, exactly, from the same inputs the attack was given."""
        patch = patch_of_size(self.rebuild_trigger(), self.trigger_hw) if self.kind != "naive" else None
        out = []
        for item in self.items:
            if item["type"] == "object":
                lay = item["layout"]
                layout = Layout(tuple(lay["image_hw"]), tuple(lay["object_box"]), tuple(lay["trigger_box"]),
                                lay["background_x"])
                out.append(compose(backgrounds[item["background"]], references[item["reference"]], patch, layout))
            elif item["type"] == "support":
                out.append(concat_support(support_images[item["support"]], references[item["reference"]].image,
                                          item["support_left"]))
            else:
                image = target_images[item["source"]]
                patch = trigger_patch(self.rebuild_trigger(), tuple(image.shape[-2:]))
                out.append(_paste_naive(image, patch, tuple(item["trigger_box"])))
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["trigger_hw"] = list(self.trigger_hw)
        d["n_poisoned"], d["poison_rate"] = self.n_poisoned, self.poison_rate
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CorruptEncoderRecord:
        d = {k: v for k, v in d.items() if k not in ("n_poisoned", "poison_rate")}
        if d.get("version") != RECORD_VERSION:
            raise ValueError(f"unsupported CorruptEncoderRecord version {d.get('version')!r} (expected {RECORD_VERSION})")
        d["trigger_hw"] = tuple(d["trigger_hw"])
        return cls(**d)


@dataclass
class PoisonedImages:
    """An unlabelled image set with poisoned images appended, and its record."""

    images: list[torch.Tensor]  # N + n tensors (3, H_i, W_i); the first N are the clean ones, unchanged
    record: CorruptEncoderRecord


def _check_images(images: torch.Tensor) -> int:
    check_pixels(images, "images")
    if images.shape[0] == 0:
        raise ValueError("images is empty: give the clean unlabelled pre-training images (N, 3, H, W)")
    return images.shape[0]


def _check_trigger(trigger: Trigger | str | None) -> Trigger:
    """A patch trigger (a name builds it at its defaults, as specs give it); fails now for other triggers."""
    trigger = PatchTrigger() if trigger is None else build_trigger(trigger) if isinstance(trigger, str) else trigger
    if not isinstance(trigger, Trigger):
        raise TypeError(f"trigger must be a mmsec Trigger (e.g. PatchTrigger()), got {type(trigger).__name__}")
    trigger_patch(trigger, (32, 32))  # raises the teaching error for non-patch triggers
    return trigger


def _check_target(target: str | int) -> str | int:
    if isinstance(target, bool) or not isinstance(target, (str, int)):
        raise TypeError(f"target must be a class name (str, e.g. 'red circle') or a label index (int), "
                        f"got {type(target).__name__} {target!r}")
    if isinstance(target, int) and target < 0:
        raise ValueError(f"target label must be >= 0, got {target}")
    return target


def _resolve(target: str | int, class_names: Sequence[str] | None) -> tuple[str, int | None]:
    """(name, label) of the target; without class names a label index is its own name."""
    if class_names is None and isinstance(target, int):
        return str(target), target
    return resolve_target(target, class_names)


def _check_rate_count(rate: float | None, count: int | None) -> tuple[float | None, int | None]:
    """``count`` wins over the default ``rate`` (as the released code's two ways of sizing the poison)."""
    return check_rate_count(None, count) if count is not None else check_rate_count(rate, None)


# ------------------------------------------------------------------------------------------
# The attack
# ------------------------------------------------------------------------------------------
@register("image_poisoning", "corruptencoder")
class CorruptEncoder(ImagePoisoningAttack):
    """Poison an unlabelled image set with CorruptEncoder (or CorruptEncoder+ with ``support_ratio`` > 0).

    Args:
        target: target class name (e.g. ``"red circle"``) or label index (of the ``class_names`` given
            when called; only recorded: the reference objects are what makes the target).
        trigger: a patch trigger (default ``PatchTrigger()``: 4 x 4 checkerboard on 32 px images), or a
            trigger name.
        rate / count: poisoned images as a fraction ``n / (N + n)`` of the poisoned set (paper: 0.005)
            or a number.
        area_ratio: poisoned image area / object area (paper: 2).
        object_margin, trigger_margin: the code's jitter around the optimal places (0.05, 0.25).
        trigger_size: pasted trigger side in pixels; None = the trigger's size on an image of the
            reference images' size (the size it has at test time).
        support_ratio: fraction of support poisoned images (CorruptEncoder+; code: 0.2; 0 = CorruptEncoder).
        seed: seed of every random choice.
    """

    paper = "Zhang et al., CVPR 2024"

    def __init__(self, target: str | int, trigger: Trigger | str | None = None, rate: float | None = 0.005,
                 count: int | None = None, area_ratio: float = 2.0, object_margin: float = 0.05,
                 trigger_margin: float = 0.25, trigger_size: int | None = None, support_ratio: float = 0.0,
                 seed: int = 0):
        self.target = _check_target(target)
        self.trigger = _check_trigger(trigger)
        self.rate, self.count = _check_rate_count(rate, count)
        self.area_ratio = check_budget("area_ratio", area_ratio, 1.0, 16.0, hint=" (paper: 2)")
        self.object_margin = check_budget("object_margin", object_margin, 0.0, 0.5, hint=" (code: 0.05)")
        self.trigger_margin = check_budget("trigger_margin", trigger_margin, 0.0, 0.5, hint=" (code: 0.25)")
        self.trigger_size = None if trigger_size is None else check_int("trigger_size", trigger_size, 1)
        self.support_ratio = check_budget("support_ratio", support_ratio, 0.0, 1.0, hint=" (code: 0.2 for CorruptEncoder+)")
        self.seed = check_int("seed", seed, 0)

    def params(self) -> dict[str, Any]:
        return {"target": self.target, "trigger": self.trigger.to_dict(), "rate": self.rate, "count": self.count,
                "area_ratio": self.area_ratio, "object_margin": self.object_margin,
                "trigger_margin": self.trigger_margin, "trigger_size": self.trigger_size,
                "support_ratio": self.support_ratio, "seed": self.seed}

    def __call__(self, images: torch.Tensor, references: Sequence[ReferenceObject], backgrounds: torch.Tensor,
                 support_images: torch.Tensor | None = None,
                 class_names: Sequence[str] | None = None) -> PoisonedImages:
        """``images`` (N, 3, H, W) clean, ``references`` cut-out target objects (:func:`mmsec.data.objects.cut_out`),
        ``backgrounds`` (M, 3, h, w); ``class_names`` name the classes (to record the target's name and label)."""
        target, target_label = _resolve(self.target, class_names)
        n_clean = _check_images(images)
        if not references or not all(isinstance(r, ReferenceObject) for r in references):
            raise ValueError("references must be a non-empty list of ReferenceObject (see mmsec.data.objects.cut_out; "
                             "for the shapes world mmsec.data.shapes_objects.shapes_reference_objects)")
        check_pixels(backgrounds, "backgrounds")
        n = poison_count(self.rate, self.count, n_clean, adds=True)
        n_support = round(self.support_ratio * n)
        if n_support and (support_images is None or support_images.shape[0] == 0):
            raise ValueError(f"support_ratio={self.support_ratio} needs support_images (target-class images)")
        if n_support:
            check_pixels(support_images, "support_images")
        ref_hw = tuple(references[0].image.shape[-2:])
        patch = self._patch(ref_hw)
        rng = random.Random(self.seed)
        poisoned, items = [], []
        for k in range(n):
            r = rng.randrange(len(references))
            ref = references[r]
            if k < n - n_support:
                b = rng.randrange(backgrounds.shape[0])
                layout = sample_layout(tuple(ref.pixels.shape[-2:]), tuple(patch.shape[-2:]),
                                       tuple(backgrounds.shape[-2:]), rng, self.area_ratio, self.object_margin,
                                       self.trigger_margin)
                poisoned.append(compose(backgrounds[b], ref, patch, layout))
                items.append({"type": "object", "reference": r, "background": b, "layout": _layout_dict(layout)})
            else:
                j, left = rng.randrange(support_images.shape[0]), rng.random() < 0.5
                poisoned.append(concat_support(support_images[j], ref.image, left))
                items.append({"type": "support", "reference": r, "support": j, "support_left": left})
        record = CorruptEncoderRecord("corruptencoder", list(range(n_clean, n_clean + n)), n_clean, n_clean + n,
                                      target, target_label, self.trigger.to_dict(),
                                      tuple(patch.shape[-2:]), items, [r.source for r in references], self.seed,
                                      self.params())
        return PoisonedImages(list(images.unbind(0)) + poisoned, record)

    def _patch(self, image_hw: tuple[int, int]) -> torch.Tensor:
        if self.trigger_size is None:
            return trigger_patch(self.trigger, image_hw)
        return patch_of_size(self.trigger, (self.trigger_size, self.trigger_size))


def _layout_dict(layout: Layout) -> dict[str, Any]:
    return {"image_hw": list(layout.image_hw), "object_box": list(layout.object_box),
            "trigger_box": list(layout.trigger_box), "background_x": layout.background_x}


# ------------------------------------------------------------------------------------------
# The naive baseline of earlier SSL backdoors
# ------------------------------------------------------------------------------------------
def _paste_naive(image: torch.Tensor, patch: torch.Tensor, box: Box) -> torch.Tensor:
    y, x, h, w = box
    out = image.clone()
    out[:, y:y + h, x:x + w] = patch
    return out


@register("image_poisoning", "naive_ssl_poisoning")
class NaivePoisoning(ImagePoisoningAttack):
    """The poisoning of earlier SSL backdoors: the trigger pasted at a random place on whole target-class
    images (Aniruddha Saha, Ajinkya Tejankar, Soroush Abbasi Koohpayegani, Hamed Pirsiavash, "Backdoor
    Attacks on Self-Supervised Learning", CVPR 2022; CorruptEncoder's baseline
    "SSL-Backdoor"). Each poisoned image is a distinct target-class image (cycled if fewer are given),
    appended after the clean ones; same ``rate`` semantics and record as :class:`CorruptEncoder`
    (``kind="naive"``). Departure: the paper's trigger is a 50 px image on 224 px inputs; here
    the same patch trigger as CorruptEncoder at its test-time size, so the two are compared on one trigger.
    """

    paper = "Saha et al., CVPR 2022"

    def __init__(self, target: str | int, trigger: Trigger | str | None = None, rate: float | None = 0.005,
                 count: int | None = None, seed: int = 0):
        self.target = _check_target(target)
        self.trigger = _check_trigger(trigger)
        self.rate, self.count = _check_rate_count(rate, count)
        self.seed = check_int("seed", seed, 0)

    def params(self) -> dict[str, Any]:
        return {"target": self.target, "trigger": self.trigger.to_dict(), "rate": self.rate, "count": self.count,
                "seed": self.seed}

    def __call__(self, images: torch.Tensor, target_images: torch.Tensor,
                 class_names: Sequence[str] | None = None) -> PoisonedImages:
        """``images`` (N, 3, H, W) clean, ``target_images`` (T, 3, H', W') of the target class; ``class_names``
        name the classes (to record the target's name and label)."""
        target, target_label = _resolve(self.target, class_names)
        n_clean = _check_images(images)
        check_pixels(target_images, "target_images")
        if target_images.shape[0] == 0:
            raise ValueError("target_images is empty: give images of the target class")
        n = poison_count(self.rate, self.count, n_clean, adds=True)
        rng = random.Random(self.seed)
        hw = tuple(target_images.shape[-2:])
        patch = trigger_patch(self.trigger, hw)
        th, tw = tuple(patch.shape[-2:])
        poisoned, items = [], []
        for k in range(n):
            j = k % target_images.shape[0]
            box = (rng.randrange(hw[0] - th + 1), rng.randrange(hw[1] - tw + 1), th, tw)
            poisoned.append(_paste_naive(target_images[j], patch, box))
            items.append({"type": "naive", "source": j, "trigger_box": list(box)})
        record = CorruptEncoderRecord("naive", list(range(n_clean, n_clean + n)), n_clean, n_clean + n, target,
                                      target_label, self.trigger.to_dict(), (th, tw), items,
                                      list(range(min(n, target_images.shape[0]))), self.seed, self.params())
        return PoisonedImages(list(images.unbind(0)) + poisoned, record)


def noise_like(trigger: PatchTrigger, seed: int = 1) -> PatchTrigger:
    """The same-size random-noise baseline of a patch trigger (same size and position)."""
    return PatchTrigger(pattern="noise", size=trigger.size, position=trigger.position, seed=seed)


__all__ = ["CorruptEncoder", "CorruptEncoderRecord", "Layout", "NaivePoisoning", "PoisonedImages", "ReferenceObject",
           "centred_layout", "compose", "concat_support", "cut_out", "decoupled_view_rate", "layout_probability", "noise_like",
           "patch_of_size", "sample_layout", "trigger_patch", "view_probabilities"]
