"""A text-to-image backdoor measured: samples of triggered and clean prompts, judged for the backdoor's target.

A backdoored text-to-image model (kind ``t2i_backdoors``: BadT2I) is sampled from *one* set of starting
noises with the same prompts with and without the trigger (and, for the baseline, the clean model with the
trigger). What counts as the target depends on ``result.target_kind``:

* ``pixel``: the patch's region of the image is within mean squared error :data:`PATCH_MSE_BOUND` of the
  patch (pixels in [0, 1], over the patch's pixels only); all prompts;
* ``object``: the judge's top class (at any probability, as prompt adherence) has object B's shape; the
  prompts naming A;
* ``style`` (a colour in the shapes world): the judge's top class has the colour the style sets; the
  prompts whose colour the style changes.

The clean utility is the prompt adherence (colour, shape, both) of the backdoored model's samples of the
clean prompts, next to the clean model's on the same noises. Definitions: :data:`T2I_BACKDOOR_DEFINITIONS`
(and :data:`mmsec.metrics.generation.GENERATION_DEFINITIONS` for the adherence metrics).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..attacks.backdoor.t2i_backdoor import add_trigger, mentions
from ..checks import check_int, make_generator
from ..metrics import MetricDefinition
from ..metrics.generation import judge_probabilities, prompt_adherence, prompt_attributes

PATCH_MSE_BOUND = 0.05  # a 0/1 checkerboard patch against a random image region: ~0.3-0.5

T2I_BACKDOOR_DEFINITIONS: dict[str, MetricDefinition] = {d.name: d for d in [
    MetricDefinition("t2i_backdoor_effect", 1,
                     "text-to-image backdoor: fraction of the samples of triggered prompts that show the target: pixel, "
                     f"the patch's region within mean squared error {PATCH_MSE_BOUND} of the patch (pixels in [0, 1]); "
                     "object, the judge's top class has object B's shape (prompts naming A); style, the judge's top "
                     "class has the style's colour (prompts whose colour the style changes)"),
    MetricDefinition("t2i_backdoor_effect_clean", 1, "as t2i_backdoor_effect, the backdoored model's samples of the "
                                                     "same prompts without the trigger (same noises)",
                     higher_is_better=False),
    MetricDefinition("t2i_backdoor_effect_reference", 1, "as t2i_backdoor_effect, the clean model's samples of the "
                                                         "triggered prompts (same noises): the baseline",
                     higher_is_better=False),
    MetricDefinition("patch_mse_median", 1, "pixel backdoor: median over the samples of triggered prompts of the mean "
                                            "squared error of the patch's region to the patch (pixels in [0, 1])",
                     higher_is_better=False),
    MetricDefinition("colour_adherence_reference", 1, "colour_adherence of the clean model on the same prompts and "
                                                      "noises"),
    MetricDefinition("shape_adherence_reference", 1, "shape_adherence of the clean model on the same prompts and noises"),
    MetricDefinition("prompt_adherence_reference", 1, "prompt_adherence of the clean model on the same prompts and "
                                                      "noises"),
]}


def prompt_samples(model: Any, prompt_sets: dict[str, list[str]], steps: int = 25, guidance: float = 3.0,
                   generator: torch.Generator | int | None = None, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """Samples of ``model`` (deterministic DDIM) for each named list of prompts, all lists of one length and all
    from the same starting noises (drawn from ``generator``). An inference entry point: no autograd graph.
    Returns name -> (N, 3, S, S) images in [0, 1]."""
    lengths = {len(p) for p in prompt_sets.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ValueError(f"prompt_sets must be non-empty lists of one length, got lengths {sorted(lengths)}")
    n, batch_size = lengths.pop(), check_int("batch_size", batch_size, 1)
    shape = (n, int(model.channels), int(model.image_size), int(model.image_size))
    noise = torch.randn(shape, generator=make_generator(generator))  # (N, C, S, S)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in prompt_sets}
    with torch.no_grad():
        for start in range(0, n, batch_size):
            chunk = noise[start:start + batch_size]
            for name, prompts in prompt_sets.items():
                out[name].append(model.sample(chunk, cond=prompts[start:start + batch_size], steps=steps,
                                              guidance=guidance).float().cpu())
    return {name: torch.cat(images) for name, images in out.items()}


def patch_region_mse(images: torch.Tensor, patch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N,) mean squared error of each image's patch region to the patch (``patch`` (3, S, S), ``mask`` (S, S) bool)."""
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(patch.shape) or tuple(mask.shape) != tuple(patch.shape[1:]):
        raise ValueError(f"images (N, 3, S, S), patch (3, S, S) and mask (S, S) must agree, got {tuple(images.shape)}, "
                         f"{tuple(patch.shape)}, {tuple(mask.shape)}")
    m = mask.to(images.dtype)
    return ((images - patch.to(images.dtype)) ** 2 * m).sum(dim=(1, 2, 3)) / (3 * m.sum())


def judged_attributes(judge: Any, images: torch.Tensor) -> list[tuple[str, str]]:
    """(colour, shape) of the judge's top class for each image (at any probability)."""
    classes = [c.split() for c in judge.classes]  # "<colour> <shape>": the colour may be several words
    top = judge_probabilities(judge, images).argmax(dim=1).tolist()
    return [(" ".join(classes[k][:-1]), classes[k][-1]) for k in top]


