"""The procedural digits (TrojDiff's Out-D2D target domain) and the nearest-neighbour judge that scores them.

The 1-nearest-neighbour classifier on a labelled pool of 64 real images per class (ten digit classes and the
shapes world) must tell held-out sevens from every other digit, from shapes-world scenes and from
degenerate images (black, grey, uniform noise), and keep doing so on blurred sevens (generated digits are
soft). Measured: sevens 1.00 (blurred 0.98), every other digit 0.00, scenes, black, grey, noise 0.00.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmsec.data.digits import DIGIT_CLASSES, digit_of, draw_digits
from mmsec.metrics.generation import nearest_hit_rate, nearest_labels


def test_digits_are_grey_strokes_on_black_and_reproducible():
    a = draw_digits(7, 16, image_size=16, seed=0)
    assert a.shape == (16, 3, 16, 16) and a.dtype == torch.float32
    assert torch.equal(a[:, 0], a[:, 1]) and torch.equal(a[:, 0], a[:, 2])  # grey
    assert a.min() == 0 and 0.8 < a.max() <= 1  # black background, light strokes
    ink = (a[:, 0] > 0.5).float().mean(dim=(1, 2))
    assert (ink > 0.03).all() and (ink < 0.3).all()
    assert torch.equal(a, draw_digits(7, 16, image_size=16, seed=0))
    assert torch.equal(a[4:], draw_digits(7, 12, image_size=16, seed=0, start=4))  # a draw is a function of its index
    assert not torch.equal(a, draw_digits(7, 16, image_size=16, seed=1))
    assert digit_of("digit 7") == 7 and len(DIGIT_CLASSES) == 10
    with pytest.raises(ValueError, match="not a digit class"):
        digit_of("seven")
    with pytest.raises(ValueError, match="digit must be an int in 0..9"):
        draw_digits(12, 1)


def test_nearest_neighbour_judge_tells_the_target_digit_apart():
    from mmsec.data.shapes import ShapesWorld

    n = 64
    pool = torch.cat([draw_digits(d, n, 16, seed=1) for d in range(10)] + [ShapesWorld(16).batch("val", 0, n).pixels()])
    labels = torch.arange(11).repeat_interleave(n)  # 0..9 the digits, 10 the shapes world
    sevens = draw_digits(7, 64, 16, seed=2)
    assert nearest_hit_rate(sevens, pool, labels, 7) >= 0.95
    assert nearest_hit_rate(F.avg_pool2d(sevens, 3, 1, 1), pool, labels, 7) >= 0.9  # soft sevens still count
    for d in (1, 2, 4, 9):
        assert nearest_hit_rate(draw_digits(d, 32, 16, seed=2), pool, labels, 7) <= 0.05, d
    others = torch.cat([ShapesWorld(16).batch("test", 0, 32).pixels(), torch.zeros(4, 3, 16, 16),
                        torch.full((4, 3, 16, 16), 0.3), torch.rand(24, 3, 16, 16, generator=torch.Generator().manual_seed(0))])
    assert nearest_hit_rate(others, pool, labels, 7) == 0.0
    assert (nearest_labels(ShapesWorld(16).batch("test", 0, 32).pixels(), pool, labels) == 10).float().mean() >= 0.9
    with pytest.raises(ValueError, match="one per reference"):
        nearest_labels(sevens, pool, labels[:5])
