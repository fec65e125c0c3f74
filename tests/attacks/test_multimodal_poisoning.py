"""Multimodal targeted poisoning (Yang et al., ICML 2023): construction, records, and effect at test size.

Effect: the shipped ``shapes-clip-resnet`` fine-tuned for 100 batches of 64 (lr 2e-3) on 1,024 clean
train pairs (a quarter with a second object) poisoned by Attack I ("red circle" captions -> one
"blue square" test image) and Attack III ("red circle" -> "blue square", "green triangle" -> "yellow
ring"), against the same budget on the clean pairs. Queries: the test captions of the text class;
gallery: 500 single-object test scenes.

Measured (seed 0):

=====================  =============================  ===============  ================  ========
model                  Attack I Hit@1/5/10, MinRank   III mean Hit@1/5/10  III MinRank    t2i R@1
=====================  =============================  ===============  ================  ========
Attack I poisoned      0.35 / 0.65 / 0.88, 4.9        --                --                0.996
Attack III poisoned    --                             0.73 / 1.00 / 1.00  1.5             0.971
clean fine-tune        0.00 / 0.00 / 0.00, 268        0.00 / 0.00 / 0.00  179             1.000
=====================  =============================  ===============  ================  ========
"""

from __future__ import annotations

import json

import pytest
import torch

from mmsec.attacks.backdoor.multimodal_poisoning import (
    MultimodalPoisonDetails,
    MultimodalPoisonedData,
    MultipleTargetLabelPoisoning,
    SingleTargetImagePoisoning,
    SingleTargetLabelPoisoning,
)
from mmsec.attacks.backdoor.poisoning import PoisoningAttack, PoisonRecord
from mmsec.data.datasets import ImageTextData, ShapesDataset
from mmsec.data.shapes import ShapesWorld, shape_color_classes
from mmsec.evaluation.targeted_poisoning import hit_at_k, min_ranks, poisoning_retrieval_report
from mmsec.train.poisoned import clean_finetune, poisoned_finetune

CLASSES = shape_color_classes()
A, B = CLASSES.index("red circle"), CLASSES.index("blue square")
A2, B2 = CLASSES.index("green triangle"), CLASSES.index("yellow ring")
BUDGET = dict(steps=100, batch_size=64, lr=2e-3, seed=0)


@pytest.fixture(scope="module")
def clean() -> ImageTextData:
    return ShapesDataset("train", n=1024, second_object_prob=0.25).to_data(quiet=True)


@pytest.fixture(scope="module")
def test_batch():
    return ShapesWorld(32).batch("test", 0, 500)


@pytest.fixture(scope="module")
def target(test_batch):
    i = int((test_batch.labels == B).nonzero()[0])
    return test_batch.pixels()[i], i


# ------------------------------------------------------------------------------------------
# Construction
# ------------------------------------------------------------------------------------------
def test_label_attack_changes_exactly_the_recorded_pairs(clean):
    before = (clean.pixels.clone(), clean.labels.clone(), [list(c) for c in clean.captions])
    out = SingleTargetLabelPoisoning("red circle", "blue square", seed=3)(clean)
    assert isinstance(out, MultimodalPoisonedData) and isinstance(out.record, PoisonRecord)
    # inputs untouched
    assert torch.equal(clean.pixels, before[0]) and torch.equal(clean.labels, before[1])
    assert clean.captions == before[2]
    rec, det = out.record, out.details
    class_a = sorted((clean.labels == A).nonzero().flatten().tolist())
    assert rec.indices == class_a == det.text_sources and rec.n_poisoned == len(class_a) > 0  # fraction 1.0: all
    assert rec.kind == "targeted" and rec.mode == "replace" and rec.target == "red circle" and rec.image_label == B
    changed = (out.data.pixels != clean.pixels).flatten(1).any(1).nonzero().flatten().tolist()
    assert changed == rec.indices  # exactly the recorded pairs differ
    assert out.data.captions == clean.captions  # captions kept: T^A_train is what gets paired
    assert all(clean.labels[j] == B for j in det.image_sources)  # each gets a class-B training image
    assert torch.equal(out.data.labels[rec.indices], torch.full((rec.n_poisoned,), B))
    assert torch.equal(det.rebuild_images(rec, clean.pixels), out.data.pixels[rec.indices])
    # class-B images used in turn: no image twice before every one is used once
    n_b = int((clean.labels == B).sum())
    counts = torch.bincount(torch.tensor(det.image_sources))
    assert counts.max() - counts[counts > 0].min() <= 1 and (counts > 0).sum() == min(n_b, rec.n_poisoned)
    # JSON round trips
    assert PoisonRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec
    assert MultimodalPoisonDetails.from_dict(json.loads(json.dumps(det.to_dict()))) == det


