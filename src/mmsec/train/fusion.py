"""Fusion (ALBEF) training: image-text contrastive (ITC) + image-text matching (ITM) with hard negatives.

Li et al., "Align before Fuse" (ALBEF), NeurIPS 2021, Sec. 3.2:

* ITC: symmetric InfoNCE over the batch on the unimodal [CLS] projections
  (:func:`mmsec.train.contrastive.clip_loss`, reused).
* ITM: the fusion encoder's [CLS] goes through a 2-way head; each batch of ``B`` matching pairs
  adds ``B`` (image, hard-negative text) and ``B`` (hard-negative image, text) pairs, the
  negatives drawn with probability ``softmax(ITC similarity)`` over the batch's items that do
  *not* match (ALBEF's in-batch hard-negative mining); cross-entropy over the ``3B`` pairs.
* loss = ITC + ``itm_weight`` * ITM.

Departures from ALBEF: no MLM and no momentum distillation (see :mod:`mmsec.models.tiny_albef`);
a pair counts as matching when the caller's ``positives`` matrix says so (default: identical
caption text), not only on the diagonal, so a caption true of an image is never used as its
"negative"; and the data may add one known-false caption per image as an extra ITM negative
(``FusionBatch.negative_captions``, in the spirit of NegCLIP's hard negative captions,
Yuksekgonul et al., ICLR 2023): in-batch sampling almost never pairs an image with a caption
that binds its attributes to the wrong objects, so without them ITM learns no more about
binding than ITC does. AdamW, warm-up and cosine decay as :mod:`mmsec.train.contrastive`.

The model must provide TinyALBEF's pieces: ``tokenize``, ``image_features``,
``image_embedding``, ``text_token_embeddings``, ``text_hidden``, ``text_embedding``,
``fuse_hidden``, ``itm_head`` and ``logit_scale``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..progress import progress_bar
from .contrastive import TrainConfig, TrainLog, clip_adamw, clip_loss, cosine_lr


@dataclass
class FusionBatch:
    """One training batch of ``B`` matching image-caption pairs.

    Attributes:
        pixels: (B, 3, H, W) in [0, 1].
        captions: B captions, caption i describing image i.
        positives: (B, B) bool, True where caption j is also true of image i (never drawn as a
            hard negative); None means "identical caption text".
        negative_captions: per image, a caption known to be false of it (an extra ITM negative)
            or None; None for no extra negatives.
    """

    pixels: torch.Tensor
    captions: list[str]
    positives: torch.Tensor | None = None
    negative_captions: list[str | None] | None = None


FusionBatches = Callable[[int], FusionBatch]


@dataclass
class FusionTrainConfig(TrainConfig):
    itm_weight: float = 1.0  # ALBEF sums its losses with unit weights
    seed: int = 0  # hard-negative sampling


@dataclass
class FusionTrainLog(TrainLog):
    itc_losses: list[float] = field(default_factory=list)
    itm_losses: list[float] = field(default_factory=list)


def caption_positives(captions: list[str]) -> torch.Tensor:
    """(B, B) bool: pair (i, j) matches when caption j is the same text as caption i."""
    ids = {c: k for k, c in enumerate(dict.fromkeys(captions))}
    key = torch.tensor([ids[c] for c in captions])
    return key[:, None] == key[None, :]


def sample_hard_negatives(sim: torch.Tensor, positives: torch.Tensor,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """ALBEF's in-batch hard negatives.

    Args:
        sim: (B, B) image-to-text ITC logits (row i: image i against every text).
        positives: (B, B) bool, True where image i and text j match (the diagonal included).
    Returns:
        neg_text (B,): for each image, a non-matching text, drawn with probability softmax(sim[i]);
        neg_image (B,): for each text, a non-matching image, drawn from softmax(sim[:, j]);
        valid (B,) bool: False for rows with no non-matching item at all (their draw is meaningless).
    """
    with torch.no_grad():
        w_i2t = F.softmax(sim.float(), dim=1).masked_fill(positives, 0.0)  # (B, B)
        w_t2i = F.softmax(sim.float().T, dim=1).masked_fill(positives.T, 0.0)  # (B, B)
        ok_i, ok_t = w_i2t.sum(1) > 0, w_t2i.sum(1) > 0
        # Rows without a negative get uniform weights so multinomial can run; they are masked out.
        w_i2t[~ok_i] = 1.0
        w_t2i[~ok_t] = 1.0
        neg_text = torch.multinomial(w_i2t, 1, generator=generator).squeeze(1)
        neg_image = torch.multinomial(w_t2i, 1, generator=generator).squeeze(1)
    return neg_text, neg_image, ok_i & ok_t


def fusion_losses(model: nn.Module, batch: FusionBatch,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(ITC loss, ITM loss) of one batch of matching pairs."""
    pixels = batch.pixels
    tokens = model.tokenize(batch.captions)  # (B, L)
    positives = caption_positives(batch.captions) if batch.positives is None else batch.positives
    positives = positives.to(pixels.device)
    image_feats = model.image_features(pixels)  # (B, N, W_img)
    text_hidden = model.text_hidden(model.text_token_embeddings(tokens), tokens)  # (B, L, W_txt)
    image_emb, text_emb = model.image_embedding(image_feats), model.text_embedding(text_hidden)  # (B, D)
    itc = clip_loss(image_emb, text_emb, model.logit_scale)

    sim = model.logit_scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T  # (B, B)
    neg_text, neg_image, valid = sample_hard_negatives(sim.detach(), positives, generator)
    b = pixels.shape[0]
    keep = torch.cat([torch.ones(b, dtype=torch.bool, device=valid.device), valid, valid])  # (3B,)
    images = torch.cat([image_feats, image_feats, image_feats[neg_image]])[keep]  # (3B', N, W_img)
    texts = torch.cat([text_hidden, text_hidden[neg_text], text_hidden])[keep]  # (3B', L, W_txt)
    toks = torch.cat([tokens, tokens[neg_text], tokens])[keep]
    labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long().to(pixels.device)[keep]  # 1 = match
    if batch.negative_captions is not None:  # (image i, a caption false of it), label 0
        idx = [i for i, c in enumerate(batch.negative_captions) if c is not None]
        if idx:
            neg_tokens = model.tokenize([batch.negative_captions[i] for i in idx])  # (B'', L)
            images = torch.cat([images, image_feats[idx]])
            texts = torch.cat([texts, model.text_hidden(model.text_token_embeddings(neg_tokens), neg_tokens)])
            toks = torch.cat([toks, neg_tokens])
            labels = torch.cat([labels, labels.new_zeros(len(idx))])
    itm = F.cross_entropy(model.itm_head(model.fuse_hidden(images, texts, toks)), labels)
    return itc, itm


