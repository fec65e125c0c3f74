"""SimCLR: image-only contrastive pre-training of the zoo's tiny image towers.

Ting Chen, Simon Kornblith, Mohammad Norouzi, Geoffrey Hinton, "A Simple Framework for Contrastive
Learning of Visual Representations", ICML 2020.

Objective in words: two random augmentations of each image in a batch of ``B`` are encoded
(``h = f(x)``, the representation kept for downstream use) and projected by a small MLP head
(``z = g(h)``); the NT-Xent loss makes each view pick its partner among the other ``2B - 1`` views::

    l(i, j) = -log  exp(cos(z_i, z_j) / tau) / sum_{k != i} exp(cos(z_i, z_k) / tau)

averaged over all ``2B`` ordered positive pairs. Victims of a data-poisoning attack on contrastive
learning (CorruptEncoder) train exactly this; defenses that add a unimodal self-supervised term
(CleanCLIP) reuse :func:`nt_xent` and :func:`augment`.

Building blocks (all take an explicit ``torch.Generator``; none mutates its inputs):

* :func:`nt_xent` -- the loss on two (B, D) projections;
* :func:`crop_boxes` / :func:`resized_crops` / :func:`augment` -- the augmentation, batched:
  random resized crop (area fraction ``scale``, aspect ratio ``ratio``, torchvision's sampling
  with 10 tries then a centre crop), horizontal flip, hue-preserving colour jitter.
  Images may have different sizes (a poisoned set usually does): :func:`augment` takes a list;
* :class:`ImageEncoder` -- an image tower of the zoo (:class:`~mmsec.models.tiny_clip.ResNetTower`
  or ``ViTTower``) with its pixel normalisation inside, so ``encode_image(pixels in [0, 1])``
  works with the project's probes (:func:`mmsec.evaluation.downstream.fit_linear_probe`);
* :class:`ProjectionHead`, :class:`SimCLRConfig`, :func:`train_simclr` -- the training loop.

Paper defaults and where this departs (CPU scale, shapes world):

* Temperature 0.5 (the paper's CIFAR-10 setting; 0.1 for ImageNet at batch 4096) -- kept.
* Projection head: 2-layer MLP (Linear, ReLU, Linear), hidden width = representation width, output
  128 -- here output = the tower's embedding width (64 for the zoo): the zoo's representation is
  64-d, a wider head output adds nothing at this size.
* Crop: random resized crop, area (0.08, 1), ratio (3/4, 4/3), flip 0.5 -- kept, output at the
  encoder's image size (32 px), bilinear. The paper's crop is torchvision's; this one samples the
  same boxes but resamples with ``grid_sample`` (bilinear, no antialiasing when shrinking).
* Colour distortion: the paper's strongest single augmentation (jitter of brightness, contrast,
  saturation 0.8s, hue 0.2s with probability 0.8; grayscale with probability 0.2; s = 0.5 for
  CIFAR). In the shapes world the class *is* shape x colour, so hue jitter and grayscale would make
  two views of one image differ in class; they are dropped. Brightness, contrast and saturation
  jitter (0.8 s = 0.4 each, probability 0.8, applied in that fixed order) keep every pixel's hue and
  stop the encoder from matching views by the background's grey level and faint tint alone, so they
  are kept. Gaussian blur is ImageNet-only in the paper (not used for CIFAR), so not used.
* Optimiser: the paper uses LARS at batch 4096 (lr 4.8), 100-1000 epochs. Here AdamW (lr 1e-3,
  weight decay 1e-6, the paper's decay value), linear warm-up then cosine decay, batch 256, a few
  thousand steps: LARS exists for huge batches, which one CPU core cannot run.
* Batch norm: the paper synchronises BN over devices ("global BN"); on one device both views
  pass through the tower together in one (2B) batch, which is the single-device equivalent.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_pixels
from ..models.tiny_clip import ResNetTower, TinyCLIP, TinyCLIPConfig, ViTTower
from ..progress import progress_bar
from .contrastive import cosine_lr

Images = torch.Tensor | Sequence[torch.Tensor]  # (N, 3, H, W), or N tensors (3, H_i, W_i)


# ------------------------------------------------------------------------------------------
# The loss
# ------------------------------------------------------------------------------------------
def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent (normalised temperature-scaled cross entropy) of two (B, D) batches of projections.

    Row ``i`` of ``z1`` and row ``i`` of ``z2`` are the two views of one image; every other view in
    the ``2B`` is a negative. Returns the mean over the ``2B`` anchors (a scalar).
    """
    if z1.ndim != 2 or z1.shape != z2.shape:
        raise ValueError(f"z1 and z2 must be two (B, D) tensors of the same shape, got {tuple(z1.shape)} "
                         f"and {tuple(z2.shape)}")
    if z1.shape[0] < 2:
        raise ValueError(f"NT-Xent needs a batch of at least 2 images (negatives), got B = {z1.shape[0]}")
    if not (isinstance(temperature, (int, float)) and temperature > 0):
        raise ValueError(f"temperature must be a number > 0 (the paper: 0.5 for CIFAR-10), got {temperature!r}")
    b = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]), dim=-1)  # (2B, D)
    logits = z @ z.T / temperature  # (2B, 2B)
    logits = logits.masked_fill(torch.eye(2 * b, dtype=torch.bool, device=z.device), float("-inf"))  # no self-pair
    partner = torch.cat([torch.arange(b, 2 * b), torch.arange(0, b)]).to(z.device)  # (2B,)
    return F.cross_entropy(logits, partner)


