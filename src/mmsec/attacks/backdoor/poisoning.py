"""Poisoning an image-caption data set: the shared building block of the data-poisoning attacks.

An attacker who controls a few pairs of a contrastive training set stamps a trigger on some
images (a backdoor) or inserts one chosen image (targeted poisoning) and gives those pairs
captions of a target class. This module does the bookkeeping every such attack needs, so that
what was poisoned is known exactly (detectors are scored against it) and can be rebuilt:

* :class:`PoisonRecord` -- which pairs were poisoned (``indices``), with what (the trigger's
  ``to_dict()`` record or the inserted image), towards which target (class name, label, caption
  set), at which rate, from which seed; ``to_dict`` / ``from_dict`` for the results store and
  ``rebuild_images`` to stamp the same images again from clean ones.
* :func:`poison_dataset` -- a fixed set of N pairs (:class:`~mmsec.data.datasets.ImageTextData`):
  ``mode="replace"`` changes the chosen pairs in place (the data set keeps its N pairs, exactly the
  recorded indices differ); ``mode="add"`` appends the poisoned pairs after the N clean ones
  (``X u P``, Carlini & Terzis' construction; the first N pairs are the clean data unchanged).
* :func:`poison_stream` -- a training stream ``batches(step) -> (pixels (B, 3, H, W), B captions)``
  of fresh pairs (the zoo's recipes train on fresh shapes-world scenes every step): a fixed count
  of the ``steps * B`` stream positions, chosen up front, is replaced by poisoned pairs.

Sizes: ``count`` (an absolute number of pairs, down to one) or ``rate`` (a fraction of the
poisoned data set: ``count = round(rate * total)``, where for ``mode="add"`` ``total`` includes the
added pairs; a rate that rounds to 0 pairs is an error, except ``rate = 0``, the clean control).

Captions. The target's caption set ``Y'`` is either given (``caption_set=``: each poisoned pair
gets one caption drawn from it) or, for the shapes world (the default), made from the world's own
six caption templates: each poisoned pair gets the six captions of a random single-object scene
of the target class (random size, position and background texture), so a poisoned pair looks like
any clean pair of that class, with as many caption variants. On a stream, one of them is drawn,
as the zoo's ``caption_batches`` draws one caption per scene.

Randomness: the choice of poisoned pairs and their captions come from ``seed``; the ``k``-th
poisoned image (in ``indices`` order) is stamped with ``torch.Generator().manual_seed(seed *
1_000_003 + k)`` (only triggers with per-image random choices, e.g. ``position="random"``, use it),
so a record rebuilds its images exactly, one by one, in any order.
"""

from __future__ import annotations

import inspect
import itertools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch

from ... import registry
from ...checks import check_int, check_pixels
from ...data.datasets import ImageTextData
from ...data.shapes import COLORS, POSITIONS, SHAPES, SIZES, TEXTURES, Scene, shape_color_classes
from ...methods import Method
from .triggers import Trigger, trigger_from_dict

registry.declare_kind("poisoning", "poisoning of image-caption training data: attack(data) -> PoisonedData(data, record); "
                      "attack.stream(batches) for training streams", "mmsec.attacks.backdoor.poisoning:PoisoningAttack")

POISON_KINDS = ("backdoor", "targeted")
POISON_MODES = ("replace", "add", "stream")
RECORD_VERSION = 1

Batches = Callable[[int], tuple[torch.Tensor, list[str]]]


# ------------------------------------------------------------------------------------------
# Targets and their caption sets
# ------------------------------------------------------------------------------------------
def resolve_target(target: str | int, class_names: Sequence[str] | None = None,
                   caption_set: Sequence[str] | None = None) -> tuple[str, int | None]:
    """(class name, label index or None) of ``target``: a class name or a label index.

    ``class_names`` defaults to the shapes world's 48 ``"<colour> <shape>"`` classes. A name outside
    them is accepted only with an explicit ``caption_set`` (other data sets; label None).
    """
    names = list(class_names) if class_names is not None else shape_color_classes()
    if isinstance(target, bool) or not isinstance(target, (str, int)):
        raise TypeError(f"target must be a class name (str, e.g. 'red circle') or a label index (int), "
                        f"got {type(target).__name__} {target!r}")
    if isinstance(target, int):
        if not 0 <= target < len(names):
            raise ValueError(f"target label {target} is out of range: there are {len(names)} classes "
                             f"(0 .. {len(names) - 1})")
        return names[target], target
    if target in names:
        return target, names.index(target)
    if caption_set is None:
        from ...registry import close_names

        raise ValueError(f"target {target!r} is not a known class{close_names(target, names)}; known classes "
                         f"start {names[:4]}; for other data give caption_set= (the target's captions)")
    return target, None


