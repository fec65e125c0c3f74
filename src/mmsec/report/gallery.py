"""A gallery of generated images: named rows of samples, e.g. a diffusion backdoor's triggered vs clean samples.

Each row is named at its left and holds its first ``k`` images, upscaled (nearest) to at least 64 pixels
so 16 x 16 samples stay visible; an optional ``reference`` image (the backdoor's target) opens a row of
its own. Drawn with PIL and its built-in font::

    img = sample_gallery([("triggered", x_trig), ("clean", x_clean)], reference=("target", target),
                         title="baddiffusion (ddim)")
    img.save("samples.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .examples import INK, PAPER, _fit

TILE = 64  # minimum tile side in pixels
MARGIN = 120  # the row-name column


def sample_gallery(rows: Sequence[tuple[str, torch.Tensor]], reference: tuple[str, torch.Tensor] | None = None,
                   k: int = 8, title: str | None = None) -> Any:
    """A PIL image: one row per ``(name, images)`` ((B, 3, H, W) in [0, 1], the first ``k`` shown), the
    ``reference`` ``(name, (3, H, W) image)`` first when given."""
    from PIL import Image, ImageDraw, ImageFont

    if not rows:
        raise ValueError("sample_gallery needs at least one (name, images) row")
    shown = [(name, images[:k].detach().float().cpu()) for name, images in rows]
    if reference is not None:
        shown.insert(0, (reference[0], reference[1].detach().float().cpu().reshape(1, *reference[1].shape[-3:])))
    for name, images in shown:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"sample_gallery: row {name!r} must be (B, 3, H, W) images, got {tuple(images.shape)}")
    h, w = shown[-1][1].shape[-2:]
    up = max(1, -(-TILE // max(h, w)))
    th, tw = h * up, w * up
    cols = max(images.shape[0] for _, images in shown)
    head = 18 if title else 4
    img = Image.new("RGB", (MARGIN + cols * (tw + 4), head + len(shown) * (th + 6)), PAPER)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    if title:
        draw.text((4, 3), _fit(draw, title, font, img.width - 8), fill=INK, font=font)
    for r, (name, images) in enumerate(shown):
        y0 = head + r * (th + 6)
        label = "\n".join(_fit(draw, line, font, MARGIN - 8) for line in name.split("\n"))
        draw.multiline_text((4, y0 + th // 2 - 6 * len(name.split("\n"))), label, fill=INK, font=font, spacing=2)
        arr = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (b, H, W, 3)
        for i in range(arr.shape[0]):
            tile = Image.fromarray(arr[i], mode="RGB").resize((tw, th), Image.NEAREST)
            img.paste(tile, (MARGIN + i * (tw + 4), y0))
    return img


__all__ = ["sample_gallery"]
