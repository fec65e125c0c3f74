"""Co-Attack (Zhang, Yi, Sang, ACM MM 2022): contract and the paper's claim at test size.

Effect: white-box on the shipped fusion model ``shapes-albef``, 96 test scenes with their first
caption, retrieval by ITC top-16 re-ranked by ITM; budget 4/255 (where image-only PGD breaks few
pairs) and one typo per caption (meaning-preserving candidates). Measured (seed 0): ASR
image-only 0.06, text-only 0.72, both (vanilla) 0.80, Co-Attack 0.92 (mean of TR and IR); at
8/255 image-only 0.41 against 0.00 for uniform noise of the same budget.
"""

from __future__ import annotations

import pytest
import torch

from mmsec.attacks.multimodal import CoAttack
from mmsec.attacks.text import BertAttack, CharacterEdits
from mmsec.data.shapes import ShapesWorld
from mmsec.evaluation.pair_retrieval import attack_success, caption_positives, pair_retrieval

EPS = 4 / 255
N = 96


@pytest.fixture(scope="module")
def albef():
    from mmsec.zoo import load_model

    return load_model("shapes-albef")


@pytest.fixture(scope="module")
def pairs():
    batch = ShapesWorld(image_size=32).batch("test", 0, N)
    captions = [c[0] for c in batch.captions]
    return batch.pixels(), captions, caption_positives(captions)


@pytest.fixture(scope="module")
def asr(albef, pairs):
    pixels, captions, positives = pairs
    clean = pair_retrieval(albef, pixels, captions, positives)
    out = {}
    for mode in ("image", "text", "both", "co"):
        attack = CoAttack(eps=EPS, mode=mode, text_attack=BertAttack(candidates=CharacterEdits()))
        result = attack(albef, pixels, captions, generator=0)
        out[mode] = (result, attack_success(clean, pair_retrieval(albef, result.adv_pixels, result.adv_texts,
                                                                       positives))["asr"])
    return out


def test_co_attack_beats_each_modality_alone(asr):
    image, text, co = asr["image"][1], asr["text"][1], asr["co"][1]
    assert co >= text + 0.08, (co, text)  # the paper's claim; measured 0.92 vs 0.72
    assert co >= image + 0.5, (co, image)  # measured 0.92 vs 0.06
    assert co >= asr["both"][1] + 0.04  # the text-guided image perturbation beats an independent one (0.80)


def test_budgets_hold_and_modes_touch_only_their_modality(asr, pairs):
    pixels, captions, _ = pairs
    for mode, (result, _) in asr.items():
        assert (result.adv_pixels - pixels).abs().max() <= EPS + 1e-6
        assert result.adv_pixels.min() >= 0 and result.adv_pixels.max() <= 1
        if mode == "text":
            assert torch.equal(result.adv_pixels, pixels)
        else:
            assert not torch.equal(result.adv_pixels, pixels) and result.loss_trace.shape == (10, N)
        if mode == "image":
            assert result.adv_texts == captions and result.text is None
        else:
            assert all(n <= 1 for n in result.text.words_changed)
            assert sum(a != c for a, c in zip(result.adv_texts, captions, strict=True)) >= 0.9 * N


def test_image_attack_beats_random_noise_of_the_same_budget(albef, pairs, asr):
    pixels, captions, positives = pairs
    clean = pair_retrieval(albef, pixels, captions, positives)
    noise = (pixels + (torch.rand(pixels.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 8 / 255).clamp(0, 1)
    noisy = attack_success(clean, pair_retrieval(albef, noise, captions, positives))["asr"]
    result = CoAttack(eps=8 / 255, mode="image")(albef, pixels, captions, generator=0)
    attacked = attack_success(clean, pair_retrieval(albef, result.adv_pixels, captions, positives))["asr"]
    assert noisy <= 0.05 and attacked >= noisy + 0.3, (attacked, noisy)  # measured 0.41 vs 0.00


def test_co_attack_on_a_dual_encoder_uses_unimodal_embeddings(zoo_resnet, pairs):
    pixels, captions, positives = pairs
    attack = CoAttack(eps=EPS, mode="co", text_attack=BertAttack(candidates=CharacterEdits()))
    assert attack._kind(zoo_resnet) == "unimodal"
    result = attack(zoo_resnet, pixels[:16], captions[:16], generator=0)
    assert result.adv_pixels.shape == pixels[:16].shape and len(result.adv_texts) == 16
    with pytest.raises(TypeError, match="fusion model"):
        CoAttack(embedding="fused")(zoo_resnet, pixels[:2], captions[:2])


@pytest.mark.parametrize("kwargs, match", [(dict(mode="all"), "mode"), (dict(eps=2.0), "eps"),
                                           (dict(embedding="joint"), "embedding")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        CoAttack(**kwargs)


def test_captions_must_match_the_images(albef, pairs):
    pixels, captions, _ = pairs
    with pytest.raises(ValueError, match="row-aligned"):
        CoAttack()(albef, pixels[:3], captions[:2])
