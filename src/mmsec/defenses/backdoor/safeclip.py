"""SafeCLIP: Wenhan Yang, Jingdong Gao, Baharan Mirzasoleiman, "Better Safe than Sorry: Pre-training
CLIP against Targeted Data Poisoning and Backdoor Attacks", ICML 2024.

Threat model defended: as RoCLIP's -- the defender pre-trains a CLIP from scratch on image-caption
pairs of which an unknown few are poisoned, controls the training and has no clean data.

Objective: never let a poisoned pair's image and caption be pulled together, while clean pairs are.

1. **Unimodal warm-up** (5 epochs): each modality learns alone, so similar images cluster with
   similar images and similar captions with similar captions -- a poisoned image sits with the
   images it looks like, far from the target's captions. The loss is NNCLR's: the positive of an
   embedding ``z_i`` is its nearest neighbour in a first-in-first-out pool of past embeddings,
   contrasted against the batch's augmented views ``z_k^+``::

       L_unimodal = - log exp(<NN(z_i), z_i^+> / tau) / sum_k exp(<NN(z_i), z_k^+> / tau)

2. **Slow CLIP epoch**: one epoch of the CLIP loss on all pairs at 0.01 x the learning rate, which
   relates the two spaces just enough to measure each pair's image-caption cosine similarity.
3. **Split**: a two-component Gaussian mixture is fitted (EM) to the similarities; a pair is
   *safe* when its posterior of the high-similarity component exceeds 0.9, else *risky*.
4. **Mixed training**: every epoch, the unimodal loss on the risky pairs' images and captions and the
   CLIP loss on the safe pairs; at each epoch's start the similarities are measured again and the
   safe set becomes the top ``f`` of pairs by the mixture's posterior, ``f`` growing by 1% per epoch
   (a poisoned pair that slipped in drops out again as its similarity falls behind).

Defaults (paper and its code's arguments): 5 unimodal warm-up epochs, 1 slow CLIP epoch at
0.01 x lr (the code's ``filter_lr`` 5e-6 vs lr 5e-4), GMM threshold 0.9, safe set +1% per
epoch capped at 85% (``cap_filter_ratio``), NN pools of 256 embeddings (``memory_bank_size``),
SimCLR image augmentation and EDA caption augmentation in every phase, one AdamW for the whole run.

Departures:

* Scale: the paper trains 32 epochs (5 + 1 + 26) on 1M CC3M pairs; here the zoo recipe
  (``shapes-clip-resnet``: its initialisation, AdamW, lr 2e-3, batch 256) for 5 + 1 + ``epochs``
  (default 12, the undefended baseline's epoch count) over a fixed set of shapes-world pairs.
* Schedule: warm-up then cosine decay from lr to 0.01 x lr over the unimodal warm-up, a constant
  0.01 x lr for the slow epoch (the paper's statement; the code reaches it at the end of one cosine
  over both warm-ups), and a new warm-up and cosine decay over the mixed epochs (as the code).
* Augmentation: :func:`mmsec.train.simclr.augment` without hue jitter and grayscale (they change a
  shapes-world class) and EDA without WordNet (only swap and deletion change a shapes-world
  caption); one fresh image view per step, one augmented caption per caption string.
* Similarity of a pair: the mean cosine over its caption variants (a shapes-world pair has several).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_budget, check_int
from ...data.datasets import ImageTextData
from ...progress import progress_bar
from ...registry import register
from ...train.contrastive import clip_adamw, clip_loss, cosine_lr, optimizer_step
from ...train.nn_pool import NearestNeighbourPool
from ...train.pair_views import PairViews
from ...train.poisoned import pairs_start
from ..base import PretrainingDefense


@dataclass
class SafeCLIPResult:
    """What :class:`SafeCLIP` trained and how it split the data.

    Attributes:
        model: the pre-trained model (eval mode).
        losses: per-step loss over the whole run.
        seconds: wall time of the run.
        initial_similarity: (N,) image-caption cosine of every pair after the slow CLIP epoch.
        initial_safe: (N,) bool, the first split (GMM posterior > threshold).
        safe_fractions: the safe set's share of the data in each mixed epoch.
        final_safe: (N,) bool, the safe set of the last mixed epoch.
        extras: recipe, batch size, epochs, lr.
    """

    model: nn.Module
    losses: list[float]
    seconds: float
    initial_similarity: torch.Tensor
    initial_safe: torch.Tensor
    safe_fractions: list[float]
    final_safe: torch.Tensor
    extras: dict = field(default_factory=dict)


def unimodal_nn_loss(pool: NearestNeighbourPool, emb: torch.Tensor, aug_emb: torch.Tensor,
                     scale: torch.Tensor) -> torch.Tensor:
    """NNCLR's loss: row ``i``'s positive among the batch's augmented views is view ``i``, the anchor
    is ``emb[i]``'s nearest neighbour in ``pool``; the batch's embeddings then enter the pool."""
    first = len(pool) == 0
    if first:  # the first batch is its own pool
        pool.push(emb)
    anchor = pool.nearest(emb)  # (B, D), detached
    if not first:
        pool.push(emb)
    logits = scale * anchor @ F.normalize(aug_emb, dim=-1).T  # (B, B)
    return F.cross_entropy(logits, torch.arange(logits.shape[0], device=logits.device))


def posterior_of_high_component(similarity: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """A two-component Gaussian mixture fitted by EM to ``similarity`` (N,); returns each value's
    posterior probability of the component with the higher mean."""
    from sklearn.mixture import GaussianMixture

    x = similarity.double().numpy().reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, random_state=seed, max_iter=100, tol=1e-3).fit(x)
    high = int(gmm.means_.ravel().argmax())
    return torch.from_numpy(gmm.predict_proba(x)[:, high]).float()


@torch.no_grad()
def pair_similarity(model: nn.Module, data: ImageTextData, batch_size: int = 512) -> torch.Tensor:
    """(N,) mean cosine similarity of each image with its caption variants (model in eval mode)."""
    was_training = model.training
    model.eval()
    out = []
    for k in range(0, len(data), batch_size):
        img = F.normalize(model.encode_image(data.pixels[k:k + batch_size]), dim=-1)
        caps = data.captions[k:k + batch_size]
        flat = [c for cs in caps for c in cs]
        txt = F.normalize(model.encode_text(model.tokenize(flat)), dim=-1)
        owner = torch.repeat_interleave(torch.arange(len(caps)), torch.tensor([len(cs) for cs in caps]))
        sims = (img[owner] * txt).sum(-1)
        out.append(torch.zeros(len(caps)).index_add_(0, owner, sims) / torch.bincount(owner, minlength=len(caps)))
    model.train(was_training)
    return torch.cat(out)


@register("pretraining_defenses", "safeclip")
class SafeCLIP(PretrainingDefense):
    """Pre-train a zoo CLIP from scratch on (possibly poisoned) pairs with SafeCLIP:
    ``SafeCLIP()(data, recipe, seed=None)``, ``recipe`` the zoo recipe to train (the caller's choice).

    Args:
        epochs: mixed epochs after the warm-ups (default 12; paper 26 of 32).
        warmup_epochs: unimodal warm-up epochs (paper: 5).
        slow_epochs: CLIP epochs at ``slow_lr_factor`` x lr before the first split (paper: 1).
        slow_lr_factor: paper 0.01.
        threshold: GMM posterior above which a pair starts safe (paper: 0.9).
        growth: safe-set growth per mixed epoch, as a fraction of the data (paper: 0.01).
        cap: largest safe fraction (code: 0.85).
        pool_size: NN pool entries per modality (code: 256).
        augment: augment images and captions (paper: yes).
        seed: default seed of batch order, augmentations and the mixture fit.
    """

    name = "safeclip"
    paper = "Yang, Gao, Mirzasoleiman, ICML 2024"

    def __init__(self, epochs: int = 12, warmup_epochs: int = 5, slow_epochs: int = 1, slow_lr_factor: float = 0.01,
                 threshold: float = 0.9, growth: float = 0.01, cap: float = 0.85, pool_size: int = 256,
                 augment: bool = True, seed: int = 0):
        self.epochs = check_int("epochs", epochs, 1)
        self.warmup_epochs = check_int("warmup_epochs", warmup_epochs, 0)
        self.slow_epochs = check_int("slow_epochs", slow_epochs, 0)
        self.slow_lr_factor = check_budget("slow_lr_factor", slow_lr_factor, 0.0, 1.0, hint=" (paper 0.01)")
        self.threshold = check_budget("threshold", threshold, 0.0, 1.0, hint=" (GMM posterior; paper 0.9)")
        self.growth = check_budget("growth", growth, 0.0, 1.0, hint=" (safe-set growth per epoch; paper 0.01)")
        self.cap = check_budget("cap", cap, 0.0, 1.0, hint=" (largest safe fraction; code 0.85)")
        self.pool_size = check_int("pool_size", pool_size, 1)
        self.augment = bool(augment)
        self.seed = check_int("seed", seed, 0)

    def __call__(self, data: ImageTextData, recipe: str, seed: int | None = None, quiet: bool = True) -> SafeCLIPResult:
        """Pre-train the zoo recipe ``recipe`` (e.g. ``"shapes-clip-resnet"``) from scratch on ``data``."""
        seed = self.seed if seed is None else check_int("seed", seed, 0)
        start, b = pairs_start(data, recipe, self.warmup_epochs + self.slow_epochs + self.epochs)
        n = len(data)
        per_epoch = n // b
        model, lr, wd = start.model, float(start.train["lr"]), float(start.train["weight_decay"])
        warmup, clip = int(start.train["warmup"]), float(start.train.get("grad_clip", 1.0))
        opt = clip_adamw(model, lr, wd)
        low = lr * self.slow_lr_factor
        order = torch.Generator().manual_seed(seed)
        views = torch.Generator().manual_seed(seed + 1)
        rng = random.Random(seed)  # the EDA edits first (as before), then each batch's caption variants
        pair_views = PairViews(data, rng, views) if self.augment else None
        image_pool, text_pool = NearestNeighbourPool(self.pool_size), NearestNeighbourPool(self.pool_size)
        losses: list[float] = []

        def batches(indices: torch.Tensor):
            perm = indices[torch.randperm(len(indices), generator=order)]
            size = min(b, len(perm))
            for k in range(0, len(perm) - size + 1, size):  # full batches only (the code's drop_last)
                idx = perm[k:k + size]
                caps = [rng.choice(data.captions[i]) for i in idx.tolist()]
                yield data.pixels[idx], caps

        def view(pixels: torch.Tensor, caps: list[str]) -> tuple[torch.Tensor, list[str]]:
            return (pixels, caps) if pair_views is None else pair_views(pixels, caps)

        def unimodal(pixels: torch.Tensor, caps: list[str]) -> torch.Tensor:
            aug_pixels, aug_caps = view(pixels, caps)
            images = model.encode_image(torch.cat([pixels, aug_pixels]))
            texts = model.encode_text(model.tokenize(list(caps) + aug_caps))
            k = pixels.shape[0]
            return (unimodal_nn_loss(image_pool, images[:k], images[k:], model.logit_scale)
                    + unimodal_nn_loss(text_pool, texts[:k], texts[k:], model.logit_scale)) / 2

        def multimodal(pixels: torch.Tensor, caps: list[str]) -> torch.Tensor:
            pixels, caps = view(pixels, caps)
            return clip_loss(model.encode_image(pixels), model.encode_text(model.tokenize(caps)), model.logit_scale)

        def decayed(s: int, phase_steps: int) -> float:
            """Linear warm-up, then cosine decay from lr to ``low`` over a phase."""
            return low + cosine_lr(s, phase_steps, lr - low, min(warmup, max(1, phase_steps // 10)))

        def step(loss: torch.Tensor, rate: float, bar) -> None:
            losses.append(optimizer_step(model, opt, loss, rate, clip, len(losses), "SafeCLIP"))
            bar.advance(1, loss=f"{losses[-1]:.3f}")

        everyone = torch.arange(n)
        total = per_epoch * (self.warmup_epochs + self.slow_epochs + self.epochs)
        began = time.perf_counter()
        model.train()
        with progress_bar(total, f"SafeCLIP pre-training {recipe} on {n} pairs", quiet=quiet) as bar:
            # 1. unimodal warm-up; 2. slow CLIP epoch(s)
            warm = per_epoch * self.warmup_epochs
            for e in range(self.warmup_epochs):
                for i, (pixels, caps) in enumerate(batches(everyone)):
                    step(unimodal(pixels, caps), decayed(e * per_epoch + i, warm), bar)
            for _ in range(self.slow_epochs):
                for pixels, caps in batches(everyone):
                    step(multimodal(pixels, caps), low, bar)
            # 3. first split by the mixture; 4. mixed epochs with a growing safe set
            similarity = pair_similarity(model, data)
            posterior = posterior_of_high_component(similarity, seed)
            safe = posterior > self.threshold
            initial_similarity, initial_safe = similarity, safe.clone()
            fraction = float(safe.float().mean())
            fractions: list[float] = []
            mixed = per_epoch * self.epochs
            t = 0
            for e in range(self.epochs):
                if e > 0:  # re-rank every pair by the mixture's posterior; keep the top `fraction`
                    similarity = pair_similarity(model, data)
                    posterior = posterior_of_high_component(similarity, seed)
                    by_similarity = similarity.argsort(descending=True)  # breaks the posterior's ties at 1.0
                    ranked = by_similarity[posterior[by_similarity].argsort(descending=True, stable=True)]
                    safe = torch.zeros(n, dtype=torch.bool)
                    safe[ranked[:round(fraction * n)]] = True
                fractions.append(float(safe.float().mean()))
                fraction = min(fraction + self.growth, max(self.cap, fraction))
                for kind, indices in (("unimodal", everyone[~safe]), ("clip", everyone[safe])):
                    if len(indices) < 2:
                        continue
                    for pixels, caps in batches(indices):
                        loss = unimodal(pixels, caps) if kind == "unimodal" else multimodal(pixels, caps)
                        step(loss, decayed(t, mixed), bar)
                        t += 1
        model.eval()
        return SafeCLIPResult(model, losses, time.perf_counter() - began, initial_similarity, initial_safe,
                              fractions, safe, {"recipe": recipe, "batch_size": b, "pairs": n, "lr": lr,
                                                "epochs": [self.warmup_epochs, self.slow_epochs, self.epochs]})


__all__ = ["SafeCLIP", "SafeCLIPResult", "pair_similarity", "posterior_of_high_component", "unimodal_nn_loss"]
