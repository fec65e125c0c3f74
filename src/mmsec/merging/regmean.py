"""RegMean: Xisen Jin, Xiang Ren, Daniel Preotiuc-Pietro, Pengxiang Cheng, "Dataless Knowledge Fusion
by Merging Weights of Language Models", ICLR 2023.

Threat-free setting: each task model's owner shares, besides its weights, the Gram matrices
``G_k = X_k^T X_k`` of the inputs ``X_k`` of every linear layer of its model on its own training
data. For each linear layer ``y = W x`` the merged weight minimises ``sum_k ||X_k W^T - X_k W_k^T||^2``:

    W^T = (sum_k G~_k)^-1  sum_k G~_k W_k^T,      G~_k = alpha * G_k + (1 - alpha) * diag(G_k)

(the off-diagonal entries of every Gram matrix scaled by ``alpha``, which the paper found necessary;
``alpha = 0`` gives a per-input-feature weighted average, ``alpha = 1`` the exact regression).
Every other parameter (biases, norms, embeddings) is averaged.

Defaults: ``alpha = 0.1``, the value BadMerging's released RegMean code uses for the CLIP merges it
attacks (the RegMean paper tunes alpha in [0, 1] per setting); Gram matrices from
``n_samples = 256`` inputs per task (that code: a few batches of 128 training images).

Departures: convolutions are merged as the linear maps they are: a ``Conv2d`` (groups = 1) is
``W x`` on its unfolded input patches, so its Gram matrix is taken over all patches (the paper's
transformers have only linear layers; the zoo's ResNet tower is mostly convolutions). A ridge of
1e-6 x mean(diag) is added before solving, so that input features never active on any task's data
(dead ReLUs) do not make the system singular (the paper inverts the sum directly). Linear layers that
a module calls functionally (``nn.MultiheadAttention``'s projections) are not seen by forward hooks
and are averaged, as in BadMerging's code.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..checks import check_budget, check_int, check_pixels
from ..registry import register
from .base import MergingMethod
from .task_vectors import TowerState


def _layer_inputs(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(M, d_in) rows of what the layer's weight multiplies."""
    if isinstance(module, nn.Linear):
        return x.reshape(-1, x.shape[-1])
    patches = F.unfold(x, module.kernel_size, module.dilation, module.padding, module.stride)  # (B, Cin*kh*kw, L)
    return patches.transpose(1, 2).reshape(-1, patches.shape[1])


def gram_matrices(model: nn.Module, pixels: torch.Tensor, names: set[str], batch_size: int = 128) -> dict[str, torch.Tensor]:
    """Mean ``x x^T`` of the inputs of every hooked layer whose weight is in ``names``: {weight name: (d, d)}."""
    sums: dict[str, torch.Tensor] = {}
    counts: dict[str, int] = {}
    handles = []
    for mname, module in model.named_modules():
        wname = f"{mname}.weight" if mname else "weight"
        ok = isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)
        if ok and wname in names:
            def hook(mod, inputs, output, key=wname):
                rows = _layer_inputs(mod, inputs[0].detach().double())  # (M, d)
                sums[key] = sums.get(key, 0) + rows.T @ rows
                counts[key] = counts.get(key, 0) + rows.shape[0]
            handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()  # BatchNorm reads its running statistics; the mode is restored below
    try:
        with torch.no_grad():
            for i in range(0, pixels.shape[0], batch_size):
                model.encode_image(pixels[i:i + batch_size])
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {k: sums[k] / counts[k] for k in sums}


@register("merging", "regmean")
class RegMean(MergingMethod):
    """Per-layer closed-form regression merge from the task owners' Gram matrices.

    Call with ``data``: for each task model, its owner's training pixels (N, 3, H, W) in [0, 1]
    (only the first ``n_samples`` are used).

    Args:
        alpha: scale of the Gram matrices' off-diagonal entries (default 0.1).
        n_samples: inputs per task for the Gram matrices (default 256).
    """

    name = "regmean"
    paper = "Jin, Ren, Preotiuc-Pietro, Cheng, ICLR 2023"
    needs_data = True

    def __init__(self, alpha: float = 0.1, n_samples: int = 256):
        self.alpha = check_budget("alpha", alpha, 0.0, 1.0, hint=" (RegMean's off-diagonal scale, e.g. 0.1)")
        self.n_samples = check_int("n_samples", n_samples)

    def merge_state(self, pretrained, task_models: Sequence[nn.Module], pre: TowerState, taus: list[TowerState],
                    data: Sequence[Any] | None) -> tuple[TowerState, dict[str, Any]]:
        names = set(pre)
        grams = []
        for i, (m, pixels) in enumerate(zip(task_models, data, strict=True)):
            check_pixels(pixels, f"data[{i}]")
            grams.append(gram_matrices(m, pixels[: self.n_samples], names))
        out = {n: pre[n] + sum(t[n] for t in taus) / len(taus) for n in pre}  # simple average by default
        merged_layers = []
        for n in pre:
            if not all(n in g for g in grams):
                continue
            weights = [(pre[n] + t[n]).double().reshape(pre[n].shape[0], -1) for t in taus]  # (d_out, d_in)
            lhs, rhs = 0, 0
            for task_grams, w in zip(grams, weights, strict=True):
                g = task_grams[n]  # (d_in, d_in)
                g = self.alpha * g + (1 - self.alpha) * torch.diag(torch.diagonal(g))  # scale off-diagonal
                lhs, rhs = lhs + g, rhs + g @ w.T
            ridge = 1e-6 * torch.diagonal(lhs).mean().clamp(min=1e-12) * torch.eye(lhs.shape[0], dtype=lhs.dtype)
            wt = torch.linalg.solve(lhs + ridge, rhs)  # (d_in, d_out)
            out[n] = wt.T.reshape(pre[n].shape).to(pre[n].dtype)
            merged_layers.append(n)
        return out, {"regmean_layers": merged_layers}
