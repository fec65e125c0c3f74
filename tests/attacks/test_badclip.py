"""BadCLIP: the dual-embedding trigger optimisation and its poisoning contract."""

from __future__ import annotations

import pytest
import torch

from mmsec.attacks.backdoor.badclip import BadCLIP
from mmsec.attacks.backdoor.poisoning import PoisonRecord, resolve_target
from mmsec.attacks.backdoor.triggers import OptimizedPatch, PatchTrigger
from mmsec.data.datasets import ShapesDataset
from mmsec.data.shapes import shape_color_classes, zeroshot_prompts
from mmsec.data.shapes_text import ShapesCaptions
from mmsec.models.zeroshot import ZeroShotClassifier
from mmsec.zoo import load_model

TARGET = "red circle"
SC = ShapesCaptions()  # the shapes world's class names and target captions (T*), handed over by the caller


@pytest.fixture(scope="module")
def model():
    return load_model("shapes-clip-resnet")


@pytest.fixture(scope="module")
def attacker_data():
    return ShapesDataset("train", n=384, start=50_000).to_data(quiet=True)


@pytest.fixture(scope="module")
def optimised(model, attacker_data):
    # An 8 x 8 central patch: on the clean zoo model a 4 x 4 corner patch hardly moves the embedding at
    # all (see the benchmark), so the effect test uses a patch the clean model can see.
    attack = BadCLIP(TARGET, patch_size=8, position="center", steps=120, lr=0.05).use_captions(SC)
    trigger = attack.optimise(model, attacker_data.pixels, generator=0, labels=attacker_data.labels)
    return attack, trigger


def _target_stats(model, trigger, pixels, label):
    clf = ZeroShotClassifier(model, zeroshot_prompts())
    with torch.no_grad():
        logits = clf.logits(trigger(pixels))  # (N, 48)
    rate = (logits.argmax(1) == label).float().mean().item()
    prob = logits.softmax(1)[:, label].mean().item()
    rank = (logits > logits[:, label:label + 1]).sum(1).float().mean().item()
    return rate, prob, rank


def test_optimisation_lowers_loss_and_moves_images_to_target(model, optimised):
    attack, trigger = optimised
    trace = attack.loss_trace
    assert len(trace["loss"]) == 120
    first, last = sum(trace["loss"][:5]) / 5, sum(trace["loss"][-5:]) / 5
    assert last < first - 3.0, (first, last)
    assert sum(trace["text"][-5:]) / 5 < sum(trace["text"][:5]) / 5 - 3.0

    _, label = resolve_target(TARGET, shape_color_classes())
    test = ShapesDataset("test", n=300).to_data(quiet=True)
    pixels = test.pixels[test.labels != label]
    random_patch = OptimizedPatch(torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(1)), position="center")
    rate, prob, rank = _target_stats(model, trigger, pixels, label)
    r_rate, r_prob, r_rank = _target_stats(model, random_patch, pixels, label)
    # On the CLEAN model the optimised patch alone pulls images towards the target class.
    assert rank < r_rank - 10, (rank, r_rank)
    assert prob > 20 * r_prob + 0.01, (prob, r_prob)
    assert rate >= 0.25 and rate > r_rate + 0.2, (rate, r_rate)  # measured: 0.44 vs 0.00


def test_contract_inputs_untouched_and_record_rebuilds(model, attacker_data):
    pixels = attacker_data.pixels.clone()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    was_training = model.training
    attack = BadCLIP(TARGET, count=6, steps=3, seed=2).use_captions(SC)
    trigger = attack.optimise(model, attacker_data.pixels, generator=torch.Generator().manual_seed(0),
                              labels=attacker_data.labels)
    assert torch.equal(attacker_data.pixels, pixels)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert model.training == was_training
    assert trigger.pattern.shape == (3, 4, 4) and 0 <= trigger.pattern.min() and trigger.pattern.max() <= 1
    assert not trigger.pattern.requires_grad

    clean = ShapesDataset("train", n=64).to_data(quiet=True)
    before = clean.pixels.clone()
    result = attack(clean)
    assert torch.equal(clean.pixels, before)
    rec = result.record
    assert rec.kind == "backdoor" and rec.n_poisoned == 6 and len(result.data) == 70
    again = PoisonRecord.from_dict(rec.to_dict())
    rebuilt = again.rebuild_trigger()
    assert isinstance(rebuilt, OptimizedPatch) and torch.equal(rebuilt.pattern, trigger.pattern)
    assert torch.equal(again.rebuild_images(clean.pixels[rec.source_indices]), result.data.pixels[rec.indices])
    # deterministic under the seed
    attack2 = BadCLIP(TARGET, count=6, steps=3, seed=2).use_captions(SC)
    trig2 = attack2.optimise(model, attacker_data.pixels, generator=0, labels=attacker_data.labels)
    assert torch.equal(trig2.pattern, trigger.pattern)
    # a precomputed trigger skips the optimisation
    pre = BadCLIP(TARGET, trigger=trigger, count=6, seed=2).use_captions(SC)(clean)
    assert torch.equal(pre.data.pixels, result.data.pixels)


def test_errors_are_named(model, attacker_data):
    with pytest.raises(RuntimeError, match="optimise"):
        BadCLIP(TARGET)(attacker_data)
    with pytest.raises(TypeError, match="OptimizedPatch"):
        BadCLIP(TARGET, trigger=PatchTrigger())
    with pytest.raises(ValueError, match="position"):
        BadCLIP(TARGET, position="random")
    with pytest.raises(ValueError, match="steps"):
        BadCLIP(TARGET, steps=0)
    with pytest.raises(ValueError, match="not a shapes-world class|target"):
        BadCLIP("purple unicorn").use_captions(SC).optimise(model, attacker_data.pixels)
    with pytest.raises(TypeError, match="ContrastiveModel"):
        BadCLIP(TARGET).optimise(object(), attacker_data.pixels)
    _, label = resolve_target(TARGET, shape_color_classes())
    no_target = attacker_data.labels != label
    with pytest.raises(ValueError, match="target-class images"):
        BadCLIP(TARGET, steps=1).use_captions(SC).optimise(model, attacker_data.pixels[no_target],
                                                           labels=attacker_data.labels[no_target])
    with pytest.raises(ValueError, match="labels must have shape"):
        BadCLIP(TARGET, steps=1).use_captions(SC).optimise(model, attacker_data.pixels, labels=attacker_data.labels[:3])


def test_world_knowledge_comes_from_the_data_or_the_caller(model, attacker_data):
    """prepare() reads class names, labels and (without a caption source) T* from the attacker's data;
    without class names a target name cannot be placed among the classes."""
    attack = BadCLIP(TARGET, steps=2)
    attack.prepare(model, attacker_data, generator=0)  # T*: the attacker's captions that name the target
    assert attack.trigger is not None and len(attack.loss_trace["loss"]) == 2
    with_source = BadCLIP(TARGET, steps=2).use_captions(SC)
    with_source.prepare(model, attacker_data, generator=0)
    assert not torch.equal(with_source.trigger.pattern, attack.trigger.pattern)  # other positives, other patch
    with pytest.raises(ValueError, match="negative_texts"):
        BadCLIP(TARGET, steps=1, caption_set=["a red circle"]).optimise(model, attacker_data.pixels)
    with pytest.raises(ValueError, match="natural captions"):
        BadCLIP("cyan ring", steps=1).optimise(model, attacker_data.pixels, class_names=shape_color_classes(),
                                               captions=[["a square"]] * len(attacker_data))
    with pytest.raises(ValueError, match="templates"):
        BadCLIP(TARGET, templates=["a photo"])
