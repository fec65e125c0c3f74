"""AdvCLIP against a random patch and a directly optimised (UAP) patch, evaluated downstream-agnostically.

For each victim (default: the two tiny CLIPs, shapes-clip-resnet and shapes-clip-vit) the
attacker learns one universal patch from ``--n-surrogate`` captioned train scenes of the 32 px
shapes world (all six captions per scene), with

* ``advclip``: :class:`~mmsec.attacks.universal.AdvCLIP` at the code's defaults (3% of the area,
  fixed bottom-right place, 20 epochs of batch 16, alpha 10, beta 5, gamma 5, delta 1);
* ``uap``: :class:`~mmsec.attacks.universal.UAPPatch`, the same size, place, data and number of
  steps, the embedding deviation maximised directly (Adam, no GAN);
* ``random``: a uniform-noise patch of the same size and place.

*After* the patches exist, downstream users build on the frozen victim with their own clean data
(:class:`~mmsec.evaluation.downstream.DownstreamSuite`): linear probes for colour (8 classes) and
position (4 classes) fit on ``--n-probe-train`` train scenes disjoint from the attacker's, zero-shot
classification (48 "colour shape" classes) and image-text retrieval of ``--n-test`` test scenes
with their first caption. Reported: clean accuracy / R@1 and the drop (clean - patched) of each,
in three worlds:

* ``standard``: the attacker's world (32 px, world seed 0), test split;
* ``scenes``: world seed 1, striped backgrounds only, second objects in half the scenes (32 px);
* ``48px``: world seed 1 at 48 px, the patch rescaled to the same fraction of the side (8 px).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/advclip_eval.py      # ~10 min on one thread
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "advclip_eval.json"
PATCHES = ("advclip", "uap", "random")
METRICS = ("probe_color", "probe_position", "zeroshot", "r1")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["shapes-clip-resnet", "shapes-clip-vit"])
    p.add_argument("--n-surrogate", type=int, default=2000, help="attacker's captioned train scenes")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--n-probe-train", type=int, default=2000, help="downstream train scenes per world")
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--worlds", nargs="+", default=["standard", "scenes", "48px"], choices=["standard", "scenes", "48px"])
    p.add_argument("--seed", type=int, default=0)
    add_common_args(p, OUT)
    return p.parse_args(argv)


def worlds(names: list[str]) -> dict:
    from mmsec.data.shapes import ShapesWorld

    every = {"standard": lambda: ShapesWorld(32),
             "scenes": lambda: ShapesWorld(32, seed=1, textures=("striped",), second_object_prob=0.5),
             "48px": lambda: ShapesWorld(48, seed=1)}
    return {n: every[n]() for n in names}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from mmsec.attacks.universal import AdvCLIP, UAPPatch, apply_patch, random_patch
    from mmsec.data.shapes import ShapesWorld
    from mmsec.evaluation.downstream import DownstreamSuite
    from mmsec.zoo import load_model

    surrogate = ShapesWorld(32).batch("train", 0, args.n_surrogate)
    data = (surrogate.pixels(), surrogate.captions)
    test_worlds = worlds(args.worlds)
    # Downstream train scenes start far beyond the attacker's, so the two never share a scene.
    probe_start = max(20000, args.n_surrogate)
    rows, attacks = [], {}
    table = Table(title=f"AdvCLIP vs UAP patch vs random patch: drop (clean - patched), {args.n_test} test scenes; "
                        "clean value in the 'clean' rows")
    for col in ("model", "world", "patch", "colour probe", "position probe", "zero-shot (48)", "zero-shot shape",
                "retrieval R@1", "fooling (colour)", "train s"):
        table.add_column(col)
    for name in args.models:
        model = load_model(name)
        attacks[name] = {}
        adv = AdvCLIP(epochs=args.epochs)(model, data, generator=args.seed)
        print(f"{name} advclip: {adv.seconds:.0f} s, adv term last 100 steps {adv.terms['adv'][-100:].mean():.2f}",
              flush=True)
        uap = UAPPatch(epochs=args.epochs)(model, data, generator=args.seed)
        print(f"{name} uap: {uap.seconds:.0f} s, objective last 100 steps {uap.loss[-100:].mean():.2f}", flush=True)
        patches = {"advclip": (adv.patch, adv.seconds), "uap": (uap.patch, uap.seconds),
                   "random": (random_patch(adv.fraction, 32, generator=args.seed), 0.0)}
        attacks[name] = {"advclip": {"seconds": adv.seconds, "params": adv.params, "steps": len(adv.g_loss),
                                     "g_loss_first_last": [adv.g_loss[:100].mean().item(), adv.g_loss[-100:].mean().item()],
                                     "d_loss_first_last": [adv.d_loss[:100].mean().item(), adv.d_loss[-100:].mean().item()],
                                     "terms_last_100": {k: v[-100:].mean().item() for k, v in adv.terms.items()},
                                     "patch": adv.patch.mul(255).round().int().tolist()},
                         "uap": {"seconds": uap.seconds, "params": uap.params, "steps": len(uap.loss),
                                 "objective_last_100": uap.loss[-100:].mean().item(),
                                 "patch": uap.patch.mul(255).round().int().tolist()}}
        for wname, world in test_worlds.items():
            start = time.perf_counter()
            suite = DownstreamSuite.shapes(model, world.batch("train", probe_start, args.n_probe_train),
                                           world.batch("test", 0, args.n_test))
            clean, _ = suite.clean()
            row = {"model": name, "world": wname, "image_size": world.image_size, "clean": clean, "patches": {}}
            table.add_row(name, wname, "clean", *[f"{clean[m]:.3f}" for m in
                                                  ("probe_color", "probe_position", "zeroshot", "zeroshot_shape", "r1")],
                          "", "")
            for pname in PATCHES:
                patch, seconds = patches[pname]
                report = suite.compare(apply_patch(suite.clean_pixels, patch, "fixed", fraction=adv.fraction))
                row["patches"][pname] = dict(report, seconds=seconds)
                table.add_row("", "", pname, *[f"{report[m]['drop']:+.3f}" for m in
                                               ("probe_color", "probe_position", "zeroshot", "zeroshot_shape", "r1")],
                              f"{report['probe_color']['fooling_rate']:.3f}", f"{seconds:.0f}" if seconds else "")
            rnd = row["patches"]["random"]
            row["advclip_over_random"] = {m: (row["patches"]["advclip"][m]["drop"] / rnd[m]["drop"]
                                              if rnd[m]["drop"] > 0 else None) for m in METRICS}
            row["eval_seconds"] = time.perf_counter() - start
            rows.append(row)
            print(f"{name} {wname}: " + ", ".join(
                f"{m} {row['patches']['advclip'][m]['drop']:+.3f}/{row['patches']['uap'][m]['drop']:+.3f}/"
                f"{rnd[m]['drop']:+.3f}" for m in METRICS) + " (advclip/uap/random)", flush=True)
    Console(width=200).print(table)
    report = {"benchmark": "advclip_eval", "n_surrogate": args.n_surrogate, "epochs": args.epochs,
              "n_probe_train": args.n_probe_train, "n_test": args.n_test, "seed": args.seed,
              "attacks": attacks, "rows": rows,
              "env": environment(args.threads)}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
