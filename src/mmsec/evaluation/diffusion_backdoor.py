"""A diffusion backdoor measured: triggered samples against the target, clean samples against the clean model.

A backdoored diffusion model (kind ``diffusion_backdoors``: BadDiffusion, TrojDiff) is scored on samples
drawn from *one* set of starting noises, with and without its trigger
(:meth:`~mmsec.attacks.backdoor.diffusion_backdoor.NoiseTrigger.apply`), with the sampler its attack
trained for. A trigger that brings its own generative process (TrojDiff's
:meth:`~mmsec.attacks.backdoor.trojdiff.TrojanNoise.generate`: the attacker samples Trojan noise with the
Trojan sampler) generates the triggered samples with it; clean samples always come from ``model.sample``.
A target the judge has no class for (``target_class=None``: TrojDiff's out-of-domain class) leaves the
judge's target metrics out; the caller scores the samples (``report.samples``) itself.

* triggered samples: the judge's target-class hit rate (probability > ``threshold``), the MSE to the
  target image (median, and the fraction within :data:`~mmsec.metrics.generation.MSE_BOUND`), SSIM;
* clean samples of the backdoored model: the judge's recognition rate (utility) and their target hit
  rate (the backdoor must stay silent without its trigger);
* the clean model (``reference``), when given, on the same noises: its clean recognition rate (the
  utility the backdoor is compared against) and its triggered samples' hit rate and MSE (what the
  trigger pattern does without a backdoor: the control).

Metric definitions are :data:`mmsec.metrics.generation.GENERATION_DEFINITIONS`'s.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..attacks.backdoor.diffusion_backdoor import NoiseTrigger, check_sampler
from ..checks import check_int, make_generator
from ..metrics.generation import (
    RECOGNITION_THRESHOLD,
    mse_to_target,
    recognition_rate,
    ssim_to_target,
    target_hit_rate,
)


@dataclass
class SamplePair:
    """Samples from the same starting noises, with and without the trigger: (N, 3, H, W) each, in [0, 1]."""

    triggered: torch.Tensor
    clean: torch.Tensor


def sample_sets(model: Any, triggers: dict[str, NoiseTrigger | None], n: int, sampler: str = "ddim",
                steps: int | None = None, generator: torch.Generator | int | None = None,
                batch_size: int = 64) -> dict[str, torch.Tensor]:
    """``n`` samples of ``model`` per entry of ``triggers`` (name -> a NoiseTrigger, or None for clean noise), all
    from the same ``n`` starting noises.

    The noises come from ``generator``; each batch of the ancestral sampler draws its step noise from a
    generator seeded the same way for every entry, so the sets differ by their triggers alone (and two calls
    with the same generator give the same noises). A trigger with its own generative process
    (``trigger.generate(model, noise, ...)``: TrojDiff's Trojan sampler) generates its set; any other is
    applied to the noise and sampled with ``model.sample``. An inference entry point: no autograd graph is kept.
    Returns name -> (n, 3, H, W) images in [0, 1].
    """
    sampler = check_sampler(sampler)
    n, batch_size = check_int("n", n, 1), check_int("batch_size", batch_size, 1)
    gen = make_generator(generator)
    shape = (n, int(model.channels), int(model.image_size), int(model.image_size))
    noise = torch.randn(shape, generator=gen)  # (N, C, S, S)
    seeds = torch.randint(0, 2**31 - 1, (-(-n // batch_size),), generator=gen).tolist()
    out: dict[str, list[torch.Tensor]] = {name: [] for name in triggers}
    with torch.no_grad():
        for k, seed in enumerate(seeds):
            chunk = noise[k * batch_size:(k + 1) * batch_size]
            for name, trigger in triggers.items():
                step_gen = torch.Generator().manual_seed(int(seed))
                if hasattr(trigger, "generate"):
                    images = trigger.generate(model, chunk, steps=steps, sampler=sampler, generator=step_gen)
                else:
                    start = chunk if trigger is None else trigger.apply(chunk)
                    images = model.sample(start, steps=steps, generator=step_gen, sampler=sampler)
                out[name].append(images.float().cpu())
    return {name: torch.cat(images) for name, images in out.items()}


def sample_pair(model: Any, trigger: NoiseTrigger, n: int, sampler: str = "ddim", steps: int | None = None,
                generator: torch.Generator | int | None = None, batch_size: int = 64) -> SamplePair:
    """``n`` triggered and ``n`` clean samples of ``model`` from the same ``n`` starting noises (:func:`sample_sets`)."""
    sets = sample_sets(model, {"triggered": trigger, "clean": None}, n, sampler, steps, generator, batch_size)
    return SamplePair(sets["triggered"], sets["clean"])


def noise_seed(generator: torch.Generator | int | None) -> int:
    """The seed of the starting noises :func:`diffusion_backdoor_report` draws from ``generator`` (so another set,
    e.g. a baseline's, can be drawn from the same noises)."""
    return int(torch.randint(0, 2**31 - 1, (1,), generator=make_generator(generator)))


@dataclass
class DiffusionBackdoorReport:
    """What :func:`diffusion_backdoor_report` measured (metric names of ``GENERATION_DEFINITIONS`` in comments).

    ``*_control`` fields are the clean model's (None without one).
    """

    target_hit_rate: float | None  # triggered samples of the backdoored model (None: no judge class)
    mse_to_target_median: float
    mse_to_target_within: float
    ssim_to_target: float
    clean_recognition_rate: float  # clean samples of the backdoored model
    clean_target_hit_rate: float | None
    n: int
    sampler: str
    steps: int | None
    threshold: float
    clean_recognition_rate_control: float | None = None  # clean samples of the clean model
    target_hit_rate_control: float | None = None  # the clean model's samples from triggered noise
    mse_to_target_median_control: float | None = None
    samples: SamplePair | None = None
    control_samples: SamplePair | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def values(self) -> dict[str, float]:
        """The numbers (no samples), for a results row."""
        names = ("target_hit_rate", "mse_to_target_median", "mse_to_target_within", "ssim_to_target",
                 "clean_recognition_rate", "clean_target_hit_rate", "clean_recognition_rate_control",
                 "target_hit_rate_control", "mse_to_target_median_control")
        return {k: float(getattr(self, k)) for k in names if getattr(self, k) is not None}


def diffusion_backdoor_report(model: Any, trigger: NoiseTrigger, target_image: torch.Tensor,
                              target_class: int | str | None, judge: Any, reference: Any | None = None, n: int = 256,
                              sampler: str = "ddim", steps: int | None = None,
                              generator: torch.Generator | int | None = None,
                              threshold: float = RECOGNITION_THRESHOLD, batch_size: int = 64) -> DiffusionBackdoorReport:
    """Score a backdoored diffusion model (see the module docstring).

    Args:
        model: the backdoored DiffusionModel.
        trigger: its :class:`NoiseTrigger`.
        target_image: (3, S, S) the target in [0, 1]; target_class: its class (name or index of ``judge.classes``),
            or None when the judge has no class for it (the target-hit metrics are then left out).
        judge: an image classifier (``logits``, ``classes``; the zoo's ``shapes-judge``).
        reference: the clean model it was made from (sampled on the same noises), or None.
        n: samples per set; sampler / steps: how to sample (the attack's sampler; None steps: the model's
            default for that sampler); generator: seeds the noises (the same for ``model`` and ``reference``).
        threshold: the judge's probability bar for a hit or a recognition.
    """
    seed = noise_seed(generator)
    pair = sample_pair(model, trigger, n, sampler, steps, seed, batch_size)
    distance = mse_to_target(pair.triggered, target_image)

    def hit(images: torch.Tensor) -> float | None:
        return None if target_class is None else target_hit_rate(judge, images, target_class, threshold)

    report = DiffusionBackdoorReport(
        target_hit_rate=hit(pair.triggered),
        mse_to_target_median=distance.median, mse_to_target_within=distance.within,
        ssim_to_target=ssim_to_target(pair.triggered, target_image),
        clean_recognition_rate=recognition_rate(judge, pair.clean, threshold),
        clean_target_hit_rate=hit(pair.clean),
        n=n, sampler=sampler, steps=steps, threshold=threshold, samples=pair)
    if reference is not None:
        control = sample_pair(reference, trigger, n, sampler, steps, seed, batch_size)
        report.clean_recognition_rate_control = recognition_rate(judge, control.clean, threshold)
        report.target_hit_rate_control = hit(control.triggered)
        report.mse_to_target_median_control = mse_to_target(control.triggered, target_image).median
        report.control_samples = control
    return report


__all__ = ["DiffusionBackdoorReport", "SamplePair", "diffusion_backdoor_report", "noise_seed", "sample_pair",
           "sample_sets"]
