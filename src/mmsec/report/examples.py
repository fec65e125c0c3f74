"""The example grid of an evasion cell: clean images, their adversarial versions and the perturbation, labelled.

Three rows of ``k`` tiles, each row named at its left (``clean``, ``adversarial``, ``perturbation``
magnified to the full range, with the factor), and under each clean and adversarial tile the class
the model predicted for it (green when it is the true class, red when not; the true class is named
under the clean tile when the prediction is wrong). Tiles are upscaled (nearest) to at least 96
pixels so 32 x 32 images stay visible; the text is drawn with PIL's ImageDraw and its built-in font.

    img = example_grid(clean, adv, clean_pred=logits_clean.argmax(1), adv_pred=logits_adv.argmax(1),
                       labels=y, class_names=dataset.class_names, title="PGD-10 eps=8/255")
    img.save("examples.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

TILE = 96  # minimum tile side in pixels
MARGIN = 104  # the row-name column
CAPTION = 26  # the caption band under a tile (two lines of the built-in font)
GOOD, BAD, INK, PAPER = (0, 120, 0), (190, 0, 0), (0, 0, 0), (255, 255, 255)


def _name(i: int, class_names: Sequence[str] | None) -> str:
    if class_names is not None and 0 <= i < len(class_names):
        return str(class_names[i]).replace("_", " ")
    return f"class {i}"


def _fit(draw: Any, text: str, font: Any, width: int) -> str:
    """``text`` shortened with '..' until it fits ``width`` pixels (class names are short; this is a guard)."""
    while text and draw.textlength(text, font=font) > width:
        text = text[:-3] + ".." if len(text) > 3 else text[:-1]
    return text


def example_grid(clean: torch.Tensor, adv: torch.Tensor, clean_pred: torch.Tensor | None = None,
                 adv_pred: torch.Tensor | None = None, labels: torch.Tensor | None = None,
                 class_names: Sequence[str] | None = None, k: int = 8, title: str | None = None) -> Any:
    """A labelled PIL image of the first ``k`` clean / adversarial pairs (pixels in [0, 1], shape (B, 3, H, W)).

    ``clean_pred`` / ``adv_pred`` / ``labels`` are class indices (B,); without predictions the tiles have
    no captions. ``class_names`` turns indices into names.
    """
    from PIL import Image, ImageDraw, ImageFont

    if clean.shape != adv.shape or clean.dim() != 4 or clean.shape[1] != 3:
        raise ValueError(f"clean and adv must both be (B, 3, H, W) image batches, got {tuple(clean.shape)} and "
                         f"{tuple(adv.shape)}")
    clean, adv = clean[:k].detach().float().cpu(), adv[:k].detach().float().cpu()  # (k, 3, H, W)
    n, _, h, w = clean.shape
    up = max(1, -(-TILE // max(h, w)))
    th, tw = h * up, w * up
    delta = adv - clean
    scale = float(delta.abs().amax().clamp_min(1e-12))
    rows = [("clean", clean, clean_pred), ("adversarial", adv, adv_pred),
            (f"perturbation\n(x{0.5 / scale:.0f})" if scale > 1e-12 else "perturbation\n(none)",
             0.5 + 0.5 * delta / scale, None)]
    captions = clean_pred is not None or adv_pred is not None
    head = 18 if title else 4
    band = CAPTION if captions else 4
    img = Image.new("RGB", (MARGIN + n * (tw + 4), head + len(rows) * (th + band)), PAPER)
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    if title:
        draw.text((4, 3), _fit(draw, title, font, img.width - 8), fill=INK, font=font)
    for r, (row_name, pixels, pred) in enumerate(rows):
        y0 = head + r * (th + band)
        draw.multiline_text((4, y0 + th // 2 - 12), row_name, fill=INK, font=font, spacing=2)
        arr = (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()  # (k, H, W, 3)
        for i in range(n):
            x0 = MARGIN + i * (tw + 4)
            tile = Image.fromarray(arr[i], mode="RGB").resize((tw, th), Image.NEAREST)
            img.paste(tile, (x0, y0))
            if pred is None:
                continue
            p = int(pred[i])
            truth = int(labels[i]) if labels is not None else None
            ok = truth is None or p == truth
            draw.text((x0, y0 + th + 1), _fit(draw, _name(p, class_names), font, tw), fill=GOOD if ok else BAD,
                      font=font)
            if not ok and r == 0:
                draw.text((x0, y0 + th + 12), _fit(draw, f"true: {_name(truth, class_names)}", font, tw), fill=INK,
                          font=font)
            elif not ok:
                draw.text((x0, y0 + th + 12), "(wrong)", fill=BAD, font=font)
    return img


__all__ = ["example_grid"]
