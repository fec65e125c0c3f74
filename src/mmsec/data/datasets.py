"""Data sets: the shapes world as a torch ``Dataset``, and loaders for image folders and caption files.

Every data set yields the same item: a dict ``{"pixels", "label", "captions"}`` (or, with
``as_tuple=True``, the tuple ``(pixels, label, captions)``), where ``pixels`` is a float
(3, H, W) tensor in [0, 1], ``label`` an int (``None`` when the data set has no labels) and
``captions`` a list of strings (``None`` when it has no captions). :func:`collate` batches such
items for a ``DataLoader``; ``to_data()`` loads a whole data set into one :class:`ImageTextData`.

File formats read here (the ones :func:`mmsec.data.export.export_shapes` writes):

- image folder: ``root/<class name>/<image files>``; classes are the sorted sub-folder names
  unless given explicitly.
- captions CSV: a header with columns ``image`` and ``caption`` (optionally ``label``), one
  row per caption; several rows may name the same image.
- captions JSONL: one object per line, ``{"image": ..., "caption": ...}`` (optionally
  ``"label"``; ``"caption"`` may also be a list of strings).

Image paths in caption files are relative to the caption file's folder, or absolute.

Example::

    ds = ShapesDataset("train", n=1000)
    item = ds[0]                       # {"pixels": (3, 32, 32), "label": int, "captions": [...]}
    data = ds.to_data()                # ImageTextData with pixels (1000, 3, 32, 32)
"""

from __future__ import annotations

import csv
import inspect
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..progress import progress_bar
from ..registry import close_names, entries
from .shapes import TEXTURES, ShapesBatch, ShapesWorld, shape_color_classes, split_scene_id, zeroshot_prompts

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
CAPTION_FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
_INT = re.compile(r"[+-]?\d+")


class ImageDecodeError(ValueError):
    """An image file exists but could not be decoded."""


@dataclass
class ImageTextData:
    """A whole data set in memory, as experiment specs consume it.

    Attributes:
        pixels: (N, 3, H, W) float tensor in [0, 1].
        labels: (N,) int64 tensor, or ``None`` when the data set has no labels.
        class_names: name of each label index, or ``None`` when unknown.
        captions: N lists of captions, or ``None`` when the data set has no captions.
    """

    pixels: torch.Tensor
    labels: torch.Tensor | None = None
    class_names: list[str] | None = None
    captions: list[list[str]] | None = None

    def __post_init__(self) -> None:
        n = len(self.pixels)
        if self.labels is not None and len(self.labels) != n:
            raise ValueError(f"labels has {len(self.labels)} entries but pixels has {n} images")
        if self.captions is not None and len(self.captions) != n:
            raise ValueError(f"captions has {len(self.captions)} entries but pixels has {n} images")

    def __len__(self) -> int:
        return len(self.pixels)


def _item(pixels: torch.Tensor, label: int | None, captions: list[str] | None, as_tuple: bool):
    if as_tuple:
        return pixels, label, captions
    return {"pixels": pixels, "label": label, "captions": captions}


def collate(items: list) -> dict[str, Any] | tuple:
    """Batch data-set items (dicts or tuples) for a ``DataLoader``: ``collate_fn=collate``.

    Pixels are stacked to (B, 3, H, W); labels become an int64 tensor (``None`` if any item has
    no label); captions stay a list of B caption lists (``None`` if any item has none).
    """
    if not items:
        raise ValueError("collate needs at least one item")
    as_tuple = isinstance(items[0], tuple)
    rows = [it if as_tuple else (it["pixels"], it["label"], it["captions"]) for it in items]
    sizes = {tuple(r[0].shape) for r in rows}
    if len(sizes) > 1:
        raise ValueError(f"cannot stack images of different sizes {sorted(sizes)}; "
                         "pass image_size= to the data set to resize them")
    pixels = torch.stack([r[0] for r in rows])
    labels = None if any(r[1] is None for r in rows) else torch.tensor([r[1] for r in rows], dtype=torch.long)
    captions = None if any(r[2] is None for r in rows) else [list(r[2]) for r in rows]
    return (pixels, labels, captions) if as_tuple else {"pixels": pixels, "label": labels, "captions": captions}