def _shapes_parts(target: str) -> tuple[str, str] | None:
    """(colour, shape) of a shapes-world class name, or None."""
    parts = target.split(" ")
    if len(parts) == 2 and parts[0] in COLORS and parts[1] in SHAPES:
        return parts[0], parts[1]
    return None


def shapes_target_captions(target: str, rng: random.Random) -> list[str]:
    """The six caption variants of a random single-object shapes-world scene of class ``target``."""
    parts = _shapes_parts(target)
    if parts is None:
        raise ValueError(f"target {target!r} is not a shapes-world class ('<colour> <shape>')")
    color, shape = parts
    scene = Scene(-1, shape, color, rng.choice(SIZES), rng.choice(POSITIONS), rng.choice(TEXTURES),
                  background=(0, 0, 0), jitter=(0, 0))
    return scene.captions()


def target_caption_set(target: str) -> list[str]:
    """``Y'`` of a shapes-world class: every distinct caption the world's templates say of a
    single-object scene of that class (what searching the training captions for the class name
    finds, without the second-object suffixes), sorted."""
    parts = _shapes_parts(target)
    if parts is None:
        raise ValueError(f"target {target!r} is not a shapes-world class ('<colour> <shape>')")
    color, shape = parts
    caps = {c for size, pos, tex in itertools.product(SIZES, POSITIONS, TEXTURES)
            for c in Scene(-1, shape, color, size, pos, tex, (0, 0, 0), (0, 0)).captions()}
    return sorted(caps)


def check_caption_set(caption_set: Sequence[str] | None) -> list[str] | None:
    """None, or a non-empty list of non-empty caption strings (a copy)."""
    if caption_set is None:
        return None
    if isinstance(caption_set, str) or not isinstance(caption_set, Sequence):
        raise TypeError(f"caption_set must be a list of caption strings (the target's captions Y'), "
                        f"got {type(caption_set).__name__}")
    caps = list(caption_set)
    if not caps or not all(isinstance(c, str) and c.strip() for c in caps):
        raise ValueError("caption_set must be a non-empty list of non-empty caption strings")
    return caps


# ------------------------------------------------------------------------------------------
# Sizes
# ------------------------------------------------------------------------------------------
def check_rate_count(rate: float | None, count: int | None) -> tuple[float | None, int | None]:
    """Exactly one of ``rate`` (a fraction in [0, 1)) and ``count`` (an int >= 0)."""
    if (rate is None) == (count is None):
        raise ValueError(f"give exactly one of rate= (fraction of the poisoned data set) and count= (number of "
                         f"poisoned pairs), got rate={rate!r}, count={count!r}")
    if count is not None:
        return None, check_int("count", count, 0)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not (math.isfinite(rate) and 0 <= rate < 1):
        raise ValueError(f"rate must be a fraction in [0, 1) of the poisoned data set (e.g. 0.01 for 1%), got {rate!r}")
    return float(rate), None


def poison_count(rate: float | None, count: int | None, clean_total: int, adds: bool) -> int:
    """Number of poisoned pairs. ``rate`` is a fraction of the poisoned data set: with ``adds``
    (pairs appended to ``clean_total`` clean ones) ``n / (clean_total + n) ~ rate``."""
    rate, count = check_rate_count(rate, count)
    if count is not None:
        return count
    n = round(rate * clean_total / (1 - rate)) if adds else round(rate * clean_total)
    if n == 0 and rate > 0:
        raise ValueError(f"rate={rate} of {clean_total} pairs rounds to 0 poisoned pairs; give count= for a "
                         "handful of pairs, or a larger rate")
    return n


# ------------------------------------------------------------------------------------------
# The record
# ------------------------------------------------------------------------------------------
def stamp_generator(seed: int, k: int) -> torch.Generator:
    """The generator with which the ``k``-th poisoned image of a record with ``seed`` is stamped."""
    return torch.Generator().manual_seed(seed * 1_000_003 + k)


