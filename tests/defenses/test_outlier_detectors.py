"""Local-outlier detectors of poisoned samples (k-dist, SLOF, LID, DAO) and their kNN backends."""

import math

import numpy as np
import pytest
import torch

from mmsec.defenses.detection import (
    DETECTORS,
    DAODetector,
    ExactKNN,
    FaissHNSW,
    KDistanceDetector,
    LIDDetector,
    OutlierDetector,
    SLOFDetector,
)
from mmsec.defenses.detection.neighbors import KNNGraph, auto_backend
from mmsec.evaluation.detection import auroc


def _blobs(n: int, dim: int, centres: int, spread: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(centres, dim, generator=g) * 3
    return c[torch.randint(0, centres, (n,), generator=g)] + spread * torch.randn(n, dim, generator=g)


def _naive(points: torch.Tensor, k: int):
    """Reference kNN by a full distance matrix, self excluded."""
    d = torch.cdist(points.double(), points.double())
    d.fill_diagonal_(float("inf"))
    dist, idx = d.sort(dim=1)
    return dist[:, :k], idx[:, :k]


# ------------------------------------------------------------------ backends
def test_exact_knn_matches_full_distance_matrix_for_any_chunking():
    x = _blobs(300, 12, 4, 1.0, 0)
    ref_d, ref_i = _naive(x, 7)
    for qc, bc in ((1024, 65_536), (17, 23)):
        g = ExactKNN(query_chunk=qc, base_chunk=bc).knn(x, 7)
        assert torch.equal(g.indices, ref_i)
        assert torch.allclose(g.distances, ref_d, atol=1e-9)
    sub = ExactKNN(query_chunk=5, base_chunk=40).knn(x, 7, rows=torch.tensor([3, 250, 0]))
    assert torch.equal(sub.indices, ref_i[[3, 250, 0]])


def test_self_is_excluded_by_index_and_duplicates_stay_neighbours():
    x = torch.randn(50, 4, generator=torch.Generator().manual_seed(1))
    x[10] = x[20]  # an exact duplicate
    g = ExactKNN(base_chunk=16).knn(x, 3)
    assert not bool((g.indices == torch.arange(50)[:, None]).any())
    assert int(g.indices[10, 0]) == 20 and float(g.distances[10, 0]) == 0.0


def test_faiss_hnsw_agrees_with_exact_search():
    pytest.importorskip("faiss")
    x = _blobs(3000, 32, 20, 0.5, 2)
    ex = ExactKNN().knn(x, 16)
    an = FaissHNSW().knn(x, 16)
    recall = (an.indices[:, :, None] == ex.indices[:, None, :]).any(dim=2).float().mean()
    assert recall >= 0.99
    assert torch.allclose(an.distances[:, -1], ex.distances[:, -1], rtol=1e-3)
    assert not bool((an.indices == torch.arange(3000)[:, None]).any())
    # and the detectors give the same ranking through either backend
    a = DAODetector(batch_size=None, backend="exact")(x).scores
    b = DAODetector(batch_size=None, backend="faiss")(x).scores
    assert np.corrcoef(a.numpy(), b.numpy())[0, 1] > 0.99


def test_auto_backend_switches_on_size():
    assert isinstance(auto_backend(1000), ExactKNN)
    pytest.importorskip("faiss")
    assert isinstance(auto_backend(10**6), FaissHNSW)


# ------------------------------------------------------------------ scores: known answers
def test_scores_match_their_formulas_on_a_naive_reference():
    x = _blobs(200, 6, 3, 1.0, 3)
    k = 5
    d, idx = _naive(x, k)
    kd = d[:, -1]
    lid = -1.0 / torch.log(d / kd[:, None]).mean(dim=1)
    slof = (kd[:, None] / kd[idx]).mean(dim=1)
    dao = ((kd[:, None] / kd[idx]) ** lid[idx]).mean(dim=1)
    kw = dict(k=k, batch_size=None, backend="exact")
    assert torch.allclose(KDistanceDetector(**kw)(x).scores, kd)
    assert torch.allclose(LIDDetector(**kw)(x).scores, lid)
    assert torch.allclose(SLOFDetector(**kw)(x).scores, slof)
    assert torch.allclose(DAODetector(**kw)(x).scores, torch.log(dao))  # DAO is returned in log units


def test_slof_is_one_on_a_homogeneous_grid():
    g = torch.stack(torch.meshgrid(torch.arange(20.0), torch.arange(20.0), indexing="ij"), dim=-1).reshape(-1, 2)
    s = SLOFDetector(k=4, batch_size=None)(g).scores.reshape(20, 20)
    assert torch.allclose(s[2:-2, 2:-2], torch.ones(16, 16, dtype=torch.float64))  # interior: every 4th neighbour at distance 1


@pytest.mark.parametrize("dim", [2, 5, 10])
def test_lid_of_points_on_a_subspace_is_its_dimension(dim):
    g = torch.Generator().manual_seed(dim)
    basis, _ = torch.linalg.qr(torch.randn(64, dim, generator=g))  # a random d-dim subspace of R^64
    x = torch.rand(4000, dim, generator=g) @ basis.T  # uniform in a d-cube inside it
    lid = LIDDetector(k=20, batch_size=None)(x).scores
    assert abs(float(lid.median()) - dim) < 0.2 * dim + 0.3


OUTLIER_DETECTORS = sorted(n for n, f in DETECTORS.items() if issubclass(f, OutlierDetector))  # on embeddings


@pytest.mark.parametrize("name", OUTLIER_DETECTORS)
def test_isolated_points_score_highest(name):
    clean = _blobs(800, 16, 4, 1.0, 4)
    far = 8 * torch.randn(8, 16, generator=torch.Generator().manual_seed(5))  # isolated, away from the blobs
    x = torch.cat([clean, far])
    mask = torch.zeros(808, dtype=torch.bool)
    mask[800:] = True
    res = DETECTORS[name](batch_size=None)(x)
    assert auroc(res.scores, mask) >= 0.99
    assert int(res.decisions[800:].sum()) >= 7  # the top 1% (9 samples) holds them


@pytest.mark.parametrize("name", OUTLIER_DETECTORS)
def test_points_in_the_dense_cores_are_not_flagged(name):
    # The must-not-fire case: points at the blobs' centres are the least locally sparse of the set (measured
    # AUROC 0.00 and none flagged, every detector, blob seeds 4-6), where a score that is not local sparsity
    # (an embedding's norm, a constant) would rank them anywhere or flag them.
    clean = _blobs(800, 16, 4, 1.0, 4)
    centres = torch.randn(4, 16, generator=torch.Generator().manual_seed(4)) * 3  # _blobs' centres for seed 4
    core = centres[torch.arange(8) % 4] + 0.05 * torch.randn(8, 16, generator=torch.Generator().manual_seed(9))
    x = torch.cat([clean, core])
    mask = torch.zeros(808, dtype=torch.bool)
    mask[800:] = True
    res = DETECTORS[name](batch_size=None)(x)
    assert auroc(res.scores, mask) <= 0.05
    assert not res.decisions[800:].any()


def _tight_cluster():
    # the paper's regime: 1% poisoned samples, tightly clustered (the trigger dominates their
    # embedding), fewer per batch of 1,024 than k, so their k-th neighbour is a distant clean sample
    clean = _blobs(3000, 16, 6, 1.0, 6)
    g = torch.Generator().manual_seed(7)
    poison = 6 * torch.randn(1, 16, generator=g) + 0.05 * torch.randn(30, 16, generator=g)
    mask = torch.zeros(3030, dtype=torch.bool)
    mask[3000:] = True
    return torch.cat([clean, poison]), mask


@pytest.mark.parametrize("name", ["dao", "kdist", "slof"])
def test_small_tight_poison_cluster_is_found_in_random_batches(name):
    x, mask = _tight_cluster()
    res = DETECTORS[name]()(x)  # paper defaults: k=16, batches of 1,024
    assert auroc(res.scores, mask) >= 0.95


def test_lid_ranks_a_small_tight_cluster_low():
    # ~10 poisoned per batch at distance ~0.05 then clean points at ~6: the distance profile is
    # bimodal, so the MLE's mean log-ratio is very negative and the LID estimate *small*. LID as a
    # score (higher = suspicious) is the wrong way round for this geometry.
    x, mask = _tight_cluster()
    assert auroc(LIDDetector()(x).scores, mask) <= 0.05


# ------------------------------------------------------------------ contract
def test_batches_partition_deterministic_and_inputs_untouched():
    x = _blobs(2500, 8, 3, 1.0, 8)
    before = x.clone()
    det = KDistanceDetector(seed=3)
    parts = det.batches(2500)
    assert len(parts) == 3 and min(len(p) for p in parts) > 800
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(2500))
    a, b = det(x), det(x.numpy())
    assert torch.equal(a.scores, b.scores) and torch.equal(x, before)
    assert not torch.equal(KDistanceDetector(seed=4)(x).scores, a.scores)  # another partition


