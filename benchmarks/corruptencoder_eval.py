"""CorruptEncoder vs naive poisoning vs no attack: SimCLR pre-training from scratch, then a linear probe.

Victim: SimCLR (:mod:`mmsec.train.simclr`; NT-Xent at temperature 0.5, random resized crop of
area (``--crop-min`` 0.2, 1) (the paper: 0.08; 0.2 as MoCo v2 and many CIFAR-scale SimCLR
recipes, because at this budget the smaller crops, often without the object, left the encoder
near chance), flip, hue-preserving brightness/contrast/saturation jitter; AdamW lr 2e-3) pre-trains the zoo recipe
``shapes-clip-resnet``'s image tower from scratch on ``--n-pretrain`` unlabelled shapes-world train
scenes (ids 0..) plus the attacker's images. Default world: plain backgrounds, one object per scene
(``--textures``, ``--second-object-prob``): on the zoo's full world (striped / noisy textures, a
second object in a quarter of the scenes) SimCLR at this budget learns the background and little
else (48-class probe 7-8%, below a random encoder's 11%, after 300-500 steps); on the plain world it
reaches ~20% (colour ~99%, shape ~33%) in 400 steps (crop-min 0.2, lr 2e-3).
Downstream: a 48-class linear probe (logistic regression on frozen L2-normalised embeddings) fit
*after* pre-training on ``--n-probe`` clean labelled train scenes (ids 100,000..), scored on
``--n-test`` test scenes. ASR = fraction of non-target test images sent to the target by the probe
once the trigger (``PatchTrigger()``: 4 x 4 checkerboard, bottom right) is stamped.

Pre-training sets (same seed, same steps, each poisoned at ``--rate`` = n / (N + n), paper 0.5%):

* ``clean``: no attack (its ASR is the trigger's effect on an unpoisoned encoder);
* ``corruptencoder``: :class:`~mmsec.attacks.backdoor.corruptencoder.CorruptEncoder` with
  ``--n-reference`` reference objects (paper: 3), the first large target-class scenes from id
  90,000, and backgrounds of scenes from id 1,000,000 (objects removed);
* ``naive``: the earlier SSL backdoors' poisoning (Saha et al., CVPR 2022): the trigger at a random
  place on whole target-class images, distinct images from train ids 110,000.. (more target
  images than CorruptEncoder needs, as in that paper);
* ``corruptencoder_plus`` (optional): CorruptEncoder+ with support ratio 0.2.

Baseline trigger: a same-size uniform-noise patch at the same place, scored on every encoder.
Also printed: the layout analysis p(area ratio) for the reference objects' size.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/corruptencoder_eval.py              # ~25 min on one busy core
    .venv/bin/python benchmarks/corruptencoder_eval.py --steps 50 --n-test 200         # quick look
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "corruptencoder_eval.json"
CONDITIONS = ("clean", "corruptencoder", "naive", "corruptencoder_plus")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--conditions", nargs="+", default=["clean", "corruptencoder", "naive"], choices=CONDITIONS)
    p.add_argument("--target", default="red circle")
    p.add_argument("--n-pretrain", type=int, default=8192)
    p.add_argument("--textures", nargs="+", default=["plain"], help="background textures of every world used")
    p.add_argument("--second-object-prob", type=float, default=0.0)
    p.add_argument("--probe-c", type=float, default=1.0, help="inverse L2 strength of the downstream probe")
    p.add_argument("--rate", type=float, default=0.005)
    p.add_argument("--n-reference", type=int, default=3)
    p.add_argument("--n-background", type=int, default=400)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--crop-min", type=float, default=0.2, help="smallest crop area fraction (paper: 0.08)")
    p.add_argument("--seed", type=int, default=0, help="seed of the encoder's init, batch order and augmentation")
    p.add_argument("--n-probe", type=int, default=2000)
    p.add_argument("--n-test", type=int, default=1000)
    add_common_args(p, OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    import torch
    from rich.console import Console
    from rich.table import Table

    from mmsec.attacks.backdoor import PatchTrigger
    from mmsec.attacks.backdoor.corruptencoder import (
        CorruptEncoder,
        NaivePoisoning,
        centred_layout,
        layout_probability,
        noise_like,
        shapes_backgrounds,
        shapes_reference_objects,
    )
    from mmsec.data.shapes import ShapesWorld, shape_color_classes
    from mmsec.evaluation.encoder_backdoor import encoder_probe_scores
    from mmsec.train.simclr import AugmentConfig, ImageEncoder, SimCLRConfig, train_simclr

    trigger, noise = PatchTrigger(), noise_like(PatchTrigger())
    target = shape_color_classes().index(args.target)
    tex = tuple(args.textures)
    world = ShapesWorld(32, textures=tex)
    clean = ShapesWorld(32, second_object_prob=args.second_object_prob, textures=tex).batch(
        "train", 0, args.n_pretrain).pixels()
    pool = [world.scene(i) for i in range(90_000, 90_000 + 48 * 20 * args.n_reference)]
    ref_scenes = [s for s in pool if s.label == target and s.size == "large"][:args.n_reference]
    refs = shapes_reference_objects(world, ref_scenes)
    backgrounds = shapes_backgrounds(world, range(1_000_000, 1_000_000 + args.n_background))
    naive_pool = world.batch("train", 110_000, 48 * 120)
    target_images = naive_pool.pixels()[naive_pool.labels == target]
    probe_train = world.batch("train", 100_000, args.n_probe)
    test = world.batch("test", 0, args.n_test)

    obj_hw = tuple(refs[0].pixels.shape[-2:])
    analysis = {str(a): layout_probability(*centred_layout(obj_hw, (4, 4), a)) for a in
                (1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 4.0)}
    print(f"layout analysis, object {obj_hw}, trigger 4x4: p(area ratio) = "
          + ", ".join(f"{a}: {p:.4f}" for a, p in analysis.items()), flush=True)

    def poisoned_set(condition: str):
        if condition == "clean":
            return clean, None
        if condition == "naive":
            res = NaivePoisoning(args.target, trigger, rate=args.rate, seed=args.seed)(clean, target_images)
        else:
            plus = condition == "corruptencoder_plus"
            res = CorruptEncoder(args.target, trigger, rate=args.rate, support_ratio=0.2 if plus else 0.0,
                                 seed=args.seed)(clean, refs, backgrounds,
                                                 support_images=target_images if plus else None)
        return res.images, res.record

    cfg = SimCLRConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=max(1, args.steps // 10),
                       augment=AugmentConfig(scale=(args.crop_min, 1.0)))
    rows = []
    for condition in args.conditions:
        images, record = poisoned_set(condition)
        init = ImageEncoder.from_recipe("shapes-clip-resnet", seed=args.seed)
        result = train_simclr(init, images, cfg, generator=args.seed, desc=f"SimCLR {condition}", quiet=False)
        t0 = time.perf_counter()
        scores = encoder_probe_scores(result.encoder, probe_train.pixels(), probe_train.labels, test.pixels(),
                                      test.labels, {"trigger": trigger, "noise": noise}, target, c=args.probe_c)
        row = {"condition": condition, "n_poisoned": 0 if record is None else record.n_poisoned,
               "poison_rate": 0.0 if record is None else record.poison_rate,
               "probe_asr": scores["trigger"].asr, "noise_probe_asr": scores["noise"].asr,
               "clean_probe": scores["trigger"].clean_accuracy,
               "probe_clean_target_rate": scores["trigger"].clean_target_rate,
               "train_seconds": result.seconds, "eval_seconds": time.perf_counter() - t0, "epochs": result.epochs,
               "final_loss": sum(result.losses[-20:]) / min(20, len(result.losses)),
               "loss_every_10pct": [result.losses[int(i)] for i in torch.linspace(0, len(result.losses) - 1, 11)],
               "record": None if record is None else record.to_dict()}
        rows.append(row)
        print(f"{condition}: probe ASR {row['probe_asr']:.3f} (noise {row['noise_probe_asr']:.3f}), clean probe "
              f"{row['clean_probe']:.3f}, {row['train_seconds']:.0f} s", flush=True)

    base = next((r for r in rows if r["condition"] == "clean"), None)
    non_target = int((test.labels != target).sum())
    table = Table(title=f"SimCLR on {args.n_pretrain} shapes images + poison at rate {args.rate:g} (target "
                        f"{args.target!r}, 4x4 checkerboard), {args.steps} steps x batch {args.batch_size}; probe "
                        f"on {args.n_probe}, {args.n_test} test images ({non_target} non-target)")
    for col in ["condition", "poisoned", "probe ASR", "noise ASR", "clean probe", "clean drop pts", "train s"]:
        table.add_column(col)
    for r in rows:
        drop = "" if base is None else f"{100 * (base['clean_probe'] - r['clean_probe']):+.1f}"
        table.add_row(r["condition"], str(r["n_poisoned"]), f"{r['probe_asr']:.3f}", f"{r['noise_probe_asr']:.3f}",
                      f"{r['clean_probe']:.3f}", drop, f"{r['train_seconds']:.0f}")
    Console(width=200).print(table)
    report = {"benchmark": "corruptencoder_eval",
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "trigger": trigger.to_dict(), "noise_baseline": noise.to_dict(), "target_label": target,
              "reference_scenes": [s.scene_id for s in ref_scenes], "object_hw": list(obj_hw),
              "layout_probability_by_area_ratio": analysis, "simclr": {"temperature": cfg.temperature,
                                                                      "augment": vars(cfg.augment)},
              "rows": rows, "env": environment(args.threads)}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
