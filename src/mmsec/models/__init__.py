"""Model protocols, the tiny zoo architectures, and adapters for real models on disk.

Importing this package registers the model kinds (``mmsec.registry.entries("models")``).
The adapters import their libraries (transformers, open_clip) only when a model is loaded.
"""

from . import loaders
from .base import ContrastiveModel
from .hf_clip import HFCLIP
from .loaders import load_contrastive
from .open_clip_adapter import OpenCLIP

__all__ = ["HFCLIP", "ContrastiveModel", "OpenCLIP", "load_contrastive", "loaders"]
