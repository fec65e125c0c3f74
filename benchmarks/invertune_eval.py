"""InverTune on the zoo's CLIPs: does it name the target and remove four backdoors with 64 clean images?

Attacks (target ``--target``, all on the shipped zoo model): PBCL's 4 x 4 checkerboard patch
(bottom right) and a Blended trigger (``BlendedTrigger()``: seeded noise, alpha 0.2) by poisoned
fine-tuning (``poisoned_finetune``: the recipe of the PBCL benchmark, ``--ft-pairs`` clean train
pairs, rate ``--rate``, ``--ft-steps`` batches of 64 at lr ``--ft-lr``); BadCLIP's optimised
4 x 4 patch at the centre by the same poisoned fine-tuning; BadEncoder's image tower (the
``badencoder_eval`` recipe scaled by ``--be-*``, 4 x 4 checkerboard at the bottom right).

Defense (:class:`~mmsec.defenses.backdoor.invertune.InverTune`, its defaults unless overridden):
target identification and trigger inversion on ``--n-inversion`` clean validation scenes (ids
0..), activation tuning on ONE batch of 64 other clean validation scenes (ids 5000..5063); the
candidate vocabulary is the 48 shapes-world classes. The clean zoo model is also put through step 1
to show what the frequency rise looks like without a backdoor.

Evaluation on ``--n-test`` single-object test scenes: zero-shot ASR (triggered non-target images
classified as the target) and clean zero-shot accuracy before/after, the identified target vs
the truth, its frequency rise and margin, the selected layers and the run time of each step.

Acceptance (issue 7): ASR lowered by >= 90 points on average over the attacks, clean accuracy
cost <= 3 points (the paper: -97.87% ASR, -3.07% CA), the true target named, 64 tuning images.

Measured (2026-11-27, resnet, defaults): ASR 0.990/1.000/1.000/1.000 -> 0.000/0.018/0.403/0.004,
clean 0.999/1.000/1.000/0.999 -> 0.998/0.952/0.971/0.995 (PBCL / Blended / BadCLIP / BadEncoder): mean
-89.1 ASR points, -2.0 clean points; target named for PBCL and BadEncoder only. With ``--uap
uap_patch``: -92.1 / -2.9 points, target named for BadEncoder only (``out/invertune_eval_uappatch.json``).

Usage::

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/invertune_eval.py             # resnet, ~17 min on one core
    .venv/bin/python benchmarks/invertune_eval.py --attacks pbcl --ft-steps 100 --n-test 200   # quick look
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "invertune_eval.json"
ATTACKS = ("pbcl", "blended", "badclip", "badencoder")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["shapes-clip-resnet"])
    p.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    p.add_argument("--target", default="red circle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.01)
    p.add_argument("--ft-pairs", type=int, default=4096)
    p.add_argument("--ft-steps", type=int, default=300)
    p.add_argument("--ft-lr", type=float, default=2e-3)
    p.add_argument("--be-shadow", type=int, default=2048)
    p.add_argument("--be-epochs", type=int, default=40)
    p.add_argument("--be-lr", type=float, default=1e-3)
    p.add_argument("--n-inversion", type=int, default=1024)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--lr", type=float, default=None, help="InverTune tuning lr (default: the class's)")
    p.add_argument("--steps", type=int, default=None, help="InverTune tuning steps (default: the class's)")
    p.add_argument("--tune", default=None, choices=["layers", "tower"])
    p.add_argument("--uap", default="advclip", choices=["advclip", "uap_patch"],
                   help="step 1's universal perturbation (advclip: the paper's, InverTune's default)")
    add_common_args(p, OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from mmsec.attacks.backdoor import BlendedTrigger, PatchTrigger
    from mmsec.attacks.backdoor.badclip import BadCLIP
    from mmsec.attacks.backdoor.badencoder import BadEncoder
    from mmsec.attacks.backdoor.pbcl import PBCLBackdoor
    from mmsec.data.datasets import ShapesDataset
    from mmsec.data.shapes import ShapesWorld, shape_color_classes, zeroshot_prompts
    from mmsec.defenses.backdoor.invertune import InverTune
    from mmsec.defenses.backdoor.invertune_target import identify_target
    from mmsec.evaluation.backdoor import zeroshot_asr
    from mmsec.zoo import load_model

    names, prompts = shape_color_classes(), zeroshot_prompts()
    target = names.index(args.target)
    test = ShapesWorld(32).batch("test", 0, args.n_test)
    inversion = ShapesWorld(32).batch("val", 0, args.n_inversion).pixels()
    tuning = ShapesWorld(32).batch("val", 5000, 64).pixels()
    from mmsec.attacks.universal import AdvCLIP, UAPPatch

    kwargs = {k: v for k, v in (("lr", args.lr), ("steps", args.steps), ("tune", args.tune)) if v is not None}
    kwargs["uap"] = AdvCLIP() if args.uap == "advclip" else UAPPatch()
    defense = InverTune(**kwargs)

    def score(model, trigger) -> dict:
        s = zeroshot_asr(model, test.pixels(), test.labels, trigger, target, generator=0)
        return {"asr": s.asr, "clean": s.clean_accuracy}

    def backdoor(zoo, attack: str):
        t0 = time.perf_counter()
        if attack == "badencoder":
            shadow = ShapesWorld(32, second_object_prob=0.25).batch("train", 0, args.be_shadow).pixels()
            pool = ShapesWorld(32).batch("train", 90_000, 960)
            idx = (pool.labels == target).nonzero().flatten()[:1]
            out = BadEncoder(target=args.target, epochs=args.be_epochs, batch_size=64, lr=args.be_lr)(
                zoo, shadow, pool.pixels()[idx], generator=args.seed,
                reference_indices=[90_000 + int(i) for i in idx], reference_seed=None)
            return out.model, out.record.rebuild_trigger(), time.perf_counter() - t0
        from mmsec.train.poisoned import poisoned_finetune

        pairs = ShapesDataset("train", n=args.ft_pairs, second_object_prob=0.25).to_data(quiet=True)
        if attack == "badclip":
            poisoner = BadCLIP(args.target, rate=args.rate, seed=args.seed, position="center")
            attacker = ShapesDataset("train", n=512, start=100_000).to_data(quiet=True)
            poisoner.optimise(zoo, attacker.pixels, generator=args.seed, labels=attacker.labels)
        else:
            trigger = PatchTrigger() if attack == "pbcl" else BlendedTrigger()
            poisoner = PBCLBackdoor(args.target, trigger, rate=args.rate, seed=args.seed)
        bd = poisoned_finetune(zoo, poisoner, pairs, steps=args.ft_steps, batch_size=64, lr=args.ft_lr, seed=0)
        return bd.model, poisoner.trigger, time.perf_counter() - t0

    rows, controls = [], []
    for model_name in args.models:
        zoo = load_model(model_name).eval()
        ident = identify_target(zoo, inversion, prompts, defense.uap, names, generator=args.seed)
        controls.append({"model": model_name, **ident.to_dict()})
        print(f"{model_name} clean: winner {ident.name!r} rise {ident.rise[ident.label]:+.3f}", flush=True)
        for attack in args.attacks:
            model, trigger, attack_seconds = backdoor(zoo, attack)
            model.eval()
            before = score(model, trigger)
            out = defense(model, inversion, tuning, prompts, names, generator=args.seed)
            after = score(out.model, trigger)
            row = {"model": model_name, "attack": attack, "trigger": trigger.to_dict(),
                   "attack_seconds": attack_seconds, "true_target": args.target,
                   "asr_before": before["asr"], "asr_after": after["asr"],
                   "clean_before": before["clean"], "clean_after": after["clean"],
                   "asr_drop_points": 100 * (before["asr"] - after["asr"]),
                   "clean_cost_points": 100 * (before["clean"] - after["clean"]),
                   "target_correct": out.target.label == target, **out.summary()}
            rows.append(row)
            print(f"{model_name} {attack}: target {out.target.name!r} (rise {row['target']['rise']:+.3f}), "
                  f"ASR {before['asr']:.3f} -> {after['asr']:.3f}, clean {before['clean']:.3f} -> "
                  f"{after['clean']:.3f}, {out.seconds['total']:.0f} s", flush=True)

    table = Table(title=f"InverTune (64 tuning images, {args.n_inversion} inversion images; target {args.target!r}; "
                        f"{args.n_test} test images)")
    for col in ["model", "attack", "identified", "rise", "ASR before", "ASR after", "clean before", "clean after",
                "layers", "s"]:
        table.add_column(col)
    for r in rows:
        table.add_row(r["model"], r["attack"], f"{r['target']['name']}{'' if r['target_correct'] else ' (WRONG)'}",
                      f"{r['target']['rise']:+.3f}", f"{r['asr_before']:.3f}", f"{r['asr_after']:.3f}",
                      f"{r['clean_before']:.3f}", f"{r['clean_after']:.3f}",
                      ",".join(n.split(".")[-1] for n in r["layers"]), f"{r['seconds']['total']:.0f}")
    Console(width=200).print(table)
    n = max(1, len(rows))
    summary = {"mean_asr_drop_points": sum(r["asr_drop_points"] for r in rows) / n,
               "mean_clean_cost_points": sum(r["clean_cost_points"] for r in rows) / n,
               "targets_correct": sum(r["target_correct"] for r in rows), "runs": len(rows),
               "acceptance": {"asr_drop_ge_90": sum(r["asr_drop_points"] for r in rows) / n >= 90,
                              "clean_cost_le_3": sum(r["clean_cost_points"] for r in rows) / n <= 3,
                              "all_targets_named": all(r["target_correct"] for r in rows)}}
    print(summary)
    report = {"args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "defense": defense.params(), "environment": environment(args.threads), "rows": rows,
              "clean_model_step1": controls, "summary": summary}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
