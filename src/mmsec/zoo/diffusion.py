"""The zoo's diffusion models: build one from its recipe, train it, write its folder and card, measure it.

Two recipes (``recipes/shapes-ddpm.yaml``, ``recipes/shapes-t2i.yaml``), both pixel-space models at 16 px
trained on the same fixed set of single-object shapes-world scenes (:data:`mmsec.data.scenes.DIFFUSION_TRAIN`:
the first ``n_images`` train scenes; a membership-inference study treats them as the members):

* ``shapes-ddpm``: an unconditional ``UNet2DModel``;
* ``shapes-t2i``: a ``UNet2DConditionModel`` cross-attending to the token states of the zoo CLIP's text
  tower (:class:`~mmsec.models.clip_text_states.TinyCLIPTextStates`, copied from ``zoo:shapes-clip-resnet``
  and frozen), prompted ``"a {colour} {shape}"`` with the world's own names, 10% of prompts dropped.

A model is a folder in diffusers layout (``unet/``, ``scheduler/``, ``text_encoder/`` for the
text-to-image model; safetensors only) with the card ``NAME.json`` beside it: recipe, seed, the sha256 of
every file (``files``) and of the list (``sha256``), training time and the quality metrics measured by
the zoo's judge (:func:`card_metrics`, definitions in :mod:`mmsec.metrics.generation`).
"""

from __future__ import annotations

import json
import logging
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from ..data.scenes import DIFFUSION_TRAIN
from ..data.shapes import ShapesWorld, shape_color_classes
from ..models.diffusers_adapter import DiffusersUNet
from ..train.diffusion import DiffusionBatch, DiffusionTrainConfig, train_diffusion
from ..version import __version__
from . import folder_files, folder_sha256, read_card

log = logging.getLogger(__name__)

FORMAT = "diffusers"  # the card's "format": how mmsec.zoo loads the folder


def class_prompt(label: int) -> str:
    """The prompt of class ``label``: ``"a {colour} {shape}"`` in the world's own names ("a red circle")."""
    return f"a {shape_color_classes()[label]}"