@dataclass(eq=False)
class PoisonRecord:
    """Ground truth of a poisoning: what was changed, how, towards what.

    Attributes:
        kind: ``"backdoor"`` (trigger-stamped images) or ``"targeted"`` (one inserted image).
        mode: ``"replace"`` (pairs changed in place), ``"add"`` (pairs appended after the clean
            ones) or ``"stream"`` (positions ``step * batch_size + j`` of a training stream).
        indices: sorted positions of the poisoned pairs in the poisoned data set (or stream).
        source_indices: for each poisoned pair, the clean pair whose image was stamped (backdoor;
            equal to ``indices`` unless ``mode="add"``); None for targeted poisoning.
        captions: the caption variants given to each poisoned pair (in ``indices`` order).
        target: the target class name; ``target_label`` its index (None outside a known class list).
        caption_set: the target's caption set ``Y'`` the captions were drawn from.
        trigger: the trigger's ``to_dict()`` record (backdoor) or None.
        target_image: the inserted (3, H, W) image (targeted) or None.
        n_poisoned, n_total: poisoned pairs and all pairs of the poisoned data set (or stream).
        poison_rate: ``n_poisoned / n_total``.
        seed: seed of every random choice (see :func:`stamp_generator`).
        batch_size: the stream's batch size (``mode="stream"``), else None.
        image_label: the true class of the inserted image (targeted), when known.
    """

    kind: str
    mode: str
    indices: list[int]
    source_indices: list[int] | None
    captions: list[list[str]]
    target: str
    target_label: int | None
    caption_set: list[str]
    trigger: dict[str, Any] | None
    n_poisoned: int
    n_total: int
    poison_rate: float
    seed: int
    target_image: torch.Tensor | None = None
    batch_size: int | None = None
    image_label: int | None = None
    version: int = RECORD_VERSION

    def __eq__(self, other: object) -> bool:
        """Equal records describe the same poisoning (the inserted image compared exactly)."""
        return isinstance(other, PoisonRecord) and self.to_dict() == other.to_dict()

    def poisoned_mask(self) -> torch.Tensor:
        """(n_total,) bool: True at the poisoned positions (the detectors' ground truth)."""
        mask = torch.zeros(self.n_total, dtype=torch.bool)
        mask[torch.tensor(self.indices, dtype=torch.long)] = True
        return mask

    def rebuild_trigger(self) -> Trigger:
        if self.trigger is None:
            raise ValueError("this record has no trigger (targeted poisoning inserts an image instead)")
        return trigger_from_dict(self.trigger)

    def rebuild_images(self, sources: torch.Tensor) -> torch.Tensor:
        """The (n_poisoned, 3, H, W) poisoned images rebuilt from the record.

        ``sources``: the clean images of ``source_indices`` (backdoor), in that order, e.g.
        ``clean.pixels[record.source_indices]``; ignored for targeted poisoning (pass None).
        """
        if self.kind == "targeted":
            if self.target_image is None:  # e.g. label-level poisoning: the images are other clean pairs'
                raise ValueError("this targeted record inserted no single image: its poisoned images are clean "
                                 "images of other pairs (see the attack's own details, e.g. "
                                 "MultimodalPoisonDetails.rebuild_images)")
            return self.target_image[None].expand(self.n_poisoned, -1, -1, -1).clone()
        check_pixels(sources, "sources")
        if sources.shape[0] != self.n_poisoned:
            raise ValueError(f"sources must hold the {self.n_poisoned} clean images of source_indices, "
                             f"got {sources.shape[0]}")
        trigger = self.rebuild_trigger()
        out = [trigger(sources[k:k + 1], stamp_generator(self.seed, k)) for k in range(self.n_poisoned)]
        return torch.cat(out) if out else sources.clone()

    def to_dict(self) -> dict[str, Any]:
        """JSON-able (the inserted image as a nested list)."""
        out = asdict(self)
        out["target_image"] = None if self.target_image is None else self.target_image.tolist()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PoisonRecord:
        if not isinstance(d, dict):
            raise TypeError(f"a poison record must be a dict from PoisonRecord.to_dict(), got {type(d).__name__}")
        if d.get("version") != RECORD_VERSION:
            raise ValueError(f"poison record version {d.get('version')!r} is not supported (this mmsec writes "
                             f"{RECORD_VERSION})")
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown poison record fields {unknown}")
        d = dict(d)
        if d.get("target_image") is not None:
            d["target_image"] = torch.tensor(d["target_image"], dtype=torch.float32)
        return cls(**d)


