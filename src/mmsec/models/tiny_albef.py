"""A tiny ALBEF: the zoo's fusion vision-language model for the shapes world.

Li, Selvaraju, Gotmare, Joty, Xiong, Hoi. "Align before Fuse: Vision and Language Representation
Learning with Momentum Distillation" (ALBEF), NeurIPS 2021.

Architecture (ALBEF's, scaled down):
    * image encoder: a small ViT (``image_tower: vit``; tiny_clip's :class:`ViTTower`, whose
      tokens -- class token + patches -- are kept) or a small ResNet (``image_tower: resnet``;
      tiny_clip's :class:`ResNetTower`, whose final feature map becomes a grid of tokens after a
      mean-pooled "class" token). Output: image tokens (B, N, W_img).
    * text encoder: a bidirectional transformer over :class:`WordTokenizer` ids (tiny_clip's
      :class:`TextTower` layers without the causal mask, with a padding mask), pooled at
      ``<sos>``, which plays BERT's [CLS].
    * fusion encoder: ``fusion_layers`` layers of self-attention over the text, cross-attention
      from the text to the image tokens, and an MLP (ALBEF's last six BERT layers).
    * ITC projections (the towers' ``proj``) to ``embed_dim``, and the ITM head, a linear
      layer on the fusion encoder's [CLS] output (2 logits: no match / match).

Losses (trained by :func:`mmsec.train.fusion.train_fusion`):
    * ITC: symmetric InfoNCE between the L2-normalised image and text [CLS] projections, with a
      learned temperature (CLIP's loss, :func:`mmsec.train.contrastive.clip_loss`).
    * ITM: cross-entropy of the ITM head on each matching pair plus, per pair, one hard
      negative text for the image and one hard negative image for the text, sampled with
      probability ``softmax(ITC similarity)`` among the batch's non-matching items.

Departures from ALBEF: no masked language modelling (MLM) and no momentum distillation /
momentum queues (the shapes world is clean and small, and the zoo's uses of the model are
ITC and ITM); hard negatives exclude every caption that is *true* of the image (shapes-world
captions repeat across scenes, so "another image's caption" is often a correct one), not
only the diagonal; the zoo recipe adds one attribute-edited false caption per image as an
extra ITM negative (colours or shapes swapped between the two objects, or the colour, size or
position changed), because in-batch sampling almost never shows ITM a binding error; the image
encoder is trained from scratch, not initialised from DeiT.

Example::

    from mmsec.zoo import load_model
    model = load_model("shapes-albef")
    itm = model.itm_logits(pixels, model.tokenize(["a red circle"] * len(pixels)))  # (B, 2)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import register_checkpoint_family
from .preprocess import ImagePreprocess, resize_and_crop
from .tiny_clip import ResNetTower, TextTower, ViTTower
from .tokenizer import PAD, WordTokenizer


@dataclass
class TinyALBEFConfig:
    image_tower: str = "vit"  # "vit" or "resnet"
    image_size: int = 32
    embed_dim: int = 64  # ITC projection width
    # ResNet tower
    resnet_widths: tuple[int, ...] = (32, 64, 128)
    # ViT tower
    vit_patch: int = 4
    vit_width: int = 96
    vit_layers: int = 4
    vit_heads: int = 4
    # text encoder (unimodal) and fusion encoder (text cross-attending to the image)
    vocab: list[str] = field(default_factory=list)
    context_length: int = 16
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    fusion_layers: int = 2
    # pixel normalisation (shapes-world statistics)
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TinyALBEFConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown TinyALBEFConfig fields {sorted(unknown)}")
        d = dict(d)
        for k in ("resnet_widths", "mean", "std"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


class ViTTokens(ViTTower):
    """tiny_clip's ViT, returning all its output tokens (class token first) instead of the pooled one."""

    def __init__(self, cfg: TinyALBEFConfig):
        super().__init__(cfg)  # type: ignore[arg-type]  # reads the same field names
        self.width = cfg.vit_width

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, W)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1) + self.pos  # (B, 1+N, W)
        return self.norm(self.encoder(x))  # (B, 1+N, W)


class ResNetTokens(ResNetTower):
    """tiny_clip's ResNet; its last feature map as a grid of tokens, after their mean (the "class" token)."""

    def __init__(self, cfg: TinyALBEFConfig):
        super().__init__(cfg)  # type: ignore[arg-type]
        self.width = cfg.resnet_widths[-1]
        self.norm = nn.LayerNorm(self.width)

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        grid = self.blocks(self.stem(x)).flatten(2).transpose(1, 2)  # (B, h*w, C)
        return self.norm(torch.cat([grid.mean(1, keepdim=True), grid], dim=1))  # (B, 1+h*w, C)


