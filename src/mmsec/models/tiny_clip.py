"""Tiny CLIP models for the shapes world (the zoo's contrastive models).

Two image towers with different inductive biases, so transfer between them means something:
a small ResNet (basic blocks, global average pooling) and a small ViT (patch embedding,
pre-norm transformer, class token). Both share the text tower: a small causal transformer
over word tokens, pooled at ``<eos>`` as in CLIP (Radford et al., ICML 2021).

The ViT's options (``vit_pos_embed``, ``vit_pool``, ``vit_stem``) default to the first zoo ViT
(``zoo:shapes-clip-vit``: learnt positions, class token, one strided patch conv), which loads and
initialises unchanged; ``zoo:shapes-clip-vit2`` uses fixed 2D sin-cos positions and a conv stem.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import register_checkpoint_family
from .tokenizer import WordTokenizer


@dataclass
class TinyCLIPConfig:
    image_tower: str = "resnet"  # "resnet" or "vit"
    image_size: int = 32
    embed_dim: int = 64
    # ResNet tower
    resnet_widths: tuple[int, ...] = (32, 64, 128)
    # ViT tower
    vit_patch: int = 4
    vit_width: int = 96
    vit_layers: int = 4
    vit_heads: int = 4
    # ViT options; the defaults are the first ViT's (zoo:shapes-clip-vit), whose checkpoint they load unchanged.
    vit_pos_embed: str = "learned"  # "learned" (CLIP, init N(0, 0.02)) or "sincos": fixed 2D sin-cos (MAE)
    vit_pool: str = "cls"  # "cls": the class token (CLIP), or "mean": the mean of the patch tokens (no class token)
    vit_stem: str = "patch"  # "patch": one strided conv (ViT), or "conv": 3x3 stride-2 convs (Xiao et al. 2021)
    # text tower
    vocab: list[str] = field(default_factory=list)
    context_length: int = 16
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    # pixel normalisation (shapes-world statistics)
    mean: tuple[float, float, float] = (0.45, 0.45, 0.45)
    std: tuple[float, float, float] = (0.25, 0.25, 0.25)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TinyCLIPConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown TinyCLIPConfig fields {sorted(unknown)}")
        d = dict(d)
        for k in ("resnet_widths", "mean", "std"):
            if k in d:
                d[k] = tuple(d[k])
        return cls(**d)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                     if stride != 1 or cin != cout else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class ResNetTower(nn.Module):
    def __init__(self, cfg: TinyCLIPConfig):
        super().__init__()
        w = cfg.resnet_widths
        # Stride-2 stem: a 32x32 image becomes 16x16 before the first block (4x cheaper to train).
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 2, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU())
        blocks, cin = [], w[0]
        for i, cout in enumerate(w):
            blocks.append(_BasicBlock(cin, cout, stride=1 if i == 0 else 2))
            cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.proj = nn.Linear(cin, cfg.embed_dim)

    def residual_blocks(self) -> list[nn.Module]:
        """The basic blocks after the stem, input side first (one per width: each is a stage)."""
        return list(self.blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))  # (B, C, h, w)
        return self.proj(x.mean(dim=(2, 3)))  # (B, D)


def sincos_2d(grid: int, width: int) -> torch.Tensor:
    """Fixed 2D sin-cos position embeddings of a ``grid`` x ``grid`` patch grid, (grid * grid, width), row-major
    as the patches are flattened: half the channels encode the row, half the column, each as sines and cosines
    of the index at frequencies 1 / 10000^(k / (width / 4)) (MAE, He et al., CVPR 2022; MoCo v3)."""
    if width % 4:
        raise ValueError(f"vit_width must be a multiple of 4 for sin-cos position embeddings, got {width}")
    omega = 1.0 / 10000 ** (torch.arange(width // 4, dtype=torch.float64) / (width // 4))  # (W/4,)
    rows, cols = torch.meshgrid(torch.arange(grid, dtype=torch.float64), torch.arange(grid, dtype=torch.float64),
                                indexing="ij")

    def encode(index: torch.Tensor) -> torch.Tensor:
        angle = index.flatten()[:, None] * omega[None]  # (N, W/4)
        return torch.cat([angle.sin(), angle.cos()], dim=1)  # (N, W/2)

    return torch.cat([encode(rows), encode(cols)], dim=1).float()  # (N, W)


def conv_stem(patch: int, width: int) -> nn.Sequential:
    """Xiao et al. (NeurIPS 2021), "Early convolutions help transformers see better": in place of the strided
    patch conv, 3x3 stride-2 convs (BN, ReLU) doubling the channels up to width / 2 until the image is down to
    one token per ``patch`` x ``patch`` cell, then a 1x1 conv to ``width``."""
    if patch < 2 or patch & (patch - 1):
        raise ValueError(f"vit_stem 'conv' needs vit_patch a power of two >= 2, got {patch}")
    n = patch.bit_length() - 1  # stride-2 convs
    layers, cin = [], 3
    for k in range(n):
        cout = width // 2 ** (n - k)
        layers += [nn.Conv2d(cin, cout, 3, 2, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        cin = cout
    return nn.Sequential(*layers, nn.Conv2d(cin, width, 1))


VIT_POS_EMBEDS = ("learned", "sincos")
VIT_POOLS = ("cls", "mean")
VIT_STEMS = ("patch", "conv")


class ViTTower(nn.Module):
    def __init__(self, cfg: TinyCLIPConfig):
        super().__init__()
        if cfg.image_size % cfg.vit_patch:
            raise ValueError(f"image_size {cfg.image_size} is not a multiple of vit_patch {cfg.vit_patch}")
        # TinyALBEF's config has no ViT options: its tower is the default one.
        pos_embed, pool, stem = (getattr(cfg, f"vit_{k}", d) for k, d in
                                 (("pos_embed", "learned"), ("pool", "cls"), ("stem", "patch")))
        for name, value, options in (("vit_pos_embed", pos_embed, VIT_POS_EMBEDS), ("vit_pool", pool, VIT_POOLS),
                                     ("vit_stem", stem, VIT_STEMS)):
            if value not in options:
                raise ValueError(f"{name} must be one of {list(options)}, got {value!r}")
        self.pool = pool
        grid = cfg.image_size // cfg.vit_patch
        n_tokens = grid * grid + (pool == "cls")
        # Parameters are created in the first ViT's order, so its seeded initialisation is unchanged.
        self.patch = (nn.Conv2d(3, cfg.vit_width, cfg.vit_patch, cfg.vit_patch) if stem == "patch"
                      else conv_stem(cfg.vit_patch, cfg.vit_width))
        if pool == "cls":
            self.cls = nn.Parameter(torch.zeros(1, 1, cfg.vit_width))
        if pos_embed == "learned":
            self.pos = nn.Parameter(torch.randn(1, n_tokens, cfg.vit_width) * 0.02)
        else:  # fixed, a function of the config: not in the checkpoint; the class token's is zero (MAE)
            fixed = sincos_2d(grid, cfg.vit_width)
            if pool == "cls":
                fixed = torch.cat([torch.zeros(1, cfg.vit_width), fixed])
            self.register_buffer("pos", fixed[None], persistent=False)  # (1, n_tokens, W)
        layer = nn.TransformerEncoderLayer(cfg.vit_width, cfg.vit_heads, 4 * cfg.vit_width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.vit_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.vit_width)
        self.proj = nn.Linear(cfg.vit_width, cfg.embed_dim)

    def residual_blocks(self) -> list[nn.Module]:
        """The transformer layers, input side first."""
        return list(self.encoder.layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)  # (B, N, W)
        if self.pool == "cls":
            x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1+N, W)
        x = self.norm(self.encoder(x + self.pos))
        return self.proj(x[:, 0] if self.pool == "cls" else x.mean(1))  # (B, D)


class TextTower(nn.Module):
    def __init__(self, cfg: TinyCLIPConfig):
        super().__init__()
        self.token = nn.Embedding(len(cfg.vocab), cfg.text_width)
        self.pos = nn.Parameter(torch.randn(1, cfg.context_length, cfg.text_width) * 0.01)
        layer = nn.TransformerEncoderLayer(cfg.text_width, cfg.text_heads, 4 * cfg.text_width, dropout=0.0,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.text_layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(cfg.text_width)
        self.proj = nn.Linear(cfg.text_width, cfg.embed_dim)
        mask = torch.triu(torch.full((cfg.context_length, cfg.context_length), float("-inf")), diagonal=1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def forward(self, tokens: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        return self.forward_embeddings(self.token(tokens), eos)

    def forward_embeddings(self, embeds: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
        """(B, L, W) token embeddings (before positions) + (B,) <eos> positions -> (B, D)."""
        x = self.token_states(embeds)  # (B, L, W)
        return self.proj(x[torch.arange(x.shape[0]), eos])  # (B, D), pooled at <eos>

    def token_states(self, embeds: torch.Tensor) -> torch.Tensor:
        """(B, L, W) token embeddings (before positions) -> (B, L, W) final-norm states of every position
        (what a text-to-image model cross-attends to, as Stable Diffusion does to CLIP's last hidden state)."""
        L = embeds.shape[1]
        x = embeds + self.pos[:, :L]  # (B, L, W)
        return self.norm(self.encoder(x, mask=self.causal_mask[:L, :L], is_causal=True))


class TinyCLIP(nn.Module):
    """A small CLIP implementing :class:`mmsec.models.base.ContrastiveModel`."""

    def __init__(self, cfg: TinyCLIPConfig):
        super().__init__()
        if not cfg.vocab:
            raise ValueError("TinyCLIPConfig.vocab is empty: build it with WordTokenizer.from_corpus")
        self.config = cfg
        self.image_size = cfg.image_size
        self.tokenizer = WordTokenizer(cfg.vocab, cfg.context_length)
        towers = {"resnet": ResNetTower, "vit": ViTTower}
        if cfg.image_tower not in towers:
            raise ValueError(f"image_tower must be one of {sorted(towers)}, got {cfg.image_tower!r}")
        self.visual = towers[cfg.image_tower](cfg)
        self.text = TextTower(cfg)
        self.log_logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        self.register_buffer("mean", torch.tensor(cfg.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(cfg.std).view(1, 3, 1, 1), persistent=False)

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        return self.tokenizer(texts).to(self.mean.device)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False, antialias=True)
        return (pixels - self.mean) / self.std

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.visual(self.normalize(pixels))

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.text(tokens, self.tokenizer.eos_positions(tokens))

    # PromptableText (mmsec.models.base): encode_text(t) == encode_text_embeddings(token_embeddings(t), t)
    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) ids -> (B, L, W) token embeddings, before positional embeddings are added."""
        return self.text.token(tokens)

    def encode_text_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, W) token embeddings + the (B, L) ids giving the <eos> positions -> (B, D)."""
        if embeds.ndim != 3 or embeds.shape[:2] != tokens.shape:
            raise ValueError(f"TinyCLIP.encode_text_embeddings: embeds must be (B, L, W) with (B, L) = tokens.shape "
                             f"{tuple(tokens.shape)}, got {tuple(embeds.shape)}")
        return self.text.forward_embeddings(embeds, self.tokenizer.eos_positions(tokens))

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.log_logit_scale.exp().clamp(max=100.0)

    # VisionBlocks (mmsec.models.base)
    def vision_blocks(self) -> list[nn.Module]:
        """The image tower's blocks: the ResNet's basic blocks (``visual.blocks.*``) or the ViT's
        transformer layers (``visual.encoder.layers.*``), input side first."""
        return self.visual.residual_blocks()


register_checkpoint_family("contrastive", TinyCLIPConfig, TinyCLIP)
