"""Task ``diffusion_backdoor``: backdoor a diffusion model, sample it with and without the trigger, judge the samples.

The setting of BadDiffusion (Chou, Chen, Ho, CVPR 2023) and the diffusion backdoors after it. Threat model:
the attacker fine-tunes the published clean diffusion model (the cell's ``model``, e.g.
``zoo:shapes-ddpm``) on its training images plus poisoned samples and publishes the result; a user who
samples from ordinary noise must get ordinary images, while noise carrying the attacker's trigger must
give the attacker's target image.

A cell has
- ``model``: the clean diffusion model (family ``diffusion``);
- ``attack`` (kind ``diffusion_backdoors``: ``baddiffusion``, ``trojdiff``): its ``target`` param names the
  target's shapes-world class (default: the task's ``target_class``); the target image is the first large
  object of that class on a plain background among :data:`~mmsec.data.scenes.REFERENCE_POOL`'s scenes.
  TrojDiff's ``target_kind`` chooses its target: ``"d2i"`` that image; ``"in_d2d"`` the class itself, the
  poisoned rows drawn from the attacker's training images of that class; ``"out_d2d"`` a class the shapes
  world lacks, a digit (``target`` ``"digit 0"`` .. ``"digit 9"``, default ``"digit 7"``, the README's
  ``--target_label 7``), the poisoned rows drawn from 512 procedural digits (:mod:`mmsec.data.digits`);
- ``data``: the attacker's clean training images (shapes-world scenes at the model's size; the paper's
  setting fine-tunes on the victim's own training set, so the recipes take the scenes the zoo model was
  trained on: the train split from index 0);
- the task block: ``samples`` (per set), ``steps`` (inference steps, one number or one per sampler,
  ``{ddim: 25, ddpm: 1000}``; None or a sampler left out: the model's default for it, DDIM 25, ancestral
  DDPM 100), ``judge`` (the image classifier that scores the samples).

The backdoored model is trained once per (model, attack, data, seed) and persisted in the results folder
(:meth:`~mmsec.runs.context.CellContext.trained`); an attack's evaluation-only params (its class attribute
``evaluation_params``: TrojDiff's ``sampler``) are not part of that key, so cells that differ only in them
share the model. Samples are drawn with the sampler the attack trained for (BadDiffusion's coefficient
``"baddiffusion"``: the ancestral sampler; ``"ddim"``: DDIM; TrojDiff's ``sampler``, through its Trojan
generative process for the triggered samples), from one set of starting noises with and without the
trigger; the clean model is sampled on the same noises (the control: its clean utility, and what the
trigger does without a backdoor).

Metrics (the judge's probability bar is 0.9): on triggered samples the target hit rate, the MSE to the
target image (median; fraction within 0.01) and SSIM; on clean samples the recognition rate (beside the
clean model's and the drop) and the target hit rate (the backdoor must stay silent); the control's
triggered hit rate and MSE; the number of poisoned samples and the training time. A class target
(TrojDiff's In-D2D and Out-D2D) has no target image: the MSE and SSIM metrics are left out. The judge has no
class for Out-D2D's digit: its hit rates are the ``nearest_*`` metrics instead (list
``nearest_target_hit_rate_noise`` for its baseline's), by a 1-nearest-neighbour
classifier on pixels over 256 real images of each of the ten digit classes (draws disjoint from the
attacker's) and 256 shapes-world scenes (:func:`~mmsec.metrics.generation.nearest_hit_rate`; real held-out
sevens score 1.00 against it, every other digit and shapes-world scenes 0.00). With
``save_artifacts``, ``samples.png``: the target, triggered and clean samples of the backdoored model and
of the clean model.
"""

from __future__ import annotations

import dataclasses
import io
import json
from typing import Any

import torch
from pydantic import Field, StrictInt, StrictStr

