"""SEER: Liuwan Zhu, Rui Ning, Jiang Li, Chunsheng Xin, Hongyi Wu, "SEER: Backdoor Detection for
Vision-Language Models through Searching Target Text and Image Trigger Jointly", AAAI 2024.

Threat model defended: a suspect CLIP (white box) that may carry a backdoor sending images with an
unknown trigger to an unknown target text. The defender has a few clean images and a text
dictionary, no training data and no knowledge of downstream tasks, and must decide whether the
model is backdoored (a model-level verdict), naming the likely target words and trigger.

Objective: a trigger ``x' = (1 - m) * x + m * Delta`` (2-D mask ``m``, pattern ``Delta``, in [0, 1]) and
a target text feature ``F^T`` (a free vector in the shared space) are searched jointly::

    L(m, Delta, F^T) = (1 - S_IT) + lambda1 * ||m||_1 + lambda2 * ||F^T - F^T_0||^2
    S_IT = E_x cos(f(x'), F^T)

with ``F^T_0`` the mean text feature of the dictionary and ``m``, ``Delta`` starting at 0.5 per
pixel. In a backdoored model a small trigger sends every image to one point of the text space, so
``S_IT`` climbs high; in a clean model only a large mask aligns many images with one text. The
verdict is the anomaly index ``AI = -log(1 - S_IT)`` against a threshold; the target is the
dictionary entry ranked first by ``cos(F^T, F^D)``.

Defaults. The paper's: ``m`` and ``Delta`` at 0.5; ``F^T_0`` the mean of the dictionary's text
features; the dictionary the model's own vocabulary (the paper: the 49,152 lower-case words of
CLIP's BPE vocabulary; here the zoo tokenizer's 44 words, a BPE tokenizer's whole-word tokens, or
any list passed in). The source gives
no values for ``lambda1``, ``lambda2``, the optimiser or the threshold; chosen here (departures):

- ``lambda1 = 10`` on the mask's *mean* (its L1 norm over the pixel count), so the weight does not
  depend on the resolution: a full mask costs 10 (the whole range of ``1 - S_IT`` is 2), the zoo's
  4 x 4 trigger on 32 x 32 images 0.16. At 1 (a full mask costs 1; with lambda2 1) every zoo model,
  clean or not, keeps a mask over 12-22% of the image at ``S_IT`` ~ 0.86; at 20-30 most searches
  end with an empty mask.
- ``lambda2 = 0.1``: at 1 the text feature cannot leave the dictionary mean, whose direction is far
  from where a trigger sends images (cosine ~ 0 for the zoo's backdoors), so no target is found.
- Adam, lr 0.1 on the logits of ``m`` and ``Delta`` and on ``F^T``; 300 steps over batches of 64.
- ``threshold = 2.5`` (``S_IT >= 0.92``); ``recipes/seer.yaml`` reports where the shipped models
  fall (they do not separate at this scale: see benchmarks/README.md).
- ``restarts`` (default 1, the paper's single search): further searches start from random masks and
  patterns; the one with the lowest objective is kept. ``start=`` (a call argument) begins the first
  search from a given mask and pattern instead: a check of a suspected trigger, not part of the paper.

Shapes: ``pixels`` (N, 3, H, W) in [0, 1]. The model is put in eval mode and gets no gradients.

Registered as ``seer`` (kind ``model_detectors``): ``SEER()(model, pixels, generator=0)`` returns a
:class:`SEERResult` whose ``flagged``, ``score`` (the anomaly index), ``threshold`` and ``target`` (the
top-ranked dictionary word) are the model-detector contract's.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_budget, check_int, check_pixels, make_generator
from ...models.base import require_contrastive
from ...models.zeroshot import embed_images, embed_texts
from ...registry import register
from ..base import ModelDetector
from .invertune_inversion import stamp

SPECIAL_WORDS = ("<pad>", "<sos>", "<eos>", "<unk>")


@dataclass
class SEERResult:
    """SEER's verdict on one model and what it found."""

    backdoored: bool
    anomaly_index: float  # -log(1 - S_IT)
    similarity: float  # S_IT of the kept search, on all the images
    threshold: float
    target_ranking: list[tuple[str, float]]  # dictionary entries by cos(F^T, F^D), best first (top 10)
    mask: torch.Tensor  # (1, H, W) in [0, 1]
    pattern: torch.Tensor  # (3, H, W) in [0, 1]
    trace: list[float]  # S_IT per step (on its batch) of the kept search
    seconds: float
    params: dict[str, Any] = field(default_factory=dict)
    restart_similarities: list[float] = field(default_factory=list)  # S_IT of each search, the paper's start first

    # the model-detector contract (mmsec.defenses.base.ModelDetector)
    @property
    def flagged(self) -> bool:
        """Whether the model is judged backdoored (``score >= threshold``)."""
        return self.backdoored

    @property
    def score(self) -> float:
        """The anomaly index ``-log(1 - S_IT)``: higher = more suspicious."""
        return self.anomaly_index

    @property
    def target(self) -> str | None:
        """The dictionary entry ranked first as the backdoor's target text."""
        return self.target_ranking[0][0] if self.target_ranking else None


