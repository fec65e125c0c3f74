"""Gradient-masking checks on every leaderboard model: each zoo CLIP undefended and under each defense of the recipe.

The models and defenses come from ``recipes/robustness.yaml`` (``--spec``; the single source of
truth for the leaderboard). For each model of the spec and each defense entry that applies to it
(plus the undefended model):

1. the defended model is trained exactly as ``mmsec run`` trains it: one cell per (model,
   defense) is taken from :func:`mmsec.runs.grid.expand` and passed to
   :func:`mmsec.runs.execute.defended_model` (same registry factory, training data, class
   prompts, generator seeded with ``derive_seed(seed, "defense")``, ``.eval()``);
2. its zero-shot objective is built by :func:`mmsec.runs.execute.build_objective` (the shapes
   world's prompts; for AdvPT the model's learnt class embeddings), on the first ``--n``
   shapes-world test images;
3. :func:`mmsec.evaluation.robustness.gradient_masking_checks` runs at the model's acceptance
   budget (the ``eps`` of the recipe's TeCoA entry for that model: 8/255 for shapes-clip-resnet,
   2/255 for shapes-clip-vit), L-inf, the "standard" ensemble (APGD-CE 100 -> APGD-T 100 x 3
   targets -> PGD-50 x 2 restarts), generator 0, every check with its default threshold:
   zero_gradients (0), large_eps (robust accuracy at max(8 eps, 64/255) <= 0.05), black_box
   (Square, 1,000 queries, breaks <= 2% of samples the ensemble could not), monotone_eps (robust
   accuracy over eps/2, eps, 2 eps, large eps never rises by > 2 points), single_step (FGSM
   breaks <= 2% the ensemble could not), unbounded (APGD-CE 100 at eps = 1 leaves 0 correct).

The issue's acceptance: "The gradient-masking checks pass for every defended model".
Nothing is tuned here: the defenses are the recipe's, the checks use their defaults.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/defended_masking_checks.py      # ~1 h on one thread
    .venv/bin/python benchmarks/defended_masking_checks.py --n 20 --models shapes-clip-resnet --defenses none fare
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from _report import add_common_args, pin_threads

ROOT = Path(__file__).resolve().parent.parent
OUT = Path(__file__).resolve().parent / "out" / "defended_masking_checks.json"
SPEC = ROOT / "recipes" / "robustness.yaml"
CHECK_ORDER = ("zero_gradients", "large_eps", "monotone_eps", "black_box", "single_step", "unbounded")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--spec", type=Path, default=SPEC, help="the leaderboard recipe (models and defenses)")
    p.add_argument("--models", nargs="+", default=None,
                   help="models of the spec to check (zoo:NAME or NAME; default: all)")
    p.add_argument("--defenses", nargs="+", default=None,
                   help="defense names to check ('none' = undefended; default: all)")
    p.add_argument("--n", type=int, default=200, help="shapes-world test images")
    add_common_args(p, OUT)
    return p.parse_args(argv)


def _zoo(name: str) -> str:
    return name if ":" in name else f"zoo:{name}"


def _eps255(e: float) -> str:
    return f"{e * 255:.3g}/255"


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    import torch
    from rich.console import Console
    from rich.table import Table

    from mmsec.data.datasets import ShapesDataset
    from mmsec.evaluation.robustness import gradient_masking_checks
    from mmsec.runs.execute import build_objective, defended_model
    from mmsec.runs.grid import expand
    from mmsec.runs.spec import load_spec, resolve_defense_params

    spec = load_spec(str(args.spec))
    models = [_zoo(m) for m in args.models] if args.models else spec.models
    unknown = [m for m in models if m not in spec.models]
    if unknown:
        raise SystemExit(f"models {unknown} are not in {args.spec} (its models: {spec.models})")

    # Each model's acceptance budget: the eps its TeCoA entry trains at.
    budgets = {}
    for m in models:
        tecoa = [d for d in spec.defenses if d is not None and d.name == "tecoa" and d.applies_to(m)]
        if len(tecoa) != 1:
            raise SystemExit(f"{m}: expected one tecoa entry in {args.spec} to take eps from, found {len(tecoa)}")
        budgets[m] = float(resolve_defense_params(tecoa[0].params)["eps"])

    # One cell per (model, defense): cells differing only in the attack share the trained defense.
    cells: dict[tuple[str, str], dict] = {}
    for cell in expand(spec):
        c = cell.config
        if c["model"] not in models:
            continue
        name = (c.get("defense") or {}).get("name", "none")
        if args.defenses and name not in args.defenses:
            continue
        cells.setdefault((c["model"], json.dumps(c.get("defense"), sort_keys=True)), c)

    test = ShapesDataset("test", n=args.n, image_size=32).to_data(quiet=True)
    pixels, labels = test.pixels, test.labels  # (N, 3, 32, 32), (N,)

    report: dict = {"benchmark": "defended_masking_checks", "spec": str(args.spec.relative_to(ROOT)
                                                                        if args.spec.is_relative_to(ROOT) else args.spec),
                    "n": args.n, "norm": "linf", "attacks": "standard", "generator": 0, "rows": []}
    t_all = time.perf_counter()
    for (model_name, _), cell in cells.items():
        defense = cell.get("defense")
        dname = defense["name"] if defense else "none"
        eps = budgets[model_name]
        print(f"[{time.strftime('%H:%M:%S')}] {model_name} / {dname}: training ...", flush=True)
        t0 = time.perf_counter()
        model, train_seconds = defended_model(cell)
        t_train = time.perf_counter() - t0
        objective, obj_labels, _ = build_objective("zeroshot", model, test, "shapes")
        assert torch.equal(obj_labels, torch.as_tensor(labels, dtype=torch.long))
        print(f"[{time.strftime('%H:%M:%S')}] {model_name} / {dname}: checks at eps={_eps255(eps)} ...", flush=True)
        t0 = time.perf_counter()
        rep = gradient_masking_checks(objective, pixels, obj_labels, eps, attacks="standard", generator=0)
        t_checks = time.perf_counter() - t0
        row = {
            "model": model_name, "defense": dname, "defense_config": defense, "eps": eps, "eps_255": eps * 255,
            "objective": "learnt class embeddings" if getattr(model, "class_embeddings", None) is not None
            else "zero-shot prompts",
            "clean_accuracy": rep.details["clean_accuracy"], "robust_accuracy": rep.details.get("robust_accuracy"),
            "accuracy_by_eps": {_eps255(e): a for e, a in sorted(rep.accuracy_by_eps.items())},
            "checks": {k: {"value": c.value, "threshold": c.threshold, "passed": c.passed,
                           "description": c.description} for k, c in rep.checks.items()},
            "details": {k: v for k, v in rep.details.items()},
            "passed": rep.passed, "failed": rep.failed,
            "defense_train_seconds": train_seconds, "train_wall_seconds": t_train, "check_seconds": t_checks,
        }
        report["rows"].append(row)
        print(rep.summary(), flush=True)
        print(f"  ({t_checks:.0f} s checks, {t_train:.0f} s training)", flush=True)

    report["total_seconds"] = time.perf_counter() - t_all
    report["all_passed"] = all(r["passed"] for r in report["rows"])
    report.update({"versions": {"torch": torch.__version__, "python": platform.python_version()},
                   "threads": torch.get_num_threads(), "platform": platform.platform(),
                   "date": datetime.now(timezone.utc).isoformat(timespec="seconds")})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    table = Table(title=f"gradient-masking checks, {args.n} shapes-world test images, L-inf, standard ensemble, "
                        f"generator 0 (value / threshold)")
    for col in ("model", "defense", "eps", "clean", "robust"):
        table.add_column(col, justify="left" if col in ("model", "defense") else "right")
    for c in CHECK_ORDER:
        table.add_column(c, justify="right")
    for col in ("all passed", "train s", "checks s"):
        table.add_column(col, justify="right")
    for r in report["rows"]:
        cells_ = []
        for c in CHECK_ORDER:
            chk = r["checks"].get(c)
            if chk is None:
                cells_.append("-")
            else:
                mark = "pass" if chk["passed"] else "[bold red]FAIL[/]"
                cells_.append(f"{chk['value']:.3f} / {chk['threshold']:.2f} {mark}")
        table.add_row(r["model"].removeprefix("zoo:"), r["defense"], _eps255(r["eps"]),
                      f"{r['clean_accuracy']:.3f}", f"{r['robust_accuracy']:.3f}", *cells_,
                      "yes" if r["passed"] else "[bold red]no[/]", f"{r['defense_train_seconds']:.0f}",
                      f"{r['check_seconds']:.0f}")
    Console(width=220).print(table)
    for r in report["rows"]:
        print(f"{r['model']} / {r['defense']}: robust accuracy by eps {r['accuracy_by_eps']}; "
              f"Square on top {r['details'].get('square_accuracy_on_top')}, "
              f"FGSM on top {r['details'].get('fgsm_accuracy_on_top')}")
    print(f"total {report['total_seconds']:.0f} s; all passed: {report['all_passed']}")
    return report


if __name__ == "__main__":
    main()
