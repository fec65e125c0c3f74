"""Model names used in experiment specs and the CLI, resolved through registered loaders.

One entry point, :func:`load_model`, for every model family::

    model = load_model("zoo:shapes-clip-resnet")                    # whatever the zoo checkpoint is
    model = load_model("hf-blip:/models/blip-itm", family="fusion") # a FusionModel, or one clear error

A spec is ``SCHEME:REST``; the scheme picks a loader registered with :func:`register_loader`,
which declares the model family it returns (``contrastive``, ``fusion``, ``vlm``, ``diffusion``:
:data:`mmsec.models.base.FAMILIES`), and is called with ``REST``. Built-in forms::

    zoo:NAME                         a shipped zoo model (mmsec.zoo.load_model), e.g. zoo:shapes-clip-resnet;
                                     its family is declared in the checkpoint's metadata (contrastive / fusion)
    zoo:/path/NAME.safetensors       a zoo-format checkpoint on disk, its card NAME.json beside it
    NAME                             the same as zoo:NAME, without the prefix
    hf:/path/to/folder               a Hugging Face CLIP saved with save_pretrained (HFCLIP, contrastive)
    hf-blip:/path/to/folder          a Hugging Face BlipForImageTextRetrieval folder (HFBLIPRetrieval, fusion)
    open_clip:ARCH:/path/file.safetensors   an open_clip architecture with local weights (OpenCLIP, contrastive)
    diffusers:/path/to/folder        a diffusers UNet folder (unet/ + scheduler/) or a StableDiffusionPipeline
                                     folder (DiffusersUNet / DiffusersLatentPipeline, diffusion)

A bare Windows path (``C:\\models\\clip``) is never read as a scheme: schemes have two letters or
more. With ``family=`` given, a model of another family is one TypeError, raised before loading
when the loader's declared family cannot satisfy it. Adding a model family is a protocol
(:mod:`mmsec.models.base`), an adapter, and one call::

    register_loader("hf-llava", load_hf_llava, family="vlm", form="hf-llava:/path/to/llava_folder",
                    summary="a Hugging Face LLaVA folder (safetensors)")

Nothing is ever downloaded, and only safetensors weights are loaded. Importing this module
registers the built-in loaders in the registry kind ``models`` (``mmsec list``); the heavy
libraries (transformers, open_clip, diffusers) are imported only when such a model is loaded.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..fingerprint import combine, file_sha256, tree_sha256
from ..registry import close_names, declare_kind, register
from .base import FAMILIES, ContrastiveModel, FusionModel, get_family, implies, require_family

declare_kind("models", "model names for specs and the CLI: zoo:NAME, hf:DIR, ... -> a model of one family",
             "mmsec.models.loaders:load_model")


@dataclass(frozen=True)
class Loader:
    """A registered model scheme.

    Attributes:
        scheme: the text before the first ``:`` of a spec (``hf``).
        load: called with the spec's text after ``SCHEME:`` (stripped); returns the model. It checks
            that text itself and raises a ValueError saying how to write it when it is wrong.
        family: the model family every model it returns satisfies; None when each model declares its
            own (zoo checkpoints, in their metadata).
        form: how a spec of this scheme is written, for error messages and spec checks.
        summary: one line for ``mmsec list``.
    """

    scheme: str
    load: Callable[[str], Any]
    family: str | None
    form: str
    summary: str
    names: Callable[[], list[str]] | None = None  # the bare names (no "SCHEME:") this loader answers to
    family_of: Callable[[str], str | None] | None = None  # a spec's family without loading, when it varies
    fingerprint: Callable[[str], str] | None = None  # content hash of the files ``load(rest)`` reads


_LOADERS: dict[str, Loader] = {}
_SCHEME = re.compile(r"^[a-z][a-z0-9_-]+$")  # two characters or more: 'C:\...' is a Windows path


def register_loader(scheme: str, loader: Callable[[str], Any], *, family: str | None, form: str, summary: str,
                    name: str | None = None, names: Callable[[], list[str]] | None = None,
                    family_of: Callable[[str], str | None] | None = None,
                    fingerprint: Callable[[str], str] | None = None) -> Loader:
    """Register ``loader`` for specs ``SCHEME:...`` and record it in the registry kind ``models``.

    Args:
        scheme: lower-case letters, digits, ``-`` and ``_``, at least two characters.
        loader: ``loader(rest) -> model``, ``rest`` being the spec after ``SCHEME:``.
        family: the model family its models satisfy (a key of :data:`mmsec.models.base.FAMILIES`),
            or None when each model declares its own.
        form: how such a spec is written, starting with ``SCHEME:`` (``hf:/path/to/hf_clip_folder``).
        summary: one line describing what it loads, for ``mmsec list``.
        name: the registry entry's name (default: ``form``).
        names: the bare names (written without ``SCHEME:``) this loader answers to, e.g. the zoo's.
        family_of: the family of ``SCHEME:rest`` without loading it, when the loader's family is None.
        fingerprint: ``fingerprint(rest)`` -> the sha256 of the files the loader reads (weights, configs),
            so a result is tied to the weights it was measured on; without it a spec's model name is its
            only identity.
    """
    if not isinstance(scheme, str) or not _SCHEME.match(scheme):
        raise ValueError(f"register_loader: scheme must be lower-case letters, digits, '-' or '_', at least two "
                         f"characters (one letter would read as a Windows drive), got {scheme!r}")
    if scheme in _LOADERS:
        raise ValueError(f"register_loader: scheme {scheme!r} is already registered ({_LOADERS[scheme].form})")
    if not callable(loader):
        raise TypeError(f"register_loader({scheme!r}): loader must be callable as loader(rest) -> model, got {loader!r}")
    if family is not None:
        get_family(family)  # a ValueError naming the known families
    if not isinstance(form, str) or not form.startswith(f"{scheme}:"):
        raise ValueError(f"register_loader({scheme!r}): form must show how a spec is written, starting with "
                         f"'{scheme}:', got {form!r}")
    if not isinstance(summary, str) or not summary.strip():
        raise ValueError(f"register_loader({scheme!r}): summary must be a non-empty line, got {summary!r}")
    entry = Loader(scheme, loader, family, form, summary, names, family_of, fingerprint)
    register("models", name or form, summary, family=family)(loader)
    _LOADERS[scheme] = entry
    return entry


def schemes() -> dict[str, str]:
    """The registered schemes and how a spec of each is written: ``{scheme: form}``, in registration order."""
    return {s: loader.form for s, loader in _LOADERS.items()}


def loaders() -> dict[str, Loader]:
    """The registered loaders by scheme (a copy)."""
    return dict(_LOADERS)


def _forms() -> str:
    return "Accepted forms: " + "; ".join(loader.form for loader in _LOADERS.values())


def _resolve(spec: Any) -> tuple[Loader, str]:
    """The loader a spec names and the text it is called with; ValueErrors that teach the forms."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model spec must be a non-empty string, got {spec!r}. {_forms()}")
    spec = spec.strip()
    prefix, sep, rest = spec.partition(":")
    if sep and len(prefix) == 1 and rest.startswith(("\\", "/")):
        prefix, sep = "", ""  # a bare Windows path such as C:\models, not a scheme
    if not sep:
        names: list[str] = []
        for loader in _LOADERS.values():
            known = loader.names() if loader.names is not None else []
            if spec in known:
                return loader, spec
            names += known
        hint = (f" {spec!r} looks like a path: write 'hf:{spec}' for a Hugging Face CLIP folder or "
                f"'open_clip:ARCH:{spec}' for open_clip weights." if ("/" in spec or "\\" in spec) else "")
        where = (f"named models are {names}" if names else
                 "no loader of bare names is registered (the zoo's registers when mmsec.zoo is imported, or call "
                 "mmsec.builtins.load())")
        raise ValueError(f"unknown model {spec!r}; {where}.{close_names(spec, names)}{hint} {_forms()}")
    if prefix not in _LOADERS:
        known = list(_LOADERS)
        later = (" (zoo models are registered by mmsec.zoo: import it, or call mmsec.builtins.load())"
                 if prefix == "zoo" else "")
        raise ValueError(f"unknown model prefix {prefix!r} in {spec!r}{later}.{close_names(prefix.lower(), known)} "
                         f"{_forms()}")
    return _LOADERS[prefix], rest.strip()


