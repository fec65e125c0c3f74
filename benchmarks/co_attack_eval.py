"""Co-Attack against its own ablations (image only, text only, both independently) on the zoo models.

For each model (default: the fusion model shapes-albef and the two tiny CLIPs), ``--n`` test
scenes with their first caption, image-text retrieval of the pairs (fusion: ITC top-16 re-ranked
by ITM; CLIPs: cosine), and for each budget eps in ``--eps`` (/255) and each candidate set of the
text attack:

* ``typos``: one character edit per caption (meaning-preserving for a reader);
* ``default``: the shapes-world lexical neighbours, then typos (``Candidates.shapes_default()``):
  a neighbour of a colour is another colour, so the "adversarial" caption often describes a
  different scene; reported to show why that number is not a robustness measurement.

it reports the attack success rate (mean of TR and IR ASR at R@1 over the pairs retrieved right
before the attack) of the four modes and the time per pair of each mode relative to the
image-only mode (a 10-step PGD on the same model and batch). The issue's claim is read at the
smallest eps where image-only PGD succeeds on less than 60% of the fusion model's pairs.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/co_attack_eval.py      # ~25 min on one thread
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "co_attack_eval.json"
MODES = ("image", "text", "both", "co")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["shapes-albef", "shapes-clip-resnet", "shapes-clip-vit"])
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--eps", type=float, nargs="+", default=[2, 4, 8], help="budgets in /255")
    p.add_argument("--candidates", nargs="+", default=["typos", "default"], choices=["typos", "default"])
    p.add_argument("--default-candidates-models", nargs="+", default=["shapes-albef"],
                   help="models also run with the default (lexical) candidates")
    add_common_args(p, OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from mmsec.attacks.multimodal import CoAttack
    from mmsec.attacks.text import BertAttack, Candidates, CharacterEdits
    from mmsec.data.shapes import ShapesWorld
    from mmsec.evaluation.pair_retrieval import attack_success, caption_positives, pair_retrieval
    from mmsec.zoo import load_model

    batch = ShapesWorld(image_size=32).batch("test", 0, args.n)
    pixels, captions = batch.pixels(), [c[0] for c in batch.captions]
    positives = caption_positives(captions)
    generators = {"typos": CharacterEdits, "default": Candidates.shapes_default}
    rows = []
    table = Table(title=f"Co-Attack and ablations: retrieval ASR (mean of TR, IR) on {args.n} pairs")
    for col in ("model", "candidates", "eps", *MODES, "co - max(image, text)", "time/pair vs image-only"):
        table.add_column(col)
    for name in args.models:
        model = load_model(name)
        clean = pair_retrieval(model, pixels, captions, positives)
        for cand in args.candidates:
            if cand == "default" and name not in args.default_candidates_models:
                continue
            for e in args.eps:
                row = {"model": name, "candidates": cand, "eps_255": e, "clean_i2t_r1": clean.i2t_r1,
                       "clean_t2i_r1": clean.t2i_r1, "modes": {}}
                for mode in MODES:
                    attack = CoAttack(eps=e / 255, mode=mode, text_attack=BertAttack(candidates=generators[cand]()))
                    start = time.perf_counter()
                    result = attack(model, pixels, captions, generator=0)
                    seconds = time.perf_counter() - start
                    adv = pair_retrieval(model, result.adv_pixels, result.adv_texts, positives)
                    row["modes"][mode] = dict(attack_success(clean, adv), seconds=seconds,
                                              examples=[[c, a] for c, a in zip(captions[:3], result.adv_texts[:3], strict=True)])
                    print(f"{name} {cand} eps {e:g}/255 {mode}: ASR {row['modes'][mode]['asr']:.3f} "
                          f"({seconds:.0f} s)", flush=True)
                m = row["modes"]
                row["co_margin"] = m["co"]["asr"] - max(m["image"]["asr"], m["text"]["asr"])
                base = m["image"]["seconds"]
                row["time_vs_image_only"] = {k: v["seconds"] / base for k, v in m.items()}
                rows.append(row)
                table.add_row(name, cand, f"{e:g}/255", *[f"{m[k]['asr']:.3f}" for k in MODES],
                              f"{row['co_margin']:+.3f}",
                              " ".join(f"{k} {v:.1f}" for k, v in row["time_vs_image_only"].items()))
    Console(width=200).print(table)
    report = {"benchmark": "co_attack_eval", "n": args.n, "rows": rows,
              "env": environment(args.threads)}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
