"""APGD / Square strength check: mmsec vs torchattacks, and the robust-evaluation protocol's numbers.

On a shipped zoo model and a fixed batch of shapes-world test images (zero-shot over 48
classes), for each L-inf eps:

(a) robust accuracy under PGD-10 (alpha = eps/4), APGD-CE (``--steps``, default 100, the paper's),
    APGD-DLR, Square (``--queries``, default 1000), uniform noise, and the ``fast`` and
    ``standard`` ensembles of :func:`mmsec.evaluation.robust_accuracy`, with wall times;
(b) the same APGD-CE and Square through torchattacks (``torchattacks.APGD``, ``torchattacks.Square``,
    the classifier wrapped as an ``nn.Module`` returning logits; p_init 0.8, rescaled schedule):
    their robust accuracies should be within a couple of points of mmsec's (different random
    draws, and torchattacks' APGD follows AutoAttack's code where mmsec follows the paper, see
    ``mmsec/attacks/adversarial/apgd.py``);
(c) :func:`mmsec.evaluation.gradient_masking_checks` with the ``standard`` ensemble at the first
    eps (``--checks-eps``), and on a gradient-masked copy of the model (input rounded to 16 levels).

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/apgd_check.py            # writes benchmarks/out/apgd_check.json
    .venv/bin/python benchmarks/apgd_check.py --n 100 --eps 8/255 --no-torchattacks --no-checks
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from fractions import Fraction
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "apgd_check.json"


def parse_eps(text: str) -> float:
    """'8/255' or '0.0314' -> float."""
    try:
        return float(Fraction(text))
    except (ValueError, ZeroDivisionError) as err:
        raise argparse.ArgumentTypeError(f"eps must be a number or a fraction like 8/255, got {text!r}") from err


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="shapes-clip-resnet", help="zoo model name")
    p.add_argument("--n", type=int, default=200, help="test images")
    p.add_argument("--eps", type=parse_eps, nargs="+", default=[4 / 255, 8 / 255], help="L-inf budgets")
    p.add_argument("--steps", type=int, default=100, help="APGD iterations")
    p.add_argument("--queries", type=int, default=1000, help="Square query budget")
    p.add_argument("--checks-eps", type=parse_eps, default=4 / 255, help="eps of the gradient-masking checks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-torchattacks", action="store_true")
    p.add_argument("--no-checks", action="store_true")
    p.add_argument("--out", type=Path, default=OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("MMSEC_QUIET", "1")
    import torch

    torch.set_num_threads(args.threads)
    from mmsec.attacks import PGD, UniformNoise, ZeroShotObjective
    from mmsec.attacks.adversarial import APGD, SquareAttack
    from mmsec.data.shapes import ShapesWorld, zeroshot_prompts
    from mmsec.evaluation import gradient_masking_checks, robust_accuracy
    from mmsec.zoo import load_model

    model = load_model(args.model)
    objective = ZeroShotObjective(model, zeroshot_prompts())
    batch = ShapesWorld(32).batch("test", 0, args.n)
    pixels, labels = batch.pixels(), batch.labels

    def timed(fn):
        t0 = time.perf_counter()
        acc = fn()
        return {"robust_accuracy": round(float(acc), 4), "seconds": round(time.perf_counter() - t0, 2)}

    def acc_of(attack):
        return lambda: 1.0 - attack(objective, pixels, labels, generator=args.seed).success_rate

    rows = []
    for eps in args.eps:
        row = {"eps": eps, "eps_255": round(eps * 255, 3)}
        row["noise"] = timed(acc_of(UniformNoise(eps=eps)))
        row["pgd-10"] = timed(acc_of(PGD(eps=eps, alpha=eps / 4, steps=10)))
        row[f"apgd-ce-{args.steps}"] = timed(acc_of(APGD(eps=eps, steps=args.steps)))
        row[f"apgd-dlr-{args.steps}"] = timed(acc_of(APGD(eps=eps, steps=args.steps, loss="dlr")))
        row[f"square-{args.queries}"] = timed(acc_of(SquareAttack(eps=eps, n_queries=args.queries)))
        for preset in ("fast", "standard"):
            t0 = time.perf_counter()
            res = robust_accuracy(objective, pixels, labels, eps, attacks=preset, generator=args.seed)
            row[f"ensemble-{preset}"] = {"robust_accuracy": round(res.robust_accuracy, 4),
                                         "after": {k: round(v, 4) for k, v in res.accuracies().items()},
                                         "seconds": round(time.perf_counter() - t0, 2)}
        if not args.no_torchattacks:
            import torchattacks

            class Logits(torch.nn.Module):
                def forward(self, x):
                    return objective.logits(x)

            net = Logits().eval()

            def theirs(attack):
                def run():
                    adv = attack(pixels, labels)
                    return (objective.predict(adv) == labels).float().mean().item()
                return run

            row[f"torchattacks-apgd-ce-{args.steps}"] = timed(theirs(torchattacks.APGD(
                net, norm="Linf", eps=eps, steps=args.steps, n_restarts=1, seed=args.seed, loss="ce")))
            row[f"torchattacks-square-{args.queries}"] = timed(theirs(torchattacks.Square(
                net, norm="Linf", eps=eps, n_queries=args.queries, p_init=0.8, seed=args.seed)))
        rows.append(row)
        print(f"eps {row['eps_255']}/255: " + ", ".join(
            f"{k} {v['robust_accuracy']:.3f} ({v['seconds']:.0f} s)" for k, v in row.items() if isinstance(v, dict)),
            flush=True)

    checks = {}
    if not args.no_checks:
        class RoundedInput(torch.nn.Module):
            """Input rounded to 16 levels before the image tower: a zero-gradient 'defence'."""

            def __init__(self, inner):
                super().__init__()
                self.inner, self.image_size = inner, inner.image_size

            def tokenize(self, texts):
                return self.inner.tokenize(texts)

            def normalize(self, p):
                return self.inner.normalize(p)

            def encode_text(self, tokens):
                return self.inner.encode_text(tokens)

            @property
            def logit_scale(self):
                return self.inner.logit_scale

            def encode_image(self, p):
                return self.inner.encode_image(torch.round(p * 15) / 15)

        masked = ZeroShotObjective(RoundedInput(model).eval(), zeroshot_prompts())
        for name, obj in (("undefended", objective), ("rounded-input", masked)):
            t0 = time.perf_counter()
            report = gradient_masking_checks(obj, pixels, labels, args.checks_eps, attacks="standard",
                                             generator=args.seed, square_queries=args.queries)
            checks[name] = {"passed": report.passed, "failed": report.failed,
                            "checks": {k: {"value": round(c.value, 4), "threshold": c.threshold, "passed": c.passed}
                                       for k, c in report.checks.items()},
                            "accuracy_by_eps": {f"{e * 255:.3g}/255": round(a, 4)
                                                for e, a in sorted(report.accuracy_by_eps.items())},
                            "seconds": round(time.perf_counter() - t0, 1)}
            print(f"{name}:\n{report.summary()}", flush=True)

    out = {"benchmark": "apgd_check", "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "machine": platform.platform(), "torch": torch.__version__, "threads": args.threads,
           "model": args.model, "n": args.n, "seed": args.seed, "apgd_steps": args.steps,
           "square_queries": args.queries, "rows": rows, "checks_eps": args.checks_eps, "checks": checks}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
