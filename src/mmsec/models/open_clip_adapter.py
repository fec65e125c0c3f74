"""``open_clip`` models behind the :class:`~mmsec.models.base.ContrastiveModel` protocol.

Builds ``open_clip.create_model_and_transforms(arch, pretrained=<local .safetensors file>)``
(never a pretrained *tag*, which would download), with ``open_clip.get_tokenizer(arch)`` and
the image statistics and geometry of the model's own ``preprocess_cfg``::

    from mmsec.models.open_clip_adapter import OpenCLIP
    model = OpenCLIP.from_file("ViT-B-32", "/models/vit-b-32-openai.safetensors")
    emb = model.encode_image(pixels)           # pixels (B, 3, H, W) in [0, 1], any H, W

Pickle checkpoints (``.pt``, ``.bin``, ``.pth``, ...) are refused: unpickling runs arbitrary
code, and mmsec is handed suspicious models on purpose. Convert one once, in a sandbox you
trust, with ``safetensors.torch.save_file`` (see :func:`check_open_clip_weights`).

``encode_image`` / ``encode_text`` equal open_clip's ``encode_image`` / ``encode_text`` (projected,
un-normalised) after the adapter's own differentiable preprocessing (see
:mod:`mmsec.models.preprocess`). ``logit_scale`` is ``exp(model.logit_scale)``; SigLIP-style
models also have a ``logit_bias``, which the protocol does not carry (zero-shot argmax and
cross-entropy over classes are unchanged by it).

Tokenizers: built-in CLIP architectures use open_clip's bundled BPE vocabulary (no download);
architectures whose tokenizer comes from the Hugging Face Hub (``hf_tokenizer_name``) need it
in the local Hugging Face cache. open_clip also needs ``torchvision`` importable beside torch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError, looks_like_pickle
from .preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImagePreprocess, check_image_batch, resize_and_crop

logger = logging.getLogger(__name__)

INSTALL_HINT = ('OpenCLIP needs the open_clip package: pip install "mmsec[open_clip]" (open_clip imports '
                "torchvision, so install the torchvision build that matches your torch)")


def import_open_clip() -> Any:
    """Import open_clip lazily, with an install hint (a broken torchvision fails here too)."""
    try:
        import open_clip
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT}; the import failed with: {e}") from e
    except (RuntimeError, OSError, AttributeError) as e:  # e.g. a torchvision built for another torch
        raise ImportError(f"{INSTALL_HINT}; importing it failed with {type(e).__name__}: {e}") from e
    return open_clip


def check_open_clip_weights(path: str | Path) -> Path:
    """Return ``path`` if it is a local safetensors file; refuse missing files and pickles."""
    p = Path(path).expanduser()
    if not p.exists():
        raise FileNotFoundError(f"open_clip weights not found: {p}. Expected a local .safetensors file "
                                "(mmsec never downloads pretrained tags from a hub)")
    if not p.is_file():
        raise IsADirectoryError(f"open_clip weights must be a .safetensors file, got the folder {p}")
    is_pickle = looks_like_pickle(p)
    if p.suffix != ".safetensors" or is_pickle:
        why = "its bytes are a pickle / torch archive" if is_pickle else f"its suffix is {p.suffix!r}"
        target = p.with_suffix(".safetensors") if p.suffix != ".safetensors" else p.with_name(p.stem + "-converted.safetensors")
        raise CheckpointError(
            f"refusing to load {p}: mmsec loads open_clip weights from .safetensors files only and {why}; "
            "unpickling runs arbitrary code. Convert it once, in a sandbox you trust: "
            f"`python -c \"import torch, safetensors.torch as st; sd = torch.load('{p}', map_location='cpu', "
            "weights_only=True); sd = sd.get('state_dict', sd); st.save_file({k.removeprefix('module.'): "
            f"v.contiguous() for k, v in sd.items()}}, '{target}')\"`")
    return p


def open_clip_image_preprocess(cfg: dict, image_size: int) -> ImagePreprocess:
    """The inference pipeline of an open_clip ``preprocess_cfg`` (size, mean, std, interpolation,
    resize_mode, fill_color) for a square tower of side ``image_size``."""
    mode = cfg.get("resize_mode", "shortest") or "shortest"
    interpolation = cfg.get("interpolation", "bicubic") or "bicubic"
    if interpolation not in ("bicubic", "bilinear", "nearest"):
        logger.warning("open_clip interpolation %r has no differentiable twin; using bicubic", interpolation)
        interpolation = "bicubic"
    mean = tuple(float(v) for v in (cfg.get("mean") or OPENAI_CLIP_MEAN))
    std = tuple(float(v) for v in (cfg.get("std") or OPENAI_CLIP_STD))
    fill = float(cfg.get("fill_color", 0) or 0) / 255.0
    return ImagePreprocess(image_size=(image_size, image_size), resize=image_size, resize_mode=mode,
                           interpolation=interpolation, mean=mean, std=std, fill=fill)


class OpenCLIP(nn.Module):
    """An ``open_clip`` CLIP as a :class:`~mmsec.models.base.ContrastiveModel`.

    Args:
        model: an open_clip ``CLIP`` / ``CustomTextCLIP`` (``encode_image``, ``encode_text``,
            ``logit_scale``, ``visual``).
        tokenizer: ``open_clip.get_tokenizer(arch)``.
        preprocess: the image pipeline; read from ``model.visual.preprocess_cfg`` when None.

    Use :meth:`from_file` to build one from an architecture name and a safetensors file.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, preprocess: ImagePreprocess | None = None):
        super().__init__()
        for attr in ("encode_image", "encode_text", "logit_scale", "visual"):
            if not hasattr(model, attr):
                raise TypeError(f"OpenCLIP wraps an open_clip CLIP model; {type(model).__name__} lacks {attr!r}")
        size = getattr(model.visual, "image_size", None)
        if size is None:
            size = (getattr(model.visual, "preprocess_cfg", None) or {}).get("size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        if h != w:
            raise ValueError(f"OpenCLIP supports square image towers; this one expects {h}x{w}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = int(h)
        if preprocess is None:
            cfg = dict(getattr(model.visual, "preprocess_cfg", None) or {})
            cfg.setdefault("mean", getattr(model.visual, "image_mean", None))
            cfg.setdefault("std", getattr(model.visual, "image_std", None))
            preprocess = open_clip_image_preprocess(cfg, self.image_size)
        if preprocess.image_size != (self.image_size, self.image_size):
            raise ValueError(f"preprocess produces {preprocess.image_size} images but the image tower expects "
                             f"{self.image_size}x{self.image_size}")
        self.preprocess = preprocess
        self.context_length = int(getattr(model, "context_length", 0) or getattr(tokenizer, "context_length", 77))
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_file(cls, arch: str, weights: str | Path, device: str | torch.device = "cpu",
                  model_config: str | Path | None = None,
                  image_mean: tuple[float, float, float] | None = None,
                  image_std: tuple[float, float, float] | None = None,
                  image_interpolation: str | None = None,
                  image_resize_mode: str | None = None) -> OpenCLIP:
        """Build open_clip architecture ``arch`` with the weights of a local safetensors file.

        A weights file carries no preprocessing metadata (open_clip keeps it with its pretrained
        *tags*), so the pipeline is the architecture's default: OpenAI mean / std, bicubic,
        shortest edge + centre crop. Pass the statistics the weights were trained with when they
        differ, e.g. ``image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5)`` for SigLIP.

        Args:
            arch: an open_clip model name (``open_clip.list_models()``), e.g. ``"ViT-B-32"``.
            weights: path to a ``.safetensors`` state dict for that architecture.
            device: where to put the model.
            model_config: optional JSON model config (file or folder) registered with
                ``open_clip.add_model_config`` first, for architectures open_clip does not ship.
            image_mean, image_std, image_interpolation, image_resize_mode: overrides of the
                preprocessing, passed to ``open_clip.create_model_and_transforms``.
        """
        path = check_open_clip_weights(weights)
        if not isinstance(arch, str) or not arch:
            raise ValueError(f"arch must be an open_clip model name such as 'ViT-B-32', got {arch!r}")
        if arch.startswith(("hf-hub:", "local-dir:")):
            raise ValueError(f"arch {arch!r}: schemas that fetch configs and weights ('hf-hub:', 'local-dir:') "
                             "are not supported; pass an architecture name and a local .safetensors file")
        open_clip = import_open_clip()
        if model_config is not None:
            cfg_path = Path(model_config).expanduser()
            if not cfg_path.exists():
                raise FileNotFoundError(f"open_clip model config not found: {cfg_path}")
            open_clip.add_model_config(cfg_path)
        known = open_clip.list_models()
        if arch not in known:
            from ..registry import close_names

            raise ValueError(f"unknown open_clip architecture {arch!r}.{close_names(arch, known)} "
                             "See open_clip.list_models(), or pass model_config=<json> for a custom one.")
        model, _, _ = open_clip.create_model_and_transforms(
            arch, pretrained=str(path), device=device, precision="fp32", image_mean=image_mean, image_std=image_std,
            image_interpolation=image_interpolation, image_resize_mode=image_resize_mode)
        tokenizer = open_clip.get_tokenizer(arch)
        return cls(model.float(), tokenizer).to(device).eval()

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(B, context_length) int64 token ids (open_clip pads to its context length)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"tokenize takes a list of strings, got {type(texts).__name__}")
        return self.tokenizer(list(texts)).to(self.device, torch.long)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1], any H, W -> (B, 3, S, S) tower input (S = image_size)."""
        check_image_batch(pixels, "OpenCLIP.normalize")
        x = resize_and_crop(pixels.to(self.mean.dtype), self.preprocess)  # (B, 3, S, S)
        return (x - self.mean) / self.std

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, D) projected, un-normalised embeddings."""
        return self.model.encode_image(self.normalize(pixels))  # (B, D)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids from :meth:`tokenize` -> (B, D) projected, un-normalised embeddings."""
        if not isinstance(tokens, torch.Tensor) or tokens.ndim != 2 or tokens.is_floating_point():
            raise ValueError("OpenCLIP.encode_text takes the (B, L) integer id tensor from tokenize(), got "
                             f"{type(tokens).__name__} {tuple(getattr(tokens, 'shape', ()))}")
        if tokens.shape[1] > self.context_length:
            raise ValueError(f"OpenCLIP.encode_text: {tokens.shape[1]} tokens exceed the context length "
                             f"{self.context_length}")
        return self.model.encode_text(tokens.to(self.device, torch.long))  # (B, D)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    # VisionBlocks (mmsec.models.base)
    def vision_blocks(self) -> list[nn.Module]:
        """The image tower's blocks, input side first: a ViT's residual attention blocks
        (``model.visual.transformer.resblocks.*``), a ModifiedResNet's four stages
        (``model.visual.layer1`` ... ``layer4``), or a timm trunk's ``blocks`` / ``stages``."""
        visual = self.model.visual
        resblocks = getattr(getattr(visual, "transformer", None), "resblocks", None)
        if isinstance(resblocks, nn.ModuleList):
            return list(resblocks)
        stages = [getattr(visual, f"layer{i}", None) for i in range(1, 5)]
        if all(isinstance(s, nn.Module) for s in stages):
            return stages
        trunk = getattr(visual, "trunk", None)
        for name in ("blocks", "stages"):
            seq = getattr(trunk, name, None)
            if isinstance(seq, (nn.ModuleList, nn.Sequential)):
                return list(seq)
        raise TypeError(f"OpenCLIP.vision_blocks: the image tower {type(visual).__name__} has none of "
                        "transformer.resblocks, layer1-4, trunk.blocks or trunk.stages")
