"""Metrics on hand-made cases whose answers are worked out by hand."""

import pytest
import torch

from mmsec.metrics import (
    DEFINITIONS,
    attack_success_rate,
    clean_accuracy,
    recall_at_k,
    retrieval_recalls,
    topk_accuracy,
)


def test_topk_accuracy_hand_case():
    scores = torch.tensor([[0.9, 0.1, 0.0],   # pred 0, label 0 -> top1 hit
                           [0.2, 0.3, 0.5],   # pred 2, label 1 -> top1 miss, top2 hit
                           [0.6, 0.3, 0.1]])  # pred 0, label 2 -> miss at top1 and top2
    labels = torch.tensor([0, 1, 2])
    assert topk_accuracy(scores, labels, 1) == pytest.approx(1 / 3)
    assert topk_accuracy(scores, labels, 2) == pytest.approx(2 / 3)
    assert topk_accuracy(scores, labels, 5) == pytest.approx(1.0)  # k larger than C means all classes
    assert clean_accuracy(scores, labels) == pytest.approx(1 / 3)


def test_topk_rejects_bad_shapes():
    with pytest.raises(ValueError, match="labels must be"):
        topk_accuracy(torch.zeros(3, 2), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        topk_accuracy(torch.zeros(0, 2), torch.zeros(0, dtype=torch.long))


def test_recall_at_k_with_multiple_positives():
    sim = torch.tensor([[0.1, 0.9, 0.5],
                        [0.8, 0.2, 0.3]])
    # query 0 ranks 1, 2, 0; query 1 ranks 0, 2, 1
    assert recall_at_k(sim, [{2}, {1}], 1) == 0.0
    assert recall_at_k(sim, [{2}, {1}], 2) == 0.5
    assert recall_at_k(sim, [{2, 1}, {1}], 1) == 0.5
    assert recall_at_k(sim, torch.tensor([1, 0]), 1) == 1.0


def test_retrieval_recalls_five_captions_per_image():
    # Two images; captions 0-1 describe image 0, captions 2-3 image 1; embeddings along axes.
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.1], [0.9, 0.0], [0.0, 1.0], [1.0, 0.05]])  # caption 3 looks like image 0
    r = retrieval_recalls(img, txt, [0, 0, 1, 1], ks=(1, 2))
    assert r["i2t_r1"] == 1.0          # each image's best caption is one of its own
    assert r["t2i_r1"] == 0.75         # caption 3 retrieves image 0
    assert r["t2i_r2"] == 1.0


def test_attack_success_rate_untargeted_counts_only_clean_correct():
    labels = torch.tensor([0, 1, 2, 3])
    clean = torch.tensor([0, 1, 2, 0])  # last one already wrong: not eligible
    adv = torch.tensor([1, 1, 0, 1])
    assert attack_success_rate(clean, adv, labels) == pytest.approx(2 / 3)


def test_attack_success_rate_targeted():
    labels = torch.tensor([0, 1, 2, 3])
    targets = torch.tensor([5, 5, 5, 3])  # last target equals its label: not eligible
    adv = torch.tensor([5, 2, 5, 3])
    assert attack_success_rate(labels, adv, labels, targets) == pytest.approx(2 / 3)


def test_attack_success_rate_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        attack_success_rate(torch.zeros(3), torch.zeros(2), torch.zeros(3))


def test_every_definition_is_versioned_and_described():
    for name, d in DEFINITIONS.items():
        assert d.name == name and d.version >= 1 and d.description