def declared_family(spec: str) -> str | None:
    """The model family ``spec`` will load, as far as known without loading it: the loader's family,
    or for a zoo name the family its recipe declares; None when only the checkpoint can tell."""
    loader, rest = _resolve(spec)
    if loader.family is not None:
        return loader.family
    return loader.family_of(rest) if loader.family_of is not None else None


def fingerprint(spec: str) -> str | None:
    """The content hash of the files ``spec`` loads (None when its loader cannot tell); errors name the spec."""
    loader, rest = _resolve(spec)
    if loader.fingerprint is None:
        return None
    try:
        return loader.fingerprint(rest)
    except OSError as e:
        raise ValueError(f"model {spec!r}: cannot read its files to fingerprint them: {e}") from e


def load_model(spec: str, family: str | None = None) -> Any:
    """Load the model named by ``spec`` (see the module docstring for the forms).

    Args:
        spec: ``SCHEME:REST`` or a bare zoo name.
        family: when given, the model must satisfy this family (a key of
            :data:`mmsec.models.base.FAMILIES`); a model of another family is a TypeError, raised
            before loading when the scheme's declared family cannot satisfy it.
    """
    if family is not None:
        get_family(family)
    loader, rest = _resolve(spec)
    who = f"load_model({spec!r}, family={family!r})"
    if family is not None and loader.family is not None and not implies(loader.family, family):
        fits = [s for s, other in _LOADERS.items() if other.family is None or implies(other.family, family)]
        raise TypeError(f"{who}: scheme '{loader.scheme}:' loads {loader.family!r} models, not a "
                        f"{FAMILIES[family].protocol.__name__} ({FAMILIES[family].description}). Schemes that can "
                        f"load a {family!r} model: {fits}")
    try:
        model = loader.load(rest)
    except (ValueError, TypeError, KeyError, OSError, ImportError):
        raise  # (already a message about the input: CheckpointError is a ValueError)
    except Exception as e:  # a library's own error on damaged files (SafetensorError, a state-dict mismatch, ...)
        from .checkpoint import CheckpointError

        first = (str(e).strip().splitlines() or [""])[0]
        raise CheckpointError(f"cannot load model {spec!r}: {type(e).__name__}: {first}") from e
    if loader.family is not None:  # the loader keeps its word
        require_family(model, loader.family, f"the {loader.scheme!r} loader (declared family {loader.family!r})")
    if family is not None:
        require_family(model, family, who)
    return model


