"""Multimodal targeted data poisoning: "Data Poisoning Attacks Against Multimodal Encoders", Ziqing Yang,
Xinlei He, Zheng Li, Michael Backes, Mathias Humbert, Pascal Berrang and Yang Zhang, ICML 2023.

Threat model: the attacker controls the images of some image-caption pairs of a contrastive training
set (dirty-label poisoning, no trigger, no control of training); the victim trains (fine-tunes) a
CLIP model on it and uses it for text-to-image retrieval.

The paper's three attack types (one class each; they share one construction, a dirty-label swap):
the training captions ``T^A_train`` of an *original* class A keep their text but are paired with
the attacker's images, so after contrastive training text queries of class A retrieve them.

* :class:`SingleTargetImagePoisoning` (Attack I): ``D_p = {(t, x*) : t in T^A_train}``; one target
  image ``x*`` (never in the training set; the paper takes a test image of another class) for every
  class-A caption. Success: ``x*`` ranks high for the *test* captions of class A.
* :class:`SingleTargetLabelPoisoning` (Attack II): ``D_p = {(t, x) : t in T^A_train, x in X^B_train}``:
  class-A captions paired with training images of a target class B. Success: test captions of A
  retrieve test images of B.
* :class:`MultipleTargetLabelPoisoning` (Attack III): the union of single-label poisonings for the
  goals ``G = {(A_1, B_1), ..., (A_m, B_m)}`` (the paper's example: sheep -> aeroplane and sofa -> bird).

Construction (as the authors' code, ``poisoning/dirty_label_poison.py``, builds it): a fraction
(default 1.0: *all* of them) of the class-A training pairs is chosen; each keeps its captions and
gets the target image (I) or a class-B training image (II/III), the class-B images used in turn
(each ``n_A // n_B`` times, plus ``n_A mod n_B`` drawn without replacement) in a seeded shuffle.
``mode="replace"`` (default, the authors' code: the class-A pairs' images are swapped) or ``"add"``
(``D_c u D_p`` read literally: the clean class-A pairs stay and the poisoned copies are appended).
Nothing else changes; ``data.labels`` of a poisoned pair become its new image's true class.

Naming: the paper says "original class" A (the caption class) and "target" B (the image class or
image); the parameters here are ``text_class`` / ``image_class``, as the authors' ``target_txt_cls`` /
``target_img_cls``, to leave no doubt which side is which.

Record: a :class:`~mmsec.attacks.backdoor.poisoning.PoisonRecord` (``kind="targeted"``, ``indices``
of the poisoned pairs, their captions, ``target`` = the caption class A, ``target_image`` = ``x*`` for
Attack I) plus, by composition, :class:`MultimodalPoisonDetails` (the goals, the clean pair each
poisoned pair took its captions and its image from) in :class:`MultimodalPoisonedData`: the label
attacks take images from other clean pairs, which a ``PoisonRecord`` cannot rebuild on its own.

Tensor shapes: data sets hold (N, 3, H, W) pixels in [0, 1]; the target image is (3, H, W).

World knowledge comes from the data: the classes are ``data.class_names`` (a data set without them
names its classes by their label indices, ``"0"``, ``"1"``, ...), the captions are the data's own.
Attack I's target image ``x*`` is the caller's (a test image), handed over with
``with_target_image(x)``, so every attack is configured by names and numbers only.

Example (runs on the shipped world)::

    clean = ShapesDataset("train", n=1024).to_data()
    attack = SingleTargetLabelPoisoning("red circle", "blue square")   # Attack II: A = red circle, B = blue square
    out = attack(clean)                                                # MultimodalPoisonedData(data, record, details)
    image_attack = SingleTargetImagePoisoning("red circle", image_label=9).with_target_image(x_star)  # Attack I
    run = poisoned_finetune(load_model("shapes-clip-resnet"), attack, clean, steps=100, lr=2e-3)

Evaluation (Hit@K, MinRank, clean R@1): :mod:`mmsec.evaluation.targeted_poisoning`.

Departures from the paper:

* Scale and share. The paper fine-tunes pre-trained CLIP (ViT-B/32, lr 1e-5, 10 epochs) on
  Flickr30k plus poisoned PASCAL (20 classes) or on COCO, where one class is a small share of the
  data; here the zoo's ``shapes-clip-resnet`` is fine-tuned on shapes-world pairs with 48 classes,
  so poisoning all of one class is ~2% of the pairs (``fraction`` lowers it), at the project's
  fine-tuning lr (2e-3 in the tests and benchmark: the tiny model needs it, see ``test_pbcl.py``).
* Attack III: the authors' script also drops the second goal's class-B images from the training
  set (a line absent for the first goal and from the paper); not done here, every goal is built alike.
* No stream variant: the attack pairs the *existing* training captions of a class, so it is defined
  on a fixed data set (``attack(data)``), which :func:`~mmsec.train.poisoned.poisoned_finetune` uses.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import torch

from ...checks import check_int, check_pixels
from ...data.datasets import ImageTextData
from ...registry import register
from .poisoning import (
    Batches,
    PoisonedData,
    PoisonedStream,
    PoisoningAttack,
    PoisonRecord,
    check_target_image,
)

ATTACK_TYPES = ("single_target_image", "single_target_label", "multiple_target_labels")
DETAILS_VERSION = 1


# ------------------------------------------------------------------------------------------
# The record's companion
# ------------------------------------------------------------------------------------------
@dataclass(eq=False)
class MultimodalPoisonDetails:
    """What a :class:`PoisonRecord` cannot say about a multimodal dirty-label poisoning.

    Attributes:
        attack: one of ``ATTACK_TYPES``.
        goals: ``(text class A, image class B)`` names; for Attack I, ``(A, "target image")``.
        goal_of: for each poisoned pair (in ``record.indices`` order), its goal's index in ``goals``.
        text_sources: the clean pair whose captions each poisoned pair carries (a class-A pair).
        image_sources: the clean pair whose image each poisoned pair carries (a class-B pair;
            label attacks) or None (Attack I: the image is ``record.target_image``).
    """

    attack: str
    goals: list[tuple[str, str]]
    goal_of: list[int]
    text_sources: list[int]
    image_sources: list[int] | None
    version: int = DETAILS_VERSION

    def __eq__(self, other: object) -> bool:
        return isinstance(other, MultimodalPoisonDetails) and self.to_dict() == other.to_dict()

    def rebuild_images(self, record: PoisonRecord, clean_pixels: torch.Tensor) -> torch.Tensor:
        """The (n_poisoned, 3, H, W) poisoned images, from the clean data set's ``pixels``."""
        if record.target_image is not None:
            return record.target_image[None].expand(record.n_poisoned, -1, -1, -1).clone()
        check_pixels(clean_pixels, "clean_pixels")
        return clean_pixels[torch.tensor(self.image_sources, dtype=torch.long)].clone()

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["goals"] = [list(g) for g in self.goals]
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MultimodalPoisonDetails:
        if not isinstance(d, dict):
            raise TypeError(f"details must be a dict from MultimodalPoisonDetails.to_dict(), got {type(d).__name__}")
        if d.get("version") != DETAILS_VERSION:
            raise ValueError(f"details version {d.get('version')!r} is not supported (this mmsec writes "
                             f"{DETAILS_VERSION})")
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise ValueError(f"unknown poison details fields {unknown}")
        return cls(**{**d, "goals": [tuple(g) for g in d["goals"]]})


