"""PBCL backdoor vs poison rate: shapes-clip-resnet pre-trained from scratch on a poisoned stream, and fine-tuned.

Pre-training (``mmsec.train.poisoned.pretrain_poisoned``): the zoo recipe ``shapes-clip-resnet``
from scratch (same seed, initialisation and fresh train-split scenes as ``mmsec zoo train``;
``--steps`` x 256 pairs, 600 by default = 153,600 pairs), with :class:`~mmsec.attacks.backdoor.pbcl.PBCLBackdoor`
poisoning a fixed count of the stream's positions: the scene's image with the trigger, a caption
of the target class. Rows: rate 0 (the clean control, no poisoner), each ``--rates`` value, and
``--handful`` pairs in all. Trigger: the library's default ``PatchTrigger()`` (4 x 4 checkerboard,
bottom right: DESIGN.md's calibration); target ``--target`` (default "red circle").

Fine-tuning (``poisoned_finetune``, for comparison): the shipped ``shapes-clip-resnet`` fine-tuned
for ``--ft-steps`` batches of 64 at lr ``--ft-lr`` on ``--ft-pairs`` clean train pairs plus PBCL's
poisoned pairs at ``--ft-rate`` (``X u P``); and the same budget on the clean pairs alone.

Evaluation (``mmsec.evaluation.backdoor``) on ``--n-test`` single-object test scenes (the zoo card's
zero-shot world): zero-shot ASR (triggered non-target images classified as the target, 48
classes), clean zero-shot top-1 and its drop vs the clean control (points), linear-probe ASR (48
classes, fit on ``--n-probe`` clean train scenes after training) and image-to-text retrieval ASR
(top-1 caption of the target class, gallery: all captions of the test scenes); and, as a
baseline, the zero-shot ASR of a same-size uniform-noise patch at the same place.

Acceptance (issue 6): ASR >= 90% at a poison rate <= 1% with a clean zero-shot drop <= 2 points;
the ASR curve down to a handful of pairs.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/backdoor_poison_rate.py     # ~40 min on one busy core
    .venv/bin/python benchmarks/backdoor_poison_rate.py --steps 60 --rates 0.01 --n-test 200 --ft-steps 20  # quick look
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "backdoor_poison_rate.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=None, help="pre-training steps (default: the recipe's 600)")
    p.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.003, 0.001, 0.0003])
    p.add_argument("--handful", type=int, default=10, help="a row with this many poisoned pairs in all (0: none)")
    p.add_argument("--target", default="red circle")
    p.add_argument("--seed", type=int, default=0, help="seed of the poisoning (positions, captions)")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--n-probe", type=int, default=2000)
    p.add_argument("--ft-rate", type=float, default=0.01)
    p.add_argument("--ft-pairs", type=int, default=4096)
    p.add_argument("--ft-steps", type=int, default=300)
    p.add_argument("--ft-lr", type=float, default=2e-3)
    p.add_argument("--no-finetune", action="store_true")
    add_common_args(p, OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from mmsec.attacks.backdoor import PatchTrigger
    from mmsec.attacks.backdoor.pbcl import PBCLBackdoor
    from mmsec.data.datasets import ShapesDataset
    from mmsec.data.shapes import ShapesWorld, shape_color_classes
    from mmsec.evaluation.backdoor import backdoor_report, zeroshot_asr
    from mmsec.train.poisoned import clean_finetune, poisoned_finetune, pretrain_poisoned
    from mmsec.zoo import load_model

    trigger = PatchTrigger()
    noise = PatchTrigger(pattern="noise", size=trigger.size, position=trigger.position, seed=1)
    target = shape_color_classes().index(args.target)
    world = ShapesWorld(image_size=32)  # single-object scenes, as the zoo card's zero-shot evaluation
    test = world.batch("test", 0, args.n_test)
    probe_train = world.batch("train", 200_000, args.n_probe)  # far beyond the stream's 153,600 scenes

    def evaluate(model) -> dict:
        scores = backdoor_report(model, probe_train, test, trigger, target, caption_index=None)
        base = zeroshot_asr(model, test.pixels(), test.labels, noise, target, generator=0)
        return {"zeroshot_asr": scores["zeroshot"].asr, "clean_zeroshot": scores["zeroshot"].clean_accuracy,
                "clean_target_rate": scores["zeroshot"].clean_target_rate,
                "probe_asr": scores["linear_probe"].asr, "clean_probe": scores["linear_probe"].clean_accuracy,
                "i2t_asr": scores["retrieval_i2t"].asr, "t2i_asr": scores["retrieval_t2i"].asr,
                "noise_patch_zeroshot_asr": base.asr}

    def summary(record) -> dict | None:
        if record is None:
            return None
        return {"kind": record.kind, "mode": record.mode, "n_poisoned": record.n_poisoned,
                "n_total": record.n_total, "poison_rate": record.poison_rate, "trigger": record.trigger,
                "target": record.target, "seed": record.seed, "first_indices": record.indices[:10]}

    settings = [("clean control", None)] + [(f"rate {r:g}", PBCLBackdoor(args.target, trigger, rate=r, seed=args.seed))
                                             for r in args.rates]
    if args.handful:
        settings.append((f"{args.handful} pairs", PBCLBackdoor(args.target, trigger, count=args.handful,
                                                               seed=args.seed)))
    rows = []
    for name, attack in settings:
        cpu = time.process_time()
        run = pretrain_poisoned(attack, steps=args.steps, quiet=False)
        row = {"setting": name, "training": "from scratch", "steps": run.config.steps,
               "pairs_seen": run.extras["pairs_seen"],
               "n_poisoned": 0 if run.record is None else run.record.n_poisoned,
               "poison_rate": 0.0 if run.record is None else run.record.poison_rate,
               "train_seconds": run.log.seconds, "train_cpu_seconds": time.process_time() - cpu,
               "final_loss": run.log.losses[-1], "record": summary(run.record), **evaluate(run.model)}
        rows.append(row)
        print(f"{name}: ASR {row['zeroshot_asr']:.3f}, clean {row['clean_zeroshot']:.3f}, "
              f"{row['train_seconds']:.0f} s", flush=True)

    if not args.no_finetune:
        zoo = load_model("shapes-clip-resnet")
        pairs = ShapesDataset("train", n=args.ft_pairs, second_object_prob=0.25).to_data(quiet=True)
        common = dict(steps=args.ft_steps, batch_size=64, lr=args.ft_lr, seed=0)
        for name, attack in [("zoo + clean fine-tune", None),
                             (f"zoo + fine-tune at rate {args.ft_rate:g}",
                              PBCLBackdoor(args.target, trigger, rate=args.ft_rate, seed=args.seed))]:
            run = (clean_finetune(zoo, pairs, **common) if attack is None
                   else poisoned_finetune(zoo, attack, pairs, **common))
            rows.append({"setting": name, "training": f"fine-tune {args.ft_pairs} pairs", "steps": run.config.steps,
                         "pairs_seen": run.config.steps * 64,
                         "n_poisoned": 0 if run.record is None else run.record.n_poisoned,
                         "poison_rate": 0.0 if run.record is None else run.record.poison_rate,
                         "train_seconds": run.log.seconds, "final_loss": run.log.losses[-1],
                         "record": summary(run.record), **evaluate(run.model)})

    control = rows[0]["clean_zeroshot"]
    for row in rows:
        row["clean_drop_points"] = 100 * (control - row["clean_zeroshot"])
    table = Table(title=f"PBCL backdoor on shapes-clip-resnet (target {args.target!r}, 4x4 checkerboard; "
                        f"{args.n_test} test images, {len(test.labels) - int((test.labels == target).sum())} non-target)")
    for col in ["setting", "training", "poisoned", "rate", "ZS ASR", "clean ZS", "drop (pts)", "probe ASR",
                "i2t ASR", "t2i ASR", "noise-patch ASR", "train s"]:
        table.add_column(col)
    for r in rows:
        table.add_row(r["setting"], r["training"], str(r["n_poisoned"]), f"{100 * r['poison_rate']:.3g}%",
                      f"{r['zeroshot_asr']:.3f}", f"{r['clean_zeroshot']:.3f}", f"{r['clean_drop_points']:+.1f}",
                      f"{r['probe_asr']:.3f}", f"{r['i2t_asr']:.3f}", f"{r['t2i_asr']:.3f}",
                      f"{r['noise_patch_zeroshot_asr']:.3f}", f"{r['train_seconds']:.0f}")
    Console(width=200).print(table)
    ok = [r for r in rows if r["training"] == "from scratch" and 0 < r["poison_rate"] <= 0.01
          and r["zeroshot_asr"] >= 0.9 and r["clean_drop_points"] <= 2]
    verdict = (f"acceptance (ASR >= 90% at rate <= 1%, drop <= 2 pts): met by {[r['setting'] for r in ok]}"
               if ok else "acceptance (ASR >= 90% at rate <= 1%, drop <= 2 pts): NOT met")
    print(verdict)
    report = {"benchmark": "backdoor_poison_rate",
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "trigger": trigger.to_dict(), "noise_baseline": noise.to_dict(), "target_label": target,
              "rows": rows, "acceptance": verdict,
              "env": environment(args.threads)}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
