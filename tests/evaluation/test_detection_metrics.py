"""AUROC and TPR at a fixed FPR of a poisoned-sample detector against the ground-truth mask."""

import numpy as np
import pytest
import torch

from mmsec.evaluation.detection import auroc, detection_report, tpr_at_fpr


def test_auroc_hand_computed():
    s = torch.tensor([0.1, 0.4, 0.35, 0.8])
    m = torch.tensor([False, False, True, True])
    # pairs (poisoned, clean): (0.35, 0.1) win, (0.35, 0.4) loss, (0.8, *) two wins -> 3/4
    assert auroc(s, m) == pytest.approx(0.75)
    assert auroc(torch.tensor([1.0, 1.0]), torch.tensor([True, False])) == pytest.approx(0.5)  # a tie counts 1/2
    assert auroc(-s, m) == pytest.approx(0.25)


def test_tpr_at_fpr_hand_computed():
    # 100 clean scores 0..99, 10 poisoned: 5 above every clean one, 5 at 97.5 (above 97 clean)
    clean = np.arange(100.0)
    poisoned = np.array([200, 201, 202, 203, 204, 97.5, 97.5, 97.5, 97.5, 97.5])
    s = np.concatenate([clean, poisoned])
    m = np.zeros(110, dtype=bool)
    m[100:] = True
    tpr, thr = tpr_at_fpr(s, m, 0.01)  # FPR <= 1%: at most 1 clean flagged -> threshold above 98
    assert tpr == pytest.approx(0.5) and thr == pytest.approx(200)
    tpr, thr = tpr_at_fpr(s, m, 0.02)  # 2 clean (98, 99) flagged allows threshold 97.5
    assert tpr == pytest.approx(1.0) and thr == pytest.approx(97.5)
    rep = detection_report(s, m, 0.02)
    assert rep.fpr_achieved == pytest.approx(0.02) and rep.n_poisoned == 10 and rep.n_clean == 100


def test_perfect_and_reversed_detectors():
    m = torch.zeros(200, dtype=torch.bool)
    m[:4] = True
    s = m.double() + 0.01 * torch.arange(200) / 200
    rep = detection_report(s, m)
    assert rep.auroc == 1.0 and rep.tpr_at_fpr == 1.0 and rep.fpr_achieved == 0.0
    assert detection_report(-s, m).tpr_at_fpr == 0.0


def test_inputs_untouched():
    s, m = torch.rand(50), torch.rand(50) < 0.3
    s0, m0 = s.clone(), m.clone()
    detection_report(s, m)
    assert torch.equal(s, s0) and torch.equal(m, m0)


@pytest.mark.parametrize("scores, mask, match", [
    (torch.rand(5), torch.tensor([True, False, False]), "one entry per score"),
    (torch.rand(3, 2), torch.tensor([True, False, False]), "1-D"),
    (torch.rand(3), torch.tensor([1, 0, 0]), "boolean"),
    (torch.tensor([0.1, float("nan"), 0.3]), torch.tensor([True, False, False]), "NaN"),
    (torch.rand(3), torch.tensor([False, False, False]), "both poisoned and clean"),
])
def test_bad_inputs_are_rejected(scores, mask, match):
    with pytest.raises((ValueError, TypeError), match=match):
        detection_report(scores, mask)


@pytest.mark.parametrize("fpr", [-0.1, 1.5, float("nan"), True])
def test_bad_fpr_is_rejected(fpr):
    with pytest.raises(ValueError, match="fpr"):
        tpr_at_fpr(torch.rand(4), torch.tensor([True, False, True, False]), fpr)


def test_roc_points_is_the_curve_and_its_area():
    from mmsec.evaluation.detection import roc_points

    s = torch.tensor([0.1, 0.4, 0.35, 0.8])
    m = torch.tensor([False, False, True, True])
    roc = roc_points(s, m)
    # thresholds 0.8 (1 poisoned), 0.4 (+1 clean), 0.35 (+1 poisoned), 0.1 (+1 clean)
    assert list(zip(roc["fpr"], roc["tpr"], strict=True)) == [(0, 0), (0, 0.5), (0.5, 0.5), (0.5, 1), (1, 1)]
    assert roc["auroc"] == pytest.approx(0.75) and (roc["n_positive"], roc["n_negative"]) == (2, 2)
    # the area under the stored points is the AUROC (trapezoids), here and on a curve that is thinned
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(0.75)
    g = torch.Generator().manual_seed(0)
    big_m = torch.rand(5000, generator=g) < 0.3
    big_s = big_m.float() + torch.randn(5000, generator=g)
    thin = roc_points(big_s, big_m, max_points=50)
    assert len(thin["fpr"]) <= 50 and (thin["fpr"][0], thin["tpr"][-1]) == (0, 1)
    assert np.all(np.diff(thin["fpr"]) >= 0) and np.all(np.diff(thin["tpr"]) >= 0)
    assert np.trapezoid(thin["tpr"], thin["fpr"]) == pytest.approx(thin["auroc"], abs=0.01)
    with pytest.raises(ValueError, match="max_points"):
        roc_points(s, m, max_points=1)
