"""Model protocols: the only way attacks, defenses and metrics reach a model.

Pixels are float tensors in [0, 1], NCHW. Resizing and normalisation live inside the model
(``normalize``), so every epsilon anywhere in mmsec is in pixel units.

One protocol per model *family*, named in the table :data:`FAMILIES` (``family name -> protocol,
required members, one-line description``), which methods, loaders and specs share:

* ``contrastive``, :class:`ContrastiveModel`: a CLIP-like dual encoder (fusion models are one too);
* ``fusion``, :class:`FusionModel`: a dual encoder plus a fusion encoder and an ITM head;
* ``vlm``, :class:`GenerativeVLM`: a chat vision-language model (LLaVA-like): log-probability of
  a target text, differentiable in the pixels, and generation;
* ``diffusion``, :class:`DiffusionModel`: a denoising diffusion model: noise prediction, its
  scheduler, and sampling that can stay differentiable;
* ``classifier``, :class:`ImageClassifier`: a supervised image classifier over named classes
  (logits and penultimate features), e.g. the zoo's judge of generated images.

:func:`require_family` fails with one teaching error when a model lacks a family's members,
:func:`families_of` lists the families a model satisfies. A family is added by its protocol here
with one :func:`register_family` call, an adapter module, and one ``register_loader`` call in
:mod:`mmsec.models.loaders`.

It imports only the leaf :mod:`mmsec.registry` (for close-name hints).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from ..registry import close_names


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

class DiffusionScheduler(Protocol):
    """The noise schedule of a :class:`DiffusionModel`, in diffusers' sense (``DDPMScheduler``,
    ``DDIMScheduler``, ... satisfy it as they are).

    ``t`` are integer training timesteps in ``[0, num_train_timesteps)``; larger is noisier.
    """

    timesteps: torch.Tensor  # (S,) int64, descending: the steps :meth:`step` walks, set by set_timesteps

    def set_timesteps(self, num_inference_steps: int) -> None:
        """Choose ``num_inference_steps`` timesteps to sample with (fills ``timesteps``)."""
        ...

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The forward process q(x_t | x_0): ``sqrt(abar_t) * original + sqrt(1 - abar_t) * noise``.

        ``original`` and ``noise`` (B, C, S, S) in the model's working space, ``timesteps`` (B,) int64.
        Differentiable in ``original`` and ``noise``.
        """
        ...

    def step(self, model_output: torch.Tensor, timestep: Any, sample: torch.Tensor,
             generator: torch.Generator | None = None) -> Any:
        """One reverse step from ``sample`` = x_t given the predicted noise ``model_output`` (both
        (B, C, S, S)); returns an object whose ``prev_sample`` is x_{t-1} (diffusers' SchedulerOutput).
        Stochastic schedulers draw their noise from ``generator``. Differentiable in its tensors."""
        ...


@runtime_checkable
class GenerativeVLM(Protocol):
    """A generative (chat) vision-language model: LLaVA-like (image encoder, projector, causal LM).

    The adapter owns the processor: the chat template, where the image goes in the prompt, the
    tokenizer and the image preprocessing. Callers pass pixels and plain strings. ``B`` images go
    with ``B`` prompts (and ``B`` targets), row by row.

    ``logprob`` is the one quantity white-box attacks on a VLM need (a jailbreak maximises the
    log-probability of a harmful target reply, a refusal-suppression attack minimises that of a
    refusal): it must be differentiable in the pixels, i.e. autograd from its output reaches the
    caller's ``pixels`` tensor through ``normalize`` and the vision tower, with no ``no_grad``,
    ``detach``, PIL or uint8 round trip on the way. ``generate`` is an inference entry point and
    may run without gradients.
    """

    image_size: int  # the vision tower's input side in pixels (images of any size are resized to it)

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1], any H, W -> the vision tower's input (resize + mean / std),
        differentiably."""
        ...

    def logprob(self, pixels: torch.Tensor, prompts: list[str], targets: list[str]) -> torch.Tensor:
        """Summed log-probability (nats) of each target reply under teacher forcing: (B,) float.

        Row ``i`` is ``sum_k log p(y_k | image_i, prompt_i, y_<k)`` over the tokens ``y`` of
        ``targets[i]``, tokenised as the assistant's reply after the chat template's user turn
        (holding the image and ``prompts[i]``); no end-of-turn token is added to the target. So
        ``logprob(p, q, generate(p, q))`` is the log-likelihood of the greedy reply.

        Args:
            pixels: (B, 3, H, W) float in [0, 1].
            prompts, targets: B strings each.

        Returns:
            (B,) float tensor, <= 0, differentiable in ``pixels``.
        """
        ...

    def generate(self, pixels: torch.Tensor, prompts: list[str], max_new_tokens: int = 32,
                 generator: torch.Generator | None = None) -> list[str]:
        """The model's reply to each (image, prompt), at most ``max_new_tokens`` tokens: B strings,
        the reply only (no prompt, no special tokens). Greedy decoding when ``generator`` is None;
        sampling at the model's temperature, seeded by ``generator``, otherwise."""
        ...


