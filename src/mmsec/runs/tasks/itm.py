"""Task ``itm``: a fusion model's image-text matching (ITM), clean and under an embedding-space attack.

The threat model VILLA (Gan et al., NeurIPS 2020) trains against: the adversary perturbs the
*inputs of the fusion encoder* -- the image tokens or the word embeddings of the text, one modality
at a time -- and wants each pair's ITM decision to flip. A cell takes its ``model`` (a fusion model,
e.g. ``zoo:shapes-albef``), optionally fine-tuned by its ``defense`` (kind ``defenses`` with a fusion
model: ``villa``; plain fine-tuning with the same loss and data is ``villa`` with ``adv_steps: 1``),
and scores the ITM decision on the test scenes' pairs (:func:`~mmsec.evaluation.itm.shapes_itm_pairs`:
each scene with its first caption, "match", and that caption made false by one attribute edit,
"no match") clean, under the cell's attack (kind ``embedding_attacks``: ``fused_embedding_pgd``, its
``eps`` a fraction of each example's embedding norm and its ``modality`` grid axes as any attack
parameter) and, with ``baseline: noise``, under a random perturbation of the same relative norm.
The model's clean utility is stored beside it: dual-encoder (ITC) retrieval R@1 both ways and
zero-shot top-1 on the same test scenes, and the defense's training time.

The defended model is trained once per (model, defense, seed) and shared by the cells of every
attack budget and modality (persisted in the results folder: it keeps the published model's
architecture).
"""

from __future__ import annotations

from typing import Any

import torch

from ...metrics import DEFINITIONS, MetricDefinition, recall_at_k, topk_accuracy
from ...registry import register
from ..cells import derive_seed, method_params
from ..task import CellOutput, Task
from .common import build_method, class_prompts, evaluation_data, hardened, image_size_of
from .evasion import DEFENSE_COST
from .retrieval import retrieval_objective

PAIRS = ("each test scene with its first caption (label match) and, where one exists, that caption made false by "
         "one attribute edit (label no match)")
_OWN = [
    MetricDefinition("itm_accuracy", 1, f"itm: fraction of the image-text pairs ({PAIRS}) whose ITM decision (argmax "
                                        "of the ITM head) equals the label, clean inputs", higher_is_better=True),
    MetricDefinition("itm_accuracy_adv", 1, "itm: ITM accuracy on the same pairs under the cell's embedding-space "
                                            "attack on one modality's fusion-encoder inputs (a pair counts as right "
                                            "only if no iterate of the attack flipped it)", higher_is_better=True),
    MetricDefinition("itm_accuracy_noise", 1, "itm: ITM accuracy on the same pairs when the attacked modality's "
                                              "fusion-encoder inputs get a random perturbation of the attack's "
                                              "relative L2 norm (eps x the example's clean embedding norm over the "
                                              "sequence; direction uniform on the sphere; text padding untouched)",
                     higher_is_better=True),
    MetricDefinition("itm_attack_success_rate", 1, "itm: fraction of the pairs ITM gets right on clean inputs that "
                                                   "the attack flips", higher_is_better=False),
]
SHARED = ("i2t_r1", "t2i_r1", "clean_accuracy")  # clean utility: ITC retrieval and zero-shot (global definitions)


