"""Hugging Face ``transformers`` BLIP image-text retrieval behind the :class:`~mmsec.models.base.FusionModel` protocol.

Li, Li, Xiong, Hoi. "BLIP: Bootstrapping Language-Image Pre-training for Unified Vision-Language
Understanding and Generation", ICML 2022. The retrieval model is ALBEF-shaped: a ViT, a BERT text
encoder whose layers can cross-attend to the image tokens, ITC projections and an ITM head.

Load a ``BlipForImageTextRetrieval`` saved with ``save_pretrained`` (plus its tokenizer) from a
local folder, never from the Hub::

    from mmsec.models.hf_blip import HFBLIPRetrieval
    model = HFBLIPRetrieval.from_pretrained("/models/blip-itm-base-coco")
    itm = model.itm_logits(pixels, model.tokenize(captions))   # (B, 2), pixels in [0, 1], any size

The folder must hold ``config.json`` (``model_type`` "blip", architecture
``BlipForImageTextRetrieval``), safetensors weights, the tokenizer (``tokenizer.json`` or
``vocab.txt``) and optionally ``preprocessor_config.json``; pickle weights are refused (as
:mod:`mmsec.models.hf_clip`, whose checks this module reuses).

Semantics (identical to transformers' ``BlipForImageTextRetrieval.forward``):
    * ``encode_image`` / ``encode_text``: the ``use_itm_head=False`` path's projections of the
      [CLS] tokens, *before* its L2 normalisation (``vision_proj(image_embeds[:, 0])``,
      ``text_proj(text_encoder(ids)[:, 0])``); the text encoder runs without cross-attention.
    * ``fuse``: the text encoder's [CLS] output with cross-attention to all image tokens (the
      ``use_itm_head=True`` path); ``itm_logits`` = ``itm_head(fuse)``, (B, 2), column 1 "match".
      Like transformers, the ITM path feeds the same ids as ITC (Salesforce's original code swaps
      the leading [CLS] for an [ENC] token there; transformers does not).
    * ``image_features`` is the vision model's ``last_hidden_state`` (class token first, after
      its final LayerNorm); ``text_token_embeddings`` are the word embeddings before positions.
      Embeddings passed in are never modified (transformers adds positions in place; the adapter
      hands it a copy).
    * ``logit_scale``: BLIP's learned ITC temperature is not part of transformers' retrieval
      checkpoint, so it is ``exp(config.logit_scale_init_value)`` (1 / 0.07 by default) unless
      given; rankings do not depend on it, only the sharpness of cross-entropy objectives.
    * ``tokenize`` right-pads / truncates to ``context_length`` (35 by default, BLIP's retrieval
      ``max_txt_len``); the attention mask is rebuilt from the ids (non-padding tokens).
    * Pixels are resized (squash to ``image_size``, bicubic, as BlipImageProcessor) and
      normalised inside the adapter, differentiably. The wrapped model stays in eval mode and is
      never put under ``no_grad``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError
from .hf_clip import check_hf_folder, hf_encoder_layers, hf_image_preprocess
from .preprocess import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, ImagePreprocess, check_image_batch, resize_and_crop

ARCHITECTURE = "BlipForImageTextRetrieval"
EXPECTED_LAYOUT = ("a folder written by BlipForImageTextRetrieval.save_pretrained(...) and "
                   "tokenizer.save_pretrained(...): config.json, model.safetensors (or model-*.safetensors shards "
                   "with model.safetensors.index.json), tokenizer.json or vocab.txt, and optionally "
                   "preprocessor_config.json")
BLIP_MAX_TXT_LEN = 35  # Salesforce BLIP's retrieval configs (max_txt_len)


def convert_hint(directory: Path) -> str:
    return ("Convert it once, in a sandbox you trust (a container without your credentials): "
            f"`python -c \"from transformers import BlipForImageTextRetrieval; BlipForImageTextRetrieval."
            f"from_pretrained('{directory}', use_safetensors=False).save_pretrained('{directory}-safetensors')\"`, "
            "copy the tokenizer and preprocessor files beside it, and load the new folder.")


def check_hf_blip_dir(directory: str | Path) -> tuple[Path, dict]:
    """Validate a local BLIP retrieval folder before anything is loaded; return (path, config.json)."""
    d, config = check_hf_folder(directory, "blip", "HFBLIPRetrieval", EXPECTED_LAYOUT, convert_hint)
    architectures = config.get("architectures") or []
    if ARCHITECTURE not in architectures:
        raise ValueError(f"{d / 'config.json'} declares architectures {architectures}, not {ARCHITECTURE}: another "
                         "BLIP head (captioning, VQA) has no ITM head or ITC projections, and loading it would "
                         "silently initialise them at random")
    if not ((d / "tokenizer.json").is_file() or (d / "vocab.txt").is_file()):
        raise FileNotFoundError(f"no tokenizer in {d}: expected tokenizer.json or vocab.txt (save it with "
                                "tokenizer.save_pretrained(folder))")
    return d, config


def blip_image_preprocess(processor: dict | None, image_size: int) -> ImagePreprocess:
    """BlipImageProcessor's pipeline (squash to ``image_size``, bicubic, OpenAI mean / std) when
    ``processor`` is None; otherwise the pipeline its ``preprocessor_config.json`` describes."""
    if processor is None:
        return ImagePreprocess(image_size=(image_size, image_size), resize=(image_size, image_size),
                               resize_mode="squash", interpolation="bicubic", mean=OPENAI_CLIP_MEAN, std=OPENAI_CLIP_STD)
    return hf_image_preprocess(processor, image_size)


class HFBLIPRetrieval(nn.Module):
    """A transformers ``BlipForImageTextRetrieval`` as a :class:`~mmsec.models.base.FusionModel`.

    Args:
        model: a ``BlipForImageTextRetrieval`` (vision_model, text_encoder, vision_proj,
            text_proj, itm_head, config).
        tokenizer: its BERT tokenizer.
        preprocess: the image pipeline; BlipImageProcessor's when None.
        context_length: tokens per text after padding / truncation (capped at the text
            encoder's ``max_position_embeddings``).
        logit_scale: ITC temperature multiplier; ``exp(config.logit_scale_init_value)`` when None.

    Use :meth:`from_pretrained` to load a local folder.
    """

    def __init__(self, model: nn.Module, tokenizer: Any, preprocess: ImagePreprocess | None = None,
                 context_length: int = BLIP_MAX_TXT_LEN, logit_scale: float | None = None):
        super().__init__()
        for attr in ("vision_model", "text_encoder", "vision_proj", "text_proj", "itm_head", "config"):
            if not hasattr(model, attr):
                raise TypeError(f"HFBLIPRetrieval wraps a transformers {ARCHITECTURE}; {type(model).__name__} "
                                f"lacks {attr!r}")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.image_size = int(model.config.vision_config.image_size)
        max_pos = int(model.config.text_config.max_position_embeddings)
        if context_length < 2:
            raise ValueError(f"context_length must be >= 2 ([CLS] text [SEP]), got {context_length}")
        self.context_length = min(int(context_length), max_pos)
        self.preprocess = preprocess or blip_image_preprocess(None, self.image_size)
        if self.preprocess.image_size != (self.image_size, self.image_size):
            raise ValueError(f"preprocess produces {self.preprocess.image_size} images but the vision tower "
                             f"expects {self.image_size}x{self.image_size}")
        if tokenizer.pad_token_id is None:
            raise ValueError("the tokenizer has no pad token; BLIP's BERT tokenizer pads with [PAD]")
        if tokenizer.pad_token_id != model.config.text_config.pad_token_id:
            raise ValueError(f"the tokenizer pads with id {tokenizer.pad_token_id} but config.json text_config."
                             f"pad_token_id is {model.config.text_config.pad_token_id}: tokenizer and model do not match")
        tokenizer.padding_side = "right"
        self.pad_token_id = int(tokenizer.pad_token_id)
        scale = math.exp(float(model.config.logit_scale_init_value)) if logit_scale is None else float(logit_scale)
        if not scale > 0:
            raise ValueError(f"logit_scale must be positive, got {scale}")
        self.register_buffer("_logit_scale", torch.tensor(scale), persistent=False)
        self.register_buffer("mean", torch.tensor(self.preprocess.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.preprocess.std).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu",
                        context_length: int = BLIP_MAX_TXT_LEN) -> HFBLIPRetrieval:
        """Load a BLIP retrieval model from a local folder (safetensors only, never the Hub), eval mode, float32."""
        d, _ = check_hf_blip_dir(directory)
        try:
            from transformers import AutoTokenizer, BlipForImageTextRetrieval
        except ImportError as e:
            raise ImportError('HFBLIPRetrieval needs Hugging Face transformers: pip install "mmsec[hf]"') from e
        model, info = BlipForImageTextRetrieval.from_pretrained(str(d), local_files_only=True, use_safetensors=True,
                                                                output_loading_info=True)
        missing = list(info.get("missing_keys") or [])
        if missing:
            raise CheckpointError(f"{d}: the weights lack {len(missing)} parameters of {ARCHITECTURE} "
                                  f"(e.g. {sorted(missing)[:3]}); they would be random. Is this a retrieval checkpoint?")
        tokenizer = AutoTokenizer.from_pretrained(str(d), local_files_only=True)
        pp_path = d / "preprocessor_config.json"
        processor = None
        if pp_path.is_file():
            try:
                processor = json.loads(pp_path.read_text())
            except json.JSONDecodeError as e:
                raise ValueError(f"{pp_path} is not valid JSON: {e}") from e
        preprocess = blip_image_preprocess(processor, int(model.config.vision_config.image_size))
        return cls(model.float(), tokenizer, preprocess, context_length=context_length).to(device).eval()

    @property
    def device(self) -> torch.device:
        return self.mean.device

    # -- ContrastiveModel --------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        """(B, context_length) int64 input ids ([CLS] ... [SEP], right-padded with [PAD], truncated)."""
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"tokenize takes a list of strings, got {type(texts).__name__}")
        enc = self.tokenizer(list(texts), padding="max_length", truncation=True, max_length=self.context_length,
                             return_tensors="pt")
        return enc["input_ids"].to(self.device, torch.long)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1], any H, W -> (B, 3, S, S) vision-tower input."""
        check_image_batch(pixels, "HFBLIPRetrieval.normalize")
        x = resize_and_crop(pixels.to(self.mean.dtype), self.preprocess)  # (B, 3, S, S)
        return (x - self.mean) / self.std

    def attention_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) ones at non-padding ids (what the tokenizer's own mask is for right-padded ids)."""
        return (tokens != self.pad_token_id).long()

    def _check_ids(self, tokens: torch.Tensor, who: str) -> torch.Tensor:
        if not isinstance(tokens, torch.Tensor):
            raise TypeError(f"HFBLIPRetrieval.{who} takes the (B, L) id tensor from tokenize(), got "
                            f"{type(tokens).__name__} (for a tokenizer's BatchEncoding pass batch['input_ids'])")
        if tokens.ndim != 2 or tokens.is_floating_point() or tokens.is_complex():
            raise ValueError(f"HFBLIPRetrieval.{who}: tokens must be a (B, L) integer tensor, got "
                             f"{tuple(tokens.shape)} {tokens.dtype}")
        max_pos = int(self.model.config.text_config.max_position_embeddings)
        if tokens.shape[1] > max_pos:
            raise ValueError(f"HFBLIPRetrieval.{who}: {tokens.shape[1]} tokens exceed the text encoder's "
                             f"max_position_embeddings {max_pos}")
        return tokens.to(self.device, torch.long)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, D) ITC embeddings (projected, un-normalised)."""
        return self.model.vision_proj(self.image_features(pixels)[:, 0])  # (B, D)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, D) ITC embeddings (unimodal text encoder, projected [CLS], un-normalised)."""
        tokens = self._check_ids(tokens, "encode_text")
        return self.encode_text_embeddings(self.text_token_embeddings(tokens), tokens)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self._logit_scale

    # -- FusionModel -------------------------------------------------------------------------------
    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, 1 + N, W_img): the vision model's last_hidden_state."""
        return self.model.vision_model(pixel_values=self.normalize(pixels)).last_hidden_state

    def text_token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, W_txt) word embeddings (positions and LayerNorm are added by the encoder)."""
        tokens = self._check_ids(tokens, "text_token_embeddings")
        return self.model.text_encoder.embeddings.word_embeddings(tokens)

    def fuse_features(self, image_feats: torch.Tensor, text_embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Image tokens (B, N, W_img) + word embeddings (B, L, W_txt) + ids (B, L) -> (B, W_txt) fused [CLS]."""
        tokens = self._check_ids(tokens, "fuse_features")
        if text_embeds.shape[:2] != tokens.shape or image_feats.shape[0] != tokens.shape[0]:
            raise ValueError(f"HFBLIPRetrieval.fuse_features: image_feats {tuple(image_feats.shape)}, text_embeds "
                             f"{tuple(text_embeds.shape)} and tokens {tuple(tokens.shape)} must share B (and L)")
        image_atts = torch.ones(image_feats.shape[:2], dtype=torch.long, device=image_feats.device)  # (B, N)
        # .clone(): transformers' BlipTextEmbeddings adds the positions *in place* to inputs_embeds, which
        # would overwrite the caller's tensor (and fails on a leaf that requires grad).
        out = self.model.text_encoder(inputs_embeds=text_embeds.clone(), attention_mask=self.attention_mask(tokens),
                                      encoder_hidden_states=image_feats, encoder_attention_mask=image_atts)
        return out.last_hidden_state[:, 0]  # (B, W_txt)

    def fuse(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if pixels.shape[0] != tokens.shape[0]:
            raise ValueError(f"fuse pairs row i of pixels with row i of tokens; got {pixels.shape[0]} images and "
                             f"{tokens.shape[0]} texts")
        return self.fuse_features(self.image_features(pixels), self.text_token_embeddings(tokens), tokens)

    def itm_head(self, fused: torch.Tensor) -> torch.Tensor:
        return self.model.itm_head(fused)  # (B, 2)

    def itm_logits(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.itm_head(self.fuse(pixels, tokens))  # (B, 2)

    # -- VisionBlocks (mmsec.models.base) ------------------------------------------------------------
    def vision_blocks(self) -> list[nn.Module]:
        """The ViT's encoder layers (``model.vision_model.encoder.layers.*``), input side first."""
        return hf_encoder_layers(self.model, "HFBLIPRetrieval")

    # -- PromptableText: encode_text(t) == encode_text_embeddings(token_embeddings(t), t) -------------
    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_token_embeddings(tokens)

    def encode_text_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        tokens = self._check_ids(tokens, "encode_text_embeddings")
        if embeds.ndim != 3 or embeds.shape[:2] != tokens.shape:
            raise ValueError(f"HFBLIPRetrieval.encode_text_embeddings: embeds must be (B, L, W) with (B, L) = "
                             f"tokens.shape {tuple(tokens.shape)}, got {tuple(embeds.shape)}")
        hidden = self.model.text_encoder(inputs_embeds=embeds.clone(), attention_mask=self.attention_mask(tokens))
        return self.model.text_proj(hidden.last_hidden_state[:, 0])  # (B, D)
