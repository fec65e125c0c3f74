"""mmsec: security evaluation of multimodal models (CLIP, VLMs, diffusion), runnable on a laptop CPU."""

from .version import __version__

__all__ = ["__version__"]
