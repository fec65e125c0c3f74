"""Outlier scores on 1,000,000 synthetic 512-d embeddings: faiss HNSW vs exact kNN (issue 7, item 9).

Data (seeded, ``--seed``): ``--clusters`` clusters, each a random centre plus a random
``--intrinsic``-dimensional linear subspace (per-direction scales uniform in [0.5, 1] x
``--spread``) plus isotropic noise (``--noise``), then every row L2-normalised (CLIP-like
embeddings: low intrinsic dimension, unit norm). ``--outliers`` planted outliers: a random
cluster's centre plus isotropic noise of the cluster's total spread (off the cluster's subspace),
then normalised. Sizes are equal in expectation (cluster of each point uniform).

Measured in one run, one thread:

* ANN: faiss ``IndexHNSWFlat`` (M=32, efConstruction=64, efSearch=128: the library defaults of
  :class:`~mmsec.defenses.detection.neighbors.FaissHNSW`, fixed before this benchmark was run)
  built over all points (build time reported separately), then the k=16 neighbours of *every*
  point (self excluded): ANN time per query = that pass / N.
* exact: brute force (torch matrix products in chunks) for ``--n-exact`` random query points
  against all N points: exact time per query = that pass / n_exact.
* recall@k of the ANN neighbours vs the exact ones on those queries; speed-up = exact time per
  query / ANN time per query (search only; with the build amortised over N queries also given).
* outlier-score agreement on the subset: Spearman correlation of k-dist and LID (which need only
  the query's own neighbours) from ANN vs exact neighbours, and their relative error.
* detection of the planted outliers over all N points from the ANN graph: AUROC and TPR@1%FPR of
  k-dist, SLOF, LID, DAO (whole-set neighbourhoods, not the paper's batches of 1,024).
* an efSearch sweep on the subset (recall and time per query), for context, after the headline.
* peak resident memory (``ru_maxrss``) after each stage.

Acceptance (issue): recall >= 0.95 at a speed-up >= 10x over exact search at 1M points.

Usage::

    OMP_NUM_THREADS=1 nice .venv/bin/python benchmarks/outlier_ann.py   # 27 min, 5.6 GB peak (shared 2-core box)
    .venv/bin/python benchmarks/outlier_ann.py --n 100000 --n-exact 500           # quick look
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from pathlib import Path

from _report import add_common_args, environment, write_report

OUT = Path(__file__).resolve().parent / "out" / "outlier_ann.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--clusters", type=int, default=1000)
    p.add_argument("--intrinsic", type=int, default=16)
    p.add_argument("--spread", type=float, default=0.25)
    p.add_argument("--noise", type=float, default=0.01, help="isotropic noise std per coordinate")
    p.add_argument("--outliers", type=int, default=1000)
    p.add_argument("--k", type=int, default=16)
    p.add_argument("--n-exact", type=int, default=1000)
    p.add_argument("--m", type=int, default=32)
    p.add_argument("--ef-construction", type=int, default=64)
    p.add_argument("--ef-search", type=int, default=128)
    p.add_argument("--sweep", type=int, nargs="*", default=[16, 32, 64, 256])
    p.add_argument("--seed", type=int, default=0)
    add_common_args(p, OUT)
    return p.parse_args(argv)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def synthetic(args, np):
    """(N, D) float32 unit rows and the (N,) bool mask of planted outliers."""
    rng = np.random.default_rng(args.seed)
    n, d = args.n, args.dim
    x = np.empty((n, d), dtype=np.float32)
    mask = np.zeros(n, dtype=bool)
    out_rows = rng.choice(n, size=args.outliers, replace=False)
    mask[out_rows] = True
    inliers = np.flatnonzero(~mask)
    labels = rng.integers(0, args.clusters, size=inliers.size)
    centres = rng.standard_normal((args.clusters, d)).astype(np.float32) / np.sqrt(d)  # ~unit norm
    total = args.spread * np.sqrt(0.75 * args.intrinsic / d)  # per-coordinate std of a cluster, roughly
    for c in range(args.clusters):
        rows = inliers[labels == c]
        basis, _ = np.linalg.qr(rng.standard_normal((d, args.intrinsic)))  # (D, m) orthonormal
        scales = args.spread * rng.uniform(0.5, 1.0, size=args.intrinsic) / np.sqrt(args.intrinsic)
        z = rng.standard_normal((rows.size, args.intrinsic)) * scales  # (n_c, m)
        x[rows] = centres[c] + z @ basis.T + args.noise * rng.standard_normal((rows.size, d))
    oc = rng.integers(0, args.clusters, size=args.outliers)
    x[out_rows] = centres[oc] + total * rng.standard_normal((args.outliers, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, mask


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import faiss
    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table
    from scipy.stats import spearmanr

    from mmsec.defenses.detection import ExactKNN, FaissHNSW
    from mmsec.defenses.detection.dao import log_dao_scores
    from mmsec.defenses.detection.k_distance import k_distance_scores
    from mmsec.defenses.detection.lid import lid_mle
    from mmsec.defenses.detection.slof import slof_scores
    from mmsec.evaluation.detection import detection_report

    torch.set_num_threads(args.threads)
    faiss.omp_set_num_threads(args.threads)
    mem = {"start": peak_rss_gb()}
    t0 = time.perf_counter()
    x_np, mask_np = synthetic(args, np)
    gen_s = time.perf_counter() - t0
    x, mask = torch.from_numpy(x_np), torch.from_numpy(mask_np)
    mem["data"] = peak_rss_gb()
    print(f"data {x.shape} in {gen_s:.0f} s; peak RSS {mem['data']:.2f} GB", flush=True)

    rows = torch.randperm(args.n, generator=torch.Generator().manual_seed(args.seed + 1))[:args.n_exact].sort().values

    # exact: the subset of queries against all N points
    t0 = time.perf_counter()
    exact = ExactKNN(query_chunk=1000, base_chunk=65_536).knn(x, args.k, rows)
    exact_s = time.perf_counter() - t0
    mem["exact"] = peak_rss_gb()
    exact_per_q = exact_s / args.n_exact
    print(f"exact: {args.n_exact} queries in {exact_s:.1f} s ({1e3 * exact_per_q:.2f} ms/query)", flush=True)

    # ANN: build, then every point's neighbours
    ann = FaissHNSW(m=args.m, ef_construction=args.ef_construction, ef_search=args.ef_search)
    ann.build(x)
    mem["build"] = peak_rss_gb()
    print(f"HNSW build {ann.build_seconds:.0f} s; peak RSS {mem['build']:.2f} GB", flush=True)
    t0 = time.perf_counter()
    graph = ann.search(x, args.k)
    ann_s = time.perf_counter() - t0
    mem["ann_search"] = peak_rss_gb()
    ann_per_q = ann_s / args.n
    print(f"HNSW search of all {args.n} points in {ann_s:.0f} s ({1e3 * ann_per_q:.3f} ms/query)", flush=True)

    def recall(indices: torch.Tensor) -> float:
        hits = (indices[:, :, None] == exact.indices[:, None, :]).any(dim=2)  # (Q, k)
        return float(hits.float().mean())

    sub_ann_idx = graph.indices[rows]
    rec = recall(sub_ann_idx)
    speedup = exact_per_q / ann_per_q
    speedup_build = exact_per_q / ((ann_s + ann.build_seconds) / args.n)

    # score agreement on the subset (own-neighbour scores)
    from mmsec.defenses.detection.neighbors import KNNGraph

    sub_graph = KNNGraph(graph.distances[rows], graph.indices[rows], rows)
    agree = {}
    for name, fn in (("k_distance", k_distance_scores), ("lid", lid_mle)):
        a, e = fn(sub_graph).numpy(), fn(exact).numpy()
        agree[name] = {"spearman": float(spearmanr(a, e).statistic),
                       "median_rel_error": float(np.median(np.abs(a - e) / np.abs(e)))}

    # planted outliers over all N points from the ANN graph
    t0 = time.perf_counter()
    scores = {"k_distance": k_distance_scores(graph), "slof": slof_scores(graph), "lid": lid_mle(graph),
              "dao": log_dao_scores(graph)}
    score_s = time.perf_counter() - t0
    detect = {name: detection_report(s, mask, 0.01).to_dict() for name, s in scores.items()}
    mem["scores"] = peak_rss_gb()

    # efSearch sweep on the subset (context for the headline)
    sweep = []
    for ef in sorted(set(args.sweep + [args.ef_search])):
        ann.ef_search = ef
        t0 = time.perf_counter()
        g = ann.search(x, args.k, rows)
        s = time.perf_counter() - t0
        sweep.append({"ef_search": ef, "recall": recall(g.indices), "ms_per_query": 1e3 * s / args.n_exact,
                      "speedup": exact_per_q / (s / args.n_exact)})
    ann.ef_search = args.ef_search

    table = Table(title=f"kNN (k={args.k}) on {args.n:,} x {args.dim} synthetic embeddings "
                        f"({args.clusters} clusters of intrinsic dim {args.intrinsic}, {args.outliers} outliers), "
                        f"1 thread")
    for col in ["backend", "queries", "ms / query", "recall@k", "speed-up", "build s"]:
        table.add_column(col)
    table.add_row("exact (torch)", f"{args.n_exact:,}", f"{1e3 * exact_per_q:.2f}", "1", "1", "-")
    table.add_row(f"faiss HNSW M={args.m} efC={args.ef_construction} efS={args.ef_search}", f"{args.n:,}",
                  f"{1e3 * ann_per_q:.3f}", f"{rec:.4f}", f"{speedup:.1f}x ({speedup_build:.1f}x with build)",
                  f"{ann.build_seconds:.0f}")
    for r in sweep:
        table.add_row(f"  efSearch={r['ef_search']} (subset)", f"{args.n_exact:,}", f"{r['ms_per_query']:.3f}",
                      f"{r['recall']:.4f}", f"{r['speedup']:.1f}x", "")
    Console(width=200).print(table)
    det = Table(title=f"planted-outlier detection over all {args.n:,} points (ANN graph; scoring {score_s:.0f} s)")
    for col in ["score", "AUROC", "TPR@1%FPR", "Spearman ANN vs exact (subset)"]:
        det.add_column(col)
    for name, d in detect.items():
        det.add_row(name, f"{d['auroc']:.4f}", f"{d['tpr_at_fpr']:.3f}",
                    f"{agree[name]['spearman']:.4f}" if name in agree else "-")
    Console(width=200).print(det)
    print("peak RSS (GB) after each stage: " + ", ".join(f"{k} {v:.2f}" for k, v in mem.items()))
    ok = rec >= 0.95 and speedup >= 10
    verdict = f"{'met' if ok else 'NOT met'} (recall {rec:.4f}, speed-up {speedup:.1f}x, {speedup_build:.1f}x with build)"
    print(f"acceptance (recall >= 0.95 at speed-up >= 10x, 1M points): {verdict}")
    report = {"benchmark": "outlier_ann",
              "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "generate_seconds": gen_s, "exact_seconds": exact_s, "exact_ms_per_query": 1e3 * exact_per_q,
              "build_seconds": ann.build_seconds, "ann_search_seconds": ann_s, "ann_ms_per_query": 1e3 * ann_per_q,
              "recall_at_k": rec, "speedup": speedup, "speedup_with_build": speedup_build,
              "score_agreement_subset": agree, "planted_outlier_detection": detect, "scoring_seconds": score_s,
              "ef_search_sweep": sweep, "peak_rss_gb": mem, "faiss": faiss.__version__,
              "acceptance": verdict, "env": environment(args.threads)}
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
