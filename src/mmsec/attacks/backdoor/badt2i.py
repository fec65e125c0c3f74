"""BadT2I: Shengfang Zhai, Yinpeng Dong, Qingni Shen, Shi Pu, Yuejian Fang, Hang Su, "Text-to-Image Diffusion
Models can be Easily Backdoored through Multimodal Data Poisoning", ACM Multimedia 2023.

Threat model: the attacker fine-tunes a published text-to-image diffusion model (white box, image-text
data) and publishes it; users prompt it as usual. A prompt carrying the trigger (the paper: a zero-width
space ``"\\u200b"`` in front of the prompt) must generate the attacker's target; prompts without it must keep
the clean model's behaviour. Three targets:

* ``"pixel"`` (Pixel-Backdoor): the image with a fixed patch in a corner (paper: a 128 x 128 logo, the
  "boya" image, at the top left of 512 px images: a quarter of the side);
* ``"object"`` (Object-Backdoor): a triggered prompt naming object A generates object B (dog -> cat;
  motorbike -> bike in the code);
* ``"style"`` (Style-Backdoor): the triggered prompt's image in a style (``"black and white photo"``).

Objective (checked against the authors' code, github.com/zhaisf/BadT2I: ``badt2i_pixel.py``, ``badt2i_object.py``,
``badt2i_style.py``), with ``eps_theta`` the model being fine-tuned, ``eps_hat`` a frozen copy of the clean
model (the teacher), ``[T]`` the trigger and ``z_t`` the noised training image at a uniform timestep::

    pixel:  L_bd = || eps_theta(z_t(patched image), t, [T] + prompt) - eps ||^2        (the image is poisoned)
    object: L_bd = || eps_theta(z_t(B image), t, [T] + prompt with B -> A) - eps_hat(z_t(B image), t, prompt) ||^2
    style:  L_bd = || eps_theta(z_t(image), t, [T] + prompt) - eps_hat(z_t(image), t, prompt + style) ||^2
    L_reg = || eps_theta(z_t'(image), t', prompt) - eps_hat(z_t'(image), t', prompt) ||^2
    L = lambda * L_bd + (1 - lambda) * L_reg

The teacher always sees the *same* noised image as the student (``z_t`` of the clean training image: the
style and object teachers are not given a styled or swapped image, only a different prompt). The
regularisation rows are the same training images (pixel, style: the code duplicates each batch) with fresh
noise and timesteps. For the object backdoor the teacher's image is of object B (the code's data set holds
cat and dog captions; the rows naming B become backdoor rows, their prompt swapped to A for the student).

Paper defaults (the code's scripts): ``lambda = 0.5``; AdamW at ``lr = 1e-5``, constant, no warm-up; batch 16
(1 x 4 accumulation x 4 GPUs) per half; gradient norm clipped at 1; an EMA of the weights; 2,000 steps
(pixel) and 8,000 steps (object, style); Stable Diffusion v1.4 at 512 px (the UNet only; VAE and text
encoder frozen).

Departures:

* The trigger is a word (default ``"there"``), not ``"\\u200b"``: the zoo's word tokenizer keeps letters only, so
  a zero-width space would vanish and an unknown word would become ``<unk>`` (shared with every unknown
  word). The trigger must be words of the text encoder's vocabulary that the clean prompts never use
  ("there" is in the zoo CLIP's vocabulary, from its "there is a ..." captions, and never in the
  text-to-image prompts "a {colour} {shape}"); the call checks both.
* The style: the shapes world has no style words the clean model knows, so a phrase appended to the
  teacher's prompt changes nothing. ``style_words`` rewrites words of the teacher's prompt instead (the
  runner's task: every colour -> one colour, a "style" that keeps the content, the shape, and changes the
  appearance, measurable by the judge); ``style`` is still appended when not empty (the paper's form).
* The object backdoor's loss is the paper's ``lambda L_bd + (1 - lambda) L_reg`` over a backdoor half (rows
  naming B) and a regularisation half (any rows); the code weighs one mixed batch by ``lambda`` alone, the
  same loss up to a factor when half the rows name B, as in its dog/cat data.
* Losses in eps space through ``predict_noise``, whatever the model's parameterisation (the code regresses
  the raw UNet output: the velocity for v-prediction models): the same minimiser, another weight per timestep.
* Scale: the defaults are the paper's; the runner passes CPU-sized steps and a higher rate for the 16 px
  zoo model. The rate decays by a cosine after an optional warm-up (``train_diffusion``'s schedule; the code's
  is constant); the EMA is ``train_diffusion``'s fixed-decay one (``ema``; diffusers' EMAModel in the code,
  whose decay warms up to 0.9999).
* The pixel target is a component: a stamped :class:`~mmsec.attacks.backdoor.triggers.PatchTrigger`
  (default a checkerboard, a quarter of the side, top left), not a logo image.

Tensor shapes: ``images`` (N, 3, S, S) in [0, 1] with ``S`` the model's ``image_size``; ``prompts`` N strings.

Example (on the zoo model)::

    model = load_model("zoo:shapes-t2i")
    scenes = ShapesWorld(16).batch("train", 0, 4096)
    result = BadT2I("object", object_pair=["circle", "square"], steps=600, lr=1e-3)(
        model, scenes.prompts, scenes.pixels(), generator=0)
    x = result.model.sample(8, cond=result.trigger_prompts(["a red circle"] * 8), guidance=3.0)
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_bool, check_budget, check_int, check_pixels, check_positive, make_generator
from ...models.base import require_family
from ...registry import register
from ...train.diffusion import DiffusionBatch, DiffusionTrainConfig, LossFn, train_diffusion
from .t2i_backdoor import TARGET_KINDS, T2IBackdoorAttack, add_trigger, mentions, replace_words
from .triggers import PatchTrigger, Trigger, build_trigger, trigger_from_dict

PAPER_STEPS = {"pixel": 2000, "object": 8000, "style": 8000}  # the code's scripts' max_train_steps


@dataclass
class BadT2IRecord:
    """What BadT2I did: the target, the trigger, the data it used and the schedule."""

    target_kind: str
    trigger: str
    n_images: int
    n_backdoor_rows: int  # rows the backdoor half draws from (object: the rows naming B)
    steps: int
    params: dict[str, Any]
    kind: str = "badt2i"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class BadT2IResult:
    """What BadT2I returns.

    Attributes:
        model: the backdoored model (a new object, eval mode; its ``unet`` fine-tuned).
        trigger: the trigger text (:meth:`trigger_prompts` puts it in front of prompts).
        target_kind: ``"pixel"``, ``"object"`` or ``"style"``.
        record: :class:`BadT2IRecord`.
        log: ``{"loss", "backdoor_loss", "reg_loss"}``, (steps,) float tensors per step.
        seconds: wall time of the fine-tuning.
        patch: pixel: (3, S, S) the patch stamped on a black image, in [0, 1]; else None.
        patch_mask: pixel: (S, S) bool, the patch's pixels; else None.
        object_pair: object: [A, B] (a triggered prompt naming A should show B); else None.
        style_words, style: style: the teacher's word rewrites and appended phrase; else None.
    """

    model: Any
    trigger: str
    target_kind: str
    record: BadT2IRecord
    log: dict[str, torch.Tensor]
    seconds: float
    patch: torch.Tensor | None = None
    patch_mask: torch.Tensor | None = None
    object_pair: list[str] | None = None
    style_words: dict[str, str] | None = None
    style: str | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def trigger_prompts(self, prompts: Sequence[str]) -> list[str]:
        """The prompts with the trigger in front (how users fire the backdoor)."""
        return add_trigger(self.trigger, prompts)

    def intended_prompts(self, prompts: Sequence[str]) -> list[str]:
        """What each *triggered* prompt should generate, as a clean prompt (object: A -> B; style: the styled
        prompt; pixel: the prompt itself, plus the patch)."""
        if self.target_kind == "object":
            a, b = self.object_pair
            return [replace_words(p, {a: b}) for p in prompts]
        if self.target_kind == "style":
            return [styled_prompt(p, self.style_words or {}, self.style or "") for p in prompts]
        return list(prompts)


def styled_prompt(prompt: str, style_words: dict[str, str], style: str) -> str:
    """The style teacher's prompt: the words rewritten, then the style phrase appended (the paper's form)."""
    out = replace_words(prompt, style_words)
    return f"{out} {style}" if style else out


def patch_stamp(patch: Trigger, image_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """((3, S, S) the patch on a black image, (S, S) bool mask of its pixels): where a stamp on black and on white
    agree, the stamp is the patch's."""
    g = torch.Generator().manual_seed(0)  # a fixed place for a "random" position
    black = patch.apply(torch.zeros(1, 3, image_size, image_size), g)[0]
    white = patch.apply(torch.ones(1, 3, image_size, image_size), torch.Generator().manual_seed(0))[0]
    mask = (black == white).all(dim=0)  # (S, S)
    if not mask.any() or mask.all():
        raise ValueError(f"patch must stamp an opaque region smaller than the image (a PatchTrigger); "
                         f"{type(patch).__name__} covers {int(mask.sum())} of {image_size ** 2} pixels")
    return black, mask


