"""Multimodal targeted poisoning (Yang et al., ICML 2023): the three attacks vs a clean fine-tuned control.

Training (``mmsec.train.poisoned``): the shipped ``shapes-clip-resnet`` fine-tuned for ``--steps``
batches of 64 at lr ``--lr`` on ``--pairs`` clean train pairs (a quarter with a second object),
poisoned by (:mod:`mmsec.attacks.backdoor.multimodal_poisoning`):

* Attack I, single target image: the training captions of ``--text-class`` paired with one test
  image of ``--image-class`` (``x*``), at ``--fractions`` of the text class's pairs;
* Attack II, single target label: the same captions paired with training images of ``--image-class``;
* Attack III, multiple target labels: II plus ``--text-class2`` -> ``--image-class2``;

and the control: the same budget on the clean pairs.

Evaluation (:mod:`mmsec.evaluation.targeted_poisoning`) on ``--n-test`` single-object test scenes:
queries are the test captions of the text class(es), the gallery the test images; Hit@1/5/10 and
mean MinRank of the target image (I) or of the image class's test images (II, III), the same for as
many random captions of other classes (the paper's random-text baseline), and clean retrieval R@1
(zoo protocol, ``--n-utility`` scenes) against the control's.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/multimodal_poisoning_eval.py          # ~6 min on one core
    .venv/bin/python benchmarks/multimodal_poisoning_eval.py --steps 50 --pairs 1024    # quick look
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from _report import add_common_args, pin_threads

OUT = Path(__file__).resolve().parent / "out" / "multimodal_poisoning_eval.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=4096)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--fractions", type=float, nargs="+", default=[1.0, 0.25])
    p.add_argument("--text-class", default="red circle")
    p.add_argument("--image-class", default="blue square")
    p.add_argument("--text-class2", default="green triangle")
    p.add_argument("--image-class2", default="yellow ring")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--n-utility", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    add_common_args(p, OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    import torch
    from rich.console import Console
    from rich.table import Table

    from mmsec.attacks.backdoor.multimodal_poisoning import (
        MultipleTargetLabelPoisoning,
        SingleTargetImagePoisoning,
        SingleTargetLabelPoisoning,
    )
    from mmsec.data.datasets import ShapesDataset
    from mmsec.data.shapes import ShapesWorld, shape_color_classes
    from mmsec.evaluation.targeted_poisoning import poisoning_retrieval_report
    from mmsec.train.poisoned import clean_finetune, poisoned_finetune
    from mmsec.zoo import load_model

    classes = shape_color_classes()
    a, b = classes.index(args.text_class), classes.index(args.image_class)
    a2, b2 = classes.index(args.text_class2), classes.index(args.image_class2)
    zoo = load_model("shapes-clip-resnet")
    pairs = ShapesDataset("train", n=args.pairs, second_object_prob=0.25).to_data(quiet=True)
    world = ShapesWorld(image_size=32)  # single-object scenes, as the zoo card's evaluation
    test = world.batch("test", 0, args.n_test)
    ti = int((test.labels == b).nonzero()[0])  # x*: the first test image of the image class
    x_star = test.pixels()[ti]
    common = dict(steps=args.steps, batch_size=64, lr=args.lr, seed=args.seed)
    evals = {"I": dict(goals=[(a, None)], target_index=ti), "II": dict(goals=[(a, b)]),
             "III": dict(goals=[(a, b), (a2, b2)])}

    settings = [("clean control", None, None)]
    for f in args.fractions:
        settings += [(f"I, fraction {f:g}", "I", SingleTargetImagePoisoning(x_star, a, image_label=b, fraction=f,
                                                                             seed=args.seed)),
                     (f"II, fraction {f:g}", "II", SingleTargetLabelPoisoning(a, b, fraction=f, seed=args.seed))]
    settings.append((f"III, fraction {args.fractions[0]:g}", "III",
                     MultipleTargetLabelPoisoning([(a, b), (a2, b2)], fraction=args.fractions[0], seed=args.seed)))

    def evaluate(model, which: str) -> dict:
        return poisoning_retrieval_report(model, test, class_names=classes, utility_n=args.n_utility, seed=args.seed,
                                          **evals[which])

    rows, control = [], None
    for name, which, attack in settings:
        t0 = time.perf_counter()
        run = clean_finetune(zoo, pairs, **common) if attack is None else poisoned_finetune(zoo, attack, pairs,
                                                                                            **common)
        seconds = time.perf_counter() - t0
        if attack is None:
            control = {w: evaluate(run.model, w) for w in evals}
            continue
        rep, ctrl = evaluate(run.model, which), control[which]
        rows.append({"setting": name, "attack": which, "params": attack.params(), "n_poisoned": run.record.n_poisoned,
                     "poison_rate": run.record.poison_rate, "train_seconds": seconds,
                     "final_loss": run.log.losses[-1], "poisoned": rep, "control": ctrl,
                     "hit10_margin": rep["mean_hit"][10] - ctrl["mean_hit"][10],
                     "t2i_r1_drop_points": 100 * (ctrl["t2i_r1"] - rep["t2i_r1"]),
                     "i2t_r1_drop_points": 100 * (ctrl["i2t_r1"] - rep["i2t_r1"])})
        print(f"{name}: Hit@1/5/10 {rep['mean_hit']}, MinRank {rep['mean_min_rank']:.1f} "
              f"(control {ctrl['mean_hit']}, {ctrl['mean_min_rank']:.1f}), {seconds:.0f} s", flush=True)

    table = Table(title=f"Multimodal targeted poisoning of shapes-clip-resnet: fine-tuned {args.steps} x 64 at lr "
                        f"{args.lr:g} on {args.pairs} pairs; gallery {args.n_test} test images")
    for col in ["setting", "poisoned", "rate", "Hit@1", "Hit@5", "Hit@10", "MinRank", "random Hit@10",
                "control Hit@10", "control MinRank", "t2i R@1", "ctrl t2i R@1", "i2t R@1", "ctrl i2t R@1"]:
        table.add_column(col)
    for r in rows:
        p, c = r["poisoned"], r["control"]
        table.add_row(r["setting"], str(r["n_poisoned"]), f"{100 * r['poison_rate']:.2f}%",
                      *(f"{p['mean_hit'][k]:.3f}" for k in (1, 5, 10)), f"{p['mean_min_rank']:.1f}",
                      f"{p['mean_random_hit'][10]:.3f}", f"{c['mean_hit'][10]:.3f}", f"{c['mean_min_rank']:.1f}",
                      f"{p['t2i_r1']:.3f}", f"{c['t2i_r1']:.3f}", f"{p['i2t_r1']:.3f}", f"{c['i2t_r1']:.3f}")
    Console(width=220).print(table)
    report = {"benchmark": "multimodal_poisoning_eval",
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "target_image_test_index": ti, "rows": rows, "control": control,
              "env": {"torch": torch.__version__, "python": platform.python_version(), "threads": args.threads,
                      "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
