"""RoCLIP and SafeCLIP: their mechanisms, and what they do to a backdoor planted by poisoned pre-training."""

import pytest
import torch
import torch.nn.functional as F

from mmsec.data.datasets import ShapesDataset
from mmsec.defenses.backdoor.roclip import RoCLIP
from mmsec.defenses.backdoor.safeclip import (
    SafeCLIP,
    pair_similarity,
    posterior_of_high_component,
    unimodal_nn_loss,
)
from mmsec.train.nn_pool import NearestNeighbourPool
from mmsec.zoo import load_model

RECIPE = "shapes-clip-resnet"  # the zoo recipe the pre-training defenses train


@pytest.fixture(scope="module")
def pairs():
    return ShapesDataset("train", n=512, second_object_prob=0.25).to_data(quiet=True)


def _grads(model, prefix):
    return [p.grad for n, p in model.named_parameters() if n.startswith(prefix)]


def test_roclip_epochs_are_every_kth():
    assert [e for e in range(1, 10) if RoCLIP(period=3).roclip_epoch(e)] == [3, 6, 9]


def test_roclip_epoch_pairs_images_with_pool_captions_and_leaves_the_text_tower_alone(pairs):
    model = load_model("shapes-clip-resnet").train()
    loss_fn = RoCLIP(period=3).loss_fn(pairs)
    pixels, captions = pairs.pixels[:64], [c[0] for c in pairs.captions[:64]]
    n = len(pairs)
    loss_fn(model, pixels, captions, 0).backward()  # epoch 1: the CLIP loss trains both towers
    assert all(g is not None and g.abs().sum() > 0 for g in _grads(model, "text")[:4])
    model.zero_grad(set_to_none=True)
    loss = loss_fn(model, pixels, captions, 2 * n // 64)  # first step of epoch 3: a RoCLIP step
    loss.backward()
    assert all(g is None or g.abs().sum() == 0 for g in _grads(model, "text"))  # pool captions are detached
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(model, "visual"))
    assert torch.isfinite(loss)


def test_posterior_separates_a_two_mode_similarity_sample():
    g = torch.Generator().manual_seed(0)
    sims = torch.cat([0.05 * torch.randn(100, generator=g) + 0.1, 0.05 * torch.randn(900, generator=g) + 0.6])
    post = posterior_of_high_component(sims)
    assert (post[100:] > 0.9).float().mean() > 0.95
    assert (post[:100] < 0.1).float().mean() > 0.95


def test_pair_similarity_is_the_mean_cosine_over_caption_variants(pairs):
    model = load_model("shapes-clip-resnet")
    sims = pair_similarity(model, pairs)
    assert sims.shape == (len(pairs),)
    with torch.no_grad():
        img = F.normalize(model.encode_image(pairs.pixels[5:6]), dim=-1)
        txt = F.normalize(model.encode_text(model.tokenize(pairs.captions[5])), dim=-1)
    assert torch.allclose(sims[5], (img @ txt.T).mean(), atol=1e-5)
    assert sims.mean() > 0.2  # the shipped model aligns its own world's pairs


def test_unimodal_loss_rewards_views_that_match_their_anchor():
    torch.manual_seed(0)
    emb, scale = torch.randn(16, 8), torch.tensor(20.0)
    close = unimodal_nn_loss(NearestNeighbourPool(64), emb, emb + 0.01 * torch.randn(16, 8), scale)
    shuffled = unimodal_nn_loss(NearestNeighbourPool(64), emb, emb[torch.randperm(16)], scale)
    assert close < 0.1 < 1.0 < shuffled
    pool = NearestNeighbourPool(64)
    unimodal_nn_loss(pool, emb, emb, scale)
    assert len(pool) == 16  # the batch entered the pool


@pytest.mark.parametrize("cls, kwargs, words", [
    (RoCLIP, dict(period=0), "period"), (RoCLIP, dict(pool_fraction=0.0), "pool_fraction"),
    (RoCLIP, dict(epochs=0), "epochs"), (SafeCLIP, dict(threshold=1.5), "threshold"),
    (SafeCLIP, dict(growth=-0.1), "growth"), (SafeCLIP, dict(pool_size=0), "pool_size")])
def test_bad_configuration_is_named(cls, kwargs, words):
    with pytest.raises(ValueError, match=words):
        cls(**kwargs)


def test_too_little_data_is_named(pairs):
    small = ShapesDataset("train", n=100).to_data(quiet=True)
    for defense in (RoCLIP(), SafeCLIP()):
        with pytest.raises(ValueError, match="fewer than one batch"):
            defense(small, recipe=RECIPE)
        with pytest.raises(TypeError, match="recipe"):  # the recipe is the caller's: no default
            defense(small)


@pytest.fixture(scope="module")
def poisoned_pretraining_set():
    """12,800 clean pairs + PBCL's patch on 0.3% (39 pairs): plain CLIP pre-training (12 epochs) learns this
    backdoor completely (measured ASR 0.999, clean 1.000; recipes/robust_pretraining.yaml)."""
    from mmsec.attacks.backdoor import PatchTrigger
    from mmsec.attacks.backdoor.pbcl import PBCLBackdoor

    clean = ShapesDataset("train", n=12800, second_object_prob=0.25).to_data(quiet=True)
    return PBCLBackdoor("red circle", PatchTrigger(), rate=0.003, seed=0)(clean)


def _backdoor(model):
    from mmsec.attacks.backdoor import PatchTrigger
    from mmsec.data.shapes import ShapesWorld, shape_color_classes
    from mmsec.evaluation.backdoor import zeroshot_asr

    test = ShapesWorld(32).batch("test", 0, 300)
    s = zeroshot_asr(model, test.pixels(), test.labels, PatchTrigger(), shape_color_classes().index("red circle"),
                     generator=0)
    return s.asr, s.clean_accuracy


@pytest.mark.slow
def test_roclip_matching_keeps_a_low_rate_backdoor_out_of_pretraining(poisoned_pretraining_set):
    from mmsec.train.poisoned import pretrain_pairs

    data = poisoned_pretraining_set.data
    asr_plain, clean_plain = _backdoor(pretrain_pairs(data, epochs=12).model)
    asr_match, clean_match = _backdoor(RoCLIP(epochs=12, augment=False)(data, recipe=RECIPE).model)
    # measured (1,000 test images): plain 0.999 / clean 1.000; matching alone 0.000 / 1.000
    assert asr_plain >= 0.9
    assert asr_match <= asr_plain - 0.7
    assert clean_match >= clean_plain - 0.05


@pytest.mark.slow
def test_safeclip_first_split_leaves_the_poisoned_pairs_in_the_risky_set(poisoned_pretraining_set):
    out = SafeCLIP(epochs=1)(poisoned_pretraining_set.data, recipe=RECIPE)
    poisoned = poisoned_pretraining_set.record.poisoned_mask()
    safe_share_of_poisoned = float(out.initial_safe[poisoned].float().mean())
    # measured at 1% (129 pairs): none of them in a first safe set of 21% of the data
    assert safe_share_of_poisoned <= float(out.initial_safe.float().mean()) / 2
