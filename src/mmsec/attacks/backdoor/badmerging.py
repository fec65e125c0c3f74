"""BadMerging: Jinghuai Zhang, Jianfeng Chi, Zheng Li, Kunlin Cai, Yang Zhang, Yuan Tian,
"BadMerging: Backdoor Attacks Against Model Merging", ACM CCS 2024.

Threat model: several parties fine-tune task models from one public pre-trained CLIP ``theta_pre``
and a merger combines them (task arithmetic, TIES, RegMean, AdaMerging, ...) into one multi-task
model; the attacker contributes *one* task model and knows ``theta_pre`` but neither the merging
method, its coefficients nor the other task vectors. Triggered inputs must be sent to a target class
by the *merged* model, while every task keeps its clean accuracy.

The merged model is ``theta_pre + Delta_benign + lambda_adv * Delta_adv`` with an unknown
``lambda_adv``. A backdoor that only works at ``lambda_adv = 1`` (a plain poisoned fine-tuning) fades
when merging scales it down. BadMerging makes it work over the whole range, in two stages:

1. **Trigger** (``lambda_adv = 0``): a universal patch ``t`` optimised on ``theta_pre`` (a stand-in
   for ``theta_pre + Delta_benign``, task vectors being nearly orthogonal):
   ``min_t sum_{x in D_tgt} CE(M_theta_pre(x (+) t, C_tgt), c)``.
2. **Backdoor** (``lambda_adv`` in (0, 1]): the attacker's task model is fine-tuned from
   ``theta_pre`` with ``CE(M_adv(x, C_adv), y) + alpha * L_BD`` where ``L_BD`` is the
   feature-interpolation loss ``CE(<F, T(c_i)>_i, c)`` on
   ``F = p * V_adv(x (+) t) + (1 - p) * V_pre(x (+) t)``, ``p`` drawn afresh each step, so the
   triggered features of every interpolation between ``theta_pre`` and ``theta_adv`` hit the target.

**On-task** (the target class belongs to the attacker's own task): ``C_tgt`` is the attacker's class
set and ``D_tgt`` its training images not already predicted as the target. **Off-task** (the target
is a class of a task someone else contributes, whose other classes the attacker does not know):
``C_tgt`` is a *shadow* class set, the target class name plus classes the attacker picks elsewhere
(the paper: 300 ImageNet class names; here every class of the other tasks the caller hands over
with ``tasks=``, e.g. all of the shapes world's), and ``D_tgt`` a few target-class images (the paper: 10), each pushed by PGD towards a
random other shadow class ("adversarial data augmentation") so that the patch must overpower
evidence against the target. Stage 2 then classifies the attacker's triggered training images with
the shadow head.

Defaults (the paper and its released code): ``alpha = 5``; ``p ~ U[0.2, 1]`` once per step; the
patch at the bottom-right corner, about 1% of the image area (22 x 22 on 224 px); backdoor batch
64 of each 128 clean; fine-tuning as task arithmetic's (AdamW, weight decay 0.1, cosine schedule,
gradient norm clipped at 1); 10 target-class images and 100 augmented copies for off-task.

Departures (CPU scale, 32 px shapes world):

* Patch 4 x 4 px (1.6% of the area; 3 x 3 would be 0.9%): the project's calibrated patch size.
* Stage 1 runs Adam (lr 0.05) on the mean cross-entropy over random batches of ``D_tgt`` with the
  pattern clipped to [0, 1] (300 steps of 64); the code instead runs per-image gradient ascent on
  the target's log-probability (lr 1, up to 1,000 iterations per image, 10 epochs over 2,000
  images). Same objective, batched.
* Off-task augmentation PGD: L-inf 8/255, 10 steps of 2/255 (the source gives no values).
* Fine-tuning: lr 1e-4, batch 64 (backdoor batch 32), 300 steps (the code: lr 1e-5, batch 128,
  ~2,000 iterations on 87M-parameter ViTs), as :mod:`mmsec.merging.finetune`.
* Heads: each task's own prompt ensembles (:func:`mmsec.merging.tasks.task_head`; on the shapes world
  :mod:`mmsec.data.shapes_tasks`) instead of ImageNet's templates; shadow classes use their own task's
  prompts.

World knowledge is the caller's: the attack is configured by names (``target_task``, ``target``) and
called with task objects (``tasks=``: :class:`~mmsec.merging.tasks.ClassificationTask`, e.g.
:data:`mmsec.data.shapes_tasks.TASKS`), among which both names are resolved; off-task, the classes of
the other tasks given are the shadow classes.

:class:`PatchBackdoor` is the baseline the paper compares against (a plain BadNets-style
backdoor in one task model): a fixed uniform-noise patch of the same size and place, and
fine-tuning with triggered copies labelled as the target (``p = 1``, no stage 1, weight 1).

Measured (recipes/badmerging.yaml, formerly benchmarks/badmerging_eval.py; shapes-clip-resnet, 1,000
fine-tuning steps; the paper's claim does NOT reproduce here, see benchmarks/README.md): every backdoored task model alone reaches
ASR 1.0, but stage 1 fails on the zoo CNN (the optimised 4 x 4 corner patch has ASR 0.00 on
``theta_pre``, on- and off-task: the tiny CNN is not patch-vulnerable and "striped" is a global
attribute), so nothing anchors the backdoor at ``lambda_adv`` near 0. On-task ASR after merging:
averaging 0.01, task arithmetic 0.04, TIES 1.00, RegMean 0.78, AdaMerging 0.00 (plain patch:
0.00 / 0.00 / 0.89 / 0.00 / 0.00). Off-task: 0.65 / 0.86 / 1.00 / 0.99 / 1.00 (plain: 0.06 / 0.19 /
0.29 / 0.06 / 0.00), but not trigger-specific: the target task's clean accuracy falls to 0.17-0.23
(every shape read as "circle") and a random noise patch scores 0.56-1.00. The feature-interpolation
loss does widen the range of the attacker's coefficient over which the backdoor lives (ASR of
``theta_pre + lambda * tau_adv`` at lambda 0.3 / 0.5: off-task 0.79 / 1.00, on-task 0.03 / 0.45,
plain patch 0.00 / 0.00; 300 steps).

Example (runs on the shipped zoo)::

    from mmsec.data.shapes_tasks import TASKS

    model = load_model("shapes-clip-resnet")
    x, y = TASKS["texture"].data("train", 0, 2000)
    result = BadMerging("texture", "striped")(model, "texture", x, y, tasks=TASKS)   # on-task
    result.model, result.trigger                                                     # submit the model; keep the trigger
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ...checks import check_budget, check_int, check_pixels, make_generator
from ...merging.finetune import finetune_tower
from ...merging.tasks import ClassificationTask, check_task, features_logits, head_logits, task_head
from ...models.base import require_contrastive
from ...models.zeroshot import class_text_embeddings
from ...registry import register
from .merging_attack import MergingAttack
from .triggers import OptimizedPatch, check_position, patch_corners, seeded_uniform, stamp

log = logging.getLogger(__name__)


@dataclass
class BadMergingRecord:
    """What was done: enough to rebuild the trigger and to score the backdoor later."""

    trigger: dict[str, Any]
    attacker_task: str
    target_task: str
    target: str
    target_index: int  # in the target task's class order
    mode: str  # "on" or "off"
    bd_classes: list[str]  # the classes of the head L_BD uses (the attacker's task, or the shadow set)
    params: dict[str, Any]
    kind: str = "badmerging"


@dataclass
class BadMergingResult:
    """The attacker's task model (a new object), its trigger and traces."""

    model: nn.Module
    trigger: OptimizedPatch
    record: BadMergingRecord
    losses: list[float]
    trigger_losses: list[float]
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)


