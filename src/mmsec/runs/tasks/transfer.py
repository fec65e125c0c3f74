"""Task ``transfer``: adversarial (image, caption) pairs crafted on a source model, scored on a target model.

A transfer cell has ``model`` (the source, white-box to the attacker), ``target`` (the model the
pairs are scored on; the source itself gives the white-box number; a list is the innermost grid
axis), a pair attack (registry kind ``pair_attacks``: Co-Attack, SGA, ...) and the data: N images
with their first caption. The metrics are those of :mod:`mmsec.evaluation.pair_retrieval` on the
target: the attack success rate (ASR) of image-to-text and text-to-image retrieval at R@1, and with
``baseline: noise`` the ASR of uniform image noise of the attack's budget (clean captions).

Attacks guided by an image's whole caption set (SGA's ``caption_sets``) get every caption of the
data set's image (the shapes world: its six templates); the pair's caption is the first.

The crafted pairs depend on the source, the attack, the data and the seed only, so they are
computed once per process (the context's cache) and shared by the cells of every target.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import torch
from pydantic import Field, StrictStr

from ...metrics import MetricDefinition
from ...registry import register
from ..cells import derive_seed, format_eps, method_params
from ..task import CellOutput, Task, TaskBlock
from .common import build_method, evaluation_data, first_caption, image_size_of

_METRICS = [
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
]


class TransferBlock(TaskBlock):
    target: StrictStr | list[StrictStr] | None = Field(
        default=None, description="has target models")  # the models scored on the source's pairs


@register("tasks", "transfer")
class TransferTask(Task):
    """Pairs crafted on a source model, image-text retrieval ASR on each target model."""

    Block = TransferBlock
    axes = ("target",)
    metrics = {d.name: d for d in _METRICS}
    default_metrics = ("asr", "asr_i2t", "asr_t2i", "clean_i2t_r1", "words_changed")
    noise_metric = "asr_noise"
    attack_kinds = ("pair_attacks",)
    attack_words = "pair attack"
    baselines = ("noise",)
    baseline_words = "uniform image noise of the attack's budget"
    no_defense_hint = " (score a defended target instead)"

    def check(self, spec: Any, block: TransferBlock) -> list[str]:
        from ..spec import check_model_names

        issues = []
        if block.target is None:
            return ["target: task 'transfer' needs the target models the source's adversarial pairs are "
                    "scored on (e.g. target: [zoo:shapes-clip-resnet, zoo:shapes-clip-vit])"]
        if isinstance(block.target, list):
            if not block.target:
                issues.append("target: empty list; give at least one target model")
            for i, v in enumerate(block.target):
                if block.target.index(v) != i:
                    issues.append(f"target[{i}]: duplicate value {v!r} (each grid cell must be distinct)")
        named = ([(f"target[{i}]", m) for i, m in enumerate(block.target)] if isinstance(block.target, list)
                 else [("target", block.target)])
        return issues + check_model_names(named)

    def check_baseline(self, baseline: str, attack: Any, name: str) -> str | None:
        if "eps" not in attack.params():
            return f"'noise' needs the attack's eps, but {name} has none; set `baseline: null`"
        return None

    def models_of(self, cell: dict) -> list[str]:
        return [cell["model"], cell["target"]]

    def run(self, cell: dict, ctx: Any) -> CellOutput:
        from ...evaluation.pair_retrieval import attack_success, caption_positives, pair_retrieval

        seed = int(cell["seed"])
        key = {"crafted_pairs": cell["model"], "attack": cell["attack"], "data": cell["data"], "seed": seed,
               "batch_size": int(cell["batch_size"])}
        crafted = ctx.cached(key, lambda: craft(ctx, cell["model"], cell["attack"], cell["data"], seed,
                                                int(cell["batch_size"])))
        pixels, captions, adv_pixels, adv_texts, changed, params, _ = crafted
        target = ctx.load_model(cell["target"])
        positives = caption_positives(captions)
        clean = pair_retrieval(target, pixels, captions, positives)
        adv = pair_retrieval(target, adv_pixels, adv_texts, positives)
        values: dict[str, float] = dict(attack_success(clean, adv).items())
        values["words_changed"] = sum(changed) / max(1, len(changed))
        if "asr_noise" in cell["metrics"]:
            gen = torch.Generator().manual_seed(derive_seed(seed, "baseline"))
            eps = float(params["eps"])
            noisy = (pixels + (torch.rand(pixels.shape, generator=gen) * 2 - 1) * eps).clamp(0, 1)
            values["asr_noise"] = attack_success(clean, pair_retrieval(target, noisy, captions, positives))["asr"]

        budget = f"linf eps={format_eps(params['eps'])}" if "eps" in params else ""
        words = f", {params.get('text_max_words', 0)} word(s)" if params.get("mode", "co") != "image" else ""
        adv_tm = (f"transfer {cell['attack']['name']} from {cell['model']} to {cell['target']}, untargeted"
                  + (f", {budget}" if budget else "") + words)
        threat = {"clean": "clean inputs (no perturbation)", "adv": adv_tm,
                  "noise": f"uniform random image noise, {budget}, on {cell['target']}"}

        def threat_of(name: str) -> str:
            return threat["noise" if name == "asr_noise" else ("clean" if name.startswith("clean_") else "adv")]

        values = {k: v for k, v in values.items() if k in cell["metrics"]}
        return CellOutput(values, threat_of, [], params,
                          {"eps": params.get("eps")} if "asr_noise" in cell["metrics"] else None,
                          int(pixels.shape[0]))


def caption_pairs(ctx: Any, data: dict, image_size: int) -> tuple[torch.Tensor, list[str], list[list[str]]]:
    """Pixels, each image's first caption, and each image's caption set."""
    dataset = evaluation_data(ctx, data, image_size)
    if not getattr(dataset, "captions", None):
        raise ValueError(f"task 'transfer' scores image-text retrieval and needs captions, but data set "
                         f"{data['name']!r} has none")
    sets = [[c] if isinstance(c, str) else list(c) for c in dataset.captions]
    return dataset.pixels, [first_caption(c) for c in dataset.captions], sets


def lexical_groups(attack_cfg: dict, data: dict) -> dict:
    """On the shapes world, a text attack whose word substitutes include lexical neighbours gets the world's
    table (``neighbours``: the attack itself knows no world), unless the spec gives its own: a pair attack's
    shortcut, or the params of its ``text_attack`` component."""
    from ... import registry
    from ...methods import accepted_parameters

    if data.get("name") != "shapes":
        return attack_cfg
    from ...data.shapes_text import shapes_lexical_groups

    def wants(params: dict) -> bool:
        return params.get("neighbours") is None and params.get("candidates", "default") in (None, "default", "lexical")

    params = dict(attack_cfg.get("params", {}))
    text = params.get("text_attack")
    if isinstance(text, str):
        text = {"name": text, "params": {}}
    if isinstance(text, dict):
        text_params = dict(text.get("params") or {})
        entry = registry.find(text["name"], ("text_attacks",))
        if entry is not None and "neighbours" in accepted_parameters(entry.factory)[0] and wants(text_params):
            params["text_attack"] = {"name": text["name"], "params": {**text_params, "neighbours": shapes_lexical_groups()}}
        return {"name": attack_cfg["name"], "params": params}
    entry = registry.find(attack_cfg["name"], TransferTask.attack_kinds)
    if entry is None or "neighbours" not in accepted_parameters(entry.factory)[0] or not wants(params):
        return attack_cfg
    return {"name": attack_cfg["name"], "params": {**params, "neighbours": shapes_lexical_groups()}}


def craft(ctx: Any, source: str, attack_cfg: dict, data: dict, seed: int, batch_size: int) -> tuple:
    """(clean pixels, clean captions, adversarial pixels, adversarial captions, words changed, params, seconds)."""
    model = ctx.load_model(source)
    pixels, captions, sets = caption_pairs(ctx, data, image_size_of(model))
    attack, _ = build_method(TransferTask.attack_kinds, lexical_groups(attack_cfg, data))
    takes_sets = "caption_sets" in inspect.signature(attack.__call__).parameters
    gen = torch.Generator().manual_seed(derive_seed(seed, "attack"))
    start = time.perf_counter()
    adv_pixels, adv_texts, changed = [], [], []
    for s in range(0, pixels.shape[0], batch_size):
        extra = {"caption_sets": sets[s:s + batch_size]} if takes_sets else {}
        result = attack(model, pixels[s:s + batch_size], captions[s:s + batch_size], generator=gen, **extra)
        adv_pixels.append(result.adv_pixels.detach())
        adv_texts += result.adv_texts
        changed += result.text.words_changed if result.text is not None else [0] * len(result.adv_texts)
    return (pixels, captions, torch.cat(adv_pixels), adv_texts, changed, method_params(attack),
            time.perf_counter() - start)


__all__ = ["TransferTask", "caption_pairs", "craft"]
