"""SGA: Set-level Guidance Attack, transferable adversarial image-text pairs for vision-language models.

Paper: Dong Lu, Zhiqiang Wang, Teng Wang, Weili Guan, Hongchang Gao, Feng Zheng, "Set-level Guidance
Attack: Boosting Adversarial Transferability of Vision-Language Pre-training Models", ICCV 2023
(code: github.com/Zoky-2020/SGA, ``attacker.py``: ``SGAttacker``, ``ImageAttacker``, ``TextAttacker``,
and the ``eval_*.py`` scripts for the defaults).

Threat model: transfer. The attacker has white-box access to a *source* model and crafts each
(image, caption) pair there -- the image within an L-inf ball of radius ``eps`` (pixel units),
the caption by up to ``max_words`` word substitutions -- and the pairs are then scored on other,
unseen *target* models; untargeted: image-text retrieval should fail.

Idea: a pair crafted against one (image, caption) alignment over-fits the source model. SGA
guides each modality's perturbation by a *set* of the other's: the image by the set of its
captions (``caption_sets``: in Flickr30k / COCO the image's ground-truth captions, 5 each; in the
shapes world its caption templates), over a set of rescaled copies of itself (the
"scale-invariant" image set), and the caption by the adversarial image.

Algorithm (``SGAttacker.attack``), with f / g the source model's image / text towers, n L2
normalisation and cos(a, b) = n(a) . n(b):

1. Text set, guided by the clean image: every caption t_j of image i's set is attacked
   (:class:`~mmsec.attacks.text.BertAttack`, 1 word of 10 candidates): the words are ranked by
   importance, ``KL(softmax(n(g(t))) || softmax(n(g(t with the word masked))))`` as in Co-Attack
   (``importance="kl"``, the code's ``get_important_scores`` on the normalised ``text_feat``);
   visiting them from the most important, the substitute *minimising* ``cos(g(t'_j), f(x_i))`` is
   kept (the code's ``-txt_feat . img_feat``, arg-maxed; the current word is a candidate too, so
   a word no substitute helps is left and the next one tried).
   ``importance="guided"`` ranks the words by the same image-guided score instead (a variant, in
   neither the paper nor the code; on the shapes world from shapes-clip-resnet it picks colour and
   shape words rather than position words and transfers far better, see ``recipes/transfer.yaml``).
2. Image, guided by the adversarial text set, over the image set: L-inf PGD (``steps`` = 10 sign
   steps of ``step_size`` from a uniform random start in [-eps, eps], images kept in [0, 1])
   maximising
       L(x') = - sum_{s in {1} + scales} sum_{j in set(i)} cos(f(h_s(x')), g(t'_j))
   where h_1 is the identity and h_s (s in ``scales`` = 0.5, 0.75, 1.25, 1.5) adds Gaussian noise
   (std ``noise_std`` = 0.05, fresh at each step), resizes to s times the side (bicubic), clamps
   to [0, 1] and resizes back (bicubic): the gradient is summed over the scales.
3. Text, guided by the adversarial image: each pair's caption is attacked again, from the clean
   caption, to minimise ``cos(g(t'), f(x'_i))`` (the adversarial image at its own scale only).

The returned pair is (x' of step 2, t' of step 3); step 1's adversarial captions only guide the
image (kept in :attr:`SGAResult.guide_texts`).

Unimodal embeddings throughout: dual encoders (CLIP) are attacked through ``encode_image`` /
``encode_text``, and so are fusion models (ALBEF, TCL): the code attacks them through their
image-text contrastive (ITC) features ``image_feat`` / ``text_feat``, which are this package's
``encode_image`` / ``encode_text``, never through the fused embedding.

Defaults (the code's ``eval_*.py``): eps 2/255, steps 10, step 0.5/255, scales 0.5, 0.75, 1.25,
1.5, noise std 0.05, text: 1 word of 10 candidates; caption set: up to ``max_captions`` = 5 captions
per image (Flickr30k's 5 ground-truth captions), the pair's own caption first.

Departures:

* ``step_size`` defaults to ``eps / 4``: the code's 0.5/255 at its eps of 2/255, scaled with other
  budgets (the code keeps 0.5/255, which at 8/255 could not reach the ball's boundary in 10 steps).
* Caption sets larger than ``max_captions``: the pair's caption plus the ``max_captions - 1`` others
  most similar to the clean image on the source model (the paper builds the set from the image's
  most matching captions; Flickr / COCO have exactly 5 and the code takes them all). Without ``caption_sets`` the set is
  the pair's caption alone (the paper's M = 1 ablation).
* The code also re-attacks every caption of the set in step 3 (all of them are in its retrieval
  gallery); here only the pairs' captions are returned, so only they are attacked.
* Candidate words: lexical neighbours (from the caller's word groups, ``neighbours=``, e.g. the
  shapes world's ``shapes_lexical_groups()``) and typos unless a masked LM is passed
  (``candidates``; see :mod:`mmsec.attacks.text`); the text attack is a component
  (``text_attack``), as for :class:`~mmsec.attacks.multimodal.CoAttack`. Note that lexical
  neighbours of the shapes world rewrite a colour into another colour, which "breaks" retrieval
  by changing the caption's meaning; measure with ``candidates="typos"``.
* The resizes are ``torch.nn.functional.interpolate(mode="bicubic")`` without anti-aliasing (what
  torchvision 0.15's ``Resize`` did on tensors); the random draws come from ``generator``.

Shapes: ``pixels`` (B, 3, H, W) in [0, 1]; ``captions`` B strings, row-aligned with the images;
``caption_sets`` optionally B lists of captions (the image's other captions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_budget, check_int, check_pixels, make_generator
from ...registry import register
from ..embedding_losses import softmax_kl
from ..projection import project
from ..text.base import TextAttack
from ..text.bert_attack import Score, text_tower_embedder
from .base import PairAttack, text_attack_from, text_params
from .co_attack import MultimodalAttackResult

SCALES = (0.5, 0.75, 1.25, 1.5)


@dataclass
class SGAResult(MultimodalAttackResult):
    """:class:`MultimodalAttackResult` plus the caption sets that guided the image.

    Attributes:
        caption_sets: per image, the clean caption set used (the pair's caption first).
        guide_texts: per image, the adversarial caption set of step 1 (guided by the clean image).
    """

    caption_sets: list[list[str]] = field(default_factory=list)
    guide_texts: list[list[str]] = field(default_factory=list)


def _parse_scales(scales: Sequence[float] | str | None) -> tuple[float, ...]:
    if scales is None:
        return ()
    if isinstance(scales, str):  # the code's command line: "0.5,0.75,1.25,1.5"
        try:
            scales = [float(s) for s in scales.split(",") if s.strip()]
        except ValueError:
            raise ValueError(f"scales must be numbers such as '0.5,0.75,1.25,1.5', got {scales!r}") from None
    out = []
    for s in scales:
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not (0 < s <= 8):
            raise ValueError(f"scales must be resize factors in (0, 8], got {s!r}")
        out.append(float(s))
    return tuple(out)


def away_from(reference: torch.Tensor) -> Score:
    """SGA's text score: ``-cos(e, reference[row])`` of each candidate embedding (higher = further away)."""
    ref = F.normalize(reference.detach().float(), dim=-1)  # (B, D)

    def score(embeds: torch.Tensor, row: int) -> torch.Tensor:
        return -(F.normalize(embeds.float(), dim=-1) @ ref[row])  # (n,)

    return score


def kl_from_normalised(reference: torch.Tensor) -> Score:
    """SGA's word importance: ``KL(softmax(n(reference[row])) || softmax(n(e)))`` on normalised features."""
    ref = F.normalize(reference.detach().float(), dim=-1)

    def score(embeds: torch.Tensor, row: int) -> torch.Tensor:
        return softmax_kl(ref[row], F.normalize(embeds.float(), dim=-1))

    return score


IMPORTANCE = ("kl", "guided")


@register("pair_attacks", "sga")
class SGA(PairAttack):
    """Set-level Guidance Attack (Lu et al., ICCV 2023): transferable adversarial image-text pairs.

    Args:
        eps, steps, step_size: the image's L-inf budget and PGD (2/255, 10, eps / 4).
        scales, noise_std: the scale-invariant image set (0.5, 0.75, 1.25, 1.5; noise std 0.05).
        max_captions: captions per image's set (5).
        text_attack: the text attack (default ``BertAttack()``, built from the shortcuts below).
        candidates, max_words, k, neighbours: shortcuts for the default text attack's settings (None:
            BertAttack's defaults); folded into ``text_attack`` (then stored as None).
        importance: how words are ranked: "kl" (the code's) or "guided" (see the module docstring).
        random_start: start PGD uniformly in [-eps, eps] (the code's).
        batch_size: images per PGD batch.
    """

    name = "sga"
    paper = "Lu et al., ICCV 2023"
    threat_model = "transfer (white-box on the source model)"

    def __init__(self, eps: float = 2 / 255, steps: int = 10, step_size: float | None = None,
                 scales: Sequence[float] | str | None = SCALES, noise_std: float = 0.05,
                 max_captions: int = 5, text_attack: TextAttack | str | dict | None = None,
                 candidates: str | None = None, max_words: int | None = None, k: int | None = None,
                 neighbours: list[list[str]] | None = None, importance: str = "kl", random_start: bool = True,
                 batch_size: int = 128):
        self.eps = check_budget("eps", eps)
        self.steps = check_int("steps", steps, 1)
        self.step_size = self.eps / 4 if step_size is None else check_budget("step_size", step_size)
        self.scales = _parse_scales(scales)
        self.noise_std = check_budget("noise_std", noise_std, 0.0, 1.0, hint=" (std of the Gaussian noise "
                                      "added to the rescaled copies, pixel units; the code's 0.05)")
        self.max_captions = check_int("max_captions", max_captions, 1)
        self.text_attack = text_attack_from(text_attack, candidates, max_words, k, neighbours)
        self.candidates = self.max_words = self.k = self.neighbours = None  # folded into text_attack
        if importance not in IMPORTANCE:
            raise ValueError(f"importance must be one of {IMPORTANCE}, got {importance!r}")
        self.importance = importance
        self.random_start = bool(random_start)
        self.batch_size = check_int("batch_size", batch_size, 1)

    def params(self) -> dict:
        text = text_params(self.text_attack)
        return {"eps": self.eps, "steps": self.steps, "step_size": self.step_size, "scales": list(self.scales),
                "noise_std": self.noise_std, "max_captions": self.max_captions, "importance": self.importance,
                "norm": "linf", "embedding": "unimodal", **text}

    def __call__(self, model: nn.Module, pixels: torch.Tensor, captions: list[str],
                 generator: torch.Generator | int | None = None,
                 caption_sets: Sequence[Sequence[str]] | None = None) -> SGAResult:
        check_pixels(pixels, "pixels")
        n = pixels.shape[0]
        if len(captions) != n:
            raise ValueError(f"captions must be row-aligned with pixels: {len(captions)} captions for "
                             f"{n} images")
        for attr in ("encode_image", "encode_text", "tokenize"):
            if not callable(getattr(model, attr, None)):
                raise TypeError(f"SGA needs a model with encode_image, encode_text and tokenize (a "
                                f"ContrastiveModel, or a FusionModel's unimodal towers); "
                                f"{type(model).__name__} lacks {attr}")
        generator = make_generator(generator)
        pixels = pixels.detach()
        embed = text_tower_embedder(model)
        with torch.no_grad():
            clean_img = self._encode_images(model, pixels)  # (B, D), normalised
        sets = self._caption_sets(model, captions, caption_sets, clean_img)

        # 1. the caption sets, each caption guided away from its clean image
        flat = [t for s in sets for t in s]
        owner = torch.tensor([i for i, s in enumerate(sets) for _ in s])
        guide = self._text(embed, flat, clean_img[owner]).adv_texts
        bounds = torch.tensor([0, *[len(s) for s in sets]]).cumsum(0).tolist()
        guide_sets = [guide[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]

        # 2. the image, guided away from its adversarial caption set, over the scaled image set
        bs = self.batch_size
        chunks = [self._image(model, pixels[s:s + bs], guide_sets[s:s + bs], generator) for s in range(0, n, bs)]
        adv_pixels = torch.cat([c[0] for c in chunks])
        trace = torch.cat([c[1] for c in chunks], dim=1)

        # 3. the pairs' clean captions, guided away from the adversarial image
        with torch.no_grad():
            adv_img = self._encode_images(model, adv_pixels)
        text_result = self._text(embed, list(captions), adv_img)
        return SGAResult(adv_pixels, text_result.adv_texts, text_result, trace, self.params(),
                         caption_sets=sets, guide_texts=guide_sets)

    def _text(self, embed, texts: list[str], images: torch.Tensor):
        """The text attack on ``texts``, text j guided away from the (normalised) image ``images[j]``."""
        choose = away_from(images)
        if self.importance == "guided":
            return self.text_attack(embed, texts, score=choose)
        with torch.no_grad():
            original = torch.cat([embed(texts[s:s + self.batch_size], [])
                                  for s in range(0, len(texts), self.batch_size)])
        return self.text_attack(embed, texts, score=choose, importance=kl_from_normalised(original))

    def _encode_images(self, model, pixels: torch.Tensor) -> torch.Tensor:
        return F.normalize(torch.cat([model.encode_image(pixels[s:s + self.batch_size]).float()
                                      for s in range(0, pixels.shape[0], self.batch_size)]), dim=-1)

    def _caption_sets(self, model, captions: list[str], caption_sets,
                      clean_img: torch.Tensor) -> list[list[str]]:
        """Per image: its caption, then up to ``max_captions - 1`` others, the most similar to the image."""
        if caption_sets is None:
            return [[c] for c in captions]
        if isinstance(caption_sets, str) or len(caption_sets) != len(captions):
            got = "a string" if isinstance(caption_sets, str) else f"{len(caption_sets)} sets"
            raise ValueError(f"caption_sets must be row-aligned with pixels (one list of captions per "
                             f"image): {got} for {len(captions)} images")
        sets = []
        for i, (cap, extra) in enumerate(zip(captions, caption_sets, strict=True)):
            if isinstance(extra, str) or not all(isinstance(t, str) and t.strip() for t in extra):
                raise ValueError(f"caption_sets[{i}] must be a list of non-empty strings, got {extra!r}")
            others = [t for t in dict.fromkeys(extra) if t != cap]
            if len(others) > self.max_captions - 1:
                with torch.no_grad():
                    txt = F.normalize(model.encode_text(model.tokenize(others)).float(), dim=-1)
                keep = sorted((txt @ clean_img[i]).argsort(descending=True)[: self.max_captions - 1].tolist())
                others = [others[j] for j in keep]
            sets.append([cap, *others])
        return sets

    def scaled(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The image set: ``x`` then its noisy rescaled copies, ((1 + len(scales)) * B, 3, H, W)."""
        h, w = x.shape[-2:]
        out = [x]
        for s in self.scales:
            noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x) * self.noise_std
            small = F.interpolate(x + noise, size=(max(1, int(s * h)), max(1, int(s * w))), mode="bicubic",
                                  align_corners=False).clamp(0, 1)
            out.append(F.interpolate(small, size=(h, w), mode="bicubic", align_corners=False))
        return torch.cat(out)

    def _image(self, model, x: torch.Tensor, guide_sets: list[list[str]],
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        texts = [t for s in guide_sets for t in s]
        owner = torch.tensor([i for i, s in enumerate(guide_sets) for _ in s])
        with torch.no_grad():
            txt = F.normalize(model.encode_text(model.tokenize(texts)).float(), dim=-1)  # (T, D)
        member = (owner[None, :] == torch.arange(b)[:, None]).float()  # (B, T): caption j is image i's
        if self.random_start:  # the code: uniform in [-eps, eps], clipped to the image range
            start = torch.rand(x.shape, generator=generator, device=generator.device).to(x) * 2 - 1
            adv = (x + start * self.eps).clamp(0, 1)
        else:
            adv = x.clone()
        trace = []
        for _ in range(self.steps):
            adv.requires_grad_(True)
            img = F.normalize(model.encode_image(self.scaled(adv, generator)).float(), dim=-1)  # (S*B, D)
            sim = (img @ txt.T).view(-1, b, txt.shape[0])  # (S, B, T)
            loss = -(sim * member).sum(dim=(0, 2))  # (B,): away from each caption of the set, at each scale
            grad, = torch.autograd.grad(loss.sum(), adv)
            trace.append(loss.detach())
            with torch.no_grad():
                adv = project(adv + self.step_size * grad.sign(), x, self.eps, "linf")
        return adv.detach(), torch.stack(trace)


__all__ = ["IMPORTANCE", "SCALES", "SGA", "SGAResult", "away_from", "kl_from_normalised"]
