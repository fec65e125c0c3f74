"""SimCLR building blocks: NT-Xent's properties, the augmentation's geometry, a short run lowers the loss."""

import math

import pytest
import torch

from mmsec.train.simclr import (
    AugmentConfig,
    ImageEncoder,
    SimCLRConfig,
    augment,
    crop_boxes,
    nt_xent,
    resized_crops,
    train_simclr,
)


def test_nt_xent_values():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 16, generator=g)
    # Identical views with orthogonal-ish others: far below chance; chance level is log(2B - 1).
    assert nt_xent(z, z, 0.1).item() < 0.5
    rand = nt_xent(torch.randn(64, 16, generator=g), torch.randn(64, 16, generator=g), 0.5).item()
    assert abs(rand - math.log(127)) < 0.3
    # Symmetric in the two views, invariant to the projections' scale.
    z2 = torch.randn(8, 16, generator=g)
    assert torch.allclose(nt_xent(z, z2), nt_xent(z2, z), atol=1e-6)
    assert torch.allclose(nt_xent(3 * z, z2), nt_xent(z, z2), atol=1e-6)


def test_nt_xent_matches_a_loop():
    g = torch.Generator().manual_seed(1)
    z1, z2, tau = torch.randn(5, 4, generator=g), torch.randn(5, 4, generator=g), 0.5
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=-1)
    total = 0.0
    for i in range(10):
        j = (i + 5) % 10
        others = [k for k in range(10) if k != i]
        total += -(z[i] @ z[j] / tau - torch.logsumexp(torch.stack([z[i] @ z[k] / tau for k in others]), 0))
    assert torch.allclose(nt_xent(z1, z2, tau), total / 10, atol=1e-5)


def test_nt_xent_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(torch.zeros(4, 3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(torch.ones(4, 3), torch.ones(4, 3), 0.0)
    with pytest.raises(ValueError, match="at least 2"):
        nt_xent(torch.ones(1, 3), torch.ones(1, 3))


def test_crop_boxes_geometry():
    g = torch.Generator().manual_seed(0)
    boxes = crop_boxes(4000, 20, 40, g)  # a 2:1 poisoned-image shape
    y0, x0, h, w = boxes.unbind(1)
    assert (y0 >= 0).all() and (x0 >= 0).all() and (y0 + h <= 20).all() and (x0 + w <= 40).all()
    area = h * w / 800
    # Aspect <= 4/3 on a 2:1 image caps a crop at 20 x 26.7 px (2/3 of the area); never below 0.08 (rounded).
    assert area.min() >= 0.05 and area.max() <= 0.7
    square = crop_boxes(4000, 32, 32, g)
    sq_area = square[:, 2] * square[:, 3] / 1024
    assert 0.4 < sq_area.mean() < 0.6 and sq_area.max() <= 1.0  # ~ uniform in (0.08, 1), large draws rejected


def test_resized_crop_identity_and_flip():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 8, 8, generator=g)
    full = torch.tensor([[0.0, 0.0, 8.0, 8.0]] * 2)
    assert torch.allclose(resized_crops(x, full, 8), x, atol=1e-5)
    flipped = resized_crops(x, full, 8, torch.tensor([True, False]))
    assert torch.allclose(flipped[0], x[0].flip(-1), atol=1e-5) and torch.allclose(flipped[1], x[1], atol=1e-5)


def test_augment_mixed_sizes_deterministic_and_inputs_untouched():
    g = torch.Generator().manual_seed(0)
    imgs = [torch.rand(3, 32, 32, generator=g) for _ in range(3)] + [torch.rand(3, 17, 34, generator=g)]
    before = [i.clone() for i in imgs]
    a = augment(imgs, torch.Generator().manual_seed(5), AugmentConfig())
    b = augment(imgs, torch.Generator().manual_seed(5), AugmentConfig())
    assert a.shape == (4, 3, 32, 32) and torch.equal(a, b) and 0 <= a.min() and a.max() <= 1
    assert all(torch.equal(x, y) for x, y in zip(imgs, before, strict=True))
    with pytest.raises(ValueError, match=r"images\[0\]"):
        augment([torch.rand(32, 32)], g)


def test_short_simclr_run_lowers_loss_and_keeps_input():
    from mmsec.data.shapes import ShapesWorld

    images = ShapesWorld(32).batch("train", 0, 256).pixels()
    enc = ImageEncoder.from_recipe("shapes-clip-resnet", seed=0)
    state = {k: v.clone() for k, v in enc.state_dict().items()}
    res = train_simclr(enc, images, SimCLRConfig(steps=40, batch_size=64, warmup=5, lr=2e-3), generator=0)
    first, last = sum(res.losses[:5]) / 5, sum(res.losses[-5:]) / 5
    assert last < first - 0.3, (first, last)  # chance is log(127) = 4.84
    assert all(torch.equal(v, enc.state_dict()[k]) for k, v in state.items())
    assert res.encoder.encode_image(images[:4]).shape == (4, 64)
    with pytest.raises(ValueError, match="fewer than batch_size"):
        train_simclr(enc, images[:10], SimCLRConfig(steps=1, batch_size=64))
    with pytest.raises(ValueError, match="batch_size"):
        SimCLRConfig(batch_size=1)
