"""Zero-shot classification and retrieval heads built on any ContrastiveModel."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import ContrastiveModel, require_contrastive


@torch.no_grad()
def class_text_embeddings(model: ContrastiveModel, prompts: list[list[str]]) -> torch.Tensor:
    """(C, D) L2-normalised class embeddings: each class's prompt embeddings averaged (CLIP's ensembling)."""
    flat = [p for group in prompts for p in group]
    emb = F.normalize(model.encode_text(model.tokenize(flat)).float(), dim=-1)  # (C*T, D)
    sizes = [len(g) for g in prompts]
    if len(set(sizes)) == 1:
        out = emb.view(len(prompts), sizes[0], -1).mean(1)
    else:
        out = torch.stack([chunk.mean(0) for chunk in emb.split(sizes)])
    return F.normalize(out, dim=-1)


class ZeroShotClassifier:
    """Logits of images against fixed class text embeddings: ``scale * cos(image, class)``.

    Differentiable in the pixels (the text side is computed once, without gradients).
    """

    def __init__(self, model: ContrastiveModel, prompts: list[list[str]] | None = None,
                 class_embeddings: torch.Tensor | None = None):
        require_contrastive(model, "ZeroShotClassifier")
        if (prompts is None) == (class_embeddings is None):
            raise ValueError("give exactly one of prompts or class_embeddings")
        self.model = model
        self.class_embeddings = (class_text_embeddings(model, prompts) if prompts is not None
                                 else F.normalize(class_embeddings.float(), dim=-1))

    @property
    def num_classes(self) -> int:
        return self.class_embeddings.shape[0]

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        img = F.normalize(self.model.encode_image(pixels).float(), dim=-1)  # (B, D)
        return self.model.logit_scale.detach() * img @ self.class_embeddings.T  # (B, C)

    @torch.no_grad()
    def predict(self, pixels: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        return torch.cat([self.logits(pixels[i:i + batch_size]).argmax(1)
                          for i in range(0, pixels.shape[0], batch_size)])

    @torch.no_grad()
    def scores(self, pixels: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
        return torch.cat([self.logits(pixels[i:i + batch_size]) for i in range(0, pixels.shape[0], batch_size)])


@torch.no_grad()
def embed_images(model: ContrastiveModel, pixels: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    return torch.cat([model.encode_image(pixels[i:i + batch_size]) for i in range(0, pixels.shape[0], batch_size)])


@torch.no_grad()
def embed_texts(model: ContrastiveModel, texts: list[str], batch_size: int = 1000) -> torch.Tensor:
    return torch.cat([model.encode_text(model.tokenize(texts[i:i + batch_size]))
                      for i in range(0, len(texts), batch_size)])