@register("tasks", "itm")
class ITMTask(Task):
    """Image-text matching of a fusion model under embedding-space attacks, with its clean utility."""

    metrics = {**{d.name: d for d in _OWN}, **{m: DEFINITIONS[m] for m in SHARED}, DEFENSE_COST.name: DEFENSE_COST}
    default_metrics = ("itm_accuracy", "itm_accuracy_adv", "itm_attack_success_rate", "i2t_r1", "t2i_r1",
                       "clean_accuracy", "defense_train_seconds")
    noise_metric = "itm_accuracy_noise"
    attack_kinds = ("embedding_attacks",)
    attack_words = "embedding-space attack"
    defense_kinds = ("defenses",)
    baselines = ("noise",)
    baseline_words = "a random perturbation of the attack's relative norm in the attacked modality's embeddings"
    family = "fusion"

    def check(self, spec: Any, block: Any) -> list[str]:
        issues = []
        if spec.data.name != "shapes":
            issues.append(f"data.name: task 'itm' builds its non-matching pairs by editing shapes-world scenes, got "
                          f"{spec.data.name!r}")
        return issues

    def check_baseline(self, baseline: str, attack: Any, name: str) -> str | None:
        p = attack.params()
        if "eps" not in p or p.get("modality") not in ("image", "text"):
            return f"'noise' needs the attack's eps and modality, but {name} has {sorted(p)}; set `baseline: null`"
        return None

    def run(self, cell: dict, ctx: Any) -> CellOutput:
        from ...evaluation.itm import shapes_itm_pairs

        model, defense_seconds = hardened(ctx, cell, self.defense_kinds)
        data, seed = cell["data"], int(cell["seed"])
        size = data.get("image_size") or image_size_of(model)
        pairs = ctx.cached({"itm_pairs": data, "image_size": size},
                           lambda: shapes_itm_pairs(data["split"], n=data["n"], image_size=size,
                                                    start=data.get("start") or 0, world_seed=data["seed"]))
        attack, _ = build_method(self.attack_kinds, cell["attack"])
        params = method_params(attack)
        bs = int(cell["batch_size"])
        clean_ok, adv_ok, noise_ok = [], [], []
        gen_attack = torch.Generator().manual_seed(derive_seed(seed, "attack"))
        gen_noise = torch.Generator().manual_seed(derive_seed(seed, "baseline"))
        for s in range(0, len(pairs.captions), bs):
            tokens = model.tokenize(pairs.captions[s:s + bs])  # (B, L)
            labels = pairs.labels[s:s + bs]  # (B,)
            with torch.no_grad():
                feats = model.image_features(pairs.pixels[s:s + bs])  # (B, N, W_img)
                embeds = model.text_token_embeddings(tokens)  # (B, L, W_txt)
                clean_ok.append(model.itm_head(model.fuse_features(feats, embeds, tokens)).argmax(-1) == labels)
            result = attack(model, feats, embeds, tokens, labels, generator=gen_attack)
            adv_ok.append(result.adv_correct)
            if cell.get("baseline"):
                noise_ok.append(noise_correct(model, feats, embeds, tokens, labels, float(params["eps"]),
                                              params["modality"], gen_noise))
        clean, adv = torch.cat(clean_ok), torch.cat(adv_ok)
        values = {"itm_accuracy": clean.float().mean().item(), "itm_accuracy_adv": adv.float().mean().item(),
                  "itm_attack_success_rate": ((clean & ~adv).sum() / clean.sum().clamp_min(1)).item(),
                  "defense_train_seconds": defense_seconds}
        if noise_ok:
            values["itm_accuracy_noise"] = torch.cat(noise_ok).float().mean().item()
        wanted = set(cell["metrics"])
        if wanted & set(SHARED):
            key = {"itm_utility": cell["model"], "defense": cell.get("defense"), "seed": seed, "data": data}
            values.update(ctx.cached(key, lambda: clean_utility(ctx, model, data)))
        values = {k: v for k, v in values.items() if k in wanted}

        budget = f"L2 eps={params['eps']:g} x the clean {params['modality']} embeddings' norm"
        threat = {
            "clean": "clean inputs (no perturbation)",
            "adv": f"{attack.threat_model}: {cell['attack']['name']}, untargeted, {budget}, {params['steps']} steps",
            "noise": f"random perturbation of the {params['modality']} embeddings, {budget}",
            "cost": f"training cost of defense {cell['defense']['name']}" if cell.get("defense") else "no defense",
        }

        def threat_of(name: str) -> str:
            if name == "defense_train_seconds":
                return threat["cost"]
            if name == "itm_accuracy_noise":
                return threat["noise"]
            return threat["adv" if name in ("itm_accuracy_adv", "itm_attack_success_rate") else "clean"]

        baseline_params = ({"name": cell["baseline"], "eps": params["eps"], "modality": params["modality"]}
                           if noise_ok else None)
        return CellOutput(values, threat_of, [], params, baseline_params, len(pairs.captions))


def noise_correct(model: Any, feats: torch.Tensor, embeds: torch.Tensor, tokens: torch.Tensor, labels: torch.Tensor,
                  eps: float, modality: str, generator: torch.Generator) -> torch.Tensor:
    """(B,) bool: ITM still right after a random perturbation of one modality's fusion-encoder inputs whose
    L2 norm is ``eps`` times the example's clean embedding norm (padding positions of the text untouched)."""
    keep = (~model.padding_mask(tokens)).unsqueeze(-1).to(embeds.dtype)  # (B, L, 1)
    base = feats if modality == "image" else embeds * keep
    direction = torch.randn(base.shape, generator=generator).to(base.dtype)
    if modality == "text":
        direction = direction * keep
    shape = (-1, *([1] * (base.ndim - 1)))
    delta = direction * (eps * base.flatten(1).norm(dim=1) / direction.flatten(1).norm(dim=1).clamp_min(1e-12)).view(shape)
    with torch.no_grad():
        if modality == "image":
            logits = model.itm_head(model.fuse_features(feats + delta, embeds, tokens))
        else:
            logits = model.itm_head(model.fuse_features(feats, embeds + delta, tokens))
    return logits.argmax(-1) == labels


def clean_utility(ctx: Any, model: Any, data: dict) -> dict[str, float]:
    """ITC retrieval R@1 (image-to-text and text-to-image, the deduplicated first captions as gallery) and
    zero-shot top-1, on the cell's test scenes: what a defense must not cost."""
    from ...attacks.objectives import ZeroShotObjective

    dataset = evaluation_data(ctx, data, image_size_of(model))
    objective, labels, gallery = retrieval_objective(model, dataset, data["name"])
    with torch.no_grad():
        sim = torch.cat([objective.logits(x) for x in dataset.pixels.split(250)])  # (N, G)
        images_of_text: list[set[int]] = [set() for _ in range(gallery)]
        for i, j in enumerate(labels.tolist()):
            images_of_text[j].add(i)
        zs = ZeroShotObjective(model, class_prompts(dataset, data["name"]))
        zs_logits = torch.cat([zs.logits(x) for x in dataset.pixels.split(250)])
    return {"i2t_r1": recall_at_k(sim, labels, 1), "t2i_r1": recall_at_k(sim.T, images_of_text, 1),
            "clean_accuracy": topk_accuracy(zs_logits, torch.as_tensor(dataset.labels, dtype=torch.long), 1)}


__all__ = ["ITMTask", "clean_utility", "noise_correct"]
