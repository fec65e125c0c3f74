"""Model protocols, the tiny zoo architectures, and adapters for real models on disk.

Importing this package registers the model kinds (``mmsec.registry.entries("models")``).
The adapters import their libraries (transformers, open_clip) only when a model is loaded.
"""

from . import loaders
from .base import ContrastiveModel, FusionModel, PromptableText
from .hf_blip import HFBLIPRetrieval
from .hf_clip import HFCLIP
from .loaders import load_contrastive, load_fusion
from .open_clip_adapter import OpenCLIP
from .tiny_albef import TinyALBEF

__all__ = ["HFBLIPRetrieval", "HFCLIP", "ContrastiveModel", "FusionModel", "OpenCLIP", "PromptableText",
           "TinyALBEF", "load_contrastive", "load_fusion", "loaders"]
