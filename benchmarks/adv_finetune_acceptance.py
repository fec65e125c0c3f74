"""TeCoA and FARE on the zoo CLIPs: clean and robust zero-shot accuracy, and drift from the original embeddings.

For each zoo model (default: shapes-clip-resnet and shapes-clip-vit):

1. the undefended model's clean zero-shot accuracy and PGD robust accuracy (L-inf, ``--eval-steps``
   steps, alpha = eps / 4, random start, seed 0) at each leaderboard budget (1, 2, 4, 8 /255) on
   ``--n-test`` shapes-world test images;
2. the acceptance budget: the smallest of those budgets where the undefended robust accuracy is
   below ``--threshold`` (0.40);
3. TeCoA and FARE trained at that budget (FARE^eps / TeCoA^eps, as FARE's paper trains at the
   evaluation budget) with the model's tiny-world settings (``TINY`` below: 10-step PGD with
   alpha = eps / 4, AdamW, 7% warm-up then cosine), on ``ShapesDataset("train", n)``;
4. for each defended model: clean accuracy, PGD robust accuracy at every budget, the ensemble
   robust accuracy of :func:`mmsec.evaluation.robustness.robust_accuracy` ("fast" preset by
   default; ``--ensemble standard`` for the full one) at the acceptance budget, and the drift of
   its clean-image embeddings from the original model's: mean ||phi(x) - phi_orig(x)||^2 and mean
   cosine (:func:`mmsec.defenses.embedding_drift`).

The issue's acceptance: at the acceptance budget each defense raises PGD robust accuracy by >= 30
points at a clean cost <= 10 points; FARE's clean-embedding drift is smaller than TeCoA's.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/adv_finetune_acceptance.py      # ~40 min on one thread
    .venv/bin/python benchmarks/adv_finetune_acceptance.py --models shapes-clip-resnet --ensemble none
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from _report import add_common_args, pin_threads

OUT = Path(__file__).resolve().parent / "out" / "adv_finetune_acceptance.json"
LEADERBOARD_EPS_255 = (1, 2, 4, 8)

# Tiny-world training budgets (a few minutes per defense on one thread; see benchmarks/README.md
# for the pilot runs behind them). Paper scale (FARE: 2 epochs of ImageNet, 20k steps of 128 at
# lr 1e-5) is out of reach on CPU; with ~100 steps the learning rate must be larger.
TINY = {
    "shapes-clip-resnet": dict(n=4096, epochs=5, batch_size=128, lr=1e-3),  # 160 steps
    "shapes-clip-vit": dict(n=4096, epochs=2, batch_size=64, lr=5e-4),  # 128 steps
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=list(TINY), help="zoo model names")
    p.add_argument("--n-test", type=int, default=500)
    p.add_argument("--threshold", type=float, default=0.40, help="undefended robust accuracy below which a budget "
                                                                   "is the acceptance budget")
    p.add_argument("--steps", type=int, default=10, help="inner PGD steps of the defenses")
    p.add_argument("--eval-steps", type=int, default=10, help="PGD steps of the evaluation")
    p.add_argument("--ensemble", default="fast", choices=("fast", "standard", "none"),
                   help="robust_accuracy preset run at the acceptance budget (none: skip)")
    p.add_argument("--seed", type=int, default=0, help="training seed")
    add_common_args(p, OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    import torch
    from rich.console import Console
    from rich.table import Table

    from mmsec.attacks import PGD, ZeroShotObjective
    from mmsec.data.datasets import ShapesDataset
    from mmsec.data.shapes import zeroshot_prompts
    from mmsec.defenses import FARE, TeCoA, embedding_drift
    from mmsec.zoo import load_model

    prompts = zeroshot_prompts()
    test = ShapesDataset("test", n=args.n_test, image_size=32).to_data(quiet=True)
    x, y = test.pixels, test.labels  # (N, 3, H, W), (N,)

    def evaluate(model, ensemble_eps: float | None) -> dict:
        objective = ZeroShotObjective(model, prompts)
        out = {"clean": (objective.predict(x) == y).float().mean().item(), "robust_pgd": {}}
        for e in LEADERBOARD_EPS_255:
            eps = e / 255
            res = PGD(eps=eps, alpha=eps / 4, steps=args.eval_steps)(objective, x, y, generator=0)
            out["robust_pgd"][str(e)] = 1.0 - res.success_rate
        if ensemble_eps is not None and args.ensemble != "none":
            from mmsec.evaluation.robustness import robust_accuracy

            start = time.perf_counter()
            ra = robust_accuracy(objective, x, y, eps=ensemble_eps, attacks=args.ensemble, generator=0)
            out["robust_ensemble"] = {"eps_255": round(ensemble_eps * 255, 3), "preset": args.ensemble,
                                      "robust_accuracy": ra.robust_accuracy, "per_attack": ra.accuracies(),
                                      "seconds": time.perf_counter() - start}
        return out

    report: dict = {"benchmark": "adv_finetune_acceptance", "n_test": args.n_test, "threshold": args.threshold,
                    "eval": f"PGD-{args.eval_steps} L-inf, alpha=eps/4, random start, seed 0", "models": {}}
    for name in args.models:
        model = load_model(name)
        base = evaluate(model, None)
        below = [e for e in LEADERBOARD_EPS_255 if base["robust_pgd"][str(e)] < args.threshold]
        if not below:
            raise RuntimeError(f"{name}: undefended robust accuracy is >= {args.threshold} at every budget")
        e_acc = below[0]
        eps = e_acc / 255
        if args.ensemble != "none":
            base = evaluate(model, eps)
        tiny = TINY[name]
        train = ShapesDataset("train", n=tiny["n"], image_size=32).to_data(quiet=True)
        entry = {"acceptance_eps_255": e_acc, "train": dict(tiny, eps_255=e_acc, alpha_255=e_acc / 4,
                                                             steps=args.steps, seed=args.seed),
                 "rows": {"undefended": base}}
        for cls in (TeCoA, FARE):
            defense = cls(eps=eps, alpha=eps / 4, steps=args.steps, epochs=tiny["epochs"],
                          batch_size=tiny["batch_size"], lr=tiny["lr"])
            result = defense(model, train, prompts, torch.Generator().manual_seed(args.seed))
            row = evaluate(result.model, eps)
            row["drift"] = embedding_drift(result.model, model, x)
            row["train_seconds"] = result.seconds
            row["train_steps"] = result.steps
            row["final_loss"] = result.losses[-1]
            row["params"] = defense.params()
            entry["rows"][cls.name] = row
        base["drift"] = embedding_drift(model, model, x)
        k = str(e_acc)
        entry["acceptance"] = {
            m: {"robust_gain_points": 100 * (entry["rows"][m]["robust_pgd"][k] - base["robust_pgd"][k]),
                "clean_cost_points": 100 * (base["clean"] - entry["rows"][m]["clean"])}
            for m in ("tecoa", "fare")}
        for a in entry["acceptance"].values():
            a["passed"] = a["robust_gain_points"] >= 30 and a["clean_cost_points"] <= 10
        entry["acceptance"]["fare_drift_below_tecoa"] = (entry["rows"]["fare"]["drift"]["sq_l2"]
                                                         < entry["rows"]["tecoa"]["drift"]["sq_l2"])
        report["models"][name] = entry

    report.update({"versions": {"torch": torch.__version__, "python": platform.python_version()},
                   "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    for name, entry in report["models"].items():
        k = entry["acceptance_eps_255"]
        table = Table(title=f"{name}: trained at {k}/255 ({entry['train']}); {args.n_test} test images, "
                            f"{report['eval']}")
        cols = ["defense", "clean"] + [f"PGD {e}/255" for e in LEADERBOARD_EPS_255]
        cols += [f"{args.ensemble} {k}/255", "||dphi||^2", "cos", "train s"]
        for c in cols:
            table.add_column(c, justify="right")
        for m, row in entry["rows"].items():
            ens = row.get("robust_ensemble", {}).get("robust_accuracy")
            table.add_row(m, f"{row['clean']:.3f}", *[f"{row['robust_pgd'][str(e)]:.3f}" for e in LEADERBOARD_EPS_255],
                          "-" if ens is None else f"{ens:.3f}", f"{row['drift']['sq_l2']:.3f}",
                          f"{row['drift']['cosine']:.3f}", f"{row.get('train_seconds', 0):.0f}")
        Console(width=150).print(table)
        Console(width=150).print(f"acceptance: {json.dumps(entry['acceptance'])}")
    return report


if __name__ == "__main__":
    main()
