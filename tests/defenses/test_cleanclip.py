"""CleanCLIP: the unimodal terms erase a poisoned fine-tune's backdoor better than the CLIP loss alone.

The distinguishing test (issue 20): CleanCLIP against the CLIP loss alone. Measured on the shipped PBCL
fine-tune (100 steps at lr 1e-3 on 1,024 clean val pairs; defense seeds 0 / 1 / 2; 500 test scenes):

==============================  =====================  ======================  =====================
model                           zero-shot ASR          cos(f(T(x)), f(x))      held-out in-modal loss
==============================  =====================  ======================  =====================
backdoored                      0.848                  0.664                   5.93
CleanCLIP                       0.035 / 0.076 / 0.066  0.924 / 0.912 / 0.910   2.12 / 2.07 / 2.10
CLIP loss on the same batches   0.080 / 0.035 / 0.105  0.813 / 0.839 / 0.810   5.92 / 5.99 / 6.07
  (``lambda2=0``)
clean fine-tuning (FT)          0.140 / 0.076 / 0.111  0.795 / 0.816 / 0.805   6.03 / 5.97 / 6.14
==============================  =====================  ======================  =====================

The backdoor's ASR does not tell CleanCLIP from its ablation at this scale (seed 1 reverses the order; the
200-scene ASR of the first test below, 0.026 vs FT 0.164, holds at seed 0, not at seeds 1-2: 0.077 vs 0.087,
0.072 vs 0.144). What the unimodal terms do, on every seed, is what they are for: a triggered image stays close
to its own clean image (cosine +0.07 to +0.11 over the ablation, +0.10 to +0.13 over FT), and the in-modal loss
on held-out augmented views falls from ~6 to ~2 (the ablation leaves it where the backdoored model had it).
"""

import random

import pytest
import torch
import torch.nn.functional as F

import shipped_models
from mmsec.attacks.backdoor.triggers import trigger_from_dict
from mmsec.data.datasets import ShapesDataset
from mmsec.data.shapes import ShapesWorld
from mmsec.data.text_augment import eda
from mmsec.defenses.backdoor import CleanCLIP, CleanFineTune
from mmsec.defenses.backdoor.cleanclip import inmodal_loss
from mmsec.evaluation.backdoor import zeroshot_asr
from mmsec.train.simclr import AugmentConfig, augment


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


def _unimodal_effect(model, trigger) -> tuple[float, float]:
    """Mean cos(f(triggered x), f(x)) on 500 test scenes, and the image in-modal loss on 256 held-out val scenes
    against one fixed augmented view of each (what CleanCLIP's image term trains, on images it never saw)."""
    x = ShapesWorld(32).batch("test", 0, 500).pixels()
    held = ShapesWorld(32).batch("val", 20_000, 256).pixels()
    views = augment(held, torch.Generator().manual_seed(5), AugmentConfig(size=32))
    model = model.eval()
    with torch.no_grad():
        cos = F.cosine_similarity(model.encode_image(trigger.apply(x, torch.Generator().manual_seed(0))),
                                  model.encode_image(x)).mean().item()
        inmodal = inmodal_loss(model.encode_image(held), model.encode_image(views), model.logit_scale).item()
    return cos, inmodal


BUDGET = dict(steps=100, lr=1e-3)


@pytest.fixture(scope="module")
def clean_pairs():
    return ShapesDataset("val", n=1024).to_data(quiet=True)


@pytest.fixture(scope="module")
def cleaned(backdoored, clean_pairs):
    """The backdoored model cleaned by CleanCLIP and by clean fine-tuning (the CLIP loss alone), same budget and
    seed; and whether the input model came back untouched."""
    model, _ = backdoored
    before = {k: v.clone() for k, v in model.state_dict().items()}
    cc = CleanCLIP(**BUDGET)(model, clean_pairs, generator=torch.Generator().manual_seed(0))
    ft = CleanFineTune(**BUDGET)(model, clean_pairs, generator=torch.Generator().manual_seed(0))
    untouched = all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    return cc.model, ft.model, untouched


def test_cleanclip_cuts_the_backdoor_further_than_clean_finetuning_at_the_same_budget(backdoored, cleaned):
    model, trigger = backdoored
    cc, ft, untouched = cleaned
    asr0, clean0 = _score(model, trigger)
    assert asr0 >= 0.8  # planted (measured 0.83)
    asr_cc, clean_cc = _score(cc, trigger)
    asr_ft, _ = _score(ft, trigger)
    # measured: 0.83 -> 0.03 (CleanCLIP) vs 0.16 (the CLIP loss alone), clean accuracy 1.00 throughout. The margin
    # over clean fine-tuning is not a stable effect at this scale (gaps 0.13 / 0.01 / 0.07 at defense seeds 0 / 1 / 2,
    # see the module docstring), so only "no worse than it" is asserted here; what separates CleanCLIP from its
    # ablation on every seed is tested below (the triggered image's embedding).
    assert asr_cc <= asr0 - 0.7, (asr0, asr_cc)
    assert asr_cc <= asr_ft + 0.02, (asr_cc, asr_ft)
    assert clean_cc >= clean0 - 0.05
    assert untouched  # the input model is untouched


def test_the_unimodal_terms_keep_a_triggered_image_near_its_clean_embedding(backdoored, cleaned):
    """The distinguishing test, against the CLIP loss alone (FT, the fixture's; the exact ablation on the same
    augmented batches is the slow test below): margins from seeds 0-2 (module docstring), where CleanCLIP with
    its unimodal terms dropped lands within 0.024 of FT in cosine and at FT's in-modal loss."""
    _, trigger = backdoored
    cc, ft, _ = cleaned
    cos_cc, inmodal_cc = _unimodal_effect(cc, trigger)
    cos_ft, inmodal_ft = _unimodal_effect(ft, trigger)
    assert cos_cc >= cos_ft + 0.05, (cos_cc, cos_ft)  # measured 0.924 vs 0.795 (seed 0)
    assert inmodal_cc <= inmodal_ft - 2.0, (inmodal_cc, inmodal_ft)  # measured 2.12 vs 6.03


@pytest.mark.slow
def test_cleanclip_against_its_own_ablation_on_the_same_augmented_batches(backdoored, cleaned, clean_pairs):
    """CleanCLIP(lambda2=0): the same augmented batches through the model (its BatchNorm sees them), the unimodal
    terms weighted 0. ~18 CPU-s more than the fixture."""
    model, trigger = backdoored
    cc, _, _ = cleaned
    ablated = CleanCLIP(lambda2=0.0, **BUDGET)(model, clean_pairs, generator=torch.Generator().manual_seed(0)).model
    cos_cc, inmodal_cc = _unimodal_effect(cc, trigger)
    cos_ab, inmodal_ab = _unimodal_effect(ablated, trigger)
    assert cos_cc >= cos_ab + 0.04, (cos_cc, cos_ab)  # measured +0.111 / +0.073 / +0.099 at seeds 0 / 1 / 2
    assert inmodal_cc <= inmodal_ab - 2.0, (inmodal_cc, inmodal_ab)  # measured 2.12 vs 5.92 (seed 0)


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
