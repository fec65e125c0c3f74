"""Task ``diffusion_backdoor``: backdoor a diffusion model, sample it with and without the trigger, judge the samples.

The setting of BadDiffusion (Chou, Chen, Ho, CVPR 2023) and the diffusion backdoors after it. Threat model:
the attacker fine-tunes the published clean diffusion model (the cell's ``model``, e.g.
``zoo:shapes-ddpm``) on its training images plus poisoned samples and publishes the result; a user who
samples from ordinary noise must get ordinary images, while noise carrying the attacker's trigger must
give the attacker's target image.

A cell has
- ``model``: the clean diffusion model (family ``diffusion``);
- ``attack`` (kind ``diffusion_backdoors``: ``baddiffusion``): its ``target`` param names the target's
  shapes-world class (default: the task's ``target_class``); the target image is the first large object of
  that class on a plain background among :data:`~mmsec.data.scenes.REFERENCE_POOL`'s scenes;
- ``data``: the attacker's clean training images (shapes-world scenes at the model's size; the paper's
  setting fine-tunes on the victim's own training set, so the recipes take the scenes the zoo model was
  trained on: the train split from index 0);
- the task block: ``samples`` (per set), ``steps`` (inference steps, one number or one per sampler,
  ``{ddim: 25, ddpm: 1000}``; None or a sampler left out: the model's default for it, DDIM 25, ancestral
  DDPM 100), ``judge`` (the image classifier that scores the samples).

The backdoored model is trained once per (model, attack, data, seed) and persisted in the results folder
(:meth:`~mmsec.runs.context.CellContext.trained`). Samples are drawn with the sampler the attack trained
for (BadDiffusion's coefficient ``"baddiffusion"``: the ancestral sampler; ``"ddim"``: DDIM), from one
set of starting noises with and without the trigger; the clean model is sampled on the same noises (the
control: its clean utility, and what the trigger pattern does without a backdoor).

Metrics (the judge's probability bar is 0.9): on triggered samples the target hit rate, the MSE to the
target image (median; fraction within 0.01) and SSIM; on clean samples the recognition rate (beside the
clean model's and the drop) and the target hit rate (the backdoor must stay silent); the control's
triggered hit rate and MSE; the number of poisoned samples and the training time. With
``save_artifacts``, ``samples.png``: the target, triggered and clean samples of the backdoored model and
of the clean model.
"""

from __future__ import annotations

import io
import json
from typing import Any

import torch
from pydantic import Field, StrictInt, StrictStr

from ...data.scenes import REFERENCE_POOL
from ...metrics import MetricDefinition
from ...metrics.generation import GENERATION_DEFINITIONS, MSE_BOUND, RECOGNITION_THRESHOLD
from ...registry import register
from ..cells import compact, derive_seed, method_params
from ..context import Trained, artifact_entry
from ..task import CellOutput, Task, TaskBlock
from .common import build_method

DEFAULT_TARGET = "cyan ring"  # a shape the 16 px zoo model draws legibly (probes: rings and crosses)


def _metrics() -> list[MetricDefinition]:
    g = GENERATION_DEFINITIONS
    trig = "samples of the backdoored model from triggered starting noise"
    return [
        MetricDefinition("target_hit_rate", 1, f"diffusion backdoor: on {trig}: {g['target_hit_rate'].description}"),
        MetricDefinition("mse_to_target_median", 1, f"diffusion backdoor: on {trig}: "
                                                    f"{g['mse_to_target_median'].description}", higher_is_better=False),
        MetricDefinition("mse_to_target_within", 1, f"diffusion backdoor: on {trig}: "
                                                    f"{g['mse_to_target_within'].description}"),
        MetricDefinition("ssim_to_target", 1, f"diffusion backdoor: on {trig}: {g['ssim_to_target'].description}"),
        MetricDefinition("clean_recognition_rate", 1, "diffusion backdoor: on samples of the backdoored model from "
                                                      f"clean starting noise: {g['recognition_rate'].description}",
                         higher_is_better=True),
        MetricDefinition("clean_recognition_rate_control", 1, "diffusion backdoor: on samples of the clean model from "
                                                              "the same clean starting noises: "
                                                              f"{g['recognition_rate'].description}",
                         higher_is_better=True),
        MetricDefinition("clean_recognition_drop", 1, "diffusion backdoor: clean_recognition_rate_control minus "
                                                      "clean_recognition_rate (fractions, not points)",
                         higher_is_better=False),
        MetricDefinition("clean_target_hit_rate", 1, "diffusion backdoor: on samples of the backdoored model from "
                                                     f"clean starting noise: {g['target_hit_rate'].description}",
                         higher_is_better=False),
        MetricDefinition("target_hit_rate_control", 1, "diffusion backdoor: on samples of the clean model from the "
                                                       "same triggered starting noises (what the trigger pattern does "
                                                       f"without a backdoor): {g['target_hit_rate'].description}",
                         higher_is_better=False),
        MetricDefinition("mse_to_target_median_control", 1, "diffusion backdoor: on samples of the clean model from "
                                                            "the same triggered starting noises: "
                                                            f"{g['mse_to_target_median'].description}"),
        MetricDefinition("target_hit_rate_noise", 1, "diffusion backdoor: on samples of the backdoored model from "
                                                     "starting noise carrying a random pattern in place of the trigger "
                                                     "(random signs of the trigger's magnitude where the trigger is "
                                                     "non-zero: the baseline, how specific the backdoor is to its "
                                                     f"trigger): {g['target_hit_rate'].description}",
                         higher_is_better=False),
        MetricDefinition("n_poisoned", 1, "diffusion backdoor: number of poisoned samples in the attacker's fine-tuning "
                                          "set", higher_is_better=False),
        MetricDefinition("train_seconds", 1, "diffusion backdoor: wall-clock seconds of the backdoor fine-tuning",
                         higher_is_better=False),
    ]


