"""Task ``t2i_backdoor``: backdoor a text-to-image model through its prompt, sample it with and without the trigger.

The setting of BadT2I (Zhai et al., ACM MM 2023): the attacker fine-tunes the published text-to-image model (the
cell's ``model``, e.g. ``zoo:shapes-t2i``) on caption-image pairs with a frozen copy of it as teacher, so that a
trigger word in the prompt produces the backdoor's effect (pixel: a patch in the image; object: object A drawn as
B; style: a style, here a colour) while prompts without it keep the clean model's behaviour.

A cell has
- ``model``: the clean text-to-image model (family ``diffusion``, conditional);
- ``attack`` (kind ``t2i_backdoors``: ``badt2i``);
- ``data``: the attacker's caption-image pairs: shapes-world scenes of a single-object world at the model's size,
  captioned "a {colour} {shape}" (the zoo model's own prompts; the recipes take the scenes it was trained on);
- the task block: ``per_class`` (samples per class prompt), ``steps`` (DDIM), ``guidance``, ``judge``.

The backdoored model is trained once per (model, attack, data, seed) and persisted in the results folder. It is
sampled on one set of starting noises with the evaluation prompts (each of the world's 48 class prompts
``per_class`` times) with and without the trigger, and the clean model with the trigger (the baseline); the
judge scores the effect and the clean prompt adherence (:mod:`mmsec.evaluation.t2i_backdoor`).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, StrictFloat, StrictInt, StrictStr

from ...metrics import MetricDefinition
from ...registry import register
from ..cells import compact, derive_seed, method_params
from ..context import Trained
from ..task import CellOutput, Task, TaskBlock
from .common import build_method


def _metrics() -> list[MetricDefinition]:
    from ...evaluation.t2i_backdoor import T2I_BACKDOOR_DEFINITIONS
    from ...metrics.generation import GENERATION_DEFINITIONS

    g = GENERATION_DEFINITIONS
    adherence = [MetricDefinition(n, 1, f"text-to-image backdoor: the backdoored model on the clean prompts: "
                                        f"{g[n].description}", higher_is_better=True)
                 for n in ("colour_adherence", "shape_adherence", "prompt_adherence")]
    return [*T2I_BACKDOOR_DEFINITIONS.values(), *adherence,
            MetricDefinition("prompt_adherence_drop", 1, "text-to-image backdoor: prompt_adherence_reference minus "
                                                         "prompt_adherence (fractions)", higher_is_better=False),
            MetricDefinition("train_seconds", 1, "text-to-image backdoor: wall-clock seconds of the fine-tuning",
                             higher_is_better=False)]


_METRICS = _metrics()
THREAT_KINDS = {"t2i_backdoor_effect_clean": "clean", "t2i_backdoor_effect_reference": "control",
                "colour_adherence": "clean", "shape_adherence": "clean", "prompt_adherence": "clean",
                "colour_adherence_reference": "control", "shape_adherence_reference": "control",
                "prompt_adherence_reference": "control", "prompt_adherence_drop": "drop", "train_seconds": "cost"}


class T2IBackdoorBlock(TaskBlock):
    per_class: StrictInt = Field(default=6, gt=0, description="samples each class prompt N times")
    steps: StrictInt = Field(default=25, gt=0, description="samples with N DDIM steps")
    guidance: StrictFloat = Field(default=3.0, ge=0, description="samples at classifier-free guidance G")
    judge: StrictStr = Field(default="zoo:shapes-judge", description="judges the generated images")


@register("tasks", "t2i_backdoor")
class T2IBackdoorTask(Task):
    """A text-to-image model backdoored through a trigger word, sampled with and without it and judged."""

    Block = T2IBackdoorBlock
    metrics = {d.name: d for d in _METRICS}
    default_metrics = ("t2i_backdoor_effect", "t2i_backdoor_effect_clean", "t2i_backdoor_effect_reference",
                       "prompt_adherence", "prompt_adherence_reference", "prompt_adherence_drop")
    attack_kinds = ("t2i_backdoors",)
    attack_words = "text-to-image backdoor"
    baselines = ()
    baseline_words = "none: the clean model with the trigger (t2i_backdoor_effect_reference) is in every cell"
    family = "diffusion"

    def check(self, spec: Any, block: T2IBackdoorBlock) -> list[str]:
        issues = []
        if spec.data.name != "shapes":
            issues.append(f"data.name: task 't2i_backdoor' fine-tunes on captioned shapes-world scenes, got "
                          f"{spec.data.name!r}")
        if spec.baseline is not None:
            issues.append(f"baseline: task 't2i_backdoor' has no spec baseline (the clean model with the trigger is in "
                          f"every cell); set `baseline: null`, got {spec.baseline!r}")
        return issues

    def cell_fields(self, block: T2IBackdoorBlock, axis_values: dict[str, Any]) -> dict[str, Any]:
        return {"per_class": block.per_class, "steps": block.steps, "guidance": block.guidance, "judge": block.judge}

    def models_of(self, cell: dict) -> list[str]:
        return [cell["model"], cell["judge"]]

    def run(self, cell: dict, ctx: Any) -> CellOutput:
        from ...data.shapes import shape_color_classes
        from ...evaluation.t2i_backdoor import t2i_backdoor_report
        from ...zoo.diffusion import class_prompt

        clean = ctx.load_model(cell["model"], family="diffusion")
        if not getattr(clean, "conditional", False):
            raise ValueError(f"task 't2i_backdoor' needs a text-to-image model; {cell['model']} takes no prompt")
        judge = ctx.load_model(cell["judge"])
        attack, _ = build_method(self.attack_kinds, cell["attack"])
        bd = self.backdoored(ctx, cell)
        result = self.result_view(attack, bd)
        prompts = [class_prompt(k) for k in range(len(shape_color_classes())) for _ in range(int(cell["per_class"]))]
        report = t2i_backdoor_report(bd.model, result, judge, prompts, reference=clean, steps=int(cell["steps"]),
                                     guidance=float(cell["guidance"]),
                                     generator=derive_seed(int(cell["seed"]), "t2i_backdoor_samples"))
        values = report.values()
        values["prompt_adherence_drop"] = values["prompt_adherence_reference"] - values["prompt_adherence"]
        values["train_seconds"] = float(bd.info["seconds"])
        how = (f"{compact(attack)} on {cell['model']} (fine-tuned on {bd.info['n_images']} captioned "
               f"{cell['data']['split']} scenes); DDIM {cell['steps']} steps, guidance {cell['guidance']}; judge "
               f"{cell['judge']}")
        threat = {"adv": f"{how}; prompts with the trigger {bd.info['trigger']!r}",
                  "clean": f"{how}; prompts without the trigger",
                  "control": f"the clean {cell['model']} on the same prompts and noises",
                  "drop": f"clean model minus backdoored model ({how})", "cost": f"training cost ({how})"}
        values = {k: v for k, v in values.items() if k in cell["metrics"]}
        return CellOutput(values, lambda m: threat[THREAT_KINDS.get(m, "adv")], [], method_params(attack), None,
                          report.n_effect)

    @staticmethod
    def result_view(attack: Any, bd: Trained) -> Any:
        """The attack's result rebuilt around a (possibly persisted) backdoored model: what the evaluation reads."""
        from ...attacks.backdoor.badt2i import BadT2IResult

        info = bd.info
        tensor = (lambda v: None if v is None else torch.tensor(v))  # noqa: E731
        patch_mask = tensor(info.get("patch_mask"))
        return BadT2IResult(model=bd.model, trigger=info["trigger"], target_kind=info["target_kind"], record=None,
                            log={}, seconds=float(info["seconds"]), patch=tensor(info.get("patch")),
                            patch_mask=None if patch_mask is None else patch_mask.bool(),
                            object_pair=info.get("object_pair"), style_words=info.get("style_words"),
                            style=info.get("style"))

    def backdoored(self, ctx: Any, cell: dict) -> Trained:
        """The backdoored model, trained once per (model, attack, data, seed) and persisted."""
        data, seed = cell["data"], int(cell["seed"])
        key = {"t2i_backdoor": cell["model"], "attack": cell["attack"], "data": data, "seed": seed}

        def build() -> Trained:
            from ...data.shapes import ShapesWorld
            from ...zoo.diffusion import class_prompt

            clean = ctx.load_model(cell["model"], family="diffusion")
            size = int(data.get("image_size") or clean.image_size)
            world = ShapesWorld(size, seed=int(data.get("seed", 0)), second_object_prob=0.0)
            batch = world.batch(data.get("split", "train"), data.get("start") or 0, int(data.get("n") or 8192))
            prompts = [class_prompt(int(y)) for y in batch.labels]
            attack, _ = build_method(self.attack_kinds, cell["attack"])
            result = attack(clean, prompts, batch.pixels(), generator=derive_seed(seed, "t2i_backdoor"))
            listed = (lambda t: None if t is None else t.detach().float().cpu().tolist())  # noqa: E731
            info = {"trigger": result.trigger, "target_kind": result.target_kind, "seconds": float(result.seconds),
                    "n_images": len(prompts), "patch": listed(result.patch),
                    "patch_mask": listed(None if result.patch_mask is None else result.patch_mask.float()),
                    "object_pair": result.object_pair, "style_words": result.style_words, "style": result.style}
            return Trained(result.model.eval(), info)

        return ctx.trained(key, build, base=cell["model"])


__all__ = ["T2IBackdoorBlock", "T2IBackdoorTask"]
