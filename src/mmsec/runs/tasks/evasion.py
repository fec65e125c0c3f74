"""The shared cell of evasion tasks: an evasion attack (and its noise baseline) against an objective.

:class:`EvasionTask` loads the (possibly hardened) model and the evaluation data, builds the task's
objective, runs the attack and the baseline batch by batch, and hands the clean, adversarial and
noisy logits to the task's :meth:`EvasionTask.compute`. ``zeroshot`` and ``retrieval`` are its two
registered tasks; they differ in the objective and the metrics.

Metric threat models: every metric row names the perturbation it was measured under, so two
numbers are compared only when they mean the same thing: clean metrics say ``clean inputs``,
noise metrics ``uniform noise, <norm> eps=<eps>``, adversarial ones the attack's threat model
(``white-box pgd, untargeted, linf eps=8/255``).
"""

from __future__ import annotations

import io
import json
from typing import Any, ClassVar

import torch

from ...metrics import MetricDefinition
from ..cells import derive_seed, format_eps, method_params
from ..context import artifact_entry
from ..task import CellOutput, Task
from .common import build_method, choose_targets, evaluation_data, hardened, image_size_of

EXAMPLE_PAIRS = 8  # clean/adversarial pairs in the PNG artifact
DEFENSE_COST = MetricDefinition("defense_train_seconds", 1, "wall-clock seconds the cell's defense took to train "
                                "the hardened model (0 for no defense)", higher_is_better=False)


class EvasionTask(Task):
    """Base of tasks whose attack perturbs images against an objective (not registered itself)."""

    attack_kinds: ClassVar[tuple[str, ...]] = ("attacks",)
    defense_kinds: ClassVar[tuple[str, ...]] = ("defenses",)
    targeted: ClassVar[bool] = True
    noise_metrics: ClassVar[tuple[str, ...]] = ()  # metrics measured on the baseline's images
    adv_metrics: ClassVar[tuple[str, ...]] = ()  # metrics measured on the attack's images

    def check_baseline(self, baseline: str, attack: Any, name: str) -> str | None:
        try:
            noise_baseline(baseline, attack)
        except (TypeError, ValueError, KeyError) as e:
            return f"{baseline!r} cannot be built with the budget of {name}: {e}"
        return None

    def objective(self, model: Any, dataset: Any, data_name: str) -> tuple[Any, torch.Tensor, int]:
        """(objective, labels, number of classes or gallery entries)."""
        raise NotImplementedError

    def compute(self, cell: dict, clean: torch.Tensor, adv: torch.Tensor, noise: torch.Tensor | None,
                labels: torch.Tensor, targets: torch.Tensor | None, model: Any, dataset: Any) -> dict[str, float]:
        raise NotImplementedError

    def run(self, cell: dict, ctx: Any) -> CellOutput:
        model, defense_seconds = hardened(ctx, cell, self.defense_kinds)
        data = cell["data"]
        dataset = evaluation_data(ctx, data, image_size_of(model))
        pixels = dataset.pixels  # (N, 3, H, W)
        objective, labels, num_classes = self.objective(model, dataset, data["name"])
        seed = int(cell["seed"])
        targets = choose_targets(labels, num_classes, seed) if cell.get("targeted") else None

        attack, _ = build_method(self.attack_kinds, cell["attack"])
        baseline = noise_baseline(cell["baseline"], attack) if cell.get("baseline") else None
        gen_attack = torch.Generator().manual_seed(derive_seed(seed, "attack"))
        gen_noise = torch.Generator().manual_seed(derive_seed(seed, "baseline"))

        bs = int(cell["batch_size"])
        clean_logits, adv_logits, noise_logits, linf = [], [], [], []
        first: dict[str, torch.Tensor] = {}
        for start in range(0, pixels.shape[0], bs):
            x, y = pixels[start:start + bs], labels[start:start + bs]  # (B, 3, H, W), (B,)
            t = targets[start:start + bs] if targets is not None else None
            with torch.no_grad():
                clean_logits.append(objective.logits(x))  # (B, C)
            if baseline is not None:
                noisy = baseline(objective, x, y, t, generator=gen_noise).adv_pixels
                with torch.no_grad():
                    noise_logits.append(objective.logits(noisy))
            adv = attack(objective, x, y, t, generator=gen_attack).adv_pixels.detach()
            with torch.no_grad():
                adv_logits.append(objective.logits(adv))
            linf.append((adv - x).abs().flatten(1).amax(1))  # (B,)
            if start == 0:
                first = {"clean_pixels": x, "adv_pixels": adv, "labels": y,
                         "clean_pred": clean_logits[0].argmax(1), "adv_pred": adv_logits[0].argmax(1)}
                if t is not None:
                    first["targets"] = t
        clean, advl = torch.cat(clean_logits), torch.cat(adv_logits)
        noise = torch.cat(noise_logits) if noise_logits else None

        values = self.compute(cell, clean, advl, noise, labels, targets, model, dataset)
        wanted = set(cell["metrics"])
        if "attack_success_rate" in wanted:
            from ...metrics import attack_success_rate

            values["attack_success_rate"] = attack_success_rate(clean.argmax(1), advl.argmax(1), labels, targets)
        if "mean_perturbation_linf" in wanted:
            values["mean_perturbation_linf"] = torch.cat(linf).mean().item()
        values["defense_train_seconds"] = defense_seconds
        values = {k: v for k, v in values.items() if k in wanted}
        missing = wanted - set(values)
        if missing:
            raise ValueError(f"metrics {sorted(missing)} are not computed for task {cell['task']!r}")
        threat = self.threat_models(cell, attack)
        artifacts = []
        folder = ctx.staging_folder() if cell.get("save_artifacts") else None
        if folder is not None:
            artifacts = write_examples(cell, first, folder, getattr(dataset, "class_names", None))
        return CellOutput(values, lambda name: threat[self.metric_kind(name)], artifacts, method_params(attack),
                          method_params(baseline) if baseline is not None else None, int(pixels.shape[0]))

    def metric_kind(self, name: str) -> str:
        if name == "defense_train_seconds":
            return "cost"
        if name in self.noise_metrics:
            return "noise"
        if name in self.adv_metrics or name in ("attack_success_rate", "mean_perturbation_linf"):
            return "adv"
        return "clean"

    @staticmethod
    def threat_models(cell: dict, attack: Any) -> dict[str, str]:
        """The threat-model strings stored with each metric kind (clean / noise / adversarial / cost)."""
        p = method_params(attack)
        budget = " ".join(x for x in (p.get("norm"), f"eps={format_eps(p['eps'])}" if "eps" in p else None) if x)
        kind = "targeted" if cell.get("targeted") else "untargeted"
        family = getattr(attack, "threat_model", "white-box")
        adv = f"{family} {cell['attack']['name']}, {kind}" + (f", {budget}" if budget else "")
        defense = cell.get("defense")
        cost = f"training cost of defense {defense['name']}" if defense else "no defense"
        return {"clean": "clean inputs (no perturbation)", "noise": f"uniform random noise, {budget}", "adv": adv,
                "cost": cost}


