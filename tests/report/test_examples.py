"""The labelled example grid (issue 16): row names, predicted classes, right in green and wrong in red."""

import numpy as np
import pytest
import torch

from mmsec.data.shapes import ShapesWorld, shape_color_classes
from mmsec.report.examples import BAD, CAPTION, GOOD, MARGIN, example_grid


def _tinted(img, colour, rows: slice) -> int:
    """Pixels in ``rows`` clearly of ``colour``'s hue (text is anti-aliased: not the exact colour)."""
    a = np.asarray(img)[rows].astype(int)
    c = int(np.argmax(colour))
    others = [i for i in range(3) if i != c]
    return int(((a[..., c] > a[..., others[0]] + 60) & (a[..., c] > a[..., others[1]] + 60)).sum())


def test_grid_is_labelled():
    batch = ShapesWorld(32).batch("test", 0, 4)
    clean = batch.pixels()
    adv = (clean + 8 / 255).clamp(0, 1)
    wrong = (batch.labels + 1) % 48
    plain = example_grid(clean, adv)
    labelled = example_grid(clean, adv, clean_pred=batch.labels, adv_pred=wrong, labels=batch.labels,
                            class_names=shape_color_classes(), title="PGD eps=8/255")
    assert labelled.height > plain.height and labelled.width == plain.width == MARGIN + 4 * (96 + 4)
    clean_band, adv_band = slice(18 + 96, 18 + 96 + CAPTION), slice(18 + 2 * 96 + CAPTION, 18 + 2 * (96 + CAPTION))
    assert _tinted(labelled, GOOD, clean_band) > 30 and _tinted(labelled, BAD, clean_band) == 0  # all right
    assert _tinted(labelled, BAD, adv_band) > 30 and _tinted(labelled, GOOD, adv_band) == 0  # all wrong
    left = np.asarray(labelled)[:, :MARGIN - 8]
    assert (left < 128).any(axis=-1).sum() > 100  # the row names are drawn
    first_tile = np.asarray(labelled)[18:18 + 96, MARGIN:MARGIN + 96]
    expected = (clean[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy().repeat(3, 0).repeat(3, 1)
    assert (first_tile == expected).all()  # tiles are the images, upscaled 3x
    assert CAPTION >= 24


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="clean and adv"):
        example_grid(torch.zeros(2, 3, 8, 8), torch.zeros(2, 3, 8, 9))
