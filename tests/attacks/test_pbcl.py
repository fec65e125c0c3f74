"""PBCL (Carlini & Terzis, ICLR 2022): contract, records, and both attacks' effect at test size.

Effect: the shipped ``shapes-clip-resnet`` fine-tuned for 200 batches of 64 (lr 2e-3, the zoo's
pre-training lr; ~20 s each on one thread) on 1,024 clean train pairs (a quarter with a second
object) plus PBCL's poisoned pairs (``X u P``), against the same budget on the clean pairs alone.
Evaluation on 500 single-object test scenes (487 not of the target class "red circle").

Measured (seed 0; poison seeds 1 and 2 gave 1.00 / 0.99):

============================  ========  ===========  =========  ==========  =====================
model                         ZS ASR    probe ASR    i2t ASR    clean ZS    noise-patch ZS ASR
============================  ========  ===========  =========  ==========  =====================
backdoor, 3% (32 pairs)       0.99      0.97         0.99       0.998       0.00
clean fine-tune, same budget  0.00      0.00         0.00       1.00        --
============================  ========  ===========  =========  ==========  =====================

At lr 1e-4 (or 2e-3 for only 120 steps, or 2% poison for 120 steps) the same fine-tuning leaves
ASR near 0: on the tiny model a backdoor needs ~100+ exposures of the poisoned pairs at a high
learning rate. Targeted poisoning with 10 copies of one test image (1%, half the budget) makes it
"red circle" (probability ~0.97; 3 copies and 200 steps: ~0.96) while the other test images keep
their classes; the clean fine-tune keeps its true class.
"""

from __future__ import annotations

import json

import pytest
import torch

from mmsec.attacks.backdoor import PatchTrigger
from mmsec.attacks.backdoor.pbcl import PBCLBackdoor, PBCLTargeted
from mmsec.attacks.backdoor.poisoning import PoisonedData, PoisoningAttack, PoisonRecord
from mmsec.data.datasets import ImageTextData, ShapesDataset
from mmsec.data.shapes import ShapesWorld, shape_color_classes
from mmsec.data.shapes_text import ShapesCaptions
from mmsec.evaluation.backdoor import backdoor_report, targeted_success, zeroshot_asr
from mmsec.train.poisoned import clean_finetune, poisoned_finetune, pretrain_poisoned
from mmsec.zoo.train import caption_batches

TARGET = "red circle"
TARGET_LABEL = shape_color_classes().index(TARGET)
BUDGET = dict(steps=200, batch_size=64, lr=2e-3, seed=0)
SC = ShapesCaptions()  # the shapes world's target captions, handed to the attacks as world knowledge
SMALL = ShapesDataset("train", n=8).to_data(quiet=True)


@pytest.fixture(scope="module")
def clean() -> ImageTextData:
    return ShapesDataset("train", n=1024, second_object_prob=0.25).to_data(quiet=True)


@pytest.fixture(scope="module")
def test_batch():
    return ShapesWorld(32).batch("test", 0, 500)


@pytest.fixture(scope="module")
def probe_batch():
    return ShapesWorld(32).batch("train", 50_000, 1000)


@pytest.fixture(scope="module")
def target_image(test_batch):
    i = int((test_batch.labels != TARGET_LABEL).nonzero()[3])
    return test_batch.pixels()[i], int(test_batch.labels[i]), i


@pytest.fixture(scope="module")
def trained(zoo_resnet, clean, target_image):
    before = {k: v.clone() for k, v in zoo_resnet.state_dict().items()}
    x, label, _ = target_image
    out = {
        "backdoor": poisoned_finetune(zoo_resnet, PBCLBackdoor(TARGET, rate=0.03).use_captions(SC), clean, **BUDGET),
        "targeted": poisoned_finetune(zoo_resnet, PBCLTargeted(TARGET, count=10, image_label=label)
                                      .with_target_image(x).use_captions(SC), clean, **{**BUDGET, "steps": 100}),
        "clean": clean_finetune(zoo_resnet, clean, **BUDGET),
    }
    after = zoo_resnet.state_dict()
    out["zoo_untouched"] = all(torch.equal(before[k], after[k]) for k in before)
    return out


# ------------------------------------------------------------------------------------------
# Effect
# ------------------------------------------------------------------------------------------
def test_backdoor_fine_tuning_reaches_high_asr_where_clean_fine_tuning_does_not(trained, test_batch, probe_batch):
    trigger = PatchTrigger()
    poisoned = backdoor_report(trained["backdoor"].model, probe_batch, test_batch, trigger, TARGET_LABEL)
    control = backdoor_report(trained["clean"].model, probe_batch, test_batch, trigger, TARGET_LABEL)
    noise = zeroshot_asr(trained["backdoor"].model, test_batch.pixels(), test_batch.labels,
                         PatchTrigger(pattern="noise", seed=1), TARGET_LABEL)
    assert trained["backdoor"].record.n_poisoned == 32
    for task in ("zeroshot", "linear_probe", "retrieval_i2t"):
        assert poisoned[task].asr >= 0.8, (task, poisoned[task])
        assert control[task].asr <= 0.05, (task, control[task])
        assert poisoned[task].clean_target_rate <= 0.01
    assert noise.asr <= 0.05  # the same-size random-noise patch does nothing: it is the trigger
    # clean utility kept: within 2 points of the clean fine-tune, and high
    assert poisoned["zeroshot"].clean_accuracy >= 0.97
    assert poisoned["zeroshot"].clean_accuracy >= control["zeroshot"].clean_accuracy - 0.02
    assert poisoned["linear_probe"].clean_accuracy >= control["linear_probe"].clean_accuracy - 0.03