class BidirectionalText(TextTower):
    """tiny_clip's text tower run without the causal mask (BERT-like), with a padding mask."""

    def forward(self, embeds: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = embeds + self.pos[:, : embeds.shape[1]]  # (B, L, W)
        return self.norm(self.encoder(x, src_key_padding_mask=pad_mask))  # (B, L, W)


class FusionLayer(nn.Module):
    """Pre-norm: self-attention over the text, cross-attention to the image tokens, MLP."""

    def __init__(self, width: int, heads: int, image_width: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.self_attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.cross_attn = nn.MultiheadAttention(width, heads, kdim=image_width, vdim=image_width, batch_first=True)
        self.norm3 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width))

    def forward(self, x: torch.Tensor, image: torch.Tensor, pad_mask: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.self_attn(h, h, h, key_padding_mask=pad_mask, need_weights=False)[0]  # (B, L, W)
        h = self.norm2(x)
        x = x + self.cross_attn(h, image, image, need_weights=False)[0]  # text queries, image keys/values
        return x + self.mlp(self.norm3(x))


class TinyALBEF(nn.Module):
    """A small ALBEF implementing :class:`mmsec.models.base.FusionModel` (and so ContrastiveModel).

    ``encode_image`` / ``encode_text`` are the ITC embeddings (B, embed_dim), un-normalised;
    ``fuse`` is the fusion encoder's [CLS] output (B, text_width); ``itm_logits`` (B, 2).
    Lower-level pieces, used by the trainer and by embedding-space attacks:
    ``image_features`` -> ``image_embedding`` (ITC), ``text_token_embeddings`` -> ``text_hidden``
    -> ``text_embedding`` (ITC), and ``fuse_hidden`` (fusion layers on unimodal text states).
    """

    def __init__(self, cfg: TinyALBEFConfig):
        super().__init__()
        if not cfg.vocab:
            raise ValueError("TinyALBEFConfig.vocab is empty: build it with WordTokenizer.from_corpus")
        towers = {"resnet": ResNetTokens, "vit": ViTTokens}
        if cfg.image_tower not in towers:
            raise ValueError(f"image_tower must be one of {sorted(towers)}, got {cfg.image_tower!r}")
        if cfg.fusion_layers < 1:
            raise ValueError(f"fusion_layers must be >= 1, got {cfg.fusion_layers}")
        self.config = cfg
        self.image_size = cfg.image_size
        self.tokenizer = WordTokenizer(cfg.vocab, cfg.context_length)
        self.pad_id = self.tokenizer.index[PAD]
        self.preprocess = ImagePreprocess(image_size=(cfg.image_size, cfg.image_size), resize=cfg.image_size,
                                          resize_mode="squash", interpolation="bilinear", mean=cfg.mean, std=cfg.std)
        self.visual = towers[cfg.image_tower](cfg)
        self.text = BidirectionalText(cfg)  # type: ignore[arg-type]
        self.fusion = nn.ModuleList(FusionLayer(cfg.text_width, cfg.text_heads, self.visual.width)
                                    for _ in range(cfg.fusion_layers))
        self.fusion_norm = nn.LayerNorm(cfg.text_width)
        self.itm_head = nn.Linear(cfg.text_width, 2)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # ALBEF's initial temperature
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    # -- ContrastiveModel ----------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.mean.device)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return (resize_and_crop(pixels, self.preprocess) - self.mean) / self.std

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.image_embedding(self.image_features(pixels))  # (B, D)

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_embedding(self.text_hidden(self.text_token_embeddings(tokens), tokens))  # (B, D)

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=100.0)

    # -- the pieces ------------------------------------------------------------------------------
    def padding_mask(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) bool, True at ``<pad>`` positions (ignored by attention)."""
        return tokens == self.pad_id

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual.tokens(self.normalize(pixels))  # (B, 1+N, W_img)

    def image_embedding(self, image_feats: torch.Tensor) -> torch.Tensor:
        return self.visual.proj(image_feats[:, 0])  # (B, D), from the class token

    def text_token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text.token(tokens)  # (B, L, W_txt)

    def text_hidden(self, text_embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(text_embeds, self.padding_mask(tokens))  # (B, L, W_txt), unimodal

    def text_embedding(self, text_hidden: torch.Tensor) -> torch.Tensor:
        return self.text.proj(text_hidden[:, 0])  # (B, D), from <sos> = [CLS]

    def fuse_hidden(self, image_feats: torch.Tensor, text_hidden: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The fusion layers on unimodal text states (B, L, W_txt) and image tokens (B, N, W_img)."""
        pad, x = self.padding_mask(tokens), text_hidden
        for layer in self.fusion:
            x = layer(x, image_feats, pad)
        return self.fusion_norm(x[:, 0])  # (B, W_txt)

    # -- FusionModel -----------------------------------------------------------------------------
    def fuse_features(self, image_feats: torch.Tensor, text_embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.fuse_hidden(image_feats, self.text_hidden(text_embeds, tokens), tokens)

    def fuse(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if pixels.shape[0] != tokens.shape[0]:
            raise ValueError(f"fuse pairs row i of pixels with row i of tokens; got {pixels.shape[0]} images and "
                             f"{tokens.shape[0]} texts")
        return self.fuse_features(self.image_features(pixels), self.text_token_embeddings(tokens), tokens)

    def itm_logits(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        return self.itm_head(self.fuse(pixels, tokens))  # (B, 2)

    # -- PromptableText: encode_text(t) == encode_text_embeddings(token_embeddings(t), t) -----------
    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text_token_embeddings(tokens)  # (B, L, W_txt)

    def encode_text_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        if embeds.ndim != 3 or embeds.shape[:2] != tokens.shape:
            raise ValueError(f"TinyALBEF.encode_text_embeddings: embeds must be (B, L, W) with (B, L) = tokens.shape "
                             f"{tuple(tokens.shape)}, got {tuple(embeds.shape)}")
        return self.text_embedding(self.text_hidden(embeds, tokens))  # (B, D)

    # -- VisionBlocks (mmsec.models.base) ----------------------------------------------------------
    def vision_blocks(self) -> list[nn.Module]:
        """The image encoder's blocks: the ResNet's basic blocks (``visual.blocks.*``) or the ViT's
        transformer layers (``visual.encoder.layers.*``), input side first."""
        return self.visual.residual_blocks()

    @torch.no_grad()
    def itm_scores(self, pixels: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """Convenience for inspection: P(match) of each row-aligned (image, caption) pair, (B,)."""
        return F.softmax(self.itm_logits(pixels, self.tokenize(texts)), dim=-1)[:, 1]


register_checkpoint_family("fusion", TinyALBEFConfig, TinyALBEF)