def model_dictionary(model: nn.Module) -> list[str]:
    """The model's own vocabulary as SEER's dictionary D: the zoo tokenizer's words, or a BPE
    tokenizer's whole-word tokens (``red</w>`` -> ``red``; Hugging Face CLIP), special tokens left out."""
    tokenizer = getattr(model, "tokenizer", None)
    vocab = getattr(tokenizer, "vocab", None)
    if vocab is None and hasattr(tokenizer, "get_vocab"):
        vocab = tokenizer.get_vocab()
    if not vocab:
        raise ValueError("the model exposes no tokenizer vocabulary; pass dictionary= (a list of words)")
    if isinstance(vocab, dict):  # BPE: token -> id; whole words end with </w>
        tokens = sorted(vocab, key=vocab.get)
        words = [t[: -len("</w>")] for t in tokens if t.endswith("</w>")]
        words = [w for w in words if w.isalpha() and w == w.lower()]
    else:
        words = [w for w in vocab if w not in SPECIAL_WORDS and not w.startswith("<")]
    return list(dict.fromkeys(words))


@register("model_detectors", "seer")
class SEER(ModelDetector):
    """Detect a backdoor by searching an image trigger and a target text jointly.

    Args:
        lambda1: weight of the mask's L1 norm over its pixel count (default 10).
        lambda2: weight of the text feature's squared drift from the dictionary mean (default 0.1).
        steps: optimisation steps per search (default 300).
        batch_size: clean images per step (default 64).
        lr: Adam learning rate (default 0.1).
        threshold: flag the model when ``AI >= threshold`` (default 2.5).
        restarts: searches; the first from the paper's start, the others from random ones (default 1).
    """

    name = "seer"
    paper = "Zhu, Ning, Li, Xin, Wu, AAAI 2024"

    def __init__(self, lambda1: float = 10.0, lambda2: float = 0.1, steps: int = 300, batch_size: int = 64,
                 lr: float = 0.1, threshold: float = 2.5, restarts: int = 1):
        self.lambda1 = check_budget("lambda1", lambda1, 0.0, 1e3, hint=" (weight of the mask's mean)")
        self.lambda2 = check_budget("lambda2", lambda2, 0.0, 1e3, hint=" (weight of the text drift)")
        self.steps = check_int("steps", steps, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.lr = check_budget("lr", lr, 0.0, 10.0)
        if self.lr == 0:
            raise ValueError("lr must be > 0, got 0")
        self.threshold = check_budget("threshold", threshold, 0.0, 1e3, hint=" (anomaly index -log(1 - S_IT))")
        self.restarts = check_int("restarts", restarts, 1)

    def __call__(self, model: nn.Module, pixels: torch.Tensor, generator: torch.Generator | int | None = None,
                 dictionary: list[str] | None = None,
                 start: tuple[torch.Tensor, torch.Tensor] | None = None) -> SEERResult:
        """Search ``model`` with clean ``pixels`` (N >= 2); ``dictionary`` defaults to the model's words.

        ``start``: a candidate trigger ``(mask (1, H, W), pattern (3, H, W))`` in [0, 1] that the first
        search starts from instead of the paper's 0.5 (to check whether a suspected trigger explains a
        backdoor: the search keeps it only if the objective does)."""
        require_contrastive(model, "SEER")
        check_pixels(pixels, "pixels")
        if pixels.shape[0] < 2:
            raise ValueError(f"pixels must be (N, 3, H, W) with N >= 2 clean images, got {tuple(pixels.shape)}")
        h, w = pixels.shape[-2:]
        if start is not None:
            start = _check_start(start, h, w)
        words = model_dictionary(model) if dictionary is None else list(dictionary)
        if not words or not all(isinstance(word, str) and word.strip() for word in words):
            raise ValueError("dictionary must be a non-empty list of non-empty strings")
        gen = make_generator(generator)
        was_training = model.training
        model.eval()
        t0 = time.perf_counter()
        try:
            with torch.no_grad():
                dict_feats = F.normalize(embed_texts(model, words).float(), dim=-1)  # (|D|, E)
            searches = [self._search(model, pixels, dict_feats.mean(0), gen, start if r == 0 else "random")
                        for r in range(self.restarts)]
        finally:
            model.train(was_training)
        best = min(searches, key=lambda s: s.objective)
        ranking = (dict_feats @ F.normalize(best.text, dim=0)).tolist()
        ai = -math.log(max(1e-12, 1 - best.similarity))
        order = sorted(zip(words, ranking, strict=True), key=lambda t: -t[1])[:10]
        return SEERResult(ai >= self.threshold, ai, best.similarity, self.threshold, order, best.mask, best.pattern,
                          best.trace, time.perf_counter() - t0, self.params(),
                          [s.similarity for s in searches])

    def _search(self, model: nn.Module, pixels: torch.Tensor, f0: torch.Tensor, gen: torch.Generator,
                start: tuple[torch.Tensor, torch.Tensor] | str | None) -> _Search:
        h, w = pixels.shape[-2:]
        text = f0.clone().requires_grad_(True)
        if start is None:  # sigmoid(0) = 0.5: the paper's mask and pattern
            mask_logit, pattern_logit = torch.zeros(1, h, w), torch.zeros(3, h, w)
        elif start == "random":
            mask_logit, pattern_logit = torch.randn(1, h, w, generator=gen), torch.randn(3, h, w, generator=gen)
        else:
            mask_logit, pattern_logit = (torch.logit(t.float().clamp(1e-3, 1 - 1e-3)) for t in start)
        mask_logit.requires_grad_(True)
        pattern_logit.requires_grad_(True)
        leaves = [mask_logit, pattern_logit, text]
        opt = torch.optim.Adam(leaves, lr=self.lr)
        trace: list[float] = []
        for _ in range(self.steps):
            idx = torch.randint(0, pixels.shape[0], (min(self.batch_size, pixels.shape[0]),), generator=gen)
            mask, pattern = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
            feats = F.normalize(model.encode_image(stamp(pixels[idx], mask, pattern)).float(), dim=-1)
            s_it = (feats @ F.normalize(text, dim=0)).mean()
            loss = (1 - s_it) + self.lambda1 * mask.mean() + self.lambda2 * (text - f0).pow(2).sum()
            for p, g in zip(leaves, torch.autograd.grad(loss, leaves), strict=True):  # the model gets no .grad
                p.grad = g
            opt.step()
            trace.append(float(s_it.detach()))
        with torch.no_grad():  # the final S_IT and objective on all the images, not the last batch
            mask, pattern = torch.sigmoid(mask_logit), torch.sigmoid(pattern_logit)
            unit = F.normalize(text, dim=0)
            feats = F.normalize(embed_images(model, stamp(pixels, mask, pattern), batch_size=256).float(), dim=-1)
            s_final = float((feats @ unit).mean())
            objective = (1 - s_final) + self.lambda1 * float(mask.mean()) + self.lambda2 * float((text - f0).pow(2).sum())
        return _Search(objective, s_final, mask, pattern, text.detach(), trace)


def _check_start(start: object, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    if not (isinstance(start, tuple) and len(start) == 2 and all(isinstance(t, torch.Tensor) for t in start)):
        raise TypeError("start must be a (mask, pattern) tuple of tensors")
    mask, pattern = start
    if tuple(mask.shape) != (1, h, w) or tuple(pattern.shape) != (3, h, w):
        raise ValueError(f"start must be a mask (1, {h}, {w}) and a pattern (3, {h}, {w}) like the images; "
                         f"got {tuple(mask.shape)} and {tuple(pattern.shape)}")
    if not all(torch.isfinite(t).all() and t.min() >= 0 and t.max() <= 1 for t in start):
        raise ValueError("start's mask and pattern must be finite and lie in [0, 1]")
    return mask, pattern


@dataclass
class _Search:
    objective: float
    similarity: float
    mask: torch.Tensor
    pattern: torch.Tensor
    text: torch.Tensor
    trace: list[float]


__all__ = ["SEER", "SEERResult", "model_dictionary"]
