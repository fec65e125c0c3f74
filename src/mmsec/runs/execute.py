"""Execute one grid cell: load model and data, run the baseline and the attack, compute metrics.

A cell is a plain dict (see :mod:`mmsec.runs.grid`): ``model``, ``seed``, ``data``, ``task``,
``attack`` (``name`` + resolved scalar ``params``), ``targeted``, ``baseline``, ``metrics``,
``batch_size``, ``save_artifacts``. :func:`execute_cell` returns a plain, JSON-serialisable dict,
so the same function runs in-process (sequential backend) or in a Ray worker; the driver alone
writes to the results store.

Determinism: every random draw comes from a generator seeded from the cell seed, with one
independent stream per purpose (attack random start, baseline noise, target choice), so the
baseline does not shift the attack's random start and vice versa.

Metric threat models: every metric row names the perturbation it was measured under, so two
numbers are compared only when they mean the same thing: clean metrics say ``clean inputs``,
noise metrics ``uniform noise, <norm> eps=<eps>``, adversarial ones the attack's threat model
(``white-box pgd, untargeted, linf eps=8/255``).
"""

from __future__ import annotations

import hashlib
import inspect
import io
import json
import logging
import math
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

from ..metrics import DEFINITIONS, MetricDefinition, attack_success_rate, recall_at_k, topk_accuracy
from ..models.checkpoint import sha256_file

logger = logging.getLogger(__name__)

