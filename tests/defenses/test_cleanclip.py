"""CleanCLIP: the unimodal terms erase a poisoned fine-tune's backdoor better than the CLIP loss alone."""

import random

import pytest
import torch

import shipped_models
from mmsec.attacks.backdoor.triggers import trigger_from_dict
from mmsec.data.datasets import ShapesDataset
from mmsec.data.shapes import ShapesWorld
from mmsec.data.text_augment import eda
from mmsec.defenses.backdoor import CleanCLIP, CleanFineTune
from mmsec.defenses.backdoor.cleanclip import inmodal_loss
from mmsec.evaluation.backdoor import zeroshot_asr


@pytest.fixture(scope="module")
def backdoored():
    """The zoo ResNet fine-tuned on 1,024 clean pairs + 3% PBCL-poisoned ones (150 steps at lr 2e-3), loaded from
    tests/fixtures (tests/shipped_models.py trains it; ``pytest -m slow tests/test_shipped_models.py`` checks
    the file against a fresh training). What the poisoning plants is tests/attacks/test_pbcl.py's claim."""
    model, info = shipped_models.load("pbcl_resnet_150")
    return model, trigger_from_dict(info["trigger"])


def _score(model, trigger):
    test = ShapesWorld(32).batch("test", 0, 200)
    s = zeroshot_asr(model, test.pixels(), test.labels, trigger, 0, generator=0)
    return s.asr, s.clean_accuracy


def test_cleanclip_cuts_the_backdoor_further_than_clean_finetuning_at_the_same_budget(backdoored):
    model, trigger = backdoored
    clean = ShapesDataset("val", n=1024).to_data(quiet=True)
    asr0, clean0 = _score(model, trigger)
    assert asr0 >= 0.8  # planted (measured 0.93)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    budget = dict(steps=100, lr=1e-3)
    cc = CleanCLIP(**budget)(model, clean, generator=torch.Generator().manual_seed(0))
    ft = CleanFineTune(**budget)(model, clean, generator=torch.Generator().manual_seed(0))
    asr_cc, clean_cc = _score(cc.model, trigger)
    asr_ft, _ = _score(ft.model, trigger)
    # measured: 0.93 -> 0.06 (CleanCLIP) vs 0.24 (the CLIP loss alone), clean accuracy 1.00 throughout
    assert asr_cc <= asr0 - 0.7, (asr0, asr_cc)
    assert asr_cc <= asr_ft - 0.1, (asr_cc, asr_ft)
    assert clean_cc >= clean0 - 0.05
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input model is untouched


def test_inmodal_loss_prefers_matching_views():
    torch.manual_seed(0)
    emb = torch.randn(8, 16)
    scale = torch.tensor(20.0)
    assert inmodal_loss(emb, emb + 0.01 * torch.randn(8, 16), scale) < 0.1
    assert inmodal_loss(emb, emb[torch.randperm(8)], scale) > 1.0


def test_eda_changes_few_words_and_is_seeded():
    caption = "a small red circle in the top left"
    views = [eda(caption, random.Random(s))[0] for s in range(40)]
    assert views == [eda(caption, random.Random(s))[0] for s in range(40)]
    assert any(v != caption for v in views)
    for v in views:  # one swap or ~10% deletions: the words stay the caption's own
        assert set(v.split()) <= set(caption.split()) and len(v.split()) >= len(caption.split()) - 4
    assert eda(caption, random.Random(0), synonyms={"red": ["crimson"]}, num_aug=8)  # SR / RI with a table
    with pytest.raises(ValueError, match="sentence"):
        eda("  ", random.Random(0))
    with pytest.raises(ValueError, match="alpha_rs"):
        eda(caption, random.Random(0), alpha_rs=2.0)


@pytest.mark.parametrize("kwargs, words", [(dict(steps=0), "steps"), (dict(lr=0.0), "lr"),
                                           (dict(lambda2=-1.0), "lambda2"), (dict(batch_size=1), "batch_size")])
def test_bad_configuration_is_named(kwargs, words):
    with pytest.raises(ValueError, match=words):
        CleanCLIP(**kwargs)
