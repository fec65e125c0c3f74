"""Adapters of diffusers models to the :class:`~mmsec.models.base.DiffusionModel` protocol.

* :class:`DiffusersUNet`: a pixel-space model, a ``UNet2DModel`` (unconditional) or a
  ``UNet2DConditionModel`` cross-attending to a text encoder's token states, with its scheduler. The
  working space x_t is the image scaled to [-1, 1]. The zoo's ``shapes-ddpm`` and ``shapes-t2i`` are such
  models.
* :class:`DiffusersLatentPipeline`: a ``StableDiffusionPipeline`` (latent space: the VAE encodes and
  decodes inside :meth:`~DiffusersLatentPipeline.sample`; CLIP text encoder). Loading, sampling and
  noise prediction; mmsec does not train it.

Both sample with DDIM (eta 0, deterministic given the initial noise) or with the ancestral DDPM sampler
(``sampler="ddpm"``, its noise drawn from ``generator``), on a fresh scheduler of that kind built from
the model's scheduler config (:func:`sampler_scheduler`), so sampling never changes ``model.scheduler``.
Classifier-free guidance uses the empty prompt as the null condition:
``eps = eps(null) + guidance * (eps(cond) - eps(null))``. Nothing in :meth:`predict_noise` or in the
sampling loop disables gradients: ``sample(..., grad=True)`` keeps the graph through every step, back to
the initial noise, a tensor condition and the weights (``grad=False``, the default, is the inference
entry point and builds no graph).

Members beyond the protocol, for training and for attacks and defenses:

=======================================  =====================================================================
``unet``                                 the trainable ``nn.Module`` (the noise or velocity predictor)
``prediction_type``                      ``"epsilon"`` or ``"v_prediction"`` (the scheduler config's)
``predict_output(x_t, t, cond)``         the UNet's native prediction; training regresses it onto
``training_target(x0, noise, t)``        the noise or the velocity
``conditional``                          whether the UNet takes a text condition
``encode_prompts(prompts)``              B prompts -> (B, L, D) conditioning embeddings (conditional models)
``encode_images(pixels)``                (B, 3, H, W) in [0, 1] -> x_0 in the working space
``decode(x)``                            x_0 in the working space -> (B, 3, H, W) in [0, 1]
``save(folder)``                         write the model as a folder ``load_diffusers`` reads (pixel models)
=======================================  =====================================================================

Folders are read by :func:`load_diffusers` (the ``diffusers:DIR`` model spec), safetensors only: any
pickle-based file in the folder (``.bin``, ``.pt``, ``.ckpt``, ...) is refused, by name, before anything
is loaded. Accepted layouts::

    DIR/unet/{config.json, diffusion_pytorch_model.safetensors}   a pixel model (DiffusersUNet) with
    DIR/scheduler/scheduler_config.json                           its scheduler and, for a conditional
    [DIR/text_encoder/{config.json, model.safetensors}]           UNet, mmsec's TinyCLIPTextStates
    DIR/{config.json, diffusion_pytorch_model.safetensors}        a bare UNet (default DDPMScheduler)
    DIR/model_index.json (StableDiffusionPipeline)                 a latent pipeline (DiffusersLatentPipeline)
    DIR/model_index.json (DDPMPipeline, DDIMPipeline)              a pixel model, as the first layout

diffusers is imported when a model is built or loaded, not when this module is imported.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import (
    CheckpointError,
    check_safetensors_file,
    load_checkpoint,
    looks_like_pickle,
    sha256_file,
)

SAMPLERS = ("ddim", "ddpm")
PREDICTION_TYPES = ("epsilon", "v_prediction")
# Default inference steps per sampler: DDIM 25 (the evaluation setting); the ancestral sampler
# needs more steps for the same quality (its strided variance is coarse at 25).
DEFAULT_STEPS = {"ddim": 25, "ddpm": 100}
UNET_CLASSES = ("UNet2DModel", "UNet2DConditionModel")
UNET_WEIGHTS = "diffusion_pytorch_model.safetensors"
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}


def sampler_scheduler(config: Any, sampler: str, steps: int, prediction_type: str | None = None) -> Any:
    """A fresh DDIM (``"ddim"``) or DDPM (``"ddpm"``) scheduler with the noise schedule of ``config`` (a
    diffusers scheduler config), its timesteps set for ``steps`` inference steps; ``prediction_type``
    overrides the config's (``"epsilon"`` for a loop that steps on :meth:`DiffusionAdapter.predict_noise`)."""
    from diffusers import DDIMScheduler, DDPMScheduler

    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be a positive int (inference steps), got {steps!r}")
    cls = DDIMScheduler if sampler == "ddim" else DDPMScheduler
    # diffusers' from_config resets the keys listed in "_use_default_values" to the class defaults, even when
    # they were changed after construction (StableDiffusionPipeline fixes steps_offset): keep the values.
    config = {k: v for k, v in dict(config).items() if k != "_use_default_values"}
    if prediction_type is not None:
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got {prediction_type!r}")
        config["prediction_type"] = prediction_type
    scheduler = cls.from_config(config)
    if steps > scheduler.config.num_train_timesteps:
        raise ValueError(f"steps must be at most the schedule's {scheduler.config.num_train_timesteps} training "
                         f"timesteps, got {steps}")
    scheduler.set_timesteps(steps)
    return scheduler