# ------------------------------------------------------------------------------------------
# The augmentation
# ------------------------------------------------------------------------------------------
def _check_range(name: str, value: tuple[float, float], low: float, high: float) -> tuple[float, float]:
    if (not isinstance(value, (tuple, list)) or len(value) != 2
            or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in value)
            or not low <= value[0] <= value[1] <= high):
        raise ValueError(f"{name} must be a pair (lo, hi) with {low} <= lo <= hi <= {high}, got {value!r}")
    return float(value[0]), float(value[1])


def crop_boxes(n: int, height: int, width: int, generator: torch.Generator, scale: tuple[float, float] = (0.08, 1.0),
               ratio: tuple[float, float] = (3 / 4, 4 / 3), tries: int = 10) -> torch.Tensor:
    """(n, 4) crop boxes ``(y0, x0, h, w)`` in pixels (floats) on an ``height x width`` image.

    torchvision's RandomResizedCrop sampling: area fraction uniform in ``scale``, log-aspect uniform
    in ``log(ratio)``; the first of ``tries`` draws that fits is used, else a centre crop of the
    whole image with the aspect clamped to ``ratio``. Box sides are whole pixels, as torchvision's.
    """
    scale, ratio = _check_range("scale", scale, 0.0, 1.0), _check_range("ratio", ratio, 1e-3, 1e3)
    area = height * width
    a = area * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, generator=generator))  # (n, T)
    log_r = math.log(ratio[0]) + (math.log(ratio[1]) - math.log(ratio[0])) * torch.rand(n, tries, generator=generator)
    r = log_r.exp()
    w = torch.round(torch.sqrt(a * r))  # (n, T)
    h = torch.round(torch.sqrt(a / r))
    ok = (w > 0) & (h > 0) & (w <= width) & (h <= height)  # (n, T)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1))  # (n,)
    # Fallback: the whole image, aspect clamped to ratio (torchvision's centre crop).
    in_ratio = width / height
    fw, fh = (float(width), float(height))
    if in_ratio < ratio[0]:
        fw, fh = float(width), float(round(width / ratio[0]))
    elif in_ratio > ratio[1]:
        fw, fh = float(round(height * ratio[1])), float(height)
    idx = first.clamp(min=0)[:, None]
    hh = torch.where(first >= 0, h.gather(1, idx)[:, 0], torch.tensor(fh))  # (n,)
    ww = torch.where(first >= 0, w.gather(1, idx)[:, 0], torch.tensor(fw))
    y0 = torch.floor(torch.rand(n, generator=generator) * (height - hh + 1))  # uniform integer offsets
    x0 = torch.floor(torch.rand(n, generator=generator) * (width - ww + 1))
    centre = first < 0
    y0 = torch.where(centre, torch.floor((height - hh) / 2), y0)
    x0 = torch.where(centre, torch.floor((width - ww) / 2), x0)
    return torch.stack([y0, x0, hh, ww], dim=1)


