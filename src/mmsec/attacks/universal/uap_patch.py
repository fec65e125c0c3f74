"""UAP patch: a universal patch optimised directly, the GAN-free baseline of AdvCLIP.

The classic universal adversarial perturbation recipe (one perturbation for all images,
optimised by mini-batch stochastic gradient on the surrogate data: Shafahi et al., "Universal
Adversarial Training", AAAI 2020; Brown et al.'s adversarial patch for the patch form) applied
to AdvCLIP's embedding-deviation objective, as AdvCLIP's code calls it ``opt_patch``: the patch
pixels themselves are the parameters, there is no generator, no discriminator and no
quality term.

Threat model: as :class:`~mmsec.attacks.universal.AdvCLIP` (white-box encoder, surrogate
image-caption pairs, downstream-agnostic, untargeted, one patch of the same size and placement).

Objective: maximise ``InfoNCE(f(x), f(x')) + beta * InfoNCE(f(x'), g(t))`` over mini-batches
(:func:`~mmsec.attacks.universal.advclip.embedding_deviation`, temperature 0.1, beta 5), plus,
with ``topology=True``, AdvCLIP's topology deviation weighted as there (``delta``, ``gamma``) --
off by default so that the baseline is "the same embedding deviation without the GAN".

Defaults: AdvCLIP's (patch 3% of the area at the fixed bottom-right place, batch 16, 20 epochs)
so the two spend the same number of victim gradient evaluations; the patch starts as uniform
noise and is updated by Adam (lr 0.01, pixel units) and clamped to [0, 1] after each step.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
from torch import nn

from ...checks import check_bool, check_budget, check_int, make_generator
from ...registry import register
from .advclip import (
    DEFAULT_FRACTION,
    PatchResult,
    _check_position,
    _prepare,
    apply_patch,
    embedding_deviation,
    topology_deviation,
)
from .base import UniversalAttack


@dataclass
class UAPPatchResult(PatchResult):
    """The optimised patch and its per-step objective ``loss`` (steps,) (the value maximised)."""

    loss: torch.Tensor = field(default_factory=lambda: torch.zeros(0))


@register("universal_attacks", "uap_patch")
class UAPPatch(UniversalAttack):
    """A universal patch optimised by mini-batch gradient ascent on AdvCLIP's embedding deviation.

    Args:
        fraction, position, epochs, batch_size, beta, gamma, delta, temperature, max_steps: as
            :class:`~mmsec.attacks.universal.AdvCLIP`.
        lr: Adam's step size in pixel units (0.01).
        topology: also maximise AdvCLIP's topology deviation (False).
    """

    name = "uap_patch"
    paper = "Shafahi et al., AAAI 2020 (universal perturbations); Brown et al., arXiv 2017 (patches)"
    threat_model = "white-box encoder, downstream-agnostic, universal patch"

    def __init__(self, fraction: float = DEFAULT_FRACTION, position: str | tuple[int, int] = "fixed",
                 epochs: int = 20, batch_size: int = 16, lr: float = 0.01, beta: float = 5.0,
                 topology: bool = False, gamma: float = 5.0, delta: float = 1.0, temperature: float = 0.1,
                 max_steps: int | None = None):
        self.fraction = check_budget("fraction", fraction, 1e-6, 1.0, hint=" (patch side / image side)")
        self.position = _check_position(position)
        self.epochs = check_int("epochs", epochs, 1)
        self.batch_size = check_int("batch_size", batch_size, 2)
        self.lr = check_budget("lr", lr, 0.0, math.inf, hint="")
        self.beta = check_budget("beta", beta, 0.0, math.inf, hint=" (a loss weight)")
        self.topology = check_bool("topology", topology)
        self.gamma = check_budget("gamma", gamma, 0.0, math.inf, hint=" (a loss weight)")
        self.delta = check_budget("delta", delta, 0.0, math.inf, hint=" (a loss weight)")
        self.temperature = check_budget("temperature", temperature, 1e-6, math.inf, hint="")
        self.max_steps = None if max_steps is None else check_int("max_steps", max_steps, 1)

    def params(self) -> dict:
        return {"fraction": self.fraction, "position": self.position, "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr, "beta": self.beta, "topology": self.topology,
                "gamma": self.gamma, "delta": self.delta, "temperature": self.temperature,
                "max_steps": self.max_steps}

    def __call__(self, model: nn.Module, data: object,
                 generator: torch.Generator | int | None = None) -> UAPPatchResult:
        gen = make_generator(generator)
        start = time.perf_counter()
        setup = _prepare("UAPPatch", model, data, self.fraction, self.position, self.batch_size, gen)
        S, side, clean_emb, batches = setup.pixels.shape[-1], setup.side, setup.clean_emb, setup.batches
        patch = torch.rand(3, side, side, generator=gen).requires_grad_(True)
        opt = torch.optim.Adam([patch], lr=self.lr)
        trace: list[float] = []
        step = 0
        for _ in range(self.epochs):
            for idx, x, text in batches():
                place_seed = int(torch.randint(0, 2 ** 62, (1,), generator=gen)) if self.position == "random" else None
                emb = model.encode_image(apply_patch(x, patch, self.position, place_seed)).float()
                objective = embedding_deviation(clean_emb[idx], emb, text, self.beta, self.temperature)
                if self.topology:
                    objective = objective + self.delta * topology_deviation(clean_emb[idx], emb, text, self.gamma)
                patch.grad, = torch.autograd.grad(-objective, [patch])
                opt.step()
                with torch.no_grad():
                    patch.clamp_(0, 1)
                trace.append(objective.item())
                step += 1
                if self.max_steps is not None and step >= self.max_steps:
                    break
            if self.max_steps is not None and step >= self.max_steps:
                break
        return UAPPatchResult(patch.detach().clone(), self.fraction, self.position, S, time.perf_counter() - start,
                              self.params(), loss=torch.tensor(trace))


__all__ = ["UAPPatch", "UAPPatchResult"]
