"""The image artifacts of a spec's runs (PNG: labelled adversarial examples, learnt patches and triggers, inverted
triggers, diffusion samples) inlined as ``data:`` URIs, each captioned with its cell.

One image per cell group and kind first (the first seed's), in the table's order, then the other seeds'; at
most ``max_images`` and ``max_bytes`` per section (the page also passes what its total budget has left), and
the section says how many were left out. A file whose sha256 is not the one stored with its run (changed or
missing since) is not shown, and is named.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from html import escape
from pathlib import Path

from .store_view import SpecView, group_label, varying_axes

IMAGE_SUFFIXES = {".png": "image/png"}
MAX_IMAGES = 12
MAX_BYTES = 2_000_000


@dataclass
class Gallery:
    html: str
    bytes: int  # image bytes inlined (before base64)
    shown: int
    left_out: int


def gallery(view: SpecView, results_dir: str | Path, max_images: int = MAX_IMAGES,
            max_bytes: int = MAX_BYTES) -> Gallery:
    """The figures of ``view``'s image artifacts within the caps (an empty :class:`Gallery` when it has none)."""
    images = [a for a in view.artifacts if Path(a["path"]).suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        return Gallery("", 0, 0, 0)
    # (seed position in its group, group position): every group's first seed before any second seed
    rank = {run_id: (k, i) for i, g in enumerate(view.groups) for k, run_id in enumerate(g["run_ids"])}
    images.sort(key=lambda a: rank.get(a["run_id"], (len(rank), 0)))
    group_of = {run_id: g for g in view.groups for run_id in g["run_ids"]}
    seed_of = {r["run_id"]: r["seed"] for r in view.rows}
    axes = varying_axes(view.groups)
    figures, problems, used, left_out = [], [], 0, 0
    for art in images:
        if len(figures) >= max_images or used + art["bytes"] > max_bytes:
            left_out += 1
            continue
        path = Path(results_dir) / art["path"]
        data = path.read_bytes() if path.is_file() else None
        if data is None or hashlib.sha256(data).hexdigest() != art["sha256"]:
            problems.append(f"{art['path']}: {'missing' if data is None else 'changed since its run (sha256 differs)'}")
            continue
        group = group_of.get(art["run_id"])
        caption = group_label(group, axes) if group is not None else f"run {art['run_id']}"
        caption += f" · seed {seed_of.get(art['run_id'])} · {art['kind']}"
        uri = f"data:{IMAGE_SUFFIXES[path.suffix.lower()]};base64,{base64.b64encode(data).decode('ascii')}"
        figures.append(f'<figure><img src="{uri}" alt="{escape(caption)}">'
                       f"<figcaption>{escape(caption)}</figcaption></figure>")
        used += len(data)
    parts = ['<div class="gallery">', *figures, "</div>"]
    if left_out:
        parts.append(f'<p class="note">{left_out} more image(s) of this spec not shown (the report keeps at most '
                     f"{max_images} images and {max_bytes / 1e6:.1f} MB per section); they are in "
                     f"{escape(str(Path(results_dir) / 'artifacts' / view.name))}/.</p>")
    if problems:
        parts.append('<p class="note warn">Not shown: ' + "; ".join(escape(p) for p in problems) + ".</p>")
    return Gallery("\n".join(parts), used, len(figures), left_out)


__all__ = ["IMAGE_SUFFIXES", "MAX_BYTES", "MAX_IMAGES", "Gallery", "gallery"]
