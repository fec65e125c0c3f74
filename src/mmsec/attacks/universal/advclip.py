"""AdvCLIP: a downstream-agnostic universal adversarial patch against a multimodal contrastive encoder.

Paper: Ziqi Zhou, Shengshan Hu, Minghui Li, Hangtao Zhang, Yechao Zhang, Hai Jin, "AdvCLIP:
Downstream-agnostic Adversarial Examples in Multimodal Contrastive Learning", ACM Multimedia 2023
(code: github.com/CGCL-codes/AdvCLIP, ``advclip.py``, ``utils/model.py`` (``Generator224``,
``Discriminator224``), ``utils/metrics.py`` (``umap``), ``utils/patch_utils.py``).

Threat model: white-box access to the victim's image and text encoders (a pre-trained CLIP that
downstream users build on), no knowledge of the pre-training data, the downstream data, the
downstream task or its head. The attacker has a surrogate set of image-text pairs and produces
*one* patch, learnt once, that is pasted on any image (untargeted): every downstream model that
inherits the encoder (a linear probe, a zero-shot classifier, a retrieval index, ...) should
fail on patched images.

Objective in words: a generator G maps a fixed batch of noise vectors to one patch; pasting it
on a surrogate batch must (1) move each patched image's embedding away from its own clean
embedding and from its caption's embedding, measured contrastively so that a patched image can
no longer be told apart from the *other* samples of the batch (InfoNCE, temperature 0.1,
maximised: the cross-modal "embedding deviation"); (2) destroy the batch's neighbourhood graph:
the row-normalised cosine-similarity graph among patched images must diverge from the graph of
the clean images and from the graph of their captions (the "topology deviation", the code's
``umap``: each row's similarities shifted so that the nearest neighbour scores 1, rescaled to
[0, 1], normalised to a distribution, compared with KL(P||Q) + KL(1-P||1-Q) summed over the
batch); (3) fool a discriminator D that tells clean images from patched ones (non-saturating GAN
loss, for a natural-looking patch); (4) keep the patched image close to the clean one (MSE, the
"quality" term). Generator loss, as in the code::

    L_G = L_GAN + alpha * L_adv + L_q + delta * L_topo
    L_adv  = -(InfoNCE(f(x), f(x')) + beta  * InfoNCE(f(x'), g(t)))
    L_topo = -(T(f(x), f(x'))       + gamma * T(f(x'), g(t)))

with f / g the image / text towers, x' the patched image, T the topology divergence
(:func:`topology_divergence`). D is trained with BCE (real: clean, fake: patched) and its weights
clipped to [-0.01, 0.01] after every step (the code's WGAN-style clip).

Defaults (the code's): patch area 3% of the image (``noise_percentage`` 0.03: side
``sqrt(0.03)`` = 0.173 of the image side, 38 px on 224), pasted at a fixed place in the bottom
right corner, 14/224 = 1/16 of the side from both edges; alpha 10, beta 5, gamma 5, delta 1,
quality and GAN weights 1, InfoNCE temperature 0.1; Adam lr 2e-4, betas (0.5, 0.999) for both
networks; batch 16; 20 epochs over the surrogate data; 100-dimensional fixed noise, one vector per
batch slot (16), mixed into one patch by a 3x3 convolution across the noise batch (the code's
"residual layer"); DCGAN blocks (transposed conv 4x4 + BatchNorm + ReLU; conv 4x4 stride 2 +
BatchNorm + LeakyReLU 0.2, init N(0, 0.02)); the patch is clamped to the valid pixel range.

Departures and why:

* Sizes: the networks are scaled to the shapes world (32 px images, 6 px patch): G's widths are
  ``width * (2^(L-1) .. 1)`` (default width 32, the code 128 with 4 hidden layers) with as many
  up-sampling layers as the patch needs, and G emits the patch itself (resized to the exact
  side) instead of a full 224 px image of which the mask keeps the patch region (the rest never
  reaches any loss, so this is the same function class restricted to the pixels that matter).
  D has as many stride-2 layers as halve the image down to >= 4 px (the code: 4 layers to
  14 px) and a last conv covering what is left, as in the code.
* Patch side: ``round(fraction * S)`` (the code floors ``sqrt(0.03 * 224^2)`` to 38 px, 2.9% of
  the area); on the 32 px shapes world that is 6 px, 3.5% of the area (5 px would be 2.4%).
* Pixel space: patches live in [0, 1] pixels (the model normalises inside); G's tanh output is
  mapped by ``(r + 1) / 2`` and clamped to [0, 1] (the code clamps in normalised space to the
  range of valid pixels); the quality MSE is therefore in pixel units (the code's is in
  normalised units: a constant factor ~1/std^2 on a term that is ~1e-3 either way).
* The clean embeddings (image and text) are computed once (the victim is frozen and in eval
  mode, so this is the code's computation, cached). Surrogate images may carry several captions
  (the shapes world has six per scene); one is drawn per image and step from ``generator``.
* The last incomplete batch of an epoch is used when it has >= 2 samples (InfoNCE and the graph
  need negatives); the returned patch is G's output after the last update (the code saves the
  one of the last forward, before that update).
* ``position="random"`` trains a placement-invariant patch (a new place per image and step,
  Brown et al.'s expectation over placements) as an option; the default is the code's fixed one.

Shapes: surrogate ``pixels`` (N, 3, S, S) in [0, 1] with N captions (strings or lists of
strings); the patch is (3, h, h) with ``h = round(fraction * S)``; :func:`apply_patch` pastes it
on images of any size, rescaled to the same fraction of their side.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_budget, check_int, check_pixels, make_generator
from ...models.base import require_contrastive
from ...registry import register
from .base import UniversalAttack

POSITIONS = ("fixed", "random")
DEFAULT_FRACTION = math.sqrt(0.03)  # the code's noise_percentage 0.03 of the image area


# ------------------------------------------------------------------------------------------
# Patches: size, placement, pasting
# ------------------------------------------------------------------------------------------
def patch_side(fraction: float, image_side: int) -> int:
    """Side in pixels of a patch covering ``fraction`` of an image side of ``image_side`` pixels."""
    return max(1, min(image_side, round(fraction * image_side)))


def _check_position(position: object) -> str | tuple[int, int]:
    """A placement: one of :data:`POSITIONS` or a ``(y, x)`` pair of ints (a list, as a config holds it, too)."""
    if isinstance(position, str):
        if position not in POSITIONS:
            raise ValueError(f"position must be one of {POSITIONS} or a (y, x) pair of ints, got {position!r}")
        return position
    if (isinstance(position, (tuple, list)) and len(position) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in position)):
        return tuple(position)
    raise TypeError(f"position must be one of {POSITIONS} or a (y, x) pair of ints (top-left corner in pixels), "
                    f"got {position!r}")


def fixed_corner(image_hw: tuple[int, int], patch_hw: tuple[int, int]) -> tuple[int, int]:
    """The code's fixed place: bottom right, 1/16 of the side (14 px on 224) from both edges."""
    (H, W), (h, w) = image_hw, patch_hw
    return max(0, H - round(H / 16) - h), max(0, W - round(W / 16) - w)