# Metrics that exist only in the runs layer (retrieval under attack / noise). They carry a
# MetricDefinition like the global ones; candidates to move into mmsec.metrics.DEFINITIONS.
RUN_METRIC_DEFINITIONS: dict[str, MetricDefinition] = {d.name: d for d in [
    MetricDefinition("i2t_r1_adv", 1, "image-to-text retrieval recall@1 of the attack's adversarial images "
                                      "against the clean caption gallery", higher_is_better=True),
    MetricDefinition("i2t_r5_adv", 1, "image-to-text retrieval recall@5 of the attack's adversarial images "
                                      "against the clean caption gallery"),
    MetricDefinition("i2t_r10_adv", 1, "image-to-text retrieval recall@10 of the attack's adversarial images "
                                       "against the clean caption gallery"),
    MetricDefinition("t2i_r1_adv", 1, "text-to-image retrieval recall@1 when the image gallery is the attack's "
                                      "adversarial images"),
    MetricDefinition("i2t_r1_noise", 1, "image-to-text retrieval recall@1 under uniform noise of the attack's "
                                        "budget"),
    MetricDefinition("asr", 1, "transfer: attack success rate on the target's pair retrieval, mean of the "
                               "image-to-text and text-to-image ASR (R@1 queries right before the attack and "
                               "wrong after it)"),
    MetricDefinition("asr_i2t", 1, "transfer: ASR of image-to-text retrieval (TR) at R@1 on the target"),
    MetricDefinition("asr_t2i", 1, "transfer: ASR of text-to-image retrieval (IR) at R@1 on the target"),
    MetricDefinition("asr_noise", 1, "transfer: ASR on the target of uniform image noise of the attack's budget "
                                     "(clean captions)"),
    MetricDefinition("clean_i2t_r1", 1, "transfer: the target's image-to-text R@1 on the clean pairs",
                     higher_is_better=True),
    MetricDefinition("clean_t2i_r1", 1, "transfer: the target's text-to-image R@1 on the clean pairs",
                     higher_is_better=True),
    MetricDefinition("adv_i2t_r1", 1, "transfer: the target's image-to-text R@1 on the adversarial pairs",
                     higher_is_better=True),
    MetricDefinition("adv_t2i_r1", 1, "transfer: the target's text-to-image R@1 on the adversarial pairs",
                     higher_is_better=True),
    MetricDefinition("words_changed", 1, "transfer: mean number of words the attack changed per caption",
                     higher_is_better=False),
    MetricDefinition("backdoor_asr", 1, "backdoor: fraction of triggered non-target test images classified "
                                        "zero-shot as the target"),
    MetricDefinition("backdoor_asr_i2t", 1, "backdoor: fraction of triggered non-target test images whose top-1 "
                                            "caption (gallery: the test scenes' captions) is of the target class"),
    MetricDefinition("backdoor_asr_t2i", 1, "backdoor: fraction of target-class caption queries whose top-1 image "
                                            "(gallery: the triggered non-target and clean test images) is triggered"),
    MetricDefinition("backdoor_asr_noise", 1, "backdoor: zero-shot ASR on the poisoned model of a uniform-noise "
                                              "patch of the trigger's size and place"),
    MetricDefinition("backdoor_asr_probe", 1, "backdoor: fraction of triggered non-target test images a linear probe "
                                     "(fit after the attack on the model's clean train embeddings) assigns the target"),
    MetricDefinition("probe_accuracy", 1, "backdoor: clean test accuracy of that linear probe", higher_is_better=True),
    MetricDefinition("clean_accuracy_control", 1, "backdoor: clean zero-shot top-1 of the same training on clean "
                                                  "data (the control)", higher_is_better=True),
    MetricDefinition("clean_accuracy_drop", 1, "backdoor: control's clean zero-shot top-1 minus the poisoned "
                                               "model's, in points", higher_is_better=False),
    MetricDefinition("backdoor_asr_control", 1, "backdoor: zero-shot ASR of the same trigger on the control (what the "
                                       "trigger does without poisoning)"),
    MetricDefinition("n_poisoned", 1, "backdoor: number of poisoned training pairs", higher_is_better=False),
    MetricDefinition("train_seconds", 1, "backdoor: wall-clock seconds of the poisoned training",
                     higher_is_better=False),
    MetricDefinition("backdoor_asr_undefended", 1, "backdoor: zero-shot ASR of the backdoored model before the cell's "
                                                   "defense (backdoor_asr is measured after it)"),
    MetricDefinition("clean_accuracy_undefended", 1, "backdoor: clean zero-shot top-1 of the backdoored model before "
                                                     "the cell's defense", higher_is_better=True),
    MetricDefinition("clean_accuracy_cost", 1, "backdoor: clean zero-shot top-1 before the defense minus after it, "
                                               "in points", higher_is_better=False),
    MetricDefinition("detection_auroc", 1, "backdoor: AUROC of the k-dist outlier score (Huang et al., ICLR 2025: "
                                           "distance to the 16th nearest neighbour within random batches of 1,024) "
                                           "ranking the poisoned training pairs above the clean ones, on their image "
                                           "embeddings by the backdoored model (before any defense); not stored for "
                                           "model tampering or a fresh-scene stream", higher_is_better=True),
    MetricDefinition("defense_train_seconds", 1, "wall-clock seconds the cell's defense took to train the "
                                                 "hardened model (0 for no defense)", higher_is_better=False),
]}

ZEROSHOT_METRICS = ("clean_accuracy", "top5_accuracy", "robust_accuracy", "noise_accuracy",
                    "attack_success_rate", "mean_perturbation_linf", "i2t_r1", "defense_train_seconds")
RETRIEVAL_METRICS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10",
                     "i2t_r1_adv", "i2t_r5_adv", "i2t_r10_adv", "t2i_r1_adv", "i2t_r1_noise",
                     "attack_success_rate", "mean_perturbation_linf", "defense_train_seconds")
TRANSFER_METRICS = ("asr", "asr_i2t", "asr_t2i", "asr_noise", "clean_i2t_r1", "clean_t2i_r1", "adv_i2t_r1",
                    "adv_t2i_r1", "words_changed")