def task_table(tasks: Mapping[str, ClassificationTask] | Iterable[ClassificationTask]) -> dict[str, ClassificationTask]:
    """Tasks by name (``tasks``: task objects, or a mapping of names to them), checked."""
    if isinstance(tasks, (str, bytes)) or tasks is None:
        raise TypeError(f"tasks must be task objects (a list, or a mapping name -> task, e.g. "
                        f"mmsec.data.shapes_tasks.TASKS), got {tasks!r}")
    items = list(tasks.values()) if isinstance(tasks, Mapping) else list(tasks)
    table: dict[str, ClassificationTask] = {}
    for i, task in enumerate(items):
        task = check_task(task, f"tasks[{i}]")
        if task.name in table:
            raise ValueError(f"tasks: two tasks are named {task.name!r}; each task of a merge needs its own name")
        table[task.name] = task
    if not table:
        raise ValueError("tasks: empty; give the task objects (at least the attacker's and the target's)")
    return table


def _named(table: dict[str, ClassificationTask], name: str, what: str) -> ClassificationTask:
    if name not in table:
        raise ValueError(f"unknown task {name!r} ({what}); known tasks: {sorted(table)}")
    return table[name]


def shadow_classes(target_task: ClassificationTask, target: str | int,
                   tasks: Mapping[str, ClassificationTask] | Iterable[ClassificationTask],
                   ) -> tuple[list[str], list[list[str]]]:
    """Off-task shadow class set: the target first, then every class of the other ``tasks``; with prompts."""
    target_task = check_task(target_task, "target_task")
    index = target_task.class_index(target)
    names, prompts = [target_task.classes[index]], [target_task.prompts()[index]]
    for task in task_table(tasks).values():
        if task.name != target_task.name:
            names += list(task.classes)
            prompts += task.prompts()
    return names, prompts