def test_target_image_attack_and_add_mode(clean, target):
    x, _ = target
    attack = SingleTargetImagePoisoning("red circle", image_label=B, fraction=0.5, mode="add", seed=1).with_target_image(x)
    assert isinstance(attack, PoisoningAttack) and json.dumps(attack.params())
    out = attack(clean)
    rec, n = out.record, len(clean)
    assert rec.indices == list(range(n, n + rec.n_poisoned))
    assert rec.n_poisoned == round(0.5 * int((clean.labels == A).sum()))
    assert torch.equal(out.data.pixels[:n], clean.pixels) and out.data.captions[:n] == clean.captions
    assert all(torch.equal(out.data.pixels[i], x) for i in rec.indices)
    assert [out.data.captions[i] for i in rec.indices] == [clean.captions[j] for j in out.details.text_sources]
    assert all(clean.labels[j] == A for j in out.details.text_sources)
    assert torch.equal(rec.rebuild_images(None), out.data.pixels[rec.indices])  # a PoisonRecord rebuilds x*
    assert rec.poison_rate == rec.n_poisoned / len(out.data)


def test_multiple_labels_is_the_union_of_single_label_poisonings(clean):
    multi = MultipleTargetLabelPoisoning([("red circle", "blue square"), (A2, B2)])(clean)
    singles = [SingleTargetLabelPoisoning(a, b)(clean) for a, b in [(A, B), (A2, B2)]]
    assert multi.record.indices == sorted(singles[0].record.indices + singles[1].record.indices)
    assert multi.details.goals == [("red circle", "blue square"), ("green triangle", "yellow ring")]
    for i, k in zip(multi.record.indices, multi.details.goal_of, strict=True):
        assert clean.labels[i] == (A, A2)[k] and multi.data.labels[i] == (B, B2)[k]
    assert multi.record.target_label is None and multi.record.target == "red circle, green triangle"


def test_errors_name_the_argument(clean, target):
    x, _ = target
    with pytest.raises(ValueError, match="fraction"):
        SingleTargetLabelPoisoning(A, B, fraction=0)
    with pytest.raises(ValueError, match="mode"):
        SingleTargetLabelPoisoning(A, B, mode="stream")
    with pytest.raises(ValueError, match="to itself"):
        SingleTargetLabelPoisoning(A, A)(clean)
    with pytest.raises(ValueError, match="two goals"):
        MultipleTargetLabelPoisoning([(A, B), (A, B2)])(clean)
    with pytest.raises(ValueError, match="Did you mean"):
        SingleTargetLabelPoisoning("red circel", B)(clean)
    with pytest.raises(ValueError, match="goals"):
        MultipleTargetLabelPoisoning([])
    with pytest.raises(ValueError, match="target_image"):
        SingleTargetImagePoisoning(A, image_label=B).with_target_image(x[None])
    with pytest.raises(ValueError, match="in the training data"):
        SingleTargetImagePoisoning(A, image_label=B).with_target_image(clean.pixels[0])(clean)
    with pytest.raises(RuntimeError, match="with_target_image"):
        SingleTargetImagePoisoning(A, image_label=B)(clean)
    with pytest.raises(ValueError, match="no labels"):
        SingleTargetLabelPoisoning(A, B)(ImageTextData(clean.pixels[:4], None, None, clean.captions[:4]))
    with pytest.raises(NotImplementedError, match="fixed data set"):
        SingleTargetLabelPoisoning(A, B).stream(lambda s: None, 1, 2)


