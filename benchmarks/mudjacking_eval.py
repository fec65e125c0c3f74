"""Mudjacking: repair a BadEncoder-backdoored CLIP image tower from one reported bug input.

Protocol (issue 7): the shipped CLIP's image tower is backdoored by BadEncoder as in
``benchmarks/badencoder_eval.py`` (target "red circle", the 4 x 4 checkerboard, ``--n-shadow`` shadow
scenes, ``--epochs`` of 64 at lr 1e-3). A client then reports one bug instance ``(x_b, x_r)``: ``x_b``
a triggered validation scene of another class (classified "red circle"), ``x_r`` a clean validation
scene of ``x_b``'s true class. Mudjacking (defaults: lambda_l = lambda_g = 1, 20 epochs over 256
clean validation scenes, SGD 1e-3) patches the tower. Repeated for ``--bugs`` different bug instances
(other source classes); the ablation without the generalisability term (lambda_g = 0) is run on each.

Evaluation on ``--n-test`` test scenes: zero-shot ASR (triggered non-target images classified as the
target) and clean zero-shot accuracy, before and after; whether ``x_b`` itself is fixed.

Acceptance (issue 7): "Mudjacking cuts ASR from one bug input while keeping clean accuracy within 3
points".

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/mudjacking_eval.py          # ~15 min on one core
    .venv/bin/python benchmarks/mudjacking_eval.py --epochs 10 --bugs 2 --n-test 300   # quick look
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "mudjacking_eval.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["shapes-clip-resnet"])
    p.add_argument("--target", default="red circle")
    p.add_argument("--n-shadow", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=40, help="BadEncoder's epochs")
    p.add_argument("--bugs", type=int, default=5, help="independent bug instances (one Mudjacking run each)")
    p.add_argument("--n-val", type=int, default=256)
    p.add_argument("--n-test", type=int, default=1000)
    add_common_args(p, OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    import torch
    from rich.console import Console
    from rich.table import Table

    from mmsec.attacks.backdoor.badencoder import BadEncoder
    from mmsec.data.shapes import ShapesWorld, shape_color_classes, zeroshot_prompts
    from mmsec.defenses.backdoor.mudjacking import Mudjacking
    from mmsec.evaluation.backdoor import zeroshot_asr
    from mmsec.models.zeroshot import ZeroShotClassifier
    from mmsec.zoo import load_model

    target = shape_color_classes().index(args.target)
    shadow = ShapesWorld(32, second_object_prob=0.25).batch("train", 0, args.n_shadow).pixels()
    pool = ShapesWorld(32).batch("train", 90_000, 960)
    ref_idx = (pool.labels == target).nonzero().flatten()[:1]
    test = ShapesWorld(32).batch("test", 0, args.n_test)
    validation = ShapesWorld(32).batch("val", 0, args.n_val).pixels()
    reports = ShapesWorld(32).batch("val", 10_000, 2000)  # where the bug instances come from

    def score(model, trigger) -> dict:
        s = zeroshot_asr(model, test.pixels(), test.labels, trigger, target, generator=0)
        return {"asr": s.asr, "clean": s.clean_accuracy}

    rows = []
    for name in args.models:
        zoo = load_model(name)
        bad = BadEncoder(target=args.target, epochs=args.epochs, batch_size=64, lr=1e-3)(
            zoo, shadow, pool.pixels()[ref_idx], generator=0, reference_indices=[90_000 + int(i) for i in ref_idx])
        trigger = bad.record.rebuild_trigger()
        before = score(bad.model, trigger)
        classify = ZeroShotClassifier(bad.model, zeroshot_prompts())
        print(f"{name}: BadEncoder ASR {before['asr']:.3f}, clean {before['clean']:.3f} ({bad.seconds:.0f} s)", flush=True)
        # bug instances: the first scenes (of distinct non-target classes) whose triggered version is misclassified
        classes_seen: set[int] = set()
        for i in range(reports.labels.shape[0]):
            c = int(reports.labels[i])
            if c == target or c in classes_seen or len(classes_seen) >= args.bugs:
                continue
            x_b = trigger.apply(reports.pixels()[i:i + 1], torch.Generator().manual_seed(i))[0]
            if int(classify.predict(x_b[None])[0]) != target:
                continue
            same = [j for j in range(reports.labels.shape[0]) if j != i and int(reports.labels[j]) == c]
            x_r = reports.pixels()[same[0]]
            classes_seen.add(c)
            row = {"model": name, "bug_class": shape_color_classes()[c], "bug_index": 10_000 + i,
                   "asr_before": before["asr"], "clean_before": before["clean"]}
            for tag, lambda_g in (("", 1.0), ("_no_lg", 0.0)):
                res = Mudjacking(lambda_g=lambda_g)(bad.model, x_b, x_r, validation, generator=0)
                after = score(res.model, trigger)
                fixed = int(ZeroShotClassifier(res.model, zeroshot_prompts()).predict(x_b[None])[0]) == c
                row.update({f"asr_after{tag}": after["asr"], f"clean_after{tag}": after["clean"],
                            f"bug_fixed{tag}": fixed, f"seconds{tag}": res.seconds,
                            f"trigger_similarity{tag}": res.extras["trigger_similarity"],
                            f"trigger_mask_l1{tag}": res.extras["trigger_mask_l1"]})
            rows.append(row)
            print(f"  bug {row['bug_class']}: ASR {row['asr_before']:.3f} -> {row['asr_after']:.3f} "
                  f"(no L_g: {row['asr_after_no_lg']:.3f}); clean {row['clean_before']:.3f} -> {row['clean_after']:.3f}",
                  flush=True)

    table = Table(title=f"Mudjacking on BadEncoder (target {args.target!r}; one bug input each; {args.n_test} test images)")
    for col in ["model", "bug class", "ASR before", "ASR after", "clean before", "clean after", "x_b fixed",
                "ASR after (no L_g)", "clean after (no L_g)", "s"]:
        table.add_column(col)
    for r in rows:
        table.add_row(r["model"], r["bug_class"], f"{r['asr_before']:.3f}", f"{r['asr_after']:.3f}",
                      f"{r['clean_before']:.3f}", f"{r['clean_after']:.3f}", str(r["bug_fixed"]),
                      f"{r['asr_after_no_lg']:.3f}", f"{r['clean_after_no_lg']:.3f}", f"{r['seconds']:.0f}")
    Console(width=200).print(table)
    if not rows:
        raise SystemExit("no bug instance found: no triggered validation scene is classified as the target "
                         "(the backdoor did not take; more BadEncoder epochs?)")
    cut = [100 * (r["asr_before"] - r["asr_after"]) for r in rows]
    cost = [100 * (r["clean_before"] - r["clean_after"]) for r in rows]
    summary = {"mean_asr_cut_points": sum(cut) / len(cut), "min_asr_cut_points": min(cut),
               "mean_clean_cost_points": sum(cost) / len(cost), "max_clean_cost_points": max(cost),
               "acceptance (ASR cut, clean cost <= 3 pts on every bug)": all(c > 0 for c in cut) and max(cost) <= 3}
    print(summary)
    report = {"benchmark": "mudjacking_eval",
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "target_label": target, "rows": rows, "summary": summary, "env": environment(args.threads)}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