def resize_patch(patch: torch.Tensor, fraction: float, image_hw: tuple[int, int]) -> torch.Tensor:
    """The patch resized to ``fraction`` of each image side (antialiased bilinear), in [0, 1]."""
    h, w = patch_side(fraction, image_hw[0]), patch_side(fraction, image_hw[1])
    if patch.shape[-2:] == (h, w):
        return patch
    out = F.interpolate(patch[None], size=(h, w), mode="bilinear", align_corners=False,
                        antialias=h < patch.shape[-2] or w < patch.shape[-1])[0]
    return out.clamp(0, 1)


def apply_patch(pixels: torch.Tensor, patch: torch.Tensor, position: str | tuple[int, int] = "fixed",
                generator: torch.Generator | int | None = None, fraction: float | None = None) -> torch.Tensor:
    """Paste ``patch`` on every image of ``pixels`` (differentiable in both).

    Args:
        pixels: (B, 3, H, W) images in [0, 1], any size.
        patch: (3, h, w) patch in [0, 1].
        position: ``"fixed"`` (the code's: bottom right, 1/16 of the side from the edges),
            ``"random"`` (a uniformly drawn place per image, from ``generator``) or a ``(y, x)``
            top-left corner in pixels.
        generator: the random placements' source (an int seeds a fresh one; ``None`` seed 0).
        fraction: if given, the patch is first resized to this fraction of the image side (so a
            patch made on 32 px images covers the same share of a 48 px one); ``None`` pastes it
            at its own pixel size.

    Returns: (B, 3, H, W) patched images in [0, 1]; the inputs are not modified.
    """
    check_pixels(pixels, "pixels")
    if not isinstance(patch, torch.Tensor) or patch.ndim != 3 or patch.shape[0] != 3:
        raise ValueError(f"patch must be a (3, h, w) tensor, got "
                         f"{tuple(patch.shape) if isinstance(patch, torch.Tensor) else type(patch).__name__}")
    if patch.numel() and (patch.min() < 0 or patch.max() > 1):
        raise ValueError(f"patch must lie in [0, 1], got range [{patch.min().item():.3f}, {patch.max().item():.3f}]")
    _check_position(position)
    H, W = pixels.shape[-2:]
    if fraction is not None:
        patch = resize_patch(patch, check_budget("fraction", fraction, 1e-6, 1.0, hint=""), (H, W))
    h, w = patch.shape[-2:]
    if h > H or w > W:
        raise ValueError(f"patch ({h}x{w}) is larger than the images ({H}x{W})")
    patch = patch.to(pixels.dtype)
    B = pixels.shape[0]
    if position == "random":
        g = make_generator(generator)
        ys = torch.randint(0, H - h + 1, (B,), generator=g).tolist()
        xs = torch.randint(0, W - w + 1, (B,), generator=g).tolist()
    else:
        y, x = fixed_corner((H, W), (h, w)) if position == "fixed" else position
        if not (0 <= y <= H - h and 0 <= x <= W - w):
            raise ValueError(f"position {position} puts the {h}x{w} patch outside the {H}x{W} images "
                             f"(top-left corner must lie in [0, {H - h}] x [0, {W - w}])")
        ys, xs = [y] * B, [x] * B
    out = pixels.clone()
    if position != "random":
        out[:, :, ys[0]:ys[0] + h, xs[0]:xs[0] + w] = patch
    else:
        for i, (y, x) in enumerate(zip(ys, xs, strict=True)):
            out[i, :, y:y + h, x:x + w] = patch
    return out


