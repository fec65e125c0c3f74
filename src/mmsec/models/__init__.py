"""Model protocols (one per family), the tiny zoo architectures, adapters for real models on disk,
checkpoint I/O, and the loaders that resolve model specs.

Importing this package registers the zoo architectures' checkpoint families and the model loaders
(``mmsec.registry.entries("models")``). The adapters import their libraries (transformers,
open_clip, diffusers) only when a model is loaded.
"""

# The architectures first: they register their checkpoint families, which the loaders read.
from . import shapes_classifier, tiny_albef, tiny_clip  # noqa: I001
from . import loaders
from .base import (
    FAMILIES,
    ContrastiveModel,
    DiffusionModel,
    FusionModel,
    GenerativeVLM,
    ImageClassifier,
    PromptableText,
    VisionBlocks,
    families_of,
    require_family,
    vision_block_names,
)
from .diffusers_adapter import DiffusersLatentPipeline, DiffusersUNet
from .hf_blip import HFBLIPRetrieval
from .hf_clip import HFCLIP
from .loaders import load_contrastive, load_fusion, load_model, register_loader, schemes
from .open_clip_adapter import OpenCLIP
from .shapes_classifier import ShapesClassifier
from .tiny_albef import TinyALBEF
from .tiny_clip import TinyCLIP

__all__ = ["FAMILIES", "DiffusersLatentPipeline", "DiffusersUNet", "HFBLIPRetrieval", "HFCLIP", "ContrastiveModel",
           "DiffusionModel", "FusionModel", "GenerativeVLM", "ImageClassifier", "OpenCLIP", "PromptableText",
           "ShapesClassifier", "TinyALBEF", "TinyCLIP", "VisionBlocks", "families_of", "load_contrastive", "load_fusion",
           "load_model", "loaders", "register_loader", "require_family", "schemes", "shapes_classifier", "tiny_albef",
           "tiny_clip", "vision_block_names"]
