"""SEER on the shipped set: does it flag the backdoored CLIPs and not the clean ones?

Models, per shipped CLIP (``--models``), built exactly as ``recipes/defense_matrix.yaml``'s cells build
them (:func:`mmsec.runs.backdoor.backdoored_and_control`, seed 0):

- clean: the published zoo model, and the control (the same fine-tune as the poisoning, on clean pairs);
- backdoored, target "red circle": PBCL's 4 x 4 corner patch and BadCLIP's optimised centre patch (1%
  of a 4,096-pair fine-tune, 300 steps), and BadEncoder (the image tower tampered with, 20 epochs).

SEER (:class:`~mmsec.defenses.backdoor.seer.SEER`, its defaults) searches each model with
``--n-clean`` clean train scenes the models never saw (ids 200,000 on) and the model's own vocabulary.
Reported per model: ``S_IT``, the anomaly index ``AI = -log(1 - S_IT)`` and the verdict at the
threshold; the found mask's size and the share of it on the true trigger's pixels; the top words
of the found target and the best rank of a target word ("red", "circle"). Also the *oracle*
``S*``: ``S_IT`` with the true trigger stamped and ``F^T`` at the mean direction of those images
(the best the search could reach with that trigger, before its mask cost), which tells a search
that missed a trigger from a backdoor that is not there. For clean models the oracle uses PBCL's
trigger. ``S* at 0.5``: the same with the trigger at half opacity, as a mask and pattern at SEER's
start (0.5) would show it: whether the backdoor answers a faded trigger. ``AI from trigger``: SEER
started on the true trigger (``start=``) instead of 0.5, and the share of its final mask still on
the trigger: whether the objective keeps the real trigger once there (a search failure, if the
paper's start misses it) and scores it above what clean models reach.
Summary per shipped model: AUROC of AI (backdoored above clean) and flags at the threshold.

Acceptance (issue 7): "SEER flags the backdoored models and not the clean ones on the shipped set".

Usage::

    .venv/bin/python benchmarks/seer_eval.py                       # ~45 min on one core (trains 8 models)
    .venv/bin/python benchmarks/seer_eval.py --models shapes-clip-resnet   # ~12 min
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "seer_eval.json"
TARGET = "red circle"
TRAINING = {"mode": "finetune", "pairs": 4096, "steps": 300, "batch_size": 64, "lr": 0.002}
ATTACKS = {  # as recipes/defense_matrix.yaml
    "pbcl": {"name": "pbcl_backdoor", "params": {"target": TARGET, "trigger": "patch", "rate": 0.01}},
    "badclip": {"name": "badclip", "params": {"target": TARGET, "rate": 0.01, "position": "center"}},
    "badencoder": {"name": "badencoder", "params": {"target": TARGET, "epochs": 20, "batch_size": 64}},
}
CLEAN_START = 200_000  # the defender's clean scenes: beyond every training, shadow and probe range


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["shapes-clip-resnet", "shapes-clip-vit"])
    p.add_argument("--n-clean", type=int, default=256, help="the defender's clean images")
    p.add_argument("--restarts", type=int, default=1, help="SEER searches per model (1: the paper's)")
    p.add_argument("--seed", type=int, default=0)
    add_common_args(p, OUT)
    return p.parse_args(argv)


def trigger_region(trigger, size: int):
    """(H, W) bool: the pixels the trigger writes."""
    import torch

    zeros, ones = torch.zeros(1, 3, size, size), torch.ones(1, 3, size, size)
    return ((trigger.apply(zeros) != zeros) | (trigger.apply(ones) != ones)).any(1)[0]


def oracle_similarity(model, pixels, trigger, opacity: float = 1.0) -> float:
    """S_IT with the true trigger stamped at ``opacity`` and F^T at the mean direction of those images."""
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        stamped = (1 - opacity) * pixels + opacity * trigger.apply(pixels)
        feats = F.normalize(model.encode_image(stamped).float(), dim=-1)
        return float((feats @ F.normalize(feats.mean(0), dim=0)).mean())


def trigger_start(trigger, region):
    """The true trigger as a SEER start: mask 1 on its pixels (``region``), pattern = its pixels (0.5 elsewhere)."""
    import torch

    size = region.shape[-1]
    pattern = trigger.apply(torch.full((1, 3, size, size), 0.5))[0]
    return region[None].float(), pattern


def measure(seer, model, pixels, trigger, backdoored: bool, seed: int) -> dict:
    region = trigger_region(trigger, pixels.shape[-1])
    r = seer(model, pixels, generator=seed)
    from_trigger = seer(model, pixels, generator=seed, start=trigger_start(trigger, region))
    mask = r.mask[0]
    words = [w for w, _ in r.target_ranking]
    ranks = [words.index(w) + 1 for w in TARGET.split() if w in words]
    return {"backdoored": backdoored, "similarity": r.similarity, "anomaly_index": r.anomaly_index,
            "flagged": r.backdoored, "mask_l1": float(mask.sum()),
            "mask_on_trigger": float(mask[region].sum() / mask.sum().clamp_min(1e-12)),
            "top_words": words[:3], "target_word_rank": min(ranks) if ranks else None,  # None: not in the top 10
            "oracle_similarity": oracle_similarity(model, pixels, trigger),
            "oracle_similarity_half": oracle_similarity(model, pixels, trigger, 0.5),
            "from_trigger_similarity": from_trigger.similarity, "from_trigger_anomaly_index": from_trigger.anomaly_index,
            "from_trigger_mask_on_trigger": float(from_trigger.mask[0][region].sum()
                                                  / from_trigger.mask.sum().clamp_min(1e-12)),
            "restart_similarities": r.restart_similarities, "seconds": r.seconds}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    import torch
    from rich.console import Console
    from rich.table import Table

    from mmsec.data.shapes import ShapesWorld
    from mmsec.defenses.backdoor.seer import SEER
    from mmsec.evaluation.detection import auroc
    from mmsec.runs.backdoor import backdoored_and_control
    from mmsec.zoo import load_model

    seer = SEER(restarts=args.restarts)
    report = {"benchmark": "seer_eval", "environment": environment(args.threads), "seer": seer.params(),
              "training": TRAINING, "attacks": ATTACKS, "n_clean": args.n_clean, "models": {}}
    for name in args.models:
        published = load_model(name)
        pixels = ShapesWorld(int(published.image_size)).batch("train", CLEAN_START, args.n_clean).pixels()
        built = {tag: backdoored_and_control(f"zoo:{name}", attack, TRAINING, args.seed)
                 for tag, attack in ATTACKS.items()}
        pbcl_trigger = built["pbcl"][0].trigger
        suspects = {"clean (published)": (published, pbcl_trigger, False),
                    "clean fine-tune (control)": (built["pbcl"][1], pbcl_trigger, False),
                    **{tag: (bd.model, bd.trigger, True) for tag, (bd, _) in built.items()}}
        rows = {label: measure(seer, model, pixels, trigger, bad, args.seed)
                for label, (model, trigger, bad) in suspects.items()}
        ai = [row["anomaly_index"] for row in rows.values()]
        truth = [row["backdoored"] for row in rows.values()]
        report["models"][name] = {"rows": rows, "auroc": auroc(torch.tensor(ai), torch.tensor(truth)),
                                  "flagged_backdoored": sum(r["flagged"] for r in rows.values() if r["backdoored"]),
                                  "flagged_clean": sum(r["flagged"] for r in rows.values() if not r["backdoored"])}

    console = Console()
    table = Table(title=f"SEER (lambda1 {seer.lambda1:g}, lambda2 {seer.lambda2:g}, {seer.steps} steps, "
                        f"threshold AI >= {seer.threshold:g}), {args.n_clean} clean images")
    for col in ("model", "suspect", "S_IT", "AI", "flagged", "mask px", "on trigger", "top words",
                "target rank", "oracle S*", "S* at 0.5", "AI from trigger"):
        table.add_column(col)
    for name, res in report["models"].items():
        for label, r in res["rows"].items():
            table.add_row(name, label, f"{r['similarity']:.3f}", f"{r['anomaly_index']:.2f}", str(r["flagged"]),
                          f"{r['mask_l1']:.1f}", f"{r['mask_on_trigger']:.2f}", " ".join(r["top_words"]),
                          str(r["target_word_rank"] or "-"), f"{r['oracle_similarity']:.3f}",
                          f"{r['oracle_similarity_half']:.3f}",
                          f"{r['from_trigger_anomaly_index']:.2f} ({r['from_trigger_mask_on_trigger']:.2f} on)")
        table.add_row(name, "AUROC of AI", f"{res['auroc']:.2f}", "", f"{res['flagged_backdoored']}/3 bd, "
                      f"{res['flagged_clean']}/2 clean", "", "", "", "", "", "", "")
    console.print(table)
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