def random_patch(fraction: float, image_side: int, generator: torch.Generator | int | None = None) -> torch.Tensor:
    """The baseline patch: uniform noise in [0, 1] of the same size, (3, h, h)."""
    h = patch_side(check_budget("fraction", fraction, 1e-6, 1.0, hint=""), image_side)
    return torch.rand(3, h, h, generator=make_generator(generator))


# ------------------------------------------------------------------------------------------
# Losses
# ------------------------------------------------------------------------------------------
def info_nce(query: torch.Tensor, key: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """InfoNCE with in-batch negatives: row i of ``query`` should pick row i of ``key``. Scalar (mean)."""
    logits = F.normalize(query.float(), dim=-1) @ F.normalize(key.float(), dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(query.shape[0], device=query.device))


def _neighbourhood_graph(features: torch.Tensor) -> torch.Tensor:
    """Row-stochastic (n, n) graph: cosine similarities shifted so the nearest neighbour scores 1."""
    f = F.normalize(features.float(), dim=-1)
    n = f.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=f.device)
    dist = (1 - f @ f.T).masked_fill(eye, 3.0)  # 3 > any cosine distance: the diagonal is not a neighbour
    dist = (dist - dist.min(dim=1, keepdim=True).values).masked_fill(eye, 0.0)
    sim = (2 - dist) / 2  # (1 - dist + 1) / 2: in [0, 1]
    return sim / sim.sum(dim=1, keepdim=True)


def topology_divergence(model_features: torch.Tensor, target_features: torch.Tensor,
                        eps: float = 1e-7) -> torch.Tensor:
    """The code's ``umap``: KL(P||Q) + KL(1-P||1-Q), summed, between the neighbourhood graphs of
    ``target_features`` (P) and ``model_features`` (Q), both (n, D) with row-aligned samples."""
    q, p = _neighbourhood_graph(model_features), _neighbourhood_graph(target_features)

    def kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return (a * ((a + eps).log() - (b + eps).log())).sum()

    return kl(p, q) + kl(1 - p, 1 - q)


