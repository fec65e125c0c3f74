"""BadCLIP: "BadCLIP: Dual-Embedding Guided Backdoor Attack on Multimodal Contrastive Learning",
Siyuan Liang, Mingli Zhu, Aishan Liu, Baoyuan Wu, Xiaochun Cao, Ee-Chien Chang, CVPR 2024.

Threat model: data poisoning of a CLIP fine-tuning set by an attacker who has white-box access to
the clean pre-trained model ``Theta(0)`` (to optimise the trigger), a few clean images (some of the
target class) and the target class's natural captions; no control of the training itself.

Two stages:

1. Trigger optimisation on the clean model (:meth:`BadCLIP.optimise`), a patch ``delta`` stamped
   on non-target images ``v_i`` giving ``v^_i = v_i (+) delta``, minimising
   ``L = L_t + lambda_p * L_p + lambda_n * L_n`` where

   * ``L_t`` (textual embedding consistency): ``-sum_i log g(v^_i, T*_i) / sum_j g(v^_i, t_j)``, an
     InfoNCE in which ``g = exp(scale * cos)`` of the clean model, the positive ``T*_i`` is a natural
     caption of the target class and the ``t_j`` are that caption and the other classes' texts:
     the triggered image's embedding is pulled to the target's text, so learning the backdoor
     needs only small parameter changes;
   * ``L_p`` (visual embedding resistance, positive): ``sum_i d(f_v(v^_i), f_v(v*_i))``, the cosine
     distance ``d = 1 - cos`` between the triggered image and a natural target-class image ``v*_i``;
   * ``L_n`` (negative): ``-sum_i d(f_v(v^_i), f_v(v_i))``, pushing the triggered image away from the
     embedding of the non-target image it was stamped on,

   so the trigger *is* a natural target feature in the clean model's image space, and clean
   fine-tuning (which keeps real target images close to the target's text) cannot undo it.
2. Poisoning (:meth:`BadCLIP.poison`, as PBCL): stamped images paired with natural captions of the
   target class, added to the clean pairs (``X u P``); plugs into
   :func:`mmsec.train.poisoned.poisoned_finetune`.

Tensor shapes: ``pixels`` (N, 3, H, W) in [0, 1]; the optimised pattern is (3, h, w) in [0, 1].

Example (runs on the shipped world)::

    model, data = load_model("shapes-clip-resnet"), ShapesDataset("train", n=512).to_data()
    attack = BadCLIP("red circle", rate=0.01).use_captions(ShapesCaptions())
    attack.prepare(model, data)                                              # optimise on the attacker's data
    poisoned = attack(ShapesDataset("train", n=4096, start=512).to_data())   # PoisonedData(data, record)

Defaults and departures from the paper (the project's source text gives the losses but no weights
or optimiser settings; the values below are stated choices, not the paper's numbers):

* Patch: 4 x 4 px at the bottom right of the 32 px image (1/8 of the side, the project's calibrated
  patch, the same size and place as PBCL's checkerboard here, so the two differ only in the
  pattern). The paper's patch is 16 x 16 on 224 px images (~1/14), which would be 2 px here.
* Optimiser: Adam, lr 0.01, 300 steps of 64 triggered images, the pattern projected onto [0, 1]
  after each step (chosen for the 32 px world; not given by the source).
* Weights ``lambda_p = lambda_n = 1`` (the source names no weights).
* ``L_t``'s denominator: the paper's ``t_j`` are the captions of the poisoning batch; ``optimise``
  receives images only, so the negatives are the other classes' prompts (``templates`` over the
  class names of the data, or any ``negative_texts=``). The default templates ("a photo of a {}",
  "a {}", "a picture of a {}") give exactly the shapes world's zero-shot prompts.
* ``L_p`` pairs each triggered image with a random target-class image of the pool each step.
  ``v*`` comes from ``labels=`` when given, else from the clean model's own zero-shot predictions.
* Poisoning: the paper poisons images that are semantically close to the target; here the
  stamped images are random clean pairs, as PBCL's, so the comparison isolates the trigger.

World knowledge is the caller's: class names come from the data (``prepare``) or ``class_names=``;
the natural captions ``T*`` of the target from ``caption_set=``, else from a caption source handed
over with ``use_captions`` (the shapes world's: ``use_captions(ShapesCaptions())``, whose ``Y'`` is
every caption its templates say of the class), else from the attacker's data (its captions that
name the target, as PBCL's ``Y'``).

Measured caveat (recipes/badclip_persistence.yaml): the zoo CNN barely responds to a 4 x 4 patch
in the image corner, so the gradients there are near zero and the optimised pattern stays close to
its random mid-grey initialisation; such a low-contrast patch was not learnt at all by poisoned
fine-tuning (ASR 0 where the checkerboard reaches 0.99). Place the patch where the clean model
looks (e.g. ``position="center"``), where BadCLIP's backdoor outlived a strong clean fine-tuning
better than the checkerboard's.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...checks import check_budget, check_int, check_pixels
from ...data.datasets import ImageTextData
from ...models.base import require_contrastive
from ...models.zeroshot import ZeroShotClassifier, class_text_embeddings
from ...registry import register
from .pbcl import _check_mode, _check_target
from .poisoning import (
    Batches,
    PoisonedData,
    PoisonedStream,
    PoisoningAttack,
    captions_naming,
    check_caption_set,
    check_rate_count,
    poison_dataset,
    poison_stream,
    resolve_target,
)
from .triggers import OptimizedPatch, check_position

log = logging.getLogger(__name__)

# CLIP-style zero-shot templates over a class name; on the shapes world they are its own ZEROSHOT_TEMPLATES.
TEMPLATES = ("a photo of a {}", "a {}", "a picture of a {}")


def _check_templates(templates: Sequence[str]) -> tuple[str, ...]:
    if isinstance(templates, str) or not isinstance(templates, Sequence) or not templates or not all(
            isinstance(t, str) and t.count("{}") == 1 for t in templates):
        raise ValueError(f"templates must be a non-empty list of strings with one '{{}}' for the class name "
                         f"(e.g. ['a photo of a {{}}']), got {templates!r}")
    return tuple(templates)


@register("poisoning", "badclip")
class BadCLIP(PoisoningAttack):
    """BadCLIP's dual-embedding guided backdoor: an optimised natural patch + target captions.

    Args:
        target: the target class (name such as ``"red circle"`` or a label index).
        trigger: a precomputed :class:`OptimizedPatch` (skips :meth:`optimise`); default None.
        rate / count: poisoned pairs (fraction of the poisoned data set, or a number); default rate 0.01.
        caption_set: the target's natural captions ``T*`` (default: the caption source of ``use_captions``,
            else the attacker's captions that name the target).
        mode: ``"add"`` (``X u P``, default) or ``"replace"``.
        seed: seed of the poisoning choices (pairs, captions).
        patch_size: side of the patch in pixels (default 4, see the module docstring).
        position: where the patch goes (default ``"bottom_right"``, PBCL's place here).
        steps, lr, batch_size: the trigger optimisation (Adam; defaults 300, 0.01, 64).
        lambda_p, lambda_n: weights of the visual resistance terms (default 1, 1).
        templates: zero-shot prompt templates over a class name (the negatives of ``L_t`` and, without
            labels, the zero-shot predictions that find ``v*``); default :data:`TEMPLATES`.
    """

    name = "badclip"
    kind = "backdoor"
    family = "contrastive"  # prepare() optimises the trigger on the clean CLIP model
    paper = "Liang et al., CVPR 2024"

    def __init__(self, target: str | int, trigger: OptimizedPatch | None = None, rate: float | None = None,
                 count: int | None = None, caption_set: Sequence[str] | None = None, mode: str = "add",
                 seed: int = 0, patch_size: int = 4, position: str = "bottom_right", steps: int = 300,
                 lr: float = 0.01, batch_size: int = 64, lambda_p: float = 1.0, lambda_n: float = 1.0,
                 templates: Sequence[str] = TEMPLATES):
        if rate is None and count is None:
            rate = 0.01  # the project's calibrated fine-tuning poison rate (PBCL benchmark)
        self.rate, self.count = check_rate_count(rate, count)
        self.caption_set = check_caption_set(caption_set)
        self.target = _check_target(target)
        if trigger is not None and not isinstance(trigger, OptimizedPatch):
            raise TypeError(f"trigger must be a precomputed OptimizedPatch (e.g. from BadCLIP.optimise) or None, "
                            f"got {type(trigger).__name__}")
        self.trigger = trigger
        self.mode = _check_mode(mode)
        self.seed = check_int("seed", seed, 0)
        self.patch_size = check_int("patch_size", patch_size, 1)
        self.position = check_position(position)
        if self.position == "random":
            raise ValueError("position must be a fixed place for an optimised patch, got 'random'")
        self.steps = check_int("steps", steps, 1)
        self.lr = check_budget("lr", lr, 0.0, 10.0, hint=" (Adam learning rate on the [0, 1] pattern)")
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.lambda_p = check_budget("lambda_p", lambda_p, 0.0, 1e3)
        self.lambda_n = check_budget("lambda_n", lambda_n, 0.0, 1e3)
        self.templates = _check_templates(templates)
        self.loss_trace: dict[str, list[float]] = {}

    # --------------------------------------------------------------------------------------
    # Stage 1: the trigger
    # --------------------------------------------------------------------------------------
    def optimise(self, model: nn.Module, pixels: torch.Tensor, generator: torch.Generator | int | None = None,
                 labels: torch.Tensor | None = None, negative_texts: Sequence[str] | None = None,
                 class_names: Sequence[str] | None = None,
                 captions: Sequence[Sequence[str]] | None = None) -> OptimizedPatch:
        """Optimise the patch on the clean ``model`` with clean ``pixels`` (N, 3, H, W); returns it
        (also kept as ``self.trigger``; per-step losses in ``self.loss_trace``). ``labels`` (N,)
        marks the natural target images ``v*`` (default: the model's zero-shot predictions over the
        classes). ``class_names`` (default: the caption source's) name the classes; ``captions`` (the
        pixels' caption lists) give ``T*`` when neither ``caption_set`` nor a caption source does.
        Neither the model nor the pixels are modified."""
        require_contrastive(model, "BadCLIP.optimise")
        check_pixels(pixels, "pixels")
        g = generator if isinstance(generator, torch.Generator) else torch.Generator().manual_seed(
            0 if generator is None else check_int("generator", generator, 0))
        source = self.caption_source
        if class_names is None and source is not None and source.class_names is not None:
            class_names = list(source.class_names)
        name, label = resolve_target(self.target, class_names, caption_set=self.caption_set)
        positives = self._positives(name, captions)
        prompts = None if class_names is None else [[t.format(c) for t in self.templates] for c in class_names]
        if negative_texts is None:
            if label is None or prompts is None:
                raise ValueError("a target outside the known classes (or without class_names) needs negative_texts= "
                                 "(other classes' texts)")
            negative_texts = [p for c, group in enumerate(prompts) if c != label for p in group]
        negative_texts = check_caption_set(negative_texts)
        dev = pixels.device
        was_training = model.training
        model.eval()  # BatchNorm statistics must not move: the model is only read
        try:
            with torch.no_grad():
                if labels is None:
                    if label is None or prompts is None:
                        raise ValueError("a target outside the known classes (or without class_names) needs labels= "
                                         "(True/label per image)")
                    labels = ZeroShotClassifier(model, prompts).predict(pixels)
                labels = torch.as_tensor(labels, device=dev)
                if labels.shape != (pixels.shape[0],):
                    raise ValueError(f"labels must have shape ({pixels.shape[0]},) (one per image), "
                                     f"got {tuple(labels.shape)}")
                is_target = labels == label if labels.dtype != torch.bool else labels
                if int(is_target.sum()) == 0 or int((~is_target).sum()) == 0:
                    raise ValueError(f"pixels must hold natural target-class images (v*) and non-target images; "
                                     f"got {int(is_target.sum())} target and {int((~is_target).sum())} non-target")
                emb = F.normalize(model.encode_image(pixels).float(), dim=-1)  # (N, D) clean image embeddings
                target_emb, clean_emb = emb[is_target], emb[~is_target]  # (Nt, D), (Nn, D)
                pos_text = F.normalize(model.encode_text(model.tokenize(list(positives))).float(), dim=-1)  # (P, D)
                neg_text = class_text_embeddings(model, [[t] for t in negative_texts])  # (M, D)
            sources = pixels[~is_target]  # (Nn, 3, H, W)
            pattern = torch.rand(3, self.patch_size, self.patch_size, generator=g).to(dev).requires_grad_(True)
            trigger = OptimizedPatch(pattern, position=self.position)  # stamps the live pattern
            opt = torch.optim.Adam([pattern], lr=self.lr)
            scale = model.logit_scale.detach().float()
            trace: dict[str, list[float]] = {"loss": [], "text": [], "positive": [], "negative": []}
            for _ in range(self.steps):
                idx = torch.randint(0, sources.shape[0], (min(self.batch_size, sources.shape[0]),), generator=g)
                stamped = trigger(sources[idx.to(dev)])  # (B, 3, H, W), differentiable in the pattern
                v_hat = F.normalize(model.encode_image(stamped).float(), dim=-1)  # (B, D)
                t_star = pos_text[torch.randint(0, pos_text.shape[0], (idx.numel(),), generator=g).to(dev)]  # (B, D)
                logits = scale * torch.cat([(v_hat * t_star).sum(-1, keepdim=True), v_hat @ neg_text.T], 1)  # (B, 1+M)
                l_t = F.cross_entropy(logits, torch.zeros(idx.numel(), dtype=torch.long, device=dev))
                v_star = target_emb[torch.randint(0, target_emb.shape[0], (idx.numel(),), generator=g).to(dev)]
                l_p = (1 - (v_hat * v_star).sum(-1)).mean()  # d(f(v^), f(v*))
                l_n = -(1 - (v_hat * clean_emb[idx.to(dev)]).sum(-1)).mean()  # -d(f(v^), f(v))
                loss = l_t + self.lambda_p * l_p + self.lambda_n * l_n
                (grad,) = torch.autograd.grad(loss, [pattern])  # no .grad left on the model's parameters
                pattern.grad = grad
                opt.step()
                with torch.no_grad():
                    pattern.clamp_(0, 1)
                for k, v in zip(trace, (loss, l_t, l_p, l_n), strict=True):
                    trace[k].append(float(v.detach()))
        finally:
            model.train(was_training)
        log.info("BadCLIP trigger: loss %.3f -> %.3f over %d steps", trace["loss"][0], trace["loss"][-1], self.steps)
        self.loss_trace = trace
        self.trigger = OptimizedPatch(pattern.detach().cpu().clone(), position=self.position)
        return self.trigger

    def _positives(self, name: str, captions: Sequence[Sequence[str]] | None) -> list[str]:
        """``T*``: ``caption_set``, else the caption source's ``Y'``, else the given captions naming the target."""
        if self.caption_set is not None:
            return list(self.caption_set)
        if self.caption_source is not None:
            return list(self.caption_source.caption_set(name))
        found = [] if captions is None else captions_naming(captions, name)
        if not found:
            raise ValueError(f"BadCLIP needs natural captions T* of the target {name!r}: give caption_set=, a caption "
                             "source (attack.use_captions(...), e.g. ShapesCaptions() on the shapes world), or "
                             "attacker data whose captions name the target")
        return found

    def prepare(self, model: nn.Module, data: ImageTextData, generator: torch.Generator | int | None = None) -> None:
        """Stage 1 as runners call it: :meth:`optimise` on the attacker's clean ``data`` (its class names
        name the classes; its labels, when it has them, mark the natural target images; its captions
        give ``T*`` when no caption set or source does). Kept when a trigger was given."""
        if self.trigger is None:
            self.optimise(model, data.pixels, generator=generator, labels=data.labels, class_names=data.class_names,
                          captions=data.captions)

    # --------------------------------------------------------------------------------------
    # Stage 2: poisoning
    # --------------------------------------------------------------------------------------
    def _require_trigger(self) -> OptimizedPatch:
        if self.trigger is None:
            raise RuntimeError("BadCLIP has no trigger yet: call attack.optimise(model, pixels, generator) on the "
                               "clean model first, or pass trigger= (a precomputed OptimizedPatch)")
        return self.trigger

    def poison(self, data: ImageTextData) -> PoisonedData:
        return poison_dataset(data, self.target, trigger=self._require_trigger(), rate=self.rate, count=self.count,
                              caption_set=self.caption_set, mode=self.mode, seed=self.seed,
                              captions=self.caption_source)

    def poison_stream(self, batches: Batches, steps: int, batch_size: int) -> PoisonedStream:
        return poison_stream(batches, self.target, steps=steps, batch_size=batch_size,
                             trigger=self._require_trigger(), rate=self.rate, count=self.count,
                             caption_set=self.caption_set, seed=self.seed, captions=self.caption_source)


__all__ = ["BadCLIP"]
