"""VILLA and the embedding-space ITM attack it trains against: contract and effect.

Effect: one short epoch (8 steps of 64 pairs, 512 shapes-world train images) of VILLA on the
shipped ``shapes-albef``, beside the same fine-tuning without the adversary (``adv_steps=1``,
the control), evaluated by FusedEmbeddingPGD (10 steps, relative L2 radius 5%) on the ITM
decision of 256 test scenes' true and attribute-edited false captions.

Measured (seed 0): clean ITM accuracy 1.00 for all; robust (image / text modality): zoo model
0.62 / 0.40, control 0.61 / 0.38, VILLA at the paper's step (1e-3) 0.61 / 0.38 (the step is
~1e-5 of the embeddings' norm here: no effect), VILLA with the step scaled to the embeddings
(adv_lr_img 1.0, adv_lr_txt 0.5: ~2% of their norms) 0.76 / 0.35.
"""

from __future__ import annotations

import sys

import pytest
import torch

from mmsec.attacks.adversarial import FusedEmbeddingPGD
from mmsec.data.datasets import ImageTextData, ShapesDataset
from mmsec.defenses import VILLA
from mmsec.defenses.adversarial.villa import symmetric_kl
from mmsec.evaluation import itm_accuracy, itm_embedding_robustness, shapes_itm_pairs
from mmsec.registry import get

SHORT = dict(epochs=1, batch_size=64, lr=1e-4)
SCALED = dict(adv_lr_img=1.0, adv_lr_txt=0.5)  # ~2% of the tiny model's embedding norms per step
EPS = 0.05


@pytest.fixture(scope="module")
def albef():
    from mmsec.zoo import load_model

    return load_model("shapes-albef")


@pytest.fixture(scope="module")
def pairs():
    return shapes_itm_pairs("test", n=256)


@pytest.fixture(scope="module")
def trained(albef):
    data = ShapesDataset("train", n=512, image_size=32).to_data(quiet=True)
    before = {k: v.clone() for k, v in albef.state_dict().items()}
    control = VILLA(adv_steps=1, **SHORT)(albef, data, generator=torch.Generator().manual_seed(0))
    villa = VILLA(**SCALED, **SHORT)(albef, data, generator=torch.Generator().manual_seed(0))
    after = albef.state_dict()
    return control, villa, all(torch.equal(before[k], after[k]) for k in before)


def test_villa_is_registered_and_documents_its_paper():
    entry = get("defenses", "villa")
    assert entry.factory is VILLA
    doc = sys.modules[VILLA.__module__].__doc__
    assert "Gan" in doc and "NeurIPS 2020" in doc and "kl_weight" in doc


def test_villa_returns_a_new_model_and_leaves_the_input_untouched(albef, trained):
    control, villa, untouched = trained
    assert untouched
    assert villa.model is not albef and control.model is not albef
    assert villa.steps == 8 and len(villa.losses) == 8 and all(map(lambda v: v == v, villa.losses))
    assert not villa.model.training


def test_villa_raises_embedding_space_robustness_over_plain_fine_tuning(trained, pairs):
    control, villa, _ = trained
    assert itm_accuracy(villa.model, pairs) >= 0.97  # measured 1.00
    rob_control = itm_embedding_robustness(control.model, pairs, EPS, modalities=("image",))["image"]
    rob_villa = itm_embedding_robustness(villa.model, pairs, EPS, modalities=("image",))["image"]
    assert rob_villa >= rob_control + 0.08, (rob_villa, rob_control)  # measured 0.76 vs 0.61


def test_the_embedding_attack_beats_random_directions_of_the_same_norm(albef, pairs):
    tokens = albef.tokenize(pairs.captions)
    with torch.no_grad():
        feats, embeds = albef.image_features(pairs.pixels), albef.text_token_embeddings(tokens)
        noise = torch.randn(feats.shape, generator=torch.Generator().manual_seed(0))
        noise = noise * (EPS * feats.flatten(1).norm(dim=1) / noise.flatten(1).norm(dim=1)).view(-1, 1, 1)
        noisy = (albef.itm_head(albef.fuse_features(feats + noise, embeds, tokens)).argmax(-1) == pairs.labels)
    result = FusedEmbeddingPGD(eps=EPS, steps=10, modality="image")(albef, feats, embeds, tokens, pairs.labels)
    assert result.clean_accuracy >= 0.97
    assert noisy.float().mean().item() >= 0.95  # random directions do nothing at this radius
    assert result.robust_accuracy <= noisy.float().mean().item() - 0.25  # measured 0.62
    assert float(result.delta_norm.max()) <= EPS + 1e-5  # the budget holds


def test_the_text_attack_never_touches_padding(albef, pairs):
    tokens = albef.tokenize(pairs.captions[:8])
    with torch.no_grad():
        feats, embeds = albef.image_features(pairs.pixels[:8]), albef.text_token_embeddings(tokens)
    attack = FusedEmbeddingPGD(eps=0.2, steps=3, modality="text")
    result = attack(albef, feats, embeds, tokens, pairs.labels[:8])
    assert result.modality == "text" and result.delta_norm.max() <= 0.2 + 1e-5


def test_symmetric_kl():
    a, b = torch.randn(5, 2), torch.randn(5, 2)
    assert symmetric_kl(a, a).item() == pytest.approx(0.0, abs=1e-7)
    assert symmetric_kl(a, b).item() == pytest.approx(symmetric_kl(b, a).item(), rel=1e-5)
    assert symmetric_kl(a, b).item() > 0


@pytest.mark.parametrize("kwargs, match", [
    (dict(adv_steps=0), "adv_steps"),
    (dict(modalities=("image", "audio")), "modalities"),
    (dict(kl_weight=-1.0), "kl_weight"),
    (dict(lr=0.0), "lr must be > 0"),
])
def test_bad_arguments_are_named(kwargs, match):
    with pytest.raises((TypeError, ValueError), match=match):
        VILLA(**kwargs)


def test_villa_refuses_a_dual_encoder_and_data_without_captions(zoo_resnet, albef):
    data = ShapesDataset("train", n=8, image_size=32).to_data(quiet=True)
    with pytest.raises(TypeError, match="fusion model"):
        VILLA(**SHORT)(zoo_resnet, data)
    with pytest.raises(ValueError, match="captions"):
        VILLA(**SHORT)(albef, ImageTextData(pixels=data.pixels, labels=data.labels))
