"""PGD speed and agreement benchmark: mmsec vs plain forward+backward passes, torchattacks and ART.

On a shipped zoo model and a fixed batch of shapes-world test images, for each eps:

(a) time of mmsec's PGD-10 (L-inf, random start, alpha = eps / 4) over the time of 10 plain
    forward+backward passes of the zero-shot logits w.r.t. the input (same model, same batch).
    Goal: <= 1.10 (PGD costs one forward+backward per step, plus one forward for the verdict).
(b) the same PGD through torchattacks (``torchattacks.PGD``) and ART (``ProjectedGradientDescent``
    on a ``PyTorchClassifier``, clip_values (0, 1), num_random_init=1, eps_step=alpha,
    max_iter=10): robust accuracy of each (mean over repeats; mmsec should be within 1 point of
    theirs) and time ratios mmsec/torchattacks and mmsec/ART.

Timings are medians over ``--repeats`` rounds; within a round the methods run interleaved, and
ratios are medians of the per-round ratios, so drift in the machine's load (it is shared) hits
numerator and denominator alike. Torch is pinned to ``--threads`` (1).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/pgd_speed.py            # writes benchmarks/out/pgd_speed.json
    .venv/bin/python benchmarks/pgd_speed.py --eps 8/255 4/255 --repeats 7 --no-art
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

OUT = Path(__file__).resolve().parent / "out" / "pgd_speed.json"


def parse_eps(text: str) -> float:
    """'8/255' or '0.0314' -> float."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError) as err:
        raise argparse.ArgumentTypeError(f"eps must be a number or a fraction like 8/255, got {text!r}") from err