BACKDOOR_METRICS = ("backdoor_asr", "clean_accuracy", "clean_accuracy_control", "clean_accuracy_drop",
                    "backdoor_asr_probe", "probe_accuracy", "backdoor_asr_i2t", "backdoor_asr_t2i",
                    "backdoor_asr_control", "backdoor_asr_noise", "n_poisoned", "train_seconds",
                    "backdoor_asr_undefended", "clean_accuracy_undefended", "clean_accuracy_cost",
                    "defense_train_seconds", "detection_auroc")
TASK_METRICS: dict[str, tuple[str, ...]] = {"zeroshot": ZEROSHOT_METRICS, "retrieval": RETRIEVAL_METRICS,
                                            "transfer": TRANSFER_METRICS, "backdoor": BACKDOOR_METRICS}
DEFAULT_METRICS: dict[str, tuple[str, ...]] = {
    "transfer": ("asr", "asr_i2t", "asr_t2i", "clean_i2t_r1", "words_changed"),
    "zeroshot": ("clean_accuracy", "robust_accuracy", "noise_accuracy", "attack_success_rate",
                 "mean_perturbation_linf"),
    "retrieval": ("i2t_r1", "i2t_r1_adv", "i2t_r1_noise", "attack_success_rate", "mean_perturbation_linf"),
    "backdoor": ("backdoor_asr", "clean_accuracy", "clean_accuracy_control", "clean_accuracy_drop",
                 "backdoor_asr_probe", "backdoor_asr_i2t", "backdoor_asr_control", "n_poisoned"),
}
# The metric that needs the baseline, per task (always computed when a baseline is set).
NOISE_METRIC = {"zeroshot": "noise_accuracy", "retrieval": "i2t_r1_noise", "transfer": "asr_noise",
                "backdoor": "backdoor_asr_noise"}
# Which registry kind names a task's attack: transfer crafts (image, caption) pairs, backdoor poisons training data.
ATTACK_KIND = {"zeroshot": "attacks", "retrieval": "attacks", "transfer": "pair_attacks", "backdoor": "poisoning"}
# Tasks whose attacks come from more than one kind: a backdoor is planted by poisoning the training data
# or by tampering with the model itself (BadEncoder).
TASK_ATTACK_KINDS = {"backdoor": ("poisoning", "model_backdoors")}


def task_attack_kinds(task: str) -> tuple[str, ...]:
    """The registry kinds whose attacks ``task`` runs."""
    return TASK_ATTACK_KINDS.get(task, (ATTACK_KIND.get(task, "attacks"),))


def attack_kind(task: str, name: str) -> str:
    """The kind ``name`` is registered under among ``task``'s (its first kind when none has it)."""
    from .. import builtins, registry

    builtins.load()
    kinds = task_attack_kinds(task)
    return next((k for k in kinds if name in {e.name for e in registry.entries(k)}), kinds[0])


TASKS = tuple(TASK_METRICS)

# Class-prompt templates for image folders (CLIP-style; shapes uses its own zeroshot_prompts()).
IMAGEFOLDER_TEMPLATES = ("a photo of a {}", "a picture of a {}", "an image of a {}")
EXAMPLE_PAIRS = 8  # clean/adversarial pairs in the PNG artifact


def metric_definition(name: str) -> MetricDefinition:
    """The definition of a metric the runner can store (global DEFINITIONS first)."""
    if name in DEFINITIONS:
        return DEFINITIONS[name]
    if name in RUN_METRIC_DEFINITIONS:
        return RUN_METRIC_DEFINITIONS[name]
    raise KeyError(f"no definition for metric {name!r}")


def format_eps(value: Any) -> str:
    """``8/255`` for multiples of 1/255 (up to two decimals: ``0.25/255``), else ``%g``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    k = value * 255
    if abs(k - round(k, 2)) < 1e-9 and value != 0:
        return f"{round(k, 2):g}/255"
    return f"{value:g}"


def derive_seed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed for one purpose, a pure function of (seed, purpose)."""
    digest = hashlib.sha256(f"{int(seed)}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big") & ((1 << 63) - 1)


