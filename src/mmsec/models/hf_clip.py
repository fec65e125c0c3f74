"""Hugging Face ``transformers`` CLIP behind the :class:`~mmsec.models.base.ContrastiveModel` protocol.

Load any CLIP saved with ``CLIPModel.save_pretrained`` + ``tokenizer.save_pretrained`` from a
local folder (never from the Hub)::

    from mmsec.models.hf_clip import HFCLIP
    model = HFCLIP.from_pretrained("/models/clip-vit-base-patch32")
    emb = model.encode_image(pixels)           # pixels (B, 3, H, W) in [0, 1], any H, W

The folder must hold ``config.json``, safetensors weights (``model.safetensors`` or shards with
``model.safetensors.index.json``), the tokenizer (``tokenizer.json``, or ``vocab.json`` +
``merges.txt``) and, optionally, ``preprocessor_config.json`` (resize / crop / mean / std;
OpenAI CLIP's defaults otherwise). Pickle weights (``pytorch_model.bin``) are refused: mmsec
is handed suspicious models on purpose and unpickling runs arbitrary code.

Semantics:
    * ``encode_image`` / ``encode_text`` equal ``get_image_features`` / ``get_text_features``
      (projected, un-normalised) on the adapter's own preprocessing.
    * ``normalize`` re-implements the processor's geometry (shortest edge -> centre crop,
      bicubic) differentiably on float pixels: gradients reach the caller's pixels, and the
      result matches Hugging Face's PIL/torchvision pipeline to interpolation rounding.
    * ``tokenize`` returns input ids only, right-padded to the text tower's
      ``max_position_embeddings`` (77 for OpenAI CLIP) and truncated there, so ids from
      different calls stack. ``encode_text`` rebuilds the attention mask from the ids (ones
      up to and including the first end-of-text token): CLIP's text tower is causal and pools
      at that token, so this is exactly what the tokenizer's own mask gives.
    * The wrapped model stays in eval mode and is never put under ``no_grad``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError, check_safetensors_file, looks_like_pickle
from .preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImagePreprocess, check_image_batch, resize_and_crop

logger = logging.getLogger(__name__)

EXPECTED_LAYOUT = ("a folder written by CLIPModel.save_pretrained(...) and tokenizer.save_pretrained(...): "
                   "config.json, model.safetensors (or model-*.safetensors shards with "
                   "model.safetensors.index.json), tokenizer.json or vocab.json + merges.txt, and optionally "
                   "preprocessor_config.json")
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.bin", "model.pt", "model.pth",
                  "model.ckpt", "tf_model.h5", "flax_model.msgpack")
# PIL's resampling enum, as stored in preprocessor_config.json.
_PIL_RESAMPLE = {0: "nearest", 2: "bilinear", 3: "bicubic"}


def convert_hint(directory: Path) -> str:
    return ("Convert it once, in a sandbox you trust (a container without your credentials): "
            f"`python -c \"from transformers import CLIPModel; CLIPModel.from_pretrained('{directory}', "
            f"use_safetensors=False).save_pretrained('{directory}-safetensors')\"`, copy the tokenizer and "
            "preprocessor files beside it, and load the new folder.")


def _shards(index: Path) -> list[str]:
    """The shard files a ``model.safetensors.index.json`` names (a CheckpointError when it is not one)."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        shards = sorted(set(weight_map.values()))
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as e:
        raise CheckpointError(f"{index} is not a safetensors index (a JSON object with a weight_map of parameter "
                              f"names to shard files): {type(e).__name__}: {e}") from e
    bad = [s for s in shards if not isinstance(s, str) or "/" in s or "\\" in s or s in ("", ".", "..")]
    if bad:
        raise CheckpointError(f"{index}: weight_map must name shard files beside it, got {bad[:3]}")
    return shards