def training_set(data: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The recipe's training images, (N, 3, S, S) uint8, and their class labels (N,): the first
    ``data["n_images"]`` scenes of :data:`~mmsec.data.scenes.DIFFUSION_TRAIN` in a single-object world."""
    world = ShapesWorld(image_size=data["image_size"], seed=data["world_seed"],
                        second_object_prob=data["second_object_prob"])
    batch = DIFFUSION_TRAIN.batch(world, data["n_images"])
    return batch.images, batch.labels


def epoch_batches(images: torch.Tensor, labels: torch.Tensor, batch_size: int, seed: int, conditional: bool):
    """``batches(step)`` for :func:`~mmsec.train.diffusion.train_diffusion`: the images in a fresh seeded
    order each epoch (the last partial batch of an epoch dropped), with their class prompts when
    ``conditional``. Deterministic in (seed, step)."""
    per_epoch = images.shape[0] // batch_size
    if per_epoch < 1:
        raise ValueError(f"batch_size {batch_size} exceeds the {images.shape[0]} training images")
    orders: dict[int, torch.Tensor] = {}

    def batches(step: int) -> DiffusionBatch:
        epoch, k = divmod(step, per_epoch)
        if epoch not in orders:
            orders.clear()
            orders[epoch] = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
        idx = orders[epoch][k * batch_size:(k + 1) * batch_size]
        prompts = [class_prompt(int(y)) for y in labels[idx]] if conditional else None
        return DiffusionBatch(images[idx].float() / 255.0, prompts)

    return batches


def build_model(recipe: dict) -> DiffusersUNet:
    """The recipe's untrained model (seeded by ``recipe["seed"]``), with the frozen text tower of
    ``recipe["model"]["text_encoder"]`` (a zoo CLIP) for a conditional UNet."""
    import diffusers

    from ..models.clip_text_states import TinyCLIPTextStates

    spec = recipe["model"]
    unet_cfg = dict(spec["unet"])
    name = unet_cfg.pop("_class_name")
    if name not in ("UNet2DModel", "UNet2DConditionModel"):
        raise ValueError(f"recipe {recipe['name']}: model.unet._class_name must be UNet2DModel or UNet2DConditionModel, "
                         f"got {name!r}")
    text_encoder = None
    if name == "UNet2DConditionModel":
        from . import load_model

        source = spec.get("text_encoder", "")
        if not source.startswith("zoo:"):
            raise ValueError(f"recipe {recipe['name']}: model.text_encoder must name a zoo CLIP (zoo:NAME), got {source!r}")
        text_encoder = TinyCLIPTextStates.from_clip(load_model(source.removeprefix("zoo:")))
        if unet_cfg.get("cross_attention_dim") != text_encoder.width:
            raise ValueError(f"recipe {recipe['name']}: unet.cross_attention_dim is {unet_cfg.get('cross_attention_dim')}, "
                             f"but {source}'s text tower has width {text_encoder.width}")
    torch.manual_seed(int(recipe["seed"]))
    unet = getattr(diffusers, name)(**unet_cfg)
    scheduler = diffusers.DDPMScheduler(**spec["scheduler"])
    return DiffusersUNet(unet, scheduler, text_encoder)


def _sample(model: DiffusersUNet, n: int, prompts: list[str] | None, steps: int, guidance: float, seed: int,
            batch_size: int = 128) -> torch.Tensor:
    """``n`` DDIM samples; the initial noise is drawn at once from ``seed``, so the batching changes nothing."""
    noise = torch.randn(n, model.channels, model.image_size, model.image_size, generator=torch.Generator().manual_seed(seed))
    out = []
    for i in range(0, n, batch_size):
        cond = prompts[i:i + batch_size] if prompts is not None else None
        out.append(model.sample(noise[i:i + batch_size], cond, steps=steps, guidance=guidance))
    return torch.cat(out)


def card_metrics(model: DiffusersUNet, recipe: dict, judge: Any | None = None) -> dict[str, float]:
    """The card's quality metrics, by the zoo's judge (``zoo:shapes-judge`` unless ``judge`` is given), on
    DDIM samples (``eval.steps``, ``eval.seed``; definitions in :mod:`mmsec.metrics.generation`).

    Unconditional: ``recognition_rate`` (top judge probability > 0.9) of ``eval.n_samples`` samples, the
    ``distinct_classes`` among the recognised ones and the ``class_distribution_distance`` of their classes to
    the training set's, beside ``class_distribution_distance_real``, that of as many real test images as samples
    were recognised (the sampling floor: a finite histogram is never at distance 0). Text-to-image: ``eval.per_class`` samples per class prompt at guidance
    ``eval.guidance``: ``colour_adherence``, ``shape_adherence``, ``prompt_adherence`` (both), and their
    recognition rate.
    """
    from ..metrics.generation import (
        class_distribution_distance,
        class_frequencies,
        prompt_adherence,
        recognition_rate,
    )

    if judge is None:
        from . import load_model

        judge = load_model("shapes-judge")
    ev = recipe["eval"]
    steps, seed = int(ev["steps"]), int(ev["seed"])
    if not model.conditional:
        images = _sample(model, int(ev["n_samples"]), None, steps, 1.0, seed)
        _, labels = training_set(recipe["data"])
        reference = class_frequencies(labels, len(judge.classes))
        dist = class_distribution_distance(judge, images, reference)
        # The distance of a finite sample is biased upwards: the same distance for as many real (test) images as
        # samples were recognised is the floor a perfect generator would reach with this many images.
        world = ShapesWorld(image_size=recipe["data"]["image_size"], seed=recipe["data"]["world_seed"],
                            second_object_prob=recipe["data"]["second_object_prob"])
        real = world.batch("test", 0, max(dist.recognised, 1)).pixels()
        return {"recognition_rate": recognition_rate(judge, images), "distinct_classes": float(dist.distinct_classes),
                "class_distribution_distance": dist.distance,
                "class_distribution_distance_real": class_distribution_distance(judge, real, reference).distance,
                "n_samples": float(images.shape[0]), "n_recognised": float(dist.recognised),
                "sampler_steps": float(steps)}
    prompts = [class_prompt(k) for k in range(len(shape_color_classes())) for _ in range(int(ev["per_class"]))]
    guidance = float(ev["guidance"])
    images = _sample(model, len(prompts), prompts, steps, guidance, seed)
    adherence = prompt_adherence(judge, images, prompts)
    return {"colour_adherence": adherence.colour, "shape_adherence": adherence.shape,
            "prompt_adherence": adherence.both, "recognition_rate": recognition_rate(judge, images),
            "guidance": guidance, "n_samples": float(len(prompts)), "sampler_steps": float(steps)}


def write_card(folder: Path, card: dict) -> dict:
    """Record the sha256 of every file of ``folder`` in ``card`` and write it to ``NAME.json`` beside it."""
    files = folder_files(folder)
    card = {**card, "sha256": folder_sha256(files), "files": files,
            "size_bytes": sum((folder / rel).stat().st_size for rel in files)}
    (folder.parent / f"{folder.name}.json").write_text(json.dumps(card, indent=2) + "\n")
    return card


def train_diffusion_recipe(recipe: dict, name: str, out: Path, steps: int | None = None, quiet: bool = False,
                           measure: bool = True) -> dict:
    """Train the diffusion recipe ``recipe`` and write ``out/NAME/`` (diffusers layout) and ``out/NAME.json``.

    ``steps`` overrides the recipe's (smoke runs; the warm-up shortened to a tenth). The card is written as
    soon as the weights are (without metrics), then again with :func:`card_metrics` unless ``measure`` is
    False; :func:`measure_card` measures a written model again. Returns the card.
    """
    model = build_model(recipe)
    t = dict(recipe["train"])
    batch_size = int(t.pop("batch_size"))
    if steps is not None:
        t["steps"], t["warmup"] = steps, min(t["warmup"], max(1, steps // 10))
    cfg = DiffusionTrainConfig(**t, seed=int(recipe["seed"]))
    images, labels = training_set(recipe["data"])
    batches = epoch_batches(images, labels, batch_size, int(recipe["seed"]), model.conditional)
    cpu_start = time.process_time()
    run_log = train_diffusion(model, batches, cfg, desc=f"training {name}", quiet=quiet)
    cpu_seconds = time.process_time() - cpu_start
    folder = out / name
    model.save(folder)
    card = {
        "name": name,
        "description": recipe.get("description", ""),
        "version": __version__,
        "family": "diffusion",
        "format": FORMAT,
        "seed": int(recipe["seed"]),
        "recipe": recipe,
        "steps_run": cfg.steps,
        "data": {"world": "shapes", **recipe["data"], "scenes": f"train split, indices {DIFFUSION_TRAIN.start}.."
                 f"{DIFFUSION_TRAIN.start + recipe['data']['n_images'] - 1}"},
        "metrics": {},
        "train_seconds": round(run_log.seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "final_loss": round(sum(run_log.losses[-50:]) / len(run_log.losses[-50:]), 4),
        "parameters": sum(p.numel() for p in model.unet.parameters()),
        "trained_on": {"torch": torch.__version__, "python": platform.python_version(),
                       "threads": torch.get_num_threads(), "date": datetime.now(timezone.utc).date().isoformat()},
    }
    if model.conditional:
        from . import card as zoo_card

        source = recipe["model"]["text_encoder"].removeprefix("zoo:")
        card["text_encoder"] = {"copied_from": f"zoo:{source}", "sha256": zoo_card(source)["sha256"], "frozen": True}
    card = write_card(folder, card)
    if measure:
        card = measure_card(folder, model)
    return card


def measure_card(folder: Path, model: DiffusersUNet | None = None) -> dict:
    """Measure :func:`card_metrics` of the model in ``folder`` (loaded, its hashes checked, unless given) and
    write them into its card ``NAME.json``; returns the card."""
    from . import load_folder

    folder = Path(folder)
    card = read_card(folder.parent / f"{folder.name}.json")
    model = (model if model is not None else load_folder(folder)).eval()
    start = time.process_time()
    metrics = card_metrics(model, card["recipe"])
    card = {**card, "metrics": {k: round(v, 4) for k, v in metrics.items()},
            "eval_cpu_seconds": round(time.process_time() - start, 1)}
    (folder.parent / f"{folder.name}.json").write_text(json.dumps(card, indent=2) + "\n")
    log.info("measured %s: %s", folder.name, card["metrics"])
    return card


__all__ = ["build_model", "card_metrics", "class_prompt", "epoch_batches", "measure_card", "train_diffusion_recipe",
           "training_set", "write_card"]