def choose_targets(labels: torch.Tensor, num_classes: int, seed: int) -> torch.Tensor:
    """Deterministic targets, uniformly among the classes other than each sample's label."""
    if num_classes < 2:
        raise ValueError(f"a targeted attack needs at least 2 classes, got {num_classes}")
    gen = torch.Generator().manual_seed(derive_seed(seed, "targets"))
    shift = torch.randint(1, num_classes, labels.shape, generator=gen)  # (N,) in [1, C-1]
    return (labels + shift) % num_classes


def _accepted_kwargs(factory: Any) -> tuple[set[str], bool]:
    """Names a factory accepts and whether it takes **kwargs."""
    try:
        sig = inspect.signature(factory)
    except (TypeError, ValueError):
        return set(), True
    names = {p.name for p in sig.parameters.values()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self"}
    return names, any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())


def build_attack(name: str, params: dict[str, Any], kind: str = "attacks") -> Any:
    """Construct registered attack ``name`` (of registry ``kind``) with ``params`` (scalars)."""
    from .. import builtins, registry

    builtins.load()
    return registry.get(kind, name).factory(**params)


def attack_params(attack: Any) -> dict[str, Any]:
    """The attack's configured hyper-parameters, JSON-safe."""
    params = attack.params() if hasattr(attack, "params") else {}
    return {k: _jsonable(v) for k, v in params.items()}


def build_baseline(name: str, attack: Any) -> Any:
    """The baseline attack ``name`` with the same budget (eps, norm) as ``attack``."""
    from .. import registry

    factory = registry.get("attacks", name).factory
    accepted, var_kw = _accepted_kwargs(factory)
    budget = {k: v for k, v in attack_params(attack).items() if k in ("eps", "norm")}
    if "eps" not in budget:
        raise ValueError(f"baseline {name!r} needs the attack's budget, but the attack has no 'eps' parameter; "
                         "set `baseline: null` for attacks without an epsilon budget")
    return factory(**{k: v for k, v in budget.items() if var_kw or k in accepted})


def threat_models(cell: dict, attack: Any) -> dict[str, str]:
    """The threat-model strings stored with each metric kind (clean / noise / adversarial)."""
    p = attack_params(attack)
    budget = " ".join(x for x in (p.get("norm"), f"eps={format_eps(p['eps'])}" if "eps" in p else None) if x)
    kind = "targeted" if cell.get("targeted") else "untargeted"
    family = getattr(attack, "threat_model", "white-box")
    adv = f"{family} {cell['attack']['name']}, {kind}" + (f", {budget}" if budget else "")
    defense = cell.get("defense")
    cost = f"training cost of defense {defense['name']}" if defense else "no defense"
    return {"clean": "clean inputs (no perturbation)", "noise": f"uniform random noise, {budget}", "adv": adv,
            "cost": cost}


DEFENSE_KINDS = ("defenses", "pretraining_defenses")


def build_defense(name: str, params: dict[str, Any]) -> Any:
    from .. import builtins, registry

    builtins.load()
    entry = registry.find(name, DEFENSE_KINDS) or registry.get("defenses", name)
    return entry.factory(**params)


def apply_defense(model: Any, defense: dict, seed: int) -> tuple[Any, float]:
    """A cell's ``defense`` (its plain-dict form) trained on ``model``: the new model and the seconds."""
    built = build_defense(defense["name"], defense["params"])
    data = load_data(defense["data"], int(getattr(model, "image_size", 32)))
    prompts = class_prompts(data, defense["data"]["name"]) if getattr(data, "labels", None) is not None else None
    result = built(model, data, prompts=prompts, generator=torch.Generator().manual_seed(derive_seed(seed, "defense")))
    return result.model.eval(), float(result.seconds)


@lru_cache(maxsize=2)
def _defended_cached(model_spec: str, defense_json: str, seed: int) -> tuple[Any, float]:
    """Train (once per process) the defense of a cell; cells that differ only in the attack share it."""
    return apply_defense(load_model(model_spec), json.loads(defense_json), seed)


