"""PSBD: poisoned training samples are the ones whose prediction barely shifts when dropout is switched on.

Paper: Wei Li, Pin-Yu Chen, Sijia Liu and Ren Wang, "PSBD: Prediction Shift Uncertainty Unlocks Backdoor
Detection", CVPR 2025 (arXiv 2406.05826); the authors' code is github.com/WL-619/PSBD
(``detection/psbd.py``), which fixes what the paper leaves open (the dropout-rate rule, the threshold).

Threat model: a defender holds a (possibly poisoned) labelled training set, the classifier trained on it
and a small set of clean *unlabelled* images (the paper's budget: 5% of the training set's size). It
ranks the training samples by suspicion and flags some, knowing neither the trigger nor the target.

Objective in words: with dropout switched on at inference, a backdoored model's predictions on clean
images shift away from their label (the *prediction shift*, towards a few classes), while images carrying
the trigger keep their (target) prediction. The *prediction shift uncertainty* of an image ``x`` is

    PSU(x) = P_c(x; theta) - (1/k) sum_{i=1..k} P_c(x; p, theta'_i),

the softmax probability of ``c``, the class predicted without dropout, minus its mean over ``k`` forward
passes with dropout rate ``p`` (``theta'_i`` the i-th dropout mask). Low PSU means suspicious, so the
detector's score is ``-PSU`` (higher = more suspicious, as every detector of kind ``detectors``).

* Dropout rate (the authors' ``select_dropout_rate``): for each candidate ``p`` in 0.1, 0.2, ..., 0.9 the
  *shift ratio* of a set is the fraction of (image, pass) pairs whose dropout prediction differs from the
  prediction without dropout. Among the rates at which the clean validation set shifts at least 0.8, take
  the one maximising (validation shift ratio - training-set shift ratio): clean images shift, and the
  training set shifts less in proportion to the backdoor samples it holds. When no rate reaches 0.8, the
  maximiser over all rates.
* Threshold: the first quartile (0.25 quantile, linear interpolation) of the validation images' PSU at that
  rate; a training sample is flagged when its PSU is below it (strictly), i.e. ``score > threshold``.

Defaults (the authors' code): k = 3 forward passes, rates 0.1 .. 0.9, minimum validation shift 0.8,
quantile 0.25. Dropout is switched on in the layers the model names through
:class:`~mmsec.models.base.DropoutLayers` (all at the same rate ``p``; batch norm stays in eval mode);
their rate and mode are restored afterwards, so the model is left as it was.

Departures:
* Where dropout acts is the model's choice (``dropout_layers()``); the authors switch on every dropout
  module of their model: ``nn.Dropout`` after every residual block of a ResNet-18 trained without it
  (for VGG, before every ReLU of the feature extractor, plus the classifier's own two).
  :class:`~mmsec.models.shapes_classifier.ShapesClassifier` names one layer after each convolution stage
  (identity in training), the ResNet placement, and not its head's two (see its ``dropout_layers``).
* The dropout masks come from a seeded generator state (``seed``) under :func:`torch.random.fork_rng`, so
  a call is reproducible and leaves the global RNG as it was; the authors reseed the global RNG.
* The rate search scores each set once per rate and keeps the training set's PSU at the chosen rate
  (the authors score it again with the same seed: the same numbers).
* The authors' selection steps ``start + 0.1 * argmax`` from the first eligible rate (which assumes the
  eligible rates are contiguous); this takes the argmax over the eligible rates themselves, ties to the
  smallest rate.

Registered as ``psbd`` (kind ``detectors``, family ``classifier``). Example::

    result = PSBD()(model, train_pixels, validation_pixels)   # PSBDResult
    result.scores, result.decisions, result.dropout_rate, result.shift_ratios
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ...checks import check_int, check_pixels
from ...methods import Method
from ...models.base import DropoutLayers
from ...registry import register

PAPER_FORWARD_PASSES = 3  # the authors' compute_psu(forward_passes=3)
PAPER_DROPOUT_RATES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)  # select_dropout_rate's candidates
PAPER_MIN_VALIDATION_SHIFT = 0.8  # eligible rates shift the clean validation set at least this much
PAPER_VALIDATION_QUANTILE = 0.25  # the threshold: this quantile of the validation set's PSU
PAPER_VALIDATION_BUDGET = 0.05  # clean validation images, as a fraction of the training set (val_budget_rate)


@dataclass
class PSBDResult:
    """PSBD on one training set.

    Attributes:
        scores: (N,) float64, ``-PSU``: higher = more likely poisoned.
        psu: (N,) float64 prediction shift uncertainty of each training image at ``dropout_rate``.
        validation_psu: (V,) float64 PSU of the clean validation images at ``dropout_rate``.
        threshold: in score units, ``-(the validation_quantile of validation_psu)``.
        decisions: (N,) bool, ``scores > threshold`` (PSU strictly below the validation quantile).
        threshold_rule: how the threshold was chosen.
        dropout_rate: the rate used (selected, or given).
        shift_ratios: one row per candidate rate: ``{"rate", "train", "validation"}`` shift ratios
            (only the given rate when ``dropout_rate`` was given).
        params: the detector's registered name (``detector``) and settings.
        seconds: wall time of all the forward passes and the decision.
    """

    scores: torch.Tensor
    psu: torch.Tensor
    validation_psu: torch.Tensor
    threshold: float
    decisions: torch.Tensor
    threshold_rule: str
    dropout_rate: float
    shift_ratios: list[dict[str, float]]
    params: dict[str, Any]
    seconds: float


def dropout_modules(model: nn.Module) -> list[nn.Module]:
    """The model's switchable dropout layers (:class:`~mmsec.models.base.DropoutLayers`), checked."""
    if not isinstance(model, DropoutLayers):
        raise TypeError(f"model must name its dropout layers (DropoutLayers: dropout_layers() -> the nn.Dropout "
                        f"modules to switch on at test time), got {type(model).__name__} without dropout_layers()")
    layers = list(model.dropout_layers())
    if not layers:
        raise ValueError(f"model.dropout_layers() of {type(model).__name__} is empty: PSBD needs at least one "
                         "dropout layer to switch on")
    for m in layers:
        if not isinstance(m, nn.modules.dropout._DropoutNd):
            raise TypeError(f"model.dropout_layers() must return dropout modules (nn.Dropout, nn.Dropout2d, ...), "
                            f"got {type(m).__name__}")
    return layers