def embedding_deviation(clean: torch.Tensor, adv: torch.Tensor, text: torch.Tensor, beta: float,
                        temperature: float) -> torch.Tensor:
    """What the attack maximises: InfoNCE(clean image -> patched image) + beta * InfoNCE(patched image -> text)."""
    return info_nce(clean, adv, temperature) + beta * info_nce(adv, text, temperature)


def topology_deviation(clean: torch.Tensor, adv: torch.Tensor, text: torch.Tensor, gamma: float) -> torch.Tensor:
    """What the attack maximises: T(clean graph vs patched graph) + gamma * T(patched graph vs text graph)."""
    return topology_divergence(clean, adv) + gamma * topology_divergence(adv, text)


# ------------------------------------------------------------------------------------------
# Surrogate data
# ------------------------------------------------------------------------------------------
def surrogate_pairs(data: object) -> tuple[torch.Tensor, list[list[str]]]:
    """(pixels, per-image caption lists) from an ``ImageTextData`` or a ``(pixels, captions)`` pair."""
    if isinstance(data, tuple) and len(data) == 2:
        pixels, captions = data
    elif hasattr(data, "pixels") and hasattr(data, "captions"):
        pixels, captions = data.pixels, data.captions
    else:
        raise TypeError(f"data must be an ImageTextData (e.g. ShapesDataset(...).to_data()) or a (pixels, captions) "
                        f"pair, got {type(data).__name__}")
    check_pixels(pixels, "data pixels")
    if captions is None:
        raise ValueError("data has no captions: AdvCLIP needs image-text pairs (the text embedding is a term of "
                         "its loss)")
    captions = [[c] if isinstance(c, str) else list(c) for c in captions]
    if len(captions) != pixels.shape[0]:
        raise ValueError(f"captions must be row-aligned with pixels: {len(captions)} caption entries for "
                         f"{pixels.shape[0]} images")
    if any(not c for c in captions):
        raise ValueError("every image needs at least one caption")
    if pixels.shape[0] < 2:
        raise ValueError(f"need at least 2 surrogate pairs (the losses contrast samples of a batch), got "
                         f"{pixels.shape[0]}")
    return pixels.detach(), captions