def load_contrastive(spec: str) -> ContrastiveModel:
    """Load the ContrastiveModel named by ``spec``: ``load_model(spec, family="contrastive")``.
    Fusion models are contrastive models too."""
    return load_model(spec, family="contrastive")


def load_fusion(spec: str) -> FusionModel:
    """Load the FusionModel named by ``spec`` (e.g. ``zoo:shapes-albef`` or ``hf-blip:/dir``):
    ``load_model(spec, family="fusion")``."""
    return load_model(spec, family="fusion")


# -- the built-in loaders ------------------------------------------------------------------------------

def load_hf(directory: str | Path) -> ContrastiveModel:
    """A Hugging Face CLIP folder (:class:`~mmsec.models.hf_clip.HFCLIP`)."""
    if not str(directory).strip():
        raise ValueError("model spec 'hf:' names no folder: write hf:/path/to/hf_clip_folder")
    from .hf_clip import HFCLIP

    return HFCLIP.from_pretrained(directory)


def load_hf_blip(directory: str | Path) -> FusionModel:
    """A Hugging Face BLIP retrieval folder (:class:`~mmsec.models.hf_blip.HFBLIPRetrieval`)."""
    if not str(directory).strip():
        raise ValueError("model spec 'hf-blip:' names no folder: write hf-blip:/path/to/blip_retrieval_folder")
    from .hf_blip import HFBLIPRetrieval

    return HFBLIPRetrieval.from_pretrained(directory)


def load_open_clip(arch: str, weights: str | Path) -> ContrastiveModel:
    """An open_clip architecture with local safetensors weights (:class:`~mmsec.models.open_clip_adapter.OpenCLIP`)."""
    from .open_clip_adapter import OpenCLIP

    return OpenCLIP.from_file(arch, weights)


def load_open_clip_spec(rest: str) -> ContrastiveModel:
    """:func:`load_open_clip` from the ``ARCH:/path/to/weights.safetensors`` part of a spec."""
    arch, sep, weights = rest.partition(":")
    if not arch or not sep or not weights:
        raise ValueError(f"model spec 'open_clip:{rest}' must be open_clip:ARCH:/path/to/weights.safetensors "
                         "(e.g. open_clip:ViT-B-32:/models/vit-b-32.safetensors)")
    return load_open_clip(arch, weights)


def load_diffusers(directory: str | Path) -> Any:
    """A diffusers folder (a pixel UNet + scheduler, a bare UNet, or a StableDiffusionPipeline; safetensors
    only): :func:`mmsec.models.diffusers_adapter.load_diffusers`."""
    from .diffusers_adapter import load_diffusers as load

    return load(directory)


def _open_clip_fingerprint(rest: str) -> str:
    arch, _, weights = rest.partition(":")
    return combine(arch, file_sha256(weights))


def _register() -> None:
    register_loader("hf", load_hf, family="contrastive", name="hf:<dir>", form="hf:/path/to/hf_clip_folder",
                    fingerprint=tree_sha256,
                    summary="a Hugging Face transformers CLIPModel folder (safetensors), "
                            "e.g. hf:/models/clip-vit-base-patch32")
    register_loader("hf-blip", load_hf_blip, family="fusion", name="hf-blip:<dir>", fingerprint=tree_sha256,
                    form="hf-blip:/path/to/blip_retrieval_folder",
                    summary="a Hugging Face transformers BlipForImageTextRetrieval folder (safetensors; a fusion "
                            "model with ITC and ITM), e.g. hf-blip:/models/blip-itm-base-coco")
    register_loader("open_clip", load_open_clip_spec, family="contrastive", name="open_clip:<arch>:<file>",
                    fingerprint=_open_clip_fingerprint,
                    form="open_clip:ARCH:/path/to/weights.safetensors",
                    summary="an open_clip architecture with local safetensors weights, "
                            "e.g. open_clip:ViT-B-32:/models/vit-b-32.safetensors")
    register_loader("diffusers", load_diffusers, family="diffusion", name="diffusers:<dir>", fingerprint=tree_sha256,
                    form="diffusers:/path/to/diffusers_folder",
                    summary="a diffusers folder (safetensors): a UNet2DModel / UNet2DConditionModel with its scheduler "
                            "(unet/, scheduler/), or a StableDiffusionPipeline (model_index.json)")


_register()


__all__ = ["Loader", "declared_family", "load_contrastive", "load_diffusers", "load_fusion", "load_hf", "load_hf_blip", "load_model",
           "fingerprint", "load_open_clip", "load_open_clip_spec", "loaders", "register_loader", "schemes"]