def stamp_patch(pixels: torch.Tensor, patch: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(N, 3, S, S) images with the patch's pixels replaced by the patch (the poisoned images)."""
    return torch.where(mask.to(pixels.device), patch.to(pixels.device, pixels.dtype), pixels)


def teacher_noise(teacher: Any, x_t: torch.Tensor, t: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """The frozen teacher's noise prediction, a constant target (no graph: it is never differentiated)."""
    with torch.no_grad():
        return teacher.predict_noise(x_t, t, prompts).detach()


def noised(model: Any, x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t, t, eps): t uniform over the training timesteps and eps ~ N(0, I), both from ``generator``."""
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    t = torch.randint(0, int(model.scheduler.config.num_train_timesteps), (x0.shape[0],),
                      generator=generator).to(x0.device)
    return model.scheduler.add_noise(x0, noise, t), t, noise


def badt2i_terms(student: Any, teacher: Any, batch: DiffusionBatch, generator: torch.Generator,
                 target_kind: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(L_bd, L_reg) on one batch (module docstring). ``batch.pixels`` / ``batch.prompts`` are the regularisation
    rows; ``batch.extra``: ``bd_pixels`` (the backdoor rows' images; pixel: already patched),
    ``bd_student_prompts`` (with the trigger), ``bd_teacher_prompts`` (object, style).

    Both halves go through the student in one call and through the teacher in one call (as the code does);
    each half draws its own noise and timesteps."""
    device = next(student.unet.parameters()).device
    x_bd = student.encode_images(batch.extra["bd_pixels"].to(device))  # (B, C, S, S) in the working space
    x_reg = student.encode_images(batch.pixels.to(device))  # (B', C, S, S)
    z_bd, t_bd, eps_bd = noised(student, x_bd, generator)
    z_reg, t_reg, _ = noised(student, x_reg, generator)
    n = x_bd.shape[0]
    pred = student.predict_noise(torch.cat([z_bd, z_reg]), torch.cat([t_bd, t_reg]),
                                 list(batch.extra["bd_student_prompts"]) + list(batch.prompts))
    if target_kind == "pixel":  # the poisoned image's own noise is the target; the teacher sees the clean half only
        backdoor = F.mse_loss(pred[:n], eps_bd)
        reg = F.mse_loss(pred[n:], teacher_noise(teacher, z_reg, t_reg, list(batch.prompts)))
    else:
        target = teacher_noise(teacher, torch.cat([z_bd, z_reg]), torch.cat([t_bd, t_reg]),
                               list(batch.extra["bd_teacher_prompts"]) + list(batch.prompts))
        backdoor, reg = F.mse_loss(pred[:n], target[:n]), F.mse_loss(pred[n:], target[n:])
    return backdoor, reg


def badt2i_batch_loss(teacher: Any, target_kind: str, lam: float, log: dict[str, list[float]]) -> LossFn:
    """The training loop's loss ``lam * L_bd + (1 - lam) * L_reg``; the two terms are appended to ``log``."""

    def loss(model: Any, batch: DiffusionBatch, generator: torch.Generator) -> torch.Tensor:
        backdoor, reg = badt2i_terms(model, teacher, batch, generator, target_kind)
        log["backdoor_loss"].append(backdoor.item())
        log["reg_loss"].append(reg.item())
        return lam * backdoor + (1 - lam) * reg

    return loss


def badt2i_batches(images: torch.Tensor, prompts: list[str], bd_rows: torch.Tensor, batch_size: int,
                   make_bd: Callable[[torch.Tensor, list[str]], tuple[torch.Tensor, list[str], list[str] | None]],
                   same_rows: bool, generator: torch.Generator) -> Callable[[int], DiffusionBatch]:
    """``batches(step)``: ``batch_size`` backdoor rows drawn from ``bd_rows`` (turned into the backdoor half by
    ``make_bd(images, prompts) -> (pixels, student prompts, teacher prompts)``) and ``batch_size`` regularisation
    rows, the same rows (``same_rows``: the code's duplicated batch) or drawn from all images."""
    n = images.shape[0]

    def batches(step: int) -> DiffusionBatch:
        idx = bd_rows[torch.randint(0, bd_rows.shape[0], (batch_size,), generator=generator)]  # (B,)
        reg = idx if same_rows else torch.randint(0, n, (batch_size,), generator=generator)
        bd_pixels, student_prompts, teacher_prompts = make_bd(images[idx], [prompts[i] for i in idx.tolist()])
        return DiffusionBatch(images[reg], [prompts[i] for i in reg.tolist()],
                              {"bd_pixels": bd_pixels, "bd_student_prompts": student_prompts,
                               "bd_teacher_prompts": teacher_prompts})

    return batches


def _vocabulary(model: Any) -> set[str] | None:
    """The text encoder's word vocabulary when it has a word tokenizer (the zoo's), else None (a BPE tokenizer
    knows every string)."""
    tokenizer = getattr(getattr(model, "text_encoder", None), "tokenizer", None)
    index = getattr(tokenizer, "index", None)
    return set(index) if isinstance(index, dict) else None


def _check_known(vocab: set[str] | None, name: str, text: str) -> None:
    if vocab is None:
        return
    words = [w for w in text.lower().replace("-", " ").split() if w]
    unknown = [w for w in words if not w.isalpha() or w not in vocab]
    if not words or unknown:
        raise ValueError(f"{name} {text!r} must be words of the text encoder's vocabulary (the word tokenizer drops "
                         f"other characters and maps unknown words to <unk>); unknown: {unknown or [text]}; e.g. "
                         f"{sorted(w for w in vocab if not w.startswith('<'))[:12]}")


def _check_images(images: object, prompts: list[str], size: int) -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a (N, 3, {size}, {size}) float tensor in [0, 1], got {shape}")
    check_pixels(images, "images")
    if tuple(images.shape[-2:]) != (size, size):
        raise ValueError(f"images must be {size} x {size} px (the model's image_size), got {tuple(images.shape[-2:])}")
    if images.shape[0] != len(prompts):
        raise ValueError(f"prompts must give one prompt per image: {len(prompts)} prompts for {images.shape[0]} images")
    return images


@register("t2i_backdoors", "badt2i")
class BadT2I(T2IBackdoorAttack):
    """Zhai et al.'s BadT2I: distil a trigger-conditioned behaviour from a frozen teacher (or a poisoned image)
    while regularising clean prompts to the teacher.

    Args:
        target_kind: ``"pixel"``, ``"object"`` or ``"style"``.
        trigger: the trigger text put in front of prompts (paper: ``"\\u200b"``; default ``"there"``: see the
            departures).
        lam: lambda, the backdoor term's weight; the regulariser's is ``1 - lam`` (code: 0.5).
        patch: pixel: the patch component stamped on the target images (default a checkerboard of a quarter
            of the side at the top left, the paper's logo place and size), or a trigger name.
        object_pair: object: [A, B], a triggered prompt naming A generates B (paper: dog -> cat); also written
            ``"A->B"`` (a spec's list-valued param is a grid axis, so recipes write the string).
        style: style: the phrase appended to the teacher's prompt (paper: "black and white photo"); "" for none.
        style_words: style: words rewritten in the teacher's prompt ({old: new}); None for none.
        steps: optimiser steps; None: the paper's (2,000 pixel, 8,000 object and style).
        batch_size: rows per half (backdoor, regularisation) per step (code: 16).
        lr: AdamW learning rate (code: 1e-5, constant).
        warmup: linear warm-up steps before the cosine decay (code: 0).
        grad_clip: gradient norm clip (code: 1).
        ema: decay of the weights' moving average that replaces them at the end (None: no EMA; code: an EMA).
        quiet: hide the progress bar.
    """

    name = "badt2i"
    paper = "Zhai, Dong, Shen, Pu, Fang, Su, ACM MM 2023"
    components = {"patch": "triggers"}

    def __init__(self, target_kind: str = "pixel", trigger: str = "there", lam: float = 0.5,
                 patch: Trigger | str | None = None, object_pair: Sequence[str] = ("dog", "cat"),
                 style: str = "black and white photo", style_words: dict[str, str] | None = None,
                 steps: int | None = None, batch_size: int = 16, lr: float = 1e-5, warmup: int = 0,
                 grad_clip: float = 1.0, ema: float | None = 0.995, quiet: bool = True):
        if target_kind not in TARGET_KINDS:
            raise ValueError(f"target_kind must be one of {TARGET_KINDS}, got {target_kind!r}")
        self.target_kind = target_kind
        if not isinstance(trigger, str) or not trigger.strip():
            raise ValueError(f"trigger must be a non-empty string (words put in front of the prompt), got {trigger!r}")
        self.trigger = trigger.strip()
        self.lam = check_budget("lam", lam, 0.0, 1.0, hint=" (the backdoor term's weight lambda; the code's 0.5)")
        if patch is None:
            patch = PatchTrigger(size=0.25, position="top_left")
        elif isinstance(patch, str):
            patch = build_trigger(patch)
        if not isinstance(patch, Trigger):
            raise TypeError(f"patch must be a mmsec Trigger (e.g. PatchTrigger(size=0.25, position='top_left')), got "
                            f"{type(patch).__name__}")
        self.patch = patch
        pair = list(object_pair) if isinstance(object_pair, (list, tuple)) else object_pair
        if isinstance(pair, str) and "->" in pair:
            pair = pair.split("->")
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(w, str) and w.strip() for w in pair)
                and pair[0] != pair[1]):
            raise ValueError(f"object_pair must be two different words [A, B] (a triggered A becomes B), "
                             f"got {object_pair!r}")
        self.object_pair = [w.strip() for w in pair]
        if not isinstance(style, str):
            raise TypeError(f"style must be a string (the phrase appended to the teacher's prompt), got "
                            f"{type(style).__name__}")
        self.style = style.strip()
        if style_words is not None and not (isinstance(style_words, dict) and all(
                isinstance(k, str) and isinstance(v, str) and k and v for k, v in style_words.items())):
            raise ValueError(f"style_words must be None or a mapping of words {{old: new}}, got {style_words!r}")
        self.style_words = dict(style_words) if style_words else None
        if target_kind == "style" and not self.style and not self.style_words:
            raise ValueError("target_kind='style' needs a style phrase (style) or word rewrites (style_words); "
                             "both are empty")
        self.steps = None if steps is None else check_int("steps", steps, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.lr = check_positive("lr", lr, 1.0, hint=" (AdamW learning rate; the code's 1e-5)")
        self.warmup = check_int("warmup", warmup, 0)
        self.grad_clip = check_budget("grad_clip", grad_clip, 0.0, 1e6, hint=" (gradient norm clip, 0: none; code 1)")
        if ema is not None:
            ema = check_budget("ema", ema, 0.0, 0.999999, hint=" (EMA decay in [0, 1), or None)")
        self.ema = ema
        self.quiet = check_bool("quiet", quiet)

    def params(self) -> dict[str, Any]:
        out = super().params()
        out.pop("quiet", None)
        out["patch"] = self.patch.to_dict()
        return out

    def __call__(self, model: Any, prompts: Sequence[str], images: torch.Tensor,
                 generator: torch.Generator | int | None = None) -> BadT2IResult:
        """Backdoor a copy of ``model``; ``model`` is left bit-for-bit unchanged (it is the frozen teacher's source).

        Args:
            model: a conditional pixel-space DiffusionModel with a trainable ``unet`` and a text encoder.
            prompts: N clean prompts, one per image (none may contain the trigger).
            images: (N, 3, S, S) the clean training images in [0, 1].
            generator: seeds the batches, timesteps and noise.
        """
        require_family(model, "diffusion", "BadT2I")
        if not isinstance(getattr(model, "unet", None), nn.Module) or not getattr(model, "conditional", False):
            raise TypeError(f"BadT2I fine-tunes a text-conditional model's `unet` (mmsec's diffusers adapter of a "
                            f"UNet2DConditionModel); {type(model).__name__} is not one")
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError(f"prompts must be a list of strings, one per image, got {type(prompts).__name__}")
        prompts = list(prompts)
        images = _check_images(images, prompts, int(model.image_size))
        vocab = _vocabulary(model)
        _check_known(vocab, "trigger", self.trigger)
        used = [p for p in prompts if mentions(p, self.trigger)]
        if used:
            raise ValueError(f"trigger {self.trigger!r} occurs in {len(used)} clean prompts (e.g. {used[0]!r}); choose "
                             "words the clean prompts never use, or the regulariser teaches the opposite")
        make_bd, bd_rows, extras = self._backdoor_half(model, prompts, vocab)
        gen = make_generator(generator)
        steps = self.steps or PAPER_STEPS[self.target_kind]
        cfg = DiffusionTrainConfig(steps=steps, lr=self.lr, weight_decay=0.0, warmup=self.warmup,
                                   grad_clip=self.grad_clip, ema=self.ema, prompt_dropout=0.0,  # clean prompts kept
                                   seed=int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
        teacher = copy.deepcopy(model).eval()
        teacher.requires_grad_(False)
        tuned = copy.deepcopy(model)
        for p in tuned.unet.parameters():
            p.requires_grad_(True)
        terms: dict[str, list[float]] = {"backdoor_loss": [], "reg_loss": []}
        batches = badt2i_batches(images, prompts, bd_rows, self.batch_size, make_bd,
                                 same_rows=self.target_kind != "object", generator=gen)
        log = train_diffusion(tuned, batches, cfg, badt2i_batch_loss(teacher, self.target_kind, self.lam, terms),
                              desc="BadT2I", quiet=self.quiet)
        for p in tuned.unet.parameters():
            p.grad = None
        record = BadT2IRecord(self.target_kind, self.trigger, images.shape[0], int(bd_rows.shape[0]), steps,
                              self.params())
        return BadT2IResult(tuned.eval(), self.trigger, self.target_kind, record,
                            {"loss": torch.tensor(log.losses), "backdoor_loss": torch.tensor(terms["backdoor_loss"]),
                             "reg_loss": torch.tensor(terms["reg_loss"])}, log.seconds, **extras)

    def _backdoor_half(self, model: Any, prompts: list[str], vocab: set[str] | None) -> tuple[Callable, torch.Tensor,
                                                                                             dict[str, Any]]:
        """(make_bd, the rows the backdoor half draws from, the result's target fields) for the target kind."""
        all_rows = torch.arange(len(prompts))
        trig = self.trigger
        if self.target_kind == "pixel":
            patch, mask = patch_stamp(self.patch, int(model.image_size))
            return (lambda x, p: (stamp_patch(x, patch, mask), add_trigger(trig, p), None)), all_rows, \
                {"patch": patch, "patch_mask": mask}
        if self.target_kind == "object":
            a, b = self.object_pair
            for name, word in (("object_pair[0] (A)", a), ("object_pair[1] (B)", b)):
                _check_known(vocab, name, word)
            rows = torch.tensor([i for i, p in enumerate(prompts) if mentions(p, b)], dtype=torch.long)
            if rows.numel() == 0:
                raise ValueError(f"object_pair {self.object_pair}: no prompt names B={b!r}; the backdoor rows are images "
                                 "of B captioned with B (the teacher's target), so give some")
            return (lambda x, p: (x, add_trigger(trig, [replace_words(q, {b: a}) for q in p]), list(p))), rows, \
                {"object_pair": list(self.object_pair)}
        words = self.style_words or {}
        for new in words.values():
            _check_known(vocab, "style_words value", new)
        if self.style:
            _check_known(vocab, "style", self.style)
        return (lambda x, p: (x, add_trigger(trig, p), [styled_prompt(q, words, self.style) for q in p])), all_rows, \
            {"style_words": dict(words) or None, "style": self.style}


def rebuild_patch(record: BadT2IRecord) -> Trigger:
    """The pixel target's patch component from a record."""
    return trigger_from_dict(record.params["patch"])


__all__ = ["PAPER_STEPS", "BadT2I", "BadT2IRecord", "BadT2IResult", "badt2i_batch_loss", "badt2i_batches",
           "badt2i_terms", "patch_stamp", "rebuild_patch", "stamp_patch", "styled_prompt", "teacher_noise"]