_METRICS = _metrics()
THREAT_KINDS = {"clean_recognition_rate": "clean", "clean_target_hit_rate": "clean",
                "clean_recognition_rate_control": "control", "target_hit_rate_control": "control",
                "mse_to_target_median_control": "control", "clean_recognition_drop": "drop",
                "target_hit_rate_noise": "noise",
                "n_poisoned": "cost", "train_seconds": "cost"}


class DiffusionBackdoorBlock(TaskBlock):
    target_class: StrictStr = Field(default=DEFAULT_TARGET, description="names the target class when the attack does not")
    samples: StrictInt = Field(default=256, gt=0, description="draws N samples per set (triggered, clean)")
    steps: StrictInt | dict[StrictStr, StrictInt] | None = Field(
        default=None, description="samples with N inference steps (per sampler: {ddim: N, ddpm: M})")
    judge: StrictStr = Field(default="zoo:shapes-judge", description="judges the generated images")


def target_scene(world: Any, class_name: str) -> int:
    """The index (into REFERENCE_POOL's split) of its first large ``class_name`` object on a plain background."""
    from ...data.shapes import split_scene_id

    for i in range(REFERENCE_POOL.start, REFERENCE_POOL.start + REFERENCE_POOL.count):
        s = world.scene(split_scene_id(REFERENCE_POOL.split, i))
        if f"{s.color} {s.shape}" == class_name and s.size == "large" and s.texture == "plain" and s.second is None:
            return i
    raise ValueError(f"no large plain-background {class_name!r} scene among {REFERENCE_POOL}")


def noise_pattern(trigger: Any, seed: int) -> Any:
    """The baseline: a NoiseTrigger of random signs with the trigger's magnitude where the trigger is non-zero."""
    from ...attacks.backdoor.diffusion_backdoor import NoiseTrigger

    gen = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, trigger.shift.shape, generator=gen).float() * 2 - 1  # (C, S, S) in {-1, 1}
    return NoiseTrigger(signs * trigger.shift.abs(), trigger.scale)


def noise_hit_rate(model: Any, noise: Any, target_class: str, judge: Any, cell: dict, sampler: str) -> float:
    """The backdoored model's target hit rate from the cell's starting noises carrying the baseline pattern."""
    from ...evaluation.diffusion_backdoor import noise_seed, sample_sets
    from ...metrics.generation import target_hit_rate

    seed = noise_seed(derive_seed(int(cell["seed"]), "diffusion_backdoor_samples"))
    images = sample_sets(model, {"noise": noise}, int(cell["samples"]), sampler, steps_for(cell, sampler), seed)
    return target_hit_rate(judge, images["noise"], target_class)


def steps_for(cell: dict, sampler: str) -> int | None:
    """The cell's inference steps for ``sampler`` (None: the model's default)."""
    steps = cell["steps"]
    return steps.get(sampler) if isinstance(steps, dict) else steps