@dataclass
class MultimodalPoisonedData(PoisonedData):
    """A poisoned data set, its :class:`PoisonRecord` and the attack's :class:`MultimodalPoisonDetails`."""

    details: MultimodalPoisonDetails


# ------------------------------------------------------------------------------------------
# Validation
# ------------------------------------------------------------------------------------------
def _check_class(name: str, value: str | int) -> str | int:
    """A class name or label index (resolved against the data's classes when poisoning)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{name} must be a class name (str, e.g. 'red circle') or a label index (int), "
                        f"got {type(value).__name__} {value!r}")
    if isinstance(value, int) and value < 0:
        raise ValueError(f"{name} must be a label index >= 0, got {value}")
    return value


def _resolve(name: str, value: str | int, class_names: list[str]) -> tuple[str, int]:
    if isinstance(value, int):
        if value >= len(class_names):
            raise ValueError(f"{name} {value} is out of range: the data has {len(class_names)} classes")
        return class_names[value], value
    if value not in class_names:
        from ...registry import close_names

        raise ValueError(f"{name} {value!r} is not a class of the data{close_names(value, class_names)}; classes "
                         f"start {class_names[:4]}")
    return value, class_names.index(value)


def _check_fraction(fraction: float) -> float:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
            math.isfinite(fraction) and 0 < fraction <= 1):
        raise ValueError(f"fraction must be in (0, 1]: the share of the text class's training pairs to poison "
                         f"(1.0, the paper's default, poisons all of them), got {fraction!r}")
    return float(fraction)


def _check_mode(mode: str) -> str:
    if mode not in ("replace", "add"):
        raise ValueError(f"mode must be 'replace' (swap the class-A pairs' images, the authors' code) or 'add' "
                         f"(append the poisoned pairs, D_c u D_p), got {mode!r}")
    return mode


def _check_data(data: ImageTextData) -> list[str]:
    """The data's class names (its label indices as strings when it has none), after validating it."""
    if not isinstance(data, ImageTextData):
        raise TypeError(f"data must be an ImageTextData (e.g. ShapesDataset(...).to_data()), got {type(data).__name__}")
    if data.captions is None:
        raise ValueError("data has no captions: the attack pairs a class's training captions with other images")
    if data.labels is None:
        raise ValueError("data has no labels: the attack needs class-labelled pairs (which captions are of the "
                         "text class, which images of the image class)")
    check_pixels(data.pixels, "data.pixels")
    if data.class_names is not None:
        return list(data.class_names)
    return [str(i) for i in range(int(data.labels.max()) + 1 if data.labels.numel() else 0)]


