"""VILLA: adversarial fine-tuning of a fusion vision-language model in the embedding space.

Paper: "Large-Scale Adversarial Training for Vision-and-Language Representation Learning",
Zhe Gan, Yen-Chun Chen, Linjie Li, Chen Zhu, Yu Cheng, Jingjing Liu, NeurIPS 2020 (code:
github.com/zhegan27/VILLA for UNITER, github.com/zhegan27/LXMERT-AdvTrain for LXMERT; the
defaults below are read from the released LXMERT fine-tuning scripts).

Threat model defended: small perturbations of the *embeddings* the fusion encoder reads -- the
image features (UNITER's region features; here the image encoder's output tokens) and the word
embeddings of the text -- one modality at a time. VILLA's aim is as much better clean
generalisation as robustness (adversarial training as a regulariser); it does not claim
robustness to pixel-space attacks.

Objective (the paper's Eq. 2-3), over the task's training pairs (x_img, x_txt, y):

    min_theta  E [ L_std + R_at + alpha * R_kl ]
    L_std = L(f(x_img, x_txt), y)
    R_at  = max_{||d_img|| <= eps} L(f(x_img + d_img, x_txt), y) + max_{||d_txt|| <= eps} L(f(x_img, x_txt + d_txt), y)
    R_kl  = max_{d_img} L_kl(f(x_img + d_img, x_txt), f(x_img, x_txt)) + (the same for d_txt)

with L_kl(p, q) = KL(p || q) + KL(q || p) on the softmaxed predictions (the smoothness term), and
the inner maximisation done as FreeLB's "free" adversarial training (Zhu et al., ICLR 2020): K
ascent steps from a zero perturbation; at each step the loss ``(CE + alpha * L_kl) / K`` of each
modality's perturbed forward (the other modality clean) is back-propagated, so the parameter
gradients of the K steps *accumulate* (the first step, with zero perturbation, is L_std); each
perturbation then moves by ``adv_lr`` along its gradient normalised by the per-example L2 norm
(and is projected onto the ``adv_max_norm`` ball when that is > 0); one optimiser step per batch.

The task here is image-text matching (ITM) on the fusion encoder's [CLS] -- the classification
head the fusion model has, and the retrieval fine-tuning of UNITER (ITM with hard negatives).
Each batch of B (image, caption) pairs yields ALBEF's ITM pairs: B matching pairs, one
hard-negative caption per image and one hard-negative image per caption, drawn with probability
softmax(ITC similarity) among the non-matching items (:func:`mmsec.train.fusion.sample_hard_negatives`);
VILLA's perturbations are per ITM pair. The model's image-text contrastive (ITC) loss is added on
the clean pairs (ALBEF's retrieval fine-tuning trains ITC + ITM), so its dual-encoder
retrieval keeps working.

Arguments (defaults: the released LXMERT fine-tuning scripts, ``run/vqa_finetune.bash``,
``nlvr2_finetune.bash``):
    adv_steps: K = 3 (``--adv_steps 3``). ``adv_steps=1`` is plain fine-tuning with the same loss
        and data (the one step has a zero perturbation and a zero KL): the control to compare to.
    adv_lr_img, adv_lr_txt: 1e-3 each (``--adv_lr_img 1e-3 --adv_lr_txt 1e-3``; GQA uses 1e-2), in
        the embeddings' own units (L2 over the whole sequence of one example).
    adv_max_norm: 0, no projection (``--adv_max_norm 0``); K - 1 steps of ``adv_lr`` bound the norm.
    kl_weight: alpha = 1.5 (``--adv_kl_weight 1.5``).
    modalities: ("image", "text"), one at a time (the paper; UNITER's ``adv_modality`` "alter";
        the LXMERT scripts perturb the text only, ``["text"]``).
    epochs, batch_size, lr: 4, 32, 5e-5 (``--epochs 4 --batchSize 32 --lr 5e-5``); AdamW (BERT's
        BertAdam, weight decay 0.01) with linear warm-up over ``warmup`` = 10% of the steps then
        cosine decay (BertAdam decays linearly).
    itc_weight: 1.0, the clean ITC term (ALBEF's unit weights).
    grad_clip: 1.0 (BertAdam's max_grad_norm).

Departures: ITM with ALBEF's hard negatives is the task (not VQA/NLVR2 answers); a clean ITC term
is kept (see above); VILLA's adversarial *pre-training* stage (on MLM/ITM/MRM) is not done: the
zoo's fusion model is pre-trained without it, so this is VILLA's adversarial fine-tuning (the
paper's ablations report both stages help, fine-tuning alone most of the gain); the embeddings
of the tiny world's models are larger in norm than BERT's (~7 per word vs ~1.4; image tokens
~11), so at the default 1e-3 the perturbations are relatively even smaller than in the paper --
``benchmarks/README.md`` reports the defaults and a step scaled to the embeddings' norm.

Data: an :class:`~mmsec.data.datasets.ImageTextData` with captions (N lists); each epoch pairs
every image with one of its captions drawn at random; a caption counts as matching image i when
it is one of image i's captions (never drawn as its negative).

Example::

    from mmsec.zoo import load_model; from mmsec.data.datasets import ShapesDataset
    result = VILLA(epochs=1, batch_size=64, lr=1e-4)(load_model("shapes-albef"),
                                                      ShapesDataset("train", n=1024).to_data())
    hardened = result.model
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import nn

from ...attacks.adversarial.fused_embedding import MODALITIES, l2_normalized_step, project_l2
from ...checks import check_budget, check_int
from ...data.datasets import ImageTextData
from ...models.towers import trainable_copy
from ...progress import progress_bar
from ...registry import register
from ...train.contrastive import clip_adamw, clip_loss, cosine_lr
from ...train.fusion import sample_hard_negatives
from ..base import DefenseResult, HardeningDefense

FUSION_PIECES = ("image_features", "text_token_embeddings", "text_hidden", "image_embedding", "text_embedding",
                 "fuse_features", "itm_head", "padding_mask", "tokenize", "logit_scale")


def symmetric_kl(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """KL(p || q) + KL(q || p) of the softmaxed (B, C) logits, summed over classes, mean over the batch."""
    log_p, log_q = F.log_softmax(logits.float(), -1), F.log_softmax(reference.float(), -1)
    return ((log_p.exp() - log_q.exp()) * (log_p - log_q)).sum(-1).mean()


def itm_pairs(model: nn.Module, pixels: torch.Tensor, captions: list[str], positives: torch.Tensor,
              generator: torch.Generator):
    """ALBEF's ITM pairs for a batch, and its clean ITC loss.

    Returns (itc, image_feats (P, N, W_img), text_embeds (P, L, W_txt), tokens (P, L), labels (P,)):
    the B matching pairs first, then the valid hard negatives (label 0).
    """
    tokens = model.tokenize(captions)  # (B, L)
    image_feats = model.image_features(pixels)  # (B, N, W_img)
    text_embeds = model.text_token_embeddings(tokens)  # (B, L, W_txt)
    image_emb = model.image_embedding(image_feats)
    text_emb = model.text_embedding(model.text_hidden(text_embeds, tokens))  # (B, D)
    itc = clip_loss(image_emb, text_emb, model.logit_scale)
    sim = model.logit_scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T  # (B, B)
    neg_text, neg_image, valid = sample_hard_negatives(sim.detach(), positives, generator)
    b = pixels.shape[0]
    keep = torch.cat([torch.ones(b, dtype=torch.bool, device=valid.device), valid, valid])  # (3B,)
    images = torch.cat([image_feats, image_feats, image_feats[neg_image]])[keep]
    texts = torch.cat([text_embeds, text_embeds[neg_text], text_embeds])[keep]
    toks = torch.cat([tokens, tokens[neg_text], tokens])[keep]
    labels = torch.cat([torch.ones(b), torch.zeros(2 * b)]).long().to(pixels.device)[keep]
    return itc, images, texts, toks, labels


@register("defenses", "villa")
class VILLA(HardeningDefense):
    """VILLA (Gan et al., NeurIPS 2020): FreeLB-style embedding-space adversarial fine-tuning with a KL term."""

    name = "villa"
    paper = "Gan et al., NeurIPS 2020"
    family = "fusion"  # needs the fusion encoder
    needs_labels = False  # image-caption pairs
    model_kind = "fusion"

    def __init__(self, adv_steps: int = 3,  # --adv_steps 3
                 adv_lr_img: float = 1e-3,  # --adv_lr_img 1e-3
                 adv_lr_txt: float = 1e-3,  # --adv_lr_txt 1e-3
                 adv_max_norm: float = 0.0,  # --adv_max_norm 0: unbounded
                 kl_weight: float = 1.5,  # --adv_kl_weight 1.5
                 modalities: tuple[str, ...] | list[str] | str = ("image", "text"),  # paper: both, alternately
                 epochs: int = 4,  # --epochs 4
                 batch_size: int = 32,  # --batchSize 32
                 lr: float = 5e-5,  # --lr 5e-5
                 weight_decay: float = 0.01,  # BertAdam
                 warmup: float = 0.1,  # BertAdam warmup 0.1
                 itc_weight: float = 1.0,  # ALBEF: unit loss weights
                 grad_clip: float = 1.0):  # BertAdam max_grad_norm
        self.adv_steps = check_int("adv_steps", adv_steps, 1)
        self.adv_lr_img = check_budget("adv_lr_img", adv_lr_img, 0.0, math.inf)
        self.adv_lr_txt = check_budget("adv_lr_txt", adv_lr_txt, 0.0, math.inf)
        self.adv_max_norm = check_budget("adv_max_norm", adv_max_norm, 0.0, math.inf, hint=" (0 = unbounded)")
        self.kl_weight = check_budget("kl_weight", kl_weight, 0.0, math.inf)
        modalities = (modalities,) if isinstance(modalities, str) else tuple(modalities)
        if not modalities or any(m not in MODALITIES for m in modalities) or len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be a non-empty subset of {MODALITIES}, got {modalities!r}")
        self.modalities = modalities
        self.epochs = check_int("epochs", epochs, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.lr = check_budget("lr", lr, 0.0, math.inf)
        if self.lr == 0:
            raise ValueError("lr must be > 0 (AdamW learning rate, e.g. 5e-5)")
        self.weight_decay = check_budget("weight_decay", weight_decay, 0.0, 1.0)
        self.warmup = check_budget("warmup", warmup, 0.0, 1.0, hint=" (a fraction of the steps)")
        self.itc_weight = check_budget("itc_weight", itc_weight, 0.0, math.inf)
        self.grad_clip = check_budget("grad_clip", grad_clip, 0.0, math.inf, hint=" (0 = no clipping)")

    def harden(self, model: nn.Module, data: ImageTextData, prompts: list[list[str]] | None,
               generator: torch.Generator) -> DefenseResult:
        missing = [p for p in FUSION_PIECES if not hasattr(model, p)]
        if missing:
            raise TypeError(f"VILLA needs a fusion model (mmsec.models.base.FusionModel with TinyALBEF's pieces); "
                            f"{type(model).__name__} lacks {', '.join(missing)}. Load one with `zoo:shapes-albef`.")
        if not data.captions:
            raise ValueError("VILLA trains on image-caption pairs: data.captions is empty")
        robust = trainable_copy(model)
        device = next(robust.parameters()).device
        n = len(data)
        per_epoch = max(1, n // self.batch_size)
        total = per_epoch * self.epochs
        opt = clip_adamw(robust, self.lr, self.weight_decay)
        warmup_steps = int(round(self.warmup * total))
        losses: list[float] = []
        start = time.perf_counter()
        robust.train()
        with progress_bar(total, "VILLA") as bar:
            for epoch in range(self.epochs):
                order = torch.randperm(n, generator=generator)
                for b in range(per_epoch):
                    step = epoch * per_epoch + b
                    for group in opt.param_groups:
                        group["lr"] = cosine_lr(step, total, self.lr, warmup_steps)
                    idx = order[b * self.batch_size:(b + 1) * self.batch_size].tolist()
                    loss = self._step(robust, data, idx, device, generator)
                    if self.grad_clip:
                        nn.utils.clip_grad_norm_(robust.parameters(), self.grad_clip)
                    opt.step()
                    opt.zero_grad(set_to_none=True)
                    losses.append(loss)
                    bar.advance(1, loss=f"{loss:.3f}")
        robust.eval()
        return DefenseResult(model=robust, losses=losses, seconds=time.perf_counter() - start, steps=total,
                             params=self.params(), extras={"epochs": self.epochs, "steps_per_epoch": per_epoch})

    def _step(self, model: nn.Module, data: ImageTextData, idx: list[int], device: torch.device,
              generator: torch.Generator) -> float:
        """One batch: back-propagate VILLA's accumulated loss (gradients land in ``.grad``); returns its value."""
        picks = torch.randint(0, 1 << 30, (len(idx),), generator=generator).tolist()
        captions = [data.captions[i][k % len(data.captions[i])] for i, k in zip(idx, picks, strict=True)]
        truth = [set(data.captions[i]) for i in idx]
        positives = torch.tensor([[c in t for c in captions] for t in truth], device=device)  # (B, B)
        itc, images, texts, toks, labels = itm_pairs(model, data.pixels[idx].to(device), captions, positives,
                                                     generator)
        clean = model.itm_head(model.fuse_features(images, texts, toks))  # (P, 2)
        keep = (~model.padding_mask(toks)).unsqueeze(-1).to(texts.dtype)  # (P, L, 1)
        deltas = {m: torch.zeros_like(images if m == "image" else texts) for m in self.modalities}
        lrs = {"image": self.adv_lr_img, "text": self.adv_lr_txt}
        k_steps, total = self.adv_steps, 0.0
        for k in range(k_steps):
            loss = self.itc_weight * itc if k == 0 else itc.new_zeros(())  # the clean ITC term, once
            for m, delta in deltas.items():
                delta.requires_grad_(True)
                if m == "image":
                    logits = model.itm_head(model.fuse_features(images + delta, texts, toks))
                else:
                    logits = model.itm_head(model.fuse_features(images, texts + delta * keep, toks))
                # At k = 0 the perturbation is zero: this is L_std (and the KL term is 0).
                loss = loss + (F.cross_entropy(logits, labels) + self.kl_weight * symmetric_kl(logits, clean)) / (
                    k_steps * len(deltas))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"VILLA loss became {loss.item()} (ITC {itc.item()})")
            last = k == k_steps - 1
            loss.backward(retain_graph=not last)  # parameter gradients accumulate over the K steps
            total += loss.item()
            if last:
                break
            for m, delta in deltas.items():
                with torch.no_grad():
                    moved = l2_normalized_step(delta, delta.grad, lrs[m])
                    if self.adv_max_norm > 0:
                        moved = project_l2(moved, self.adv_max_norm)
                    deltas[m] = moved * keep if m == "text" else moved
        return total


__all__ = ["VILLA", "itm_pairs", "symmetric_kl"]
