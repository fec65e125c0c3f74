"""VILLA on the zoo's fusion model: clean utility and embedding-space robustness, against plain fine-tuning.

Four models, all evaluated the same way:

* ``zoo``: shapes-albef as shipped;
* ``finetune``: the same fine-tuning as VILLA without the adversary (``VILLA(adv_steps=1)``: the
  one step has a zero perturbation and a zero KL term; same data, loss, optimiser, seed);
* ``villa``: VILLA at the paper's defaults for the adversary (K = 3, adv_lr 1e-3 for both
  modalities, alpha = 1.5, unbounded, both modalities one at a time);
* ``villa-scaled``: VILLA with the adversary's step scaled to the tiny model's embeddings
  (``--scaled-lr-img`` / ``--scaled-lr-txt``, default 1.0 / 0.5, ~2% of the mean per-example
  norm of the image tokens (~45) and of the word embeddings (~23) per step).

Training (all three): ``--n-train`` shapes-world train images (each epoch pairs every image with
one of its captions), ``--epochs`` x batches of ``--batch-size``, AdamW lr ``--lr`` (10% warm-up,
cosine), seed 0. Evaluation on ``--n-test`` test scenes: each scene's first caption (match) and
its attribute-edited false caption (no match) -- ITM accuracy, clean and under FusedEmbeddingPGD
(10 steps, relative L2 radius 2%, 5%, 10%, image tokens or word embeddings); ITC retrieval
i2t / t2i R@1 and zero-shot top-1 (1,000 images) to show the clean cost; training seconds and the
per-step cost of VILLA relative to plain fine-tuning.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/villa_eval.py             # ~20 min on one thread
    .venv/bin/python benchmarks/villa_eval.py --n-train 512 --epochs 1 --n-test 128   # quick look
"""

from __future__ import annotations

import argparse
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "villa_eval.json"
EPS = (0.02, 0.05, 0.10)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-train", type=int, default=4096)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--scaled-lr-img", type=float, default=1.0)
    p.add_argument("--scaled-lr-txt", type=float, default=0.5)
    p.add_argument("--n-test", type=int, default=500)
    add_common_args(p, OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    import torch
    from rich.console import Console
    from rich.table import Table

    from mmsec.data.datasets import ShapesDataset
    from mmsec.data.shapes import ShapesWorld
    from mmsec.defenses import VILLA
    from mmsec.evaluation import itm_accuracy, itm_embedding_robustness, shapes_itm_pairs
    from mmsec.zoo import load_model
    from mmsec.zoo.evaluate import retrieval, zeroshot_accuracy

    zoo = load_model("shapes-albef")
    train = ShapesDataset("train", n=args.n_train, image_size=32).to_data(quiet=True)
    pairs = shapes_itm_pairs("test", n=args.n_test)
    world = ShapesWorld(image_size=32)
    common = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    variants = {"finetune": dict(adv_steps=1), "villa": {},
                "villa-scaled": dict(adv_lr_img=args.scaled_lr_img, adv_lr_txt=args.scaled_lr_txt)}

    models, train_info = {"zoo": zoo}, {"zoo": None}
    for name, kw in variants.items():
        result = VILLA(**common, **kw)(zoo, train, generator=torch.Generator().manual_seed(0))
        models[name] = result.model
        train_info[name] = {"params": {k: (list(v) if isinstance(v, tuple) else v) for k, v in result.params.items()},
                            "seconds": result.seconds, "steps": result.steps,
                            "first_loss": result.losses[0], "last_loss": result.losses[-1]}

    rows = {}
    for name, model in models.items():
        row = {"itm_clean": itm_accuracy(model, pairs), "robust": {}}
        for eps in EPS:
            row["robust"][str(eps)] = itm_embedding_robustness(model, pairs, eps)
        row.update(retrieval(model, world, 1000))
        row.update(zeroshot_accuracy(model, world, 1000))
        row["train"] = train_info[name]
        rows[name] = row

    table = Table(title=f"VILLA on shapes-albef ({len(pairs.captions)} ITM pairs; robust = image / text)")
    for col in ["model", "ITM clean", *[f"rob {e:.0%}" for e in EPS], "i2t R@1", "t2i R@1", "zero-shot",
                "train s", "s/step"]:
        table.add_column(col)
    for name, r in rows.items():
        t = r["train"]
        table.add_row(name, f"{r['itm_clean']:.3f}",
                      *[f"{r['robust'][str(e)]['image']:.3f} / {r['robust'][str(e)]['text']:.3f}" for e in EPS],
                      f"{r['i2t_r1']:.3f}", f"{r['t2i_r1']:.3f}", f"{r['zeroshot_top1']:.3f}",
                      "-" if t is None else f"{t['seconds']:.0f}", "-" if t is None else f"{t['seconds'] / t['steps']:.2f}")
    Console(width=180).print(table)
    base = train_info["finetune"]["seconds"] / train_info["finetune"]["steps"]
    cost = {k: train_info[k]["seconds"] / train_info[k]["steps"] / base for k in ("villa", "villa-scaled")}
    print("time per step relative to plain fine-tuning: " + ", ".join(f"{k} {v:.2f}x" for k, v in cost.items()))
    report = {"benchmark": "villa_eval", "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "eps_relative": list(EPS), "itm_pairs": len(pairs.captions), "rows": rows,
              "step_cost_vs_finetune": cost,
              "env": environment(args.threads)}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
