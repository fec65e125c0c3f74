"""TinyCLIP's ViT tower options (position embedding, pooling, stem): the defaults are the first ViT, bit for bit
(its seeded initialisation, its forward pass, the shipped zoo:shapes-clip-vit's hash and zero-shot), and each
option does what it says (fixed 2D sin-cos positions; mean pooling without a class token; a conv stem)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmsec import zoo
from mmsec.data.shapes import ShapesWorld
from mmsec.models.checkpoint import sha256_file
from mmsec.models.tiny_clip import TinyCLIP, TinyCLIPConfig, ViTTower, sincos_2d
from mmsec.zoo.evaluate import zeroshot_accuracy
from mmsec.zoo.train import shapes_vocabulary


def _cfg(**options) -> TinyCLIPConfig:
    return TinyCLIPConfig(image_tower="vit", vocab=shapes_vocabulary(), **options)


def _first_vit_forward(tower: ViTTower, x: torch.Tensor) -> torch.Tensor:
    """The first ViT's forward pass, written out: patch conv, class token first, learnt positions, class token."""
    tokens = tower.patch(x).flatten(2).transpose(1, 2)  # (B, N, W)
    tokens = torch.cat([tower.cls.expand(x.shape[0], -1, -1), tokens], dim=1) + tower.pos  # (B, 1+N, W)
    return tower.proj(tower.norm(tower.encoder(tokens))[:, 0])  # (B, D)