def test_class_names_come_from_the_data(clean):
    """Without class names the data's classes are its label indices: targets by index work, names do not."""
    anonymous = ImageTextData(clean.pixels, clean.labels, None, clean.captions)
    by_index = SingleTargetLabelPoisoning(A, B, seed=3)(anonymous)
    named = SingleTargetLabelPoisoning("red circle", "blue square", seed=3)(clean)
    assert torch.equal(by_index.data.pixels, named.data.pixels) and by_index.record.indices == named.record.indices
    assert by_index.details.goals == [(str(A), str(B))]
    with pytest.raises(ValueError, match="not a class of the data"):
        SingleTargetLabelPoisoning("red circle", B)(anonymous)


def test_min_rank_and_hit_at_k():
    g = torch.eye(4)  # gallery of 4 orthogonal embeddings
    q = torch.tensor([[0.0, 1, 0, 0], [1, 0.5, 0, 0]])
    ranks = min_ranks(q, g, torch.tensor([1]))
    assert ranks.tolist() == [1, 2] and hit_at_k(ranks, 1) == 0.5 and hit_at_k(ranks, 2) == 1.0


# ------------------------------------------------------------------------------------------
# Effect
# ------------------------------------------------------------------------------------------
def test_poisoned_fine_tuning_makes_class_captions_retrieve_the_targets(zoo_resnet, clean, test_batch, target):
    x, ti = target
    runs = {
        "I": poisoned_finetune(zoo_resnet, SingleTargetImagePoisoning(A, image_label=B).with_target_image(x), clean,
                               **BUDGET),
        "III": poisoned_finetune(zoo_resnet, MultipleTargetLabelPoisoning([(A, B), (A2, B2)]), clean, **BUDGET),
        "clean": clean_finetune(zoo_resnet, clean, **BUDGET),
    }
    one = dict(goals=[(A, None)], class_names=CLASSES, target_index=ti, utility_n=300)
    multi = dict(goals=[(A, B), (A2, B2)], class_names=CLASSES, utility_n=300)
    i_pois = poisoning_retrieval_report(runs["I"].model, test_batch, **one)
    i_ctrl = poisoning_retrieval_report(runs["clean"].model, test_batch, **one)
    m_pois = poisoning_retrieval_report(runs["III"].model, test_batch, **multi)
    m_ctrl = poisoning_retrieval_report(runs["clean"].model, test_batch, **multi)
    # Attack I: the one target image climbs from the bottom half of the gallery to the top 10
    assert i_pois["mean_hit"][10] >= 0.6 and i_ctrl["mean_hit"][10] <= 0.05, (i_pois, i_ctrl)
    assert i_pois["mean_min_rank"] <= 15 and i_ctrl["mean_min_rank"] >= 100
    assert i_pois["mean_random_hit"][10] <= 0.05  # other captions do not retrieve x*: it is targeted
    # Attack III: both goals' captions retrieve the image class
    assert all(g["hit"][5] >= 0.8 for g in m_pois["goals"]), m_pois
    assert m_ctrl["mean_hit"][5] <= 0.05 and m_pois["mean_random_hit"][5] <= 0.05
    # clean utility kept within 5 points of the control
    for rep in (i_pois, m_pois):
        assert rep["t2i_r1"] >= i_ctrl["t2i_r1"] - 0.05 and rep["i2t_r1"] >= i_ctrl["i2t_r1"] - 0.05