@runtime_checkable
class DiffusionModel(Protocol):
    """A denoising diffusion model (diffusers-like): a noise predictor, its scheduler, and sampling.

    The model predicts, the scheduler steps, ``sample`` loops; an attack or a defense that needs
    gradients through sampling either calls ``sample(..., grad=True)`` or writes its own short loop
    over ``predict_noise`` and ``scheduler``. ``x_t`` lives in the model's *working space*, of shape
    (B, ``channels``, ``image_size``, ``image_size``): the images themselves scaled to [-1, 1] for a
    pixel-space model (DDPM), the latents for a latent model (Stable Diffusion, whose adapter
    encodes and decodes inside ``sample``). Images going in or out of ``sample`` are in [0, 1].

    ``cond`` is None for an unconditional model; for a conditional one, B prompts (the adapter
    encodes them) or a tensor of conditioning embeddings (B, L, D) as its text encoder produces.
    """

    image_size: int  # side of the working space x_t (pixels for a pixel-space model)
    channels: int  # channels of the working space x_t
    scheduler: DiffusionScheduler

    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor | int, cond: Any = None) -> torch.Tensor:
        """The noise epsilon predicted in ``x_t`` at timestep ``t``.

        Args:
            x_t: (B, channels, image_size, image_size) float, the noisy input in the working space.
            t: (B,) int64 timesteps, or one int for the whole batch.
            cond: None, B prompts, or (B, L, D) conditioning embeddings (see the class docstring).

        Returns:
            (B, channels, image_size, image_size), differentiable in ``x_t`` (and in tensor ``cond``).
        """
        ...

    def sample(self, n: int | torch.Tensor, cond: Any = None, steps: int | None = None, guidance: float = 1.0,
               generator: torch.Generator | None = None, grad: bool = False) -> torch.Tensor:
        """Generate images by running the reverse process from noise.

        Args:
            n: how many images (the initial noise is drawn from ``generator``), or the initial noise
                itself, (B, channels, image_size, image_size), used as given.
            cond: None or B conditions (see the class docstring).
            steps: number of inference steps (``scheduler.set_timesteps``); None: the adapter's default.
            guidance: classifier-free guidance scale; 1.0 means none (the conditional prediction alone).
            generator: seeds the initial noise and any noise a stochastic scheduler adds.
            grad: False runs without building a graph (an inference entry point); True keeps it through
                every step, so a loss on the images backpropagates to the initial noise, to tensor
                ``cond`` and to the weights (memory grows with ``steps``).

        Returns:
            (B, C, H, W) images in [0, 1].
        """
        ...


@runtime_checkable
class ImageClassifier(Protocol):
    """A supervised image classifier over ``K`` named classes (the zoo's ``shapes-judge``: the shapes
    world's 48 ``"<colour> <shape>"`` classes), used to judge generated images and as a victim.

    ``logits`` and ``features`` take pixels of any size (the model resizes inside ``normalize``) and are
    differentiable in them. Row ``k`` of the logits is class ``classes[k]``; ``features`` are the
    penultimate activations the last linear layer reads (what a Frechet distance on the classifier's
    features is computed on). Both are deterministic in eval mode; a model with dropout also implements
    :class:`DropoutLayers`, so a defense can switch dropout on at test time (MC dropout).
    """

    image_size: int  # the side the network works at (inputs of any size are resized to it)
    classes: list[str]  # the K class names, in logit order

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1], any H, W -> the network's input (resize + mean / std), differentiably."""
        ...

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, K) class logits (softmax gives the class probabilities)."""
        ...

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) pixels in [0, 1] -> (B, F) penultimate features (the last linear layer's input,
        before that layer's dropout)."""
        ...