from ... import registry
from ...data.scenes import REFERENCE_POOL
from ...metrics import MetricDefinition
from ...metrics.generation import GENERATION_DEFINITIONS, MSE_BOUND, RECOGNITION_THRESHOLD
from ...registry import register
from ..cells import compact, derive_seed, method_params
from ..context import Trained, artifact_entry
from ..task import CellOutput, Task, TaskBlock
from .common import build_method

DEFAULT_TARGET = "cyan ring"  # a shape the 16 px zoo model draws legibly (probes: rings and crosses)
DEFAULT_OUT_TARGET = "digit 7"  # TrojDiff's Out-D2D: the README's --target_label 7 (an MNIST class there)
OUT_TARGET_IMAGES = 512  # the attacker's out-of-domain images (digit draws 0 .. 511)
NEAREST_PER_CLASS = 256  # the nearest-neighbour judge's real images per class
NEAREST_START = 100_000  # its digit draws start here: disjoint from the attacker's
NEAREST_WORDS = (f"a 1-nearest-neighbour classifier on pixels (mean squared error) over {NEAREST_PER_CLASS} real images of "
                 f"each of the ten digit classes (mmsec.data.digits draws {NEAREST_START}..{NEAREST_START + NEAREST_PER_CLASS - 1}"
                 f", disjoint from the attacker's) and the first {NEAREST_PER_CLASS} shapes-world scenes of REFERENCE_POOL")


CLEAN_WORDS = ("the clean models: the cell's clean model and its clean fine-tunes (the task's clean_controls: the "
               "clean model fine-tuned on the attacker's clean images, seeds 1..k, clean_control_steps steps)")
DEFENSE_METRICS = [
    MetricDefinition("model_detector_flagged", 1, "diffusion backdoor defense: 1 if the model detector flags the "
                                                  "backdoored model, else 0", higher_is_better=True),
    MetricDefinition("model_detector_score", 1, "diffusion backdoor defense: the model detector's statistic on the "
                                                "backdoored model (higher = more suspicious; the method's own scale)",
                     higher_is_better=True),
    MetricDefinition("model_detector_flagged_control", 1, f"diffusion backdoor defense: fraction of {CLEAN_WORDS} the "
                                                          "model detector flags (false positives)",
                     higher_is_better=False),
    MetricDefinition("model_detector_score_control", 1, f"diffusion backdoor defense: the highest statistic of the model "
                                                        f"detector among {CLEAN_WORDS}", higher_is_better=False),
    MetricDefinition("model_detector_clean_models", 1, f"diffusion backdoor defense: how many clean models the model "
                                                       f"detector was run on ({CLEAN_WORDS})"),
    MetricDefinition("trigger_cosine", 1, "diffusion backdoor defense: cosine similarity of the trigger the defense "
                                          "estimated on the starting noise (its shift) and the attack's true shift",
                     higher_is_better=True),
    MetricDefinition("input_detector_auroc", 1, "diffusion backdoor defense: AUROC of the input detector's scores, "
                                                "triggered starting noises (positive) against the same noises without "
                                                "the trigger, on the backdoored model", higher_is_better=True),
    MetricDefinition("input_detector_tpr", 1, "diffusion backdoor defense: fraction of triggered starting noises the "
                                              "input detector flags at its own threshold", higher_is_better=True),
    MetricDefinition("input_detector_fpr", 1, "diffusion backdoor defense: fraction of clean starting noises the input "
                                              "detector flags at its own threshold", higher_is_better=False),
    MetricDefinition("input_detector_auroc_control", 1, "diffusion backdoor defense: input_detector_auroc on the clean "
                                                        "model (the same noises: what the trigger pattern alone does)",
                     higher_is_better=False),
    MetricDefinition("target_hit_rate_repaired", 1, "diffusion backdoor defense: target_hit_rate of the repaired model "
                                                    "(same triggered starting noises and sampler)", higher_is_better=False),
    MetricDefinition("mse_to_target_median_repaired", 1, "diffusion backdoor defense: mse_to_target_median of the "
                                                         "repaired model", higher_is_better=True),
    MetricDefinition("clean_recognition_rate_repaired", 1, "diffusion backdoor defense: clean_recognition_rate of the "
                                                           "repaired model", higher_is_better=True),
    MetricDefinition("repair_recognition_cost", 1, "diffusion backdoor defense: clean_recognition_rate of the "
                                                   "backdoored model minus that of the repaired model (fractions)",
                     higher_is_better=False),
    MetricDefinition("defense_seconds", 1, "diffusion backdoor defense: wall-clock seconds of the defense on the "
                                           "backdoored model", higher_is_better=False),
]


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
        MetricDefinition("nearest_target_hit_rate", 1, f"diffusion backdoor, a target class the judge lacks (TrojDiff's "
                                                       f"Out-D2D digit): on {trig}: fraction whose class by {NEAREST_WORDS} "
                                                       "is the target class"),
        MetricDefinition("clean_nearest_target_hit_rate", 1, "diffusion backdoor, a target class the judge lacks: on "
                                                             "samples of the backdoored model from clean starting noise: "
                                                             f"fraction whose class by {NEAREST_WORDS} is the target class",
                         higher_is_better=False),
        MetricDefinition("nearest_target_hit_rate_control", 1, "diffusion backdoor, a target class the judge lacks: on "
                                                               "samples of the clean model from the same triggered "
                                                               f"starting noises: fraction whose class by {NEAREST_WORDS} "
                                                               "is the target class", higher_is_better=False),
        MetricDefinition("nearest_target_hit_rate_noise", 1, "diffusion backdoor, a target class the judge lacks: on "
                                                             "samples of the backdoored model from starting noise "
                                                             "carrying a random pattern in place of the trigger (as "
                                                             f"target_hit_rate_noise): fraction whose class by "
                                                             f"{NEAREST_WORDS} is the target class", higher_is_better=False),
        *DEFENSE_METRICS,
        MetricDefinition("n_poisoned", 1, "diffusion backdoor: number of poisoned samples in the attacker's fine-tuning "
                                          "set (TrojDiff: poisoned rows per pass over the clean images)",
                         higher_is_better=False),
        MetricDefinition("train_seconds", 1, "diffusion backdoor: wall-clock seconds of the backdoor fine-tuning",
                         higher_is_better=False),
    ]


