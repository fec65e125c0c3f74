"""Task ``universal``: one patch learnt by the attacker, scored afterwards by downstream users of the encoder.

The protocol of AdvCLIP (Zhou et al., ACM MM 2023), downstream-agnostic: the attacker has white-box
access to the pre-trained encoder (the cell's ``model``) and a surrogate set of captioned images,
and learns *one* patch (an attack of kind ``universal_attacks``: ``advclip``, ``uap_patch``) without
knowing the downstream tasks. *After* the patch exists, downstream users build on the frozen encoder
with their own clean data (:class:`~mmsec.evaluation.downstream.DownstreamSuite`): linear probes
for the object's colour (8 classes) and position (4 classes), zero-shot classification over the
48 "colour shape" classes (the shape read off the same prediction) and image-text retrieval of the
test scenes with their first caption. A cell pastes the patch on every test image (at the place it
was trained for, rescaled to the same fraction of the image side) and stores, per downstream task,
the clean accuracy and the drop (clean minus patched); with ``baseline: noise`` also the drop of
the control, a uniform-noise patch of the same size and place.

Where (this task's own spec fields):

- ``world``: the shapes-world variant the downstream users live in (:data:`WORLDS`: ``standard``,
  the attacker's world; ``scenes`` and ``48px``, held out); a list is the innermost grid axis, and
  the cells of one model and attack share the patch (it is learnt once per process);
- ``surrogate``: how many captioned scenes the attacker learns on, from its own range
  :data:`~mmsec.data.scenes.ATTACKER` of the standard world (every caption of each scene);
- ``probe_train``: how many clean scenes each downstream user fits its probes on, from
  :data:`~mmsec.data.scenes.PROBE_TRAIN` of the cell's world (disjoint from the attacker's).

The spec's ``data`` names the test scenes (``split``, ``n``, ``start``) of each world; the world
sets their rendering (image size, world seed, textures, second objects), so ``data.image_size``
and ``data.seed`` stay unset.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from typing import Any

import torch
from pydantic import Field, StrictInt, StrictStr

from ...data.scenes import ATTACKER, DEFENDER_CLEAN, PROBE_TRAIN
from ...metrics import MetricDefinition
from ...registry import close_names, register
from ..cells import derive_seed, method_params
from ..context import artifact_entry
from ..task import CellOutput, Task, TaskBlock
from .common import build_method


@dataclass(frozen=True)
class World:
    """A shapes-world variant downstream users evaluate in."""

    description: str
    image_size: int
    seed: int
    textures: tuple[str, ...] | None = None  # None: every texture
    second_object_prob: float = 0.0

    def make(self) -> Any:
        from ...data.shapes import TEXTURES, ShapesWorld

        return ShapesWorld(self.image_size, seed=self.seed, textures=self.textures or TEXTURES,
                           second_object_prob=self.second_object_prob)


WORLDS = {
    "standard": World("the attacker's world (32 px, world seed 0, every background, one object per scene)", 32, 0),
    "scenes": World("held out: world seed 1, striped backgrounds only, a second object in half the scenes (32 px)",
                    32, 1, ("striped",), 0.5),
    "48px": World("held out: world seed 1 at 48 px (the patch rescaled to the same fraction of the side)", 48, 1),
}
ATTACKER_WORLD = "standard"  # the surrogate scenes come from here

# Downstream tasks: (metric prefix, DownstreamSuite key, what it is)
DOWNSTREAM = (
    ("probe_color", "probe_color", "a linear probe (logistic regression on the frozen model's L2-normalised image "
                                   "embeddings, fit on the world's clean probe-training scenes after the patch exists) "
                                   "predicting the object's colour (8 classes)"),
    ("probe_position", "probe_position", "a linear probe as above predicting the object's position (4 classes)"),
    ("zeroshot", "zeroshot", "zero-shot classification over the 48 'colour shape' classes (the shapes world's "
                             "prompt ensembles)"),
    ("zeroshot_shape", "zeroshot_shape", "the shape (6 classes) read off the zero-shot prediction"),
    ("retrieval_r1", "r1", "image-text retrieval of the test images and their first captions, the mean of "
                           "image-to-text and text-to-image R@1 (a caption shared by several images is right for "
                           "each of them)"),
)
CLASSIFIERS = ("probe_color", "probe_position", "zeroshot")


def _metrics() -> list[MetricDefinition]:
    out = []
    for prefix, _, what in DOWNSTREAM:
        score = "R@1" if prefix == "retrieval_r1" else "accuracy"
        out += [
            MetricDefinition(f"{prefix}_clean", 1, f"universal: {score} on the world's clean test images of {what}",
                             higher_is_better=True),
            MetricDefinition(f"{prefix}_drop", 1, f"universal: clean {score} minus {score} on the same test images with "
                                                  f"the learnt patch pasted, of {what} (positive: the patch hurts)",
                             higher_is_better=False),
            MetricDefinition(f"{prefix}_drop_noise", 1, f"universal: clean {score} minus {score} with a uniform-noise "
                                                        f"patch of the learnt patch's size and place pasted (the "
                                                        f"control), of {what}", higher_is_better=False),
        ]
        if prefix in CLASSIFIERS:
            out.append(MetricDefinition(f"{prefix}_fooling", 1, f"universal: fraction of the test images whose "
                                                                f"prediction changes when the learnt patch is pasted, "
                                                                f"of {what}", higher_is_better=False))
    out.append(MetricDefinition("patch_seconds", 1, "universal: wall-clock seconds the attack took to learn the patch",
                                higher_is_better=False))
    return out


_METRICS = _metrics()
MAIN = ("probe_color", "probe_position", "zeroshot", "retrieval_r1")


class UniversalBlock(TaskBlock):
    world: StrictStr | list[StrictStr] = Field(
        default="standard", description="scores a patch in shapes-world variants (world: standard, scenes, 48px)")
    surrogate: StrictInt = Field(default=2000, gt=1, description="learns a universal patch on surrogate scenes")
    probe_train: StrictInt = Field(default=2000, gt=1, description="fits downstream probes on probe_train scenes")


@register("tasks", "universal")
class UniversalTask(Task):
    """A universal patch learnt once on the attacker's scenes, scored by downstream users in each world."""

    Block = UniversalBlock
    axes = ("world",)
    metrics = {d.name: d for d in _METRICS}
    # (with `baseline: noise` the noise metric is added; list the other *_drop_noise to store them too)
    default_metrics = tuple(f"{p}_{k}" for k in ("clean", "drop") for p in MAIN) + ("probe_color_fooling",
                                                                                   "patch_seconds")
    noise_metric = "probe_color_drop_noise"
    attack_kinds = ("universal_attacks",)
    attack_words = "universal attack"
    baselines = ("noise",)
    baseline_words = "a uniform-noise patch of the learnt patch's size and place"
    no_defense_hint = " (the patch is scored on the published encoder)"

    def check(self, spec: Any, block: UniversalBlock) -> list[str]:
        issues = []
        worlds = block.world if isinstance(block.world, list) else [block.world]
        where = [f"world[{i}]" for i in range(len(worlds))] if isinstance(block.world, list) else ["world"]
        if isinstance(block.world, list) and not worlds:
            issues.append("world: empty list; give at least one of " + ", ".join(WORLDS))
        for i, (w, name) in enumerate(zip(where, worlds, strict=True)):
            if name not in WORLDS:
                issues.append(f"{w}: unknown world {name!r}; allowed: {', '.join(WORLDS)}."
                              f"{close_names(name, list(WORLDS))}")
            elif worlds.index(name) != i:
                issues.append(f"{w}: duplicate value {name!r} (each grid cell must be distinct)")
        room = DEFENDER_CLEAN.start - ATTACKER.start  # the attacker's range ends where the defender's begins
        if block.surrogate > room:
            issues.append(f"surrogate: {block.surrogate} scenes run past the attacker's range (data/scenes.py "
                          f"ATTACKER holds {room})")
        d = spec.data
        if d.name != "shapes":
            issues.append(f"data.name: task 'universal' evaluates on the shapes world (its downstream probes read scene "
                          f"attributes), got {d.name!r}")
        if d.image_size is not None:
            issues.append(f"data.image_size: set by the world (standard and scenes 32 px, 48px 48 px), got "
                          f"{d.image_size}; remove it")
        if d.seed != 0:
            issues.append(f"data.seed: set by the world (standard: world seed 0, scenes and 48px: 1), got {d.seed}; "
                          "remove it")
        if d.split == "train" and d.name == "shapes":
            issues.append("data.split: the attacker's and the probes' scenes come from train; evaluate on test or val")
        # a (y, x) corner is in pixels of the surrogate images: it means nothing at another size
        for i, a in enumerate(spec.attacks):
            pos = a.params.get("position")
            if isinstance(pos, list) and len(pos) == 2 and all(isinstance(v, int) for v in pos):
                odd = [n for n in worlds if n in WORLDS and WORLDS[n].image_size != WORLDS[ATTACKER_WORLD].image_size]
                if odd:
                    at = f"attack[{i}]" if isinstance(spec.attack, list) else "attack"
                    issues.append(f"{at}.params.position: a (y, x) corner is in pixels of the "
                                  f"{WORLDS[ATTACKER_WORLD].image_size} px surrogate images, but world {odd[0]!r} "
                                  f"renders {WORLDS[odd[0]].image_size} px images; use 'fixed' or 'random'")
        if spec.baseline is None and spec.metrics is not None:
            for i, m in enumerate(spec.metrics):
                if m.endswith("_drop_noise"):
                    issues.append(f"metrics[{i}]: {m!r} is the noise patch's drop and needs `baseline: noise`")
        return issues

    def cell_fields(self, block: UniversalBlock, axis_values: dict[str, Any]) -> dict[str, Any]:
        return {"world": axis_values["world"], "surrogate": block.surrogate, "probe_train": block.probe_train}

    def run(self, cell: dict, ctx: Any) -> CellOutput:
        from ...attacks.universal import apply_patch, patch_side, random_patch

        model = ctx.load_model(cell["model"])
        seed = int(cell["seed"])
        attack, _ = build_method(self.attack_kinds, cell["attack"])
        key = {"universal_patch": cell["model"], "attack": cell["attack"], "surrogate": cell["surrogate"],
               "seed": seed}
        result = ctx.cached(key, lambda: learn_patch(model, attack, cell["surrogate"], seed))
        suite = ctx.cached({"downstream_suite": cell["model"], "world": cell["world"],
                            "probe_train": cell["probe_train"], "data": cell["data"]},
                           lambda: downstream_suite(model, cell["world"], cell["probe_train"], cell["data"]))
        pixels = suite.clean_pixels  # (N, 3, S, S)
        place = derive_seed(seed, "placement")  # the same places for the learnt and the noise patch
        patched = result.apply(pixels, generator=place)
        report = suite.compare(patched)
        values: dict[str, float] = {}
        for prefix, key_, _ in DOWNSTREAM:
            values[f"{prefix}_clean"] = report[key_]["clean"]
            values[f"{prefix}_drop"] = report[key_]["drop"]
            if prefix in CLASSIFIERS:
                values[f"{prefix}_fooling"] = report[key_]["fooling_rate"]
        baseline_params = None
        if cell.get("baseline"):
            noise = random_patch(result.fraction, result.image_size, generator=derive_seed(seed, "baseline"))
            control = suite.compare(apply_patch(pixels, noise, result.position, place, fraction=result.fraction))
            for prefix, key_, _ in DOWNSTREAM:
                values[f"{prefix}_drop_noise"] = control[key_]["drop"]
            baseline_params = {"name": cell["baseline"], "fraction": result.fraction, "position": result.position}
        values["patch_seconds"] = float(result.seconds)
        values = {k: v for k, v in values.items() if k in cell["metrics"]}

        world, side = cell["world"], pixels.shape[-1]
        h = patch_side(result.fraction, side)
        size = f"{h}x{h} px ({h * h / side ** 2:.1%} of the {side} px images)"
        where = result.position if isinstance(result.position, str) else f"({result.position[0]}, {result.position[1]})"
        threat = {
            "clean": f"clean inputs (no perturbation), world {world}",
            "adv": (f"{attack.threat_model}: {cell['attack']['name']}, one {size} patch at the {where} place, learnt "
                    f"on {cell['surrogate']} attacker scenes, untargeted; world {world}"),
            "noise": f"uniform-noise patch of {size} at the {where} place; world {world}",
            "cost": f"cost of learning the patch ({cell['attack']['name']})",
        }

        def threat_of(name: str) -> str:
            if name == "patch_seconds":
                return threat["cost"]
            if name.endswith("_drop_noise"):
                return threat["noise"]
            return threat["clean" if name.endswith("_clean") else "adv"]

        artifacts = []
        folder = ctx.staging_folder() if cell.get("save_artifacts") else None
        if folder is not None:
            artifacts = write_patch(cell, result, pixels, patched, folder)
        return CellOutput(values, threat_of, artifacts, method_params(attack), baseline_params, int(pixels.shape[0]))


