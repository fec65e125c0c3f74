"""Data: the procedural shapes world, loaders for real formats, and export to files.

Registered data sets (``mmsec.registry.entries("datasets")``): ``shapes``, ``imagefolder``,
``captions``. :func:`load_dataset` loads any of them by name into an :class:`ImageTextData`.
"""

from ..registry import declare_kind, register
from .datasets import (
    CaptionDataset,
    ImageDecodeError,
    ImageFolderDataset,
    ImageTextData,
    ShapesDataset,
    collate,
    load_dataset,
    read_image,
)
from .export import ShapesExport, export_shapes
from .shapes import ShapesBatch, ShapesWorld, shape_color_classes, zeroshot_prompts

declare_kind("datasets", "data sets by name: load_dataset(name, ...) -> ImageTextData", "mmsec.data.datasets:load_dataset")
register("datasets", "shapes", "procedural shapes world: split, n, image_size, seed (48 shape x colour classes, "
         "several captions per image)")(ShapesDataset)
register("datasets", "imagefolder", "images in path/<class name>/<image files>; classes sorted unless given")(
    ImageFolderDataset)
register("datasets", "captions", "image-caption pairs from a CSV (image, caption[, label]) or JSONL file")(
    CaptionDataset)

__all__ = [
    "CaptionDataset",
    "ImageDecodeError",
    "ImageFolderDataset",
    "ImageTextData",
    "ShapesBatch",
    "ShapesDataset",
    "ShapesExport",
    "ShapesWorld",
    "collate",
    "export_shapes",
    "load_dataset",
    "read_image",
    "shape_color_classes",
    "zeroshot_prompts",
]