def defended_model(cell: dict) -> tuple[Any, float]:
    """The cell's model after its defense (and the defense's training seconds; 0 without one)."""
    if not cell.get("defense"):
        return load_model(cell["model"]), 0.0
    return _defended_cached(cell["model"], json.dumps(cell["defense"], sort_keys=True), int(cell["seed"]))


# -- loading (cached per process: a Ray worker reuses its model across cells) ---------------------
@lru_cache(maxsize=4)  # a transfer grid alternates between a source and several targets
def load_model(spec: str) -> Any:
    from ..models.loaders import load_contrastive

    model = load_contrastive(spec)
    if hasattr(model, "eval"):
        model.eval()
    return model


@lru_cache(maxsize=2)
def _load_data_cached(key: str) -> Any:
    from ..data import load_dataset

    d = json.loads(key)
    name = d["name"]
    if name == "shapes":
        return load_dataset("shapes", quiet=True, split=d["split"], n=d["n"], image_size=d["image_size"],
                            seed=d["seed"])
    return load_dataset(name, quiet=True, path=d["path"], image_size=d["image_size"])


def load_data(data: dict, image_size: int) -> Any:
    resolved = dict(data, image_size=data.get("image_size") or image_size)
    return _load_data_cached(json.dumps(resolved, sort_keys=True))


def _first(dataset: Any, n: int) -> Any:
    """The first ``n`` samples of an in-memory data set (pixels, labels, class names, captions)."""
    labels, captions = getattr(dataset, "labels", None), getattr(dataset, "captions", None)
    return SimpleNamespace(pixels=dataset.pixels[:n], labels=None if labels is None else labels[:n],
                           class_names=getattr(dataset, "class_names", None),
                           captions=None if captions is None else captions[:n])


def _first_caption(c: Any) -> str:
    return c if isinstance(c, str) else c[0]


def class_prompts(dataset: Any, data_name: str) -> list[list[str]]:
    """Zero-shot prompts per class: the shapes world's own, else CLIP-style templates over class names."""
    if data_name == "shapes":
        from ..data.shapes import zeroshot_prompts

        return zeroshot_prompts()
    if not getattr(dataset, "class_names", None) or getattr(dataset, "labels", None) is None:
        raise ValueError(f"zero-shot classification needs labels and class names, but data set {data_name!r} "
                         "has none (use task: retrieval for caption-only data)")
    names = [str(c).replace("_", " ") for c in dataset.class_names]
    return [[t.format(c) for t in IMAGEFOLDER_TEMPLATES] for c in names]


def clean_i2t_r1(model: Any, dataset: Any) -> float:
    """Image-to-text R@1 of clean images against the data's (deduplicated) first captions."""
    if not getattr(dataset, "captions", None):
        raise ValueError("metric i2t_r1 needs captions, but the data set has none")
    objective, labels, _ = build_objective("retrieval", model, dataset, "")
    with torch.no_grad():
        return recall_at_k(torch.cat([objective.logits(x) for x in dataset.pixels.split(250)]), labels, 1)


def build_objective(task: str, model: Any, dataset: Any, data_name: str) -> tuple[Any, torch.Tensor, int]:
    """(objective, labels, number of gallery entries) for ``task``."""
    from ..attacks.objectives import RetrievalObjective, ZeroShotObjective

    if task == "zeroshot":
        prompts = class_prompts(dataset, data_name)
        labels = torch.as_tensor(dataset.labels, dtype=torch.long)
        learnt = getattr(model, "class_embeddings", None)  # a prompt-tuned model (AdvPT) classifies with its own
        if learnt is not None:
            if learnt.shape[0] != len(prompts):
                raise ValueError(f"the prompt-tuned model has {learnt.shape[0]} learnt classes but the data set has "
                                 f"{len(prompts)}; tune the prompts on data with the same classes")
            return ZeroShotObjective(model, class_embeddings=learnt), labels, len(prompts)
        return ZeroShotObjective(model, prompts), labels, len(prompts)
    if task == "retrieval":
        if not getattr(dataset, "captions", None):
            raise ValueError(f"task 'retrieval' needs captions, but data set {data_name!r} has none")
        texts = [_first_caption(c) for c in dataset.captions]
        # Deduplicate the gallery (shapes captions repeat): label = index of the image's caption text.
        gallery = list(dict.fromkeys(texts))
        index = {t: i for i, t in enumerate(gallery)}
        labels = torch.tensor([index[t] for t in texts], dtype=torch.long)
        return RetrievalObjective(model, gallery), labels, len(gallery)
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")