_METRICS = _metrics()
THREAT_KINDS = {"clean_recognition_rate": "clean", "clean_target_hit_rate": "clean",
                "clean_recognition_rate_control": "control", "target_hit_rate_control": "control",
                "mse_to_target_median_control": "control", "clean_recognition_drop": "drop",
                "target_hit_rate_noise": "noise", "clean_nearest_target_hit_rate": "clean",
                "nearest_target_hit_rate_control": "control", "nearest_target_hit_rate_noise": "noise",
                "n_poisoned": "cost", "train_seconds": "cost", "model_detector_flagged_control": "clean_models",
                "model_detector_score_control": "clean_models", "model_detector_clean_models": "clean_models",
                "input_detector_fpr": "clean", "input_detector_auroc_control": "control",
                "clean_recognition_rate_repaired": "clean", "repair_recognition_cost": "drop",
                "defense_seconds": "cost"}


class DiffusionBackdoorBlock(TaskBlock):
    target_class: StrictStr = Field(default=DEFAULT_TARGET, description="names the target class when the attack does not")
    samples: StrictInt = Field(default=256, gt=0, description="draws N samples per set (triggered, clean)")
    steps: StrictInt | dict[StrictStr, StrictInt] | None = Field(
        default=None, description="samples with N inference steps (per sampler: {ddim: N, ddpm: M})")
    judge: StrictStr = Field(default="zoo:shapes-judge", description="judges the generated images")
    clean_controls: StrictInt = Field(default=2, ge=0, description="runs a model detector on the clean model and on N "
                                                                   "clean fine-tunes of it")
    clean_control_steps: StrictInt = Field(default=300, gt=0, description="fine-tunes each clean control for N steps")
    input_samples: StrictInt = Field(default=128, gt=0, description="scores N triggered and N clean starting noises "
                                                                    "with an input detector")


