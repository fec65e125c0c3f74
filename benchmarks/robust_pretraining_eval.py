"""RoCLIP and SafeCLIP: pre-training a CLIP from scratch on poisoned pairs, undefended vs defended.

Protocol (issue 7): ``--pairs`` shapes-world train pairs (one object, a second with probability
0.25, as the zoo recipe trains on) plus PBCL's backdoor pairs at each of ``--rates`` (``X u P``: the 4 x 4
checkerboard at the bottom right stamped on other train images, each captioned as the target class
``--target``). The zoo recipe ``shapes-clip-resnet`` (its initialisation, AdamW, lr 2e-3, batch
256) is trained from scratch on that fixed set (``mmsec.train.poisoned.pretrain_pairs``):

* CLIP on the clean pairs alone (the control), and CLIP on each poisoned set (undefended),
  ``--epochs`` epochs each;
* RoCLIP on the poisoned set (``--epochs`` epochs, K = 3, pool 2% of the data);
* SafeCLIP on the poisoned set (5 unimodal warm-up epochs, 1 slow CLIP epoch, then
  ``--safeclip-epochs`` mixed epochs: by default as many as plain CLIP's epochs; more give its CLIP
  loss, which only the safe share of each epoch trains, as many steps as plain training takes);
* with ``--ablations`` (default on), RoCLIP's two parts apart: its augmentation alone (no matching
  epoch: ``period`` beyond the run) and its matching alone (``augment=False``).

Evaluation on ``--n-test`` single-object test scenes: zero-shot ASR (triggered non-target images
classified as the target, 48 classes), clean zero-shot top-1, linear-probe ASR (48 classes, fit on
``--n-probe`` clean train scenes afterwards), image-to-text ASR, and a same-size uniform-noise patch
as a baseline. For SafeCLIP also how many poisoned pairs its first and last safe sets hold, and the
AUROC of low image-caption similarity after the slow epoch as a poisoned-pair detector.
Clean cost = clean zero-shot of the undefended CLIP minus the defended model's (points).

Acceptance (issue 7): "CleanCLIP, RoCLIP and SafeCLIP each cut the ASR of a patch-trigger poisoning
attack by at least 70 points at a clean-accuracy cost of at most 5 points".

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/robust_pretraining_eval.py          # ~30 min on one core
    .venv/bin/python benchmarks/robust_pretraining_eval.py --pairs 2560 --epochs 2 --n-test 200   # quick look
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "robust_pretraining_eval.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pairs", type=int, default=12800, help="clean train pairs (train ids 0..)")
    p.add_argument("--rates", type=float, nargs="+", default=[0.01, 0.003],
                   help="PBCL poison rates (of the poisoned set); RoCLIP's paper reaches 1%% only with more matching")
    p.add_argument("--epochs", type=int, default=12, help="CLIP / RoCLIP epochs; SafeCLIP's mixed epochs")
    p.add_argument("--target", default="red circle")
    p.add_argument("--defenses", nargs="+", default=["roclip", "safeclip"], choices=["roclip", "safeclip"])
    p.add_argument("--safeclip-epochs", type=int, nargs="+", default=[12],
                   help="SafeCLIP's mixed epochs, one run each (12 = --epochs: the same epoch count as plain CLIP)")
    p.add_argument("--no-ablations", dest="ablations", action="store_false",
                   help="skip RoCLIP's augmentation-only and matching-only runs")
    p.add_argument("--seed", type=int, default=0, help="seed of the poisoning and of every training run")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--n-probe", type=int, default=2000)
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
    from mmsec.defenses.backdoor.roclip import RoCLIP
    from mmsec.defenses.backdoor.safeclip import SafeCLIP
    from mmsec.evaluation.backdoor import backdoor_report, zeroshot_asr
    from mmsec.evaluation.detection import auroc
    from mmsec.train.poisoned import pretrain_pairs

    trigger = PatchTrigger()
    noise = PatchTrigger(pattern="noise", size=trigger.size, position=trigger.position, seed=1)
    target = shape_color_classes().index(args.target)
    world = ShapesWorld(image_size=32)  # single-object scenes, as the zoo card's zero-shot evaluation
    test = world.batch("test", 0, args.n_test)
    probe_train = world.batch("train", 200_000, args.n_probe)  # disjoint from the pre-training pairs

    clean = ShapesDataset("train", n=args.pairs, second_object_prob=0.25).to_data(quiet=True)

    def evaluate(model) -> dict:
        scores = backdoor_report(model, probe_train, test, trigger, target, caption_index=None,
                                 tasks=("zeroshot", "linear_probe", "retrieval"))
        base = zeroshot_asr(model, test.pixels(), test.labels, noise, target, generator=0)
        return {"zeroshot_asr": scores["zeroshot"].asr, "clean_zeroshot": scores["zeroshot"].clean_accuracy,
                "probe_asr": scores["linear_probe"].asr, "clean_probe": scores["linear_probe"].clean_accuracy,
                "i2t_asr": scores["retrieval_i2t"].asr, "noise_patch_zeroshot_asr": base.asr}

    rows = []

    def add(name: str, rate: float, n_poisoned: int, model, seconds: float, **extra) -> None:
        row = {"setting": name, "rate": rate, "n_poisoned": n_poisoned, "train_seconds": seconds,
               **evaluate(model), **extra}
        rows.append(row)
        print(f"{name} at rate {rate:g}: ASR {row['zeroshot_asr']:.3f}, clean {row['clean_zeroshot']:.3f}, "
              f"{seconds:.0f} s", flush=True)

    run = pretrain_pairs(clean, epochs=args.epochs, seed=args.seed, quiet=False)
    add("CLIP", 0.0, 0, run.model, run.log.seconds)
    for rate in args.rates:
        poisoned = PBCLBackdoor(args.target, trigger, rate=rate, seed=args.seed)(clean)
        data, record = poisoned.data, poisoned.record
        is_poison = record.poisoned_mask()
        k = record.n_poisoned
        print(f"rate {rate:g}: {len(clean)} clean pairs + {k} poisoned", flush=True)
        run = pretrain_pairs(data, epochs=args.epochs, seed=args.seed, quiet=False)
        add("CLIP", rate, k, run.model, run.log.seconds)
        if "roclip" in args.defenses:
            run = RoCLIP(epochs=args.epochs, seed=args.seed)(data, quiet=False)
            add("RoCLIP", rate, k, run.model, run.log.seconds, roclip_epochs=run.extras["roclip_epochs"],
                pool_size=run.extras["pool_size"])
        if "roclip" in args.defenses and args.ablations:
            run = RoCLIP(epochs=args.epochs, period=args.epochs + 1, seed=args.seed)(data, quiet=False)
            add("RoCLIP augmentation only", rate, k, run.model, run.log.seconds)
            run = RoCLIP(epochs=args.epochs, augment=False, seed=args.seed)(data, quiet=False)
            add("RoCLIP matching only", rate, k, run.model, run.log.seconds)
        for mixed in args.safeclip_epochs if "safeclip" in args.defenses else []:
            out = SafeCLIP(epochs=mixed, seed=args.seed)(data, quiet=False)
            name = "SafeCLIP" if mixed == args.epochs else f"SafeCLIP, {mixed} mixed epochs"
            add(name, rate, k, out.model, out.seconds, safe_fractions=out.safe_fractions,
                clip_steps=sum(round(f * len(data)) // 256 for f in out.safe_fractions),
                poisoned_in_first_safe_set=int((out.initial_safe & is_poison).sum()),
                poisoned_in_last_safe_set=int((out.final_safe & is_poison).sum()),
                first_safe_set=int(out.initial_safe.sum()), last_safe_set=int(out.final_safe.sum()),
                low_similarity_auroc=auroc(-out.initial_similarity, is_poison))

    for r in rows:  # against plain CLIP on the same poisoned pairs
        undefended = next(u for u in rows if u["setting"] == "CLIP" and u["rate"] == r["rate"])
        r["asr_cut_points"] = 100 * (undefended["zeroshot_asr"] - r["zeroshot_asr"])
        r["clean_cost_points"] = 100 * (undefended["clean_zeroshot"] - r["clean_zeroshot"])
    table = Table(title=f"Pre-training shapes-clip-resnet from scratch on {len(clean)} pairs + PBCL's pairs "
                        f"({args.epochs} epochs; target {args.target!r}); {args.n_test} test images")
    for col in ["setting", "rate", "poisoned", "ZS ASR", "cut (pts)", "clean ZS", "cost (pts)", "probe ASR",
                "i2t ASR", "noise-patch ASR", "poisoned in safe set (first / last)", "train s"]:
        table.add_column(col)
    for r in rows:
        safe = (f"{r['poisoned_in_first_safe_set']} / {r['poisoned_in_last_safe_set']}"
                if "safe_fractions" in r else "-")
        table.add_row(r["setting"], f"{100 * r['rate']:.2g}%", str(r["n_poisoned"]), f"{r['zeroshot_asr']:.3f}",
                      f"{r['asr_cut_points']:+.1f}", f"{r['clean_zeroshot']:.3f}", f"{r['clean_cost_points']:+.1f}",
                      f"{r['probe_asr']:.3f}", f"{r['i2t_asr']:.3f}", f"{r['noise_patch_zeroshot_asr']:.3f}", safe,
                      f"{r['train_seconds']:.0f}")
    Console(width=220).print(table)
    verdicts = {f"{r['setting']} at {r['rate']:g}": ("met" if r["asr_cut_points"] >= 70 and r["clean_cost_points"] <= 5
                                                     else "NOT met")
                for r in rows if r["setting"].startswith(("RoCLIP", "SafeCLIP")) and "only" not in r["setting"]}
    print(f"acceptance (ASR cut >= 70 points at clean cost <= 5): {verdicts}")
    report = {"benchmark": "robust_pretraining_eval",
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "trigger": trigger.to_dict(), "noise_baseline": noise.to_dict(), "target_label": target,
              "rows": rows, "acceptance": verdicts, "env": environment(args.threads)}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