@torch.no_grad()
def _caption_bank(model: nn.Module, captions: list[list[str]], batch_size: int = 1000
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """All distinct captions embedded once: (T, D) embeddings, per-image offsets and counts."""
    flat = [c for cs in captions for c in cs]
    unique = list(dict.fromkeys(flat))
    index = {c: k for k, c in enumerate(unique)}
    emb = torch.cat([model.encode_text(model.tokenize(unique[s:s + batch_size])).float()
                     for s in range(0, len(unique), batch_size)])
    ids = torch.tensor([index[c] for c in flat])
    counts = torch.tensor([len(cs) for cs in captions])
    offsets = torch.cumsum(counts, 0) - counts
    return emb[ids], offsets, counts


def _require_eval(model: nn.Module, who: str) -> None:
    require_contrastive(model, who)
    if isinstance(model, nn.Module) and model.training:
        raise ValueError(f"the victim model ({type(model).__name__}) is in training mode; call model.eval() first "
                         "(training mode would update its BatchNorm statistics)")


@dataclass
class _Surrogate:
    """What both patch optimisers start from: the surrogate set, the patch side, clean image embeddings
    and the epoch iterator."""

    pixels: torch.Tensor
    side: int
    clean_emb: torch.Tensor
    batches: _Epochs


def _prepare(who: str, model: nn.Module, data: object, fraction: float, position: object, batch_size: int,
             gen: torch.Generator) -> _Surrogate:
    """Validate the victim and the surrogate data; embed the clean images and all captions once."""
    _require_eval(model, who)
    pixels, captions = surrogate_pairs(data)
    side = patch_side(fraction, pixels.shape[-1])
    if isinstance(position, tuple):
        apply_patch(pixels[:1], torch.zeros(3, side, side), position)  # validates the corner
    caption_emb, offsets, counts = _caption_bank(model, captions)
    with torch.no_grad():
        clean_emb = torch.cat([model.encode_image(pixels[s:s + 500]).float() for s in range(0, len(pixels), 500)])
    return _Surrogate(pixels, side, clean_emb, _Epochs(pixels, caption_emb, offsets, counts, batch_size, gen))


class _Epochs:
    """Mini-batches of the surrogate set: a fresh permutation per epoch, one caption per image and step."""

    def __init__(self, pixels: torch.Tensor, caption_emb: torch.Tensor, offsets: torch.Tensor,
                 counts: torch.Tensor, batch_size: int, generator: torch.Generator):
        self.pixels, self.caption_emb, self.offsets, self.counts = pixels, caption_emb, offsets, counts
        self.batch_size, self.generator = batch_size, generator

    def __call__(self):
        n = self.pixels.shape[0]
        perm = torch.randperm(n, generator=self.generator)
        for s in range(0, n, self.batch_size):
            idx = perm[s:s + self.batch_size]
            if idx.numel() < 2:
                continue
            pick = (torch.rand(idx.numel(), generator=self.generator) * self.counts[idx]).long()
            yield idx, self.pixels[idx], self.caption_emb[self.offsets[idx] + pick]


# ------------------------------------------------------------------------------------------
# Networks
# ------------------------------------------------------------------------------------------
class PatchGenerator(nn.Module):
    """DCGAN generator from a fixed noise batch (n, z, 1, 1) to one (3, side, side) patch in [0, 1]."""

    def __init__(self, side: int, noise_dim: int = 100, n_noise: int = 16, width: int = 32):
        super().__init__()
        self.side = side
        layers, size = 1, 4
        while size < side:
            size, layers = size * 2, layers + 1
        widths = [width * 2 ** (layers - 1 - i) for i in range(layers)]
        blocks: list[nn.Module] = []
        for i, w in enumerate(widths):
            conv = (nn.ConvTranspose2d(noise_dim, w, 4, 1, 0) if i == 0 else nn.ConvTranspose2d(widths[i - 1], w, 4, 2, 1))
            blocks += [conv, nn.BatchNorm2d(w), nn.ReLU()]
        self.hidden = nn.Sequential(*blocks)
        self.out = nn.Conv2d(widths[-1], 3, 3, 1, 1)
        self.mix = nn.Conv2d(n_noise, 1, 3, 1, 1)  # the code's residual layer: across the noise batch
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        r = torch.tanh(self.out(self.hidden(z)))  # (n, 3, s, s)
        if r.shape[-1] != self.side:
            r = F.interpolate(r, size=(self.side, self.side), mode="bilinear", align_corners=False,
                              antialias=r.shape[-1] > self.side)
        r = self.mix(r.transpose(0, 1))[:, 0]  # (3, n, s, s) -> (3, side, side)
        return ((r + 1) / 2).clamp(0, 1)


class PatchDiscriminator(nn.Module):
    """DCGAN discriminator on whole (B, 3, S, S) images -> (B,) probability of "clean"."""

    def __init__(self, image_side: int, width: int = 32, max_layers: int = 4):
        super().__init__()
        blocks: list[nn.Module] = []
        size, cin = image_side, 3
        for i in range(max_layers):
            if size // 2 < 4 and i > 0:
                break
            w = width * 2 ** i
            blocks.append(nn.Conv2d(cin, w, 4, 2, 1))
            if i > 0:
                blocks.append(nn.BatchNorm2d(w))
            blocks.append(nn.LeakyReLU(0.2))
            size, cin = size // 2, w
        self.hidden = nn.Sequential(*blocks)
        self.out = nn.Conv2d(cin, 1, size, 1, 0)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.out(self.hidden(x * 2 - 1))).flatten()


# ------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------
@dataclass
class PatchResult:
    """A universal patch and how it was made.

    Attributes:
        patch: (3, h, h) in [0, 1].
        fraction: the patch side as a fraction of the image side it was made for.
        position: the placement it was trained with ("fixed", "random" or a (y, x) corner).
        image_size: the surrogate images' side (``h == round(fraction * image_size)``).
        seconds: wall-clock time of the optimisation.
        params: the attack's hyper-parameters.
    """

    patch: torch.Tensor
    fraction: float
    position: str | tuple[int, int]
    image_size: int
    seconds: float
    params: dict

    def apply(self, pixels: torch.Tensor, position: str | tuple[int, int] | None = None,
              generator: torch.Generator | int | None = None) -> torch.Tensor:
        """Paste the patch on images of any size at the same fraction of their side (and, unless
        ``position`` says otherwise, at the trained placement; ``(y, x)`` corners are in pixels
        and only meaningful at ``image_size``)."""
        return apply_patch(pixels, self.patch, self.position if position is None else position, generator,
                           fraction=self.fraction)


