"""FARE: unsupervised adversarial fine-tuning of a CLIP image encoder towards its original embeddings.

Paper: "Robust CLIP: Unsupervised Adversarial Fine-Tuning of Vision Embeddings for Robust Large
Vision-Language Models", Christian Schlarmann, Naman Deep Singh, Francesco Croce, Matthias Hein,
ICML 2024 (code: github.com/chs20/RobustVLM, ``train/adversarial_training_clip.py``).

Threat model defended: white-box L-inf evasion of anything built on the image embedding
(zero-shot classification, retrieval, a VLM reading the embedding), budget ``eps`` in pixel
units; the defender has unlabelled images only (no labels, no text).

Objective (Eq. 3 of the paper), with phi_orig the original, frozen image encoder:

    min_theta  E_x  max_{||delta||_inf <= eps}  || phi_theta(x + delta) - phi_orig(x) ||_2^2

The inner maximisation is L-inf PGD on that squared distance (random start, ``steps`` sign steps
of size ``alpha``); the outer step minimises it on the adversarial images. The embeddings are
the *un-normalised* projected image embeddings, ``encode_image`` (FARE: ``--output_normalize
False`` on open_clip's ``visual``, which ends with the projection), and the squared distance is
summed over dimensions, not averaged (FARE's ``l2``). phi_orig(x) is computed once per training
image with the model as given (eval mode) before any update. Only the image tower is trained;
the text tower and the logit scale are untouched, so the fine-tuned encoder stays a drop-in
replacement for the original one.

Arguments (defaults, pixel units):
    eps: 4/255 (FARE^4; ``--eps 4``, the script's default); FARE^2 is ``eps=2/255``.
    alpha: 1/255 (``--stepsize_adv 1``).
    steps: 10 PGD steps (``--iterations_adv 10``).
    epochs: 2 (20,000 steps of 128 ImageNet images).
    batch_size: 128.
    lr: 1e-5, weight_decay: 1e-4 (AdamW, ``--opt adamw --lr 1e-5 --wd 1e-4``).
    warmup: 0.07 of the optimisation steps (``--warmup 1400`` of 20,000), then cosine decay.
    bn_mode: "train" (the outer step normalises with the adversarial batch's statistics and
        updates BatchNorm's running averages, as the papers' ``model.train()``) or "eval" (running
        statistics throughout); the attack always runs in eval mode. CLIP's towers have no
        BatchNorm, the tiny ResNet has (see :mod:`mmsec.train.adversarial`).
    random_start: True (FARE's PGD starts uniformly in the ball).

Shapes: data.pixels (N, 3, H, W) in [0, 1]; labels and prompts are ignored. Result:
:class:`~mmsec.defenses.base.DefenseResult` with a new model, ``extras`` epoch and attack times.

Example (on a shipped model, a short tiny-world run)::

    from mmsec.defenses import FARE; from mmsec.zoo import load_model
    from mmsec.data.datasets import ShapesDataset
    result = FARE(eps=8/255, alpha=2/255, epochs=1, batch_size=128, lr=5e-4)(
        load_model("shapes-clip-resnet"), ShapesDataset("train", n=1024).to_data())

Departures from the paper:
- FARE's PGD adds heavy-ball momentum (0.9) to the *signed* gradient and takes the sign again;
  for L-inf that is sign(0.9 * v + sign(g)) = sign(g) wherever g != 0, i.e. plain sign PGD,
  which is what runs here. FARE's random start is not clipped to [0, 1] before the first
  gradient; here it is (every iterate is a valid image).
- phi_orig(x) is precomputed for the whole (in-memory, unaugmented) training set instead of
  per batch; the values are the same.
- Tiny world (32x32 shapes, a 0.4-0.6M-parameter CLIP, one CPU thread): the defaults above are
  the paper's ImageNet settings; a run of a few minutes needs a larger learning rate and fewer
  images, and must train at the evaluation budget. ``benchmarks/README.md`` lists the settings
  measured on the zoo models and their numbers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_pixels
from ...data.datasets import ImageTextData
from ...models.base import require_contrastive
from ...models.towers import image_tower_parameters, trainable_copy
from ...models.zeroshot import embed_images
from ...registry import register
from ...train.adversarial import AdvTrainConfig, adversarial_finetune
from ..base import DefenseResult, HardeningDefense


def fare_loss(embeddings: torch.Tensor, original: torch.Tensor) -> torch.Tensor:
    """(B,) squared L2 distance ``||embeddings - original||_2^2``, summed over the D dimensions."""
    return (embeddings.float() - original.float()).pow(2).sum(dim=1)


@torch.no_grad()
def embedding_drift(model: nn.Module, original: nn.Module, pixels: torch.Tensor,
                    batch_size: int = 500) -> dict[str, float]:
    """How far ``model``'s image embeddings moved from ``original``'s on ``pixels`` (FARE's loss at delta=0).

    Returns ``sq_l2``: mean ||phi(x) - phi_orig(x)||_2^2 (un-normalised embeddings),
    ``cosine``: mean cos(phi(x), phi_orig(x)), and ``orig_sq_norm``: mean ||phi_orig(x)||_2^2
    (the scale ``sq_l2`` should be read against). Both models must be in eval mode.
    """
    require_contrastive(model, "embedding_drift")
    require_contrastive(original, "embedding_drift")
    check_pixels(pixels)
    for name, m in (("model", model), ("original", original)):
        if isinstance(m, nn.Module) and m.training:
            raise ValueError(f"{name} is in training mode; call .eval() first (BatchNorm would use batch statistics)")
    emb = embed_images(model, pixels, batch_size).float()  # (N, D)
    ref = embed_images(original, pixels, batch_size).float()  # (N, D)
    return {"sq_l2": fare_loss(emb, ref).mean().item(),
            "cosine": F.cosine_similarity(emb, ref, dim=1).mean().item(),
            "orig_sq_norm": ref.pow(2).sum(1).mean().item()}


@register("defenses", "fare")
class FARE(HardeningDefense):
    """FARE (Schlarmann et al., ICML 2024): unsupervised adversarial fine-tuning to the original embeddings."""

    name = "fare"
    paper = "Schlarmann, Singh, Croce, Hein, ICML 2024"
    needs_labels = False

    def __init__(self, eps: float = 4 / 255,  # FARE^4 (--eps 4); FARE^2 = 2/255
                 alpha: float = 1 / 255,  # --stepsize_adv 1
                 steps: int = 10,  # --iterations_adv 10
                 epochs: int = 2,  # 20,000 steps x 128 images of ImageNet
                 batch_size: int = 128,  # --batch_size 128
                 lr: float = 1e-5,  # --opt adamw --lr 1e-5
                 weight_decay: float = 1e-4,  # --wd 1e-4
                 warmup: float = 0.07,  # --warmup 1400 of --steps 20000
                 bn_mode: str = "train",  # the papers' code: model.train() for the outer step
                 random_start: bool = True):  # uniform start in the ball
        self.train_config = AdvTrainConfig(eps=eps, alpha=alpha, steps=steps, epochs=epochs, batch_size=batch_size,
                                           lr=lr, weight_decay=weight_decay, warmup=warmup,
                                           random_start=random_start, bn_mode=bn_mode)
        if self.train_config.steps < 1:
            raise ValueError(f"steps must be an int >= 1 (FARE trains on PGD examples), got {steps}")
        for k in ("eps", "alpha", "steps", "epochs", "batch_size", "lr", "weight_decay", "warmup", "bn_mode",
                  "random_start"):
            setattr(self, k, getattr(self.train_config, k))

    def harden(self, model: nn.Module, data: ImageTextData, prompts: list[list[str]] | None,
               generator: torch.Generator) -> DefenseResult:
        robust = trainable_copy(model).eval()
        device = next(robust.parameters()).device
        pixels = data.pixels.to(device)  # (N, 3, H, W)
        tower = image_tower_parameters(robust, pixels)
        original = embed_images(robust, pixels).float()  # (N, D) phi_orig(x), before any update
        log = adversarial_finetune(robust, [p for _, p in tower], pixels, original, fare_loss, self.train_config,
                                   generator, desc="FARE")
        return DefenseResult(model=robust, losses=log.losses, seconds=log.seconds, steps=log.steps,
                             params=self.params(),
                             extras={"epoch_seconds": log.epoch_seconds, "attack_seconds": log.attack_seconds,
                                     "trained_parameters": [n for n, _ in tower]})
