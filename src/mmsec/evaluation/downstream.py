"""Downstream-agnostic evaluation of an attack on a pre-trained encoder (AdvCLIP's protocol).

The attacker learns a perturbation (e.g. a universal patch) on surrogate data without knowing
the downstream tasks; *afterwards* downstream users build on the frozen victim encoder with their
own clean data. Reported here, on clean vs attacked test images:

* linear probes: a logistic regression fit on the frozen, L2-normalised clean image embeddings
  of the downstream training set, for a label space the attacker never saw (in the shapes
  world: the object's colour, 8 classes, or its position, 4 classes) -- AdvCLIP's "solo"
  downstream classifier, linear instead of the code's 3-layer MLP;
* zero-shot classification against class prompts (the shapes world's 48 "colour shape"
  classes; the shape alone is read from the same prediction);
* image-text retrieval R@1 of row-aligned pairs (:func:`~mmsec.evaluation.pair_retrieval.pair_retrieval`);
* the fooling rate of each classifier: the fraction of test images whose prediction changes.

Example::

    suite = DownstreamSuite.shapes(model, ShapesWorld(32).batch("train", 20000, 2000),
                                   ShapesWorld(32).batch("test", 0, 1000))
    report = suite.compare(patched_pixels)   # {"probe_color": {"clean", "adv", "drop", "fooling_rate"}, ...}
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_pixels
from ..data.shapes import COLORS, POSITIONS, SHAPES, SIZES, TEXTURES, ShapesBatch, zeroshot_prompts
from ..models.zeroshot import ZeroShotClassifier, embed_images
from .pair_retrieval import caption_positives, pair_retrieval

SCENE_ATTRIBUTES = {"color": tuple(COLORS), "position": POSITIONS, "shape": SHAPES, "size": SIZES,
                    "texture": TEXTURES}


def scene_labels(scenes: list, attribute: str) -> torch.Tensor:
    """(N,) class indices of one shapes-world scene attribute (``color``, ``position``, ``shape``, ``size``,
    ``texture``), in the vocabulary order of :mod:`mmsec.data.shapes`."""
    if attribute not in SCENE_ATTRIBUTES:
        raise ValueError(f"attribute must be one of {sorted(SCENE_ATTRIBUTES)}, got {attribute!r}")
    vocab = SCENE_ATTRIBUTES[attribute]
    return torch.tensor([vocab.index(getattr(s, attribute)) for s in scenes], dtype=torch.long)


def _features(model: nn.Module, pixels: torch.Tensor, batch_size: int) -> np.ndarray:
    check_pixels(pixels, "pixels")
    return F.normalize(embed_images(model, pixels, batch_size).float(), dim=-1).numpy()


@dataclass
class LinearProbe:
    """A logistic-regression head on a frozen encoder's L2-normalised image embeddings."""

    classifier: object  # sklearn.linear_model.LogisticRegression
    train_accuracy: float
    batch_size: int = 500

    def predict(self, model: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
        """(N,) predicted class indices."""
        return self.predict_features(_features(model, pixels, self.batch_size))

    def predict_features(self, features: np.ndarray) -> torch.Tensor:
        """(N,) predicted class indices from (N, D) L2-normalised embeddings."""
        return torch.from_numpy(self.classifier.predict(features)).long()

    def accuracy(self, model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor) -> float:
        return (self.predict(model, pixels) == labels).float().mean().item()


def fit_linear_probe(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor, c: float = 1.0,
                     max_iter: int = 2000, batch_size: int = 500) -> LinearProbe:
    """Fit a multinomial logistic regression (L-BFGS, inverse L2 strength ``c``) on clean embeddings."""
    from sklearn.linear_model import LogisticRegression

    if labels.shape != (pixels.shape[0],):
        raise ValueError(f"labels must have shape ({pixels.shape[0]},) (one per image), got {tuple(labels.shape)}")
    if labels.unique().numel() < 2:
        raise ValueError("a probe needs at least 2 classes in its training labels")
    feats = _features(model, pixels, batch_size)
    clf = LogisticRegression(C=c, max_iter=max_iter)
    clf.fit(feats, labels.numpy())
    return LinearProbe(clf, float(clf.score(feats, labels.numpy())), batch_size)


def linear_probe_accuracy(model: nn.Module, train_pixels: torch.Tensor, train_labels: torch.Tensor,
                          test_pixels: torch.Tensor, test_labels: torch.Tensor, **probe_kwargs) -> float:
    """Accuracy on ``test_pixels`` of a linear probe fit on the clean ``train_pixels`` embeddings."""
    return fit_linear_probe(model, train_pixels, train_labels, **probe_kwargs).accuracy(model, test_pixels,
                                                                                         test_labels)


def zero_shot_accuracy(model: nn.Module, pixels: torch.Tensor, labels: torch.Tensor,
                       prompts: list[list[str]] | None = None) -> float:
    """Zero-shot top-1 accuracy against ``prompts`` (default: the shapes world's 48 classes)."""
    return (ZeroShotClassifier(model, prompts or zeroshot_prompts()).predict(pixels) == labels).float().mean().item()


def retrieval_r1(model: nn.Module, pixels: torch.Tensor, captions: list[str]) -> dict[str, float]:
    """R@1 of each image among the captions (i2t), of each caption among the images (t2i), and their mean."""
    r = pair_retrieval(model, pixels, captions, caption_positives(captions))
    return {"i2t_r1": r.i2t_r1, "t2i_r1": r.t2i_r1, "r1": (r.i2t_r1 + r.t2i_r1) / 2}


def fooling_rate(clean_pred: torch.Tensor, adv_pred: torch.Tensor) -> float:
    """Fraction of samples whose prediction changed."""
    return (clean_pred != adv_pred).float().mean().item()


@dataclass
class DownstreamSuite:
    """Downstream tasks built on a frozen encoder from clean data, evaluated on one test set.

    Attributes:
        model: the victim encoder (a ContrastiveModel, eval mode).
        clean_pixels: (N, 3, H, W) clean test images.
        probes: name -> fitted :class:`LinearProbe`; ``labels[name]`` the test labels.
        labels: task name -> (N,) test labels (``"zeroshot"`` for the zero-shot classes).
        zeroshot: the zero-shot classifier (None: not evaluated).
        captions: N test captions for retrieval (None: not evaluated).
        shape_of_class: for the shapes world, class index -> shape index (reads the shape off the
            zero-shot prediction as ``zeroshot_shape``).
    """

    model: nn.Module
    clean_pixels: torch.Tensor
    probes: dict[str, LinearProbe]
    labels: dict[str, torch.Tensor]
    zeroshot: ZeroShotClassifier | None = None
    captions: list[str] | None = None
    shape_of_class: torch.Tensor | None = None
    _clean: dict = field(default_factory=dict, repr=False)

    @classmethod
    def shapes(cls, model: nn.Module, train: ShapesBatch, test: ShapesBatch,
               attributes: tuple[str, ...] = ("color", "position"), caption_index: int = 0,
               **probe_kwargs) -> DownstreamSuite:
        """Probes for ``attributes`` fit on ``train``'s clean images; zero-shot (48 classes) and
        retrieval (caption ``caption_index`` of each scene) on ``test``."""
        train_pixels = train.pixels()
        probes = {f"probe_{a}": fit_linear_probe(model, train_pixels, scene_labels(train.scenes, a), **probe_kwargs)
                  for a in attributes}
        labels = {f"probe_{a}": scene_labels(test.scenes, a) for a in attributes}
        labels["zeroshot"] = test.labels
        labels["zeroshot_shape"] = scene_labels(test.scenes, "shape")
        return cls(model, test.pixels(), probes, labels, ZeroShotClassifier(model, zeroshot_prompts()),
                   [c[caption_index] for c in test.captions], torch.arange(len(SHAPES) * len(COLORS)) // len(COLORS))

    def predictions(self, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each classifier's (N,) predictions on ``pixels``."""
        if pixels.shape[0] != self.clean_pixels.shape[0]:
            raise ValueError(f"pixels must be the {self.clean_pixels.shape[0]} test images (attacked), "
                             f"got {pixels.shape[0]}")
        feats = _features(self.model, pixels, 500)  # one forward pass serves every head
        out = {name: probe.predict_features(feats) for name, probe in self.probes.items()}
        if self.zeroshot is not None:
            out["zeroshot"] = (torch.from_numpy(feats) @ self.zeroshot.class_embeddings.T).argmax(1)
            if self.shape_of_class is not None:
                out["zeroshot_shape"] = self.shape_of_class[out["zeroshot"]]
        return out

    def evaluate(self, pixels: torch.Tensor) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Accuracy of each classifier and retrieval R@1 on ``pixels``; and the predictions."""
        preds = self.predictions(pixels)
        metrics = {name: (p == self.labels[name]).float().mean().item() for name, p in preds.items()}
        if self.captions is not None:
            metrics.update(retrieval_r1(self.model, pixels, self.captions))
        return metrics, preds

    def clean(self) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        if not self._clean:
            self._clean["value"] = self.evaluate(self.clean_pixels)
        return self._clean["value"]

    def compare(self, adv_pixels: torch.Tensor) -> dict[str, dict[str, float]]:
        """Per metric: clean, adv, drop (clean - adv) and, for classifiers, the fooling rate."""
        clean, clean_preds = self.clean()
        adv, adv_preds = self.evaluate(adv_pixels)
        out = {k: {"clean": clean[k], "adv": adv[k], "drop": clean[k] - adv[k]} for k in clean}
        for k, p in adv_preds.items():
            out[k]["fooling_rate"] = fooling_rate(clean_preds[k], p)
        return out


__all__ = ["DownstreamSuite", "LinearProbe", "SCENE_ATTRIBUTES", "fit_linear_probe", "fooling_rate",
           "linear_probe_accuracy", "retrieval_r1", "scene_labels", "zero_shot_accuracy"]