def learn_patch(model: Any, attack: Any, surrogate: int, seed: int) -> Any:
    """The attack's patch, learnt on ``surrogate`` captioned scenes of the attacker's range (every caption)."""
    batch = ATTACKER.batch(WORLDS[ATTACKER_WORLD].make(), surrogate)
    gen = torch.Generator().manual_seed(derive_seed(seed, "attack"))
    return attack(model, (batch.pixels(), batch.captions), generator=gen)


def downstream_suite(model: Any, world: str, probe_train: int, data: dict) -> Any:
    """The downstream users of ``world``: probes fit on its clean :data:`PROBE_TRAIN` scenes, the data's test scenes."""
    from ...evaluation.downstream import DownstreamSuite

    w = WORLDS[world].make()
    test = w.batch(data["split"], data.get("start") or 0, data["n"])
    return DownstreamSuite.shapes(model, PROBE_TRAIN.batch(w, probe_train), test)


def write_patch(cell: dict, result: Any, clean: torch.Tensor, patched: torch.Tensor, folder: Any) -> list[dict]:
    """The patch as safetensors and a PNG of the first test images, clean above patched."""
    from safetensors.torch import save_file

    from ...report.examples import example_grid

    png = folder / "patched_examples.png"
    buf = io.BytesIO()
    example_grid(clean[:8], patched[:8]).save(buf, format="PNG")
    png.write_bytes(buf.getvalue())
    tensors = folder / "patch.safetensors"
    meta = {"mmsec": json.dumps({"cell": cell, "fraction": result.fraction, "position": result.position,
                                 "image_size": result.image_size}, sort_keys=True)}
    save_file({"patch": result.patch.detach().contiguous().cpu()}, str(tensors), metadata=meta)
    return [artifact_entry("examples_png", png), artifact_entry("patch_safetensors", tensors)]


__all__ = ["DOWNSTREAM", "UniversalTask", "WORLDS", "World", "downstream_suite", "learn_patch"]
