"""Export the shapes world to files in the formats mmsec's loaders (and most tools) read.

``export_shapes`` writes, under ``out_dir``::

    <colour>_<shape>/<index>.png   one PNG per sample, in its class folder (e.g. red_circle/000012.png)
    captions.jsonl                 {"image": "red_circle/000012.png", "caption": ..., "label": 0} per caption
    captions.csv                   the same rows with columns image, caption, label
    classes.txt                    the 48 class folder names in label order (one per line)
    export.json                    the arguments that produced the export

Only classes that occur get a folder. Image paths are relative to ``out_dir``; labels are the
shapes world's (``shape_color_classes()`` order). Loading round-trips exactly::

    export_shapes("out", "test", n=100)
    CaptionDataset("out/captions.csv", class_names=shape_color_classes())   # same pixels, labels, captions
    ImageFolderDataset("out", classes=Path("out/classes.txt").read_text().split())

The export is written to a temporary folder beside ``out_dir`` and renamed into place, so an
interrupted export never leaves a half-written ``out_dir``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from ..progress import progress_bar
from ..version import __version__
from .datasets import ShapesDataset
from .shapes import TEXTURES, shape_color_classes

EXPORT_FORMATS = ("folder",)


@dataclass(frozen=True)
class ShapesExport:
    """Where an export went: ``root``, the caption files and the class folder names in label order."""

    root: Path
    n: int
    class_dirs: list[str]
    captions_jsonl: Path
    captions_csv: Path


def class_dir_name(class_name: str) -> str:
    """Folder name of a shapes class: ``"red circle"`` -> ``"red_circle"``."""
    return class_name.replace(" ", "_")


def export_shapes(out_dir: str | os.PathLike, split: str, n: int, image_size: int = 32, seed: int = 0,
                  fmt: str = "folder", overwrite: bool = False, second_object_prob: float = 0.0,
                  textures: Sequence[str] = TEXTURES, start: int = 0, quiet: bool = False,
                  chunk: int = 256) -> ShapesExport:
    """Write samples ``start .. start+n-1`` of a shapes-world split as an image folder plus caption files.

    Args:
        out_dir: destination folder; must not exist or be empty, unless ``overwrite=True``
            (then it is replaced only once the new export is complete).
        split, n, image_size, seed, second_object_prob, textures, start: as :class:`ShapesDataset`.
        fmt: ``"folder"`` (class sub-folders of PNG files + ``captions.jsonl`` / ``captions.csv``).
        overwrite: replace a non-empty ``out_dir``.
        quiet: no progress bar.
        chunk: samples rendered at a time.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"fmt must be one of {EXPORT_FORMATS}, got {fmt!r}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an int >= 1 (the number of samples to export), got {n!r}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"export destination {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"export destination {out} is not empty; pass overwrite=True (--overwrite at the CLI) to replace it")
    ds = ShapesDataset(split, n=n, image_size=image_size, seed=seed, second_object_prob=second_object_prob,
                       textures=textures, start=start)  # validates the arguments before anything is written
    class_dirs = [class_dir_name(c) for c in shape_color_classes()]
    width = max(6, len(str(start + n - 1)))

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        rows = []  # (image, caption, label)
        with progress_bar(n, f"export shapes {split}", quiet) as bar:
            for s in range(0, n, chunk):
                batch = ds.batch(s, min(chunk, n - s))
                images = batch.images.permute(0, 2, 3, 1).numpy()  # (B, H, W, 3) uint8
                for k, (img, label, caps) in enumerate(zip(images, batch.labels.tolist(), batch.captions,
                                                           strict=True)):
                    rel = f"{class_dirs[label]}/{start + s + k:0{width}d}.png"
                    (tmp / class_dirs[label]).mkdir(exist_ok=True)
                    Image.fromarray(img).save(tmp / rel, format="PNG")
                    rows += [(rel, c, label) for c in caps]
                    bar.advance()
        with open(tmp / "captions.jsonl", "w", encoding="utf-8") as f:
            for rel, cap, label in rows:
                f.write(json.dumps({"image": rel, "caption": cap, "label": label}) + "\n")
        with open(tmp / "captions.csv", "w", encoding="utf-8", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["image", "caption", "label"])
            writer.writerows(rows)
        (tmp / "classes.txt").write_text("\n".join(class_dirs) + "\n", encoding="utf-8")
        meta = {"generator": "mmsec.data.export.export_shapes", "mmsec_version": __version__, "split": split,
                "n": n, "start": start, "image_size": image_size, "seed": seed,
                "second_object_prob": second_object_prob, "textures": list(ds.world.textures), "fmt": fmt}
        (tmp / "export.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _move_into_place(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return ShapesExport(out, n, class_dirs, out / "captions.jsonl", out / "captions.csv")


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename the finished export ``tmp`` to ``out``, replacing ``out`` only at the very end."""
    if not out.exists():
        os.replace(tmp, out)
        return
    if not any(out.iterdir()):
        out.rmdir()
        os.replace(tmp, out)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    old.rmdir()  # only the unique name is needed
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)  # put the previous export back
        raise
    shutil.rmtree(old)
