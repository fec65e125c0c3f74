"""BadCLIP vs a plain patch backdoor: does the backdoor persist through clean fine-tuning and CleanCLIP?

Protocol (issue 6): the shipped ``shapes-clip-resnet`` is poison-fine-tuned (``poisoned_finetune``:
``--ft-steps`` batches of 64 at lr ``--ft-lr`` on ``--ft-pairs`` clean train pairs plus the poisoned
ones at rate ``--rate``, ``X u P``) with (a) PBCL's plain 4 x 4 checkerboard patch and (b) BadCLIP's
4 x 4 patch optimised on the clean zoo model (same size, same place, same poison rate, captions and
seed), for each place of ``--positions``: the bottom right (PBCL's default here; the clean zoo model
barely sees a 4 x 4 patch there) and the centre (where it does). Each backdoored model is then
cleaned by each defense of ``--defenses`` -- ``clean_finetune`` (the CLIP loss on clean pairs) and
``cleanclip`` (Bansal et al., ICCV 2023: the CLIP loss plus unimodal self-supervised terms) -- on
``--clean-pairs`` other clean train pairs for ``--clean-steps`` batches of 64 at each lr of
``--clean-lrs`` (a few hundred steps; lr 1e-4 and a stronger 1e-3). The two defenses share the
optimiser, steps, lr, data and seed, so they differ only in the loss.

Evaluation on ``--n-test`` single-object test scenes: zero-shot ASR (triggered non-target images
classified as the target, 48 classes), clean zero-shot top-1, and for reference the trigger's
zero-shot target rate on the clean zoo model (before any poisoning) and a same-size noise patch.

Acceptance (issue 6): "BadCLIP keeps a clearly higher ASR than a plain patch backdoor after the
same clean fine-tuning (the paper's claim)"; issue 7: "CleanCLIP cuts the ASR of a patch-trigger
poisoning attack by at least 70 points at a clean-accuracy cost of at most 5 points; BadCLIP stays
more persistent against CleanCLIP than the patch attack".

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/badclip_persistence.py
    .venv/bin/python benchmarks/badclip_persistence.py --ft-steps 50 --clean-steps 50 --n-test 200  # quick look
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "badclip_persistence.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--target", default="red circle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--rate", type=float, default=0.01)
    p.add_argument("--positions", nargs="+", default=["bottom_right", "center"])
    p.add_argument("--ft-pairs", type=int, default=4096)
    p.add_argument("--ft-steps", type=int, default=300)
    p.add_argument("--ft-lr", type=float, default=2e-3)
    p.add_argument("--clean-pairs", type=int, default=4096)
    p.add_argument("--clean-steps", type=int, default=300)
    p.add_argument("--clean-lrs", type=float, nargs="+", default=[1e-4, 1e-3])
    p.add_argument("--defenses", nargs="+", default=["clean_finetune", "cleanclip"])
    p.add_argument("--opt-images", type=int, default=512, help="clean images the attacker optimises on")
    p.add_argument("--opt-steps", type=int, default=300)
    p.add_argument("--opt-lr", type=float, default=0.01)
    p.add_argument("--n-test", type=int, default=1000)
    add_common_args(p, OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    import torch
    from rich.console import Console
    from rich.table import Table

    from mmsec.attacks.backdoor.badclip import BadCLIP
    from mmsec.attacks.backdoor.pbcl import PBCLBackdoor
    from mmsec.attacks.backdoor.triggers import PatchTrigger
    from mmsec.data.datasets import ShapesDataset
    from mmsec.data.shapes import ShapesWorld, shape_color_classes
    from mmsec.evaluation.backdoor import zeroshot_asr
    from mmsec.registry import get
    from mmsec.train.poisoned import poisoned_finetune
    from mmsec.zoo import load_model

    target = shape_color_classes().index(args.target)
    test = ShapesWorld(image_size=32).batch("test", 0, args.n_test)
    test_pixels, test_labels = test.pixels(), test.labels
    zoo = load_model("shapes-clip-resnet")
    ft_pairs = ShapesDataset("train", n=args.ft_pairs, second_object_prob=0.25).to_data(quiet=True)
    clean_pairs = ShapesDataset("train", n=args.clean_pairs, start=args.ft_pairs,
                                second_object_prob=0.25).to_data(quiet=True)
    attacker = ShapesDataset("train", n=args.opt_images, start=100_000).to_data(quiet=True)

    def score(model, trigger) -> dict:
        s = zeroshot_asr(model, test_pixels, test_labels, trigger, target, generator=0)
        return {"zeroshot_asr": s.asr, "clean_zeroshot": s.clean_accuracy}

    rows, optimisation = [], {}
    cleanups = [(d, lr) for d in args.defenses for lr in args.clean_lrs]
    for position in args.positions:
        t0 = time.perf_counter()
        badclip = BadCLIP(args.target, rate=args.rate, seed=args.seed, position=position, steps=args.opt_steps,
                          lr=args.opt_lr)
        badclip.optimise(zoo, attacker.pixels, generator=args.seed, labels=attacker.labels)
        optimisation[position] = {"seconds": time.perf_counter() - t0,
                                  "loss_first": {k: v[0] for k, v in badclip.loss_trace.items()},
                                  "loss_last": {k: v[-1] for k, v in badclip.loss_trace.items()}}
        plain = PBCLBackdoor(args.target, PatchTrigger(position=position), rate=args.rate, seed=args.seed)
        noise = PatchTrigger(pattern="noise", size=4, position=position, seed=1)
        for name, attack in [("plain patch (PBCL)", plain), ("BadCLIP", badclip)]:
            trigger = attack.trigger
            on_clean = score(zoo, trigger)["zeroshot_asr"]
            bd = poisoned_finetune(zoo, attack, ft_pairs, steps=args.ft_steps, batch_size=64, lr=args.ft_lr, seed=0)
            before = score(bd.model, trigger)
            row = {"attack": name, "position": position, "trigger": trigger.to_dict(),
                   "n_poisoned": bd.record.n_poisoned, "poison_rate": bd.record.poison_rate,
                   "asr_on_clean_zoo": on_clean, "noise_patch_asr_backdoored": score(bd.model, noise)["zeroshot_asr"],
                   "asr_backdoored": before["zeroshot_asr"], "clean_backdoored": before["clean_zeroshot"],
                   "poison_ft_seconds": bd.log.seconds, "after": {}}
            for defense, lr in cleanups:
                cleaned = get("defenses", defense).factory(steps=args.clean_steps, batch_size=64, lr=lr)(
                    bd.model, clean_pairs, generator=torch.Generator().manual_seed(0))
                after = score(cleaned.model, trigger)
                row["after"][f"{defense} lr {lr:g}"] = {"asr": after["zeroshot_asr"], "clean": after["clean_zeroshot"],
                                                        "seconds": cleaned.seconds}
            rows.append(row)
            print(f"{name} @ {position}: ASR {row['asr_backdoored']:.3f} -> "
                  + ", ".join(f"{k}: {v['asr']:.3f}" for k, v in row["after"].items()), flush=True)

    table = Table(title=f"Backdoor persistence through clean-ups (shapes-clip-resnet, target {args.target!r}, "
                        f"rate {args.rate:g}, {args.n_test} test images)")
    cols = ["attack", "place", "ASR clean zoo", "ASR backdoored", "clean acc", "noise-patch ASR"]
    for defense, lr in cleanups:
        cols += [f"ASR after {defense} lr {lr:g}", "clean"]
    for c in cols:
        table.add_column(c)
    for r in rows:
        cells = [r["attack"], r["position"], f"{r['asr_on_clean_zoo']:.3f}", f"{r['asr_backdoored']:.3f}",
                 f"{r['clean_backdoored']:.3f}", f"{r['noise_patch_asr_backdoored']:.3f}"]
        for defense, lr in cleanups:
            a = r["after"][f"{defense} lr {lr:g}"]
            cells += [f"{a['asr']:.3f}", f"{a['clean']:.3f}"]
        table.add_row(*cells)
    Console(width=220).print(table)

    verdicts = {}
    for position in args.positions:
        plain_row, bad_row = [r for r in rows if r["position"] == position]
        for defense, lr in cleanups:
            key = f"{defense} lr {lr:g}"
            p, b = plain_row["after"][key]["asr"], bad_row["after"][key]["asr"]
            verdicts[f"{position}, {key}"] = {
                "plain": p, "badclip": b, "difference_points": 100 * (b - p), "badclip_clearly_higher": b - p >= 0.10,
                "plain_asr_cut_points": 100 * (plain_row["asr_backdoored"] - p),
                "plain_clean_cost_points": 100 * (plain_row["clean_backdoored"] - plain_row["after"][key]["clean"])}
    report = {"benchmark": "badclip_persistence",
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "target_label": target, "badclip_params": {k: v for k, v in badclip.params().items() if k != "trigger"},
              "optimisation": optimisation,
              "rows": rows, "verdicts (clearly higher := >= 10 points)": verdicts,
              "env": environment(args.threads)}
    print(json.dumps(verdicts, indent=1))
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