def _check_image_size(image_size: int | None, allow_none: bool) -> None:
    if image_size is None and allow_none:
        return
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive int{' or None' if allow_none else ''}, got {image_size!r}")


def read_image(path: str | os.PathLike, image_size: int | None = None, where: str = "") -> torch.Tensor:
    """Read an image file as a float (3, H, W) tensor in [0, 1].

    Any mode (grey, palette, RGBA) is converted to RGB. With ``image_size``, the shorter side is
    resized to ``image_size`` (bicubic) and the centre square cropped (CLIP's preprocessing);
    an image already of that size is returned untouched. ``where`` is appended to error
    messages (e.g. ``" (captions.csv, line 3)"``).
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im = im.convert("RGB")  # forces a full decode
    except FileNotFoundError:
        raise FileNotFoundError(f"image file {path} not found{where}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"image file {path} could not be decoded{where}: {e}") from e
    if image_size is not None and im.size != (image_size, image_size):
        w, h = im.size
        scale = image_size / min(w, h)
        nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
        im = im.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - image_size) // 2, (nh - image_size) // 2
        im = im.crop((left, top, left + image_size, top + image_size))
    arr = np.asarray(im, dtype=np.uint8).copy()  # (H, W, 3)
    # Same operation as ShapesBatch.pixels(), so exported shapes images round-trip bit for bit.
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0  # (3, H, W)


def _stack(pixels: list[torch.Tensor], names: list[str], what: str) -> torch.Tensor:
    first = tuple(pixels[0].shape)
    for p, name in zip(pixels, names, strict=True):
        if tuple(p.shape) != first:
            raise ValueError(f"{what}: images differ in size ({names[0]} is {first[1]}x{first[2]}, {name} is "
                             f"{p.shape[1]}x{p.shape[2]}); pass image_size= to resize them")
    return torch.stack(pixels)


# ------------------------------------------------------------------------------------------
# Shapes world
# ------------------------------------------------------------------------------------------
class ShapesDataset(Dataset):
    """Samples ``start .. start+n-1`` of one split of the procedural shapes world.

    Args:
        split: ``"train"``, ``"val"`` or ``"test"`` (disjoint by construction).
        n: number of samples.
        image_size: side of the square images in pixels (>= 16).
        seed: world seed; the same seed gives byte-identical samples everywhere.
        second_object_prob: probability that a scene has a second, smaller object.
        textures: background textures to draw from (a subset of ``TEXTURES``).
        start: index of the first sample within the split (e.g. to take a disjoint slice).
        as_tuple: return ``(pixels, label, captions)`` instead of a dict.

    Items are rendered on demand; :meth:`batch` and :meth:`to_data` render many at once.
    """

    def __init__(self, split: str = "train", n: int = 1000, image_size: int = 32, seed: int = 0,
                 second_object_prob: float = 0.0, textures: Sequence[str] = TEXTURES, start: int = 0,
                 as_tuple: bool = False):
        split_scene_id(split, 0)  # validates the split name
        for name, value in (("n", n), ("start", start)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        if isinstance(textures, str):
            textures = (textures,)
        self.world = ShapesWorld(image_size=image_size, seed=seed, second_object_prob=second_object_prob,
                                 textures=tuple(textures))
        self.split, self.n, self.start, self.as_tuple = split, n, start, as_tuple

    @property
    def image_size(self) -> int:
        return self.world.image_size

    @property
    def class_names(self) -> list[str]:
        """The 48 ``"<colour> <shape>"`` class names in label order."""
        return shape_color_classes()

    @property
    def prompts(self) -> list[list[str]]:
        """Zero-shot prompts for each class, in label order."""
        return zeroshot_prompts()

    def __len__(self) -> int:
        return self.n

    def _index(self, index: int) -> int:
        if isinstance(index, bool) or not isinstance(index, int | np.integer):
            raise TypeError(f"index must be an int, got {type(index).__name__}")
        i = int(index) + self.n if index < 0 else int(index)
        if not 0 <= i < self.n:
            raise IndexError(f"index {index} out of range for a data set of {self.n} samples")
        return i

    def scene(self, index: int):
        """The :class:`~mmsec.data.shapes.Scene` (attributes) of sample ``index``."""
        return self.world.scene(split_scene_id(self.split, self.start + self._index(index)))

    def __getitem__(self, index: int):
        scene = self.scene(index)
        pixels = torch.from_numpy(self.world.render(scene)).permute(2, 0, 1).float() / 255.0  # (3, H, W)
        return _item(pixels, scene.label, scene.captions(), self.as_tuple)

    def batch(self, start: int = 0, count: int | None = None) -> ShapesBatch:
        """Samples ``start .. start+count-1`` of this data set at once (uint8 images, labels, captions)."""
        count = self.n - start if count is None else count
        if start < 0 or count < 0 or start + count > self.n:
            raise IndexError(f"batch({start}, {count}) out of range for a data set of {self.n} samples")
        return self.world.batch(self.split, self.start + start, count)

    def to_data(self, quiet: bool = False, chunk: int = 512) -> ImageTextData:
        """The whole data set in memory."""
        pixels, labels, captions = [], [], []
        with progress_bar(self.n, f"shapes {self.split}", quiet) as bar:
            for s in range(0, self.n, chunk):
                b = self.batch(s, min(chunk, self.n - s))
                pixels.append(b.pixels())
                labels.append(b.labels)
                captions += b.captions
                bar.advance(len(b.labels))
        if not pixels:
            pixels, labels = [torch.zeros(0, 3, self.image_size, self.image_size)], [torch.zeros(0, dtype=torch.long)]
        return ImageTextData(torch.cat(pixels), torch.cat(labels), self.class_names, captions)


# ------------------------------------------------------------------------------------------
# Image folder
# ------------------------------------------------------------------------------------------
def _image_files(folder: Path) -> list[Path]:
    """Image files under ``folder`` (recursively), hidden files skipped, sorted by relative path."""
    files = [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
             and not any(part.startswith(".") for part in p.relative_to(folder).parts)]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


class ImageFolderDataset(Dataset):
    """Images stored as ``root/<class name>/<image files>``.

    Args:
        root: the folder holding one sub-folder per class.
        image_size: if given, resize the shorter side to this and centre-crop to a square;
            if ``None``, images keep their size (then :meth:`to_data` needs them all equal).
        classes: class folder names in label order; default: the sorted sub-folder names.
            With an explicit list, a listed class may have no folder or no images, and a folder
            not listed is an error. (``export_shapes`` writes its label order to ``classes.txt``.)
        as_tuple: return ``(pixels, label, captions)`` instead of a dict; ``captions`` is ``None``.

    Attributes: ``classes`` (names in label order), ``samples`` (list of ``(path, label)``).
    """

    def __init__(self, root: str | os.PathLike, image_size: int | None = None,
                 classes: Sequence[str] | None = None, as_tuple: bool = False):
        root = Path(root)
        _check_image_size(image_size, allow_none=True)
        if not root.exists():
            raise FileNotFoundError(f"image folder {root} does not exist (expected root/<class name>/<image files>)")
        if not root.is_dir():
            raise NotADirectoryError(f"image folder {root} is not a directory (expected root/<class name>/<image files>)")
        folders = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        explicit = classes is not None
        if classes is None:
            if not folders:
                loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS]
                hint = (f"; it holds {len(loose)} image file(s) directly, but images must sit in one sub-folder "
                        "per class" if loose else "")
                raise ValueError(f"image folder {root} has no class sub-folders{hint} "
                                 "(expected root/<class name>/<image files>)")
            classes = folders
        else:
            classes = [str(c) for c in classes]
            if not classes or len(set(classes)) != len(classes):
                raise ValueError(f"classes must be a non-empty list of distinct names, got {classes}")
            unlisted = sorted(set(folders) - set(classes))
            if unlisted:
                raise ValueError(f"image folder {root} has sub-folders not in classes: {unlisted}")
        samples: list[tuple[Path, int]] = []
        empty = []
        for label, name in enumerate(classes):
            files = _image_files(root / name) if (root / name).is_dir() else []
            if not files:
                empty.append(name)
            samples += [(p, label) for p in files]
        if not samples:
            raise ValueError(f"image folder {root} holds no image files in its class sub-folders {classes} "
                             f"(image extensions read: {', '.join(IMAGE_EXTENSIONS)})")
        if empty and not explicit:
            raise ValueError(f"image folder {root}: class sub-folder(s) {empty} hold no image files "
                             f"(image extensions read: {', '.join(IMAGE_EXTENSIONS)})")
        self.root, self.image_size, self.as_tuple = root, image_size, as_tuple
        self.classes: list[str] = list(classes)
        self.samples = samples

    @property
    def class_names(self) -> list[str]:
        return self.classes

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        path, label = self.samples[index]
        return _item(read_image(path, self.image_size), label, None, self.as_tuple)

    def to_data(self, quiet: bool = False) -> ImageTextData:
        """The whole data set in memory (captions are ``None``)."""
        pixels = []
        with progress_bar(len(self), f"images {self.root.name}", quiet) as bar:
            for path, _ in self.samples:
                pixels.append(read_image(path, self.image_size))
                bar.advance()
        names = [str(p) for p, _ in self.samples]
        labels = torch.tensor([lab for _, lab in self.samples], dtype=torch.long)
        return ImageTextData(_stack(pixels, names, f"image folder {self.root}"), labels, list(self.classes), None)


# ------------------------------------------------------------------------------------------
# Caption files (CSV / JSONL)
# ------------------------------------------------------------------------------------------
@dataclass
class _Row:
    line: int
    image: str
    captions: list[str]
    label: Any  # None when the file has no labels


def _read_csv(path: Path) -> tuple[list[_Row], bool]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"caption file {path} is empty (expected a header with columns 'image', 'caption')")
        header = [h.strip() for h in header]
        missing = [c for c in ("image", "caption") if c not in header]
        if missing:
            raise ValueError(f"caption file {path} lacks column(s) {missing}: expected columns 'image' and "
                             f"'caption' (optionally 'label'), found {header}")
        col = {name: header.index(name) for name in ("image", "caption", "label") if name in header}
        has_label = "label" in col
        rows = []
        for values in reader:
            if not any(v.strip() for v in values):
                continue  # blank line
            line = reader.line_num
            get = {}
            for name, j in col.items():
                if j >= len(values):
                    raise ValueError(f"caption file {path}, line {line}: no value for column {name!r} "
                                     f"(row has {len(values)} field(s), header has {len(header)})")
                get[name] = values[j]
            rows.append(_Row(line, get["image"], [get["caption"]], get.get("label")))
    return rows, has_label


def _read_jsonl(path: Path) -> tuple[list[_Row], bool]:
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for line, text in enumerate(f, start=1):
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as e:
                raise ValueError(f"caption file {path}, line {line}: not valid JSON ({e})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"caption file {path}, line {line}: expected a JSON object "
                                 f'{{"image": ..., "caption": ...}}, got {type(obj).__name__}')
            missing = [k for k in ("image", "caption") if k not in obj]
            if missing:
                raise ValueError(f"caption file {path}, line {line}: missing key(s) {missing}; expected keys "
                                 f"'image' and 'caption' (optionally 'label'), found {sorted(obj)}")
            caps = obj["caption"]
            caps = [caps] if isinstance(caps, str) else caps
            if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
                raise ValueError(f"caption file {path}, line {line}: 'caption' must be a string or a list of "
                                 f"strings, got {obj['caption']!r}")
            if not isinstance(obj["image"], str):
                raise ValueError(f"caption file {path}, line {line}: 'image' must be a path string, "
                                 f"got {obj['image']!r}")
            rows.append(_Row(line, obj["image"], caps, obj.get("label")))
    has_label = [r.label is not None for r in rows]
    if any(has_label) and not all(has_label):
        first = rows[has_label.index(False)].line
        raise ValueError(f"caption file {path}, line {first}: no 'label', but other lines have one "
                         "(give every line a label, or none)")
    return rows, any(has_label)


def _parse_labels(path: Path, rows: list[_Row], class_names: list[str] | None) -> tuple[list[int], list[str] | None]:
    """Integer labels for rows (int or class-name strings), plus the class names if known."""
    raw = []
    for r in rows:
        v = r.label
        if isinstance(v, str):
            v = v.strip()
            if not v:
                raise ValueError(f"caption file {path}, line {r.line}: empty label")
        elif isinstance(v, bool) or not isinstance(v, int | str):
            raise ValueError(f"caption file {path}, line {r.line}: label must be an int or a class name, got {v!r}")
        raw.append(v)
    if all(isinstance(v, int) or _INT.fullmatch(v) for v in raw):
        labels = [int(v) for v in raw]
        for r, lab in zip(rows, labels, strict=True):
            if lab < 0 or (class_names is not None and lab >= len(class_names)):
                bound = f" for {len(class_names)} class_names" if class_names is not None else ""
                raise ValueError(f"caption file {path}, line {r.line}: label {lab} out of range{bound}")
        return labels, class_names
    names = class_names if class_names is not None else sorted({str(v) for v in raw})
    index = {n: i for i, n in enumerate(names)}
    labels = []
    for r, v in zip(rows, raw, strict=True):
        if str(v) not in index:
            raise ValueError(f"caption file {path}, line {r.line}: label {v!r} is not one of class_names."
                             f"{close_names(str(v), names)}")
        labels.append(index[str(v)])
    return labels, names


class CaptionDataset(Dataset):
    """Image-caption pairs listed in a CSV or JSONL file; rows naming the same image are grouped.

    Args:
        path: the ``.csv`` or ``.jsonl`` file (see the module docstring for the columns).
        image_size: if given, resize the shorter side to this and centre-crop to a square.
        class_names: names of the label indices. With integer labels they are attached as is;
            with string labels they fix the label order (default: sorted unique names).
        fmt: ``"csv"`` or ``"jsonl"``; default: from the file's suffix.
        as_tuple: return ``(pixels, label, captions)`` instead of a dict.

    Attributes: ``images`` (resolved paths in order of first appearance), ``captions``
    (a list of captions per image, in file order), ``labels`` (ints or ``None``), ``class_names``.
    """

    def __init__(self, path: str | os.PathLike, image_size: int | None = None,
                 class_names: Sequence[str] | None = None, fmt: str | None = None, as_tuple: bool = False):
        path = Path(path)
        _check_image_size(image_size, allow_none=True)
        if fmt is None:
            fmt = CAPTION_FORMATS.get(path.suffix.lower())
            if fmt is None:
                raise ValueError(f"caption file {path}: cannot tell the format from the suffix {path.suffix!r}; "
                                 f"expected one of {sorted(CAPTION_FORMATS)} or pass fmt='csv' / 'jsonl'")
        elif fmt not in ("csv", "jsonl"):
            raise ValueError(f"fmt must be 'csv' or 'jsonl', got {fmt!r}")
        if not path.exists():
            raise FileNotFoundError(f"caption file {path} does not exist")
        if not path.is_file():
            raise ValueError(f"caption file {path} is not a file")
        rows, has_label = _read_csv(path) if fmt == "csv" else _read_jsonl(path)
        if not rows:
            raise ValueError(f"caption file {path} has no rows")
        base = path.parent
        for r in rows:
            if not r.image.strip():
                raise ValueError(f"caption file {path}, line {r.line}: empty image path")
            if not r.captions or not all(c.strip() for c in r.captions):
                raise ValueError(f"caption file {path}, line {r.line}: empty caption")
        labels, names = (_parse_labels(path, rows, None if class_names is None else [str(c) for c in class_names])
                         if has_label else ([], None if class_names is None else [str(c) for c in class_names]))

        index: dict[str, int] = {}
        self.images: list[Path] = []
        self.captions: list[list[str]] = []
        self._lines: list[int] = []
        image_labels: list[int] = []
        for k, r in enumerate(rows):
            image = Path(os.path.normpath(base / r.image.strip()))  # absolute paths stay absolute
            key = str(image)
            if key not in index:
                index[key] = len(self.images)
                self.images.append(image)
                self.captions.append([])
                self._lines.append(r.line)
                if has_label:
                    image_labels.append(labels[k])
            i = index[key]
            self.captions[i] += r.captions
            if has_label and image_labels[i] != labels[k]:
                raise ValueError(f"caption file {path}, line {r.line}: label {r.label!r} for {r.image} "
                                 f"conflicts with the label on line {self._lines[i]}")
        missing = [(img, line) for img, line in zip(self.images, self._lines, strict=True) if not img.is_file()]
        if missing:
            img, line = missing[0]
            more = f" ({len(missing) - 1} more image(s) missing)" if len(missing) > 1 else ""
            raise FileNotFoundError(f"caption file {path}, line {line}: image file {img} not found "
                                    f"(relative paths are read from {base}){more}")
        self.path, self.image_size, self.as_tuple = path, image_size, as_tuple
        self.labels: list[int] | None = image_labels if has_label else None
        self.class_names: list[str] | None = names

    def __len__(self) -> int:
        return len(self.images)

    def _where(self, i: int) -> str:
        return f" (listed in {self.path}, line {self._lines[i]})"

    def __getitem__(self, index: int):
        i = range(len(self))[index]
        pixels = read_image(self.images[i], self.image_size, self._where(i))
        label = None if self.labels is None else self.labels[i]
        return _item(pixels, label, list(self.captions[i]), self.as_tuple)

    def to_data(self, quiet: bool = False) -> ImageTextData:
        """The whole data set in memory."""
        pixels = []
        with progress_bar(len(self), f"captions {self.path.name}", quiet) as bar:
            for i, img in enumerate(self.images):
                pixels.append(read_image(img, self.image_size, self._where(i)))
                bar.advance()
        labels = None if self.labels is None else torch.tensor(self.labels, dtype=torch.long)
        return ImageTextData(_stack(pixels, [str(p) for p in self.images], f"caption file {self.path}"), labels,
                             self.class_names, [list(c) for c in self.captions])


# ------------------------------------------------------------------------------------------
# Loading by registry name (experiment specs)
# ------------------------------------------------------------------------------------------
def _materialize(ds: Dataset) -> ImageTextData:
    """Generic fallback for registered data sets without ``to_data``: iterate their items."""
    items = [ds[i] for i in range(len(ds))]
    if not items:
        raise ValueError(f"data set {type(ds).__name__} is empty")
    batch = collate(items)
    pixels, labels, captions = batch if isinstance(batch, tuple) else (batch["pixels"], batch["label"],
                                                                       batch["captions"])
    return ImageTextData(pixels, labels, getattr(ds, "class_names", None), captions)


def load_dataset(name: str, quiet: bool = False, **kwargs: Any) -> ImageTextData:
    """Load a registered data set by name into memory, as experiment specs name it.

    Built-ins: ``shapes`` (split, n, image_size, seed, ...), ``imagefolder`` (path, image_size,
    classes) and ``captions`` (path, image_size, class_names). Keyword arguments go to the
    data set's constructor (see ``mmsec.registry.entries("datasets")``).
    """
    known = sorted(e.name for e in entries("datasets"))
    if name not in known:
        raise ValueError(f"unknown data set {name!r}; known: {known}.{close_names(name, known)}")
    factory = next(e.factory for e in entries("datasets") if e.name == name)
    if name == "imagefolder" and "path" in kwargs:  # specs say path for every file-backed data set
        if "root" in kwargs:
            raise ValueError("imagefolder takes path or root, not both")
        kwargs["root"] = kwargs.pop("path")
    try:
        inspect.signature(factory).bind(**kwargs)
    except TypeError as e:
        params = [p for p in inspect.signature(factory).parameters if p not in ("self", "as_tuple")]
        raise ValueError(f"data set {name!r}: {e}; it accepts {params}") from None
    ds = factory(**kwargs)
    return ds.to_data(quiet=quiet) if hasattr(ds, "to_data") else _materialize(ds)
