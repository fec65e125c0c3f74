"""Adversarial fine-tuning cost: TeCoA and FARE (PGD-10 inner attack) vs clean fine-tuning, per epoch.

On each shipped zoo model (default: both tiny CLIPs) and the same in-memory shapes-world training set, one epoch each of the
shared loop :func:`mmsec.train.adversarial.adversarial_finetune` with

- ``clean-ce``: TeCoA's loss (zero-shot cross-entropy against the frozen class text embeddings),
  no inner attack (``steps=0``): plain supervised fine-tuning of the image tower;
- ``tecoa``: the same loss with the L-inf PGD inner maximisation (``--steps``, default 10);
- ``clean-l2``: FARE's loss (squared L2 distance to the original embeddings), no inner attack;
- ``fare``: the same loss with the PGD inner maximisation.

Each run trains a fresh copy of the model for one epoch (``--n`` images, ``--batch-size``), so
the numbers are seconds per epoch. The four runs are interleaved within each of ``--repeats``
rounds; ratios (adversarial / clean with the same loss) are medians of the per-round ratios, so
load from other processes (the machine is shared) hits numerator and denominator alike.
Expected ratio: about ``steps + 1`` forward passes plus ``steps`` input-gradient backward
passes per step against one forward and one parameter backward, i.e. roughly 7-11x.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/adv_finetune_speed.py   # writes benchmarks/out/adv_finetune_speed.json
    .venv/bin/python benchmarks/adv_finetune_speed.py --models shapes-clip-vit --n 512 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

from _report import pin_threads

OUT = Path(__file__).resolve().parent / "out" / "adv_finetune_speed.json"
RUNS = ("clean-ce", "tecoa", "clean-l2", "fare")


def parse_eps(text: str) -> float:
    """'8/255' or '0.0314' -> float."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError) as err:
        raise argparse.ArgumentTypeError(f"eps must be a number or a fraction like 8/255, got {text!r}") from err


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["shapes-clip-resnet", "shapes-clip-vit"], help="zoo model names")
    p.add_argument("--checkpoint-dir", default=None, help="zoo checkpoint folder (default: the shipped ones)")
    p.add_argument("--n", type=int, default=1024, help="training images (one epoch)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eps", type=parse_eps, default=8 / 255, help="L-inf budget, e.g. 8/255")
    p.add_argument("--steps", type=int, default=10, help="inner PGD steps of the adversarial runs")
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--repeats", type=int, default=3, help="rounds; timings are medians")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    import torch
    from rich.console import Console
    from rich.table import Table

    from mmsec.data.datasets import ShapesDataset
    from mmsec.data.shapes import zeroshot_prompts
    from mmsec.defenses import image_tower_parameters, trainable_copy
    from mmsec.defenses.adversarial import fare_loss, tecoa_loss
    from mmsec.models.zeroshot import class_text_embeddings, embed_images
    from mmsec.train.adversarial import AdvTrainConfig, adversarial_finetune
    from mmsec.zoo import load_model

    prompts = zeroshot_prompts()

    def bench(name: str) -> tuple[list[dict], dict[str, list[dict]]]:
        model = load_model(name, checkpoint_dir=args.checkpoint_dir)
        data = ShapesDataset("train", n=args.n, image_size=model.image_size).to_data(quiet=True)
        pixels, labels = data.pixels, data.labels  # (N, 3, H, W), (N,)
        original = embed_images(model, pixels).float()  # (N, D)
        ce = tecoa_loss(class_text_embeddings(model, prompts), model.logit_scale)

        def run(kind: str, seed: int) -> dict:
            steps = args.steps if kind in ("tecoa", "fare") else 0
            loss_fn, targets = (ce, labels) if kind in ("clean-ce", "tecoa") else (fare_loss, original)
            clone = trainable_copy(model).eval()
            params = [p for _, p in image_tower_parameters(clone, pixels)]
            cfg = AdvTrainConfig(eps=args.eps, alpha=args.eps / 4, steps=steps, epochs=1,
                                 batch_size=args.batch_size, lr=args.lr, weight_decay=1e-4)
            log = adversarial_finetune(clone, params, pixels, targets, loss_fn, cfg,
                                       torch.Generator().manual_seed(seed), desc=kind, quiet=True)
            return {"seconds": log.epoch_seconds[0], "attack_seconds": log.attack_seconds, "steps": log.steps,
                    "final_loss": log.losses[-1]}

        run("clean-ce", 0)  # warm-up (allocator, kernels)
        results: dict[str, list[dict]] = {k: [] for k in RUNS}
        for r in range(args.repeats):
            for kind in RUNS:
                results[kind].append(run(kind, r))
        seconds = {k: [x["seconds"] for x in v] for k, v in results.items()}
        med = {k: statistics.median(v) for k, v in seconds.items()}
        images = args.n // args.batch_size * args.batch_size
        rows = []
        for adv, clean in (("tecoa", "clean-ce"), ("fare", "clean-l2")):
            rows.append({"model": name, "method": adv, "clean_baseline": clean,
                         "seconds_per_epoch": med[adv], "clean_seconds_per_epoch": med[clean],
                         "attack_fraction": statistics.median(x["attack_seconds"] / x["seconds"]
                                                              for x in results[adv]),
                         # median of per-round ratios: each round's runs are adjacent in time
                         "ratio_adv_over_clean": statistics.median(
                             a / b for a, b in zip(seconds[adv], seconds[clean], strict=True)),
                         "images_per_second": images / med[adv], "clean_images_per_second": images / med[clean]})
        return rows, results

    start = time.perf_counter()
    rows, runs = [], {}
    for name in args.models:
        model_rows, runs[name] = bench(name)
        rows += model_rows

    import psutil

    report = {
        "benchmark": "adv_finetune_speed", "models": args.models, "n": args.n, "batch_size": args.batch_size,
        "eps": args.eps, "alpha": args.eps / 4, "steps": args.steps, "repeats": args.repeats,
        "threads": args.threads, "rows": rows, "runs": runs, "total_seconds": time.perf_counter() - start,
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
        "machine": {"cpus": os.cpu_count(), "load_average": list(psutil.getloadavg()),
                    "platform": platform.platform()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    table = Table(title=f"Fine-tuning one epoch of {args.n} images (batch {args.batch_size}), "
                        f"PGD-{args.steps} at eps {args.eps * 255:g}/255, {args.threads} thread(s), "
                        f"median of {args.repeats}")
    for col in ("model", "method", "adv s/epoch", "clean s/epoch", "adv/clean", "inner attack share", "adv img/s",
                "clean img/s"):
        table.add_column(col, justify="right")
    for row in rows:
        table.add_row(row["model"], f"{row['method']} vs {row['clean_baseline']}", f"{row['seconds_per_epoch']:.2f}",
                      f"{row['clean_seconds_per_epoch']:.2f}", f"{row['ratio_adv_over_clean']:.2f}",
                      f"{row['attack_fraction']:.0%}", f"{row['images_per_second']:.0f}",
                      f"{row['clean_images_per_second']:.0f}")
    Console(width=150).print(table)
    return report


if __name__ == "__main__":
    main()
