"""AdaMerging: Enneng Yang, Zhenyi Wang, Li Shen, Shiwei Liu, Guibing Guo, Xingwei Wang, Dacheng Tao,
"AdaMerging: Adaptive Model Merging for Multi-Task Learning", ICLR 2024.

Task arithmetic with learnt coefficients. Layer-wise AdaMerging (the paper's main variant):

    theta^l = theta_pre^l + sum_k lambda_k^l * tau_k^l          (one coefficient per task and layer)

where a "layer" is each parameter tensor of the image tower. The coefficients are learnt without
labels by minimising the Shannon entropy of the merged model's predictions on unlabelled test
inputs of every task, each through its own frozen head: ``min_lambda sum_k mean_x H(softmax(f_k(x)))``
(entropy is a proxy for the multi-task loss). ``task_wise=True`` learns one ``lambda_k`` per task.

Defaults (the paper and its code, also used by BadMerging): coefficients initialised to 0.3 and
clamped to [0, 1]; Adam, lr 1e-3, betas (0.9, 0.999); 500 iterations; each iteration one batch of 16
unlabelled test inputs per task, the task entropies summed.

Call with ``data``: for each task model, a pair ``(pixels (N, 3, H, W), head (C, D))``: that task's
unlabelled test inputs and its frozen zero-shot head (e.g. ``task_head(pretrained, task)``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch.func import functional_call

from ..checks import check_bool, check_budget, check_int, check_pixels, make_generator
from ..registry import register
from .base import MergingMethod
from .task_vectors import TowerState
from .tasks import features_logits


def softmax_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(B,) Shannon entropy of each row's softmax."""
    return -(logits.softmax(1) * logits.log_softmax(1)).sum(1)


@register("merging", "adamerging")
class AdaMerging(MergingMethod):
    """Entropy-minimised merging coefficients (layer-wise by default).

    Args:
        init: initial coefficient (default 0.3).
        lr: Adam's learning rate (default 1e-3).
        steps: iterations (default 500).
        batch_size: unlabelled inputs per task per iteration (default 16).
        task_wise: one coefficient per task instead of per task and layer (default False).
        seed: seed of the batch sampling.
    """

    name = "adamerging"
    paper = "Yang et al., ICLR 2024"
    needs_data = True

    def __init__(self, init: float = 0.3, lr: float = 1e-3, steps: int = 500, batch_size: int = 16,
                 task_wise: bool = False, seed: int = 0):
        self.init = check_budget("init", init, 0.0, 1.0, hint=" (initial merging coefficient, e.g. 0.3)")
        self.lr = check_budget("lr", lr, 0.0, 1.0, hint="")
        self.steps = check_int("steps", steps, low=0)
        self.batch_size = check_int("batch_size", batch_size)
        self.task_wise = check_bool("task_wise", task_wise)
        self.seed = seed

    def merge_state(self, pretrained, task_models, pre: TowerState, taus: list[TowerState],
                    data: Sequence[Any] | None) -> tuple[TowerState, dict[str, Any]]:
        for i, entry in enumerate(data):
            if not (isinstance(entry, (tuple, list)) and len(entry) == 2):
                raise ValueError(f"data[{i}] must be a pair (unlabelled pixels, head (C, D)) for AdaMerging")
            check_pixels(entry[0], f"data[{i}][0]")
        names = list(pre)
        n_layers = 1 if self.task_wise else len(names)
        raw = torch.full((n_layers, len(taus)), self.init, requires_grad=True)  # (L, K)
        opt = torch.optim.Adam([raw], lr=self.lr, betas=(0.9, 0.999), weight_decay=0.0)
        gen = make_generator(self.seed)
        model = _EncodeImage(copy.deepcopy(pretrained).eval())  # eval: BatchNorm statistics are read, never updated
        fixed = {f"m.{k}": v.detach() for k, v in model.m.named_parameters()}
        fixed.update({f"m.{k}": v for k, v in model.m.named_buffers()})
        trace = []
        for _ in range(self.steps):
            state = self._state(pre, taus, names, raw.clamp(0.0, 1.0))
            tensors = {**fixed, **{f"m.{k}": v for k, v in state.items()}}
            loss = 0
            for pixels, head in data:
                idx = torch.randint(0, pixels.shape[0], (self.batch_size,), generator=gen)
                feats = functional_call(model, tensors, (pixels[idx],))  # (B, D)
                loss = loss + softmax_entropy(features_logits(model.m, feats, head)).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            trace.append(float(loss.detach()))
        lambdas = raw.detach().clamp(0.0, 1.0)
        return ({n: v.detach() for n, v in self._state(pre, taus, names, lambdas).items()},
                {"lambdas": lambdas.tolist(), "entropy": trace})

    def _state(self, pre: TowerState, taus: list[TowerState], names: list[str], lambdas: torch.Tensor) -> TowerState:
        return {n: pre[n] + sum(lambdas[0 if self.task_wise else i, k] * t[n] for k, t in enumerate(taus))
                for i, n in enumerate(names)}


class _EncodeImage(torch.nn.Module):
    """``encode_image`` as ``forward``, so ``torch.func.functional_call`` can run it."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.m = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.m.encode_image(pixels)