def test_threshold_rules():
    x = _blobs(1000, 8, 3, 1.0, 9)
    top = LIDDetector()(x)
    assert top.threshold_rule == "top 1.00%" and 10 <= int(top.decisions.sum()) <= 11
    given = LIDDetector(threshold=float(top.scores.median()))(x)
    assert given.threshold_rule == "given"
    assert torch.equal(given.decisions, given.scores >= given.threshold)
    assert given.params["detector"] == "lid" and given.params["k"] == 16 and given.params["batch_size"] == 1024


def test_knn_graph_scores_need_the_whole_base():
    from mmsec.defenses.detection import log_dao_scores, slof_scores

    g = KNNGraph(torch.ones(2, 3, dtype=torch.float64), torch.zeros(2, 3, dtype=torch.long), torch.tensor([4, 5]))
    with pytest.raises(ValueError, match="k_distances"):
        slof_scores(g)
    with pytest.raises(ValueError, match="k_distances"):
        log_dao_scores(g)


@pytest.mark.parametrize("bad, match", [
    (torch.tensor([[0.0, float("nan")], [1.0, 2.0]] * 20), "NaN"),
    (torch.zeros(40), "2-D"),
    (torch.zeros(40, 3, dtype=torch.long), "floating"),
    (torch.zeros(10, 3), "k=16 needs more than 16 points"),
    ([[0.0, 1.0]], "float tensor"),
])
def test_bad_embeddings_are_rejected(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        DAODetector(batch_size=None)(bad)


@pytest.mark.parametrize("kwargs, match", [
    ({"k": 0}, "k must be >= 1"),
    ({"k": 2.5}, "k must be an int"),
    ({"batch_size": 16}, "batch_size=16 must exceed k=16"),
    ({"backend": "annoy"}, "backend must be"),
    ({"threshold": math.nan}, "threshold"),
    ({"flag_fraction": 1.0}, "flag_fraction"),
    ({"seed": "x"}, "seed"),
])
def test_bad_settings_are_rejected(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        SLOFDetector(**kwargs)


def test_a_backend_object_is_refused_with_the_way_to_use_it():
    with pytest.raises(ValueError, match=r"backend must be 'auto', 'exact' or 'faiss'.*scores_from_graph"):
        KDistanceDetector(backend=ExactKNN())
    # ... which gives the same scores as the named backend
    x = _blobs(300, 8, 3, 1.0, 10)
    det = SLOFDetector(k=5, batch_size=None, backend="exact")
    direct = det.decide(det.scores_from_graph(ExactKNN(query_chunk=7).knn(x, det.k)))
    assert torch.equal(direct.scores, det(x).scores)


def test_the_detectors_are_registered_and_built_from_a_config():
    from mmsec import builtins, registry
    from mmsec.methods import build

    builtins.load()
    assert dict(DETECTORS) == {e.name: e.factory for e in registry.entries("detectors")}
    assert set(DETECTORS) == {"kdist", "slof", "lid", "dao", "psbd"}  # psbd: on a classifier (test_psbd.py)
    assert OUTLIER_DETECTORS == ["dao", "kdist", "lid", "slof"]
    det = build("detectors", {"name": "dao", "params": {"k": 8, "batch_size": None, "backend": "exact"}})
    assert isinstance(det, DAODetector) and (det.k, det.batch_size, det.backend) == (8, None, "exact")
    assert build("detectors", det.config()).config() == det.config()
    x = _blobs(200, 4, 2, 1.0, 11)
    assert det(x).params == {"detector": "dao", **det.config()["params"]}


def test_bad_query_rows_are_rejected():
    x = torch.randn(30, 3)
    with pytest.raises(ValueError, match="rows must lie in"):
        ExactKNN().knn(x, 3, rows=torch.tensor([0, 30]))
