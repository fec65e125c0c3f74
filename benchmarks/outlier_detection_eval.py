"""Poisoned-sample detection by local outlier scores on a poisoned CLIP's training set (issue 7, item 4).

Attack: PBCL backdoor poisoning (:class:`~mmsec.attacks.backdoor.pbcl.PBCLBackdoor`) at 1% with
the library's patch trigger (4 x 4 checkerboard, bottom right), target "red circle".

Settings (``--settings``):

* ``finetune`` -- as ``recipes/backdoor.yaml``: each zoo CLIP (``--models``) fine-tuned on 4,096
  clean shapes-world train pairs (a quarter with a second object) plus the poisoned pairs
  appended (``mode="add"``: 41 pairs, 1% of the 4,137), 300 steps of 64, lr 2e-3, seed 0. The
  training set is those 4,137 pairs; it is embedded with the fine-tuned model.
* ``pretrain`` -- ``shapes-clip-resnet`` pre-trained from scratch by its zoo recipe on a
  poisoned stream (600 steps x 256 fresh scenes, 1% of the 153,600 positions poisoned). The
  stream is a pure function of the step, so the training set is rebuilt exactly afterwards by
  replaying the same poisoned stream (``attack.stream(caption_batches(...))``; its record is
  checked equal to the trained one) and every one of its 153,600 images is embedded with the
  trained model, step by step. Each image was seen once in training, as in the paper's
  one-pass-per-epoch regime; there are no repeated samples.

Detectors (:mod:`mmsec.defenses.detection`): k-dist, SLOF, LID, DAO with k = 16 on the image
embeddings, each in three variants: the paper's (random batches of 1,024, un-normalised
embeddings), whole-set neighbourhoods (exact search up to 50,000 points, faiss HNSW above) and
batches of 1,024 on L2-normalised embeddings. Baseline: the same poisoned training set embedded
with the zoo model *before* fine-tuning (it never saw the poison), paper variant only.

Metrics (:mod:`mmsec.evaluation.detection`) against ``PoisonRecord.poisoned_mask()``: AUROC and
TPR at 1% FPR. Context: zero-shot ASR and clean accuracy of the poisoned model on 1,000 test
scenes.

Acceptance (issue): AUROC >= 0.9 on patch-trigger poisoning at 1%.

Usage::

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/outlier_detection_eval.py          # ~15-25 min
    .venv/bin/python benchmarks/outlier_detection_eval.py --settings finetune --models shapes-clip-resnet
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "outlier_detection_eval.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--settings", nargs="+", default=["finetune", "pretrain"], choices=["finetune", "pretrain"])
    p.add_argument("--models", nargs="+", default=["shapes-clip-resnet", "shapes-clip-vit"])
    p.add_argument("--target", default="red circle")
    p.add_argument("--rate", type=float, default=0.01)
    p.add_argument("--pairs", type=int, default=4096)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--pretrain-recipe", default="shapes-clip-resnet")
    p.add_argument("--pretrain-steps", type=int, default=None, help="override the recipe's 600 steps (quick look)")
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-test", type=int, default=1000)
    add_common_args(p, OUT)
    return p.parse_args(argv)


def score_all(emb, mask, k: int, seed: int, variants: list[str]) -> list[dict]:
    """Every detector in every variant on embeddings ``emb`` (N, D) against ``mask`` (N,)."""
    import torch

    from mmsec.defenses.detection import DETECTORS
    from mmsec.evaluation.detection import detection_report

    rows = []
    for variant in variants:
        x = torch.nn.functional.normalize(emb, dim=1) if variant == "batch1024_l2" else emb
        batch = None if variant == "whole_set" else 1024
        for name, cls in DETECTORS.items():
            res = cls(k=k, batch_size=batch, seed=seed)(x)
            m = detection_report(res.scores, mask, 0.01)
            flagged = int(res.decisions.sum())
            rows.append({"variant": variant, "detector": name, "auroc": m.auroc, "tpr_at_1pct_fpr": m.tpr_at_fpr,
                         "flagged_top1pct": flagged, "flagged_poisoned": int((res.decisions & mask).sum()),
                         "seconds": res.seconds, "params": res.params})
    return rows


def backdoor_context(model, trigger, target: int, n_test: int, seed: int) -> dict:
    from mmsec.data.shapes import ShapesWorld
    from mmsec.evaluation.backdoor import zeroshot_asr

    test = ShapesWorld(32).batch("test", 0, n_test)
    s = zeroshot_asr(model, test.pixels(), test.labels, trigger, target, generator=seed)
    return {"zeroshot_asr": s.asr, "clean_accuracy": s.clean_accuracy}


def run_finetune(args, name: str) -> list[dict]:
    from mmsec.attacks.backdoor.pbcl import PBCLBackdoor
    from mmsec.data.datasets import ShapesDataset
    from mmsec.models.zeroshot import embed_images
    from mmsec.train.poisoned import finetune_pairs
    from mmsec.zoo import load_model

    model = load_model(name)
    clean = ShapesDataset("train", n=args.pairs, image_size=32, second_object_prob=0.25, seed=0).to_data(quiet=True)
    attack = PBCLBackdoor(target=args.target, rate=args.rate, seed=args.seed)
    poisoned = attack(clean)  # what poisoned_finetune does, kept so the training set can be embedded
    run = finetune_pairs(model, poisoned.data, args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         desc="poisoned fine-tuning")
    record, mask = poisoned.record, poisoned.record.poisoned_mask()
    ctx = backdoor_context(run.model, attack.trigger, record.target_label, args.n_test, args.seed)
    print(f"{name} fine-tuned in {run.log.seconds:.0f} s on {record.n_total} pairs ({record.n_poisoned} poisoned): "
          f"ZS ASR {ctx['zeroshot_asr']:.3f}, clean acc {ctx['clean_accuracy']:.3f}", flush=True)
    rows = []
    for which, m in (("poisoned model", run.model), ("zoo model (never saw the poison)", model)):
        emb = embed_images(m, poisoned.data.pixels).float()  # (N, D)
        variants = ["batch1024", "whole_set", "batch1024_l2"] if which == "poisoned model" else ["batch1024"]
        for r in score_all(emb, mask, args.k, args.seed, variants):
            rows.append({"setting": "finetune", "model": name, "embedded_by": which, "n": record.n_total,
                         "n_poisoned": record.n_poisoned, "train_seconds": run.log.seconds, **ctx, **r})
    return rows


def run_pretrain(args) -> list[dict]:
    import torch

    from mmsec.attacks.backdoor.pbcl import PBCLBackdoor
    from mmsec.train.poisoned import pretrain_poisoned
    from mmsec.zoo import load_recipe
    from mmsec.zoo.train import caption_batches, recipe_start

    attack = PBCLBackdoor(target=args.target, rate=args.rate, seed=args.seed)
    run = pretrain_poisoned(attack, recipe=args.pretrain_recipe, steps=args.pretrain_steps, quiet=False)
    record = run.record
    ctx = backdoor_context(run.model, attack.trigger, record.target_label, args.n_test, args.seed)
    print(f"pre-trained {args.pretrain_recipe} in {run.log.seconds:.0f} s on {record.n_total} pairs "
          f"({record.n_poisoned} poisoned): ZS ASR {ctx['zeroshot_asr']:.3f}, "
          f"clean acc {ctx['clean_accuracy']:.3f}", flush=True)
    # replay the identical poisoned stream (a pure function of the step) and embed every training image
    spec = load_recipe(args.pretrain_recipe)
    start = recipe_start(spec, args.pretrain_recipe, args.pretrain_steps)
    replay = attack.stream(caption_batches(start.world, start.batch_size, start.seed), start.train["steps"],
                           start.batch_size)
    if replay.record != record:
        raise RuntimeError("the replayed stream's poison record differs from the trained one")
    t0 = time.perf_counter()
    with torch.no_grad():
        emb = torch.cat([run.model.encode_image(replay(step)[0]) for step in range(replay.steps)]).float()
    print(f"embedded the {emb.shape[0]} training images in {time.perf_counter() - t0:.0f} s", flush=True)
    mask = record.poisoned_mask()
    return [{"setting": "pretrain", "model": args.pretrain_recipe, "embedded_by": "poisoned model",
             "n": record.n_total, "n_poisoned": record.n_poisoned, "train_seconds": run.log.seconds, **ctx, **r}
            for r in score_all(emb, mask, args.k, args.seed, ["batch1024", "whole_set", "batch1024_l2"])]


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    try:
        import faiss

        faiss.omp_set_num_threads(args.threads)
    except ImportError:
        pass
    t_start = time.perf_counter()
    rows = []
    if "finetune" in args.settings:
        for name in args.models:
            rows += run_finetune(args, name)
    if "pretrain" in args.settings:
        rows += run_pretrain(args)

    table = Table(title=f"PBCL patch-trigger poisoning at {100 * args.rate:g}% (target {args.target!r}); "
                        f"local outlier scores on the training images' embeddings, k={args.k}")
    for col in ["setting", "model", "embedded by", "N (poisoned)", "ZS ASR", "variant", "detector", "AUROC",
                "TPR@1%FPR", "poisoned in top 1%"]:
        table.add_column(col)
    for r in rows:
        table.add_row(r["setting"], r["model"], r["embedded_by"], f"{r['n']} ({r['n_poisoned']})",
                      f"{r['zeroshot_asr']:.3f}", r["variant"], r["detector"], f"{r['auroc']:.3f}",
                      f"{r['tpr_at_1pct_fpr']:.3f}", f"{r['flagged_poisoned']}/{r['flagged_top1pct']}")
    Console(width=220).print(table)
    verdicts = {}
    for r in rows:
        if r["embedded_by"] == "poisoned model" and r["variant"] == "batch1024":
            key = f"{r['setting']}/{r['model']}/{r['detector']}"
            verdicts[key] = f"{'met' if r['auroc'] >= 0.9 else 'NOT met'} (AUROC {r['auroc']:.3f})"
    for key, v in verdicts.items():
        print(f"acceptance (AUROC >= 0.9, paper variant) {key}: {v}")
    report = {"benchmark": "outlier_detection_eval",
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "rows": rows, "acceptance": verdicts, "seconds": time.perf_counter() - t_start,
              "env": environment(args.threads)}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
