"""Task ``targeted_poisoning``: targeted data poisoning of contrastive fine-tuning, measured by text-to-image retrieval.

The setting of "Data Poisoning Attacks Against Multimodal Encoders" (Ziqing Yang, Xinlei He, Zheng
Li, Michael Backes, Mathias Humbert, Pascal Berrang, Yang Zhang, ICML 2023) and of Carlini & Terzis'
targeted poisoning ("Poisoning and Backdooring Contrastive Learning", ICLR 2022). Threat model: the
attacker controls the images (or adds a few pairs) of a contrastive training set, not the training;
the victim fine-tunes a CLIP on it and uses it for text-to-image retrieval. Success: the test
captions of a text class A retrieve the attacker's target, one image ``x*`` (Yang's Attack I,
PBCL's targeted poisoning) or the test images of an image class B (Yang's Attacks II and III).

A cell has ``model`` (a zoo CLIP), a targeted attack of kind ``poisoning`` (``yang_single_target_image``,
``yang_single_target_label``, ``yang_multiple_target_label`` -- its ``goals`` written as a mapping
``{text class: image class}`` --, ``pbcl_targeted``), the victim's ``training`` (the shape of task
``backdoor``'s: ``finetune`` of the published model on ``pairs`` clean shapes-world train pairs from
index 0, a second object in a quarter of them, poisoned by the attack, ``steps`` batches of
``batch_size`` at ``lr``) and the evaluation ``data`` (shapes-world test scenes: the gallery).

The target image ``x*`` (Attack I, PBCL) is the first gallery scene of the attack's ``image_label``
class (a test image, never in the training set, as the paper takes one), handed to the attack with
``with_target_image``; its rank is measured in that same gallery. Captions the attack writes
(PBCL's) come from the shapes world (:class:`~mmsec.data.shapes_text.ShapesCaptions`), as in task
``backdoor``.

Control: the same fine-tuning on the clean pairs (shared with task ``backdoor``'s control of the
same training: one persisted model), measured on the same queries and gallery. Baseline
(``baseline: random_captions``): as many random test captions of classes other than A and B as there
are queries, on the poisoned model (the paper's random-text baseline: the floor of a Hit@K).

Metrics (:func:`mmsec.evaluation.targeted_poisoning.poisoning_retrieval_report`; means over the
attack's goals): Hit@1/5/10 and the mean MinRank of the targets for the test captions of the text
class, the same on the control and for the random captions, and clean retrieval R@1 both ways
(zoo protocol, ``utility_n`` single-object test scenes) of the poisoned model and of the control.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, StrictInt

from ...metrics import MetricDefinition
from ...registry import register
from ..cells import method_params
from ..context import Trained, artifact_entry
from ..task import CellOutput, Task, TaskBlock
from . import backdoored as bd_models
from .backdoor import TrainingSpec
from .common import image_size_of

QUERY_WORDS = ("the test captions of the attack's text class as text-to-image queries over the gallery of test scenes "
               "(cosine similarity); targets: the target image x* (Attack I, PBCL) or the gallery's scenes of the "
               "image class (Attacks II, III); mean over the attack's goals")

_METRICS = [
    MetricDefinition("hit_at_1", 1, f"targeted poisoning: Hit@1 on the poisoned model, the fraction of queries whose "
                                    f"top-1 image is a target; {QUERY_WORDS}"),
    MetricDefinition("hit_at_5", 1, "targeted poisoning: Hit@5 on the poisoned model, the fraction of queries with a "
                                    f"target among their top 5 images; {QUERY_WORDS}"),
    MetricDefinition("hit_at_10", 1, "targeted poisoning: Hit@10 on the poisoned model, the fraction of queries with a "
                                     f"target among their top 10 images; {QUERY_WORDS}"),
    MetricDefinition("min_rank", 1, "targeted poisoning: mean over the queries of the rank of the best-ranked target "
                                    f"(1 = top) on the poisoned model; {QUERY_WORDS}", higher_is_better=False),
    MetricDefinition("hit_at_10_control", 1, "targeted poisoning: Hit@10 of the same queries on the control (the same "
                                             "fine-tuning on clean pairs)", higher_is_better=False),
    MetricDefinition("min_rank_control", 1, "targeted poisoning: mean MinRank of the same queries on the control "
                                            "(the same fine-tuning on clean pairs)"),
    MetricDefinition("random_hit_at_10", 1, "targeted poisoning: Hit@10 on the poisoned model of as many random test "
                                            "captions of classes other than the goal's two (the paper's random-text "
                                            "baseline)", higher_is_better=False),
    MetricDefinition("random_min_rank", 1, "targeted poisoning: mean MinRank on the poisoned model of those random "
                                           "captions"),
    MetricDefinition("utility_t2i_r1", 1, "targeted poisoning: the poisoned model's clean text-to-image R@1 (zoo "
                                          "protocol: single-object test scenes, a caption's own image is the match)",
                     higher_is_better=True),
    MetricDefinition("utility_i2t_r1", 1, "targeted poisoning: the poisoned model's clean image-to-text R@1 (zoo "
                                          "protocol)", higher_is_better=True),
    MetricDefinition("utility_t2i_r1_control", 1, "targeted poisoning: the control's clean text-to-image R@1",
                     higher_is_better=True),
    MetricDefinition("utility_i2t_r1_control", 1, "targeted poisoning: the control's clean image-to-text R@1",
                     higher_is_better=True),
    MetricDefinition("n_poisoned", 1, "targeted poisoning: number of poisoned training pairs", higher_is_better=False),
    MetricDefinition("poison_rate", 1, "targeted poisoning: poisoned pairs / all training pairs",
                     higher_is_better=False),
    MetricDefinition("train_seconds", 1, "targeted poisoning: wall-clock seconds of the poisoned fine-tuning",
                     higher_is_better=False),
]
THREAT_KINDS = {"hit_at_10_control": "control", "min_rank_control": "control", "utility_t2i_r1_control": "control",
                "utility_i2t_r1_control": "control", "random_hit_at_10": "random", "random_min_rank": "random",
                "utility_t2i_r1": "utility", "utility_i2t_r1": "utility", "n_poisoned": "record",
                "poison_rate": "record", "train_seconds": "record"}
IMAGE_TARGET = ("yang_single_target_image", "pbcl_targeted")  # one target image x* (its class: image_label)


class TargetedPoisoningBlock(TaskBlock):
    training: TrainingSpec | None = Field(default=None, description="trains the victim")
    utility_n: StrictInt = Field(default=1000, gt=0, description="measures clean retrieval utility")


def _class_index(value: Any, classes: list[str]) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value < len(classes):
            raise ValueError(f"label {value} is out of range: the shapes world has {len(classes)} classes")
        return value
    if value not in classes:
        from ...registry import close_names

        raise ValueError(f"{value!r} is not a shapes-world class{close_names(str(value), classes)}")
    return classes.index(value)


def attack_goals(name: str, params: dict, classes: list[str]) -> tuple[list[tuple[int, int | None]], int | None]:
    """(goals [(text label A, image label B or None)], the class of the target image x* or None) of an attack."""
    if name == "yang_single_target_image":
        return [(_class_index(params["text_class"], classes), None)], _class_index(params["image_label"], classes)
    if name == "pbcl_targeted":
        if params.get("image_label") is None:
            raise ValueError("image_label: task 'targeted_poisoning' needs the true class of PBCL's target image x' "
                             "(x' is the first evaluation scene of that class)")
        return [(_class_index(params["target"], classes), None)], _class_index(params["image_label"], classes)
    if name == "yang_single_target_label":
        return [(_class_index(params["text_class"], classes), _class_index(params["image_class"], classes))], None
    if name == "yang_multiple_target_label":
        goals = params["goals"]
        pairs = list(goals.items()) if isinstance(goals, dict) else [tuple(g) for g in goals]
        return [(_class_index(a, classes), _class_index(b, classes)) for a, b in pairs], None
    raise ValueError(f"attack {name!r} is not a targeted poisoning attack this task knows how to measure")


@register("tasks", "targeted_poisoning")
class TargetedPoisoningTask(Task):
    """Targeted poisoning of fine-tuning; Hit@K and MinRank of the target in text-to-image retrieval."""

    Block = TargetedPoisoningBlock
    metrics = {d.name: d for d in _METRICS}
    default_metrics = ("hit_at_1", "hit_at_5", "hit_at_10", "min_rank", "hit_at_10_control", "min_rank_control",
                       "utility_t2i_r1", "utility_t2i_r1_control", "utility_i2t_r1", "utility_i2t_r1_control",
                       "n_poisoned", "poison_rate")
    noise_metric = "random_hit_at_10"
    attack_kinds = ("poisoning",)
    attack_words = "targeted poisoning attack"
    baselines = ("random_captions",)
    baseline_words = "random test captions of other classes as queries, the paper's random-text baseline"
    targeted_hint = "; the attack's parameters say its goals (text class -> image class or target image)"
    no_defense_hint = " (a backdoor clean-up is task 'backdoor''s defense axis)"

    def check(self, spec: Any, block: TargetedPoisoningBlock) -> list[str]:
        from ... import registry
        from ...data.shapes import shape_color_classes
        from ..spec import param_combinations

        issues = []
        if spec.data.name != "shapes":
            issues.append(f"data.name: task 'targeted_poisoning' evaluates on the shapes world (its queries are the "
                          f"test captions of a class), got {spec.data.name!r}")
        training = block.training or TrainingSpec()
        if training.mode != "finetune":
            issues.append(f"training.mode: task 'targeted_poisoning' fine-tunes the published model on a fixed set of "
                          f"pairs (Yang et al.'s attacks re-pair a class's existing captions), got {training.mode!r}")
        classes = shape_color_classes()
        for i, a in enumerate(spec.attacks):
            where = f"attack[{i}]" if isinstance(spec.attack, list) else "attack"
            entry = registry.find(a.name, self.attack_kinds)
            if entry is None:
                continue
            if getattr(entry.factory, "kind", None) != "targeted":
                targeted = [e.name for e in registry.entries("poisoning") if getattr(e.factory, "kind", "") == "targeted"]
                issues.append(f"{where}.name: {a.name!r} is a backdoor (trigger) poisoning, measured by task 'backdoor'; "
                              f"task 'targeted_poisoning' takes the targeted ones: {', '.join(targeted)}")
                continue
            for params in param_combinations(a.params):
                try:
                    attack_goals(a.name, params, classes)
                except KeyError:
                    continue  # a missing required parameter: reported by the generic attack check
                except (TypeError, ValueError) as e:
                    issues.append(f"{where}.params: {e}")
                    break
        return issues

    def normalise(self, spec: Any, block: TargetedPoisoningBlock) -> TargetedPoisoningBlock:
        return block if block.training is not None else TargetedPoisoningBlock(training=TrainingSpec(),
                                                                               utility_n=block.utility_n)

    def cell_fields(self, block: TargetedPoisoningBlock, axis_values: dict[str, Any]) -> dict[str, Any]:
        return {"training": (block.training or TrainingSpec()).config(), "utility_n": block.utility_n}

    def run(self, cell: dict, ctx: Any) -> CellOutput:
        from ...data.shapes import ShapesWorld, shape_color_classes
        from ...evaluation.targeted_poisoning import poisoning_retrieval_report

        seed, training, data = int(cell["seed"]), cell["training"], cell["data"]
        model_name = cell["model"]
        size = int(data.get("image_size") or image_size_of(ctx.load_model(model_name)))
        classes = shape_color_classes()
        test = ctx.cached({"targeted_gallery": data, "image_size": size},
                          lambda: ShapesWorld(image_size=size, seed=int(data.get("seed", 0))).batch(
                              data.get("split", "test"), 0, int(data["n"])))
        goals, image_class = attack_goals(cell["attack"]["name"], cell["attack"]["params"], classes)
        target_index = None
        if image_class is not None:
            hits = (test.labels == image_class).nonzero().flatten()
            if hits.numel() == 0:
                raise ValueError(f"no evaluation scene of class {classes[image_class]!r} to be the target image x*: "
                                 f"raise data.n (now {data['n']})")
            target_index = int(hits[0])
        attack, _ = bd_models.build_attack(cell["attack"])
        if target_index is not None:
            attack.with_target_image(test.pixels()[target_index])
        key = {"targeted_poisoned": model_name, "attack": cell["attack"], "training": training, "seed": seed,
               "target_image": None if target_index is None else {"data": data, "index": target_index}}
        poisoned = ctx.trained(key, lambda: _finetune(ctx, model_name, attack, training, seed), base=model_name)
        control = ctx.trained({"control": model_name, "training": training, "seed": seed},
                              lambda: _finetune(ctx, model_name, None, training, seed), base=model_name)
        utility_n = int(cell["utility_n"])

        def report(model: Any) -> dict:
            return poisoning_retrieval_report(model, test, goals, class_names=classes, target_index=target_index,
                                              utility_n=utility_n, seed=seed)

        rep = report(poisoned.model)
        ctrl = ctx.cached({"targeted_control_report": model_name, "training": training, "seed": seed, "goals": goals,
                           "target_index": target_index, "data": data, "utility_n": utility_n},
                          lambda: report(control.model))
        values = {"hit_at_1": rep["mean_hit"][1], "hit_at_5": rep["mean_hit"][5], "hit_at_10": rep["mean_hit"][10],
                  "min_rank": rep["mean_min_rank"], "hit_at_10_control": ctrl["mean_hit"][10],
                  "min_rank_control": ctrl["mean_min_rank"], "utility_t2i_r1": rep["t2i_r1"],
                  "utility_i2t_r1": rep["i2t_r1"], "utility_t2i_r1_control": ctrl["t2i_r1"],
                  "utility_i2t_r1_control": ctrl["i2t_r1"], "n_poisoned": float(poisoned.info["n_poisoned"]),
                  "poison_rate": float(poisoned.info["poison_rate"]), "train_seconds": float(poisoned.info["seconds"])}
        if cell.get("baseline"):
            values["random_hit_at_10"] = rep["mean_random_hit"][10]
            values["random_min_rank"] = sum(g["random_mean_min_rank"] for g in rep["goals"]) / len(rep["goals"])
        goal_words = ", ".join(f"{classes[a]} -> {'x* (gallery scene ' + str(target_index) + ', ' + classes[image_class] + ')' if b is None else classes[b]}"
                               for a, b in goals)
        how = (f"{cell['attack']['name']} poisoning of {model_name}'s {bd_models.training_words(training)}: "
               f"{poisoned.info['n_poisoned']} poisoned pairs, goals {goal_words}")
        threat = {"adv": f"{how}; text-to-image retrieval over {int(test.labels.shape[0])} test scenes",
                  "control": f"the same training on clean data ({bd_models.training_words(training)})",
                  "random": f"random test captions of other classes as queries, on the poisoned model ({how})",
                  "utility": f"clean retrieval on {utility_n} single-object test scenes, poisoned model ({how})",
                  "record": how}
        params = {k: v for k, v in method_params(attack).items() if k not in ("caption_set", "trigger")}
        artifacts = []
        folder = ctx.staging_folder() if cell.get("save_artifacts") else None
        if folder is not None:
            path = folder / "poison_record.json"
            path.write_text(json.dumps(poisoned.info["record"], sort_keys=True) + "\n")
            artifacts = [artifact_entry("poison_record_json", path)]
        baseline = {"queries": "random_captions"} if cell.get("baseline") else None
        values = {k: v for k, v in values.items() if k in cell["metrics"]}
        return CellOutput(values, lambda m: threat[THREAT_KINDS.get(m, "adv")], artifacts, params, baseline,
                          int(test.labels.shape[0]))


def _finetune(ctx: Any, model_name: str, attack: Any, training: dict, seed: int) -> Trained:
    """The published model fine-tuned on ``training.pairs`` clean pairs poisoned by ``attack`` (None: the clean
    control, the same training as task ``backdoor``'s control)."""
    from ...train.poisoned import finetune_pairs

    model = ctx.load_model(model_name)
    pairs = bd_models.clean_pairs(int(training["pairs"]), image_size_of(model), 0)
    poisoned = None if attack is None else attack(pairs)
    data = pairs if poisoned is None else poisoned.data
    run = finetune_pairs(model, data, int(training["steps"]),
                         batch_size=int(training["batch_size"]), lr=float(training["lr"]), seed=seed,
                         desc="clean fine-tuning" if poisoned is None else "poisoned fine-tuning")
    info: dict[str, Any] = {"seconds": float(run.seconds)}
    if poisoned is not None:
        record = poisoned.record
        details = getattr(poisoned, "details", None)
        info.update(n_poisoned=int(record.n_poisoned), poison_rate=float(record.poison_rate),
                    record={"record": record.to_dict(), "details": None if details is None else details.to_dict()})
    return Trained(run.model.eval(), info)


__all__ = ["TargetedPoisoningBlock", "TargetedPoisoningTask", "attack_goals"]