class _DropoutOn:
    """Context: the given dropout layers in train mode at rate ``p``; their rate and mode restored on exit."""

    def __init__(self, layers: list[nn.Module], p: float):
        self.layers, self.p = layers, p
        self.saved = [(m.p, m.training) for m in layers]

    def __enter__(self) -> None:
        for m in self.layers:
            m.p = self.p
            m.train()

    def __exit__(self, *exc: object) -> None:
        for m, (p, training) in zip(self.layers, self.saved, strict=True):
            m.p = p
            m.train(training)


def prediction_shift(model: nn.Module, pixels: torch.Tensor, rates: tuple[float, ...], passes: int, seed: int,
                     batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """PSU and prediction shifts of ``pixels`` at each dropout rate.

    Returns (psu (R, N) float64, shifted (R, N) float64: the fraction of the ``passes`` dropout predictions
    that differ from the prediction without dropout), row ``r`` for ``rates[r]``. The model is run with
    batch norm in eval mode (every module's mode restored after); the dropout masks of rate ``r`` come from the
    global RNG seeded with ``seed + r`` inside :func:`torch.random.fork_rng` (the caller's RNG untouched).
    Not under ``no_grad``: a caller that differentiates PSU can.
    """
    layers = dropout_modules(model)
    modes = [(m, m.training) for m in model.modules()]  # restored module by module (a mixed state too)
    model.eval()
    psu = torch.empty(len(rates), pixels.shape[0], dtype=torch.float64)
    shifted = torch.empty_like(psu)
    try:
        probs0 = torch.cat([model.logits(pixels[i:i + batch_size]).softmax(dim=1)
                            for i in range(0, pixels.shape[0], batch_size)])  # (N, K), dropout off
        c = probs0.argmax(dim=1)
        p_c = probs0.gather(1, c[:, None])[:, 0]
        for r, rate in enumerate(rates):
            with torch.random.fork_rng(devices=[]), _DropoutOn(layers, rate):
                torch.manual_seed(seed + r)
                drop = torch.zeros_like(p_c)  # sum of the per-pass drops: exactly 0 where nothing changed
                moved = torch.zeros_like(p_c)
                for _ in range(passes):
                    probs = torch.cat([model.logits(pixels[i:i + batch_size]).softmax(dim=1)
                                       for i in range(0, pixels.shape[0], batch_size)])
                    drop = drop + (p_c - probs.gather(1, c[:, None])[:, 0])
                    moved = moved + (probs.argmax(dim=1) != c).to(moved.dtype)
            psu[r] = drop.double() / passes  # = P_c(x) - mean_i P_c(x; p, theta'_i)
            shifted[r] = moved.double() / passes
    finally:
        for m, training in modes:
            m.training = training
    return psu, shifted


def select_rate(rates: tuple[float, ...], train_shift: list[float], validation_shift: list[float],
                min_validation_shift: float) -> int:
    """Index of the authors' rate: argmax of (validation - train) shift ratio over the rates whose validation
    shift ratio is at least ``min_validation_shift``, over all rates when none is (ties: the first)."""
    gaps = [v - t for v, t in zip(validation_shift, train_shift, strict=True)]
    eligible = [i for i, v in enumerate(validation_shift) if v >= min_validation_shift] or list(range(len(rates)))
    return max(eligible, key=lambda i: (gaps[i], -i))


def _check_rate(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0 < value < 1:
        raise ValueError(f"{name} must be a dropout rate in (0, 1), got {value!r}")
    return float(value)


@register("detectors", "psbd")
class PSBD(Method):
    """Prediction shift backdoor detection: ``PSBD()(model, images, validation) -> PSBDResult``.

    Args:
        forward_passes: dropout forward passes ``k`` per image (default 3, the authors').
        dropout_rates: candidate rates searched (default 0.1 .. 0.9, the authors').
        dropout_rate: use this rate and skip the search (None: search, the paper's procedure).
        min_validation_shift: a rate is eligible when the validation set's shift ratio reaches it (0.8).
        validation_quantile: the threshold is this quantile of the validation set's PSU (0.25).
        batch_size: images per forward pass (memory only).
        seed: seed of the dropout masks.
    """

    name = "psbd"
    family = "classifier"
    paper = "Li, Chen, Liu, Wang, CVPR 2025"
    threat_model = ("a defender with the possibly poisoned training set, the classifier trained on it and a few "
                    "clean unlabelled images flags poisoned training samples")

    def __init__(self, forward_passes: int = PAPER_FORWARD_PASSES,
                 dropout_rates: tuple[float, ...] | list[float] = PAPER_DROPOUT_RATES,
                 dropout_rate: float | None = None, min_validation_shift: float = PAPER_MIN_VALIDATION_SHIFT,
                 validation_quantile: float = PAPER_VALIDATION_QUANTILE, batch_size: int = 256, seed: int = 0):
        self.forward_passes = check_int("forward_passes", forward_passes)
        if not isinstance(dropout_rates, (tuple, list)) or not dropout_rates:
            raise ValueError(f"dropout_rates must be a non-empty list of rates in (0, 1), got {dropout_rates!r}")
        self.dropout_rates = tuple(_check_rate("dropout_rates[]", r) for r in dropout_rates)
        self.dropout_rate = None if dropout_rate is None else _check_rate("dropout_rate", dropout_rate)
        if isinstance(min_validation_shift, bool) or not isinstance(min_validation_shift, (int, float)) \
                or not 0 <= min_validation_shift <= 1:
            raise ValueError(f"min_validation_shift must be a shift ratio in [0, 1], got {min_validation_shift!r}")
        self.min_validation_shift = float(min_validation_shift)
        if isinstance(validation_quantile, bool) or not isinstance(validation_quantile, (int, float)) \
                or not 0 <= validation_quantile <= 1:
            raise ValueError(f"validation_quantile must be in [0, 1], got {validation_quantile!r}")
        self.validation_quantile = float(validation_quantile)
        self.batch_size = check_int("batch_size", batch_size)
        self.seed = check_int("seed", seed, low=0)

    def __call__(self, model: nn.Module, images: torch.Tensor | None = None,
                 validation: torch.Tensor | None = None) -> PSBDResult:
        """Score ``images`` (N, 3, H, W) in [0, 1], the training set, with ``validation`` (V, 3, H, W) clean
        unlabelled images (V >= 2; the paper's budget is 5% of N) to pick the rate and the threshold."""
        if isinstance(model, torch.Tensor) or images is None or validation is None:
            raise TypeError("PSBD is called on (model, images, validation): the classifier trained on the images, "
                            "its training images and a few clean validation images, not embeddings")
        check_pixels(images, "images")
        check_pixels(validation, "validation")
        if images.shape[0] < 1 or validation.shape[0] < 2:
            raise ValueError(f"PSBD needs >= 1 training image and >= 2 validation images, got {images.shape[0]} "
                             f"and {validation.shape[0]}")
        dropout_modules(model)
        t0 = time.perf_counter()
        rates = self.dropout_rates if self.dropout_rate is None else (self.dropout_rate,)
        with torch.no_grad():  # scoring only; prediction_shift itself is differentiable
            psu, shifted = prediction_shift(model, images, rates, self.forward_passes, self.seed, self.batch_size)
            v_psu, v_shifted = prediction_shift(model, validation, rates, self.forward_passes, self.seed,
                                                self.batch_size)
        train_shift = shifted.mean(dim=1).tolist()
        val_shift = v_shifted.mean(dim=1).tolist()
        r = 0 if self.dropout_rate is not None else select_rate(rates, train_shift, val_shift,
                                                               self.min_validation_shift)
        cut = float(torch.quantile(v_psu[r], self.validation_quantile))
        scores = -psu[r]
        table = [{"rate": p, "train": t, "validation": v} for p, t, v in zip(rates, train_shift, val_shift, strict=True)]
        rule = (f"PSU below the {self.validation_quantile:g} quantile of {validation.shape[0]} validation images' "
                f"PSU at dropout rate {rates[r]:g}")
        return PSBDResult(scores=scores, psu=psu[r], validation_psu=v_psu[r], threshold=-cut,
                          decisions=scores > -cut, threshold_rule=rule, dropout_rate=rates[r], shift_ratios=table,
                          params={"detector": self.name, **self.params()}, seconds=time.perf_counter() - t0)


__all__ = ["PAPER_DROPOUT_RATES", "PAPER_FORWARD_PASSES", "PAPER_MIN_VALIDATION_SHIFT", "PAPER_VALIDATION_BUDGET",
           "PAPER_VALIDATION_QUANTILE", "PSBD", "PSBDResult", "dropout_modules", "prediction_shift", "select_rate"]