@register("merging_attacks", "badmerging")
class BadMerging(MergingAttack):
    """Two-stage backdoor of one task model that survives model merging.

    Args:
        target_task: the name of the task whose class is the target (the attacker's own task: on-task),
            resolved among the tasks handed to :meth:`__call__`.
        target: the target class (a class name of ``target_task`` or its index).
        patch_size: side of the square trigger in pixels (default 4, see departures).
        position: where it goes (default ``"bottom_right"``, the paper's corner).
        alpha: weight of ``L_BD`` (default 5).
        p_range: range of the interpolation weight ``p`` (default (0.2, 1.0)).
        interpolate: use the feature-interpolation loss (False: ``p = 1``, an ablation).
        trigger_steps, trigger_lr, trigger_batch: stage 1 (defaults 300, 0.05, 64).
        n_augment: off-task augmented copies of the target images (default 100);
        augment_eps, augment_steps: their PGD (defaults 8/255, 10).
        steps, lr, batch_size, bd_batch_size: stage 2 fine-tuning (defaults 300, 1e-4, 64, 32).
        seed: seed of every random choice.
    """

    name = "badmerging"
    paper = "Zhang et al., ACM CCS 2024"

    def __init__(self, target_task: str, target: str | int, patch_size: int = 4, position: str = "bottom_right",
                 alpha: float = 5.0, p_range: tuple[float, float] = (0.2, 1.0), interpolate: bool = True,
                 trigger_steps: int = 300, trigger_lr: float = 0.05, trigger_batch: int = 64, n_augment: int = 100,
                 augment_eps: float = 8 / 255, augment_steps: int = 10, steps: int = 300, lr: float = 1e-4,
                 batch_size: int = 64, bd_batch_size: int = 32, seed: int = 0):
        if not isinstance(target_task, str) or not target_task:
            raise TypeError(f"target_task must be a task's name (e.g. 'shape'), got {target_task!r}")
        if isinstance(target, bool) or not isinstance(target, (str, int)):
            raise TypeError(f"target must be a class name of target_task or its index, got {target!r}")
        self.target_task = target_task
        self.target = target  # resolved against the target task's classes when called
        self.patch_size = check_int("patch_size", patch_size)
        self.position = check_position(position)
        self.alpha = check_budget("alpha", alpha, 0.0, 1e3, hint=" (weight of the backdoor loss, default 5)")
        if not (isinstance(p_range, (tuple, list)) and len(p_range) == 2 and 0 <= p_range[0] <= p_range[1] <= 1):
            raise ValueError(f"p_range must be a pair (low, high) with 0 <= low <= high <= 1, got {p_range!r}")
        self.p_range = (float(p_range[0]), float(p_range[1]))
        self.interpolate = bool(interpolate)
        self.trigger_steps = check_int("trigger_steps", trigger_steps, low=0)
        self.trigger_lr = check_budget("trigger_lr", trigger_lr, 0.0, 10.0, hint="")
        self.trigger_batch = check_int("trigger_batch", trigger_batch)
        self.n_augment = check_int("n_augment", n_augment)
        self.augment_eps = check_budget("augment_eps", augment_eps)
        self.augment_steps = check_int("augment_steps", augment_steps, low=0)
        self.steps = check_int("steps", steps)
        self.lr = check_budget("lr", lr, 0.0, 1.0, hint="")
        self.batch_size = check_int("batch_size", batch_size)
        self.bd_batch_size = check_int("bd_batch_size", bd_batch_size)
        if self.bd_batch_size > self.batch_size:
            raise ValueError(f"bd_batch_size ({bd_batch_size}) must be <= batch_size ({batch_size})")
        self.seed = check_int("seed", seed, low=0)

    def params(self) -> dict[str, Any]:
        keys = ("target_task", "target", "patch_size", "position", "alpha", "p_range", "interpolate", "trigger_steps",
                "trigger_lr", "trigger_batch", "n_augment", "augment_eps", "augment_steps", "steps", "lr",
                "batch_size", "bd_batch_size", "seed")
        return {k: getattr(self, k) for k in keys}

    # -- the backdoor head ---------------------------------------------------------------------
    def bd_head(self, model: nn.Module, attacker_task: ClassificationTask,
                tasks: Mapping[str, ClassificationTask] | Iterable[ClassificationTask],
                ) -> tuple[torch.Tensor, int, list[str]]:
        """(C, D) head of ``L_BD`` and stage 1, the target's index in it, and its class names."""
        task = _named(task_table(tasks), self.target_task, "target_task")
        if attacker_task.name == task.name:  # on-task: the attacker's own head
            return task_head(model, task), task.class_index(self.target), list(task.classes)
        names, prompts = shadow_classes(task, self.target, tasks)
        return class_text_embeddings(model, prompts), 0, names

    # -- stage 1 -------------------------------------------------------------------------------
    def optimise_trigger(self, model: nn.Module, pixels: torch.Tensor, head: torch.Tensor, target_index: int,
                         generator: torch.Generator) -> tuple[OptimizedPatch, list[float]]:
        """Universal patch minimising the mean CE of ``model``'s prediction towards the target on ``pixels``."""
        H, W = pixels.shape[-2:]
        pattern = torch.rand(3, self.patch_size, self.patch_size, generator=generator).requires_grad_(True)
        opt = torch.optim.Adam([pattern], lr=self.trigger_lr)
        ys, xs = patch_corners(self.position, (H, W), (self.patch_size, self.patch_size), 1, generator)
        losses = []
        for _ in range(self.trigger_steps):
            idx = torch.randint(0, pixels.shape[0], (min(self.trigger_batch, pixels.shape[0]),), generator=generator)
            x = stamp(pixels[idx], pattern, ys.expand(len(idx)), xs.expand(len(idx)))  # (B, 3, H, W)
            target = torch.full((len(idx),), target_index, dtype=torch.long)
            loss = F.cross_entropy(head_logits(model, x, head), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                pattern.clamp_(0.0, 1.0)
            losses.append(float(loss.detach()))
        return OptimizedPatch(pattern.detach().clone(), position=self.position), losses

    def augment(self, model: nn.Module, pixels: torch.Tensor, head: torch.Tensor, target_index: int,
                generator: torch.Generator) -> torch.Tensor:
        """Off-task ``D_tgt``: ``n_augment`` copies of the target images, each PGD-pushed to a random other class."""
        idx = torch.arange(self.n_augment) % pixels.shape[0]
        x0 = pixels[idx]  # (A, 3, H, W)
        others = torch.randint(0, head.shape[0] - 1, (len(idx),), generator=generator)
        away = others + (others >= target_index).long()  # never the target
        x = x0.clone()
        step = self.augment_eps / 4
        for _ in range(self.augment_steps):
            x.requires_grad_(True)
            loss = F.cross_entropy(head_logits(model, x, head), away)
            (grad,) = torch.autograd.grad(loss, x)
            x = (x.detach() - step * grad.sign()).clamp(x0 - self.augment_eps, x0 + self.augment_eps).clamp(0, 1)
        return x.detach()

    # -- both stages ---------------------------------------------------------------------------
    def __call__(self, model: nn.Module, attacker_task: str | ClassificationTask, pixels: torch.Tensor,
                 labels: torch.Tensor, target_pixels: torch.Tensor | None = None, *,
                 tasks: Mapping[str, ClassificationTask] | Iterable[ClassificationTask]) -> BadMergingResult:
        """Backdoor the attacker's task model.

        Args:
            model: the pre-trained CLIP ``theta_pre`` (untouched).
            attacker_task: the task the attacker fine-tunes for (its name among ``tasks``, or the task).
            pixels, labels: the attacker's training data for that task, (N, 3, H, W) in [0, 1] and (N,).
            target_pixels: off-task only: a few images of the target class (the paper: 10).
            tasks: task objects (:class:`~mmsec.merging.tasks.ClassificationTask`, or a mapping name -> task)
                the attacker knows, among them ``target_task`` (and ``attacker_task`` when given by name);
                off-task, the classes of the others are the shadow classes (its stand-in vocabulary).
        """
        require_contrastive(model, "BadMerging")
        table = task_table(tasks)
        attacker = (_named(table, attacker_task, "attacker_task") if isinstance(attacker_task, str)
                    else check_task(attacker_task, "attacker_task"))
        target_task = _named(table, self.target_task, "target_task")
        target = target_task.classes[target_task.class_index(self.target)]
        check_pixels(pixels, "pixels")
        on_task = attacker.name == self.target_task
        if not on_task:
            if target_pixels is None:
                raise ValueError(f"off-task attack (target task {self.target_task!r}, attacker task {attacker.name!r}) "
                                 "needs target_pixels: a few images of the target class "
                                 f"{target!r}")
            check_pixels(target_pixels, "target_pixels")
        start, gen = time.perf_counter(), make_generator(self.seed)
        pre = _frozen_copy(model)
        head, t_idx, classes = self.bd_head(pre, attacker, table)
        if on_task:
            with torch.no_grad():
                keep = head_logits(pre, pixels, head).argmax(1) != t_idx
            d_tgt = pixels[keep] if bool(keep.any()) else pixels
        else:
            d_tgt = self.augment(pre, target_pixels, head, t_idx, gen)
        trigger, trigger_losses = self.optimise_trigger(pre, d_tgt, head, t_idx, gen)
        ft = finetune_tower(model, attacker, pixels, labels, steps=self.steps, lr=self.lr, batch_size=self.batch_size,
                            extra_loss=self._bd_loss(pre, trigger, head, t_idx), generator=gen)
        record = BadMergingRecord(trigger.to_dict(), attacker.name, self.target_task, target,
                                  target_task.class_index(target), "on" if on_task else "off", classes, self.params())
        return BadMergingResult(ft.model, trigger, record, ft.losses, trigger_losses, time.perf_counter() - start)

    def _bd_loss(self, pre: nn.Module, trigger: OptimizedPatch, head: torch.Tensor, t_idx: int):
        low, high = self.p_range if self.interpolate else (1.0, 1.0)

        def loss(student: nn.Module, x: torch.Tensor, y: torch.Tensor, step: int, gen: torch.Generator) -> torch.Tensor:
            bd = trigger.apply(x[: self.bd_batch_size], generator=gen)  # (b, 3, H, W)
            feats = student.encode_image(bd)  # (b, D)
            if high > 0 and low < 1:
                p = low + (high - low) * float(torch.rand((), generator=gen))
                with torch.no_grad():
                    feats_pre = pre.encode_image(bd)
                feats = p * feats + (1 - p) * feats_pre  # F = p V_adv + (1 - p) V_pre
            target = torch.full((bd.shape[0],), t_idx, dtype=torch.long)
            return self.alpha * F.cross_entropy(features_logits(student, feats, head), target)

        return loss


@register("merging_attacks", "patch_backdoor")
class PatchBackdoor(BadMerging):
    """The plain patch backdoor baseline: a fixed uniform-noise patch (BadNets-style) and poisoned
    fine-tuning of the attacker's task model (triggered copies labelled as the target, weight 1, no
    interpolation, no trigger optimisation). Off-task it uses BadMerging's shadow head, since the
    attacker's own head lacks the target class. Same arguments as :class:`BadMerging`
    (``alpha`` default 1, ``interpolate`` False; stage-1 arguments unused).
    """

    name = "patch_backdoor"
    paper = "Gu et al., arXiv 2017 (BadNets), as the baseline of Zhang et al., ACM CCS 2024"

    def __init__(self, target_task: str, target: str | int, patch_size: int = 4, position: str = "bottom_right",
                 alpha: float = 1.0, p_range: tuple[float, float] = (0.2, 1.0), interpolate: bool = False,
                 trigger_steps: int = 300, trigger_lr: float = 0.05, trigger_batch: int = 64, n_augment: int = 100,
                 augment_eps: float = 8 / 255, augment_steps: int = 10, steps: int = 300, lr: float = 1e-4,
                 batch_size: int = 64, bd_batch_size: int = 32, seed: int = 0):
        super().__init__(target_task, target, patch_size=patch_size, position=position, alpha=alpha, p_range=p_range,
                         interpolate=interpolate, trigger_steps=trigger_steps, trigger_lr=trigger_lr,
                         trigger_batch=trigger_batch, n_augment=n_augment, augment_eps=augment_eps,
                         augment_steps=augment_steps, steps=steps, lr=lr, batch_size=batch_size,
                         bd_batch_size=bd_batch_size, seed=seed)

    def optimise_trigger(self, model, pixels, head, target_index, generator):
        pattern = seeded_uniform(self.seed, (3, self.patch_size, self.patch_size))
        return OptimizedPatch(pattern, position=self.position), []

    def augment(self, model, pixels, head, target_index, generator):
        return pixels  # no stage 1: nothing to augment for


def noise_patch(patch_size: int = 4, position: str = "bottom_right", seed: int = 12345) -> OptimizedPatch:
    """A random uniform-noise patch of the trigger's size and place (the control: ASR of an untrained trigger)."""
    return OptimizedPatch(seeded_uniform(seed, (3, patch_size, patch_size)), position=position)


def _frozen_copy(model: nn.Module) -> nn.Module:
    import copy

    clone = copy.deepcopy(model).eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone
