"""Model protocols: the only way attacks, defenses and metrics reach a model.

Pixels are float tensors in [0, 1], NCHW. Resizing and normalisation live inside the model
(``normalize``), so every epsilon anywhere in mmsec is in pixel units.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch


@runtime_checkable
class ContrastiveModel(Protocol):
    """A CLIP-like dual encoder.

    ``encode_image`` and ``encode_text`` return the projected, *un-normalised* embeddings
    (as Hugging Face's ``get_image_features``); callers L2-normalise where cosine similarity
    is meant. Both must be differentiable with respect to their input pixels.
    """

    image_size: int

    def tokenize(self, texts: list[str]) -> torch.Tensor: ...

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """Map [0, 1] pixels of any size to the tower's input (resize + mean/std)."""
        ...

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, D) embeddings."""
        ...

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids from ``tokenize`` -> (B, D) embeddings."""
        ...

    @property
    def logit_scale(self) -> torch.Tensor:
        """The (exponentiated) temperature multiplying cosine similarities."""
        ...


@runtime_checkable
class FusionModel(ContrastiveModel, Protocol):
    """A fusion vision-language model (ALBEF / BLIP style): a dual encoder plus a fusion encoder.

    It is a :class:`ContrastiveModel` (its unimodal ``encode_image`` / ``encode_text`` are the
    image-text contrastive (ITC) embeddings, so it also serves retrieval and zero-shot
    classification as a dual encoder) whose text encoder can additionally cross-attend to the
    image tokens. Shapes (``B`` pairs; ``N`` image tokens, the class token included where the
    encoder has one; ``W_img`` / ``W_txt`` the widths of the image tokens and of the text
    encoder; ``L`` tokens per text; ``D_fused`` the fusion encoder's width):

    ============================================  =========================================
    ``fuse(pixels, tokens)``                      (B, 3, H, W), (B, L) -> (B, D_fused)
    ``itm_logits(pixels, tokens)``                (B, 3, H, W), (B, L) -> (B, 2)
    ``image_features(pixels)``                    (B, 3, H, W) -> (B, N, W_img)
    ``text_token_embeddings(tokens)``             (B, L) -> (B, L, W_txt)
    ``fuse_features(image_feats, text_embeds, tokens)``  -> (B, D_fused)
    ``itm_head(fused)``                           (B, D_fused) -> (B, 2)
    ============================================  =========================================

    The pairs are row-aligned: row ``i`` of ``pixels`` goes with row ``i`` of ``tokens``.
    Everything is differentiable in its floating-point inputs (pixels, image features, text
    embeddings), so attacks in pixel space (Co-Attack) and in embedding space (VILLA) go
    through the same model. The identities every implementation keeps::

        fuse(p, t) == fuse_features(image_features(p), text_token_embeddings(t), t)
        itm_logits(p, t) == itm_head(fuse(p, t))
    """

    def fuse(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """The multimodal embedding: the fusion encoder's output at the [CLS] position, (B, D_fused)."""
        ...

    def itm_logits(self, pixels: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Image-text matching logits (B, 2): column 0 "no match", column 1 "match"."""
        ...

    def image_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """The image encoder's output tokens, before fusion (what the fusion layers cross-attend
        to, and what the ITC image embedding is pooled from): (B, N, W_img)."""
        ...

    def text_token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """The word (token) embeddings of ``tokens``, before position embeddings and before the
        text encoder: (B, L, W_txt). Perturb these for embedding-space text attacks."""
        ...

    def fuse_features(self, image_feats: torch.Tensor, text_embeds: torch.Tensor,
                      tokens: torch.Tensor) -> torch.Tensor:
        """``fuse`` from (possibly perturbed) image features (B, N, W_img) and word embeddings
        (B, L, W_txt); ``tokens`` (B, L) only supplies the padding mask. Returns (B, D_fused)."""
        ...

    def itm_head(self, fused: torch.Tensor) -> torch.Tensor:
        """The image-text matching head on fused embeddings: (B, D_fused) -> (B, 2) logits."""
        ...


@runtime_checkable
class PromptableText(Protocol):
    """A text tower that accepts token *embeddings* (for prompt learning: CoOp, AdvPT).

    ``encode_text(t)`` must equal ``encode_text_embeddings(token_embeddings(t), t)``; a prompt
    learner replaces some rows of ``token_embeddings(t)`` with learnt vectors and encodes the
    result. ``tokens`` still give the pooling (end-of-text) positions and the attention mask, so
    a learnt vector may stand in for any ordinary word token, never for a special token.
    """

    def token_embeddings(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids from ``tokenize`` -> (B, L, W) input token embeddings (no positions)."""
        ...

    def encode_text_embeddings(self, embeds: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """(B, L, W) token embeddings + the (B, L) ids they stand for -> (B, D) text embeddings."""
        ...




def require_contrastive(model: object, who: str) -> None:
    """Fail at construction time if ``model`` lacks the ContrastiveModel protocol."""
    missing = [a for a in ("encode_image", "encode_text", "tokenize", "normalize", "logit_scale", "image_size")
               if not hasattr(model, a)]
    if missing:
        raise TypeError(f"{who} needs a ContrastiveModel; {type(model).__name__} lacks {missing}")


FUSION_MEMBERS = ("fuse", "itm_logits", "image_features", "text_token_embeddings", "fuse_features", "itm_head")


def require_fusion(model: object, who: str) -> None:
    """Fail at construction time if ``model`` lacks the FusionModel protocol."""
    require_contrastive(model, who)
    missing = [a for a in FUSION_MEMBERS if not hasattr(model, a)]
    if missing:
        raise TypeError(f"{who} needs a FusionModel (ALBEF / BLIP style, with a fusion encoder and an "
                        f"image-text matching head); {type(model).__name__} lacks {missing}")


def require_promptable_text(model: object, who: str) -> None:
    """Fail with a teaching error unless ``model`` implements :class:`PromptableText`."""
    missing = [a for a in ("token_embeddings", "encode_text_embeddings") if not callable(getattr(model, a, None))]
    if missing:
        raise TypeError(f"{who} learns prompts in the text tower's token-embedding space, so it needs a model "
                        f"implementing mmsec.models.base.PromptableText (token_embeddings, encode_text_embeddings); "
                        f"{type(model).__name__} lacks {missing}. TinyCLIP and HFCLIP implement it.")
