"""Image-text retrieval of row-aligned pairs, clean and attacked, and the attack success rate on it.

The setting of Co-Attack, SGA and the transfer matrix: N images with one caption each; every
image is a query against the N captions (image-to-text, TR) and every caption against the N images
(text-to-image, IR). After an attack the adversarial images and captions take the place of the
clean ones, in the queries and in the galleries. Ground truth is by *index*, fixed by the clean
data: ``positives[i, j]`` says caption j (as written before any attack) describes image i, so an
attack that rewrites a caption into a description of something else counts as a success for the
retrieval it breaks -- as in the papers; look at the substitutions (``TextAttackResult.changes``)
before reading a text attack's number as a semantic failure of the model.

Scores: the dual encoder's cosine similarity; for a fusion model (``itm_head``), ALBEF's
retrieval: the ITC top ``itm_k`` of each query re-ranked by the ITM "match" logit.

Attack success rate (ASR, SGA's and Co-Attack's R@1 reading): among the queries retrieved
correctly at rank 1 before the attack, the fraction that are not after it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..train.fusion import caption_positives  # (N, N): caption j is the same text as image i's caption


@dataclass
class PairRetrieval:
    """Rank-1 correctness of each query: i2t (N,) bool per image, t2i (N,) bool per caption."""

    i2t: torch.Tensor
    t2i: torch.Tensor

    @property
    def i2t_r1(self) -> float:
        return self.i2t.float().mean().item()

    @property
    def t2i_r1(self) -> float:
        return self.t2i.float().mean().item()


@torch.no_grad()
def pair_retrieval(model: nn.Module, pixels: torch.Tensor, captions: list[str], positives: torch.Tensor,
                   itm_k: int = 16, batch_size: int = 256) -> PairRetrieval:
    """Rank-1 retrieval of each image among the captions and of each caption among the images."""
    n = pixels.shape[0]
    if len(captions) != n or positives.shape != (n, n):
        raise ValueError(f"need N images, N captions and an (N, N) positives matrix; got {n}, {len(captions)}, "
                         f"{tuple(positives.shape)}")
    tokens = model.tokenize(captions)
    fusion = hasattr(model, "itm_head") and hasattr(model, "fuse_features")
    if fusion:
        feats = torch.cat([model.image_features(pixels[s:s + batch_size]) for s in range(0, n, batch_size)])
        embeds = torch.cat([model.text_token_embeddings(tokens[s:s + batch_size]) for s in range(0, n, batch_size)])
        img = model.image_embedding(feats)
        txt = torch.cat([model.text_embedding(model.text_hidden(embeds[s:s + batch_size], tokens[s:s + batch_size]))
                         for s in range(0, n, batch_size)])
    else:
        img = torch.cat([model.encode_image(pixels[s:s + batch_size]) for s in range(0, n, batch_size)])
        txt = torch.cat([model.encode_text(tokens[s:s + batch_size]) for s in range(0, n, batch_size)])
    sim = F.normalize(img.float(), dim=-1) @ F.normalize(txt.float(), dim=-1).T  # (N images, N captions)
    if fusion:
        from ..zoo.evaluate import itm_rerank

        i2t_scores = itm_rerank(model, sim, feats, embeds, tokens, itm_k, images_are_queries=True)
        t2i_scores = itm_rerank(model, sim.T, feats, embeds, tokens, itm_k, images_are_queries=False)
    else:
        i2t_scores, t2i_scores = sim, sim.T
    rows = torch.arange(n)
    i2t = positives[rows, i2t_scores.argmax(1)]  # image i's top caption describes it
    t2i = positives[t2i_scores.argmax(1), rows]  # caption j's top image is described by it
    return PairRetrieval(i2t, t2i)


def attack_success(clean: PairRetrieval, adv: PairRetrieval) -> dict[str, float]:
    """ASR per direction (and their mean) over the queries right before the attack, and the R@1s."""
    def asr(before: torch.Tensor, after: torch.Tensor) -> float:
        return ((before & ~after).sum() / before.sum().clamp_min(1)).item()

    tr, ir = asr(clean.i2t, adv.i2t), asr(clean.t2i, adv.t2i)
    return {"asr_i2t": tr, "asr_t2i": ir, "asr": (tr + ir) / 2, "clean_i2t_r1": clean.i2t_r1,
            "clean_t2i_r1": clean.t2i_r1, "adv_i2t_r1": adv.i2t_r1, "adv_t2i_r1": adv.t2i_r1}


__all__ = ["PairRetrieval", "attack_success", "caption_positives", "pair_retrieval"]