@dataclass
class PoisonedData:
    """A poisoned data set and its record. ``data.labels`` stay the images' true classes."""

    data: ImageTextData
    record: PoisonRecord


@dataclass
class PoisonedStream:
    """A poisoned training stream: call it as ``batches(step)``; ``record`` says which positions."""

    clean: Batches = field(repr=False)
    record: PoisonRecord
    trigger: Trigger | None = field(default=None, repr=False)
    _at_step: dict[int, list[tuple[int, int]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        b = self.record.batch_size
        for k, pos in enumerate(self.record.indices):
            self._at_step.setdefault(pos // b, []).append((k, pos % b))

    @property
    def steps(self) -> int:
        return self.record.n_total // self.record.batch_size

    def __call__(self, step: int) -> tuple[torch.Tensor, list[str]]:
        if not 0 <= step < self.steps:
            raise ValueError(f"step {step} is outside the poisoned stream's {self.steps} steps")
        pixels, captions = self.clean(step)
        b = self.record.batch_size
        if pixels.shape[0] != b or len(captions) != b:
            raise ValueError(f"the clean stream returned {pixels.shape[0]} images and {len(captions)} captions at "
                             f"step {step}; the stream was poisoned for batches of {b}")
        todo = self._at_step.get(step)
        if not todo:
            return pixels, captions
        pixels, captions = pixels.clone(), list(captions)
        for k, j in todo:
            pixels[j] = _poison_images(self.record, self.trigger, pixels[j:j + 1], [k])[0]
            captions[j] = self.record.captions[k][0]
        return pixels, captions


# ------------------------------------------------------------------------------------------
# Poisoning
# ------------------------------------------------------------------------------------------
def _check_attack(trigger: Trigger | None, target_image: torch.Tensor | None) -> str:
    if (trigger is None) == (target_image is None):
        raise ValueError("give exactly one of trigger= (a backdoor: stamp it on chosen images) and target_image= "
                         "(targeted poisoning: insert that image)")
    if trigger is not None:
        if not isinstance(trigger, Trigger):
            raise TypeError(f"trigger must be a mmsec Trigger (e.g. PatchTrigger()), got {type(trigger).__name__}")
        return "backdoor"
    if not isinstance(target_image, torch.Tensor) or target_image.ndim != 3:
        shape = tuple(target_image.shape) if isinstance(target_image, torch.Tensor) else type(target_image).__name__
        raise ValueError(f"target_image must be one (3, H, W) image in [0, 1], got {shape}")
    check_pixels(target_image[None], "target_image")
    return "targeted"


def _poison_images(record: PoisonRecord, trigger: Trigger | None, sources: torch.Tensor,
                   ks: list[int]) -> torch.Tensor:
    """Poisoned images number ``ks`` of ``record`` from their clean ``sources`` (B, 3, H, W)."""
    if record.kind == "targeted":
        image = record.target_image.to(sources.device, sources.dtype)
        if image.shape != sources.shape[1:]:
            raise ValueError(f"target_image has shape {tuple(image.shape)} but the data's images are "
                             f"{tuple(sources.shape[1:])}")
        return image[None].expand(len(ks), -1, -1, -1).clone()
    return torch.cat([trigger(sources[i:i + 1], stamp_generator(record.seed, k)) for i, k in enumerate(ks)])


def _caption_maker(target: str, caption_set: list[str] | None) -> tuple[Callable[[random.Random], list[str]],
                                                                        list[str]]:
    if caption_set is not None:
        return (lambda rng: [rng.choice(caption_set)]), caption_set
    return (lambda rng: shapes_target_captions(target, rng)), target_caption_set(target)


def poison_dataset(data: ImageTextData, target: str | int, *, trigger: Trigger | None = None,
                   target_image: torch.Tensor | None = None, image_label: int | None = None,
                   rate: float | None = None, count: int | None = None, caption_set: Sequence[str] | None = None,
                   mode: str = "replace", seed: int = 0) -> PoisonedData:
    """Poison a fixed set of image-caption pairs; ``data`` is not modified.

    Args:
        data: the clean pairs (with captions; labels optional).
        target: the target class (name, e.g. ``"red circle"``, or label index of ``data.class_names``,
            by default the shapes world's classes).
        trigger: a backdoor: stamped on the images of the chosen pairs. Exclusive with ``target_image``.
        target_image: targeted poisoning: this (3, H, W) image replaces (or is added as) the
            chosen pairs' image. ``image_label`` is its true class (needed when ``data`` has labels).
        rate / count: how many pairs (exactly one; see the module docstring).
        caption_set: the target's captions ``Y'`` (default: the shapes world's templates).
        mode: ``"replace"`` or ``"add"`` (see the module docstring).
        seed: seed of the choice of pairs, captions and per-image trigger randomness.
    """
    if not isinstance(data, ImageTextData):
        raise TypeError(f"data must be an ImageTextData (e.g. ShapesDataset(...).to_data()), got {type(data).__name__}")
    if data.captions is None:
        raise ValueError("data has no captions: poisoning an image-caption data set replaces captions")
    check_pixels(data.pixels, "data.pixels")
    if mode not in ("replace", "add"):
        raise ValueError(f"mode must be 'replace' (change pairs in place) or 'add' (append poisoned pairs), got {mode!r}")
    seed = check_int("seed", seed, 0)
    kind = _check_attack(trigger, target_image)
    caption_set = check_caption_set(caption_set)
    name, label = resolve_target(target, data.class_names, caption_set)
    make_captions, y_prime = _caption_maker(name, caption_set)
    if kind == "targeted" and data.labels is not None:
        if isinstance(image_label, bool) or not isinstance(image_label, int):
            raise ValueError("data has labels, so targeted poisoning needs image_label= (the true class of "
                             f"target_image, an int), got {image_label!r}")
    N = len(data)
    adds = mode == "add"
    n = poison_count(rate, count, N, adds)
    if n > N and (kind == "backdoor" or not adds):
        raise ValueError(f"cannot poison {n} pairs of a data set of {N}: each poisoned pair "
                         f"{'stamps a distinct clean image' if adds else 'replaces a distinct pair'}")

    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    chosen = sorted(torch.randperm(N, generator=g)[:n].tolist()) if (kind == "backdoor" or not adds) else []
    if adds:
        indices = list(range(N, N + n))
        sources = chosen if kind == "backdoor" else None
    else:
        indices, sources = chosen, (chosen if kind == "backdoor" else None)
    captions = [make_captions(rng) for _ in range(n)]
    record = PoisonRecord(
        kind=kind, mode=mode, indices=indices, source_indices=sources, captions=captions, target=name,
        target_label=label, caption_set=y_prime, trigger=None if trigger is None else trigger.to_dict(),
        n_poisoned=n, n_total=N + n if adds else N, poison_rate=n / (N + n if adds else N) if N + n else 0.0,
        seed=seed, target_image=None if target_image is None else target_image.detach().cpu().float().clone(),
        image_label=image_label)

    src_pixels = data.pixels[torch.tensor(sources, dtype=torch.long)] if sources is not None else None
    if n and kind == "backdoor":
        poisoned = _poison_images(record, trigger, src_pixels, list(range(n)))  # (n, 3, H, W)
    elif n:
        poisoned = _poison_images(record, None, data.pixels[:1], list(range(n)))
    else:
        poisoned = data.pixels[:0].clone()
    new_labels = None
    if data.labels is not None:
        new_labels = (data.labels[torch.tensor(sources, dtype=torch.long)] if kind == "backdoor"
                      else torch.full((n,), image_label, dtype=data.labels.dtype))
    if adds:
        pixels = torch.cat([data.pixels, poisoned.to(data.pixels.dtype)])
        all_captions = [list(c) for c in data.captions] + captions
        labels = None if data.labels is None else torch.cat([data.labels, new_labels])
    else:
        pixels = data.pixels.clone()
        all_captions = [list(c) for c in data.captions]
        labels = None if data.labels is None else data.labels.clone()
        if n:
            idx = torch.tensor(indices, dtype=torch.long)
            pixels[idx] = poisoned.to(pixels.dtype)
            for k, i in enumerate(indices):
                all_captions[i] = captions[k]
            if labels is not None:
                labels[idx] = new_labels
    out = ImageTextData(pixels, labels, None if data.class_names is None else list(data.class_names), all_captions)
    return PoisonedData(out, record)


def poison_stream(batches: Batches, target: str | int, *, steps: int, batch_size: int,
                  trigger: Trigger | None = None, target_image: torch.Tensor | None = None,
                  image_label: int | None = None, rate: float | None = None, count: int | None = None,
                  caption_set: Sequence[str] | None = None, class_names: Sequence[str] | None = None,
                  seed: int = 0) -> PoisonedStream:
    """Poison a training stream ``batches(step) -> (pixels (B, 3, H, W), B captions)``.

    ``count`` (or ``round(rate * steps * batch_size)``) of the ``steps * batch_size`` stream
    positions, chosen uniformly without replacement from ``seed``, are replaced by poisoned pairs
    (the stream's own image stamped with ``trigger``, or ``target_image``) with one caption of the
    target class each. The clean stream is called as usual; nothing is precomputed but the
    positions and captions.
    """
    if not callable(batches):
        raise TypeError(f"batches must be a callable batches(step) -> (pixels, captions), got {type(batches).__name__}")
    steps, batch_size = check_int("steps", steps, 1), check_int("batch_size", batch_size, 1)
    seed = check_int("seed", seed, 0)
    kind = _check_attack(trigger, target_image)
    caption_set = check_caption_set(caption_set)
    name, label = resolve_target(target, class_names, caption_set)
    make_captions, y_prime = _caption_maker(name, caption_set)
    total = steps * batch_size
    n = poison_count(rate, count, total, adds=False)
    if n > total:
        raise ValueError(f"cannot poison {n} pairs of a stream of {steps} x {batch_size} = {total} pairs")
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    indices = sorted(torch.randperm(total, generator=g)[:n].tolist())
    captions = [[rng.choice(make_captions(rng))] for _ in range(n)]
    record = PoisonRecord(
        kind=kind, mode="stream", indices=indices, source_indices=indices if kind == "backdoor" else None,
        captions=captions, target=name, target_label=label, caption_set=y_prime,
        trigger=None if trigger is None else trigger.to_dict(), n_poisoned=n, n_total=total, poison_rate=n / total,
        seed=seed, target_image=None if target_image is None else target_image.detach().cpu().float().clone(),
        batch_size=batch_size, image_label=image_label)
    return PoisonedStream(batches, record, trigger)


# ------------------------------------------------------------------------------------------
# The family's base class
# ------------------------------------------------------------------------------------------
class PoisoningAttack(Method):
    """Base of data-poisoning attacks: configured in ``__init__``, called on clean data.

    ``attack(data) -> PoisonedData`` for a fixed data set; ``attack.stream(batches, steps,
    batch_size) -> PoisonedStream`` for a stream of fresh pairs. Inputs are never modified.
    Subclasses implement :meth:`poison` and :meth:`poison_stream`; an attack that needs the clean
    model first (an optimised trigger) also implements :meth:`prepare`, which runners call before
    poisoning.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    family: ClassVar[str | None] = None  # it poisons data; an attack that prepares on a model says which
    components: ClassVar[dict[str, str]] = {"trigger": "triggers"}
    threat_model: ClassVar[str] = "data poisoning (control of a few training pairs, none of the training)"

    def params(self) -> dict[str, Any]:
        """The ``__init__`` arguments as configured (triggers as their records, images as shapes)."""
        out = {}
        for k in inspect.signature(type(self).__init__).parameters:
            if k == "self" or not hasattr(self, k):
                continue
            v = getattr(self, k)
            out[k] = (v.to_dict() if isinstance(v, Trigger) else
                      f"<tensor {tuple(v.shape)}>" if isinstance(v, torch.Tensor) else v)
        return out

    def __call__(self, data: ImageTextData) -> PoisonedData:
        return self.poison(data)

    def prepare(self, model: Any, data: ImageTextData, generator: torch.Generator | int | None = None) -> None:
        """Use white-box access to the clean ``model`` and the attacker's own clean ``data`` before
        poisoning (BadCLIP optimises its trigger here). Most poisoning attacks need neither: no-op."""

    def poison(self, data: ImageTextData) -> PoisonedData:
        raise NotImplementedError

    def stream(self, batches: Batches, steps: int, batch_size: int) -> PoisonedStream:
        return self.poison_stream(batches, steps, batch_size)

    def poison_stream(self, batches: Batches, steps: int, batch_size: int) -> PoisonedStream:
        raise NotImplementedError


__all__ = ["POISON_KINDS", "POISON_MODES", "PoisonRecord", "PoisonedData", "PoisonedStream", "PoisoningAttack",
           "check_caption_set", "check_rate_count", "poison_count", "poison_dataset", "poison_stream", "resolve_target",
           "shapes_target_captions", "stamp_generator", "target_caption_set"]
