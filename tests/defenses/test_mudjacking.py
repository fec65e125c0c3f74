"""Mudjacking: one bug instance repairs a BadEncoder backdoor; without the generalisability term it does not."""

import pytest
import torch

from mmsec.data.shapes import ShapesWorld
from mmsec.defenses.backdoor.mudjacking import Mudjacking, reverse_engineer_trigger
from mmsec.evaluation.backdoor import zeroshot_asr


@pytest.fixture(scope="module")
def bug(badencoder_resnet):
    """x_b: a triggered validation scene of a non-target class; x_r: another clean scene of that class."""
    trigger = badencoder_resnet.record.rebuild_trigger()
    scenes = ShapesWorld(32).batch("val", 1000, 400)
    c = int(scenes.labels[0])
    x_b = trigger.apply(scenes.pixels()[:1], torch.Generator().manual_seed(0))[0]
    x_r = scenes.pixels()[1:][scenes.labels[1:] == c][0]
    return x_b, x_r


def _score(model, trigger):
    test = ShapesWorld(32).batch("test", 0, 300)
    s = zeroshot_asr(model, test.pixels(), test.labels, trigger, 0, generator=0)
    return s.asr, s.clean_accuracy


def test_one_bug_input_repairs_the_encoder_at_a_small_clean_cost(badencoder_resnet, bug):
    model, trigger = badencoder_resnet.model, badencoder_resnet.record.rebuild_trigger()
    validation = ShapesWorld(32).batch("val", 0, 256).pixels()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    asr0, clean0 = _score(model, trigger)
    patched = Mudjacking()(model, *bug, validation, generator=0)
    asr1, clean1 = _score(patched.model, trigger)
    # measured: ASR 1.00 -> 0.08, clean zero-shot 0.990 -> 0.983
    assert asr0 >= 0.85 and asr1 <= asr0 - 0.7, (asr0, asr1)
    assert clean1 >= clean0 - 0.03, (clean0, clean1)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # input model untouched
    # the ablation: effectiveness + locality alone fix x_b but leave the trigger working (measured 1.00)
    ablated = Mudjacking(lambda_g=0.0)(model, *bug, validation, generator=0)
    assert _score(ablated.model, trigger)[0] >= asr1 + 0.5


def test_the_recovered_trigger_moves_a_clean_image_onto_the_bug_input(badencoder_resnet, bug):
    rec = reverse_engineer_trigger(badencoder_resnet.model, *bug, steps=100)
    assert rec.similarity >= 0.9 and rec.mask.shape == (1, 32, 32) and rec.pattern.shape == (3, 32, 32)
    assert float(rec.mask.mean()) <= 0.3  # a small trigger, not a replaced image


@pytest.mark.parametrize("kwargs, words", [(dict(lambda_l=-1.0), "lambda_l"), (dict(epochs=0), "epochs"),
                                           (dict(lr=0.0), "lr")])
def test_bad_configuration_is_named(kwargs, words):
    with pytest.raises(ValueError, match=words):
        Mudjacking(**kwargs)


def test_mudjacking_is_the_registered_repair():
    from mmsec import builtins, registry
    from mmsec.defenses.base import RepairDefense
    from mmsec.methods import build

    builtins.load()
    assert registry.get("repairs", "mudjacking").factory is Mudjacking and issubclass(Mudjacking, RepairDefense)
    m = build("repairs", {"name": "mudjacking", "params": {"epochs": 3, "lambda_g": 0.5}})
    assert (m.epochs, m.lambda_g) == (3, 0.5) and build("repairs", m.config()).config() == m.config()
    assert "quiet" not in m.params()  # a display switch, not a hyper-parameter a result records


def test_bad_inputs_are_named(badencoder_resnet, bug):
    x_b, x_r = bug
    with pytest.raises(ValueError, match="bug_input"):
        Mudjacking(epochs=1)(badencoder_resnet.model, torch.rand(2, 3, 32, 32), x_r, x_r[None])
    with pytest.raises(ValueError, match="same size"):
        reverse_engineer_trigger(badencoder_resnet.model, x_b, torch.rand(3, 16, 16))