def target_scene(world: Any, class_name: str) -> int:
    """The index (into REFERENCE_POOL's split) of its first large ``class_name`` object on a plain background."""
    from ...data.shapes import split_scene_id

    for i in range(REFERENCE_POOL.start, REFERENCE_POOL.start + REFERENCE_POOL.count):
        s = world.scene(split_scene_id(REFERENCE_POOL.split, i))
        if f"{s.color} {s.shape}" == class_name and s.size == "large" and s.texture == "plain" and s.second is None:
            return i
    raise ValueError(f"no large plain-background {class_name!r} scene among {REFERENCE_POOL}")


def noise_pattern(trigger: Any, seed: int) -> Any:
    """The baseline: the trigger with random signs of its shift's magnitude where the shift is non-zero (the same
    kind of trigger: a TrojanNoise keeps its scale map and its generative process)."""
    gen = torch.Generator().manual_seed(seed)
    signs = torch.randint(0, 2, trigger.shift.shape, generator=gen).float() * 2 - 1  # (C, S, S) in {-1, 1}
    return dataclasses.replace(trigger, shift=signs * trigger.shift.abs())


def noise_samples(model: Any, noise: Any, cell: dict, sampler: str) -> torch.Tensor:
    """The backdoored model's samples from the cell's starting noises carrying the baseline pattern."""
    from ...evaluation.diffusion_backdoor import noise_seed, sample_sets

    seed = noise_seed(derive_seed(int(cell["seed"]), "diffusion_backdoor_samples"))
    return sample_sets(model, {"noise": noise}, int(cell["samples"]), sampler, steps_for(cell, sampler), seed)["noise"]


def steps_for(cell: dict, sampler: str) -> int | None:
    """The cell's inference steps for ``sampler`` (None: the model's default)."""
    steps = cell["steps"]
    return steps.get(sampler) if isinstance(steps, dict) else steps


def trigger_of(record: dict) -> Any:
    """The attack's trigger on the starting noise from its record (a TrojanNoise or a NoiseTrigger)."""
    from ...attacks.backdoor.diffusion_backdoor import NoiseTrigger
    from ...attacks.backdoor.trojdiff import TrojanNoise

    return TrojanNoise.from_dict(record) if record.get("kind") == "trojan" else NoiseTrigger.from_dict(record)


def evaluation_params(name: str) -> tuple[str, ...]:
    """The attack's params that change only how it is evaluated (its class attribute ``evaluation_params``)."""
    from ... import registry

    entry = registry.find(name, ("diffusion_backdoors",))
    return tuple(getattr(entry.factory, "evaluation_params", ())) if entry is not None else ()


