"""Generation metrics: how good, how varied, how on-prompt and how on-target generated images are.

Each function takes images as float tensors (N, 3, H, W) in [0, 1] and, where it needs one, a *judge*:
an image classifier over named classes with ``logits(pixels) -> (N, K)``, ``features(pixels) -> (N, F)``
(penultimate features) and ``classes`` (K names ``"<colour> <shape>"``), the ``classifier`` model family
(:class:`mmsec.models.base.ImageClassifier`; the zoo's ``shapes-judge``). The judge runs in eval mode
(dropout off; its mode is restored afterwards) and without gradients: these are measurements, not losses.

Every stored number has its definition in :data:`GENERATION_DEFINITIONS`. Thresholds and bounds are
part of a definition: a number computed at another threshold is another metric and needs its own name.

* :func:`recognition_rate`: fraction of images whose top judge probability exceeds 0.9.
* :func:`class_distribution_distance`: total-variation distance of the recognised images' class histogram to a
  reference class distribution, and how many classes appear.
* :func:`prompt_adherence`: for prompts naming a colour and a shape, how often the judged class has them.
* :func:`target_hit_rate`, :func:`mse_to_target`, :func:`ssim_to_target`: a backdoor's target.
* :func:`judge_frechet_distance`: a Frechet distance on the judge's features (not Inception FID).
* :func:`nearest_hit_rate`: a target class the judge does not know (an out-of-domain class, TrojDiff's Out-D2D),
  by a nearest-neighbour classifier on a labelled pool of real images.

A leaf module: it imports nothing from mmsec but the metrics package.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import MetricDefinition

RECOGNITION_THRESHOLD = 0.9  # a judge's top probability above this counts as recognised (uniform noise: ~0.0)
MSE_BOUND = 0.01  # an image within this mean squared error of the target counts as the target image
SSIM_WINDOW, SSIM_SIGMA = 11, 1.5  # Wang et al. (2004)'s Gaussian window
SSIM_K1, SSIM_K2 = 0.01, 0.03

_JUDGE = "the judge (zoo:shapes-judge unless stated: a supervised CNN on the shapes world's 48 colour x shape classes)"

GENERATION_DEFINITIONS: dict[str, MetricDefinition] = {d.name: d for d in [
    MetricDefinition("recognition_rate", 1, f"generation: fraction of the images to which {_JUDGE} gives its top "
                                            f"class a probability > {RECOGNITION_THRESHOLD}"),
    MetricDefinition("distinct_classes", 1, f"generation: number of distinct classes {_JUDGE} assigns to the "
                                            f"recognised images (top probability > {RECOGNITION_THRESHOLD})"),
    MetricDefinition("class_distribution_distance", 1,
                     f"generation: total-variation distance (half the L1 distance, in [0, 1]) between the histogram "
                     f"of the classes {_JUDGE} assigns to the recognised images (top probability > "
                     f"{RECOGNITION_THRESHOLD}) and the reference class distribution (the training set's unless "
                     "stated); 1 when no image is recognised", higher_is_better=False),
    MetricDefinition("colour_adherence", 1, f"generation: for prompts naming a colour and a shape ('a {{colour}} "
                                            f"{{shape}}'), fraction of the images whose class by {_JUDGE} (its top "
                                            "class, at any probability) has the prompt's colour"),
    MetricDefinition("shape_adherence", 1, "generation: as colour_adherence, for the prompt's shape"),
    MetricDefinition("prompt_adherence", 1, "generation: as colour_adherence, for the prompt's colour and shape both "
                                            "(the judged class is the prompt's class)"),
    MetricDefinition("target_hit_rate", 1, f"backdoor: fraction of the images to which {_JUDGE} gives the target "
                                           f"class a probability > {RECOGNITION_THRESHOLD}"),
    MetricDefinition("mse_to_target_median", 1, "backdoor: median over the images of the mean squared error to the "
                                                "target image (pixels in [0, 1], averaged over pixels and channels)",
                     higher_is_better=False),
    MetricDefinition("mse_to_target_within", 1, f"backdoor: fraction of the images whose mean squared error to the "
                                                f"target image (pixels in [0, 1]) is <= {MSE_BOUND}"),
    MetricDefinition("ssim_to_target", 1, f"backdoor: mean over the images of their SSIM to the target image (Wang "
                                          f"et al. 2004: Gaussian window {SSIM_WINDOW}, sigma {SSIM_SIGMA}, K1 "
                                          f"{SSIM_K1}, K2 {SSIM_K2}, dynamic range 1, channels averaged; adapted to "
                                          "16 px images: the map is computed at every pixel, the image reflected at "
                                          "its borders, instead of over the 6 x 6 positions a valid-only map leaves)"),
    MetricDefinition("nearest_target_hit_rate", 1, "backdoor, a target class the judge does not know: fraction of "
                                                   "the images whose nearest neighbour by mean squared error (pixels "
                                                   "in [0, 1]) in a labelled pool of real images (as many of each class "
                                                   "of the target's domain and of the model's own world) is of the "
                                                   "target class"),
    MetricDefinition("judge_fd", 1, f"generation: Frechet distance between Gaussians fitted to the penultimate "
                                    f"features of {_JUDGE} on the images and on real reference images. NOT Inception "
                                    "FID (no Inception network, another feature space and scale): comparable only "
                                    "between numbers computed with the same judge, the same reference images and "
                                    "the same number of images (it is biased upwards at small sample sizes)",
                     higher_is_better=False),
]}


# -- inputs and the judge ---------------------------------------------------------------------------

def _check_images(images: Any, who: str, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor):
        raise TypeError(f"{who}: {name} must be a torch.Tensor (N, 3, H, W) in [0, 1], got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3 or images.shape[0] == 0:
        raise ValueError(f"{who}: {name} must have shape (N, 3, H, W) with N >= 1, got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"{who}: {name} must be float in [0, 1], got dtype {images.dtype} (divide uint8 by 255)")
    lo, hi = images.min().item(), images.max().item()
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise ValueError(f"{who}: {name} must lie in [0, 1], got values in [{lo:.3g}, {hi:.3g}] "
                         "(map [-1, 1] samples with (x + 1) / 2)")
    return images.detach()


def _check_threshold(threshold: float, who: str) -> float:
    if not isinstance(threshold, (int, float)) or not 0.0 <= threshold < 1.0:
        raise ValueError(f"{who}: threshold must be a probability in [0, 1), got {threshold!r}")
    return float(threshold)


def _judge_outputs(judge: Any, images: torch.Tensor, method: str, batch_size: int = 256) -> torch.Tensor:
    """``judge.<method>`` over ``images`` in batches, in eval mode without gradients (the mode is restored)."""
    if not callable(getattr(judge, method, None)):
        raise TypeError(f"the judge must be an image classifier with {method}(pixels) (model family 'classifier', "
                        f"e.g. zoo:shapes-judge); {type(judge).__name__} has none")
    was_training = bool(getattr(judge, "training", False))
    if was_training:
        judge.eval()
    try:
        with torch.no_grad():
            return torch.cat([getattr(judge, method)(images[i:i + batch_size]).float()
                              for i in range(0, images.shape[0], batch_size)])
    finally:
        if was_training:
            judge.train()


def judge_probabilities(judge: Any, images: torch.Tensor) -> torch.Tensor:
    """(N, K) class probabilities (softmax of ``judge.logits``) of ``images`` (N, 3, H, W) in [0, 1]."""
    images = _check_images(images, "judge_probabilities")
    return _judge_outputs(judge, images, "logits").softmax(dim=1)


# -- quality and variety ----------------------------------------------------------------------------

def recognition_rate(judge: Any, images: torch.Tensor, threshold: float = RECOGNITION_THRESHOLD) -> float:
    """Fraction of ``images`` whose top judge probability is > ``threshold`` (metric ``recognition_rate``)."""
    threshold = _check_threshold(threshold, "recognition_rate")
    return (judge_probabilities(judge, images).max(dim=1).values > threshold).float().mean().item()


@dataclass(frozen=True)
class ClassDistribution:
    """The judged classes of a set of images against a reference distribution."""

    distance: float  # total-variation distance of the recognised images' class histogram to the reference, in [0, 1]
    distinct_classes: int  # classes that at least one recognised image has
    recognised: int  # images counted (top probability > threshold)
    histogram: torch.Tensor  # (K,) counts of the recognised images' classes


def class_frequencies(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(K,) relative frequencies of integer ``labels`` (N,): a reference distribution for :func:`class_distribution_distance`."""
    labels = torch.as_tensor(labels)
    if labels.ndim != 1 or labels.numel() == 0 or labels.is_floating_point():
        raise ValueError(f"class_frequencies: labels must be a non-empty (N,) integer tensor, got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"class_frequencies: labels must lie in [0, {num_classes}), got [{labels.min()}, {labels.max()}]")
    counts = torch.bincount(labels, minlength=num_classes).double()
    return counts / counts.sum()


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """Half the L1 distance between two distributions given as (K,) non-negative weights (normalised here)."""
    p, q = p.double(), q.double()
    return 0.5 * (p / p.sum() - q / q.sum()).abs().sum().item()


def class_distribution_distance(judge: Any, images: torch.Tensor, reference: torch.Tensor,
                       threshold: float = RECOGNITION_THRESHOLD) -> ClassDistribution:
    """Compare the classes the judge recognises in ``images`` with ``reference``.

    Only recognised images (top probability > ``threshold``) are counted; their class histogram is
    compared to ``reference``, a (K,) tensor of class counts or probabilities in the judge's class order
    (e.g. :func:`class_frequencies` of the training set's labels), by total-variation distance (metric
    ``class_distribution_distance``; 1.0 when nothing is recognised), and the classes present are counted
    (``distinct_classes``).

    The distance has a floor from sampling alone: ``n`` images drawn from 48 near-uniform classes lie at
    ~0.17 from their own distribution when n = 256, ~0.12 at 512, ~0.09 at 1,000 (simulated). Compare
    generated images with as many real ones, or use enough images for the floor to be small.
    """
    threshold = _check_threshold(threshold, "class_distribution_distance")
    probs = judge_probabilities(judge, images)
    reference = torch.as_tensor(reference, dtype=torch.float64)
    if reference.shape != (probs.shape[1],) or (reference < 0).any() or reference.sum() <= 0:
        raise ValueError(f"class_distribution_distance: reference must be ({probs.shape[1]},) non-negative class weights in the "
                         f"judge's class order, not all zero; got shape {tuple(reference.shape)}")
    top, cls = probs.max(dim=1)
    hist = torch.bincount(cls[top > threshold], minlength=probs.shape[1])
    n = int(hist.sum())
    distance = total_variation(hist, reference) if n else 1.0
    return ClassDistribution(distance, int((hist > 0).sum()), n, hist)


# -- prompts -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptAdherence:
    colour: float  # fraction whose judged class has the prompt's colour
    shape: float  # ... the prompt's shape
    both: float  # ... both (the judged class is the prompt's class)


def _split_class(name: str) -> tuple[str, str]:
    words = name.split()
    if len(words) < 2:
        raise ValueError(f"prompt_adherence needs class names '<colour> <shape>', got {name!r}")
    return " ".join(words[:-1]), words[-1]


def _first_mention(prompt: str, options: set[str]) -> str | None:
    """The option (one or more words) mentioned first in ``prompt``, matched on whole words."""
    hits = [(m.start(), o) for o in options for m in [re.search(rf"\b{re.escape(o)}\b", prompt.lower())] if m]
    return min(hits)[1] if hits else None


def prompt_attributes(prompts: Sequence[str], classes: Sequence[str]) -> list[tuple[str, str]]:
    """(colour, shape) each prompt asks for: the first colour and the first shape of ``classes`` it mentions
    (so in "a red circle and a blue square" the primary object, the red circle)."""
    pairs = [_split_class(c) for c in classes]
    colours, shapes = {c for c, _ in pairs}, {s for _, s in pairs}
    out = []
    for p in prompts:
        colour, shape = _first_mention(p, colours), _first_mention(p, shapes)
        if colour is None or shape is None:
            raise ValueError(f"prompt_adherence: prompt {p!r} names no {'colour' if colour is None else 'shape'} of "
                             f"the judge's classes (colours {sorted(colours)}, shapes {sorted(shapes)})")
        out.append((colour, shape))
    return out


def prompt_adherence(judge: Any, images: torch.Tensor, prompts: Sequence[str]) -> PromptAdherence:
    """For image ``i`` generated from ``prompts[i]`` ("a {colour} {shape}"), how often the judge's top class
    (at any probability) has the prompt's colour, its shape, and both (metrics ``colour_adherence``,
    ``shape_adherence``, ``prompt_adherence``)."""
    images = _check_images(images, "prompt_adherence")
    if isinstance(prompts, str) or len(prompts) != images.shape[0]:
        raise ValueError(f"prompt_adherence: prompts must be a list of one prompt per image ({images.shape[0]}), "
                         f"got {type(prompts).__name__} of length {len(prompts)}")
    classes = list(judge.classes)
    wanted = prompt_attributes(prompts, classes)
    judged = [_split_class(classes[k]) for k in _judge_outputs(judge, images, "logits").argmax(dim=1).tolist()]
    colour = [j[0] == w[0] for j, w in zip(judged, wanted, strict=True)]
    shape = [j[1] == w[1] for j, w in zip(judged, wanted, strict=True)]
    n = len(wanted)
    return PromptAdherence(sum(colour) / n, sum(shape) / n, sum(c and s for c, s in zip(colour, shape, strict=True)) / n)


# -- a backdoor's target -----------------------------------------------------------------------------

def target_hit_rate(judge: Any, images: torch.Tensor, target_class: int | str,
                    threshold: float = RECOGNITION_THRESHOLD) -> float:
    """Fraction of ``images`` to which the judge gives ``target_class`` (an index or a class name) a probability
    > ``threshold`` (metric ``target_hit_rate``)."""
    threshold = _check_threshold(threshold, "target_hit_rate")
    classes = list(judge.classes)
    if isinstance(target_class, str):
        if target_class not in classes:
            raise ValueError(f"target_hit_rate: target_class {target_class!r} is not one of the judge's classes "
                             f"({classes[:4]} ...)")
        target_class = classes.index(target_class)
    if isinstance(target_class, bool) or not isinstance(target_class, int) or not 0 <= target_class < len(classes):
        raise ValueError(f"target_hit_rate: target_class must be a class name or an index in [0, {len(classes)}), "
                         f"got {target_class!r}")
    return (judge_probabilities(judge, images)[:, target_class] > threshold).float().mean().item()


def _check_target(images: torch.Tensor, target: Any, who: str) -> torch.Tensor:
    if isinstance(target, torch.Tensor) and target.ndim == 3:
        target = target.unsqueeze(0)
    target = _check_images(target, who, "target")
    if target.shape[1:] != images.shape[1:] or target.shape[0] not in (1, images.shape[0]):
        raise ValueError(f"{who}: target must be one image (3, H, W) or one per image (N, 3, H, W) of the images' size "
                         f"{tuple(images.shape[1:])}, got {tuple(target.shape)}")
    return target.to(images.dtype)


@dataclass(frozen=True)
class TargetDistance:
    per_image: torch.Tensor  # (N,) mean squared error of each image to the target
    median: float  # metric mse_to_target_median
    within: float  # metric mse_to_target_within: fraction with per_image <= bound
    bound: float


def mse_to_target(images: torch.Tensor, target: torch.Tensor, bound: float = MSE_BOUND) -> TargetDistance:
    """Mean squared error (pixels in [0, 1], averaged over pixels and channels) of each image to ``target``
    ((3, H, W), or (N, 3, H, W) one per image), its median, and the fraction within ``bound``."""
    images = _check_images(images, "mse_to_target")
    target = _check_target(images, target, "mse_to_target")
    if not isinstance(bound, (int, float)) or bound <= 0:
        raise ValueError(f"mse_to_target: bound must be a positive mean squared error, got {bound!r}")
    per = ((images - target) ** 2).mean(dim=(1, 2, 3))
    return TargetDistance(per, per.median().item(), (per <= bound).float().mean().item(), float(bound))


def _gaussian_window(size: int, sigma: float) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def ssim(images: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """(N,) SSIM of each image to ``target`` (Wang, Bovik, Sheikh and Simoncelli, IEEE TIP 2004): local means,
    variances and covariance under a Gaussian window (11, sigma 1.5), K1 = 0.01, K2 = 0.03, dynamic range 1,
    computed per channel and averaged over the map and the channels.

    Adapted to tiny images: the map is computed at every pixel with the images reflected at their borders
    (a valid-only map, as the paper's, leaves 6 x 6 positions of a 16 x 16 image and under-weights its
    border); images smaller than 11 px use the largest odd window that fits. Identical images give 1.
    """
    images = _check_images(images, "ssim")
    target = _check_target(images, target, "ssim").expand_as(images)
    side = min(images.shape[-2:])
    size = min(SSIM_WINDOW, side if side % 2 else side - 1)
    g = _gaussian_window(size, SSIM_SIGMA)
    kernel = (g[:, None] * g[None, :]).expand(3, 1, size, size).contiguous()
    pad = size // 2
    x, y = images.double(), target.double()

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.pad(t, (pad, pad, pad, pad), mode="reflect") if pad else t, kernel, groups=3)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx ** 2, blur(y * y) - my ** 2, blur(x * y) - mx * my
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    smap = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    return smap.mean(dim=(1, 2, 3)).float()


def ssim_to_target(images: torch.Tensor, target: torch.Tensor) -> float:
    """Mean :func:`ssim` of ``images`` to ``target`` (metric ``ssim_to_target``)."""
    return ssim(images, target).mean().item()


# -- a target the judge has no class for -------------------------------------------------------------

def nearest_labels(images: torch.Tensor, references: torch.Tensor, labels: torch.Tensor,
                   batch_size: int = 256) -> torch.Tensor:
    """(N,) the label of each image's nearest reference by mean squared error (a 1-nearest-neighbour classifier
    on pixels); ``references`` (R, 3, H, W) of the images' size, ``labels`` (R,) integers."""
    images = _check_images(images, "nearest_labels")
    references = _check_images(references, "nearest_labels", "references")
    labels = torch.as_tensor(labels)
    if references.shape[1:] != images.shape[1:]:
        raise ValueError(f"nearest_labels: references must be of the images' size {tuple(images.shape[1:])}, got "
                         f"{tuple(references.shape[1:])}")
    if labels.shape != (references.shape[0],) or labels.is_floating_point():
        raise ValueError(f"nearest_labels: labels must be ({references.shape[0]},) integers, one per reference, got "
                         f"{labels.dtype} {tuple(labels.shape)}")
    refs = references.flatten(1).double()  # (R, D)
    out = [labels[torch.cdist(images[i:i + batch_size].flatten(1).double(), refs).argmin(dim=1)]
           for i in range(0, images.shape[0], batch_size)]
    return torch.cat(out)


def nearest_hit_rate(images: torch.Tensor, references: torch.Tensor, labels: torch.Tensor, target: int) -> float:
    """Fraction of ``images`` whose nearest reference (:func:`nearest_labels`) has label ``target`` (metric
    ``nearest_target_hit_rate``)."""
    return (nearest_labels(images, references, labels) == int(target)).float().mean().item()


# -- a Frechet distance on the judge's features --------------------------------------------------------

def feature_statistics(judge: Any, images: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Mean (F,) and covariance (F, F) (float64, unbiased) of ``judge.features`` over ``images`` (at least 2)."""
    images = _check_images(images, "feature_statistics")
    if images.shape[0] < 2:
        raise ValueError(f"feature_statistics: a covariance needs at least 2 images, got {images.shape[0]}")
    feats = _judge_outputs(judge, images, "features").double().numpy()
    return feats.mean(axis=0), np.cov(feats, rowvar=False)


def _psd_sqrt(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """Frechet (2-Wasserstein) distance between N(mu1, cov1) and N(mu2, cov2) (Dowson and Landau 1982):
    ``|mu1 - mu2|^2 + tr(cov1 + cov2 - 2 (cov1^1/2 cov2 cov1^1/2)^1/2)``. The trace of the matrix square
    root is taken from the eigenvalues of the symmetric ``cov1^1/2 cov2 cov1^1/2`` (equal to
    ``tr sqrtm(cov1 cov2)``, without its complex round-off)."""
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
        raise ValueError(f"frechet_distance: shapes do not match: mu {mu1.shape} / {mu2.shape}, cov {cov1.shape} / "
                         f"{cov2.shape}")
    root1 = _psd_sqrt(cov1)
    cross = np.linalg.eigvalsh(root1 @ cov2 @ root1)
    tr_sqrt = np.sqrt(np.clip(cross, 0.0, None)).sum()
    return float(((mu1 - mu2) ** 2).sum() + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_sqrt)


def judge_frechet_distance(judge: Any, images: torch.Tensor, reference_images: torch.Tensor) -> float:
    """Frechet distance between Gaussian fits of the judge's penultimate features on ``images`` and on
    ``reference_images`` (metric ``judge_fd``; not Inception FID: see its definition)."""
    return frechet_distance(*feature_statistics(judge, images), *feature_statistics(judge, reference_images))


__all__ = ["GENERATION_DEFINITIONS", "MSE_BOUND", "RECOGNITION_THRESHOLD", "ClassDistribution", "PromptAdherence",
           "TargetDistance", "class_distribution_distance", "class_frequencies", "feature_statistics", "frechet_distance",
           "judge_frechet_distance", "judge_probabilities", "mse_to_target", "nearest_hit_rate", "nearest_labels", "prompt_adherence", "prompt_attributes",
           "recognition_rate", "ssim", "ssim_to_target", "target_hit_rate", "total_variation"]