def check_hf_folder(directory: str | Path, model_type: str, who: str, layout: str,
                    hint: Callable[[Path], str]) -> tuple[Path, dict]:
    """Checks every local Hugging Face folder passes before anything is loaded: it exists, has a
    config.json of ``model_type``, and safetensors weights (pickle-only weights are refused with
    ``hint(folder)``, how to convert them). Returns (path, config)."""
    d = Path(directory).expanduser()
    if not d.exists():
        raise FileNotFoundError(f"Hugging Face {model_type.upper()} folder not found: {d}. Expected {layout}. "
                                "mmsec never downloads from a model hub: pass a local folder.")
    if not d.is_dir():
        raise NotADirectoryError(f"{d} is a file; {who}.from_pretrained expects a folder: {layout}")
    cfg_path = d / "config.json"
    if not cfg_path.is_file():
        raise FileNotFoundError(f"no config.json in {d}; expected {layout}")
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{cfg_path} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise ValueError(f"{cfg_path} must hold a JSON object (model_type, text_config, vision_config, ...), "
                         f"got {type(config).__name__}")
    if config.get("model_type") != model_type:
        raise ValueError(f"{cfg_path} has model_type {config.get('model_type')!r}; {who} loads "
                         f"model_type {model_type!r} folders")

    single, index = d / "model.safetensors", d / "model.safetensors.index.json"
    if single.is_file():
        if looks_like_pickle(single):
            raise CheckpointError(f"refusing to load {single}: its bytes are a pickle / torch archive, not "
                                  f"safetensors, and unpickling runs arbitrary code. {hint(d)}")
        check_safetensors_file(single)
    elif index.is_file():
        for shard in _shards(index):
            check_safetensors_file(d / shard)
    else:
        pickles = sorted(p.name for p in d.iterdir()
                         if p.name in PICKLE_WEIGHTS or p.suffix in {".bin", ".pt", ".pth", ".ckpt", ".pkl"})
        if pickles:
            raise CheckpointError(
                f"refusing to load {d}: it has only pickle-based weights ({', '.join(pickles)}), and unpickling "
                f"runs arbitrary code; mmsec loads safetensors only. {hint(d)}")
        raise FileNotFoundError(f"no weights in {d}: expected model.safetensors (or model-*.safetensors shards "
                                "with model.safetensors.index.json)")
    return d, config


def check_hf_clip_dir(directory: str | Path) -> tuple[Path, dict]:
    """Validate a local HF CLIP folder before anything is loaded; return (path, config.json)."""
    d, config = check_hf_folder(directory, "clip", "HFCLIP", EXPECTED_LAYOUT, convert_hint)
    has_tokenizer = (d / "tokenizer.json").is_file() or ((d / "vocab.json").is_file() and (d / "merges.txt").is_file())
    if not has_tokenizer:
        raise FileNotFoundError(f"no tokenizer in {d}: expected tokenizer.json, or vocab.json + merges.txt "
                                "(save it with tokenizer.save_pretrained(folder))")
    return d, config


def _edge(value: Any, name: str) -> tuple[int, int]:
    """A preprocessor size entry as (H, W): {"height", "width"}, {"shortest_edge"}, or an int."""
    if isinstance(value, int):
        return value, value
    if isinstance(value, dict) and "height" in value and "width" in value:
        return int(value["height"]), int(value["width"])
    if isinstance(value, dict) and "shortest_edge" in value:
        return int(value["shortest_edge"]), int(value["shortest_edge"])
    raise ValueError(f"preprocessor_config.json: unsupported {name} {value!r} "
                     "(expected an int, {'shortest_edge': n} or {'height': h, 'width': w})")


def hf_image_preprocess(processor: dict | None, image_size: int) -> ImagePreprocess:
    """The pipeline of a ``preprocessor_config.json`` (CLIPImageProcessor fields), checked
    against the vision tower's ``image_size``; OpenAI CLIP's pipeline when ``processor`` is None."""
    if processor is None:
        return ImagePreprocess(image_size=(image_size, image_size), resize=image_size)
    where = "preprocessor_config.json"
    if processor.get("do_rescale", True) and abs(float(processor.get("rescale_factor", 1 / 255)) - 1 / 255) > 1e-6:
        raise ValueError(f"{where}: rescale_factor {processor['rescale_factor']} is not 1/255; mmsec feeds "
                         "pixels in [0, 1], i.e. uint8 / 255")
    if not processor.get("do_rescale", True):
        raise ValueError(f"{where}: do_rescale is false (the model expects 0-255 inputs); not supported")
    if not processor.get("do_resize", True):
        raise ValueError(f"{where}: do_resize is false; HFCLIP needs a resize step to accept any image size")
    resample = processor.get("resample", 3)
    if isinstance(resample, str):
        interpolation = resample.lower()
    else:
        interpolation = _PIL_RESAMPLE.get(int(resample), "bicubic")
        if int(resample) not in _PIL_RESAMPLE:
            logger.warning("%s: resample=%s has no torch equivalent; using antialiased bicubic", where, resample)
    if processor.get("do_normalize", True):
        mean = tuple(float(v) for v in processor.get("image_mean", OPENAI_CLIP_MEAN))
        std = tuple(float(v) for v in processor.get("image_std", OPENAI_CLIP_STD))
    else:
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)

    size = processor.get("size", {"shortest_edge": image_size})
    by_shortest = (isinstance(size, dict) and "shortest_edge" in size) or (
        isinstance(size, int) and not processor.get("default_to_square", False))
    do_crop = processor.get("do_center_crop", True)
    crop = _edge(processor.get("crop_size", size), "crop_size") if do_crop else _edge(size, "size")
    if crop != (image_size, image_size):
        raise ValueError(f"{where} produces {crop[0]}x{crop[1]} images but the vision tower's image_size is "
                         f"{image_size}: the processor and the model do not match")
    if by_shortest:
        return ImagePreprocess(image_size=crop, resize=_edge(size, "size")[0], resize_mode="shortest",
                               interpolation=interpolation, mean=mean, std=std)
    return ImagePreprocess(image_size=crop, resize=_edge(size, "size"), resize_mode="squash",
                           interpolation=interpolation, mean=mean, std=std)


