"""Execute one transfer cell: adversarial pairs crafted on the source model, scored on a target model.

A transfer cell has ``model`` (the source, white-box to the attacker), ``target`` (the model the
pairs are scored on; the source itself gives the white-box number), a pair attack
(``registry`` kind ``pair_attacks``: Co-Attack, SGA, ...) and the data: N images with their
first caption. The metrics are those of :mod:`mmsec.evaluation.pair_retrieval` on the target:
the attack success rate (ASR) of image-to-text and text-to-image retrieval at R@1, and with
``baseline: noise`` the ASR of uniform image noise of the attack's budget (clean captions).

Attacks guided by an image's whole caption set (SGA's ``caption_sets``) get every caption of the
data set's image (the shapes world: its six templates); the pair's caption is the first.

The crafted pairs depend on the source, the attack, the data and the seed only, so they are
computed once per process and shared by the cells of every target (the grid puts the target
axis innermost).
"""

from __future__ import annotations

import inspect
import json
import time
from functools import lru_cache

import torch

from ..evaluation.pair_retrieval import attack_success, caption_positives, pair_retrieval
from .execute import (
    _first,
    _first_caption,
    attack_params,
    build_attack,
    cell_result,
    derive_seed,
    format_eps,
    load_data,
    load_model,
    metric_rows,
)


def _pairs(cell: dict, image_size: int) -> tuple[torch.Tensor, list[str], list[list[str]]]:
    """Pixels, each image's first caption, and each image's caption set."""
    data = cell["data"]
    dataset = load_data(data, image_size)
    n = data.get("n")
    if n is not None:
        if n > len(dataset.pixels):
            raise ValueError(f"data.n = {n} but data set {data['name']!r} has only {len(dataset.pixels)} images")
        dataset = _first(dataset, n)
    if not getattr(dataset, "captions", None):
        raise ValueError(f"task 'transfer' scores image-text retrieval and needs captions, but data set "
                         f"{data['name']!r} has none")
    sets = [[c] if isinstance(c, str) else list(c) for c in dataset.captions]
    return dataset.pixels, [_first_caption(c) for c in dataset.captions], sets


@lru_cache(maxsize=2)
def _crafted(source: str, attack_json: str, data_json: str, seed: int, batch_size: int):
    """(clean pixels, clean captions, adversarial pixels, adversarial captions, words changed, params, seconds)."""
    model = load_model(source)
    attack_cfg, data = json.loads(attack_json), json.loads(data_json)
    pixels, captions, sets = _pairs({"data": data}, int(getattr(model, "image_size", 32)))
    attack = build_attack(attack_cfg["name"], attack_cfg["params"], "pair_attacks")
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
    return (pixels, captions, torch.cat(adv_pixels), adv_texts, changed, attack_params(attack),
            time.perf_counter() - start)


def execute_transfer_cell(cell: dict) -> dict:
    """Run one transfer cell; returns the same plain dict as :func:`mmsec.runs.execute.execute_cell`."""
    t0 = time.perf_counter()
    seed = int(cell["seed"])
    pixels, captions, adv_pixels, adv_texts, changed, params, craft_seconds = _crafted(
        cell["model"], json.dumps(cell["attack"], sort_keys=True), json.dumps(cell["data"], sort_keys=True), seed,
        int(cell["batch_size"]))
    target = load_model(cell["target"])
    positives = caption_positives(captions)
    clean = pair_retrieval(target, pixels, captions, positives)
    adv = pair_retrieval(target, adv_pixels, adv_texts, positives)
    values: dict[str, float] = {f"{k}": v for k, v in attack_success(clean, adv).items()}
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

    return cell_result(metric_rows(cell["metrics"], values, threat_of), [], params,
                       {"eps": params.get("eps")} if "asr_noise" in cell["metrics"] else None, int(pixels.shape[0]),
                       t0)


__all__ = ["execute_transfer_cell"]