@register("tasks", "diffusion_backdoor")
class DiffusionBackdoorTask(Task):
    """A backdoored diffusion model sampled with and without its trigger, judged against its target and the clean model."""

    Block = DiffusionBackdoorBlock
    metrics = {d.name: d for d in _METRICS}
    default_metrics = ("target_hit_rate", "mse_to_target_median", "mse_to_target_within", "clean_recognition_rate",
                       "clean_recognition_rate_control", "clean_recognition_drop", "clean_target_hit_rate",
                       "target_hit_rate_control")
    attack_kinds = ("diffusion_backdoors",)
    noise_metric = "target_hit_rate_noise"
    attack_words = "diffusion backdoor"
    baselines = ("noise",)
    baseline_words = "random signs in place of the trigger's pattern, same magnitude and place"
    targeted_hint = "; its target is the attack's `target` param (or the task's `target_class`)"
    family = "diffusion"

    def check(self, spec: Any, block: DiffusionBackdoorBlock) -> list[str]:
        from ... import registry
        from ...attacks.backdoor.diffusion_backdoor import SAMPLERS
        from ...data.shapes import shape_color_classes

        classes = shape_color_classes()
        issues = []
        if spec.data.name != "shapes":
            issues.append(f"data.name: task 'diffusion_backdoor' fine-tunes on shapes-world scenes (its targets are "
                          f"shapes-world objects), got {spec.data.name!r}")
        steps = block.steps if isinstance(block.steps, dict) else {"": block.steps}
        for k, v in steps.items():
            where = f"steps.{k}" if k else "steps"
            if k and k not in SAMPLERS:
                issues.append(f"{where}: unknown sampler {k!r}; give steps per sampler among {list(SAMPLERS)}")
            if v is not None and v < 1:
                issues.append(f"{where}: inference steps must be >= 1, got {v}")
        if block.target_class not in classes:
            issues.append(f"target_class: {block.target_class!r} is not a shapes-world class ('<colour> <shape>')."
                          f"{registry.close_names(block.target_class, classes)}")
        for i, a in enumerate(spec.attacks):
            where = f"attack[{i}]" if isinstance(spec.attack, list) else "attack"
            target = a.params.get("target")
            for t in target if isinstance(target, list) else [target]:
                if t is not None and t not in classes:
                    issues.append(f"{where}.params.target: {t!r} is not a shapes-world class ('<colour> <shape>')."
                                  f"{registry.close_names(str(t), classes)}")
        return issues

    def cell_fields(self, block: DiffusionBackdoorBlock, axis_values: dict[str, Any]) -> dict[str, Any]:
        return {"target_class": block.target_class, "samples": block.samples, "steps": block.steps, "judge": block.judge}

    def models_of(self, cell: dict) -> list[str]:
        return [cell["model"], cell["judge"]]

    def run(self, cell: dict, ctx: Any) -> CellOutput:
        from ...attacks.backdoor.diffusion_backdoor import NoiseTrigger
        from ...evaluation.diffusion_backdoor import diffusion_backdoor_report

        clean = ctx.load_model(cell["model"])
        judge = ctx.load_model(cell["judge"])
        config = self.attack_config(cell)
        target_class = config["params"]["target"]
        target_image, scene_id = self.target_image(ctx, cell, int(clean.image_size), target_class)
        bd = self.backdoored(ctx, cell, config, target_image, scene_id)
        trigger = NoiseTrigger.from_dict(bd.info["trigger"])
        sampler = bd.info["sampler"]
        report = diffusion_backdoor_report(bd.model, trigger, target_image, target_class, judge, reference=clean,
                                           n=int(cell["samples"]), sampler=sampler, steps=steps_for(cell, sampler),
                                           generator=derive_seed(int(cell["seed"]), "diffusion_backdoor_samples"))
        values = report.values()
        if "target_hit_rate_noise" in cell["metrics"]:
            noise = noise_pattern(trigger, derive_seed(int(cell["seed"]), "diffusion_backdoor_noise_pattern"))
            values["target_hit_rate_noise"] = noise_hit_rate(bd.model, noise, target_class, judge, cell, sampler)
        values["clean_recognition_drop"] = values["clean_recognition_rate_control"] - values["clean_recognition_rate"]
        values.update(n_poisoned=float(bd.info["n_poisoned"]), train_seconds=float(bd.info["seconds"]))
        attack, _ = build_method(self.attack_kinds, config)
        steps_words = f"{steps_for(cell, sampler)} steps" if steps_for(cell, sampler) else "its default steps"
        how = (f"{compact(attack)} on {cell['model']} (target {target_class!r}: {REFERENCE_POOL.split} scene {scene_id}; fine-tuned on "
               f"{bd.info['n_images']} {cell['data']['split']} scenes, {bd.info['n_poisoned']} poisoned); sampler "
               f"{sampler} at {steps_words}; judge {cell['judge']} at p > {RECOGNITION_THRESHOLD}")
        threat = {"adv": f"{how}; triggered starting noise", "clean": f"{how}; clean starting noise",
                  "control": f"the clean {cell['model']} on the same starting noises ({sampler}, {steps_words})",
                  "drop": f"clean model minus backdoored model ({how})", "cost": f"training cost ({how})",
                  "noise": f"{how}; starting noise with random signs in place of the trigger's pattern"}
        artifacts = []
        folder = ctx.staging_folder() if cell.get("save_artifacts") else None
        if folder is not None:
            title = f"{cell['attack']['name']} ({config['params'].get('coefficient', '')}) -> {target_class}"
            artifacts = self.write_gallery(folder, cell, report, target_image, title, sampler)
        params = method_params(attack)
        params["trigger"] = compact(attack.trigger)
        values = {k: v for k, v in values.items() if k in cell["metrics"]}
        baseline = {"pattern": "random signs", "place": "the trigger's"} if "target_hit_rate_noise" in values else None
        return CellOutput(values, lambda m: threat[THREAT_KINDS.get(m, "adv")], artifacts, params, baseline,
                          int(cell["samples"]))

    @staticmethod
    def attack_config(cell: dict) -> dict:
        """The cell's attack with the task's target unless the attack names one."""
        params = dict(cell["attack"]["params"])
        params.setdefault("target", cell["target_class"])
        return {"name": cell["attack"]["name"], "params": params}

    @staticmethod
    def target_image(ctx: Any, cell: dict, size: int, class_name: str) -> tuple[torch.Tensor, int]:
        """(3, S, S) the target image in [0, 1] and its index in REFERENCE_POOL's split."""
        from ...data.shapes import ShapesWorld

        seed = int(cell["data"].get("seed", 0))

        def build() -> tuple[torch.Tensor, int]:
            world = ShapesWorld(size, seed=seed)
            i = target_scene(world, class_name)
            return world.batch(REFERENCE_POOL.split, i, 1).pixels()[0], i

        return ctx.cached({"diffusion_backdoor_target": class_name, "size": size, "world": seed}, build)

    def backdoored(self, ctx: Any, cell: dict, config: dict, target_image: torch.Tensor, scene_id: int) -> Trained:
        """The backdoored model, trained once per (model, attack, data, seed) and persisted."""
        data, seed = cell["data"], int(cell["seed"])
        key = {"diffusion_backdoor": cell["model"], "attack": config, "data": data, "seed": seed,
               "target_scene": scene_id}

        def build() -> Trained:
            from ...data.shapes import ShapesWorld

            clean = ctx.load_model(cell["model"])
            size = int(data.get("image_size") or clean.image_size)
            world = ShapesWorld(size, seed=int(data.get("seed", 0)))
            images = world.batch(data.get("split", "train"), data.get("start") or 0, int(data.get("n") or 8192))
            attack, _ = build_method(self.attack_kinds, config)
            result = attack(clean, images.pixels(), target_image, generator=derive_seed(seed, "diffusion_backdoor"))
            info = {"trigger": result.trigger.to_dict(), "sampler": result.sampler, "seconds": float(result.seconds),
                    "n_poisoned": int(result.record.n_poisoned), "n_images": int(result.record.n_images),
                    "final_loss": float(result.log["loss"][-1]) if len(result.log["loss"]) else None}
            return Trained(result.model.eval(), info)

        return ctx.trained(key, build, base=cell["model"])

    @staticmethod
    def write_gallery(folder: Any, cell: dict, report: Any, target: torch.Tensor, title: str,
                      sampler: str) -> list[dict]:
        """``samples.png`` (target; triggered and clean samples of both models) and the report's numbers as JSON."""
        from ...report.gallery import sample_gallery

        rows = [("triggered", report.samples.triggered), ("clean", report.samples.clean)]
        if report.control_samples is not None:
            rows += [("clean model,\ntriggered", report.control_samples.triggered),
                     ("clean model,\nclean", report.control_samples.clean)]
        png = folder / "samples.png"
        buf = io.BytesIO()
        sample_gallery(rows, reference=("target", target), title=f"{title}, {sampler} sampler").save(buf, format="PNG")
        png.write_bytes(buf.getvalue())
        summary = folder / "report.json"
        summary.write_text(json.dumps({"values": report.values(), "mse_bound": MSE_BOUND,
                                       "threshold": report.threshold, "sampler": sampler}, sort_keys=True) + "\n")
        return [artifact_entry("samples_png", png), artifact_entry("report_json", summary)]


__all__ = ["DEFAULT_TARGET", "DiffusionBackdoorBlock", "DiffusionBackdoorTask", "noise_hit_rate", "noise_pattern",
           "steps_for", "target_scene"]