@runtime_checkable
class DropoutLayers(Protocol):
    """A model whose dropout is real layers that can be switched on at test time (PSBD's MC dropout)."""

    def dropout_layers(self) -> list[nn.Module]:
        """The dropout modules to switch on at test time (submodules of it), input side first. ``m.train()``
        on each turns dropout on while the rest of the model (batch norm) stays in eval mode; ``m.eval()``
        turns it off. Their rate ``m.p`` is the training rate (0 for a layer meant for test time only): a
        caller sets the rate it wants and restores it."""
        ...


@runtime_checkable
class VisionBlocks(Protocol):
    """A model whose image tower names its own blocks, so defenses need no layer names.

    Implemented by every adapter of a family with an image tower (TinyCLIP, TinyALBEF, HFCLIP,
    OpenCLIP, HFBLIPRetrieval). Use :func:`vision_block_names` for their qualified module names.
    """

    def vision_blocks(self) -> list[nn.Module]:
        """The image tower's blocks in forward order, input side first: the transformer layers of a
        ViT, the residual stages of a ResNet. They are submodules of this model, so forward hooks on
        them see ``encode_image`` / ``image_features``, and their parameters are the tower's weights
        (fine-tune them to repair the tower; the stem, final norm and projection are not blocks)."""
        ...


# -- the family table ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Family:
    """A model family: its protocol, the members a model must have, and one line saying what it is."""

    name: str
    protocol: type
    members: tuple[str, ...]
    description: str


FAMILIES: dict[str, Family] = {}

CONTRASTIVE_MEMBERS = ("encode_image", "encode_text", "tokenize", "normalize", "logit_scale", "image_size")
FUSION_MEMBERS = ("fuse", "itm_logits", "image_features", "text_token_embeddings", "fuse_features", "itm_head")
VLM_MEMBERS = ("image_size", "normalize", "logprob", "generate")
DIFFUSION_MEMBERS = ("image_size", "channels", "predict_noise", "scheduler", "sample")
CLASSIFIER_MEMBERS = ("image_size", "classes", "normalize", "logits", "features")


def register_family(name: str, protocol: type, members: Sequence[str], description: str) -> Family:
    """Add a model family to :data:`FAMILIES` (idempotent for the same definition)."""
    if not isinstance(name, str) or not name.isidentifier() or name != name.lower():
        raise ValueError(f"register_family: name must be a lower-case identifier such as 'vlm', got {name!r}")
    members = tuple(members)
    if not members or not all(isinstance(m, str) and m for m in members):
        raise ValueError(f"register_family({name!r}): members must be a non-empty list of attribute names, "
                         f"got {members!r}")
    fam = Family(name, protocol, members, description)
    known = FAMILIES.get(name)
    if known is not None and known != fam:
        raise ValueError(f"model family {name!r} is registered twice with different definitions")
    FAMILIES[name] = fam
    return fam


register_family("contrastive", ContrastiveModel, CONTRASTIVE_MEMBERS,
                "a CLIP-like dual encoder: encode_image, encode_text, tokenize, logit_scale")
register_family("fusion", FusionModel, CONTRASTIVE_MEMBERS + FUSION_MEMBERS,
                "ALBEF / BLIP style, with a fusion encoder and an image-text matching head")
register_family("vlm", GenerativeVLM, VLM_MEMBERS,
                "a chat vision-language model (LLaVA-like): logprob of a target reply, generate")
register_family("diffusion", DiffusionModel, DIFFUSION_MEMBERS,
                "a denoising diffusion model: predict_noise, scheduler, sample")