@dataclass
class AdvCLIPResult(PatchResult):
    """AdvCLIP's patch, plus per-step traces: ``g_loss`` / ``d_loss`` (steps,) and ``terms``: the
    generator loss's parts (``adv``, ``topology``, ``gan``, ``quality``, each (steps,), unweighted)."""

    g_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    d_loss: torch.Tensor = field(default_factory=lambda: torch.zeros(0))
    terms: dict[str, torch.Tensor] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------
# The attack
# ------------------------------------------------------------------------------------------
@register("universal_attacks", "advclip")
class AdvCLIP(UniversalAttack):
    """AdvCLIP (Zhou et al., ACM MM 2023): a GAN-generated universal patch with embedding and topology deviation.

    Args:
        fraction: patch side / image side (default ``sqrt(0.03)``: 3% of the area, the code's).
        position: training placement, ``"fixed"`` (the code's bottom-right corner), ``"random"``,
            or a ``(y, x)`` corner in pixels of the surrogate images.
        epochs, batch_size: passes over the surrogate pairs and pairs per step (20, 16).
        lr, betas: Adam's for G and D (2e-4, (0.5, 0.999)).
        alpha, beta, gamma, delta: weights of the embedding deviation, of its image-text term,
            of the topology deviation's image-text term, and of the topology deviation (10, 5, 5, 1).
        gan_weight, quality_weight: weights of the GAN and MSE terms (1, 1).
        temperature: InfoNCE's (0.1).
        noise_dim, n_noise: fixed noise: ``n_noise`` vectors of ``noise_dim`` (100, batch_size).
        width: G's and D's base width (32; see the module notes).
        d_clip: D's weights are clamped to [-d_clip, d_clip] after each step (0.01; None: no clip).
        max_steps: stop after this many steps (None: all epochs); for quick runs.
    """

    name = "advclip"
    paper = "Zhou et al., ACM MM 2023"
    threat_model = "white-box encoder, downstream-agnostic, universal patch"

    def __init__(self, fraction: float = DEFAULT_FRACTION, position: str | tuple[int, int] = "fixed",
                 epochs: int = 20, batch_size: int = 16, lr: float = 2e-4, betas: tuple[float, float] = (0.5, 0.999),
                 alpha: float = 10.0, beta: float = 5.0, gamma: float = 5.0, delta: float = 1.0,
                 gan_weight: float = 1.0, quality_weight: float = 1.0, temperature: float = 0.1,
                 noise_dim: int = 100, n_noise: int | None = None, width: int = 32, d_clip: float | None = 0.01,
                 max_steps: int | None = None):
        self.fraction = check_budget("fraction", fraction, 1e-6, 1.0, hint=" (patch side / image side)")
        self.position = _check_position(position)
        self.epochs = check_int("epochs", epochs, 1)
        self.batch_size = check_int("batch_size", batch_size, 2)
        self.lr = check_budget("lr", lr, 0.0, math.inf, hint="")
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2 and all(
                isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in betas)):
            raise ValueError(f"betas must be a pair of numbers in [0, 1), got {betas!r}")
        self.betas = tuple(betas)
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma), ("delta", delta),
                            ("gan_weight", gan_weight), ("quality_weight", quality_weight)):
            setattr(self, name, check_budget(name, value, 0.0, math.inf, hint=" (a loss weight)"))
        self.temperature = check_budget("temperature", temperature, 1e-6, math.inf, hint="")
        self.noise_dim = check_int("noise_dim", noise_dim, 1)
        self.n_noise = self.batch_size if n_noise is None else check_int("n_noise", n_noise, 1)
        self.width = check_int("width", width, 1)
        self.d_clip = None if d_clip is None else check_budget("d_clip", d_clip, 0.0, math.inf, hint="")
        self.max_steps = None if max_steps is None else check_int("max_steps", max_steps, 1)

    def params(self) -> dict:
        return {"fraction": self.fraction, "position": self.position, "epochs": self.epochs,
                "batch_size": self.batch_size, "lr": self.lr, "betas": list(self.betas), "alpha": self.alpha,
                "beta": self.beta, "gamma": self.gamma, "delta": self.delta, "gan_weight": self.gan_weight,
                "quality_weight": self.quality_weight, "temperature": self.temperature,
                "noise_dim": self.noise_dim, "n_noise": self.n_noise, "width": self.width, "d_clip": self.d_clip,
                "max_steps": self.max_steps}

    def __call__(self, model: nn.Module, data: object,
                 generator: torch.Generator | int | None = None) -> AdvCLIPResult:
        """Learn the patch on the surrogate image-caption ``data`` against ``model`` (frozen, eval mode)."""
        gen = make_generator(generator)
        start = time.perf_counter()
        setup = _prepare("AdvCLIP", model, data, self.fraction, self.position, self.batch_size, gen)
        S, side, clean_emb, batches = setup.pixels.shape[-1], setup.side, setup.clean_emb, setup.batches

        # Networks and fixed noise from the generator (reproducible with the seed, independent of torch's global RNG).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2 ** 62, (1,), generator=gen)))
            G = PatchGenerator(side, self.noise_dim, self.n_noise, self.width)
            D = PatchDiscriminator(S, self.width)
        z = torch.randn(self.n_noise, self.noise_dim, 1, 1, generator=gen)
        opt_g = torch.optim.Adam(G.parameters(), lr=self.lr, betas=self.betas)
        opt_d = torch.optim.Adam(D.parameters(), lr=self.lr, betas=self.betas)
        g_params, d_params = list(G.parameters()), list(D.parameters())

        trace: dict[str, list[float]] = {k: [] for k in ("g_loss", "d_loss", "adv", "topology", "gan", "quality")}
        step = 0
        for _ in range(self.epochs):
            for idx, x, text in batches():
                place = self.position
                place_seed = int(torch.randint(0, 2 ** 62, (1,), generator=gen)) if place == "random" else None
                # -- discriminator: clean images are real, patched ones fake
                with torch.no_grad():
                    fake = apply_patch(x, G(z), place, place_seed)
                d_real, d_fake = D(x), D(fake)
                d_loss = (F.binary_cross_entropy(d_real, torch.ones_like(d_real))
                          + F.binary_cross_entropy(d_fake, torch.zeros_like(d_fake)))
                for p, g in zip(d_params, torch.autograd.grad(d_loss, d_params), strict=True):
                    p.grad = g
                opt_d.step()
                if self.d_clip is not None:
                    with torch.no_grad():
                        for p in d_params:
                            p.clamp_(-self.d_clip, self.d_clip)
                # -- generator
                adv = apply_patch(x, G(z), place, place_seed)
                quality = F.mse_loss(adv, x)
                d_adv = D(adv)
                gan = F.binary_cross_entropy(d_adv, torch.ones_like(d_adv))
                emb = model.encode_image(adv).float()
                dev = embedding_deviation(clean_emb[idx], emb, text, self.beta, self.temperature)
                topo = topology_deviation(clean_emb[idx], emb, text, self.gamma)
                g_loss = (self.gan_weight * gan - self.alpha * dev + self.quality_weight * quality
                          - self.delta * topo)
                for p, g in zip(g_params, torch.autograd.grad(g_loss, g_params), strict=True):
                    p.grad = g
                opt_g.step()
                for k, v in (("g_loss", g_loss), ("d_loss", d_loss), ("adv", dev), ("topology", topo), ("gan", gan),
                             ("quality", quality)):
                    trace[k].append(v.item())
                step += 1
                if self.max_steps is not None and step >= self.max_steps:
                    break
            if self.max_steps is not None and step >= self.max_steps:
                break
        with torch.no_grad():
            patch = G(z).detach()
        t = {k: torch.tensor(v) for k, v in trace.items()}
        return AdvCLIPResult(patch, self.fraction, self.position, S, time.perf_counter() - start, self.params(),
                             g_loss=t.pop("g_loss"), d_loss=t.pop("d_loss"), terms=t)


__all__ = ["AdvCLIP", "AdvCLIPResult", "DEFAULT_FRACTION", "POSITIONS", "PatchDiscriminator", "PatchGenerator",
           "PatchResult", "apply_patch", "embedding_deviation", "fixed_corner", "info_nce", "patch_side",
           "random_patch", "resize_patch", "surrogate_pairs", "topology_deviation", "topology_divergence"]