def paired(num: list[float], den: list[float]) -> float:
    """Median over rounds of num[r] / den[r]."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="shapes-clip-resnet", help="zoo model name")
    p.add_argument("--checkpoint-dir", default=None, help="zoo checkpoint folder (default: the shipped ones)")
    p.add_argument("--n", type=int, default=256, help="batch size (test images)")
    p.add_argument("--eps", type=parse_eps, nargs="+", default=[8 / 255], help="L-inf budgets, e.g. 8/255 4/255")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--repeats", type=int, default=5, help="rounds; timings are medians")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--no-torchattacks", action="store_true")
    p.add_argument("--no-art", action="store_true")
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    import numpy as np
    import torch
    import torch.nn.functional as F
    from rich.console import Console
    from rich.table import Table

    from mmsec.attacks import PGD, ZeroShotObjective
    from mmsec.data.shapes import ShapesWorld, zeroshot_prompts
    from mmsec.zoo import load_model

    model = load_model(args.model, checkpoint_dir=args.checkpoint_dir)
    batch = ShapesWorld(image_size=model.image_size).batch("test", 0, args.n)
    x, y = batch.pixels(), batch.labels  # (N, 3, H, W), (N,)
    objective = ZeroShotObjective(model, zeroshot_prompts())
    classifier = objective.classifier

    class ZeroShotLogits(torch.nn.Module):
        """The zero-shot classifier as an nn.Module returning logits (what torchattacks and ART expect)."""

        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("class_embeddings", classifier.class_embeddings)

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            img = F.normalize(self.model.encode_image(pixels).float(), dim=-1)
            return self.model.logit_scale.detach() * img @ self.class_embeddings.T  # (N, C)

    net = ZeroShotLogits().eval()

    @torch.no_grad()
    def accuracy(pixels: torch.Tensor) -> float:
        return (net(pixels).argmax(1) == y).float().mean().item()

    def plain_passes() -> None:
        for _ in range(args.steps):
            xi = x.detach().requires_grad_(True)
            loss = F.cross_entropy(classifier.logits(xi), y, reduction="sum")
            torch.autograd.grad(loss, xi)

    def timed(fn):
        start = time.perf_counter()
        out = fn()
        return time.perf_counter() - start, out

    clean_acc = accuracy(x)
    plain_passes()  # warm-up (allocator, kernels)
    rows = []
    for eps in args.eps:
        alpha = eps / 4  # Madry et al.'s 2.5 * eps / steps for 10 steps
        runners = {"mmsec": lambda r, eps=eps, alpha=alpha: PGD(eps=eps, alpha=alpha, steps=args.steps)(
            objective, x, y, generator=r).adv_pixels}
        if not args.no_torchattacks:
            import torchattacks

            ta = torchattacks.PGD(net, eps=eps, alpha=alpha, steps=args.steps, random_start=True)

            def run_ta(r: int, ta=ta):
                torch.manual_seed(r)
                return ta(x, y)

            runners["torchattacks"] = run_ta
        if not args.no_art:
            from art.attacks.evasion import ProjectedGradientDescent
            from art.estimators.classification import PyTorchClassifier

            art_clf = PyTorchClassifier(model=net, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                        nb_classes=classifier.num_classes, clip_values=(0.0, 1.0),
                                        device_type="cpu")
            art_pgd = ProjectedGradientDescent(art_clf, norm=np.inf, eps=eps, eps_step=alpha, max_iter=args.steps,
                                               num_random_init=1, batch_size=args.n, verbose=False)
            x_np, y_np = x.numpy(), y.numpy()

            def run_art(r: int, art_pgd=art_pgd, x_np=x_np, y_np=y_np):
                np.random.seed(r)  # ART draws its random start from numpy's global RNG
                return torch.from_numpy(art_pgd.generate(x_np, y_np))

            runners["art"] = run_art

        times: dict[str, list[float]] = {k: [] for k in ["plain"] + list(runners)}
        accs: dict[str, list[float]] = {k: [] for k in runners}
        for r in range(args.repeats):
            times["plain"].append(timed(plain_passes)[0])
            for name, run in runners.items():
                seconds, adv = timed(lambda run=run, r=r: run(r))
                times[name].append(seconds)
                linf = (adv - x).abs().amax().item()
                if linf > eps + 1e-5 or adv.min() < 0 or adv.max() > 1:
                    raise RuntimeError(f"{name} left the budget: linf {linf} > eps {eps}")
                accs[name].append(accuracy(adv))
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {
            "eps": eps, "eps_255": round(eps * 255, 3), "alpha": alpha, "steps": args.steps,
            "median_seconds": med, "all_seconds": times,
            "robust_accuracy": {k: statistics.fmean(v) for k, v in accs.items()},
            "robust_accuracy_per_repeat": accs,
            # Median of the per-round ratios: each round's timings are adjacent in time, so a burst
            # of load from other processes cancels out of the ratio.
            "ratio_pgd_over_plain": paired(times["mmsec"], times["plain"]),
            "ratio_of_medians_pgd_over_plain": med["mmsec"] / med["plain"],
        }
        for other in ("torchattacks", "art"):
            if other in med:
                row[f"ratio_mmsec_over_{other}"] = paired(times["mmsec"], times[other])
                row[f"accuracy_gap_points_vs_{other}"] = 100 * (row["robust_accuracy"]["mmsec"]
                                                                - row["robust_accuracy"][other])
        rows.append(row)

    import psutil

    versions = {"torch": torch.__version__, "python": platform.python_version()}
    for mod in ("torchattacks", "art"):
        try:
            versions[mod] = __import__(mod).__version__
        except ImportError:
            pass
    report = {
        "benchmark": "pgd_speed", "model": args.model, "n": args.n, "repeats": args.repeats,
        "threads": args.threads, "clean_accuracy": clean_acc, "goal_ratio_pgd_over_plain": 1.10,
        "rows": rows, "versions": versions,
        "machine": {"cpus": os.cpu_count(), "load_average": list(psutil.getloadavg()),
                    "platform": platform.platform()},
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))

    table = Table(title=f"PGD-{args.steps} L-inf on {args.model}, {args.n} images, {args.threads} thread(s), "
                        f"median of {args.repeats}; clean acc {clean_acc:.3f}")
    for col in ("eps", "plain 10 f+b (s)", "mmsec (s)", "mmsec/plain", "torchattacks (s)", "mmsec/ta",
                "ART (s)", "mmsec/ART", "robust acc mmsec / ta / ART"):
        table.add_column(col, justify="right")
    def seconds(row: dict, k: str) -> str:
        return f"{row['median_seconds'][k]:.3f}" if k in row["median_seconds"] else "-"

    def ratio(row: dict, k: str) -> str:
        return f"{row[f'ratio_mmsec_over_{k}']:.2f}" if f"ratio_mmsec_over_{k}" in row else "-"

    for row in rows:
        acc = row["robust_accuracy"]
        table.add_row(f"{row['eps_255']:g}/255", seconds(row, "plain"), seconds(row, "mmsec"),
                      f"{row['ratio_pgd_over_plain']:.3f}", seconds(row, "torchattacks"), ratio(row, "torchattacks"),
                      seconds(row, "art"), ratio(row, "art"),
                      " / ".join(f"{acc[k]:.3f}" if k in acc else "-" for k in ("mmsec", "torchattacks", "art")))
    console = Console(width=160)
    console.print(table)
    console.print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main()
