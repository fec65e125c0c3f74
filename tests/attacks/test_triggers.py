"""Backdoor triggers: the shared contract, exact placement and formulas, determinism, records, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch

from mmsec.attacks.backdoor import (
    CORNERS,
    TRIGGERS,
    BlendedTrigger,
    OptimizedPatch,
    PatchTrigger,
    SIGTrigger,
    Trigger,
    WaNetTrigger,
    build_trigger,
    trigger_from_dict,
)
from mmsec.data.shapes import ShapesWorld


def _images(b: int = 4, h: int = 32, w: int = 32, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _pattern(h: int, w: int, seed: int = 7) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed))


TRIGGER_CASES = {
    "checkerboard": lambda: PatchTrigger(),
    "noise-random": lambda: PatchTrigger(pattern="noise", size=5, position="random", seed=3),
    "blended-noise": lambda: BlendedTrigger(),
    "blended-given": lambda: BlendedTrigger(alpha=0.3, pattern=_pattern(8, 8)),
    "sig": lambda: SIGTrigger(),
    "wanet": lambda: WaNetTrigger(),
    "optimized": lambda: OptimizedPatch(_pattern(4, 4), position=(2, 3)),
    "optimized-fraction-random": lambda: OptimizedPatch(_pattern(6, 6), size=0.25, position="random"),
}


# ------------------------------------------------------------------------------------------
# The contract, over every trigger
# ------------------------------------------------------------------------------------------
def test_every_registered_trigger_has_a_case():
    built = {type(make()) for make in TRIGGER_CASES.values()}
    assert built == set(TRIGGERS.values())
    assert all(issubclass(cls, Trigger) and TRIGGERS[cls.name] is cls for cls in TRIGGERS.values())


@pytest.mark.parametrize("case", sorted(TRIGGER_CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("hw", [(32, 32), (20, 28), (64, 48)])
def test_contract_shape_dtype_range_no_mutation(case, dtype, hw):
    trigger = TRIGGER_CASES[case]()
    x = _images(3, *hw, dtype=dtype)
    before = x.clone()
    out = trigger.apply(x, generator=1)
    assert out.shape == x.shape and out.dtype == dtype and out.device == x.device
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()
    assert torch.equal(x, before), "the input must not be modified"
    assert not torch.equal(out, x), "the trigger must change the images"
    assert torch.equal(trigger(x, 1), out), "__call__ is apply"


@pytest.mark.parametrize("case", sorted(TRIGGER_CASES))
def test_deterministic_and_record_round_trip(case):
    trigger = TRIGGER_CASES[case]()
    x = _images(5)
    out = trigger.apply(x, generator=11)
    assert torch.equal(trigger.apply(x, generator=11), out)
    assert torch.equal(trigger.apply(x, generator=torch.Generator().manual_seed(11)), out)
    assert torch.equal(TRIGGER_CASES[case]().apply(x, generator=11), out), "a fresh object with the same seed"
    record = json.loads(json.dumps(trigger.to_dict()))  # through JSON, as a results store keeps it
    assert record == trigger.to_dict() and record["name"] == trigger.name
    rebuilt = trigger_from_dict(record)
    assert type(rebuilt) is type(trigger) and rebuilt.params() == trigger.params()
    assert torch.equal(rebuilt.apply(x, generator=11), out)
    assert torch.equal(build_trigger(trigger.name, **trigger.params()).apply(x, generator=11), out)
    assert type(trigger).__name__ in repr(trigger)


def test_params_are_the_papers_defaults():
    assert PatchTrigger().params() == {"pattern": "checkerboard", "size": 0.125, "position": "bottom_right",
                                       "seed": 0}
    assert BlendedTrigger().params() == {"alpha": 0.2, "pattern": "noise", "seed": 0}
    assert SIGTrigger().params() == {"delta": 20 / 255, "frequency": 6.0}
    assert WaNetTrigger().params() == {"k": 4, "strength": 0.5, "grid_rescale": 1.0, "seed": 0}
    assert OptimizedPatch(torch.zeros(3, 1, 2)).params() == {
        "pattern": [[[0.0, 0.0]]] * 3, "size": None, "position": "bottom_right"}
    assert PatchTrigger(position=[1, 2]).params()["position"] == [1, 2]  # JSON form of a (y, x) tuple


@pytest.mark.parametrize("make", [
    lambda s: PatchTrigger(pattern="noise", seed=s),
    lambda s: BlendedTrigger(seed=s),
    lambda s: WaNetTrigger(seed=s),
], ids=["patch-noise", "blended", "wanet"])
def test_different_seed_different_pattern(make):
    x = _images(2)
    assert not torch.allclose(make(0)(x), make(1)(x))


def test_random_placement_comes_from_the_generator():
    trigger = PatchTrigger(size=4, position="random")
    x = torch.full((16, 3, 32, 32), 0.5)
    corners = [_patch_corner(trigger(x, generator=seed)) for seed in (0, 0, 1)]
    assert corners[0] == corners[1] and corners[0] != corners[2]
    assert len(set(corners[0])) > 4, "a new place per image"
    assert corners[0] == _patch_corner(trigger(x)), "generator None is seed 0"


def _patch_corner(out: torch.Tensor) -> list[tuple[int, int]]:
    """Top-left corners of the changed region of each image (a 4x4 checkerboard on a 0.5 background)."""
    corners = []
    for img in out:
        ys, xs = torch.nonzero((img != 0.5).any(dim=0), as_tuple=True)
        assert (ys.max() - ys.min(), xs.max() - xs.min(), ys.numel()) == (3, 3, 16)
        corners.append((ys.min().item(), xs.min().item()))
    return corners


# ------------------------------------------------------------------------------------------
# Patches land exactly where asked
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("position", [*CORNERS, (3, 9)])
@pytest.mark.parametrize("pattern", ["checkerboard", "noise"])
def test_patch_lands_exactly(position, pattern):
    H, W, h = 20, 28, 5
    trigger = PatchTrigger(pattern=pattern, size=h, position=position, seed=4)
    x = _images(3, H, W)
    out = trigger(x)
    y0, x0 = {"top_left": (0, 0), "top_right": (0, W - h), "bottom_left": (H - h, 0),
              "bottom_right": (H - h, W - h), "center": ((H - h) // 2, (W - h) // 2)}.get(position, position)
    inside = torch.zeros(H, W, dtype=torch.bool)
    inside[y0:y0 + h, x0:x0 + h] = True
    assert torch.equal(out[:, :, ~inside], x[:, :, ~inside]), "pixels outside the patch are untouched"
    expected = trigger.make_patch(h, h).expand(3, -1, -1, -1)
    assert torch.equal(out[:, :, y0:y0 + h, x0:x0 + h], expected)


def test_checkerboard_and_noise_patterns():
    board = PatchTrigger().make_patch(3, 4)
    assert torch.equal(board[0], torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1], [1, 0, 1, 0]]))
    assert torch.equal(board[0], board[2])
    noise = PatchTrigger(pattern="noise", seed=2).make_patch(6, 6)
    assert torch.equal(noise, PatchTrigger(pattern="noise", seed=2).make_patch(6, 6))
    assert not torch.equal(noise[0], noise[1]), "noise differs per channel"


def test_fractional_size_scales_with_the_image():
    trigger = PatchTrigger(size=0.25, position="top_left")
    for (H, W), (h, w) in [((32, 32), (8, 8)), ((64, 40), (16, 10))]:
        x = torch.full((1, 3, H, W), 0.5)
        changed = (trigger(x)[0] != 0.5).any(dim=0)
        assert changed[:h, :w].all() and changed.sum() == h * w


# ------------------------------------------------------------------------------------------
# Formulas: blended, SIG
# ------------------------------------------------------------------------------------------
def test_blended_formula_exact():
    x = _images(3, 16, 12)
    key = _pattern(16, 12)
    out = BlendedTrigger(alpha=0.2, pattern=key)(x)
    torch.testing.assert_close(out, (0.8 * x + 0.2 * key).clamp(0, 1), atol=1e-6, rtol=0)
    noise_trigger = BlendedTrigger(alpha=0.35, seed=5)
    noise = noise_trigger.blend_pattern(16, 12)
    assert noise.shape == (3, 16, 12) and 0.4 < noise.mean() < 0.6
    torch.testing.assert_close(noise_trigger(x), 0.65 * x + 0.35 * noise, atol=1e-6, rtol=0)
    assert torch.equal(BlendedTrigger(alpha=0.0)(x), x)


def test_blended_keeps_a_private_copy_of_its_pattern():
    key = _pattern(8, 8)
    trigger = BlendedTrigger(pattern=key)
    x = _images(1, 8, 8)
    before = trigger(x)
    key.zero_()
    assert torch.equal(trigger(x), before)


def test_sig_formula_exact():
    x = _images(2, 10, 24) * 0.5 + 0.25  # away from the clamp
    delta, f = 20 / 255, 6
    out = SIGTrigger()(x)
    expected = [[delta * math.sin(2 * math.pi * j * f / 24) for j in range(1, 25)]] * 10  # v(i, j), j = 1 .. m
    torch.testing.assert_close(out - x, torch.tensor(expected).expand_as(x), atol=1e-6, rtol=0)
    assert torch.equal(SIGTrigger(delta=0.0)(x), x)


# ------------------------------------------------------------------------------------------
# WaNet
# ------------------------------------------------------------------------------------------
def _displacement(trigger: WaNetTrigger, size: int) -> torch.Tensor:
    """(size, size, 2) displacement of the sampling grid from the identity, in pixels."""
    return ((trigger.grid(size, size) - WaNetTrigger(strength=0.0).grid(size, size)) * (size - 1) / 2)[0]


def test_wanet_identity_at_strength_zero():
    x = _images(2, 24, 30)
    torch.testing.assert_close(WaNetTrigger(strength=0.0)(x), x, atol=1e-5, rtol=0)


def test_wanet_default_is_small_and_smooth():
    x = ShapesWorld(image_size=32).batch("test", 0, 16).pixels()
    change = (WaNetTrigger()(x) - x).abs().mean().item()
    assert 1e-3 < change < 0.03, change  # imperceptible but real (measured 0.012)
    for seed in range(3):
        d = _displacement(WaNetTrigger(seed=seed), 32)[1:-1, 1:-1]  # the border is clamped to the image
        biggest = d.abs().max()
        assert 0.2 < biggest < 1.5, "about half a pixel at s 0.5"
        neighbours = torch.cat([(d[:, 1:] - d[:, :-1]).flatten(), (d[1:] - d[:-1]).flatten()]).abs()
        assert neighbours.max() < 0.3 * biggest  # measured <= 0.23; a per-pixel random field ~1
        assert neighbours.mean() < 0.25 * d.abs().mean()  # measured <= 0.18; a random field ~0.66


def test_wanet_noise_mode():
    trigger = WaNetTrigger()
    x = _images(4)
    before = x.clone()
    noisy = trigger.apply_noise(x, generator=3)
    assert noisy.shape == x.shape and torch.equal(x, before)
    assert torch.equal(trigger.apply_noise(x, generator=3), noisy)
    assert not torch.allclose(trigger.apply_noise(x, generator=4), noisy)
    assert not torch.allclose(noisy, trigger(x))
    assert (noisy - trigger(x)).abs().mean() < 0.1


# ------------------------------------------------------------------------------------------
# Optimised patches
# ------------------------------------------------------------------------------------------
def test_gradient_flows_to_the_optimized_pattern():
    pattern = (0.25 + 0.5 * _pattern(4, 4)).requires_grad_(True)
    trigger = OptimizedPatch(pattern, position="top_left")
    x = _images(3, 16, 16)
    out = trigger(x)
    assert torch.equal(out[:, :, :4, :4], pattern.detach().expand(3, -1, -1, -1))
    out.sum().backward()
    torch.testing.assert_close(pattern.grad, torch.full_like(pattern, 3.0))  # each pixel stamped on 3 images

    resized = OptimizedPatch(pattern, size=0.5, position="random")  # 8x8 on 16 px: bilinear upsampling
    pattern.grad = None
    resized(x, generator=0).square().sum().backward()
    assert pattern.grad is not None and (pattern.grad.abs() > 0).all()

    with torch.no_grad():  # an optimiser's in-place step is what the trigger stamps next
        pattern.sub_(0.1)
    assert torch.equal(trigger(x)[:, :, :4, :4], pattern.detach().expand(3, -1, -1, -1))


def test_optimized_patch_rejects_a_diverged_pattern():
    pattern = _pattern(3, 3)
    trigger = OptimizedPatch(pattern)
    pattern[0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="pattern contains NaN"):
        trigger(_images(1))


# ------------------------------------------------------------------------------------------
# Errors name the bad input
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("pixels, match", [
    (torch.rand(3, 32, 32), r"pixels must have shape \(B, 3, H, W\)"),
    (torch.rand(2, 1, 32, 32), r"pixels must have shape \(B, 3, H, W\)"),
    (torch.full((1, 3, 8, 8), float("nan")), "pixels contains NaN"),
    (torch.rand(1, 3, 8, 8) * 255, r"pixels must lie in \[0, 1\]"),
    (torch.zeros(1, 3, 8, 8, dtype=torch.uint8), "pixels must be float"),
])
def test_bad_pixels_rejected(pixels, match):
    for trigger in (PatchTrigger(size=2), WaNetTrigger()):
        with pytest.raises(ValueError, match=match):
            trigger(pixels)


@pytest.mark.parametrize("make, error, match", [
    (lambda: PatchTrigger(position="bottom-right"), ValueError, "position must be one of .*did you mean 'bottom_right'"),
    (lambda: PatchTrigger(position=(1.5, 2)), TypeError, r"position must be one of"),
    (lambda: PatchTrigger(position=(-1, 2)), ValueError, "position .* non-negative"),
    (lambda: PatchTrigger(pattern="chekerboard"), ValueError, "pattern must be one of .*'checkerboard'"),
    (lambda: PatchTrigger(size=0), ValueError, "size in pixels must be an int >= 1"),
    (lambda: PatchTrigger(size=1.5), ValueError, r"size given as a float .* \(0, 1\]"),
    (lambda: PatchTrigger(size=True), TypeError, "size must be an int"),
    (lambda: PatchTrigger(seed=-1), ValueError, "seed must be an int >= 0"),
    (lambda: BlendedTrigger(alpha=1.5), ValueError, "alpha must be"),
    (lambda: BlendedTrigger(pattern="kitty"), ValueError, "pattern must be 'noise'"),
    (lambda: BlendedTrigger(pattern=torch.rand(8, 8)), ValueError, r"pattern must have shape \(3, h, w\)"),
    (lambda: BlendedTrigger(pattern=torch.rand(3, 4, 4) + 1), ValueError, r"pattern must lie in \[0, 1\]"),
    (lambda: OptimizedPatch(torch.full((3, 2, 2), float("nan"))), ValueError, "pattern contains NaN"),
    (lambda: OptimizedPatch([[1, 2]]), ValueError, r"pattern must have shape \(3, h, w\)"),
    (lambda: SIGTrigger(delta=-0.1), ValueError, "delta must be"),
    (lambda: SIGTrigger(frequency=float("nan")), ValueError, "frequency must be"),
    (lambda: WaNetTrigger(k=1), ValueError, "k must be an int >= 2"),
    (lambda: WaNetTrigger(strength=-1.0), ValueError, "strength must be"),
    (lambda: WaNetTrigger(grid_rescale=0.0), ValueError, "grid_rescale must be"),
    (lambda: build_trigger("wannet"), ValueError, "unknown trigger 'wannet' .*did you mean 'wanet'"),
    (lambda: build_trigger("sig", amplitude=0.1), TypeError, r"unknown parameter\(s\) \['amplitude'\]"),
    (lambda: trigger_from_dict({"name": "sig", "version": 99, "params": {}}), ValueError, "version 99"),
    (lambda: trigger_from_dict(["sig"]), TypeError, "record must be a dict"),
    (lambda: trigger_from_dict({"params": {}}), ValueError, "string 'name'"),
])
def test_bad_arguments_rejected(make, error, match):
    with pytest.raises(error, match=match):
        make()


def test_placement_errors_at_apply_time():
    with pytest.raises(ValueError, match="10x10 patch does not fit on the 8x8 images"):
        PatchTrigger(size=10)(_images(1, 8, 8))
    with pytest.raises(ValueError, match=r"position \(6, 0\) puts the 4x4 patch outside the 8x8 images"):
        PatchTrigger(size=4, position=(6, 0))(_images(1, 8, 8))
    with pytest.raises(TypeError, match="generator must be"):
        PatchTrigger()(_images(1), generator="seed")