# -- what every task's cell returns ---------------------------------------------------------------
def metric_rows(names: list[str], values: dict[str, float], threat_model: Callable[[str], str]) -> list[dict]:
    """One stored row per metric: its value, its definition and the threat model it was measured under."""
    rows = []
    for name in names:
        d = metric_definition(name)
        rows.append({"name": name, "value": values[name], "metric_version": d.version,
                     "threat_model": threat_model(name), "definition": d.description,
                     "higher_is_better": bool(d.higher_is_better)})
    return rows


def cell_result(metrics: list[dict], artifacts: list[dict], attack_params: dict, baseline_params: dict | None,
                n_samples: int, t0: float) -> dict:
    """The plain dict a cell returns (see :func:`execute_cell`), with versions, host and timing."""
    from .. import __version__

    return {"metrics": metrics, "artifacts": artifacts, "attack_params": attack_params,
            "baseline_params": baseline_params, "n_samples": n_samples, "wall_time_s": time.perf_counter() - t0,
            "mmsec_version": __version__, "torch_version": torch.__version__, "host": socket.gethostname(),
            "pid": os.getpid()}


# -- the cell -------------------------------------------------------------------------------------
def execute_cell(cell: dict, staging_dir: str | Path | None = None) -> dict:
    """Run one cell and return its metrics (and staged artifact files) as a plain dict.

    Artifacts (when ``cell['save_artifacts']`` and ``staging_dir`` is given) are written to a
    fresh temporary folder under ``staging_dir``; the driver moves them into place with
    ``os.replace`` just before committing the cell.

    Returns ``{"metrics": [{name, value, metric_version, threat_model, definition,
    higher_is_better}], "artifacts": [{kind, filename, tmp_path, sha256, bytes}],
    "attack_params", "baseline_params", "n_samples", "wall_time_s", "mmsec_version",
    "torch_version", "host", "pid"}``.
    """
    if cell["task"] == "transfer":
        from .transfer import execute_transfer_cell

        return execute_transfer_cell(cell)
    if cell["task"] == "backdoor":
        from .backdoor import execute_backdoor_cell

        return execute_backdoor_cell(cell, staging_dir)
    t0 = time.perf_counter()
    model, defense_seconds = defended_model(cell)
    data = cell["data"]
    dataset = load_data(data, int(getattr(model, "image_size", 32)))
    n = data.get("n")
    if n is not None:
        if n > len(dataset.pixels):
            raise ValueError(f"data.n = {n} but data set {data['name']!r} has only {len(dataset.pixels)} images")
        dataset = _first(dataset, n)
    pixels = dataset.pixels  # (N, 3, H, W)
    objective, labels, num_classes = build_objective(cell["task"], model, dataset, data["name"])
    seed = int(cell["seed"])
    targets = choose_targets(labels, num_classes, seed) if cell.get("targeted") else None

    attack = build_attack(cell["attack"]["name"], cell["attack"]["params"])
    baseline = build_baseline(cell["baseline"], attack) if cell.get("baseline") else None
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
            first = {"clean_pixels": x, "adv_pixels": adv, "labels": y}
            if t is not None:
                first["targets"] = t
    clean, advl = torch.cat(clean_logits), torch.cat(adv_logits)
    noise = torch.cat(noise_logits) if noise_logits else None

    extra = {"defense_train_seconds": defense_seconds}
    if cell["task"] == "zeroshot" and "i2t_r1" in cell["metrics"]:
        extra["i2t_r1"] = clean_i2t_r1(model, dataset)
    values = _compute_metrics(cell, clean, advl, noise, labels, targets, torch.cat(linf), extra)
    tm = threat_models(cell, attack)
    metrics = metric_rows(cell["metrics"], values, lambda name: tm[_metric_kind(name)])
    artifacts = []
    if cell.get("save_artifacts") and staging_dir is not None:
        artifacts = _write_artifacts(cell, first, Path(staging_dir))
    return cell_result(metrics, artifacts, attack_params(attack),
                       attack_params(baseline) if baseline is not None else None, int(pixels.shape[0]), t0)


