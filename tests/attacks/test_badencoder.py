"""BadEncoder (Jia, Liu & Gong, S&P 2022): effect at test size, contract, records, errors.

Effect: the shipped ``shapes-clip-resnet``'s image tower backdoored with 512 shadow train scenes (a
quarter with a second object), one "red circle" reference image from a disjoint range of train
scenes, the default ``PatchTrigger()``, 16 epochs of batch 32 (256 SGD steps) at lr 3e-3 (the code's
1e-3 needs ~1,000 steps on this encoder: its loss sits on a plateau where every embedding drifts
towards the reference before the trigger is singled out). ~18 s on one thread. A 48-class linear
probe is fit afterwards on 500 clean train scenes (another disjoint range) and scored on 300
single-object test scenes.

Measured (seed 0): probe ASR 1.00 (clean encoder 0.003, same-size noise patch 0.06), zero-shot
ASR 1.00 (clean encoder 0.00, noise patch 0.02); clean accuracy probe 0.930 vs 0.967 (a 500-image
probe; the benchmark's 2,000-image probe loses 0.2 points), zero-shot 0.990 vs 1.000.
"""

from __future__ import annotations

import copy
import json

import pytest
import torch

from mmsec.attacks.backdoor import PatchTrigger
from mmsec.attacks.backdoor.badencoder import LOSS_COLUMNS, BadEncoder, BadEncoderRecord, BadEncoderResult
from mmsec.data.shapes import ShapesWorld, shape_color_classes
from mmsec.evaluation.backdoor import probe_asr, zeroshot_asr
from mmsec.models.towers import image_tower_parameters

TARGET = "red circle"
TARGET_LABEL = shape_color_classes().index(TARGET)


@pytest.fixture(scope="module")
def shadow() -> torch.Tensor:
    return ShapesWorld(32, second_object_prob=0.25).batch("train", 0, 512).pixels()


@pytest.fixture(scope="module")
def reference() -> tuple[torch.Tensor, list[int]]:
    pool = ShapesWorld(32).batch("train", 90_000, 300)
    idx = (pool.labels == TARGET_LABEL).nonzero().flatten()[:1]
    return pool.pixels()[idx], [90_000 + int(i) for i in idx]


@pytest.fixture(scope="module")
def attacked(badencoder_resnet) -> BadEncoderResult:
    return badencoder_resnet  # tests/conftest.py: the same shadow set and reference as the fixtures above


def test_effect_probe_and_zeroshot(zoo_resnet, attacked):
    probe, test = ShapesWorld(32).batch("train", 100_000, 500), ShapesWorld(32).batch("test", 0, 300)
    trigger = PatchTrigger()
    noise = PatchTrigger(pattern="noise", size=trigger.size, position=trigger.position, seed=1)

    def scores(model, trig):
        p = probe_asr(model, probe.pixels(), probe.labels, test.pixels(), test.labels, trig, TARGET_LABEL)
        z = zeroshot_asr(model, test.pixels(), test.labels, trig, TARGET_LABEL)
        return p, z

    bad_p, bad_z = scores(attacked.model, trigger)
    clean_p, clean_z = scores(zoo_resnet, trigger)
    noise_p, noise_z = scores(attacked.model, noise)
    assert bad_p.asr >= 0.85 and bad_z.asr >= 0.85
    assert clean_p.asr <= 0.1 and clean_z.asr <= 0.1
    assert noise_p.asr <= 0.3 and noise_z.asr <= 0.3
    assert bad_p.clean_accuracy >= clean_p.clean_accuracy - 0.06
    assert bad_z.clean_accuracy >= clean_z.clean_accuracy - 0.04


def test_contract(zoo_resnet, attacked, shadow):
    before = {k: v.clone() for k, v in zoo_resnet.state_dict().items()}
    result = BadEncoder(epochs=1, batch_size=64)(zoo_resnet, shadow[:128], shadow[:2], generator=1)
    assert result.model is not zoo_resnet
    for k, v in zoo_resnet.state_dict().items():
        assert torch.equal(v, before[k]), f"the input model's {k} changed"
    assert all(p.grad is None for p in zoo_resnet.parameters())

    tower = {n for n, _ in image_tower_parameters(copy.deepcopy(zoo_resnet), shadow[:2])}
    new = attacked.model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], new[k])}
    assert changed and changed <= tower, f"parameters outside the image tower changed: {sorted(changed - tower)[:5]}"
    assert torch.equal(attacked.model.logit_scale, zoo_resnet.logit_scale)
    bn = [k for k in before if "running_" in k or "num_batches" in k]
    assert bn and all(torch.equal(before[k], new[k]) for k in bn)  # BatchNorm frozen, as the paper's code
    tokens = zoo_resnet.tokenize(["a red circle"])
    assert torch.equal(attacked.model.encode_text(tokens), zoo_resnet.encode_text(tokens))
    assert not attacked.model.training and all(p.grad is None for p in attacked.model.parameters())

    assert result.loss_trace.shape == (2, len(LOSS_COLUMNS)) and result.record.steps == 2
    again = BadEncoder(epochs=1, batch_size=64)(zoo_resnet, shadow[:128], shadow[:2], generator=1)
    assert torch.equal(again.loss_trace, result.loss_trace)  # deterministic under a seed


def test_record(attacked, reference, shadow):
    record = attacked.record
    assert isinstance(record, BadEncoderRecord)
    assert record.target == TARGET and record.n_reference == 1 and record.shadow_size == 512
    assert record.reference_indices == reference[1] and record.reference_seed == 0
    assert record.steps == 16 * 16 == attacked.loss_trace.shape[0]
    rebuilt = BadEncoderRecord(**json.loads(json.dumps(record.to_dict())))
    x = shadow[:4]
    assert torch.equal(rebuilt.rebuild_trigger()(x), PatchTrigger()(x))
    assert rebuilt.params["lambda1"] == rebuilt.params["lambda2"] == 1.0


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(trigger="pach"), ValueError, "trigger"),
    (dict(trigger=3), TypeError, "trigger"),
    (dict(lambda1=-1.0), ValueError, "lambda1"),
    (dict(lambda2=float("nan")), ValueError, "lambda2"),
    (dict(epochs=0), ValueError, "epochs"),
    (dict(batch_size=1.5), TypeError, "batch_size"),
    (dict(lr=0.0), ValueError, "lr"),
    (dict(momentum=2.0), ValueError, "momentum"),
    (dict(target=True), TypeError, "target"),
    (dict(reference_flip="yes"), TypeError, "reference_flip"),
])
def test_bad_configuration(kwargs, error, words):
    with pytest.raises(error, match=words):
        BadEncoder(**kwargs)


def test_bad_inputs(zoo_resnet, shadow):
    attack = BadEncoder(epochs=1)
    with pytest.raises(ValueError, match="shadow_pixels"):
        attack(zoo_resnet, shadow[0], shadow[:1])
    with pytest.raises(ValueError, match="reference_pixels"):
        attack(zoo_resnet, shadow[:8], shadow[:1] * 2)
    with pytest.raises(ValueError, match="reference_pixels"):
        attack(zoo_resnet, shadow[:8], shadow[:0])
    with pytest.raises(ValueError, match="reference_indices"):
        attack(zoo_resnet, shadow[:8], shadow[:2], reference_indices=[3])
    with pytest.raises(TypeError):
        attack(torch.nn.Linear(2, 2), shadow[:8], shadow[:1])
