"""UFID: a triggered input is one whose generations stay the same when the input is perturbed.

Paper: Zihan Guan, Mengxuan Hu, Sheng Li and Anil Vullikanti, "UFID: A Unified Framework for Black-Box
Input-Level Backdoor Detection on Diffusion Models", AAAI 2025 (arXiv 2404.01101, first titled "UFID: A
Unified Framework for Input-level Backdoor Detection on Diffusion Models"); the authors' code is
github.com/GuanZihan/official_UFID (``operate.py``: ``Sampling.augment_prompts`` and ``generate_sample``).

Threat model: black-box input-level detection (a firewall in front of a model served as an API). The
defender sees the queries (a starting noise ``x_T``; for a text-to-image model also a prompt) and the images
the model generates for the inputs it chooses to send; no weights, no gradients, no training data, no
knowledge of the trigger or the target. It flags queries that carry a trigger.

Objective in words (the paper's causal argument): a backdoor is a confounder that opens a path from the
trigger straight to the target image, and that path survives perturbations of the rest of the input; a
clean input's generation depends on the whole input, so perturbing it changes the image. UFID perturbs each
query into a batch of ``copies`` inputs (the first unchanged), generates one image per copy, embeds the
images with a pre-trained image encoder, builds the complete graph over the batch whose edge weights are the
cosine similarities of the embeddings, and scores the query by the graph's density -- the mean edge weight,
``2 / (n (n - 1)) * sum_{i<j} cos(f_i, f_j)``. High density = invariant generations = suspicious.

* Unconditional model: copy ``i >= 1`` is ``x_T + noise_strength * delta_i``, ``delta_i ~ N(0, I)`` (the
  paper: "add different Gaussian noises to the input noise"). BadDiffusion's triggered noise ``eps + r`` keeps
  its trigger ``r`` in every copy; TrojDiff's ``gamma * eps + (1 - gamma) * delta`` keeps its shift too.
* Conditional model: copy ``i >= 1`` also gets a phrase drawn at random from ``phrases`` joined to its
  prompt (the authors' ``augment_prompts``); a trigger word stays in every copy. The noise is perturbed as
  above as well (the authors' code draws a fresh starting latent for every copy).
* Threshold ``tau``: the paper flags a query whose density is above ``tau`` chosen from clean inputs; this
  class sets it, unless given, to the ``1 - false_positive_rate`` quantile of the scores of
  ``calibration_inputs`` clean queries: fresh N(0, I) noises (clean by construction: the defender draws
  them) and, for a conditional model, ``clean_prompts``.

Defaults: ``copies = 9`` (the authors' ``IMAGE_NUM_PER_GRID_SAMPLE``, the first copy the query itself);
the image encoder is CLIP in the paper (ViT-B/32; here the zoo CLIP's image tower, ``encoder="clip"``,
or the judge's penultimate features, ``encoder="judge"``); 25 inference steps (the authors' sampling
setting); guidance 7.5 in the authors' Stable Diffusion runs.

Departures, and why:
* The noise strength is not stated in the text we could read; ``noise_strength = 0.5`` separated
  BadDiffusion's triggered noises best of 0.25 / 0.5 / 1.0 on the tiny test model (AUROC 0.74 / 0.88 / 0.77
  with an 8 x 8 trigger, 0.76 / 0.62 at 0.5 / 1.0 with a 4 x 4 one): a larger perturbation also breaks a
  weak backdoor's invariance, a smaller one leaves clean generations alike.
* Phrases: the authors' nine public Stable Diffusion prompts are prepended ("pikachu eating spagetti. " +
  prompt). The shapes world's models read 16 tokens, so a prefix could push the query's own words (and its
  trigger) out of the context: the default appends (``phrase_position="append"``) phrases of the shapes
  world (:data:`SHAPES_PHRASES`: a second object, a background, a position).
* Guidance defaults to 3.0, the zoo text-to-image model's best scale (``/work/shared/probes.md``), not SD's 7.5.
* The threshold rule (a clean quantile, the false-positive rate as its parameter) is ours: the paper picks
  ``tau`` from clean samples, and the authors' scripts take it as an argument.
* Graph density is computed directly as the mean pairwise cosine similarity (the authors build a networkx
  graph and average its edge weights: the same number).

Registered as ``ufid`` (kind ``diffusion_input_detectors``). Example::

    verdict = UFID()(model, x_T, prompts=None, generator=0)    # InputVerdict
    verdict.scores, verdict.flagged, verdict.threshold, verdict.details["calibration_scores"]
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from ...checks import check_budget, check_int, make_generator
from ...registry import register
from .base import DiffusionInputDetector, InputVerdict

PAPER_COPIES = 9  # the authors' IMAGE_NUM_PER_GRID_SAMPLE: the query and 8 perturbed copies
PAPER_STEPS = 25  # the authors' num_inference_steps
ENCODERS = ("clip", "judge")
PHRASE_POSITIONS = ("append", "prepend")
# Phrases of the shapes world standing in for the authors' public prompts: each changes a clean generation
# (a second object, a background, a position) and leaves a trigger word in place.
SHAPES_PHRASES = (
    "and a red circle", "and a blue square", "and a green triangle", "and a yellow ring",
    "and a magenta cross", "and a cyan diamond", "on a striped background", "on a noisy background",
    "in the top left", "in the bottom right",
)
# Clean prompts of the shapes world to calibrate the threshold of a conditional model.
SHAPES_CLEAN_PROMPTS = (
    "a red circle", "a blue square", "a green triangle", "a yellow diamond", "a cyan cross", "a magenta ring",
    "a photo of a orange circle", "a purple square", "a large green ring", "a small red triangle",
    "a blue diamond", "a yellow cross",
)


def graph_density(features: torch.Tensor) -> torch.Tensor:
    """(B, n, D) embeddings of B batches of n generations -> (B,) density of each batch's complete graph
    weighted by cosine similarity: the mean over the n (n - 1) / 2 edges. Differentiable."""
    if features.ndim != 3 or features.shape[1] < 2:
        raise ValueError(f"features must be (B, n, D) with n >= 2 generations per input, got "
                         f"{tuple(features.shape)}")
    f = F.normalize(features.float(), dim=-1)
    sim = f @ f.transpose(1, 2)  # (B, n, n)
    n = features.shape[1]
    off_diagonal = sim.sum(dim=(1, 2)) - sim.diagonal(dim1=1, dim2=2).sum(dim=1)
    return off_diagonal / (n * (n - 1))


def perturb_noise(x_T: torch.Tensor, copies: int, strength: float, generator: torch.Generator) -> torch.Tensor:
    """(B, C, S, S) starting noises -> (B * copies, C, S, S): each row's copies, the first unchanged, the
    others ``x_T + strength * N(0, I)``. Rows of one input are consecutive."""
    reps = x_T.repeat_interleave(copies, dim=0)
    delta = torch.randn(reps.shape, generator=generator).to(reps.device, reps.dtype)
    first = (torch.arange(reps.shape[0], device=reps.device) % copies == 0).view(-1, 1, 1, 1)
    return torch.where(first, reps, reps + strength * delta)


def perturb_prompts(prompts: list[str], copies: int, phrases: tuple[str, ...], position: str,
                    generator: torch.Generator) -> list[str]:
    """B prompts -> B * copies prompts: each prompt's copies, the first unchanged, the others with a phrase
    drawn at random from ``phrases`` appended (or prepended) to it."""
    picks = torch.randint(0, len(phrases), (len(prompts) * copies,), generator=generator).tolist()
    out = []
    for k, pick in enumerate(picks):
        prompt = prompts[k // copies]
        if k % copies == 0:
            out.append(prompt)
        elif position == "append":
            out.append(f"{prompt} {phrases[pick]}")
        else:
            out.append(f"{phrases[pick]} {prompt}")
    return out


def load_image_encoder(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """The zoo image encoder ``name`` ("clip": shapes-clip-resnet's image tower; "judge": shapes-judge's
    penultimate features) as a function of (N, 3, H, W) [0, 1] pixels, resized to its side."""
    from ...models.loaders import load_model  # through the model registry: defenses do not import the zoo

    if name not in ENCODERS:
        raise ValueError(f"encoder must be one of {ENCODERS} (or a callable pixels -> features), got {name!r}")
    model = load_model("zoo:shapes-clip-resnet" if name == "clip" else "zoo:shapes-judge")
    encode = model.encode_image if name == "clip" else model.features
    side = int(model.image_size)

    def features(pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[-1] != side or pixels.shape[-2] != side:
            pixels = F.interpolate(pixels, size=(side, side), mode="bilinear", align_corners=False, antialias=True)
        return encode(pixels)

    return features


@register("diffusion_input_detectors", "ufid")
class UFID(DiffusionInputDetector):
    """Input-level backdoor detection by output invariance: ``UFID()(model, x_T, prompts, generator)``.

    Args:
        copies: generations per query, the query itself and ``copies - 1`` perturbed copies (9, the authors').
        noise_strength: scale of the Gaussian noise added to the starting noise of each copy.
        phrases: phrases joined to the prompt of each copy (conditional models); None: :data:`SHAPES_PHRASES`.
        phrase_position: "append" (default, see the module docstring) or "prepend" (the authors' code).
        encoder: "clip" (the zoo CLIP's image tower, standing in for the paper's CLIP), "judge" (the zoo
            judge's penultimate features), or a callable (N, 3, H, W) [0, 1] pixels -> (N, D) features (then
            the detector has no config).
        steps: inference steps of the sampler (25, the authors').
        sampler: "ddim" or "ddpm" (pass the attack's sampler when evaluating a backdoor).
        guidance: classifier-free guidance of a conditional model (unconditional models: none).
        threshold: the density threshold ``tau``; None: calibrated on clean inputs at every call.
        false_positive_rate: the calibrated threshold is the ``1 - false_positive_rate`` quantile of the
            clean queries' densities.
        calibration_inputs: clean queries scored to calibrate the threshold.
        clean_prompts: clean prompts for calibrating a conditional model; None: :data:`SHAPES_CLEAN_PROMPTS`.
        batch_size: images per sampling call (memory only).
    """

    name = "ufid"
    paper = "Guan, Hu, Li, Vullikanti, AAAI 2025"
    threat_model = ("black-box input-level detection: the defender sees queries (starting noise, prompt) and the "
                    "model's generations for inputs it chooses, and flags triggered queries")

    def __init__(self, copies: int = PAPER_COPIES, noise_strength: float = 0.5,
                 phrases: list[str] | tuple[str, ...] | None = None, phrase_position: str = "append",
                 encoder: str | Callable[[torch.Tensor], torch.Tensor] = "clip", steps: int = PAPER_STEPS,
                 sampler: str = "ddim", guidance: float = 3.0, threshold: float | None = None,
                 false_positive_rate: float = 0.05, calibration_inputs: int = 32,
                 clean_prompts: list[str] | tuple[str, ...] | None = None, batch_size: int = 64):
        self.copies = check_int("copies", copies, low=2)
        self.noise_strength = check_budget("noise_strength", noise_strength, 0.0, 100.0,
                                           hint=" (the std of the Gaussian noise added to x_T, 1.0 = as large as it)")
        self.phrases = None if phrases is None else _check_texts("phrases", phrases)
        if phrase_position not in PHRASE_POSITIONS:
            raise ValueError(f"phrase_position must be one of {PHRASE_POSITIONS}, got {phrase_position!r}")
        self.phrase_position = phrase_position
        if not callable(encoder) and encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS} or a callable pixels -> features, got {encoder!r}")
        self.encoder = encoder
        self.steps = check_int("steps", steps)
        if sampler not in ("ddim", "ddpm"):
            raise ValueError(f"sampler must be 'ddim' (deterministic) or 'ddpm' (ancestral), got {sampler!r}")
        self.sampler = sampler
        self.guidance = check_budget("guidance", guidance, 0.0, 100.0, hint=" (classifier-free guidance scale)")
        if threshold is not None and (isinstance(threshold, bool) or not isinstance(threshold, (int, float))
                                      or not math.isfinite(threshold)):
            raise ValueError(f"threshold must be None (calibrate on clean inputs) or a finite density, got {threshold!r}")
        self.threshold = None if threshold is None else float(threshold)
        self.false_positive_rate = check_budget("false_positive_rate", false_positive_rate, 0.0, 1.0,
                                                hint=" (fraction of clean queries flagged)")
        self.calibration_inputs = check_int("calibration_inputs", calibration_inputs, low=2)
        self.clean_prompts = None if clean_prompts is None else _check_texts("clean_prompts", clean_prompts)
        self.batch_size = check_int("batch_size", batch_size)

    # -- scoring ---------------------------------------------------------------------------------------
    def scores(self, model: Any, x_T: torch.Tensor, prompts: list[str] | None = None,
               generator: torch.Generator | int | None = None,
               encode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """(B,) graph densities of the queries ``x_T`` (B, C, S, S) (and ``prompts``, B of them, for a
        conditional model). ``encode``: the image encoder already loaded (None: load ``self.encoder``)."""
        gen = make_generator(generator)
        conditional = bool(getattr(model, "conditional", False))
        _check_query(model, x_T, prompts, conditional)
        encode = encode or self._encoder()
        noises = perturb_noise(x_T, self.copies, self.noise_strength, gen)
        conds = None
        if conditional:
            conds = perturb_prompts(list(prompts), self.copies, self.phrases or SHAPES_PHRASES,
                                    self.phrase_position, gen)
        feats = []
        for i in range(0, noises.shape[0], self.batch_size):
            cond = None if conds is None else conds[i:i + self.batch_size]
            images = model.sample(noises[i:i + self.batch_size], cond=cond, steps=self.steps,
                                  guidance=self.guidance if conditional else 1.0, generator=gen,
                                  sampler=self.sampler)
            feats.append(encode(images))
        features = torch.cat(feats).view(x_T.shape[0], self.copies, -1)
        return graph_density(features)

    def calibration_scores(self, model: Any, generator: torch.Generator | int | None = None,
                           encode: Callable[[torch.Tensor], torch.Tensor] | None = None) -> torch.Tensor:
        """Densities of ``calibration_inputs`` clean queries: fresh N(0, I) noises (and, for a conditional
        model, clean prompts cycled from ``clean_prompts``)."""
        gen = make_generator(generator)
        n = self.calibration_inputs
        shape = (n, int(model.channels), int(model.image_size), int(model.image_size))
        noise = torch.randn(shape, generator=gen)
        prompts = None
        if getattr(model, "conditional", False):
            pool = self.clean_prompts or SHAPES_CLEAN_PROMPTS
            prompts = [pool[k % len(pool)] for k in range(n)]
        return self.scores(model, noise, prompts, gen, encode)

    def __call__(self, model: Any, x_T: torch.Tensor, prompts: list[str] | None = None,
                 generator: torch.Generator | int | None = None) -> InputVerdict:
        """Score and flag the queries ``x_T`` (B, C, S, S) (with B ``prompts`` for a conditional model)."""
        t0 = time.perf_counter()
        gen = make_generator(generator)
        encode = self._encoder()
        with torch.no_grad():  # an inference entry point; scores() and graph_density stay differentiable
            scores = self.scores(model, x_T, prompts, gen, encode)
            details: dict[str, Any] = {"copies": self.copies}
            if self.threshold is None:
                clean = self.calibration_scores(model, gen, encode)
                threshold = float(torch.quantile(clean.double(), 1.0 - self.false_positive_rate))
                details["calibration_scores"] = clean.tolist()
                details["threshold_rule"] = f"{1.0 - self.false_positive_rate:g} quantile of {clean.numel()} clean"
            else:
                threshold = self.threshold
                details["threshold_rule"] = "given"
        return InputVerdict(scores=scores.detach(), flagged=scores.detach() >= threshold, threshold=threshold,
                            seconds=time.perf_counter() - t0, details=details)

    def _encoder(self) -> Callable[[torch.Tensor], torch.Tensor]:
        return self.encoder if callable(self.encoder) else load_image_encoder(self.encoder)


def _check_texts(name: str, texts: object) -> tuple[str, ...]:
    if isinstance(texts, str) or not isinstance(texts, (list, tuple)) or not texts \
            or not all(isinstance(t, str) and t.strip() for t in texts):
        raise ValueError(f"{name} must be a non-empty list of non-empty strings, got {texts!r}")
    return tuple(texts)


def _check_query(model: Any, x_T: torch.Tensor, prompts: list[str] | None, conditional: bool) -> None:
    if not hasattr(model, "sample"):
        raise TypeError(f"model must be a DiffusionModel (sample, channels, image_size), got {type(model).__name__}")
    want = (int(model.channels), int(model.image_size), int(model.image_size))
    if not isinstance(x_T, torch.Tensor) or x_T.ndim != 4 or tuple(x_T.shape[1:]) != want:
        got = tuple(x_T.shape) if isinstance(x_T, torch.Tensor) else type(x_T).__name__
        raise ValueError(f"x_T must be (B, {want[0]}, {want[1]}, {want[2]}) starting noises, got {got}")
    if conditional:
        if prompts is None or isinstance(prompts, str) or len(prompts) != x_T.shape[0]:
            raise ValueError(f"prompts must be {x_T.shape[0]} prompts (one per starting noise) for a conditional "
                             f"model, got {prompts!r}")
    elif prompts is not None:
        raise ValueError(f"prompts must be None for an unconditional model, got {len(prompts)} prompts")


__all__ = ["ENCODERS", "PAPER_COPIES", "PAPER_STEPS", "SHAPES_CLEAN_PROMPTS", "SHAPES_PHRASES", "UFID",
           "graph_density", "load_image_encoder", "perturb_noise", "perturb_prompts"]
