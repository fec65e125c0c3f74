"""k-nearest-neighbour search for the outlier detectors: exact (torch) and approximate (faiss HNSW).

One interface: ``backend.knn(points (N, D), k, rows=None) -> KNNGraph`` returns, for each query
row ``i`` of ``points`` (all rows by default), its ``k`` nearest *other* points of ``points``
(Euclidean distance, ascending; the query itself excluded by index, so exact duplicates of a
point still count as its neighbours at distance 0).

* :class:`ExactKNN` -- brute force on torch: queries against the base in chunks, neighbours
  chosen from ``||q||^2 - 2 q.x + ||x||^2`` in float32 (one matrix product per chunk), then
  their distances recomputed directly in float64 (no cancellation error, never negative);
  memory ``O(query_chunk * base_chunk)``.
* :class:`FaissHNSW` -- faiss ``IndexHNSWFlat`` (Malkov and Yashunin, "Efficient and robust
  approximate nearest neighbor search using Hierarchical Navigable Small World graphs", IEEE
  TPAMI 2020): ``M=32`` links per node, ``ef_construction=64``, ``ef_search=128`` (faiss's own
  defaults are 32 / 40 / 16; a larger search beam buys recall at k=16 on 512-d data). HNSW,
  not IVF: no k-means training pass, so building over 1M points is a single insertion pass, and
  the search cost grows ~log N. The index stores a float32 copy of the points (4 * N * D bytes)
  plus ~``2 * M`` int32 links per point.
* :func:`auto_backend` -- exact below ``exact_max`` points (default 50,000: one exact pass costs
  ``N^2 D`` multiply-adds, ~1 min on one core at 50k x 512), faiss above when it is installed.

faiss is optional (``pip install faiss-cpu``); only :class:`FaissHNSW` imports it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

EXACT_MAX = 50_000


@dataclass
class KNNGraph:
    """The ``k`` nearest other points of each query.

    Attributes:
        distances: (Q, k) float64 Euclidean distances, ascending along each row (computed in
            float64 by :class:`ExactKNN`; faiss's float32 distances for :class:`FaissHNSW`).
        indices: (Q, k) int64 rows of the base (the points searched).
        rows: (Q,) int64 the query rows of the base.
    """

    distances: torch.Tensor
    indices: torch.Tensor
    rows: torch.Tensor

    @property
    def k(self) -> int:
        return int(self.indices.shape[1])


def check_points(points: torch.Tensor | np.ndarray, name: str = "embeddings") -> torch.Tensor:
    """(N, D) finite floating tensor (numpy accepted, shared not copied when possible)."""
    if isinstance(points, np.ndarray):
        points = torch.from_numpy(points)
    if not isinstance(points, torch.Tensor):
        raise TypeError(f"{name} must be a (N, D) float tensor of embeddings, got {type(points).__name__}")
    if points.ndim != 2:
        raise ValueError(f"{name} must be 2-D (N points, D dims), got shape {tuple(points.shape)}")
    if not points.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor (embeddings), got dtype {points.dtype}")
    if points.shape[1] < 1:
        raise ValueError(f"{name} must have at least one dimension per point, got shape {tuple(points.shape)}")
    if not bool(torch.isfinite(points).all()):
        bad = int((~torch.isfinite(points)).any(dim=1).sum())
        raise ValueError(f"{name} holds NaN or infinite values in {bad} of {points.shape[0]} rows")
    return points


def check_k(k: int, n: int, name: str = "k") -> int:
    if isinstance(k, bool) or not isinstance(k, int):
        raise TypeError(f"{name} must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"{name} must be >= 1, got {k}")
    if n is not None and k >= n:
        raise ValueError(f"{name}={k} needs more than {k} points (each point's neighbours exclude itself), "
                         f"got {n} points")
    return k


def _check_rows(rows: torch.Tensor | None, n: int) -> torch.Tensor:
    if rows is None:
        return torch.arange(n)
    rows = torch.as_tensor(rows)
    if rows.ndim != 1 or rows.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"rows must be a 1-D integer tensor of query rows, got shape {tuple(rows.shape)} "
                         f"dtype {rows.dtype}")
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= n):
        raise ValueError(f"rows must lie in [0, {n}), got values in [{int(rows.min())}, {int(rows.max())}]")
    return rows.long()


class ExactKNN:
    """Brute-force kNN on torch, chunked over queries and over the base.

    Args:
        query_chunk: queries per matrix product (memory ``query_chunk * base_chunk`` floats).
        base_chunk: base points per matrix product.
    """

    name = "exact"

    def __init__(self, query_chunk: int = 1024, base_chunk: int = 65_536) -> None:
        self.query_chunk = check_k(query_chunk, None, "query_chunk")
        self.base_chunk = check_k(base_chunk, None, "base_chunk")

    def __repr__(self) -> str:
        return f"ExactKNN(query_chunk={self.query_chunk}, base_chunk={self.base_chunk})"

    @torch.no_grad()
    def knn(self, points: torch.Tensor, k: int, rows: torch.Tensor | None = None) -> KNNGraph:
        points = check_points(points, "points")
        n = points.shape[0]
        k = check_k(k, n)
        rows = _check_rows(rows, n)
        x = points.float()
        sq = (x * x).sum(dim=1)  # (N,)
        out_d, out_i = [], []
        for q0 in range(0, rows.numel(), self.query_chunk):
            r = rows[q0:q0 + self.query_chunk]  # (Q,)
            q = x[r]  # (Q, D)
            best_d = torch.full((r.numel(), 0), float("inf"))
            best_i = torch.zeros((r.numel(), 0), dtype=torch.long)
            for b0 in range(0, n, self.base_chunk):
                xb = x[b0:b0 + self.base_chunk]  # (B, D)
                d2 = sq[r, None] - 2.0 * (q @ xb.T) + sq[None, b0:b0 + xb.shape[0]]  # (Q, B) squared
                own = (r >= b0) & (r < b0 + xb.shape[0])  # the query itself sits in this chunk
                d2[own.nonzero().flatten(), (r[own] - b0)] = float("inf")
                kk = min(k, xb.shape[0])
                d_top, i_top = torch.topk(d2, kk, dim=1, largest=False)
                cand_d = torch.cat([best_d, d_top], dim=1)
                cand_i = torch.cat([best_i, i_top + b0], dim=1)
                best_d, pos = torch.topk(cand_d, min(k, cand_d.shape[1]), dim=1, largest=False)
                best_i = cand_i.gather(1, pos)
            # exact float64 distances of the chosen neighbours, re-sorted
            d = (points[r].double()[:, None, :] - points[best_i].double()).norm(dim=2)  # (Q, k)
            d, order = d.sort(dim=1)
            out_d.append(d)
            out_i.append(best_i.gather(1, order))
        return KNNGraph(torch.cat(out_d), torch.cat(out_i), rows)


class FaissHNSW:
    """Approximate kNN with a faiss HNSW graph over the base (``IndexHNSWFlat``, L2).

    Args:
        m: links per node (faiss ``M``); memory ~``2 * m`` int32 per point.
        ef_construction: beam width while inserting (graph quality vs build time).
        ef_search: beam width at query time (recall vs speed); raised to ``k + 1`` if smaller.
        query_chunk: queries per faiss call (bounds the result buffers).
    """

    name = "faiss_hnsw"

    def __init__(self, m: int = 32, ef_construction: int = 64, ef_search: int = 128,
                 query_chunk: int = 65_536) -> None:
        self.m = check_k(m, None, "m")
        self.ef_construction = check_k(ef_construction, None, "ef_construction")
        self.ef_search = check_k(ef_search, None, "ef_search")
        self.query_chunk = check_k(query_chunk, None, "query_chunk")
        self.index = None
        self.build_seconds = None

    def __repr__(self) -> str:
        return f"FaissHNSW(m={self.m}, ef_construction={self.ef_construction}, ef_search={self.ef_search})"

    def build(self, points: torch.Tensor) -> FaissHNSW:
        """Insert ``points`` into a new index (kept in ``self.index``); timed in ``build_seconds``."""
        import time

        faiss = import_faiss()
        x = np.ascontiguousarray(check_points(points, "points").detach().cpu().numpy(), dtype=np.float32)
        t0 = time.perf_counter()
        index = faiss.IndexHNSWFlat(x.shape[1], self.m)
        index.hnsw.efConstruction = self.ef_construction
        index.add(x)
        self.build_seconds = time.perf_counter() - t0
        self.index = index
        return self

    def search(self, points: torch.Tensor, k: int, rows: torch.Tensor | None = None) -> KNNGraph:
        """kNN of ``rows`` against the built index, whose base must be ``points``."""
        if self.index is None or self.index.ntotal != points.shape[0]:
            raise RuntimeError("FaissHNSW.search needs build(points) on the same points first")
        n = points.shape[0]
        k = check_k(k, n)
        rows = _check_rows(rows, n)
        self.index.hnsw.efSearch = max(self.ef_search, k + 1)
        out_d, out_i = [], []
        for q0 in range(0, rows.numel(), self.query_chunk):
            r = rows[q0:q0 + self.query_chunk]
            q = np.ascontiguousarray(points[r].detach().cpu().numpy(), dtype=np.float32)
            d2, idx = self.index.search(q, k + 1)  # (Q, k+1) squared L2; the query itself usually first
            idx_t = torch.from_numpy(idx)
            keep = idx_t != r[:, None]
            # drop the query itself; if the graph missed it, drop the farthest of the k+1 instead
            missed = keep.all(dim=1)
            keep[missed, -1] = False
            keep &= idx_t >= 0
            if not bool((keep.sum(dim=1) == k).all()):
                raise RuntimeError(f"faiss HNSW returned fewer than {k} neighbours for some queries "
                                   f"(raise ef_search={self.ef_search})")
            sel_i = idx_t[keep].view(-1, k)
            out_i.append(sel_i)
            out_d.append(torch.from_numpy(d2)[keep].view(-1, k).double().clamp_min(0).sqrt())
        # faiss returns float32 squared L2 (not recomputed: a float64 pass over 1M x k x D is too big)
        i, d = torch.cat(out_i), torch.cat(out_d)
        d, order = d.sort(dim=1)
        return KNNGraph(d, i.gather(1, order), rows)

    def knn(self, points: torch.Tensor, k: int, rows: torch.Tensor | None = None) -> KNNGraph:
        """Build an index over ``points`` (always: a cached index cannot tell same-sized data
        apart), then search. To reuse an index, call :meth:`build` once and :meth:`search`."""
        points = check_points(points, "points")
        check_k(k, points.shape[0])
        self.build(points)
        return self.search(points, k, rows)


def import_faiss():
    try:
        import faiss
    except ImportError as err:  # optional dependency
        raise ImportError("the approximate-nearest-neighbour backend needs faiss: pip install faiss-cpu") from err
    return faiss


def auto_backend(n: int, exact_max: int = EXACT_MAX) -> ExactKNN | FaissHNSW:
    """Exact search for ``n <= exact_max`` points, faiss HNSW above (exact if faiss is missing)."""
    if n <= exact_max:
        return ExactKNN()
    try:
        import_faiss()
    except ImportError:
        return ExactKNN()
    return FaissHNSW()


def resolve_backend(backend: str | ExactKNN | FaissHNSW, n: int) -> ExactKNN | FaissHNSW:
    """``"auto"``, ``"exact"``, ``"faiss"`` or a backend object -> a backend for ``n`` points."""
    if isinstance(backend, (ExactKNN, FaissHNSW)):
        return backend
    if backend == "auto":
        return auto_backend(n)
    if backend == "exact":
        return ExactKNN()
    if backend == "faiss":
        import_faiss()
        return FaissHNSW()
    raise ValueError(f"backend must be 'auto', 'exact', 'faiss' or an ExactKNN / FaissHNSW object, got {backend!r}")


__all__ = ["EXACT_MAX", "ExactKNN", "FaissHNSW", "KNNGraph", "auto_backend", "check_k", "check_points",
           "resolve_backend"]