register_family("classifier", ImageClassifier, CLASSIFIER_MEMBERS,
                "a supervised image classifier over named classes: logits, features (penultimate), classes")


def get_family(name: str) -> Family:
    """The family ``name``; a ValueError naming the known families otherwise."""
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {name!r}; known families: {sorted(FAMILIES)}."
                         f"{close_names(str(name), sorted(FAMILIES))}")
    return FAMILIES[name]


def missing_members(model: object, family: str) -> list[str]:
    """The members of ``family`` that ``model`` lacks (empty when it satisfies the family)."""
    return [m for m in get_family(family).members if not hasattr(model, m)]


def families_of(model: object) -> list[str]:
    """The families ``model`` satisfies, in the order of :data:`FAMILIES` (a fusion model is also
    contrastive)."""
    return [name for name in FAMILIES if not missing_members(model, name)]


def implies(family: str, other: str) -> bool:
    """Whether every model of ``family`` is also one of ``other`` (its members include ``other``'s)."""
    return set(get_family(other).members) <= set(get_family(family).members)


def require_family(model: object, family: str, who: str) -> None:
    """Fail with one teaching TypeError if ``model`` lacks a member of ``family``.

    The message names who needs it, the family's protocol and description, the missing members,
    the model's class and the families it does satisfy. ``family`` must be a known family.
    """
    missing = missing_members(model, family)
    if missing:
        fam = FAMILIES[family]
        has = families_of(model)
        what = f" (it is a {' and '.join(repr(f) for f in has)} model)" if has else ""
        raise TypeError(f"{who} needs a {fam.protocol.__name__} (family {family!r}: {fam.description}); "
                        f"{type(model).__name__} lacks {missing}{what}")


def require_contrastive(model: object, who: str) -> None:
    """Fail at construction time if ``model`` lacks the ContrastiveModel protocol."""
    require_family(model, "contrastive", who)


def require_fusion(model: object, who: str) -> None:
    """Fail at construction time if ``model`` lacks the FusionModel protocol."""
    require_family(model, "fusion", who)


def require_promptable_text(model: object, who: str) -> None:
    """Fail with a teaching error unless ``model`` implements :class:`PromptableText`."""
    missing = [a for a in ("token_embeddings", "encode_text_embeddings") if not callable(getattr(model, a, None))]
    if missing:
        raise TypeError(f"{who} learns prompts in the text tower's token-embedding space, so it needs a model "
                        f"implementing mmsec.models.base.PromptableText (token_embeddings, encode_text_embeddings); "
                        f"{type(model).__name__} lacks {missing}. TinyCLIP and HFCLIP implement it.")


def vision_block_names(model: nn.Module) -> list[str]:
    """The qualified module names (as in ``model.named_modules()``) of ``model.vision_blocks()``.

    Raises a TypeError when the model does not implement :class:`VisionBlocks`, and a ValueError
    when a returned block is not a submodule of ``model``.
    """
    if not callable(getattr(model, "vision_blocks", None)):
        raise TypeError(f"{type(model).__name__} does not expose its image tower's blocks: it lacks "
                        "vision_blocks() (mmsec.models.base.VisionBlocks); pass the layer names explicitly")
    names = {id(m): n for n, m in model.named_modules()}
    out = []
    for i, block in enumerate(model.vision_blocks()):
        if id(block) not in names:
            raise ValueError(f"{type(model).__name__}.vision_blocks()[{i}] ({type(block).__name__}) is not a "
                             "submodule of the model")
        out.append(names[id(block)])
    return out


__all__ = ["CLASSIFIER_MEMBERS", "CONTRASTIVE_MEMBERS", "DIFFUSION_MEMBERS", "FAMILIES", "FUSION_MEMBERS", "VLM_MEMBERS",
           "ContrastiveModel", "DiffusionModel", "DiffusionScheduler", "DropoutLayers", "Family", "FusionModel",
           "GenerativeVLM", "ImageClassifier", "PromptableText",
           "VisionBlocks", "families_of", "get_family", "implies", "missing_members", "register_family",
           "require_contrastive", "require_family", "require_fusion", "require_promptable_text",
           "vision_block_names"]
