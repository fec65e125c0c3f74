"""PBCL: "Poisoning and Backdooring Contrastive Learning", Nicholas Carlini and Andreas Terzis, ICLR 2022
(arXiv 2106.09667, 2021).

Threat model: the attacker adds a few image-caption pairs to an uncurated training set (e.g.
web-scraped) and has no other control over training; the victim trains (or fine-tunes) a CLIP
model on the union ``X u P`` and uses it zero-shot or as a frozen encoder for linear probes.

Two attacks, one class each (both build the poisoned pairs ``P`` and nothing else):

* :class:`PBCLBackdoor` -- backdoor poisoning. Choose a patch ``bd`` and a target class ``y'``
  with its caption set ``Y'``; ``P = {(x_i (+) bd, c_i)}`` for clean training images ``x_i`` and
  captions ``c_i`` in ``Y'``. Training pulls the patch's features towards the text of ``y'``, so
  *any* image with the patch is classified (zero-shot, and by a probe fit on the encoder) as ``y'``.
* :class:`PBCLTargeted` -- targeted poisoning of one image. Choose a target image ``x'`` (never in
  the training set; e.g. a test image) and a wrong label ``y'``; ``P = {(x', c) : c in Y'}``: the
  target image *itself*, repeated, each copy with a caption of ``y'``. After training, ``x'`` is
  classified as ``y'`` while other images are unaffected.

Caption set ``Y'``: "text descriptions related to y'" (S0); the paper takes the training captions
that contain the label's name, and so does this attack on a fixed data set unless told otherwise.
The captions are world knowledge, the caller's (see :mod:`mmsec.attacks.backdoor.poisoning`): a list
(``caption_set=``, one caption drawn per poisoned pair) or a caption source handed over with
``use_captions``. On the shapes world, ``use_captions(ShapesCaptions())``
(:mod:`mmsec.data.shapes_text`) makes ``Y'`` every caption the world's six templates say of a
single-object scene of the target class, which is what the paper's search finds, and gives each
poisoned pair the caption variants of a random target-class scene. A stream of fresh pairs has no
captions to search, so it needs one of the two.

Tensor shapes: data sets hold (N, 3, H, W) pixels in [0, 1]; the target image is (3, H, W). The
target image ``x'`` of :class:`PBCLTargeted` is the caller's (a test image), handed over with
``with_target_image(x)``, so the attack itself is configured by numbers and names only.

Defaults and where they come from:

* ``rate``: backdoor 1e-4 (the paper's headline, 0.01% of Conceptual Captions, 300 of 3M pairs);
  targeted ``count=3`` (0.0001%, "three out of the 3 million images").
* ``mode="add"``: ``X u P``, the paper's construction (poisoned pairs appended; a fixed rate
  counts them in the total). On a stream of fresh pairs (``stream()``) the chosen positions are
  replaced instead (the batch size is fixed; with fresh scenes, replacing and adding are the same).
* ``trigger``: see departures.

Example (runs on the shipped world)::

    clean = ShapesDataset("train", n=2000).to_data()
    attack = PBCLBackdoor(target="red circle", rate=0.02).use_captions(ShapesCaptions())
    result = attack(clean)                                        # PoisonedData(data, record)
    result.record.indices, result.record.trigger                  # ground truth for detectors

Departures from the paper:

* Trigger. The project's source text (S0) names only "a backdoor patch bd"; the paper's patches
  are small squares (16 x 16 px on 224 px images, ~1/14 of the side, the size its follow-ups
  such as CleanCLIP reproduce, with noise pixels at a random place). At 1/14 of the 32 px shapes
  world a patch is 2 px; the default here is the trigger library's ``PatchTrigger()``: a 4 x 4 px
  checkerboard (1/8 of the side) in the bottom-right corner, the project's calibration (DESIGN.md
  section 1). Any :class:`Trigger` may be given (e.g. ``PatchTrigger(pattern="noise", size=0.07,
  position="random")`` for a paper-sized noise patch at a random place).
* Scale. The paper pre-trains CLIP for many epochs on 3M pairs, so each poisoned pair is seen
  many times; the shapes-world pre-training (``mmsec.train.poisoned``) draws fresh scenes every
  step, so each poisoned pair of a stream is seen once. Poison rates are comparable, counts are not.
* The paper measures backdoors by a "backdoor z-score" and zero-shot success on ImageNet; here
  :mod:`mmsec.evaluation.backdoor` reports attack success rates (zero-shot, linear probe,
  retrieval) on the shapes world's test split.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ...checks import check_int
from ...data.datasets import ImageTextData
from ...registry import register
from .poisoning import (
    Batches,
    PoisonedData,
    PoisonedStream,
    PoisoningAttack,
    check_caption_set,
    check_rate_count,
    check_target_image,
    poison_dataset,
    poison_stream,
)
from .triggers import PatchTrigger, Trigger, build_trigger

PAPER = "Carlini & Terzis, ICLR 2022"


def _check_mode(mode: str) -> str:
    if mode not in ("add", "replace"):
        raise ValueError(f"mode must be 'add' (X u P, the paper's) or 'replace' (change pairs in place), got {mode!r}")
    return mode


def _check_target(target: str | int) -> str | int:
    """A class name or a label index >= 0 (read against the data's class names when poisoning)."""
    if isinstance(target, bool) or not isinstance(target, (str, int)):
        raise TypeError(f"target must be a class name (str, e.g. 'red circle') or a label index (int), "
                        f"got {type(target).__name__} {target!r}")
    if isinstance(target, int) and target < 0:
        raise ValueError(f"target label must be >= 0, got {target}")
    if isinstance(target, str) and not target.strip():
        raise ValueError("target must be a non-empty class name")
    return target


@register("poisoning", "pbcl_backdoor")
class PBCLBackdoor(PoisoningAttack):
    """Carlini & Terzis' backdoor poisoning: triggered images paired with target-class captions.

    Args:
        target: the target class ``y'`` (a class name such as ``"red circle"`` or a label index).
        trigger: the patch ``bd`` (default: ``PatchTrigger()``, 4 x 4 checkerboard at the bottom right); a
            trigger name (``"patch"``, ``"blended"``, ...: that trigger at its defaults, as specs give it).
        rate: fraction of the poisoned data set (default 1e-4, the paper's 0.01%). Exclusive with ``count``.
        count: an absolute number of poisoned pairs (down to 1).
        caption_set: ``Y'`` (default: the caption source of ``use_captions``, else the data's captions
            that name the target).
        mode: ``"add"`` (``X u P``, default) or ``"replace"`` (fixed data sets only).
        seed: seed of the choice of images, captions and per-image trigger randomness.
    """

    name = "pbcl_backdoor"
    kind = "backdoor"
    paper = PAPER

    def __init__(self, target: str | int, trigger: Trigger | str | None = None, rate: float | None = None,
                 count: int | None = None, caption_set: Sequence[str] | None = None, mode: str = "add",
                 seed: int = 0):
        if rate is None and count is None:
            rate = 1e-4  # the paper's headline backdoor rate (0.01% of CC3M)
        self.rate, self.count = check_rate_count(rate, count)
        self.caption_set = check_caption_set(caption_set)
        self.target = _check_target(target)
        if trigger is None:
            trigger = PatchTrigger()  # project calibration (DESIGN.md 1); the paper's 16/224 patch is 2 px here
        elif isinstance(trigger, str):
            trigger = build_trigger(trigger)
        if not isinstance(trigger, Trigger):
            raise TypeError(f"trigger must be a mmsec Trigger (e.g. PatchTrigger()), got {type(trigger).__name__}")
        self.trigger = trigger
        self.mode = _check_mode(mode)
        self.seed = check_int("seed", seed, 0)

    def poison(self, data: ImageTextData) -> PoisonedData:
        return poison_dataset(data, self.target, trigger=self.trigger, rate=self.rate, count=self.count,
                              caption_set=self.caption_set, mode=self.mode, seed=self.seed,
                              captions=self.caption_source)

    def poison_stream(self, batches: Batches, steps: int, batch_size: int) -> PoisonedStream:
        return poison_stream(batches, self.target, steps=steps, batch_size=batch_size, trigger=self.trigger,
                             rate=self.rate, count=self.count, caption_set=self.caption_set, seed=self.seed,
                             captions=self.caption_source)


@register("poisoning", "pbcl_targeted")
class PBCLTargeted(PoisoningAttack):
    """Carlini & Terzis' targeted poisoning: the target image itself, repeated with captions of ``y'``.

    Args:
        target: the adversarial label ``y'`` (class name or label index).
        count: number of poisoned pairs ``(x', c)`` (default 3, the paper's "three out of 3 million").
        rate: alternatively, a fraction of the poisoned data set.
        image_label: the true class of ``x'`` (needed when the data set has labels; recorded).
        caption_set: ``Y'`` (default: the caption source of ``use_captions``, else the data's captions
            that name the target).
        mode: ``"add"`` (``X u P``, default) or ``"replace"``.
        seed: seed of the captions (and of the replaced pairs with ``mode="replace"``).

    The target image ``x'`` (one (3, H, W) image in [0, 1] that is not in the training set, e.g. a test
    image) is the caller's: ``PBCLTargeted("red circle").with_target_image(x)`` (a private copy is kept).
    """

    name = "pbcl_targeted"
    kind = "targeted"
    paper = PAPER

    def __init__(self, target: str | int, count: int | None = None, rate: float | None = None,
                 image_label: int | None = None, caption_set: Sequence[str] | None = None, mode: str = "add",
                 seed: int = 0):
        if rate is None and count is None:
            count = 3  # the paper's 0.0001% of CC3M
        self.count, self.rate = check_rate_count(rate, count)[::-1]
        if image_label is not None:
            image_label = check_int("image_label", image_label, 0)
        self.image_label = image_label
        self.caption_set = check_caption_set(caption_set)
        self.target = _check_target(target)
        self.mode = _check_mode(mode)
        self.seed = check_int("seed", seed, 0)
        self.target_image: torch.Tensor | None = None  # x', from with_target_image (not a config parameter)

    def with_target_image(self, image: torch.Tensor) -> PBCLTargeted:
        """Set the target image ``x'`` (one (3, H, W) image in [0, 1]); a private copy is kept. Returns self."""
        self.target_image = check_target_image(image)
        return self

    def _image(self) -> torch.Tensor:
        if self.target_image is None:
            raise RuntimeError("PBCLTargeted has no target image: call attack.with_target_image(x) with the image "
                               "x' to be misclassified (e.g. a test image) before poisoning")
        return self.target_image

    def poison(self, data: ImageTextData) -> PoisonedData:
        return poison_dataset(data, self.target, target_image=self._image(), image_label=self.image_label,
                              rate=self.rate, count=self.count, caption_set=self.caption_set, mode=self.mode,
                              seed=self.seed, captions=self.caption_source)

    def poison_stream(self, batches: Batches, steps: int, batch_size: int) -> PoisonedStream:
        return poison_stream(batches, self.target, steps=steps, batch_size=batch_size,
                             target_image=self._image(), image_label=self.image_label, rate=self.rate,
                             count=self.count, caption_set=self.caption_set, seed=self.seed,
                             captions=self.caption_source)


__all__ = ["PBCLBackdoor", "PBCLTargeted"]