def require_noise(noise: torch.Tensor | None) -> torch.Tensor:
    if noise is None:
        raise ValueError("noise metrics need a baseline; set `baseline: noise` in the spec")
    return noise


def noise_baseline(name: str, attack: Any) -> Any:
    """The baseline attack ``name`` (an evasion attack: ``noise``) with the same budget (eps, norm) as ``attack``."""
    from ... import registry
    from ...methods import accepted_parameters

    factory = registry.get("attacks", name).factory
    accepted, var_kw = accepted_parameters(factory)
    budget = {k: v for k, v in method_params(attack).items() if k in ("eps", "norm")}
    if "eps" not in budget:
        raise ValueError(f"baseline {name!r} needs the attack's budget, but the attack has no 'eps' parameter; "
                         "set `baseline: null` for attacks without an epsilon budget")
    return factory(**{k: v for k, v in budget.items() if var_kw or k in accepted})


def write_examples(cell: dict, first: dict[str, torch.Tensor], folder: Any,
                   class_names: list[str] | None = None) -> list[dict]:
    """The first batch as a labelled PNG (clean / adversarial / perturbation rows, each tile's prediction) and as
    safetensors."""
    from safetensors.torch import save_file

    from ...report.examples import example_grid as labelled_grid

    png = folder / "examples.png"
    buf = io.BytesIO()
    title = f"{cell['attack']['name']} eps={format_eps(cell['attack']['params'].get('eps'))} on {cell['model']}"
    labelled_grid(first["clean_pixels"], first["adv_pixels"], first.get("clean_pred"), first.get("adv_pred"),
                  first["labels"], class_names, k=EXAMPLE_PAIRS, title=title).save(buf, format="PNG")
    png.write_bytes(buf.getvalue())
    tensors = folder / "adv_batch0.safetensors"
    # One metadata key only: safetensors writes its metadata map in hash order, so several keys
    # would make the file's bytes (and sha256) differ from process to process.
    meta = {"mmsec": json.dumps({"cell": cell, "content": "first batch: adversarial and clean pixels, labels"},
                                sort_keys=True)}
    save_file({k: v.detach().contiguous().cpu() for k, v in first.items()}, str(tensors), metadata=meta)
    return [artifact_entry("examples_png", png), artifact_entry("adv_batch_safetensors", tensors)]


__all__ = ["DEFENSE_COST", "EvasionTask", "noise_baseline", "require_noise", "write_examples"]