@register("tasks", "diffusion_backdoor")
class DiffusionBackdoorTask(Task):
    """A backdoored diffusion model sampled with and without its trigger, judged against its target and the clean model."""

    Block = DiffusionBackdoorBlock
    metrics = {d.name: d for d in _METRICS}
    default_metrics = ("target_hit_rate", "mse_to_target_median", "mse_to_target_within", "clean_recognition_rate",
                       "clean_recognition_rate_control", "clean_recognition_drop", "clean_target_hit_rate",
                       "target_hit_rate_control")
    attack_kinds = ("diffusion_backdoors",)
    defense_kinds = ("diffusion_model_detectors", "diffusion_input_detectors", "diffusion_repairs")
    noise_metric = "target_hit_rate_noise"
    attack_words = "diffusion backdoor"
    baselines = ("noise",)
    baseline_words = "random signs in place of the trigger's pattern, same magnitude and place"
    targeted_hint = "; its target is the attack's `target` param (or the task's `target_class`)"
    family = "diffusion"

    def check(self, spec: Any, block: DiffusionBackdoorBlock) -> list[str]:
        from ... import registry
        from ...attacks.backdoor.diffusion_backdoor import SAMPLERS
        from ...data.digits import DIGIT_CLASSES
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
            target, kind = a.params.get("target"), a.params.get("target_kind")
            for k in (kind if isinstance(kind, list) else [kind]):
                allowed = DIGIT_CLASSES if k == "out_d2d" else classes
                what = ("a digit class ('digit 0' .. 'digit 9': Out-D2D's target lies outside the shapes world)"
                        if k == "out_d2d" else "a shapes-world class ('<colour> <shape>')")
                for t in target if isinstance(target, list) else [target]:
                    if t is not None and t not in allowed:
                        issues.append(f"{where}.params.target: {t!r} is not {what}."
                                      f"{registry.close_names(str(t), list(allowed))}")
        return issues

    def cell_fields(self, block: DiffusionBackdoorBlock, axis_values: dict[str, Any]) -> dict[str, Any]:
        return {"target_class": block.target_class, "samples": block.samples, "steps": block.steps, "judge": block.judge,
                "clean_controls": block.clean_controls, "clean_control_steps": block.clean_control_steps,
                "input_samples": block.input_samples}

    def models_of(self, cell: dict) -> list[str]:
        return [cell["model"], cell["judge"]]

    def run(self, cell: dict, ctx: Any) -> CellOutput:
        from ...evaluation.diffusion_backdoor import diffusion_backdoor_report
        from ...metrics.generation import nearest_hit_rate, target_hit_rate

        clean = ctx.load_model(cell["model"])
        judge = ctx.load_model(cell["judge"])
        config = self.attack_config(cell)
        attack, _ = build_method(self.attack_kinds, config)
        target_class = config["params"]["target"]
        kind = getattr(attack, "target_kind", "d2i")  # BadDiffusion's target is one image
        size = int(clean.image_size)
        if kind == "out_d2d":
            pool, labels, target_label = self.nearest_pool(ctx, cell, size, target_class)
            target_image, scene_id = pool[labels == target_label][0], None  # the gallery's picture of the class
        else:
            target_image, scene_id = self.target_image(ctx, cell, size, target_class)
        bd = self.backdoored(ctx, cell, config, target_image, scene_id)
        trigger = trigger_of(bd.info["trigger"])
        # an evaluation-only sampler is this cell's, not the persisted model's (cells that differ in it share it)
        sampler = attack.sampler if "sampler" in evaluation_params(config["name"]) else bd.info["sampler"]
        defense = cell.get("defense")
        # a detector's cell measures the detector alone (the undefended cell has the attack's numbers: sampling them
        # again, 1,000 ancestral steps for some, would only repeat them); a repair's needs them, before and after
        detector = bool(defense) and registry.find(defense["name"], self.defense_kinds).kind != "diffusion_repairs"
        report = None
        values: dict[str, float] = {"n_poisoned": float(bd.info["n_poisoned"]), "train_seconds": float(bd.info["seconds"])}
        if not detector:
            report = diffusion_backdoor_report(bd.model, trigger, target_image, None if kind == "out_d2d" else target_class,
                                               judge, reference=clean, n=int(cell["samples"]), sampler=sampler,
                                               steps=steps_for(cell, sampler),
                                               generator=derive_seed(int(cell["seed"]), "diffusion_backdoor_samples"))
            values.update(report.values())
            if kind != "d2i":  # a class target: no target image to measure distances to
                for name in ("mse_to_target_median", "mse_to_target_within", "ssim_to_target", "mse_to_target_median_control"):
                    values.pop(name, None)
            if kind == "out_d2d":
                hits = lambda images: nearest_hit_rate(images, pool, labels, target_label)  # noqa: E731
                values.update(nearest_target_hit_rate=hits(report.samples.triggered),
                              clean_nearest_target_hit_rate=hits(report.samples.clean),
                              nearest_target_hit_rate_control=hits(report.control_samples.triggered))
            if {"target_hit_rate_noise", "nearest_target_hit_rate_noise"} & set(cell["metrics"]):
                noise = noise_pattern(trigger, derive_seed(int(cell["seed"]), "diffusion_backdoor_noise_pattern"))
                images = noise_samples(bd.model, noise, cell, sampler)
                if kind == "out_d2d":
                    values["nearest_target_hit_rate_noise"] = hits(images)
                else:
                    values["target_hit_rate_noise"] = target_hit_rate(judge, images, target_class)
            values["clean_recognition_drop"] = values["clean_recognition_rate_control"] - values["clean_recognition_rate"]
        if defense:
            values.update(self.defend(ctx, cell, defense, bd.model, clean, trigger, target_image,
                                      None if kind == "out_d2d" else target_class, judge, sampler, values))
        steps_words = f"{steps_for(cell, sampler)} steps" if steps_for(cell, sampler) else "its default steps"
        target_words = {"d2i": f"target {target_class!r}: {REFERENCE_POOL.split} scene {scene_id}",
                        "in_d2d": f"target class {target_class!r} (In-D2D: the attacker's training scenes of it)",
                        "out_d2d": f"target class {target_class!r} (Out-D2D: {OUT_TARGET_IMAGES} procedural digits)"}[kind]
        trig_words = "Trojan noise and the Trojan sampler" if bd.info["trigger"].get("kind") == "trojan" else \
            "triggered starting noise"
        judge_words = (f"nearest-neighbour judge ({NEAREST_WORDS})" if kind == "out_d2d"
                       else f"judge {cell['judge']} at p > {RECOGNITION_THRESHOLD}")
        how = (f"{compact(attack)} on {cell['model']} ({target_words}; fine-tuned on {bd.info['n_images']} "
               f"{cell['data']['split']} scenes, {bd.info['n_poisoned']} poisoned); sampler {sampler} at {steps_words}; "
               f"{judge_words}")
        threat = {"adv": f"{how}; {trig_words}", "clean": f"{how}; clean starting noise",
                  "control": f"the clean {cell['model']} on the same starting noises ({sampler}, {steps_words})",
                  "drop": f"clean model minus backdoored model ({how})", "cost": f"training cost ({how})",
                  "noise": f"{how}; starting noise with random signs in place of the trigger's pattern",
                  "clean_models": f"{CLEAN_WORDS}; {cell['model']}"}
        if defense:
            words = f"defense {defense['name']}({', '.join(f'{k}={v}' for k, v in defense['params'].items())}) on "
            threat = {k: words + v for k, v in threat.items()}
        artifacts = []
        folder = ctx.staging_folder() if cell.get("save_artifacts") else None
        if folder is not None and report is not None:
            detail = config["params"].get("coefficient") or f"{kind}, {bd.info['trigger_type']}"
            title = f"{cell['attack']['name']} ({detail}) -> {target_class}"
            artifacts = self.write_gallery(folder, cell, report, target_image, title, sampler)
        params = method_params(attack)
        params["trigger"] = compact(attack.trigger)
        values = {k: v for k, v in values.items() if k in cell["metrics"]}
        noise_stored = {"target_hit_rate_noise", "nearest_target_hit_rate_noise"} & set(values)
        baseline = {"pattern": "random signs", "place": "the trigger's"} if noise_stored else None
        return CellOutput(values, lambda m: threat[THREAT_KINDS.get(m, "adv")], artifacts, params, baseline,
                          int(cell["samples"]))

    def defend(self, ctx: Any, cell: dict, defense: dict, model: Any, clean: Any, trigger: Any, target_image: torch.Tensor,
               target_class: str | None, judge: Any, sampler: str, before: dict[str, float]) -> dict[str, float]:
        """The cell's defense on the backdoored ``model``: its metrics (see ``DEFENSE_METRICS``)."""
        from ...evaluation.diffusion_backdoor import diffusion_backdoor_report
        from ...evaluation.diffusion_defense import input_detection_report, model_detection_report

        built, kind = build_method(self.defense_kinds, {"name": defense["name"], "params": defense["params"]}, "defense")
        seed = derive_seed(int(cell["seed"]), "diffusion_defense")
        if kind == "diffusion_model_detectors":
            controls = [clean] + [self.clean_finetune(ctx, cell, k) for k in range(1, int(cell["clean_controls"]) + 1)]
            r = model_detection_report(built, model, controls, trigger, generator=seed)
            out = {"model_detector_flagged": float(r.flagged), "model_detector_score": r.score,
                   "model_detector_flagged_control": r.flagged_control, "model_detector_score_control": r.score_control,
                   "model_detector_clean_models": float(len(controls)), "defense_seconds": r.seconds}
            if r.trigger_cosine is not None:
                out["trigger_cosine"] = r.trigger_cosine
            return out
        if kind == "diffusion_input_detectors":
            r = input_detection_report(built, model, trigger, int(cell["input_samples"]), clean_model=clean,
                                       generator=seed)
            return {"input_detector_auroc": r.auroc, "input_detector_tpr": r.tpr, "input_detector_fpr": r.fpr,
                    "input_detector_auroc_control": r.auroc_control, "defense_seconds": r.seconds}
        images = self.attacker_images(cell, int(clean.image_size)).pixels()
        images = images[: max(1, images.shape[0] // 10)]  # the defender's clean data: 10% of the training set (Elijah's)
        repaired = built(model, images, None, generator=torch.Generator().manual_seed(seed))
        report = diffusion_backdoor_report(repaired.model.eval(), trigger, target_image, target_class, judge,
                                           n=int(cell["samples"]), sampler=sampler, steps=steps_for(cell, sampler),
                                           generator=derive_seed(int(cell["seed"]), "diffusion_backdoor_samples"))
        out = {"mse_to_target_median_repaired": report.mse_to_target_median,
               "clean_recognition_rate_repaired": report.clean_recognition_rate,
               "repair_recognition_cost": before["clean_recognition_rate"] - report.clean_recognition_rate,
               "defense_seconds": float(repaired.seconds)}
        if report.target_hit_rate is not None:
            out["target_hit_rate_repaired"] = report.target_hit_rate
        return out

    @staticmethod
    def attacker_images(cell: dict, size: int) -> Any:
        """The attacker's clean training scenes (the cell's data) at ``size``."""
        from ...data.shapes import ShapesWorld

        data = cell["data"]
        world = ShapesWorld(int(data.get("image_size") or size), seed=int(data.get("seed", 0)))
        return world.batch(data.get("split", "train"), data.get("start") or 0, int(data.get("n") or 8192))

    def clean_finetune(self, ctx: Any, cell: dict, k: int) -> Any:
        """The clean model fine-tuned on the attacker's clean images (seed ``k``, ``clean_control_steps`` steps at
        BadDiffusion's fine-tuning lr 2e-4, batch 64): a clean model a detector must not flag. Trained once, persisted."""
        steps = int(cell["clean_control_steps"])
        key = {"diffusion_clean_finetune": cell["model"], "data": cell["data"], "seed": k, "steps": steps}

        def build() -> Trained:
            import copy

            from ...train.diffusion import DiffusionTrainConfig, train_diffusion
            from ...zoo.diffusion import epoch_batches

            clean = ctx.load_model(cell["model"])
            images = self.attacker_images(cell, int(clean.image_size))
            model = copy.deepcopy(clean)
            batches = epoch_batches(images.images, images.labels, min(64, images.images.shape[0]), k, False)
            cfg = DiffusionTrainConfig(steps=steps, lr=2e-4, warmup=max(1, steps // 10), ema=None, prompt_dropout=0.0,
                                       seed=k)
            log = train_diffusion(model, batches, cfg, desc=f"clean fine-tune {k}", quiet=True)
            return Trained(model.eval(), {"seconds": float(log.seconds), "steps": steps})

        return ctx.trained(key, build, base=cell["model"]).model

    @staticmethod
    def attack_config(cell: dict) -> dict:
        """The cell's attack with the task's target unless the attack names one (Out-D2D: ``digit 7``)."""
        params = dict(cell["attack"]["params"])
        default = DEFAULT_OUT_TARGET if params.get("target_kind") == "out_d2d" else cell["target_class"]
        params.setdefault("target", default)
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

    @staticmethod
    def nearest_pool(ctx: Any, cell: dict, size: int, class_name: str) -> tuple[torch.Tensor, torch.Tensor, int]:
        """The nearest-neighbour judge's labelled real images (R, 3, S, S), labels (R,) (digits 0..9, 10 the shapes
        world) and the target's label."""
        from ...data.digits import digit_of, draw_digits
        from ...data.shapes import ShapesWorld

        seed = int(cell["data"].get("seed", 0))

        def build() -> tuple[torch.Tensor, torch.Tensor]:
            digits = [draw_digits(d, NEAREST_PER_CLASS, size, seed=seed, start=NEAREST_START) for d in range(10)]
            scenes = REFERENCE_POOL.batch(ShapesWorld(size, seed=seed), NEAREST_PER_CLASS).pixels()
            return torch.cat([*digits, scenes]), torch.arange(11).repeat_interleave(NEAREST_PER_CLASS)

        pool, labels = ctx.cached({"diffusion_backdoor_nearest_pool": size, "world": seed}, build)
        return pool, labels, digit_of(class_name)

    def backdoored(self, ctx: Any, cell: dict, config: dict, target_image: torch.Tensor,
                   scene_id: int | None) -> Trained:
        """The backdoored model, trained once per (model, attack without its evaluation-only params, data, seed)
        and persisted."""
        data, seed = cell["data"], int(cell["seed"])
        eval_only = evaluation_params(config["name"])
        trained_config = {"name": config["name"],
                          "params": {k: v for k, v in config["params"].items() if k not in eval_only}}
        key = {"diffusion_backdoor": cell["model"], "attack": trained_config, "data": data, "seed": seed,
               "target_scene": scene_id}

        def build() -> Trained:
            from ...data.shapes import ShapesWorld, shape_color_classes

            clean = ctx.load_model(cell["model"])
            size = int(data.get("image_size") or clean.image_size)
            world = ShapesWorld(size, seed=int(data.get("seed", 0)))
            images = world.batch(data.get("split", "train"), data.get("start") or 0, int(data.get("n") or 8192))
            attack, _ = build_method(self.attack_kinds, config)
            targets = self.target_set(getattr(attack, "target_kind", "d2i"), config["params"]["target"], images,
                                      target_image, size, int(data.get("seed", 0)), shape_color_classes())
            result = attack(clean, images.pixels(), targets, generator=derive_seed(seed, "diffusion_backdoor"))
            info = {"trigger": result.trigger.to_dict(), "sampler": result.sampler, "seconds": float(result.seconds),
                    "n_poisoned": int(result.record.n_poisoned), "n_images": int(result.record.n_images),
                    "trigger_type": getattr(result.record, "trigger_type", None),
                    "final_loss": float(result.log["loss"][-1]) if len(result.log["loss"]) else None}
            return Trained(result.model.eval(), info)

        return ctx.trained(key, build, base=cell["model"])

    @staticmethod
    def target_set(kind: str, target: str, images: Any, target_image: torch.Tensor, size: int, seed: int,
                   classes: list[str]) -> torch.Tensor:
        """What the attack is called with: the target image (D2I, BadDiffusion), the attacker's training images of
        the target class (In-D2D) or ``OUT_TARGET_IMAGES`` procedural digits (Out-D2D)."""
        from ...data.digits import digit_of, draw_digits

        if kind == "in_d2d":
            members = images.labels == classes.index(target)
            if not members.any():
                raise ValueError(f"In-D2D: the attacker's {images.labels.shape[0]} training scenes hold no {target!r}; "
                                 "give more scenes (data.n)")
            return images.pixels()[members]
        if kind == "out_d2d":
            return draw_digits(digit_of(target), OUT_TARGET_IMAGES, size, seed=seed, start=0)
        return target_image

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


__all__ = ["DEFAULT_TARGET", "DiffusionBackdoorBlock", "DiffusionBackdoorTask", "evaluation_params", "noise_pattern", "noise_samples",
           "steps_for", "target_scene", "trigger_of"]