def run_cell(cell: dict, staging_dir: str | Path | None = None) -> dict:
    """:func:`execute_cell` that never raises an ``Exception``: a failure becomes
    ``{"status": "failed", "error": <traceback>, "wall_time_s": ...}``; success adds
    ``"status": "done"``. (KeyboardInterrupt still propagates: the cell stays resumable.)"""
    t0 = time.perf_counter()
    try:
        out = execute_cell(cell, staging_dir)
    except Exception as e:  # noqa: BLE001 - recorded in the store, reported by the runner
        logger.debug("cell failed", exc_info=True)
        return {"status": "failed", "error": f"{type(e).__name__}: {e}\n\n{traceback.format_exc()}",
                "wall_time_s": time.perf_counter() - t0}
    out["status"] = "done"
    return out


def _metric_kind(name: str) -> str:
    if name == "defense_train_seconds":
        return "cost"
    if name in ("noise_accuracy", "i2t_r1_noise", "asr_noise"):
        return "noise"
    if (name in ("robust_accuracy", "attack_success_rate", "mean_perturbation_linf", "asr", "asr_i2t", "asr_t2i",
                 "words_changed") or name.endswith("_adv") or name.startswith("adv_")):
        return "adv"
    return "clean"


def _compute_metrics(cell: dict, clean: torch.Tensor, adv: torch.Tensor, noise: torch.Tensor | None,
                     labels: torch.Tensor, targets: torch.Tensor | None, linf: torch.Tensor,
                     extra: dict[str, float] | None = None) -> dict[str, float]:
    """All requested metrics from logits (N, C) of clean, adversarial and noisy images (plus ``extra``,
    metrics computed elsewhere in the cell)."""
    wanted = set(cell["metrics"])
    out: dict[str, float] = {k: v for k, v in (extra or {}).items() if k in wanted}

    def need(name: str) -> bool:
        return name in wanted

    if need("attack_success_rate"):
        out["attack_success_rate"] = attack_success_rate(clean.argmax(1), adv.argmax(1), labels, targets)
    if need("mean_perturbation_linf"):
        out["mean_perturbation_linf"] = linf.mean().item()
    if cell["task"] == "zeroshot":
        if need("clean_accuracy"):
            out["clean_accuracy"] = topk_accuracy(clean, labels, 1)
        if need("top5_accuracy"):
            out["top5_accuracy"] = topk_accuracy(clean, labels, 5)
        if need("robust_accuracy"):
            out["robust_accuracy"] = topk_accuracy(adv, labels, 1)
        if need("noise_accuracy"):
            out["noise_accuracy"] = topk_accuracy(_require(noise), labels, 1)
    else:
        # Gallery texts may describe several images: text j's positives are all images with label j.
        images_of_text: list[set[int]] = [set() for _ in range(clean.shape[1])]
        for i, j in enumerate(labels.tolist()):
            images_of_text[j].add(i)
        for k in (1, 5, 10):
            if need(f"i2t_r{k}"):
                out[f"i2t_r{k}"] = recall_at_k(clean, labels, k)
            if need(f"t2i_r{k}"):
                out[f"t2i_r{k}"] = recall_at_k(clean.T, images_of_text, k)
            if need(f"i2t_r{k}_adv"):
                out[f"i2t_r{k}_adv"] = recall_at_k(adv, labels, k)
        if need("t2i_r1_adv"):
            out["t2i_r1_adv"] = recall_at_k(adv.T, images_of_text, 1)
        if need("i2t_r1_noise"):
            out["i2t_r1_noise"] = recall_at_k(_require(noise), labels, 1)
    missing = wanted - set(out)
    if missing:
        raise ValueError(f"metrics {sorted(missing)} are not computed for task {cell['task']!r}")
    for name, v in out.items():
        if not math.isfinite(v):
            raise ValueError(f"metric {name} is {v}; refusing to store a non-finite value")
    return out