def effect_prompts(result: Any, prompts: Sequence[str]) -> list[str]:
    """The prompts on which the backdoor's effect is measured (module docstring)."""
    prompts = list(prompts)
    if result.target_kind == "object":
        chosen = [p for p in prompts if mentions(p, result.object_pair[0])]
        what = f"naming object A={result.object_pair[0]!r}"
    elif result.target_kind == "style":
        if not result.style_words:
            raise ValueError("the judge measures a style as a colour: this style backdoor has no style_words (a "
                             "phrase-only style is not measurable here)")
        chosen = [p for p, q in zip(prompts, result.intended_prompts(prompts), strict=True) if p != q]
        what = "whose words the style changes"
    else:
        chosen, what = prompts, "at all"
    if not chosen:
        raise ValueError(f"no prompt {what}: give prompts on which the {result.target_kind} backdoor can show")
    return chosen


def effect_hits(result: Any, images: torch.Tensor, prompts: Sequence[str], judge: Any,
                patch_bound: float = PATCH_MSE_BOUND) -> torch.Tensor:
    """(N,) bool: which images (generated for ``prompts``, with or without the trigger) show the backdoor's target."""
    if result.target_kind == "pixel":
        return patch_region_mse(images, result.patch, result.patch_mask) <= patch_bound
    judged = judged_attributes(judge, images)
    wanted = prompt_attributes(result.intended_prompts(prompts), list(judge.classes))
    k = 1 if result.target_kind == "object" else 0  # object: the shape; style: the colour
    return torch.tensor([j[k] == w[k] for j, w in zip(judged, wanted, strict=True)])


@dataclass
class T2IBackdoorReport:
    """What :func:`t2i_backdoor_report` measured (metric names in comments; ``*_reference``: the clean model's)."""

    effect: float  # t2i_backdoor_effect
    effect_clean: float  # t2i_backdoor_effect_clean
    colour_adherence: float  # the backdoored model, clean prompts
    shape_adherence: float
    prompt_adherence: float
    n_effect: int  # samples the effect is measured on
    n_clean: int  # samples the adherence is measured on
    patch_mse_median: float | None = None  # pixel only
    effect_reference: float | None = None  # t2i_backdoor_effect_reference
    colour_adherence_reference: float | None = None
    shape_adherence_reference: float | None = None
    prompt_adherence_reference: float | None = None
    samples: dict[str, torch.Tensor] = field(default_factory=dict)

    def values(self) -> dict[str, float]:
        """The numbers (no samples), for a results row (metric name -> value)."""
        names = ("effect", "effect_clean", "effect_reference", "patch_mse_median", "colour_adherence",
                 "shape_adherence", "prompt_adherence", "colour_adherence_reference", "shape_adherence_reference",
                 "prompt_adherence_reference")
        rename = {"effect": "t2i_backdoor_effect", "effect_clean": "t2i_backdoor_effect_clean",
                  "effect_reference": "t2i_backdoor_effect_reference"}
        return {rename.get(k, k): float(getattr(self, k)) for k in names if getattr(self, k) is not None}


def t2i_backdoor_report(model: Any, result: Any, judge: Any, prompts: Sequence[str], reference: Any | None = None,
                        steps: int = 25, guidance: float = 3.0, generator: torch.Generator | int | None = 0,
                        patch_bound: float = PATCH_MSE_BOUND, batch_size: int = 64) -> T2IBackdoorReport:
    """Score a backdoored text-to-image model (module docstring).

    Args:
        model: the backdoored model (``result.model``, or a repaired version of it).
        result: the attack's result (``trigger_prompts``, ``intended_prompts``, ``target_kind`` and its target).
        judge: an image classifier over "<colour> <shape>" classes (the zoo's ``shapes-judge``).
        prompts: clean prompts "a {colour} {shape}" (each sampled once; repeat a prompt for more samples).
        reference: the clean model, sampled on the same noises (baseline and utility), or None.
        steps, guidance: DDIM steps and classifier-free guidance (the zoo card's: 25, 3.0).
        generator: seeds the starting noises (the same for every set).
    """
    prompts = list(prompts)
    chosen = effect_prompts(result, prompts)
    triggered = add_trigger(result.trigger, chosen)
    sets = prompt_samples(model, {"triggered": triggered, "clean": chosen}, steps, guidance, generator, batch_size)
    utility = prompt_samples(model, {"all": prompts}, steps, guidance, generator, batch_size)["all"]
    adherence = prompt_adherence(judge, utility, prompts)
    report = T2IBackdoorReport(
        effect=effect_hits(result, sets["triggered"], chosen, judge, patch_bound).float().mean().item(),
        effect_clean=effect_hits(result, sets["clean"], chosen, judge, patch_bound).float().mean().item(),
        colour_adherence=adherence.colour, shape_adherence=adherence.shape, prompt_adherence=adherence.both,
        n_effect=len(chosen), n_clean=len(prompts), samples={**sets, "utility": utility})
    if result.target_kind == "pixel":
        report.patch_mse_median = patch_region_mse(sets["triggered"], result.patch, result.patch_mask).median().item()
    if reference is not None:
        ref = prompt_samples(reference, {"triggered": triggered}, steps, guidance, generator, batch_size)["triggered"]
        ref_utility = prompt_samples(reference, {"all": prompts}, steps, guidance, generator, batch_size)["all"]
        ref_adherence = prompt_adherence(judge, ref_utility, prompts)
        report.effect_reference = effect_hits(result, ref, chosen, judge, patch_bound).float().mean().item()
        report.colour_adherence_reference = ref_adherence.colour
        report.shape_adherence_reference = ref_adherence.shape
        report.prompt_adherence_reference = ref_adherence.both
        report.samples.update({"reference_triggered": ref, "reference_utility": ref_utility})
    return report


__all__ = ["PATCH_MSE_BOUND", "T2IBackdoorReport", "T2I_BACKDOOR_DEFINITIONS", "effect_hits", "effect_prompts",
           "judged_attributes", "patch_region_mse", "prompt_samples", "t2i_backdoor_report"]