class DiffusionAdapter(nn.Module):
    """What the pixel and latent adapters share: conditions, guidance, the sampling loop.

    Subclasses set ``unet``, ``scheduler``, ``image_size``, ``channels``, ``conditional`` and implement
    ``_output(x_t, t, embeds)`` (the UNet's raw output), ``encode_prompts``, ``encode_images`` and ``decode``.

    The UNet predicts what its scheduler's ``prediction_type`` says: the noise (``"epsilon"``) or the velocity
    ``v = sqrt(abar_t) * eps - sqrt(1 - abar_t) * x_0`` (``"v_prediction"``; Salimans and Ho, ICLR 2022).
    :meth:`predict_noise` always returns the noise (``eps = sqrt(abar_t) * v + sqrt(1 - abar_t) * x_t``), so
    attacks and defenses written against the noise need not know; :meth:`sample` steps on the native output,
    which keeps a v-model's x_0 estimate exact where ``abar_t`` is ~0 (the cosine schedule's first step, where
    ``(x_t - sqrt(1 - abar_t) * eps) / sqrt(abar_t)`` amplifies any error by ~20,000).
    """

    unet: nn.Module
    scheduler: Any
    image_size: int
    channels: int
    conditional: bool
    default_steps: dict[str, int] = DEFAULT_STEPS

    @property
    def device(self) -> torch.device:
        return next(self.unet.parameters()).device

    def _output(self, x_t: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    @property
    def prediction_type(self) -> str:
        """What the UNet predicts: ``"epsilon"`` or ``"v_prediction"`` (the scheduler config's)."""
        kind = dict(self.scheduler.config).get("prediction_type", "epsilon")
        if kind not in PREDICTION_TYPES:
            raise ValueError(f"scheduler prediction_type {kind!r} is not supported; expected one of {PREDICTION_TYPES}")
        return kind

    def _coefficients(self, t: torch.Tensor, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """sqrt(abar_t) and sqrt(1 - abar_t) for timesteps ``t`` (B,), shaped (B, 1, 1, 1) like ``like``."""
        abar = self.scheduler.alphas_cumprod.to(like.device, torch.float64)[t.long()]
        shape = (-1,) + (1,) * (like.ndim - 1)
        return abar.sqrt().to(like.dtype).view(shape), (1 - abar).sqrt().to(like.dtype).view(shape)

    def _eps(self, x_t: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor | None) -> torch.Tensor:
        return self.output_to_noise(self._output(x_t, t, embeds), x_t, t)

    def output_to_noise(self, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The noise implied by the UNet's native ``output`` at ``x_t``, timesteps ``t`` (B,)."""
        if self.prediction_type == "epsilon":
            return output
        a, s = self._coefficients(t, x_t)
        return a * output + s * x_t

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """What the UNet regresses onto for clean ``x0`` noised by ``noise`` at timesteps ``t``: the noise, or
        the velocity ``sqrt(abar_t) * noise - sqrt(1 - abar_t) * x0``."""
        if self.prediction_type == "epsilon":
            return noise
        a, s = self._coefficients(t.to(x0.device), x0)
        return a * noise - s * x0

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        raise NotImplementedError

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    # -- the protocol ---------------------------------------------------------------------------------
    def predict_noise(self, x_t: torch.Tensor, t: torch.Tensor | int, cond: Any = None) -> torch.Tensor:
        """The predicted noise in ``x_t`` (B, channels, image_size, image_size) at timesteps ``t`` ((B,) or one
        int); ``cond``: None (the null prompt for a conditional model), B prompts, or (B, L, D) embeddings."""
        self._check_x(x_t, "x_t")
        batch = x_t.shape[0]
        return self._eps(x_t, self._timesteps(t, batch), self.condition(cond, batch))

    def predict_output(self, x_t: torch.Tensor, t: torch.Tensor | int, cond: Any = None) -> torch.Tensor:
        """The UNet's native prediction (noise or velocity, see :attr:`prediction_type`); arguments as
        :meth:`predict_noise`. Training regresses it onto :meth:`training_target`."""
        self._check_x(x_t, "x_t")
        batch = x_t.shape[0]
        return self._output(x_t, self._timesteps(t, batch), self.condition(cond, batch))

    def sample(self, n: int | torch.Tensor, cond: Any = None, steps: int | None = None, guidance: float = 1.0,
               generator: torch.Generator | None = None, grad: bool = False, sampler: str = "ddim") -> torch.Tensor:
        """Images (B, 3, H, W) in [0, 1] from the reverse process (see the module docstring).

        Args:
            n: how many images (the initial noise drawn from ``generator``), or the initial noise
                (B, channels, image_size, image_size), used as given (it may require grad).
            cond: None, B prompts or (B, L, D) embeddings (conditional models only).
            steps: inference steps; None: ``default_steps[sampler]`` (DDIM 25, DDPM 100).
            guidance: classifier-free guidance scale (1.0: the conditional prediction alone).
            generator: seeds the initial noise and the ancestral sampler's noise.
            grad: keep the autograd graph through every step (memory grows with ``steps``).
            sampler: ``"ddim"`` (eta 0) or ``"ddpm"`` (ancestral).
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {SAMPLERS}, got {sampler!r}")
        if not isinstance(guidance, (int, float)) or isinstance(guidance, bool) or guidance < 0:
            raise ValueError(f"guidance must be a float >= 0 (1.0: no guidance), got {guidance!r}")
        if guidance != 1.0 and not self.conditional:
            raise ValueError(f"guidance={guidance} needs a conditional model; this {type(self.unet).__name__} "
                             "takes no condition (use guidance=1.0)")
        scheduler = sampler_scheduler(self.scheduler.config, sampler, steps or self.default_steps[sampler])
        with torch.set_grad_enabled(grad):
            x = self._initial_noise(n, generator) * scheduler.init_noise_sigma
            batch = x.shape[0]
            embeds = self.condition(cond, batch)
            null = self.encode_prompts([""] * batch) if self.conditional and guidance != 1.0 else None
            for t in scheduler.timesteps:
                out = self.guided_output(x, t, embeds, null, guidance)  # native: the scheduler has the same type
                x = scheduler.step(out, t, x, generator=generator).prev_sample
            return self.decode(x)

    # -- building blocks --------------------------------------------------------------------------------
    def guided_noise(self, x_t: torch.Tensor, t: torch.Tensor | int, embeds: torch.Tensor | None,
                     null: torch.Tensor | None, guidance: float) -> torch.Tensor:
        """Classifier-free guided noise: ``eps(null) + guidance * (eps(embeds) - eps(null))``, in one UNet
        call on the doubled batch; the plain prediction when ``null`` is None or ``guidance`` is 1."""
        batch = x_t.shape[0]
        t = self._timesteps(t, batch)
        return self.output_to_noise(self.guided_output(x_t, t, embeds, null, guidance), x_t, t)

    def guided_output(self, x_t: torch.Tensor, t: torch.Tensor | int, embeds: torch.Tensor | None,
                      null: torch.Tensor | None, guidance: float) -> torch.Tensor:
        """:meth:`guided_noise` in the UNet's native output (guidance is affine in it, so the two agree)."""
        batch = x_t.shape[0]
        t = self._timesteps(t, batch)
        if null is None or guidance == 1.0:
            return self._output(x_t, t, embeds)
        out_null, out_cond = self._output(torch.cat([x_t, x_t]), torch.cat([t, t]),
                                          torch.cat([null, embeds])).chunk(2)  # (B, C, S, S) each
        return out_null + guidance * (out_cond - out_null)

    def condition(self, cond: Any, batch: int) -> torch.Tensor | None:
        """The (B, L, D) embeddings of ``cond`` for ``batch`` rows (the null prompt's when None), or None for
        an unconditional model."""
        if not self.conditional:
            if cond is not None:
                raise ValueError(f"cond must be None for an unconditional model ({type(self.unet).__name__}), got "
                                 f"{type(cond).__name__}")
            return None
        if cond is None:
            return self.encode_prompts([""] * batch)
        if isinstance(cond, torch.Tensor):
            if cond.ndim != 3 or cond.shape[0] != batch:
                raise ValueError(f"cond as a tensor must be (B, L, D) embeddings with B = {batch}, got shape "
                                 f"{tuple(cond.shape)}")
            return cond
        if isinstance(cond, str) or not all(isinstance(p, str) for p in cond):
            raise ValueError(f"cond must be None, a list of {batch} prompts or (B, L, D) embeddings, got {cond!r}")
        prompts = list(cond)
        if len(prompts) != batch:
            raise ValueError(f"cond has {len(prompts)} prompts for a batch of {batch}: give one prompt per image")
        return self.encode_prompts(prompts)

    def _timesteps(self, t: torch.Tensor | int, batch: int) -> torch.Tensor:
        if isinstance(t, torch.Tensor) and t.ndim == 1:
            if t.shape[0] != batch:
                raise ValueError(f"t must be one timestep or (B,) = ({batch},) timesteps, got shape {tuple(t.shape)}")
            return t.to(self.device)
        if isinstance(t, torch.Tensor) and t.ndim > 1:
            raise ValueError(f"t must be one timestep or (B,) timesteps, got shape {tuple(t.shape)}")
        return torch.full((batch,), int(t), dtype=torch.long, device=self.device)

    def _check_x(self, x: torch.Tensor, name: str) -> None:
        want = (self.channels, self.image_size, self.image_size)
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or tuple(x.shape[1:]) != want:
            got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"{name} must be (B, {want[0]}, {want[1]}, {want[2]}) in the model's working space, "
                             f"got {got}")

    def _initial_noise(self, n: int | torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if isinstance(n, torch.Tensor):
            self._check_x(n, "n (the initial noise)")
            return n
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive int or the initial noise tensor, got {n!r}")
        shape = (n, self.channels, self.image_size, self.image_size)
        return torch.randn(shape, generator=generator, device=self.device)


class DiffusersUNet(DiffusionAdapter):
    """A pixel-space diffusion model: a diffusers UNet, its scheduler, and (conditional) a text encoder.

    Args:
        unet: a ``UNet2DModel`` or ``UNet2DConditionModel`` (3 channels in and out).
        scheduler: a diffusers scheduler with the training noise schedule (``DDPMScheduler``, ...).
        text_encoder: for a conditional UNet, a module mapping B prompts to (B, L, cross_attention_dim)
            token states (:class:`~mmsec.models.clip_text_states.TinyCLIPTextStates`); it is frozen
            (``requires_grad_(False)``: unfreeze it to fine-tune it). Without one, ``cond`` must be
            given as embeddings.
    """

    def __init__(self, unet: nn.Module, scheduler: Any, text_encoder: nn.Module | None = None):
        super().__init__()
        name = type(unet).__name__
        if name not in UNET_CLASSES:
            raise TypeError(f"unet must be one of {UNET_CLASSES}, got {name}")
        self.unet = unet
        self.scheduler = scheduler
        self.conditional = name == "UNet2DConditionModel"
        if text_encoder is not None and not self.conditional:
            raise ValueError(f"text_encoder given for an unconditional {name}: it takes no condition")
        self.text_encoder = text_encoder
        if text_encoder is not None:
            text_encoder.requires_grad_(False)
        size = unet.config.sample_size
        self.image_size = int(size if isinstance(size, int) else size[0])
        self.channels = int(unet.config.in_channels)

    def _output(self, x_t: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor | None) -> torch.Tensor:
        if self.conditional:
            return self.unet(x_t, t, encoder_hidden_states=embeds).sample
        return self.unet(x_t, t).sample

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        """B prompts -> (B, L, D) token states of the text encoder."""
        if not self.conditional:
            raise TypeError("encode_prompts: this is an unconditional model (UNet2DModel); it takes no prompts")
        if self.text_encoder is None:
            raise TypeError("encode_prompts: this conditional model was loaded without a text encoder; pass cond as "
                            "(B, L, D) embeddings")
        return self.text_encoder(list(prompts))

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels -> x_0 = 2 * pixels - 1 (the working space), resized to ``image_size`` if needed."""
        if pixels.shape[-1] != self.image_size or pixels.shape[-2] != self.image_size:
            pixels = nn.functional.interpolate(pixels, size=(self.image_size, self.image_size), mode="bilinear",
                                               align_corners=False, antialias=True)
        return pixels * 2 - 1

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return ((x + 1) / 2).clamp(0, 1)

    def save(self, folder: str | Path) -> list[Path]:
        """Write ``unet/``, ``scheduler/`` and (if any) ``text_encoder/`` into ``folder`` (safetensors only);
        returns the files written, which :func:`load_diffusers` reads back."""
        folder = Path(folder)
        self.unet.save_pretrained(folder / "unet", safe_serialization=True)
        self.scheduler.save_pretrained(folder / "scheduler")
        if self.text_encoder is not None:
            self.text_encoder.save(folder / "text_encoder")
        return sorted(p for p in folder.rglob("*") if p.is_file())


class DiffusersLatentPipeline(DiffusionAdapter):
    """A ``StableDiffusionPipeline`` as a DiffusionModel: x_t are the VAE's latents (scaled by its
    ``scaling_factor``), ``sample`` decodes them to [0, 1] images of side ``pixel_size``; prompts go through
    the pipeline's CLIP tokenizer (padded to its ``model_max_length``) and text encoder (last hidden state).
    The VAE and the text encoder are frozen."""

    def __init__(self, pipeline: Any):
        super().__init__()
        self.unet = pipeline.unet
        self.vae = pipeline.vae.requires_grad_(False)
        self.text_encoder = pipeline.text_encoder.requires_grad_(False)
        self.tokenizer = pipeline.tokenizer
        self.scheduler = pipeline.scheduler
        self.conditional = True
        self.image_size = int(self.unet.config.sample_size)
        self.channels = int(self.unet.config.in_channels)
        self.vae_scale = float(self.vae.config.scaling_factor)
        self.pixel_size = self.image_size * 2 ** (len(self.vae.config.block_out_channels) - 1)

    def _output(self, x_t: torch.Tensor, t: torch.Tensor, embeds: torch.Tensor | None) -> torch.Tensor:
        return self.unet(x_t, t, encoder_hidden_states=embeds).sample

    def encode_prompts(self, prompts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(list(prompts), padding="max_length", max_length=self.tokenizer.model_max_length,
                             truncation=True, return_tensors="pt").input_ids.to(self.device)  # (B, L)
        return self.text_encoder(ids)[0]  # (B, L, D)

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] pixels (resized to ``pixel_size``) -> scaled latents (the posterior's mean)."""
        if pixels.shape[-1] != self.pixel_size or pixels.shape[-2] != self.pixel_size:
            pixels = nn.functional.interpolate(pixels, size=(self.pixel_size, self.pixel_size), mode="bilinear",
                                               align_corners=False, antialias=True)
        return self.vae.encode(pixels * 2 - 1).latent_dist.mean * self.vae_scale

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        return ((self.vae.decode(x / self.vae_scale).sample + 1) / 2).clamp(0, 1)


# -- loading ---------------------------------------------------------------------------------------------

def _refuse_pickles(folder: Path) -> None:
    for f in sorted(folder.rglob("*")):
        if f.is_file() and (f.suffix in PICKLE_SUFFIXES or (f.suffix not in {".json", ".txt", ".safetensors", ".md"}
                                                           and looks_like_pickle(f))):
            raise CheckpointError(f"refusing to load {folder}: {f.relative_to(folder)} is a pickle-based file, and "
                                  "unpickling runs arbitrary code. mmsec reads diffusers folders in safetensors only: "
                                  "re-save the model with save_pretrained(..., safe_serialization=True) in a sandbox "
                                  "you trust")


def _check_files(folder: Path, file_sha256: dict[str, str]) -> None:
    """Every file in ``folder`` is listed in ``file_sha256`` (relative POSIX path -> sha256) and matches it."""
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    for rel in sorted(set(file_sha256) - present):
        raise CheckpointError(f"{folder}: {rel} is missing (its card lists it); the model folder is incomplete")
    for rel in sorted(present - set(file_sha256)):
        raise CheckpointError(f"{folder}: {rel} is not listed in the model's card; refusing a folder with files the "
                              "card does not vouch for")
    for rel, sha in sorted(file_sha256.items()):
        actual = sha256_file(folder / rel)
        if actual != sha:
            raise CheckpointError(f"sha256 mismatch for {folder / rel}: card says {sha}, file is {actual}. The file was "
                                  "modified or corrupted; refusing to load it")


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path.parent}: {what} is missing ({path.name} not found)")
    try:
        out = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(out, dict):
        raise CheckpointError(f"{path} must hold a JSON object, got {type(out).__name__}")
    return out


def load_unet(folder: Path) -> nn.Module:
    """A ``UNet2DModel`` / ``UNet2DConditionModel`` from ``config.json`` + ``diffusion_pytorch_model.safetensors``
    in ``folder`` (built from its config, weights loaded strictly), in eval mode."""
    import diffusers

    config = _read_json(folder / "config.json", "the UNet's config")
    name = config.get("_class_name")
    if name not in UNET_CLASSES:
        raise CheckpointError(f"{folder / 'config.json'}: _class_name is {name!r}; mmsec loads {UNET_CLASSES}")
    weights = folder / UNET_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{folder}: the UNet's weights {UNET_WEIGHTS} are missing")
    check_safetensors_file(weights)
    unet = getattr(diffusers, name).from_config(config)
    tensors, _ = load_checkpoint(weights)
    missing, unexpected = unet.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{weights} does not fit {folder / 'config.json'}: missing {missing[:5]}, unexpected "
                              f"{unexpected[:5]}")
    return unet.eval()