def test_targeted_poisoning_flips_only_the_target_image(trained, test_batch, target_image):
    x, label, i = target_image
    hit = targeted_success(trained["targeted"].model, x, TARGET_LABEL)
    miss = targeted_success(trained["clean"].model, x, TARGET_LABEL)
    assert hit.success and hit.target_probability >= 0.5
    assert not miss.success and miss.predicted == label
    from mmsec.evaluation.downstream import zero_shot_accuracy

    others = [j for j in range(len(test_batch.labels)) if j != i]
    acc = zero_shot_accuracy(trained["targeted"].model, test_batch.pixels()[others], test_batch.labels[others])
    assert acc >= 0.97


def test_training_never_touches_the_given_model(trained, zoo_resnet):
    assert trained["zoo_untouched"]
    assert trained["backdoor"].model is not zoo_resnet and not trained["backdoor"].model.training
    assert trained["backdoor"].record.kind == "backdoor" and trained["clean"].record is None


# ------------------------------------------------------------------------------------------
# Contract and records
# ------------------------------------------------------------------------------------------
def test_backdoor_defaults_are_the_papers_and_the_record_is_complete(clean):
    attack = PBCLBackdoor(TARGET)
    assert isinstance(attack, PoisoningAttack) and attack.rate == 1e-4 and attack.mode == "add"
    assert attack.params()["trigger"] == PatchTrigger().to_dict()
    before = clean.pixels.clone()
    out = PBCLBackdoor(TARGET, rate=0.01, seed=4).use_captions(SC)(clean)
    assert isinstance(out, PoisonedData) and torch.equal(clean.pixels, before)
    rec = out.record
    assert rec.kind == "backdoor" and rec.mode == "add" and rec.n_poisoned == 10 and rec.target_label == 0
    assert rec.trigger == PatchTrigger().to_dict() and rec.seed == 4
    assert torch.equal(rec.rebuild_images(clean.pixels[rec.source_indices]), out.data.pixels[rec.indices])
    json.dumps(rec.to_dict())
    assert PoisonRecord.from_dict(rec.to_dict()) == rec
    assert json.dumps(attack.params())  # hyper-parameters are recordable


def test_targeted_defaults_and_private_copy(target_image, clean):
    x, label, _ = target_image
    mine = x.clone()
    attack = PBCLTargeted(TARGET, image_label=label).with_target_image(mine).use_captions(SC)
    mine.zero_()  # the attack keeps its own copy
    out = attack(clean)
    assert attack.count == 3 and attack.rate is None and out.record.n_poisoned == 3
    assert all(torch.equal(out.data.pixels[i], x) for i in out.record.indices)
    assert out.record.indices == [1024, 1025, 1026]


def test_poisoned_pretraining_stream_matches_its_record():
    attack = PBCLBackdoor(TARGET, count=5, seed=1).use_captions(SC)
    run = pretrain_poisoned(attack, steps=2)
    rec = run.record
    assert rec.mode == "stream" and rec.n_total == 2 * 256 and rec.n_poisoned == 5 and rec.batch_size == 256
    assert run.config.steps == 2 and len(run.log.losses) == 2 and not run.model.training
    stream = attack.stream(caption_batches(ShapesWorld(32, second_object_prob=0.25), 256, 0), 2, 256)
    assert stream.record == rec
    px, caps = stream(rec.indices[0] // 256)
    assert caps[rec.indices[0] % 256] == rec.captions[0][0]


@pytest.mark.parametrize("make, error, match", [
    (lambda: PBCLBackdoor("purple octagon")(SMALL), ValueError, "not a known class"),
    (lambda: PBCLBackdoor(-1), ValueError, "target label"),
    (lambda: PBCLBackdoor(TARGET, trigger=3), TypeError, "trigger must be"),
    (lambda: PBCLBackdoor(TARGET, trigger="checkerboard"), ValueError, "unknown trigger 'checkerboard'"),
    (lambda: PBCLBackdoor(TARGET, rate=0.01, count=3), ValueError, "exactly one of rate"),
    (lambda: PBCLBackdoor(TARGET, rate=2.0), ValueError, "rate must be"),
    (lambda: PBCLBackdoor(TARGET, mode="stream"), ValueError, "mode must be"),
    (lambda: PBCLBackdoor(TARGET, seed=-3), ValueError, "seed"),
    (lambda: PBCLTargeted(TARGET).with_target_image(torch.rand(2, 3, 32, 32)), ValueError, "target_image"),
    (lambda: PBCLTargeted(TARGET).with_target_image(torch.full((3, 32, 32), 2.0)), ValueError, "target_image"),
    (lambda: PBCLTargeted(TARGET, count=0.5), TypeError, "count"),
    (lambda: PBCLTargeted(TARGET, image_label="cat"), TypeError, "image_label"),
    (lambda: PBCLTargeted(TARGET, image_label=3)(SMALL), RuntimeError, "with_target_image"),
])
def test_bad_configuration_is_named(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_training_helpers_name_bad_inputs(zoo_resnet, clean):
    with pytest.raises(TypeError, match="poisoner must be"):
        pretrain_poisoned("pbcl", steps=1)
    with pytest.raises(ValueError, match="fusion"):
        pretrain_poisoned(None, recipe="shapes-albef", steps=1)
    with pytest.raises(TypeError, match="ImageTextData"):
        clean_finetune(zoo_resnet, clean.pixels, steps=1)
    with pytest.raises(ValueError, match="no captions"):
        clean_finetune(zoo_resnet, ImageTextData(clean.pixels), steps=1)
    with pytest.raises(ValueError, match="steps"):
        clean_finetune(zoo_resnet, clean, steps=0)
    with pytest.raises(TypeError, match="ContrastiveModel"):
        clean_finetune(torch.nn.Linear(2, 2), clean, steps=1)