def test_default_tower_initialises_as_the_first_vit():
    cfg = _cfg()
    torch.manual_seed(1)
    tower = ViTTower(cfg)
    torch.manual_seed(1)  # the first ViT's modules, created in its order from the same seed
    patch = nn.Conv2d(3, cfg.vit_width, cfg.vit_patch, cfg.vit_patch)
    cls = torch.zeros(1, 1, cfg.vit_width)
    pos = torch.randn(1, (cfg.image_size // cfg.vit_patch) ** 2 + 1, cfg.vit_width) * 0.02
    layer = nn.TransformerEncoderLayer(cfg.vit_width, cfg.vit_heads, 4 * cfg.vit_width, dropout=0.0,
                                       activation="gelu", batch_first=True, norm_first=True)
    encoder = nn.TransformerEncoder(layer, cfg.vit_layers, enable_nested_tensor=False)
    norm, proj = nn.LayerNorm(cfg.vit_width), nn.Linear(cfg.vit_width, cfg.embed_dim)
    expected = {"cls": cls, "pos": pos, **{f"patch.{k}": v for k, v in patch.state_dict().items()},
                **{f"encoder.{k}": v for k, v in encoder.state_dict().items()},
                **{f"norm.{k}": v for k, v in norm.state_dict().items()},
                **{f"proj.{k}": v for k, v in proj.state_dict().items()}}
    found = tower.state_dict()
    assert list(found) == list(ViTTower(cfg).state_dict()) and set(found) == set(expected)
    assert all(torch.equal(found[k], expected[k]) for k in expected)


def test_shipped_vit_loads_unchanged():
    card = zoo.card("shapes-clip-vit")
    assert sha256_file(zoo.CHECKPOINTS / "shapes-clip-vit.safetensors") == card["sha256"]
    model = zoo.load_model("shapes-clip-vit")
    assert (model.config.vit_pos_embed, model.config.vit_pool, model.config.vit_stem) == ("learned", "cls", "patch")
    x = ShapesWorld(32, 0, 0.25).batch("test", 0, 32).pixels()
    with torch.no_grad():
        assert torch.equal(model.encode_image(x), _first_vit_forward(model.visual, model.normalize(x)))
    # 194 of the first 200 test scenes, as measured before the ViT options existed (the card: 0.985 on 2,000).
    assert zeroshot_accuracy(model, ShapesWorld(32, 0, 0.0), 200)["zeroshot_top1"] == pytest.approx(0.97, abs=1e-6)


def test_sincos_positions_encode_row_and_column():
    pos = sincos_2d(8, 96).view(8, 8, 96)  # (row, column, W)
    assert torch.equal(pos[:, :, :48], pos[:, :1, :48].expand(8, 8, 48))  # first half: the row only
    assert torch.equal(pos[:, :, 48:], pos[:1, :, 48:].expand(8, 8, 48))  # second half: the column only
    flat = pos.view(64, 96)
    assert torch.allclose(flat.norm(dim=1), torch.full((64,), 48 ** 0.5))  # sin^2 + cos^2 per frequency
    distance = torch.cdist(flat, flat) + torch.eye(64)
    assert distance.min() > 0.5  # every patch has its own code
    # Nearer patches have nearer codes: a neighbour is closer than the far corner.
    assert torch.dist(flat[0], flat[1]) < torch.dist(flat[0], flat[63])


def test_options_build_their_tower():
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for options in ({"vit_pos_embed": "sincos"}, {"vit_pool": "mean"}, {"vit_stem": "conv"},
                    {"vit_pos_embed": "sincos", "vit_pool": "mean", "vit_stem": "conv"}):
        torch.manual_seed(0)
        model = TinyCLIP(_cfg(**options)).eval()
        keys = set(model.visual.state_dict())
        assert ("pos" in keys) == (options.get("vit_pos_embed") != "sincos")
        assert ("cls" in keys) == (options.get("vit_pool") != "mean")
        assert model.visual.pos.shape[1] == 64 + (options.get("vit_pool") != "mean")
        assert model.visual.patch(x).shape == (2, 96, 8, 8)  # one token per 4 x 4 patch, whatever the stem
        assert model.encode_image(x).shape == (2, 64)
    # The sin-cos positions are a function of the config: fixed, not trained, not in the checkpoint.
    fixed = TinyCLIP(_cfg(vit_pos_embed="sincos")).visual
    assert "pos" not in dict(fixed.named_parameters()) and "pos" not in fixed.state_dict()


def test_mean_pooled_sincos_tower_sees_where_patches_are():
    """Mean pooling is blind to token order unless positions are added: the tower must tell an image from the
    same 4 x 4 patches put back in another order."""
    torch.manual_seed(0)
    tower = TinyCLIP(_cfg(vit_pos_embed="sincos", vit_pool="mean")).eval()
    x = ShapesWorld(32, 0, 0.0).batch("test", 0, 8).pixels()
    tiles = x.reshape(8, 3, 8, 4, 8, 4)  # (B, C, row, 4, col, 4)
    swapped = tiles.flip(2).flip(4).reshape(8, 3, 32, 32)  # the patch grid rotated 180 degrees, patches intact
    with torch.no_grad():
        a, b = tower.encode_image(x), tower.encode_image(swapped)
        no_positions = tower.visual.pos.clone()
        tower.visual.pos.zero_()
        a0, b0 = tower.encode_image(x), tower.encode_image(swapped)
        tower.visual.pos.copy_(no_positions)
    assert torch.allclose(a0, b0, atol=1e-5)  # the baseline: without positions the two are one image
    assert (a - b).norm(dim=1).min() > 100 * (a0 - b0).norm(dim=1).max() + 1e-3


@pytest.mark.parametrize("field, value", [("vit_pos_embed", "rope"), ("vit_pool", "max"), ("vit_stem", "linear")])
def test_unknown_options_are_refused_by_name(field, value):
    with pytest.raises(ValueError, match=rf"^{field} must be one of \[.*\], got '{value}'$"):
        TinyCLIP(_cfg(**{field: value}))


def test_conv_stem_needs_a_power_of_two_patch():
    with pytest.raises(ValueError, match=r"vit_stem 'conv' needs vit_patch a power of two >= 2, got 1"):
        TinyCLIP(_cfg(vit_stem="conv", vit_patch=1))
