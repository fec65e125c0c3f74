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

Captions (world knowledge, from the caller). The target's caption set ``Y'`` and the captions each
poisoned pair gets come, in this order of precedence, from

1. ``caption_set=`` (a list): each poisoned pair gets one caption drawn from it;
2. a *caption source* (:class:`CaptionSource`: ``caption_set(target)``, ``sample(target, rng)`` and
   its ``class_names``) from whoever knows the data, e.g. the shapes world's
   :class:`mmsec.data.shapes_text.ShapesCaptions`, whose ``sample`` gives each poisoned pair the six
   captions of a random single-object scene of the target class (random size, position and
   background texture), so a poisoned pair looks like any clean pair of that class. Attacks take it
   through :meth:`PoisoningAttack.use_captions`; on a stream, one of the pair's captions is drawn,
   as the zoo's ``caption_batches`` draws one caption per scene;
3. otherwise, on a fixed data set, the paper's construction (Carlini & Terzis, S0): ``Y'`` is the
   data's own captions that contain the target's name (:func:`captions_naming`), one drawn per pair.

Class names (to read a target given as a label index, and to record the target's label) come from
the data (``data.class_names``), else from the caption source, else a target must be a name.

Randomness: the choice of poisoned pairs and their captions come from ``seed``; the ``k``-th
poisoned image (in ``indices`` order) is stamped with ``torch.Generator().manual_seed(seed *
1_000_003 + k)`` (only triggers with per-image random choices, e.g. ``position="random"``, use it),
so a record rebuilds its images exactly, one by one, in any order.
"""

from __future__ import annotations

import inspect
import math
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from ... import registry
from ...checks import check_int, check_pixels
from ...data.datasets import ImageTextData
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
@runtime_checkable
class CaptionSource(Protocol):
    """What a caption-poisoning attack is told about its target's captions by whoever knows the data.

    Attributes / methods:
        class_names: the class names in label order (to read a target given as a label index), or None.
        caption_set(target): the target's caption set ``Y'`` (recorded with the poisoning).
        sample(target, rng): the caption variants one poisoned pair gets, drawn from ``rng``.
    """

    class_names: list[str] | None

    def caption_set(self, target: str) -> list[str]: ...

    def sample(self, target: str, rng: random.Random) -> list[str]: ...


class FixedCaptions:
    """A caption source from a given list ``Y'``: each poisoned pair gets one caption drawn from it."""

    def __init__(self, captions: Sequence[str], class_names: Sequence[str] | None = None):
        self.captions = check_caption_set(captions)
        self.class_names = None if class_names is None else list(class_names)

    def caption_set(self, target: str) -> list[str]:
        return list(self.captions)

    def sample(self, target: str, rng: random.Random) -> list[str]:
        return [rng.choice(self.captions)]

    def __repr__(self) -> str:
        return f"FixedCaptions({len(self.captions)} captions)"


def check_caption_source(source: object) -> CaptionSource:
    """A :class:`CaptionSource` (duck-typed: ``caption_set``, ``sample`` and ``class_names``), with a teaching error."""
    if not (callable(getattr(source, "caption_set", None)) and callable(getattr(source, "sample", None))
            and hasattr(source, "class_names")):
        raise TypeError(f"a caption source must have class_names, caption_set(target) and sample(target, rng) "
                        f"(e.g. mmsec.data.shapes_text.ShapesCaptions() or FixedCaptions([...])), got "
                        f"{type(source).__name__}")
    return source  # type: ignore[return-value]


def captions_naming(captions: Sequence[Sequence[str]], target: str) -> list[str]:
    """The paper's ``Y'``: the distinct captions (of per-pair caption lists) that contain the target's
    name as whole words, case-insensitively; sorted."""
    pattern = re.compile(rf"(?<!\w){re.escape(target.lower())}(?!\w)")
    return sorted({c for caps in captions for c in caps if pattern.search(c.lower())})


def resolve_target(target: str | int, class_names: Sequence[str] | None = None,
                   caption_set: Sequence[str] | None = None) -> tuple[str, int | None]:
    """(class name, label index or None) of ``target``: a class name or a label index of ``class_names``.

    Without ``class_names`` a target must be a name (its label is unknown: None). With them, a name
    outside them is accepted only when its captions are given (``caption_set``; label None).
    """
    if isinstance(target, bool) or not isinstance(target, (str, int)):
        raise TypeError(f"target must be a class name (str, e.g. 'red circle') or a label index (int), "
                        f"got {type(target).__name__} {target!r}")
    if class_names is None:
        if isinstance(target, int):
            raise ValueError(f"target label {target} needs the class names to read it: the data has none and no "
                             "caption source gives them; give the target by name")
        return target, None
    names = list(class_names)
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


def _caption_maker(target: str, caption_set: list[str] | None, source: CaptionSource | None,
                   data_captions: Sequence[Sequence[str]] | None) -> tuple[Callable[[random.Random], list[str]],
                                                                          list[str]]:
    """How each poisoned pair's captions are made, and ``Y'`` (see the module docstring's precedence)."""
    if caption_set is not None:
        source = FixedCaptions(caption_set)
    elif source is None:
        if data_captions is None:
            raise ValueError(f"the captions of target {target!r} are unknown: a stream has no captions to search, so "
                             "give caption_set= (the target's captions) or a caption source (attack.use_captions("
                             "...), e.g. mmsec.data.shapes_text.ShapesCaptions() for the shapes world)")
        found = captions_naming(data_captions, target)
        if not found:
            raise ValueError(f"no caption of the data names the target {target!r}, so its caption set Y' is empty; "
                             "give caption_set= (the target's captions) or a caption source (attack.use_captions(...))")
        source = FixedCaptions(found)
    return (lambda rng: source.sample(target, rng)), list(source.caption_set(target))


def _class_names(names: Sequence[str] | None, source: CaptionSource | None) -> list[str] | None:
    if names is not None:
        return list(names)
    return None if source is None or source.class_names is None else list(source.class_names)


def poison_dataset(data: ImageTextData, target: str | int, *, trigger: Trigger | None = None,
                   target_image: torch.Tensor | None = None, image_label: int | None = None,
                   rate: float | None = None, count: int | None = None, caption_set: Sequence[str] | None = None,
                   mode: str = "replace", seed: int = 0, captions: CaptionSource | None = None) -> PoisonedData:
    """Poison a fixed set of image-caption pairs; ``data`` is not modified.

    Args:
        data: the clean pairs (with captions; labels optional).
        target: the target class (name, e.g. ``"red circle"``, or label index of ``data.class_names``,
            else of the caption source's ``class_names``).
        trigger: a backdoor: stamped on the images of the chosen pairs. Exclusive with ``target_image``.
        target_image: targeted poisoning: this (3, H, W) image replaces (or is added as) the
            chosen pairs' image. ``image_label`` is its true class (needed when ``data`` has labels).
        rate / count: how many pairs (exactly one; see the module docstring).
        caption_set: the target's captions ``Y'``, one drawn per poisoned pair.
        mode: ``"replace"`` or ``"add"`` (see the module docstring).
        seed: seed of the choice of pairs, captions and per-image trigger randomness.
        captions: a :class:`CaptionSource` (e.g. the shapes world's ``ShapesCaptions()``) used when
            ``caption_set`` is None; without either, ``Y'`` is the data's captions naming the target.
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
    source = None if captions is None else check_caption_source(captions)
    name, label = resolve_target(target, _class_names(data.class_names, source), caption_set)
    make_captions, y_prime = _caption_maker(name, caption_set, source, data.captions)
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
                  seed: int = 0, captions: CaptionSource | None = None) -> PoisonedStream:
    """Poison a training stream ``batches(step) -> (pixels (B, 3, H, W), B captions)``.

    ``count`` (or ``round(rate * steps * batch_size)``) of the ``steps * batch_size`` stream
    positions, chosen uniformly without replacement from ``seed``, are replaced by poisoned pairs
    (the stream's own image stamped with ``trigger``, or ``target_image``) with one caption of the
    target class each (from ``caption_set``, else the caption source ``captions``: a stream has no
    captions of its own to search). ``class_names`` (default: the source's) read a label-index target.
    The clean stream is called as usual; nothing is precomputed but the positions and captions.
    """
    if not callable(batches):
        raise TypeError(f"batches must be a callable batches(step) -> (pixels, captions), got {type(batches).__name__}")
    steps, batch_size = check_int("steps", steps, 1), check_int("batch_size", batch_size, 1)
    seed = check_int("seed", seed, 0)
    kind = _check_attack(trigger, target_image)
    caption_set = check_caption_set(caption_set)
    source = None if captions is None else check_caption_source(captions)
    name, label = resolve_target(target, _class_names(class_names, source), caption_set)
    make_captions, y_prime = _caption_maker(name, caption_set, source, None)
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

    World knowledge is the caller's: class names come from the data, and an attack that writes
    captions of its target takes them from ``caption_set=`` or from a caption source handed over by
    :meth:`use_captions` (e.g. ``attack.use_captions(ShapesCaptions())`` on the shapes world); it is
    not part of the attack's config (the poisoning record keeps ``Y'`` and every caption written).
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    family: ClassVar[str | None] = None  # it poisons data; an attack that prepares on a model says which
    components: ClassVar[dict[str, str]] = {"trigger": "triggers"}
    threat_model: ClassVar[str] = "data poisoning (control of a few training pairs, none of the training)"
    caption_source: CaptionSource | None = None  # set by use_captions(); None: caption_set or the data's captions

    def use_captions(self, source: CaptionSource | None) -> PoisoningAttack:
        """Hand the attack the captions of its target (a :class:`CaptionSource`: ``class_names``,
        ``caption_set(target)``, ``sample(target, rng)``), e.g. ``ShapesCaptions()`` for the shapes
        world; None removes it. Returns the attack itself, so it chains after the constructor."""
        self.caption_source = None if source is None else check_caption_source(source)
        return self

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


def check_target_image(image: object) -> torch.Tensor:
    """A private copy of one (3, H, W) image in [0, 1] (the inserted image of targeted poisoning)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 3:
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"target_image must be one (3, H, W) image in [0, 1], got {shape}")
    check_pixels(image[None], "target_image")
    return image.detach().clone()


__all__ = ["POISON_KINDS", "POISON_MODES", "CaptionSource", "FixedCaptions", "PoisonRecord", "PoisonedData",
           "PoisonedStream", "PoisoningAttack", "captions_naming", "check_caption_set", "check_caption_source",
           "check_rate_count", "check_target_image", "poison_count", "poison_dataset", "poison_stream",
           "resolve_target", "stamp_generator"]