def resized_crops(pixels: torch.Tensor, boxes: torch.Tensor, size: int, flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop ``boxes`` (B, 4) ``(y0, x0, h, w)`` out of ``pixels`` (B, 3, H, W), resized to (B, 3, size, size).

    Bilinear resampling with ``grid_sample`` (one batched call); ``flip`` (B,) bool mirrors a crop.
    """
    b, _, height, width = pixels.shape
    boxes = boxes.to(pixels.dtype)
    y0, x0, h, w = boxes.unbind(1)  # (B,) each
    # Normalised [-1, 1] coordinates of the output pixel centres inside each box (align_corners=False).
    t = (torch.arange(size, dtype=pixels.dtype) + 0.5) / size  # (S,)
    xs = (x0[:, None] + t[None] * w[:, None]) / width * 2 - 1  # (B, S)
    ys = (y0[:, None] + t[None] * h[:, None]) / height * 2 - 1  # (B, S)
    if flip is not None:
        xs = torch.where(flip[:, None], xs.flip(1), xs)
    grid = torch.stack([xs[:, None, :].expand(b, size, size), ys[:, :, None].expand(b, size, size)], dim=-1)
    return F.grid_sample(pixels, grid.to(pixels.device), mode="bilinear", padding_mode="border", align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]  # (B, 1, H, W), ITU-R 601 luma


def color_jitter(pixels: torch.Tensor, generator: torch.Generator, brightness: float = 0.4, contrast: float = 0.4,
                 saturation: float = 0.4, p: float = 0.8) -> torch.Tensor:
    """Hue-preserving colour jitter of (B, 3, H, W) pixels, with probability ``p`` per image: brightness
    (every channel times a factor in [1-b, 1+b]), contrast (blend with the image's mean grey) and
    saturation (blend with each pixel's grey), in that order (torchvision draws a random order; the
    paper's hue jitter and random grayscale are left out: they change shapes-world classes)."""
    b = pixels.shape[0]
    apply = torch.rand(b, generator=generator) < p  # (B,)

    def factor(strength: float) -> torch.Tensor:
        f = 1 + strength * (2 * torch.rand(b, generator=generator) - 1)
        return torch.where(apply, f, torch.ones(b)).to(pixels)[:, None, None, None]  # (B, 1, 1, 1)

    fb, fc, fs = factor(brightness), factor(contrast), factor(saturation)
    x = (pixels * fb).clamp(0, 1)
    x = (fc * x + (1 - fc) * _grey(x).mean(dim=(2, 3), keepdim=True)).clamp(0, 1)
    return (fs * x + (1 - fs) * _grey(x)).clamp(0, 1)


@dataclass
class AugmentConfig:
    """SimCLR's augmentation as used here (see the module docstring for departures)."""

    size: int = 32  # output side (the encoder's image size)
    scale: tuple[float, float] = (0.08, 1.0)  # paper: RandomResizedCrop area range
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # paper: aspect-ratio range
    flip: float = 0.5  # paper: horizontal flip probability
    brightness: float = 0.4  # paper: 0.8 * s with s = 0.5 (CIFAR)
    contrast: float = 0.4  # paper: 0.8 * s with s = 0.5 (CIFAR)
    saturation: float = 0.4  # paper: 0.8 * s with s = 0.5 (CIFAR)
    jitter_p: float = 0.8  # paper: colour jitter probability


def augment(images: Images, generator: torch.Generator, cfg: AugmentConfig | None = None) -> torch.Tensor:
    """One random view of each image: (N, 3, size, size). ``images`` is (N, 3, H, W) or a list of
    (3, H_i, W_i) tensors of any sizes (grouped by size, so each size is one batched crop)."""
    cfg = cfg or AugmentConfig()
    if isinstance(images, torch.Tensor):
        check_pixels(images, "images")
        groups = {tuple(images.shape[-2:]): (torch.arange(images.shape[0]), images)}
        n = images.shape[0]
    else:
        n = len(images)
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(images):
            if not isinstance(im, torch.Tensor) or im.ndim != 3 or im.shape[0] != 3:
                raise ValueError(f"images[{i}] must be a (3, H, W) tensor, got "
                                 f"{tuple(im.shape) if isinstance(im, torch.Tensor) else type(im).__name__}")
            by_size.setdefault(tuple(im.shape[-2:]), []).append(i)
        groups = {hw: (torch.tensor(ix), torch.stack([images[i] for i in ix])) for hw, ix in by_size.items()}
    if n == 0:
        raise ValueError("images is empty")
    out = torch.empty(n, 3, cfg.size, cfg.size)
    for (height, width), (ix, pix) in sorted(groups.items()):
        boxes = crop_boxes(len(ix), height, width, generator, cfg.scale, cfg.ratio)
        flip = torch.rand(len(ix), generator=generator) < cfg.flip
        out[ix] = resized_crops(pix.float(), boxes, cfg.size, flip)
    return color_jitter(out, generator, cfg.brightness, cfg.contrast, cfg.saturation, cfg.jitter_p)


# ------------------------------------------------------------------------------------------
# Encoder, head, training
# ------------------------------------------------------------------------------------------
class ImageEncoder(nn.Module):
    """A zoo image tower with its pixel normalisation: ``encode_image(pixels in [0, 1]) -> (B, D)``."""

    def __init__(self, cfg: TinyCLIPConfig):
        super().__init__()
        towers = {"resnet": ResNetTower, "vit": ViTTower}
        if cfg.image_tower not in towers:
            raise ValueError(f"image_tower must be one of {sorted(towers)}, got {cfg.image_tower!r}")
        self.config = cfg
        self.image_size = cfg.image_size
        self.embed_dim = cfg.embed_dim
        self.visual = towers[cfg.image_tower](cfg)
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_recipe(cls, name: str = "shapes-clip-resnet", seed: int | None = None) -> ImageEncoder:
        """A freshly initialised encoder with the image tower of zoo recipe ``name`` (seeded: the
        recipe's seed unless ``seed`` is given)."""
        from ..zoo import load_recipe

        recipe = load_recipe(name)
        known = set(TinyCLIPConfig.__dataclass_fields__)
        cfg = TinyCLIPConfig.from_dict({k: v for k, v in recipe["model"].items() if k in known})
        torch.manual_seed(recipe.get("seed", 0) if seed is None else seed)
        return cls(cfg)

    normalize = TinyCLIP.normalize  # the same resize and normalisation as the CLIP the tower comes from

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(self.normalize(pixels))

    forward = encode_image


class ProjectionHead(nn.Module):
    """SimCLR's g(.): Linear, ReLU, Linear (hidden width = input width)."""

    def __init__(self, dim: int, out_dim: int | None = None):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, out_dim or dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


@dataclass
class SimCLRConfig:
    steps: int = 2000  # CPU scale (paper: 100-1000 epochs)
    batch_size: int = 256  # paper: 256-8192 (4096 default)
    lr: float = 1e-3  # AdamW (paper: LARS, 0.3 x B / 256)
    weight_decay: float = 1e-6  # paper's value
    warmup: int = 100  # paper: 10 epochs of linear warm-up, then cosine decay
    temperature: float = 0.5  # paper: 0.5 for CIFAR-10
    grad_clip: float = 1.0  # a guard, not in the paper
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if name == "batch_size" else 1):
                raise ValueError(f"SimCLRConfig.{name} must be an int >= {2 if name == 'batch_size' else 1}, got {v!r}")
        for name in ("lr", "temperature"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"SimCLRConfig.{name} must be a finite number > 0, got {v!r}")


@dataclass
class SimCLRResult:
    encoder: ImageEncoder  # the trained copy (the input encoder is untouched)
    head: ProjectionHead
    losses: list[float]
    seconds: float
    epochs: float  # images seen / data set size


def train_simclr(encoder: ImageEncoder, images: Images, cfg: SimCLRConfig | None = None,
                 generator: torch.Generator | int | None = None, desc: str = "SimCLR",
                 quiet: bool = True) -> SimCLRResult:
    """Pre-train a copy of ``encoder`` with SimCLR on the unlabelled ``images`` (a tensor or a list
    of differently sized images). Batches are drawn without replacement, reshuffled every epoch."""
    cfg = cfg or SimCLRConfig()
    if not isinstance(encoder, ImageEncoder):
        raise TypeError(f"encoder must be an ImageEncoder (e.g. ImageEncoder.from_recipe()), got {type(encoder).__name__}")
    gen = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(generator or 0)
    n = images.shape[0] if isinstance(images, torch.Tensor) else len(images)
    if n < cfg.batch_size:
        raise ValueError(f"images has {n} images, fewer than batch_size {cfg.batch_size}")
    model = copy.deepcopy(encoder)
    head = ProjectionHead(model.embed_dim)
    params = list(model.parameters()) + list(head.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr)
    losses: list[float] = []
    order, pos = torch.randperm(n, generator=gen), 0
    start = time.perf_counter()
    model.train()
    head.train()
    with progress_bar(cfg.steps, desc, quiet=quiet) as bar:
        for step in range(cfg.steps):
            if pos + cfg.batch_size > n:  # a new epoch: reshuffle (the incomplete tail is dropped)
                order, pos = torch.randperm(n, generator=gen), 0
            idx = order[pos:pos + cfg.batch_size]
            pos += cfg.batch_size
            batch = images[idx] if isinstance(images, torch.Tensor) else [images[i] for i in idx.tolist()]
            v1, v2 = augment(batch, gen, cfg.augment), augment(batch, gen, cfg.augment)  # (B, 3, S, S) each
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
            z = head(model.encode_image(torch.cat([v1, v2])))  # (2B, D): both views in one BN batch
            loss = nt_xent(z[:cfg.batch_size], z[cfg.batch_size:], cfg.temperature)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"NT-Xent loss became {loss.item()} at step {step}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            opt.step()
            losses.append(loss.item())
            bar.advance(1, loss=f"{losses[-1]:.3f}")
    model.eval()
    head.eval()
    return SimCLRResult(model, head, losses, time.perf_counter() - start, cfg.steps * cfg.batch_size / n)