def _require(noise: torch.Tensor | None) -> torch.Tensor:
    if noise is None:
        raise ValueError("noise metrics need a baseline; set `baseline: noise` in the spec")
    return noise


# -- artifacts ------------------------------------------------------------------------------------
def example_grid(clean: torch.Tensor, adv: torch.Tensor, k: int = EXAMPLE_PAIRS) -> Any:
    """A PIL image: row 1 clean, row 2 adversarial, row 3 the perturbation magnified to the full range.

    Tiles are upscaled (nearest) to at least 96 px so 32x32 images are visible.
    """
    from PIL import Image

    clean, adv = clean[:k].detach().float(), adv[:k].detach().float()  # (k, 3, H, W)
    delta = adv - clean
    scale = delta.abs().amax().clamp_min(1e-12)
    rows = [clean, adv, (0.5 + 0.5 * delta / scale)]
    grid = torch.cat([torch.cat(list(r), dim=2) for r in rows], dim=1)  # (3, 3H, kW)
    up = max(1, 96 // clean.shape[-1])
    arr = (grid.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
    img = Image.fromarray(arr, mode="RGB")
    return img.resize((img.width * up, img.height * up), Image.NEAREST) if up > 1 else img


def _write_artifacts(cell: dict, first: dict[str, torch.Tensor], staging: Path) -> list[dict]:
    from safetensors.torch import save_file

    folder = staging_folder(staging)
    png = folder / "examples.png"
    buf = io.BytesIO()
    example_grid(first["clean_pixels"], first["adv_pixels"]).save(buf, format="PNG")
    png.write_bytes(buf.getvalue())
    tensors = folder / "adv_batch0.safetensors"
    # One metadata key only: safetensors writes its metadata map in hash order, so several keys
    # would make the file's bytes (and sha256) differ from process to process.
    meta = {"mmsec": json.dumps({"cell": cell, "content": "first batch: adversarial and clean pixels, labels"},
                                sort_keys=True)}
    save_file({k: v.detach().contiguous().cpu() for k, v in first.items()}, str(tensors), metadata=meta)
    return [artifact_entry("examples_png", png), artifact_entry("adv_batch_safetensors", tensors)]


def staging_folder(staging: Path) -> Path:
    """A fresh folder for one cell's artifacts under ``staging`` (moved into place when the cell commits)."""
    staging.mkdir(parents=True, exist_ok=True)
    # The prefix names the writer, so stale folders of killed processes can be recognised.
    return Path(tempfile.mkdtemp(dir=staging, prefix=f"{socket.gethostname()}-{os.getpid()}-"))


def artifact_entry(kind: str, path: Path) -> dict:
    """The artifact record the runner stores: kind, file name, staged path, sha256, size."""
    return {"kind": kind, "filename": path.name, "tmp_path": str(path), "sha256": sha256_file(path),
            "bytes": path.stat().st_size}


def _jsonable(v: Any) -> Any:
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, torch.Tensor) and v.numel() == 1:
        return v.item()
    return repr(v)
