"""InverTune, step 2: dual-space inversion of the trigger towards the identified target.

Paper: Sun, Li, Liu, Du, Ge, "InverTune: Removing Backdoors from Multimodal Contrastive Learning
Models via Trigger Inversion and Activation Tuning", arXiv 2506.12411, 2025 (code:
github.com/Goodman-liyu/InverTune, ``models/inversion.py``, ``TriggerInversion.py``,
``config/config.yaml``). The whole defense is :mod:`mmsec.defenses.backdoor.invertune`.

The trigger is a mask-pattern pair ``(m, t)``, both (3, H, W) in [0, 1], stamped as
``x' = m * t + (1 - m) * x``. With the target ``y*`` from step 1, it is optimised on batches of
the defender's clean non-target images to minimise::

    L = w_align * L_align + w_emb * L_emb + w_sim * L_sim + w_mask * L_mask
    L_align = CE( cos(f(x'), T) / tau , y* )          cross-modal: x' is classified as the target text
    L_emb   = || f^(x') - f^(x_target) ||_F            image space: x' embeds like target-class images
    L_sim   = 1 - SSIM(x', x)                          the triggered image still looks like x
    L_mask  = || m ||_1                                 a small trigger

with ``f^`` the L2-normalised image embedding, ``T`` the (C, D) class text embeddings (prompt
ensembles), ``tau = 0.07`` and ``f^(x_target)`` the embedding of one target-class image broadcast
over the batch (the code's ``target_features[0]`` when the batch sizes differ).

Defaults (the code's ``config.yaml``): ``w_align = 5`` (``infonce_weight``), ``w_emb = 0.5``,
``w_sim = 1``, ``w_mask = 0.01``; Adam lr 0.01 on ``m`` and ``t`` together, one step per batch of
64, 10 epochs (over the paper's 50,000 images: ~7,800 steps); ``m`` starts at ones and ``t``
uniform; both clamped to the valid range after every step; SSIM with an 11-px Gaussian window (sigma 1.5), ``pytorch_msssim``'s.

Departures: images are in pixel units (the code works on normalised images; a mask blend commutes
with the per-channel normalisation, so only the SSIM's input scale differs). The target-class
reference images are the defender's clean images the model itself classifies as ``y*`` (the
code reads a labelled target-class folder; the defender has no labels); with none, ``L_emb``
pulls towards the target's text embedding instead. ``||m||_1`` is summed over a 3 x 32 x 32 mask
here (3 x 224 x 224 in the code): the same weight per pixel, so the same trade-off per unit of
trigger area. The length is a number of steps (default 800) rather than epochs: 10 epochs of a
1,024-image set are 160 steps, too few for the mask (initially all ones) to shrink to a trigger
(measured on a BadEncoder tower: mask mean 0.31 after 160 steps, 0.025 after 640).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-x ** 2 / (2 * sigma ** 2))
    return g / g.sum()  # (size,)


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5) -> torch.Tensor:
    """Mean SSIM of two (B, C, H, W) batches (Wang et al. 2004; Gaussian window, valid convolution)."""
    c = a.shape[1]
    win = min(window, a.shape[-1], a.shape[-2])
    g = _gaussian_window(win, sigma).to(a)
    gx, gy = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1), g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(x: torch.Tensor) -> torch.Tensor:  # separable Gaussian filter, per channel
        return F.conv2d(F.conv2d(x, gx, groups=c), gy, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return s.mean()


def stamp(pixels: torch.Tensor, mask: torch.Tensor, pattern: torch.Tensor) -> torch.Tensor:
    """``m * t + (1 - m) * x`` for every image of ``pixels`` (B, 3, H, W)."""
    return mask * pattern + (1 - mask) * pixels


@dataclass
class InvertedTrigger:
    """The inverted mask and pattern, (3, H, W) each in [0, 1], and the loss terms per step (steps, 5):
    total, align, emb, sim, mask."""

    mask: torch.Tensor
    pattern: torch.Tensor
    losses: torch.Tensor

    def apply(self, pixels: torch.Tensor) -> torch.Tensor:
        return stamp(pixels, self.mask, self.pattern).clamp(0, 1)


LOSS_COLUMNS = ("total", "align", "emb", "sim", "mask")


def invert_trigger(model: nn.Module, pixels: torch.Tensor, class_emb: torch.Tensor, target: int,
                   target_emb: torch.Tensor, *, steps: int = 800, batch_size: int = 64, lr: float = 0.01,
                   w_align: float = 5.0, w_emb: float = 0.5, w_sim: float = 1.0, w_mask: float = 0.01,
                   temperature: float = 0.07, generator: torch.Generator | None = None) -> InvertedTrigger:
    """Optimise ``(m, t)`` for ``steps`` Adam steps on batches of the clean non-target images ``pixels``
    (N, 3, H, W), a fresh permutation per pass (see the module docstring).

    ``class_emb`` (C, D) are the normalised class text embeddings, ``target_emb`` the (D,) normalised
    reference embedding of the target (a target-class image's, or its text's). The model is frozen.
    """
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    n, shape = pixels.shape[0], tuple(pixels.shape[1:])
    mask = torch.ones(shape).requires_grad_(True)  # the code's initial mask: all ones
    pattern = torch.rand(shape, generator=gen).requires_grad_(True)
    opt = torch.optim.Adam([mask, pattern], lr=lr)
    rows: list[list[float]] = []
    while len(rows) < steps:
        perm = torch.randperm(n, generator=gen)
        for s in range(0, n, batch_size):
            if len(rows) >= steps:
                break
            if n - s < batch_size and s > 0:
                continue  # the code skips the last incomplete batch
            x = pixels[perm[s:s + batch_size]]  # (B, 3, H, W)
            xt = stamp(x, mask, pattern)
            emb = F.normalize(model.encode_image(xt).float(), dim=-1)  # (B, D)
            labels = torch.full((x.shape[0],), target, dtype=torch.long)
            align = F.cross_entropy(emb @ class_emb.T / temperature, labels)
            emb_loss = torch.linalg.norm(emb - target_emb[None])  # Frobenius over the batch, as the code
            sim = 1 - ssim(xt, x)
            sparsity = mask.abs().sum()
            loss = w_align * align + w_emb * emb_loss + w_sim * sim + w_mask * sparsity
            # grads of the trigger only: the (frozen) model's parameters never receive a .grad
            mask.grad, pattern.grad = torch.autograd.grad(loss, [mask, pattern])
            opt.step()
            with torch.no_grad():
                mask.clamp_(0, 1)
                pattern.clamp_(0, 1)
            rows.append([loss.item(), align.item(), emb_loss.item(), sim.item(), sparsity.item()])
    return InvertedTrigger(mask.detach().clone(), pattern.detach().clone(), torch.tensor(rows))


__all__ = ["InvertedTrigger", "LOSS_COLUMNS", "invert_trigger", "ssim", "stamp"]
