"""SGA (Lu et al., ICCV 2023): contract, white-box effect and the paper's transfer claim at test size.

Setting: 96 test scenes with their first caption, caption set = the scene's 6 caption templates
(the 5 most similar to the image kept), eps 2/255 (the paper's), one typo per caption: the
transfer comparison uses meaning-preserving candidates (``CharacterEdits``), since the default
lexical neighbours rewrite a colour into another colour, which "breaks" retrieval trivially.
Pairs are crafted on ``shapes-clip-resnet`` and scored on ``shapes-clip-vit`` and ``shapes-albef``
(ASR: mean of TR and IR at R@1).

Measured (seed 0; ASR on vit / albef): PGD-10 0.01 / 0.00, Co-Attack 0.46 / 0.36, SGA 0.49 / 0.37,
SGA with the image-guided word ranking (``importance="guided"``) 0.77 / 0.62. SGA beats image-only
PGD by far, as in the paper, but implemented as in its code it only ties Co-Attack here (500 pairs,
``recipes/transfer.yaml``: +0.01 to +0.06 from the CLIPs, -0.02 to -0.04 from shapes-albef).
On the zoo's word-level tokenizers every typo becomes ``<unk>``, so the text attack reduces to
choosing a word, which both attacks rank by the same KL importance; and at 2/255 the adversarial
image (image set and caption set or not) breaks almost nothing on another model. From
shapes-clip-resnet the image-guided ranking picks colour and shape words instead of position
words, which is what transfers. The tests assert what holds: SGA >> noise (white-box) and
>> PGD (transfer), SGA not below Co-Attack, the guided variant above both (from this source).
SGA's own component, the set-level guidance of the image, is tested against single-scale, single-caption SGA
where the image transfers at all (16/255, image step alone; issue 20's distinguishing test): the scales carry
the transfer, and the caption set, which adds nothing measurable to it here, is tested by what it does on the
source model.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmsec.attacks.multimodal import SGA, CoAttack, SGAResult
from mmsec.attacks.text import BertAttack, CharacterEdits
from mmsec.attacks.text.bert_attack import text_tower_embedder
from mmsec.data.shapes import ShapesWorld
from mmsec.evaluation.pair_retrieval import attack_success, caption_positives, pair_retrieval

EPS = 2 / 255
N = 96


@pytest.fixture(scope="module")
def albef():
    from mmsec.zoo import load_model

    return load_model("shapes-albef")


@pytest.fixture(scope="module")
def pairs():
    batch = ShapesWorld(image_size=32).batch("test", 0, N)
    captions = [c[0] for c in batch.captions]
    return batch.pixels(), captions, batch.captions, caption_positives(captions)


def typos() -> BertAttack:
    return BertAttack(candidates=CharacterEdits())


@pytest.fixture(scope="module")
def crafted(zoo_resnet, zoo_vit, albef, pairs):
    """Pairs crafted on shapes-clip-resnet; ASR on every zoo model."""
    pixels, captions, sets, positives = pairs
    models = {"resnet": zoo_resnet, "vit": zoo_vit, "albef": albef}
    clean = {k: pair_retrieval(m, pixels, captions, positives) for k, m in models.items()}
    noise = (pixels + (torch.rand(pixels.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * EPS).clamp(0, 1)
    results = {
        "noise": (noise, captions, None),
        "pgd": CoAttack(eps=EPS, mode="image")(zoo_resnet, pixels, captions, generator=0),
        "co": CoAttack(eps=EPS, mode="co", text_attack=typos())(zoo_resnet, pixels, captions, generator=0),
        "sga": SGA(eps=EPS, text_attack=typos())(zoo_resnet, pixels, captions, generator=0, caption_sets=sets),
        "sga_guided": SGA(eps=EPS, text_attack=typos(), importance="guided")(
            zoo_resnet, pixels, captions, generator=0, caption_sets=sets),
    }
    asr = {}
    for name, r in results.items():
        adv_pixels, adv_texts = (r[0], r[1]) if isinstance(r, tuple) else (r.adv_pixels, r.adv_texts)
        asr[name] = {k: attack_success(clean[k], pair_retrieval(m, adv_pixels, adv_texts, positives))["asr"]
                     for k, m in models.items()}
    return results, asr


def test_sga_beats_noise_white_box(crafted):
    _, asr = crafted
    assert asr["noise"]["resnet"] <= 0.02
    assert asr["sga"]["resnet"] >= asr["noise"]["resnet"] + 0.35, asr  # measured 0.49 vs 0.00


def test_sga_image_step_beats_noise_white_box(zoo_resnet, pairs):
    # The image alone (no word changed, so guided by the clean caption set): at 8/255, where it shows.
    pixels, captions, sets, positives = pairs
    clean = pair_retrieval(zoo_resnet, pixels, captions, positives)
    noise = (pixels + (torch.rand(pixels.shape, generator=torch.Generator().manual_seed(0)) * 2 - 1) * 8 / 255)
    noisy = attack_success(clean, pair_retrieval(zoo_resnet, noise.clamp(0, 1), captions, positives))["asr"]
    result = SGA(eps=8 / 255, text_attack=BertAttack(max_words=0))(zoo_resnet, pixels, captions, generator=0,
                                                                     caption_sets=sets)
    assert result.adv_texts == captions
    attacked = attack_success(clean, pair_retrieval(zoo_resnet, result.adv_pixels, captions, positives))["asr"]
    assert noisy <= 0.02 and attacked >= noisy + 0.4, (attacked, noisy)  # measured 0.78 vs 0.00


def test_transfer_sga_beats_pgd_and_does_not_lose_to_co_attack(crafted):
    _, asr = crafted
    for target in ("vit", "albef"):
        sga, co, pgd = asr["sga"][target], asr["co"][target], asr["pgd"][target]
        assert sga >= pgd + 0.25, (target, asr)  # measured 0.49 vs 0.01 (vit), 0.37 vs 0.00 (albef)
        assert sga >= co - 0.03, (target, asr)  # the paper's claim is sga > co; measured +0.02 / +0.01: a tie
        # The image-guided word ranking is what transfers here (measured 0.77 / 0.62).
        assert asr["sga_guided"][target] >= max(sga, co) + 0.15, (target, asr)


def test_budgets_and_one_word(crafted, pairs):
    pixels, captions, sets, _ = pairs
    results, _ = crafted
    for name in ("sga", "sga_guided"):
        r = results[name]
        assert isinstance(r, SGAResult)
        assert (r.adv_pixels - pixels).abs().max() <= EPS + 1e-6
        assert r.adv_pixels.min() >= 0 and r.adv_pixels.max() <= 1 and not torch.equal(r.adv_pixels, pixels)
        assert r.loss_trace.shape == (10, N)
        assert all(n <= 1 for n in r.text.words_changed)
        assert sum(a != c for a, c in zip(r.adv_texts, captions, strict=True)) >= 0.9 * N  # measured: all
        for cap, full, used, guide in zip(captions, sets, r.caption_sets, r.guide_texts, strict=True):
            assert used[0] == cap and len(used) == 5 and set(used) <= set(full)
            assert len(guide) == 5
        assert r.params["eps"] == EPS and r.params["step_size"] == pytest.approx(0.5 / 255)
        assert r.params["scales"] == [0.5, 0.75, 1.25, 1.5]


@pytest.fixture(scope="module")
def set_guidance(zoo_resnet, pairs):
    """The image step alone (no word changed) at 16/255 on the first 48 pairs: SGA (4 scales + the caption set),
    its ablation (one scale, the pair's caption: what is left without the set-level guidance) and the caption set
    without the scales. ~3.5 CPU-s."""
    pixels, captions, sets, positives = pairs
    pixels, captions, sets, positives = pixels[:48], captions[:48], sets[:48], positives[:48, :48]
    image_only = dict(eps=16 / 255, text_attack=BertAttack(max_words=0))
    return {
        "sga": SGA(**image_only)(zoo_resnet, pixels, captions, generator=0, caption_sets=sets),
        "ablated": SGA(**image_only, scales=None)(zoo_resnet, pixels, captions, generator=0),
        "sets_only": SGA(**image_only, scales=None)(zoo_resnet, pixels, captions, generator=0, caption_sets=sets),
    }, (pixels, captions, positives)


def test_set_level_guidance_is_what_transfers(set_guidance, zoo_resnet, zoo_vit, albef):
    """The distinguishing test: SGA against single-scale, single-caption SGA, in transfer. Image step only, at
    16/255 where the image transfers at all (at 2/255 and 8/255 it breaks 0.00-0.16 on another model, with or
    without the guidance). Measured (48 pairs, seeds 0 / 1 / 2), SGA vs its ablation: white-box ASR 1.00 / 0.98 /
    1.00 vs 1.00 / 0.99 / 1.00; ASR on shapes-albef 0.22 / 0.24 / 0.19 vs 0.01 / 0.02 / 0.04; drop of the
    image-caption cosine on shapes-clip-vit 0.165 / 0.151 / 0.171 vs 0.117 / 0.087 / 0.094 (its ASR: 0.35 / 0.31 /
    0.32 vs 0.31 / 0.15 / 0.16). The scales carry it: scales without the caption set reach 0.20-0.26 on
    shapes-albef, the caption set without the scales 0.01-0.03 (96 pairs gave the same picture)."""
    runs, (pixels, captions, positives) = set_guidance
    sga, ablated = runs["sga"], runs["ablated"]
    assert sga.caption_sets[0] != [captions[0]] and ablated.caption_sets == [[c] for c in captions]
    assert sga.adv_texts == ablated.adv_texts == captions

    def asr(model, result):
        clean = pair_retrieval(model, pixels, captions, positives)
        return attack_success(clean, pair_retrieval(model, result.adv_pixels, captions, positives))["asr"]

    def cosine_drop(model, result):
        with torch.no_grad():
            txt = model.encode_text(model.tokenize(captions)).float()
            cos = [F.cosine_similarity(model.encode_image(x).float(), txt).mean().item()
                   for x in (pixels, result.adv_pixels)]
        return cos[0] - cos[1]

    white_box = asr(zoo_resnet, sga), asr(zoo_resnet, ablated)
    on_albef = asr(albef, sga), asr(albef, ablated)
    on_vit = cosine_drop(zoo_vit, sga), cosine_drop(zoo_vit, ablated)
    assert min(white_box) >= 0.95, white_box  # white-box, both break it
    assert on_albef[0] >= on_albef[1] + 0.1, on_albef
    assert on_vit[0] >= on_vit[1] + 0.025, on_vit


def test_the_caption_set_moves_the_image_away_from_all_of_its_captions(set_guidance, zoo_resnet):
    """What the caption set does by itself (it adds nothing measurable to transfer here, see above): on the source
    model the adversarial image moves away from the *other* captions of its set, not only from the pair's own.
    Mean cosine to the other captions: clean 0.858; with the set -0.343 / -0.341 / -0.347, without it -0.298 /
    -0.294 / -0.305 (seeds 0 / 1 / 2)."""
    runs, (pixels, captions, _) = set_guidance
    used = runs["sets_only"].caption_sets

    def other_captions_cosine(adv_pixels):
        with torch.no_grad():
            img = F.normalize(zoo_resnet.encode_image(adv_pixels).float(), dim=-1)
            values = []
            for i, caption_set in enumerate(used):
                others = [t for t in caption_set if t != captions[i]]
                txt = F.normalize(zoo_resnet.encode_text(zoo_resnet.tokenize(others)).float(), dim=-1)
                values.append((txt @ img[i]).mean().item())
        return sum(values) / len(values)

    with_set, without = other_captions_cosine(runs["sets_only"].adv_pixels), other_captions_cosine(
        runs["ablated"].adv_pixels)
    assert all(len(s) == 5 for s in used)
    assert with_set <= without - 0.02, (with_set, without)


def test_same_seed_same_pairs_and_no_sets_means_own_caption(zoo_resnet, pairs):
    pixels, captions, _, _ = pairs
    a = SGA(text_attack=typos())(zoo_resnet, pixels[:4], captions[:4], generator=3)
    b = SGA(text_attack=typos())(zoo_resnet, pixels[:4], captions[:4], generator=3)
    assert torch.equal(a.adv_pixels, b.adv_pixels) and a.adv_texts == b.adv_texts
    assert a.caption_sets == [[c] for c in captions[:4]]


class _Towers:
    """Only the unimodal towers of a model: SGA must not need anything else."""

    def __init__(self, model):
        self.encode_image, self.encode_text, self.tokenize = model.encode_image, model.encode_text, model.tokenize


def test_fusion_model_is_attacked_through_its_unimodal_embeddings(albef, pairs):
    pixels, captions, sets, _ = pairs
    attack = SGA(text_attack=typos())
    on_model = attack(albef, pixels[:6], captions[:6], generator=0, caption_sets=sets[:6])
    on_towers = attack(_Towers(albef), pixels[:6], captions[:6], generator=0, caption_sets=sets[:6])
    assert torch.equal(on_model.adv_pixels, on_towers.adv_pixels) and on_model.adv_texts == on_towers.adv_texts


def test_word_ranking_and_choice_use_their_own_scores(zoo_resnet):
    # BertAttack's importance= hook, which SGA uses: it ranks the words (here: the last word first), score= chooses.
    texts = ["a small cyan square in the bottom right", "a large red circle in the top left"]
    calls = []

    def rank(embeds, row):
        calls.append(("rank", row))
        return torch.arange(embeds.shape[0], dtype=torch.float)

    def choose(embeds, row):
        calls.append(("choose", row))
        return torch.tensor([-1.0] + [0.0] * (embeds.shape[0] - 1))

    result = typos()(text_tower_embedder(zoo_resnet), texts, score=choose, importance=rank)
    assert [c[0][0] for c in result.changes] == [7, 7]  # "right", "left": the last words
    assert calls == [("rank", 0), ("choose", 0), ("rank", 1), ("choose", 1)]


@pytest.mark.parametrize("kwargs, match", [(dict(eps=2.0), "eps"), (dict(steps=0), "steps"),
                                           (dict(importance="bert"), "importance"),
                                           (dict(scales="0.5,big"), "scales"), (dict(scales=[0.0]), "scales"),
                                           (dict(max_captions=0), "max_captions"),
                                           (dict(noise_std=-0.1), "noise_std")])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SGA(**kwargs)


def test_scales_accept_the_codes_command_line_form():
    assert SGA(scales="0.5,0.75,1.25,1.5").scales == (0.5, 0.75, 1.25, 1.5)
    assert SGA(scales=None).scales == ()


def test_rows_must_align(zoo_resnet, pairs):
    pixels, captions, sets, _ = pairs
    with pytest.raises(ValueError, match="row-aligned"):
        SGA()(zoo_resnet, pixels[:3], captions[:2])
    with pytest.raises(ValueError, match="row-aligned"):
        SGA()(zoo_resnet, pixels[:3], captions[:3], caption_sets=sets[:2])
    with pytest.raises(ValueError, match=r"caption_sets\[0\]"):
        SGA()(zoo_resnet, pixels[:1], captions[:1], caption_sets=[captions[0]])
    with pytest.raises(TypeError, match="encode_text"):
        SGA()(object(), pixels[:1], captions[:1])