# ------------------------------------------------------------------------------------------
# The shared construction
# ------------------------------------------------------------------------------------------
class _DirtyLabelPoisoning(PoisoningAttack):
    """Shared construction of the three attacks: class-A captions paired with the attacker's images."""

    kind = "targeted"
    paper = "Yang et al., ICML 2023"
    attack_type: ClassVar[str]

    fraction: float
    mode: str
    seed: int

    def _goals(self, class_names: list[str]) -> list[tuple[tuple[str, int], tuple[str, int] | None]]:
        raise NotImplementedError

    def poison(self, data: ImageTextData) -> MultimodalPoisonedData:
        class_names = _check_data(data)
        goals = self._goals(class_names)
        image = getattr(self, "target_image", None)
        if image is not None:
            if image.shape != data.pixels.shape[1:]:
                raise ValueError(f"target_image has shape {tuple(image.shape)} but the data's images are "
                                 f"{tuple(data.pixels.shape[1:])}")
            if (data.pixels == image.to(data.pixels.dtype)).flatten(1).all(1).any():
                raise ValueError("target_image is in the training data: Attack I's target image must not be "
                                 "(take a test image)")
        g = torch.Generator().manual_seed(self.seed)
        rng = random.Random(self.seed)
        labels = data.labels
        text_sources: list[int] = []
        image_sources: list[int] = []
        goal_of: list[int] = []
        for k, ((a_name, a), b) in enumerate(goals):
            pool = (labels == a).nonzero().flatten()  # the class-A training pairs
            if pool.numel() == 0:
                raise ValueError(f"text_class {a_name!r} has no training pair in the data: nothing to poison")
            n = round(self.fraction * pool.numel())
            if n == 0:
                raise ValueError(f"fraction={self.fraction} of the {pool.numel()} {a_name!r} pairs rounds to 0 "
                                 "poisoned pairs; give a larger fraction")
            chosen = sorted(pool[torch.randperm(pool.numel(), generator=g)[:n]].tolist())
            text_sources += chosen
            goal_of += [k] * n
            if b is not None:
                b_name, b_label = b
                b_pool = (labels == b_label).nonzero().flatten().tolist()  # X^B_train
                if not b_pool:
                    raise ValueError(f"image_class {b_name!r} has no training image in the data")
                imgs = b_pool * (n // len(b_pool)) + rng.sample(b_pool, n % len(b_pool))
                rng.shuffle(imgs)
                image_sources += imgs
        order = sorted(range(len(text_sources)), key=lambda i: text_sources[i])
        text_sources = [text_sources[i] for i in order]
        goal_of = [goal_of[i] for i in order]
        image_sources = [image_sources[i] for i in order] if image is None else []

        N, n = len(data), len(text_sources)
        adds = self.mode == "add"
        indices = list(range(N, N + n)) if adds else list(text_sources)
        captions = [list(data.captions[i]) for i in text_sources]
        if image is not None:
            poisoned = image.to(data.pixels.dtype)[None].expand(n, -1, -1, -1)
            new_labels = torch.full((n,), self.image_label, dtype=labels.dtype)
        else:
            src = torch.tensor(image_sources, dtype=torch.long)
            poisoned, new_labels = data.pixels[src], labels[src]
        if adds:
            pixels = torch.cat([data.pixels, poisoned])
            all_captions = [list(c) for c in data.captions] + captions
            all_labels = torch.cat([labels, new_labels])
        else:
            idx = torch.tensor(indices, dtype=torch.long)
            pixels, all_labels = data.pixels.clone(), labels.clone()
            pixels[idx], all_labels[idx] = poisoned, new_labels
            all_captions = [list(c) for c in data.captions]
        out = ImageTextData(pixels, all_labels, None if data.class_names is None else list(data.class_names),
                            all_captions)

        names = [(a_name, b[0] if b is not None else "target image") for (a_name, _), b in goals]
        single = len(goals) == 1
        record = PoisonRecord(
            kind="targeted", mode=self.mode, indices=indices, source_indices=None, captions=captions,
            target=names[0][0] if single else ", ".join(a for a, _ in names),
            target_label=goals[0][0][1] if single else None,
            caption_set=sorted({c for caps in captions for c in caps}), trigger=None, n_poisoned=n,
            n_total=len(out), poison_rate=n / len(out), seed=self.seed,
            target_image=None if image is None else image.detach().cpu().float().clone(),
            image_label=(self.image_label if image is not None else goals[0][1][1] if single else None))
        details = MultimodalPoisonDetails(self.attack_type, names, goal_of, text_sources,
                                          None if image is not None else image_sources)
        return MultimodalPoisonedData(out, record, details)

    def poison_stream(self, batches: Batches, steps: int, batch_size: int) -> PoisonedStream:
        raise NotImplementedError(f"{type(self).__name__} pairs the existing training captions of a class with "
                                  "other images, so it poisons a fixed data set: call attack(data) (or "
                                  "poisoned_finetune), not attack.stream(...)")


@register("poisoning", "yang_single_target_image")
class SingleTargetImagePoisoning(_DirtyLabelPoisoning):
    """Attack I: every (chosen) training caption of ``text_class`` paired with one target image ``x*``.

    Args:
        text_class: the original class A whose training captions are poisoned (name or label index).
        image_label: the true class of ``x*`` (the poisoned pairs' new label).
        fraction: share of the class-A training pairs poisoned (default 1.0: all, the authors' default).
        mode: ``"replace"`` (default, the authors' code) or ``"add"``.
        seed: seed of the choice of pairs (when ``fraction < 1``).

    The target image ``x*`` (one (3, H, W) image in [0, 1] not in the training set; the paper: a test
    image of another class) is the caller's: ``attack.with_target_image(x)`` (a private copy is kept).
    """

    name = "yang_single_target_image"
    attack_type = "single_target_image"

    def __init__(self, text_class: str | int, image_label: int, fraction: float = 1.0, mode: str = "replace",
                 seed: int = 0):
        self.text_class = _check_class("text_class", text_class)
        self.image_label = check_int("image_label", image_label, 0)
        self.fraction = _check_fraction(fraction)  # the authors' poisoned_ratio default 1.0
        self.mode = _check_mode(mode)
        self.seed = check_int("seed", seed, 0)
        self.target_image: torch.Tensor | None = None  # x*, from with_target_image (not a config parameter)

    def with_target_image(self, image: torch.Tensor) -> SingleTargetImagePoisoning:
        """Set the target image ``x*`` (one (3, H, W) image in [0, 1]); a private copy is kept. Returns self."""
        self.target_image = check_target_image(image)
        return self

    def poison(self, data: ImageTextData) -> MultimodalPoisonedData:
        if self.target_image is None:
            raise RuntimeError("SingleTargetImagePoisoning has no target image: call attack.with_target_image(x) "
                               "with x* (an image not in the training data, e.g. a test image) before poisoning")
        return super().poison(data)

    def _goals(self, class_names):
        a = _resolve("text_class", self.text_class, class_names)
        if self.image_label == a[1]:
            raise ValueError(f"image_label {self.image_label} is the text class {a[0]!r} itself: the target image "
                             "must be of another class")
        return [(a, None)]


@register("poisoning", "yang_multiple_target_label")
class MultipleTargetLabelPoisoning(_DirtyLabelPoisoning):
    """Attack III: for every goal ``(A_i, B_i)``, the training captions of ``A_i`` paired with images of ``B_i``.

    Args:
        goals: ``[(text_class, image_class), ...]`` (names or label indices), text classes distinct, each
            goal's two classes different (the paper's example: sheep -> aeroplane, sofa -> bird); or a
            mapping ``{text_class: image_class}`` in goal order (how a spec writes them, since a list
            in a spec is a grid axis).
        fraction: share of each text class's training pairs poisoned (default 1.0, the authors' default).
        mode: ``"replace"`` (default, the authors' code) or ``"add"``.
        seed: seed of the choice of pairs and of the class-B images' order.
    """

    name = "yang_multiple_target_label"
    attack_type = "multiple_target_labels"

    def __init__(self, goals: Sequence[tuple[str | int, str | int]] | Mapping[str, str | int], fraction: float = 1.0,
                 mode: str = "replace", seed: int = 0):
        if isinstance(goals, Mapping):
            goals = list(goals.items())
        if isinstance(goals, (str, bytes)) or not isinstance(goals, Sequence) or not goals:
            raise ValueError(f"goals must be a non-empty list of (text_class, image_class) pairs, got {goals!r}")
        checked = []
        for i, goal in enumerate(goals):
            if isinstance(goal, (str, bytes)) or not isinstance(goal, Sequence) or len(goal) != 2:
                raise ValueError(f"goals[{i}] must be a (text_class, image_class) pair, got {goal!r}")
            checked.append((_check_class(f"goals[{i}] text_class", goal[0]),
                            _check_class(f"goals[{i}] image_class", goal[1])))
        self.goals = checked
        self.fraction = _check_fraction(fraction)
        self.mode = _check_mode(mode)
        self.seed = check_int("seed", seed, 0)

    def _goals(self, class_names):
        out, seen = [], set()
        for i, (a, b) in enumerate(self.goals):
            ra, rb = _resolve(f"goals[{i}] text_class", a, class_names), _resolve(f"goals[{i}] image_class", b,
                                                                                   class_names)
            if ra[1] == rb[1]:
                raise ValueError(f"goals[{i}] maps {ra[0]!r} to itself: the image class must differ from the text "
                                 "class")
            if ra[1] in seen:
                raise ValueError(f"goals[{i}]: text class {ra[0]!r} appears in two goals; each class's captions "
                                 "can be sent to one image class")
            seen.add(ra[1])
            out.append((ra, rb))
        return out


@register("poisoning", "yang_single_target_label")
class SingleTargetLabelPoisoning(MultipleTargetLabelPoisoning):
    """Attack II: the training captions of ``text_class`` (A) paired with training images of ``image_class`` (B).

    Args:
        text_class: the original class A (name or label index), e.g. ``"red circle"``.
        image_class: the target class B whose images the class-A captions get.
        fraction, mode, seed: as :class:`MultipleTargetLabelPoisoning` (Attack III with one goal).
    """

    name = "yang_single_target_label"
    attack_type = "single_target_label"

    def __init__(self, text_class: str | int, image_class: str | int, fraction: float = 1.0,
                 mode: str = "replace", seed: int = 0):
        super().__init__([(text_class, image_class)], fraction=fraction, mode=mode, seed=seed)
        self.text_class, self.image_class = self.goals[0]


__all__ = ["ATTACK_TYPES", "MultimodalPoisonDetails", "MultimodalPoisonedData", "MultipleTargetLabelPoisoning",
           "SingleTargetImagePoisoning", "SingleTargetLabelPoisoning"]