def train_fusion(model: nn.Module, batches: FusionBatches, cfg: FusionTrainConfig,
                 desc: str = "fusion training", quiet: bool = False) -> FusionTrainLog:
    """Train ``model`` (a TinyALBEF-like module) in place with ITC + ITM for ``cfg.steps`` steps.

    ``batches(step)`` returns a :class:`FusionBatch`. Weight decay applies to matrices only.
    """
    opt = clip_adamw(model, cfg.lr, cfg.weight_decay)
    generator = torch.Generator().manual_seed(cfg.seed)
    log = FusionTrainLog()
    start = time.perf_counter()
    model.train()
    with progress_bar(cfg.steps, desc, quiet=quiet) as bar:
        for step in range(cfg.steps):
            for group in opt.param_groups:
                group["lr"] = cosine_lr(step, cfg.steps, cfg.lr, cfg.warmup)
            itc, itm = fusion_losses(model, batches(step), generator)
            loss = itc + cfg.itm_weight * itm
            if not torch.isfinite(loss):
                raise FloatingPointError(f"fusion loss became {loss.item()} at step {step} (itc {itc.item()}, "
                                         f"itm {itm.item()})")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            log.losses.append(loss.item())
            log.itc_losses.append(itc.item())
            log.itm_losses.append(itm.item())
            bar.advance(1, itc=f"{itc.item():.3f}", itm=f"{itm.item():.3f}")
    model.eval()
    log.seconds = time.perf_counter() - start
    return log
