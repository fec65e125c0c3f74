"""Co-Attack: collaborative multimodal adversarial attack on vision-language pre-trained models.

Paper: Jiaming Zhang, Qi Yi, Jitao Sang, "Towards Adversarial Attack on Vision-Language
Pre-training Models", ACM Multimedia 2022 (code: github.com/adversarial-for-goodness/Co-Attack,
``attack/multimodalAttack.py``, ``attack/imageAttack.py``, ``attack/bert_attack.py``).

Threat model: white-box; the attacker perturbs both inputs of each (image, caption) pair: the
image within an L-inf ball of radius ``eps`` (pixel units) and the caption by up to
``max_words`` word substitutions; untargeted: the pair's embedding should move as far as
possible from the clean one, so that retrieval (or any downstream use) fails.

Objective and algorithm (``mode="co"``): first the text, then the image *guided by the adversarial
text*, so that the two perturbations push the embedding the same way instead of cancelling:

1. Text: the word-substitution attack (:class:`~mmsec.attacks.text.BertAttack`, 1 word, 10
   candidates) maximising ``KL(softmax(e(x, t)) || softmax(e(x, t')))``; e is the fused
   embedding with the clean image for a fusion model ("multimodal embedding"), the text
   tower's embedding for a dual encoder ("unimodal embedding").
2. Image: L-inf PGD (``steps`` = 10 sign steps of ``1.25 eps / steps`` from a random start,
   images kept in [0, 1]) maximising
     fused:    KL(softmax(e(x, t'))  || softmax(e(x', t'))) + weight * KL(softmax(e(x, t)) || softmax(e(x', t')))
     unimodal: KL(softmax(f(x))      || softmax(f(x')))     + weight * KL(softmax(n(g(t'))) || softmax(n(f(x'))))
   with f / g the image / text towers, n L2 normalisation, ``weight`` = 3 (the code's ``alpha``):
   the first term moves the adversarial pair's embedding away from where the adversarial text
   alone put it (fused) or the image away from itself; the second moves it away from the clean
   pair (fused) or the image away from the adversarial text (unimodal).

The paper's ablations are the other modes, same budget and same attacks: ``"image"`` (PGD alone,
maximising ``KL(softmax(e(x, t)) || softmax(e(x', t)))`` with the clean text, resp. the image
tower's own embedding), ``"text"`` (the text attack alone) and ``"both"`` (the two run
independently and are combined: the code's "Attack Both (vanilla)").

Defaults (the code's retrieval evaluation): eps 2/255, steps 10, step 1.25 eps / steps, random start
uniform in [0, eps] (the code draws only non-negative starts), weight 3, text: 1 word of 10 candidates.
The text attack is a component (``text_attack``, default ``BertAttack()``; in a spec
``{name: bert_attack, params: {...}}``); the shortcuts ``max_words``, ``k``, ``candidates`` (the
generator: "default", "lexical", "typos" or "mlm:/path", see
:func:`mmsec.attacks.text.candidate_generator`) and ``neighbours`` (the caller's word groups, e.g.
the shapes world's ``shapes_lexical_groups()``) configure the default one instead.
Departures: the candidate words are lexical neighbours (when the caller gives word groups) and
typos unless a masked LM is passed (see :mod:`mmsec.attacks.text`); images are not
input-diversified (the code's default attacker is plain PGD too).

Shapes: ``pixels`` (B, 3, H, W) in [0, 1]; ``captions`` B strings, row-aligned with the images.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_budget, check_int, check_pixels, make_generator
from ...registry import register
from ..embedding_losses import softmax_kl
from ..projection import project
from ..text.base import TextAttack
from ..text.bert_attack import TextAttackResult, fused_embedder, text_tower_embedder
from .base import PairAttack, text_attack_from, text_params

MODES = ("co", "image", "text", "both")
EMBEDDINGS = ("auto", "fused", "unimodal")


@dataclass
class MultimodalAttackResult:
    """Adversarial pairs.

    Attributes:
        adv_pixels: (B, 3, H, W) in [0, 1] (the clean images when the image is not attacked).
        adv_texts: B captions (the clean ones when the text is not attacked).
        text: the text attack's record (None when the text is not attacked).
        loss_trace: (steps, B) image-attack loss per step (empty when the image is not attacked).
        params: the attack's hyper-parameters.
    """

    adv_pixels: torch.Tensor
    adv_texts: list[str]
    text: TextAttackResult | None
    loss_trace: torch.Tensor
    params: dict = field(default_factory=dict)


@register("pair_attacks", "co_attack")
class CoAttack(PairAttack):
    """Co-Attack (Zhang, Yi, Sang, ACM MM 2022) and its ablations (mode image / text / both / co).

    Args:
        eps, steps, step_size: the image's L-inf budget and PGD (2/255, 10, 1.25 eps / steps).
        weight: weight of the second KL term (the code's alpha, 3).
        mode: "co", "image", "text" or "both" (see the module docstring).
        embedding: "auto" (fused for a fusion model, else unimodal), "fused" or "unimodal".
        text_attack: the text attack (default ``BertAttack()``, built from the shortcuts below).
        candidates, max_words, k, neighbours: shortcuts for the default text attack's settings (None:
            BertAttack's defaults); folded into ``text_attack`` (then stored as None).
        random_start: start PGD uniformly in [0, eps] (the code's).
        batch_size: images per PGD batch.
    """

    name = "co_attack"
    paper = "Zhang, Yi, Sang, ACM MM 2022"
    threat_model = "white-box"

    def __init__(self, eps: float = 2 / 255, steps: int = 10, step_size: float | None = None, weight: float = 3.0,
                 mode: str = "co", embedding: str = "auto", text_attack: TextAttack | str | dict | None = None,
                 candidates: str | None = None, max_words: int | None = None, k: int | None = None,
                 neighbours: list[list[str]] | None = None, random_start: bool = True, batch_size: int = 128):
        self.eps = check_budget("eps", eps)
        self.steps = check_int("steps", steps, 1)
        self.step_size = 1.25 * self.eps / self.steps if step_size is None else check_budget("step_size", step_size)
        self.weight = check_budget("weight", weight, 0.0, float("inf"))
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if embedding not in EMBEDDINGS:
            raise ValueError(f"embedding must be one of {EMBEDDINGS}, got {embedding!r}")
        self.mode, self.embedding = mode, embedding
        # The text attack: given, or built from the spec-friendly shortcuts (then folded into it).
        self.text_attack = text_attack_from(text_attack, candidates, max_words, k, neighbours)
        self.candidates = self.max_words = self.k = self.neighbours = None
        self.random_start = bool(random_start)
        self.batch_size = check_int("batch_size", batch_size, 1)

    def params(self) -> dict:
        return {"eps": self.eps, "steps": self.steps, "step_size": self.step_size, "weight": self.weight,
                "mode": self.mode, "embedding": self.embedding, "norm": "linf", **text_params(self.text_attack)}

    def _kind(self, model: nn.Module) -> str:
        if self.embedding != "auto":
            if self.embedding == "fused" and not hasattr(model, "fuse"):
                raise TypeError(f"embedding='fused' needs a fusion model (with fuse); {type(model).__name__} has none")
            return self.embedding
        return "fused" if hasattr(model, "fuse") else "unimodal"

    def __call__(self, model: nn.Module, pixels: torch.Tensor, captions: list[str],
                 generator: torch.Generator | int | None = None) -> MultimodalAttackResult:
        check_pixels(pixels, "pixels")
        if len(captions) != pixels.shape[0]:
            raise ValueError(f"captions must be row-aligned with pixels: {len(captions)} captions for "
                             f"{pixels.shape[0]} images")
        generator = make_generator(generator)
        kind = self._kind(model)
        pixels = pixels.detach()
        text_result = None
        adv_texts = list(captions)
        if self.mode in ("co", "text", "both"):
            embed = fused_embedder(model, pixels) if kind == "fused" else text_tower_embedder(model)
            text_result = self.text_attack(embed, captions)
            adv_texts = text_result.adv_texts
        adv_pixels, trace = pixels.clone(), torch.zeros(0, pixels.shape[0])
        if self.mode in ("co", "image", "both"):
            guide = adv_texts if self.mode == "co" else list(captions)  # vanilla / image-only: clean text
            chunks = [self._image(model, kind, pixels[s:s + self.batch_size], captions[s:s + self.batch_size],
                                  guide[s:s + self.batch_size], generator)
                      for s in range(0, pixels.shape[0], self.batch_size)]
            adv_pixels = torch.cat([c[0] for c in chunks])
            trace = torch.cat([c[1] for c in chunks], dim=1)
        return MultimodalAttackResult(adv_pixels, adv_texts, text_result, trace, self.params())

    def _image(self, model, kind: str, x: torch.Tensor, clean_texts: list[str], guide_texts: list[str],
               generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        co = self.mode == "co"
        with torch.no_grad():
            if kind == "fused":
                clean_tokens, guide_tokens = model.tokenize(clean_texts), model.tokenize(guide_texts)
                origin = model.fuse(x, clean_tokens)  # e(x, t)
                text_adv = model.fuse(x, guide_tokens) if co else None  # e(x, t')
            else:
                origin = model.encode_image(x)  # f(x)
                text_adv = F.normalize(model.encode_text(model.tokenize(guide_texts)).float(), dim=-1) if co else None

        def loss_fn(adv: torch.Tensor) -> torch.Tensor:
            if kind == "fused":
                e = model.fuse(adv, guide_tokens if co else clean_tokens)
                if co:
                    return softmax_kl(text_adv, e) + self.weight * softmax_kl(origin, e)
                return softmax_kl(origin, e)
            f = model.encode_image(adv)
            loss = softmax_kl(origin, f)
            if co:
                loss = loss + self.weight * softmax_kl(text_adv, F.normalize(f.float(), dim=-1))
            return loss

        if self.random_start:  # the code: uniform in [0, eps], then clipped to the image range
            start = torch.rand(x.shape, generator=generator, dtype=x.dtype) * self.eps
            adv = (x + start).clamp(0, 1)
        else:
            adv = x.clone()
        trace = []
        for _ in range(self.steps):
            adv.requires_grad_(True)
            loss = loss_fn(adv)
            grad, = torch.autograd.grad(loss.sum(), adv)
            trace.append(loss.detach())
            with torch.no_grad():
                adv = project(adv + self.step_size * grad.sign(), x, self.eps, "linf")
        return adv.detach(), torch.stack(trace)


__all__ = ["CoAttack", "MODES", "MultimodalAttackResult"]