def load_scheduler(folder: Path) -> Any:
    """A diffusers scheduler from ``folder/scheduler_config.json`` (its ``_class_name``, a diffusers scheduler)."""
    import diffusers

    config = _read_json(folder / "scheduler_config.json", "the scheduler's config")
    name = config.get("_class_name", "")
    cls = getattr(diffusers, name, None) if isinstance(name, str) and name.endswith("Scheduler") else None
    if cls is None or not hasattr(cls, "add_noise"):
        raise CheckpointError(f"{folder / 'scheduler_config.json'}: _class_name {name!r} is not a diffusers noise "
                              "scheduler (e.g. DDPMScheduler, DDIMScheduler)")
    return cls.from_config(config)


def _load_pixel_folder(folder: Path) -> DiffusersUNet:
    from .clip_text_states import TinyCLIPTextStates

    if not (folder / "unet").is_dir():
        raise CheckpointError(f"{folder}: the unet/ sub-folder is missing")
    if not (folder / "scheduler").is_dir():
        raise CheckpointError(f"{folder}: the scheduler/ sub-folder is missing (scheduler/scheduler_config.json)")
    unet = load_unet(folder / "unet")
    text_encoder = None
    if (folder / "text_encoder").is_dir():
        text_encoder = TinyCLIPTextStates.load(folder / "text_encoder")
    return DiffusersUNet(unet, load_scheduler(folder / "scheduler"), text_encoder).eval()


