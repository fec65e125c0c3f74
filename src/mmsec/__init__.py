"""mmsec: security evaluation of multimodal models (CLIP, VLMs, diffusion), runnable on a laptop CPU."""

from .version import __version__


def load_model(spec: str, family: str | None = None):
    """The model a spec names (``zoo:NAME``, ``hf:DIR``, ``open_clip:ARCH:FILE``, ...), with every built-in
    loader registered; ``family`` ("contrastive", "fusion", ...) requires that family. See
    :func:`mmsec.models.loaders.load_model`."""
    from . import builtins
    from .models.loaders import load_model as _load

    builtins.load()
    return _load(spec, family=family)


__all__ = ["__version__", "load_model"]