def hf_encoder_layers(model: nn.Module, who: str) -> list[nn.Module]:
    """``model.vision_model.encoder.layers`` as a list (transformers' CLIP / BLIP vision tower layout)."""
    layers = getattr(getattr(getattr(model, "vision_model", None), "encoder", None), "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"{who}.vision_blocks needs the vision tower's layers at model.vision_model.encoder.layers "
                        f"(transformers' layout); {type(model).__name__} has none")
    return list(layers)


def _features(out: Any, what: str) -> torch.Tensor:
    """transformers 4.x returns the projected features as a tensor; 5.x as ``pooler_output``."""
    if isinstance(out, torch.Tensor):
        return out
    pooled = getattr(out, "pooler_output", None)
    if isinstance(pooled, torch.Tensor):
        return pooled
    raise TypeError(f"{what} returned {type(out).__name__}, expected a tensor or an output with pooler_output")


class HFCLIP(nn.Module):
    """A Hugging Face ``CLIPModel`` as a :class:`~mmsec.models.base.ContrastiveModel`.

    Args:
        model: a ``transformers.CLIPModel`` (or anything with its ``get_image_features``,
            ``get_text_features``, ``logit_scale`` and ``config``).
        tokenizer: its tokenizer (``CLIPTokenizer`` / ``CLIPTokenizerFast``).
        preprocess: the image pipeline; OpenAI CLIP's (shortest edge to ``image_size``,
            centre crop, bicubic, OpenAI mean / std) when None.

    Use :meth:`from_pretrained` to load a local folder.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, preprocess: ImagePreprocess | None = None):
        super().__init__()
        for attr in ("get_image_features", "get_text_features", "logit_scale", "config"):
            if not hasattr(model, attr):
                raise TypeError(f"HFCLIP wraps a transformers CLIPModel; {type(model).__name__} lacks {attr!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)
        self.context_length = int(model.config.text_config.max_position_embeddings)
        self.preprocess = preprocess or hf_image_preprocess(None, self.image_size)
        if self.preprocess.image_size != (self.image_size, self.image_size):
            raise ValueError(f"preprocess produces {self.preprocess.image_size} images but the vision tower "
                             f"expects {self.image_size}x{self.image_size}")
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "right"  # pooling at the first end-of-text token needs right padding
        self.eos_token_id = tokenizer.eos_token_id
        self._check_pooling_token()
        self.register_buffer("mean", torch.tensor(self.preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.preprocess.std).view(1, 3, 1, 1), persistent=False)

    def _check_pooling_token(self) -> None:
        """The text tower pools at the token the config names; the tokenizer must emit it."""
        eos = self.eos_token_id
        if eos is None:
            raise ValueError("the tokenizer has no eos_token: CLIP's text tower pools at the end-of-text token")
        model_eos = getattr(self.model.config.text_config, "eos_token_id", None)
        if model_eos == 2:
            # Legacy configs (before transformers PR #24773) pool at argmax(input_ids): the
            # end-of-text token must then be the largest id, as in OpenAI's vocabulary.
            if eos != len(self.tokenizer) - 1:
                raise ValueError(f"text_config.eos_token_id is 2 (legacy: pool at the largest token id) but the "
                                 f"tokenizer's end-of-text id {eos} is not its largest id {len(self.tokenizer) - 1}; "
                                 "set text_config.eos_token_id in config.json to the tokenizer's eos_token_id")
        elif model_eos != eos:
            raise ValueError(f"config.json text_config.eos_token_id is {model_eos} but the tokenizer's end-of-text "
                             f"id is {eos}: the text tower would pool at the wrong token")

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> HFCLIP:
        """Load a CLIP from a local folder (safetensors only, never the Hub), in eval mode, float32."""
        d, _ = check_hf_clip_dir(directory)
        try:
            from transformers import AutoTokenizer, CLIPModel
        except ImportError as e:
            raise ImportError('HFCLIP needs Hugging Face transformers: pip install "mmsec[hf]"') from e
        model = CLIPModel.from_pretrained(str(d), local_files_only=True, use_safetensors=True)
        tokenizer = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
        pp_path = d / "preprocessor_config.json"
        processor = None
        if pp_path.is_file():
            try:
                processor = json.loads(pp_path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{pp_path} is not valid JSON: {e}") from e
        preprocess = hf_image_preprocess(processor, int(model.config.vision_config.image_size))
        return cls(model.float(), tokenizer, preprocess).to(device).eval()

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(B, context_length) int64 input ids, right-padded, truncated at the context length."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"tokenize takes a list of strings, got {type(texts).__name__}")
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        return enc["input_ids"].to(self.device, torch.long)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1], any H, W -> (B, 3, S, S) tower input (S = image_size)."""
        check_image_batch(pixels, "HFCLIP.normalize")
        x = resize_and_crop(pixels.to(self.mean.dtype), self.preprocess)  # (B, 3, S, S)
        return (x - self.mean) / self.std

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, D) projected, un-normalised embeddings."""
        out = self.model.get_image_features(pixel_values=self.normalize(pixels))
        return _features(out, "get_image_features")  # (B, D)

    def attention_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) ones up to and including the first end-of-text token (all ones if there is none)."""
        is_eos = tokens == self.eos_token_id  # (B, L)
        last = torch.where(is_eos.any(1), is_eos.int().argmax(1), tokens.shape[1] - 1)  # (B,)
        return (torch.arange(tokens.shape[1], device=tokens.device)[None] <= last[:, None]).long()

    def _check_ids(self, tokens: torch.Tensor, who: str) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"HFCLIP.{who} takes the (B, L) id tensor from tokenize(), got "
                            f"{type(tokens).__name__} (for a tokenizer's BatchEncoding pass batch['input_ids'])")
        if tokens.ndim != 2 or tokens.is_floating_point() or tokens.is_complex():
            raise ValueError(f"HFCLIP.{who}: tokens must be a (B, L) integer tensor, got "
                             f"{tuple(tokens.shape)} {tokens.dtype}")
        if tokens.shape[1] > self.context_length:
            raise ValueError(f"HFCLIP.{who}: {tokens.shape[1]} tokens exceed the text tower's "
                             f"max_position_embeddings {self.context_length}")
        return tokens.to(self.device, torch.long)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) input ids from :meth:`tokenize` -> (B, D) projected, un-normalised embeddings."""
        tokens = self._check_ids(tokens, "encode_text")
        out = self.model.get_text_features(input_ids=tokens, attention_mask=self.attention_mask(tokens))
        return _features(out, "get_text_features")  # (B, D)

    # PromptableText (mmsec.models.base), used by prompt learners such as AdvPT.
    def _token_table(self) -> nn.Embedding:
        table = getattr(getattr(getattr(self.model, "text_model", None), "embeddings", None), "token_embedding", None)
        if not isinstance(table, nn.Embedding):
            raise TypeError("HFCLIP prompt learning (token_embeddings / encode_text_embeddings, needed by AdvPT) "
                            "needs the text tower's token table at model.text_model.embeddings.token_embedding "
                            f"(transformers' CLIPModel layout); {type(self.model).__name__} has none")
        return table

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) input ids -> (B, L, W) token embeddings, before position embeddings are added."""
        return self._token_table()(self._check_ids(tokens, "token_embeddings"))

    def encode_text_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, W) token embeddings + the (B, L) ids they stand for -> (B, D), as :meth:`encode_text`.

        transformers' ``CLIPTextModel.forward`` takes ``input_ids`` only (5.x has no ``inputs_embeds``;
        only its embedding layer does), so the text tower runs on ``tokens`` exactly as in
        :meth:`encode_text` while a forward hook, removed on return, replaces the output of the
        token-embedding lookup by ``embeds``. Positions, the causal and padding masks, pooling at the
        first end-of-text token and the projection all stay transformers' own code. Not thread-safe
        across threads sharing one model.
        """
        tokens = self._check_ids(tokens, "encode_text_embeddings")
        table = self._token_table()
        if not isinstance(embeds, torch.Tensor) or embeds.shape != (*tokens.shape, table.embedding_dim):
            shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
            raise ValueError(f"HFCLIP.encode_text_embeddings: embeds must have shape (B, L, W) = "
                             f"{(*tokens.shape, table.embedding_dim)} (tokens' shape and the text width), got {shape}")

        def swap(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
            return embeds.to(output.device, output.dtype)

        handle = table.register_forward_hook(swap)
        try:
            out = self.model.get_text_features(input_ids=tokens, attention_mask=self.attention_mask(tokens))
        finally:
            handle.remove()
        return _features(out, "get_text_features")  # (B, D)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()

    # VisionBlocks (mmsec.models.base)
    def vision_blocks(self) -> list[nn.Module]:
        """The vision transformer's encoder layers (``model.vision_model.encoder.layers.*``), input side first."""
        return hf_encoder_layers(self.model, "HFCLIP")