def _load_pipeline(folder: Path) -> DiffusionAdapter:
    index = _read_json(folder / "model_index.json", "the pipeline index")
    name = index.get("_class_name")
    if name in ("DDPMPipeline", "DDIMPipeline"):
        return _load_pixel_folder(folder)
    if name != "StableDiffusionPipeline":
        raise CheckpointError(f"{folder / 'model_index.json'}: pipeline {name!r} is not supported; mmsec loads "
                              "StableDiffusionPipeline, DDPMPipeline and DDIMPipeline folders")
    for part in ("unet", "vae", "text_encoder", "tokenizer", "scheduler"):
        if not (folder / part).is_dir():
            raise CheckpointError(f"{folder}: the pipeline's {part}/ sub-folder is missing")
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(str(folder), use_safetensors=True, local_files_only=True,
                                                   safety_checker=None, feature_extractor=None,
                                                   requires_safety_checker=False)
    return DiffusersLatentPipeline(pipe).eval()


def load_diffusers(path: str | Path, file_sha256: dict[str, str] | None = None) -> DiffusionAdapter:
    """A diffusion model from a diffusers folder (the layouts in the module docstring), safetensors only.

    Args:
        path: the folder.
        file_sha256: when given (a zoo card's ``files``), every file in the folder must be listed there with
            its sha256 and match it, before anything is read.

    Raises:
        CheckpointError: a missing or partial folder, a pickle-based file, an unlisted or modified file.
    """
    folder = Path(str(path).strip())
    if not str(path).strip():
        raise ValueError("model spec 'diffusers:' names no folder: write diffusers:/path/to/diffusers_folder")
    if not folder.exists():
        raise CheckpointError(f"diffusers folder not found: {folder}")
    if not folder.is_dir():
        raise CheckpointError(f"{folder} is a file; diffusers:DIR expects a folder (unet/ + scheduler/, a bare UNet "
                              "folder, or a pipeline folder with model_index.json)")
    _refuse_pickles(folder)
    if file_sha256 is not None:
        _check_files(folder, file_sha256)
    if (folder / "model_index.json").is_file():
        return _load_pipeline(folder)
    if (folder / "unet").is_dir() or (folder / "scheduler").is_dir():
        return _load_pixel_folder(folder)
    if (folder / "config.json").is_file():
        from diffusers import DDPMScheduler

        return DiffusersUNet(load_unet(folder), DDPMScheduler()).eval()  # a bare UNet: diffusers' default schedule
    raise CheckpointError(f"{folder} is not a diffusers model folder: expected unet/ + scheduler/, a UNet's "
                          "config.json + diffusion_pytorch_model.safetensors, or a pipeline's model_index.json")


__all__ = ["DEFAULT_STEPS", "SAMPLERS", "DiffusersLatentPipeline", "DiffusersUNet", "DiffusionAdapter", "load_diffusers",
           "load_scheduler", "load_unet", "sampler_scheduler"]
