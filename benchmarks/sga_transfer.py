"""SGA against Co-Attack and PGD in transfer: the source x target matrix of retrieval ASR on the zoo.

For each source model (default: the three zoo models shapes-clip-resnet, shapes-clip-vit,
shapes-albef), ``--n`` test scenes with their first caption, and each budget eps in ``--eps``
(/255), adversarial pairs are crafted on the source with

* ``pgd``: image-only PGD-10 (``CoAttack(mode="image")``, clean captions);
* ``co``: Co-Attack (``CoAttack(mode="co")``);
* ``sga``: SGA as in the paper's code (``SGA()``, caption set: the scene's 6 caption templates,
  the 5 most similar to the image kept; image set: scales 0.5, 0.75, 1.25, 1.5);
* ``sga_guided``: SGA with the words of the text attack ranked by the image-guided score
  (``SGA(importance="guided")``; a variant, not the paper's);

all with one typo per caption (``CharacterEdits``, meaning-preserving for a reader; the default
lexical neighbours turn a colour into another colour, which "breaks" retrieval trivially), and
scored on every target (the source itself gives the white-box number, marked ``*``): the attack
success rate at R@1, mean of TR and IR over the pairs retrieved right before the attack
(:func:`mmsec.evaluation.pair_retrieval.attack_success`). Also reported: uniform image noise of
the same budget (clean captions), the ASR of the adversarial images alone (with the clean
captions: how much of a transfer number the image perturbation carries), the words the text
attack changed, and the time per pair of each attack relative to PGD-10 on the same source and
batch.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/sga_transfer.py      # ~30 min on one thread
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "sga_transfer.json"
ZOO = ["shapes-clip-resnet", "shapes-clip-vit", "shapes-albef"]
ATTACKS = ("pgd", "co", "sga", "sga_guided")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sources", nargs="+", default=ZOO)
    p.add_argument("--targets", nargs="+", default=ZOO)
    p.add_argument("--attacks", nargs="+", default=list(ATTACKS), choices=ATTACKS)
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--eps", type=float, nargs="+", default=[2, 4], help="budgets in /255")
    p.add_argument("--seed", type=int, default=0)
    add_common_args(p, OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    import torch
    from rich.console import Console
    from rich.table import Table

    from mmsec.attacks.multimodal import SGA, CoAttack
    from mmsec.attacks.text import BertAttack, CharacterEdits
    from mmsec.data.shapes import ShapesWorld
    from mmsec.evaluation.pair_retrieval import attack_success, caption_positives, pair_retrieval
    from mmsec.zoo import load_model

    batch = ShapesWorld(image_size=32).batch("test", 0, args.n)
    pixels, sets = batch.pixels(), batch.captions
    captions = [c[0] for c in sets]
    positives = caption_positives(captions)
    models = {name: load_model(name) for name in dict.fromkeys(args.sources + args.targets)}
    clean = {t: pair_retrieval(models[t], pixels, captions, positives) for t in args.targets}

    def typos() -> BertAttack:
        return BertAttack(candidates=CharacterEdits())

    def craft(kind: str, eps: float, model):
        if kind in ("pgd", "co"):
            attack = CoAttack(eps=eps, mode="image" if kind == "pgd" else "co", text_attack=typos())
            return attack(model, pixels, captions, generator=args.seed)
        attack = SGA(eps=eps, text_attack=typos(), importance="guided" if kind == "sga_guided" else "kl")
        return attack(model, pixels, captions, generator=args.seed, caption_sets=sets)

    def scores(adv_pixels, adv_texts) -> dict[str, dict[str, float]]:
        return {t: attack_success(clean[t], pair_retrieval(models[t], adv_pixels, adv_texts, positives))
                for t in args.targets}

    rows = []
    for e in args.eps:
        gen = torch.Generator().manual_seed(args.seed)
        noisy = (pixels + (torch.rand(pixels.shape, generator=gen) * 2 - 1) * e / 255).clamp(0, 1)
        rows.append({"eps_255": e, "source": None, "attack": "noise", "seconds": 0.0,
                     "asr": {t: v["asr"] for t, v in scores(noisy, captions).items()}})
        for source in args.sources:
            model = models[source]
            for kind in args.attacks:
                start = time.perf_counter()
                result = craft(kind, e / 255, model)
                seconds = time.perf_counter() - start
                full = scores(result.adv_pixels, result.adv_texts)
                image_only = scores(result.adv_pixels, captions)
                changed = Counter(w for c in (result.text.changes if result.text else []) for _, w, _ in c)
                row = {"eps_255": e, "source": source, "attack": kind, "seconds": seconds,
                       "asr": {t: v["asr"] for t, v in full.items()}, "detail": full,
                       "asr_image_only": {t: v["asr"] for t, v in image_only.items()},
                       "words_changed": changed.most_common(10), "params": result.params,
                       "examples": [[c, a] for c, a in zip(captions[:3], result.adv_texts[:3], strict=True)]}
                rows.append(row)
                print(f"eps {e:g}/255 {source} {kind}: " + " ".join(f"{t} {v:.3f}" for t, v in row["asr"].items())
                      + f" ({seconds:.0f} s)", flush=True)
            pgd = next((r["seconds"] for r in rows if r["eps_255"] == e and r["source"] == source
                        and r["attack"] == "pgd"), None)
            for r in rows:
                if r["eps_255"] == e and r["source"] == source:
                    r["time_vs_pgd"] = r["seconds"] / pgd if pgd else None

    short = {t: t.removeprefix("shapes-") for t in args.targets}
    table = Table(title=f"Transfer retrieval ASR (mean of TR, IR at R@1) on {args.n} pairs; * = white-box; "
                        "in brackets: the adversarial images alone (clean captions)")
    for col in ("eps", "source", "attack", *[f"-> {short[t]}" for t in args.targets], "time/pair vs PGD-10"):
        table.add_column(col)
    for r in rows:
        cells = []
        for t in args.targets:
            mark = "*" if t == r["source"] else ""
            img = f" ({r['asr_image_only'][t]:.3f})" if "asr_image_only" in r and r["attack"] != "pgd" else ""
            cells.append(f"{r['asr'][t]:.3f}{mark}{img}")
        ratio = f"{r['time_vs_pgd']:.1f}" if r.get("time_vs_pgd") else "-"
        table.add_row(f"{r['eps_255']:g}/255", short.get(r["source"], r["source"] or "-"), r["attack"], *cells,
                      ratio)
    Console(width=200).print(table)
    report = {"benchmark": "sga_transfer", "n": args.n, "seed": args.seed, "sources": args.sources,
              "targets": args.targets, "rows": rows,
              "clean_r1": {t: {"i2t": c.i2t_r1, "t2i": c.t2i_r1} for t, c in clean.items()},
              "env": environment(args.threads)}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
