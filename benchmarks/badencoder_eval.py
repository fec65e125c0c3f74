"""BadEncoder on the zoo's CLIP image towers: backdoor through a linear probe fit afterwards and zero-shot.

Attack (:class:`~mmsec.attacks.backdoor.badencoder.BadEncoder`): the zoo model's image tower
fine-tuned with L0 + L1 + L2 (lambda1 = lambda2 = 1), SGD lr 1e-3, momentum 0.9, weight decay 5e-4
(the paper's code), on ``--n-shadow`` unlabelled train scenes (ids 0.., a quarter with a second
object, as the zoo's pre-training data) for ``--epochs`` epochs of batch ``--batch-size`` (the
paper: 200 epochs of 256 over 50,000 images; scaled down for one CPU core). Reference inputs: the
first ``--n-reference`` single-object train scenes of the target class from id 90,000 on (disjoint
from the shadow set and the probe's data). Trigger: the library's ``PatchTrigger()`` (4 x 4
checkerboard, bottom right); baseline: a same-size uniform-noise patch at the same place.

Evaluation (:mod:`mmsec.evaluation.backdoor`) on ``--n-test`` single-object test scenes: a 48-class
linear probe (logistic regression on frozen L2-normalised embeddings) fit *after* the attack on
``--n-probe`` clean train scenes from id 100,000 (the downstream user's data), zero-shot
classification over the 48 "colour shape" prompts with the untouched text tower, and image-to-text
retrieval ASR. ASR counts triggered non-target test images sent to the target class.

Acceptance (issue): ASR >= 90% through the probe and zero-shot; clean accuracy within 3 points of
the clean encoder's (probe and zero-shot).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/badencoder_eval.py            # ~14 min on one busy core (ResNet ~3 min, ViT ~11 min)
    .venv/bin/python benchmarks/badencoder_eval.py --models shapes-clip-resnet --epochs 5 --n-test 200  # quick look
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "badencoder_eval.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["shapes-clip-resnet", "shapes-clip-vit"])
    p.add_argument("--target", default="red circle")
    p.add_argument("--n-shadow", type=int, default=2048)
    p.add_argument("--n-reference", type=int, default=1)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0, help="seed of the attack's batch order and reference flips")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--n-probe", type=int, default=2000)
    add_common_args(p, OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    import torch
    from rich.console import Console
    from rich.table import Table

    from mmsec.attacks.backdoor import PatchTrigger
    from mmsec.attacks.backdoor.badencoder import LOSS_COLUMNS, BadEncoder
    from mmsec.data.shapes import ShapesWorld, shape_color_classes
    from mmsec.evaluation.backdoor import backdoor_report, probe_asr, zeroshot_asr
    from mmsec.zoo import load_model

    trigger = PatchTrigger()
    noise = PatchTrigger(pattern="noise", size=trigger.size, position=trigger.position, seed=1)
    target = shape_color_classes().index(args.target)
    shadow = ShapesWorld(32, second_object_prob=0.25).batch("train", 0, args.n_shadow).pixels()
    pool = ShapesWorld(32).batch("train", 90_000, 48 * 20 * max(1, args.n_reference))
    ref_idx = (pool.labels == target).nonzero().flatten()[:args.n_reference]
    references = pool.pixels()[ref_idx]
    test = ShapesWorld(32).batch("test", 0, args.n_test)
    probe_train = ShapesWorld(32).batch("train", 100_000, args.n_probe)

    def evaluate(model) -> dict:
        s = backdoor_report(model, probe_train, test, trigger, target)
        zn = zeroshot_asr(model, test.pixels(), test.labels, noise, target, generator=0)
        pn = probe_asr(model, probe_train.pixels(), probe_train.labels, test.pixels(), test.labels, noise, target,
                       generator=0)
        return {"probe_asr": s["linear_probe"].asr, "clean_probe": s["linear_probe"].clean_accuracy,
                "probe_clean_target_rate": s["linear_probe"].clean_target_rate,
                "zeroshot_asr": s["zeroshot"].asr, "clean_zeroshot": s["zeroshot"].clean_accuracy,
                "zeroshot_clean_target_rate": s["zeroshot"].clean_target_rate,
                "i2t_asr": s["retrieval_i2t"].asr, "noise_probe_asr": pn.asr, "noise_zeroshot_asr": zn.asr}

    rows = []
    for name in args.models:
        model = load_model(name)
        clean = {"model": name, "encoder": "clean", "train_seconds": 0.0, **evaluate(model)}
        attack = BadEncoder(trigger=trigger, target=args.target, epochs=args.epochs, batch_size=args.batch_size,
                            lr=args.lr, quiet=False)
        result = attack(model, shadow, references, generator=args.seed,
                        reference_indices=[90_000 + int(i) for i in ref_idx], reference_seed=None)
        trace = result.loss_trace
        bad = {"model": name, "encoder": "BadEncoder", "train_seconds": result.seconds, "steps": result.record.steps,
               "final_losses": dict(zip(LOSS_COLUMNS, trace[-20:].mean(0).tolist(), strict=True)),
               "loss_every_10pct": trace[torch.linspace(0, len(trace) - 1, 11).long()].tolist(),
               "record": result.record.to_dict(), **evaluate(result.model)}
        for key in ("probe", "zeroshot"):
            bad[f"clean_{key}_drop_points"] = 100 * (clean[f"clean_{key}"] - bad[f"clean_{key}"])
        rows += [clean, bad]
        print(f"{name}: probe ASR {bad['probe_asr']:.3f}, ZS ASR {bad['zeroshot_asr']:.3f}, "
              f"{bad['train_seconds']:.0f} s", flush=True)

    non_target = int((test.labels != target).sum())
    table = Table(title=f"BadEncoder (target {args.target!r}, 4x4 checkerboard, {args.n_shadow} shadow images, "
                        f"{args.epochs} epochs x batch {args.batch_size}, lr {args.lr:g}; {args.n_test} test images, "
                        f"{non_target} non-target)")
    for col in ["model", "encoder", "probe ASR", "clean probe", "ZS ASR", "clean ZS", "i2t ASR",
                "noise probe ASR", "noise ZS ASR", "train s"]:
        table.add_column(col)
    for r in rows:
        table.add_row(r["model"], r["encoder"], f"{r['probe_asr']:.3f}", f"{r['clean_probe']:.3f}",
                      f"{r['zeroshot_asr']:.3f}", f"{r['clean_zeroshot']:.3f}", f"{r['i2t_asr']:.3f}",
                      f"{r['noise_probe_asr']:.3f}", f"{r['noise_zeroshot_asr']:.3f}", f"{r['train_seconds']:.0f}")
    Console(width=200).print(table)
    verdicts = {}
    for r in rows:
        if r["encoder"] != "BadEncoder":
            continue
        ok = (r["probe_asr"] >= 0.9 and r["zeroshot_asr"] >= 0.9 and r["clean_probe_drop_points"] <= 3
              and r["clean_zeroshot_drop_points"] <= 3)
        verdicts[r["model"]] = (f"{'met' if ok else 'NOT met'} (probe ASR {r['probe_asr']:.3f}, ZS ASR "
                                f"{r['zeroshot_asr']:.3f}, clean drop probe {r['clean_probe_drop_points']:+.1f} / "
                                f"ZS {r['clean_zeroshot_drop_points']:+.1f} pts)")
        print(f"acceptance (ASR >= 90% probe and ZS, clean drop <= 3 pts) on {r['model']}: {verdicts[r['model']]}")
    report = {"benchmark": "badencoder_eval",
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "trigger": trigger.to_dict(), "noise_baseline": noise.to_dict(), "target_label": target,
              "loss_columns": list(LOSS_COLUMNS), "rows": rows, "acceptance": verdicts,
              "env": environment(args.threads)}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
