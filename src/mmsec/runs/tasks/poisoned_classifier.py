"""Task ``poisoned_classifier``: a supervised classifier trained on a label-poisoned set, a sample detector on it.

The setting of PSBD (Li, Chen, Liu, Wang, CVPR 2025) and of BadNets (Gu, Dolan-Gavitt, Garg, arXiv 2017):
the attacker poisons a labelled training set (``victim.rate`` of it, drawn among the non-target images,
stamped with the cell's trigger and relabelled ``victim.target``: all-to-one); the victim trains a
classifier from scratch on it; the defender, holding the trained model, the training images and a few clean
held-out images, must find the poisoned training samples.

A cell has
- ``model``: the architecture template (a ``classifier``-family zoo model, e.g. zoo:shapes-judge): the
  victim is a fresh :class:`~mmsec.models.shapes_classifier.ShapesClassifier` with its image size, classes
  and normalisation, and ``victim.widths`` / ``victim.hidden`` (null: the model's own), trained without
  dropout as the authors' ResNet-18;
- ``attack``: the trigger (kind ``triggers``, e.g. ``patch``: BadNets' checkerboard);
- the task block ``victim`` (this module's :class:`VictimSpec`): the training set's size (scenes of
  :data:`~mmsec.data.scenes.CLASSIFIER_TRAIN`), the poisoning rate and target, the training settings;
  ``validation``: the defender's clean held-out images (scenes of
  :data:`~mmsec.data.scenes.DETECTOR_VALIDATION`; null: 5% of the training set, the paper's budget);
- ``defense``: the sample detector (kind ``detectors``, family ``classifier``: ``psbd``), a grid axis;
- ``data``: the shapes-world test scenes the victim's clean accuracy and ASR are measured on.

The victim is trained once per (model, trigger, victim settings, world, seed) and shared by the cells of
every detector (persisted in the results folder when it has the model's architecture). The baseline is in
every cell: the victim's max-softmax confidence on its own training label ranks the same samples
(``confidence_auroc``): a detector that does not beat it adds nothing over the victim's confidence.
With ``save_artifacts``, ``roc.json`` holds both ROC curves (:func:`~mmsec.runs.tasks.common.write_roc`).
"""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field, StrictFloat, StrictInt, StrictStr

from ...data.scenes import CLASSIFIER_TRAIN, DETECTOR_VALIDATION
from ...metrics import MetricDefinition
from ...registry import register
from ..cells import method_params
from ..context import Trained
from ..task import CellOutput, Task, TaskBlock
from .common import build_method, evaluation_data, write_roc

_METRICS = [
    MetricDefinition("detection_auroc", 1, "poisoned_classifier: AUROC of the detector's scores (higher = flagged "
                                           "as poisoned) ranking the poisoned training samples above the clean ones"),
    MetricDefinition("flagged_poisoned", 1, "poisoned_classifier: fraction of the poisoned training samples the "
                                            "detector's own decision rule flags"),
    MetricDefinition("flagged_clean", 1, "poisoned_classifier: fraction of the clean training samples the "
                                         "detector's own decision rule flags (false positives)",
                     higher_is_better=False),
    MetricDefinition("confidence_auroc", 1, "poisoned_classifier: the baseline: AUROC of the victim's max-softmax "
                                            "confidence on each training image ranking the poisoned training "
                                            "samples above the clean ones (no detector)", higher_is_better=False),
    MetricDefinition("victim_asr", 1, "poisoned_classifier: fraction of the test scenes not of the target class "
                                      "that the victim classifies as the target once the trigger is stamped"),
    MetricDefinition("victim_clean_accuracy", 1, "poisoned_classifier: the victim's top-1 accuracy on the clean test "
                                                 "scenes", higher_is_better=True),
    MetricDefinition("detector_seconds", 1, "poisoned_classifier: wall-clock seconds of the detector",
                     higher_is_better=False),
]
THREAT_KINDS = {"confidence_auroc": "baseline", "victim_asr": "victim", "victim_clean_accuracy": "victim",
                "detector_seconds": "cost"}


class VictimSpec(TaskBlock):
    """The poisoned training set and how the victim trains on it."""

    n_train: StrictInt = Field(default=2000, gt=1, le=CLASSIFIER_TRAIN.count)  # scenes of CLASSIFIER_TRAIN
    rate: StrictFloat = Field(default=0.1, ge=0, lt=1)  # the fraction of the training set poisoned
    target: StrictStr | StrictInt = 0  # class name or label index
    widths: tuple[StrictInt, StrictInt, StrictInt] | None = None  # null: the model's
    hidden: StrictInt | None = Field(default=None, gt=0)  # null: the model's
    steps: StrictInt = Field(default=1500, gt=0)
    lr: StrictFloat = Field(default=5e-3, gt=0)
    warmup: StrictInt = Field(default=10, ge=0)
    batch_size: StrictInt = Field(default=64, gt=1)


class PoisonedClassifierBlock(TaskBlock):
    victim: VictimSpec = Field(default_factory=VictimSpec, description="trains a classifier on a poisoned set")
    validation: StrictInt | None = Field(default=None, gt=1, le=DETECTOR_VALIDATION.count,
                                         description="gives the detector clean held-out images")


@register("tasks", "poisoned_classifier")
class PoisonedClassifierTask(Task):
    """A classifier trained on BadNets-poisoned labelled scenes; a sample detector ranks its training set."""

    Block = PoisonedClassifierBlock
    metrics = {d.name: d for d in _METRICS}
    default_metrics = ("detection_auroc", "flagged_poisoned", "flagged_clean", "confidence_auroc", "victim_asr",
                       "victim_clean_accuracy")
    attack_kinds = ("triggers",)
    attack_words = "trigger"
    defense_kinds = ("detectors",)
    baselines = ()
    baseline_words = "none: the max-softmax baseline (confidence_auroc) is in every cell"
    family = "classifier"

    def check(self, spec: Any, block: PoisonedClassifierBlock) -> list[str]:
        from ... import registry
        from ...attacks.backdoor.poisoning import resolve_target
        from ...data.shapes import shape_color_classes

        issues = []
        if spec.baseline is not None:
            issues.append(f"baseline: task 'poisoned_classifier' has no spec baseline (its max-softmax baseline, "
                          f"confidence_auroc, is in every cell); set `baseline: null`, got {spec.baseline!r}")
        if spec.data.name != "shapes":
            issues.append(f"data.name: task 'poisoned_classifier' trains and tests on the shapes world, got "
                          f"{spec.data.name!r}")
        test_end = spec.data.end(spec.seeds)
        if spec.data.split == DETECTOR_VALIDATION.split and test_end > DETECTOR_VALIDATION.start:
            issues.append(f"data: test scenes up to index {test_end} overlap the detector's validation scenes "
                          f"({DETECTOR_VALIDATION}); keep data.start + data.n (times the seeds with data.resample) "
                          f"<= {DETECTOR_VALIDATION.start}")
        if spec.data.split == CLASSIFIER_TRAIN.split:
            issues.append(f"data.split: {spec.data.split!r} holds the victim's training set; use 'test'")
        try:
            resolve_target(block.victim.target, shape_color_classes())
        except (TypeError, ValueError) as e:
            issues.append(f"victim.target: {e}")
        if not spec.defenses or any(d is None for d in spec.defenses):
            issues.append(f"defense: task 'poisoned_classifier' needs a sample detector of family 'classifier'; "
                          f"registered: {', '.join(e.name for e in registry.entries('detectors') if e.family == 'classifier')}")
        for d in spec.defenses:
            entry = None if d is None else registry.find(d.name, ("detectors",))
            if entry is not None and entry.family != "classifier":
                issues.append(f"defense {d.name!r} scores embeddings (family {entry.family!r}), not a classifier's "
                              "training images; use task 'backdoor'")
        return issues

    def cell_fields(self, block: PoisonedClassifierBlock, axis_values: dict[str, Any]) -> dict[str, Any]:
        victim = block.victim
        validation = block.validation if block.validation is not None else max(2, round(0.05 * victim.n_train))
        return {"victim": victim.model_dump(mode="json"), "validation": validation}

    def run(self, cell: dict, ctx: Any) -> CellOutput:
        from ...data.shapes import ShapesWorld
        from ...evaluation.detection import auroc, roc_points

        base = ctx.load_model(cell["model"], family="classifier")
        victim_cfg, seed = cell["victim"], int(cell["seed"])
        trained = _victim(ctx, cell, base)
        model, mask = trained.model, trained.tensors["poisoned"].bool()
        world = ShapesWorld(base.image_size, seed=int(cell["data"].get("seed", 0)))
        train = ctx.cached({"poisoned_classifier_set": _set_key(cell)}, lambda: _poisoned_set(cell, base))
        validation = DETECTOR_VALIDATION.batch(world, int(cell["validation"])).pixels()
        detector, _ = build_method(("detectors",), {"name": cell["defense"]["name"],
                                                    "params": cell["defense"]["params"]}, "defense")
        result = detector(model, train.pixels, validation)
        flagged = torch.as_tensor(result.decisions, dtype=torch.bool)
        test = evaluation_data(ctx, cell["data"], base.image_size)
        target = train.target
        with torch.no_grad():
            confidence = model.logits(train.pixels).softmax(1).max(1).values
            clean = (model.logits(test.pixels).argmax(1) == test.labels).float().mean().item()
            others = test.labels != target
            trigger = _trigger(cell)
            hits = model.logits(trigger(test.pixels[others], seed)).argmax(1) == target
        values = {"detection_auroc": auroc(result.scores, mask), "flagged_poisoned": flagged[mask].float().mean().item(),
                  "flagged_clean": flagged[~mask].float().mean().item(), "confidence_auroc": auroc(confidence, mask),
                  "victim_asr": hits.float().mean().item(), "victim_clean_accuracy": clean,
                  "detector_seconds": float(result.seconds)}
        how = (f"a {_arch_words(model)} trained from scratch on {victim_cfg['n_train']} labelled shapes scenes, "
               f"{victim_cfg['rate']:g} of them stamped with the {cell['attack']['name']} trigger and relabelled "
               f"{trained.info['target_name']!r} ({victim_cfg['steps']} steps of {victim_cfg['batch_size']} at lr "
               f"{victim_cfg['lr']:g})")
        threat = {"adv": f"{cell['defense']['name']} on the training images of {how}, with {cell['validation']} clean "
                         f"held-out images",
                  "baseline": f"the max-softmax confidence of {how} on its training images",
                  "victim": f"{how}; clean and triggered test scenes",
                  "cost": f"wall-clock cost of {cell['defense']['name']}"}
        params = dict(method_params(_trigger(cell)))
        params["detector"] = {"name": cell["defense"]["name"], **dict(result.params)}
        values = {k: v for k, v in values.items() if k in cell["metrics"]}
        artifacts = []
        folder = ctx.staging_folder() if cell.get("save_artifacts") else None
        if folder is not None:  # the detector's ROC curve beside the victim's confidence (the baseline)
            artifacts = [write_roc(folder, [
                {"metric": "detection_auroc", "label": cell["defense"]["name"], **roc_points(result.scores, mask)},
                {"metric": "confidence_auroc", "label": "max-softmax confidence (baseline)",
                 **roc_points(confidence, mask)}])]
        return CellOutput(values, lambda m: threat[THREAT_KINDS.get(m, "adv")], artifacts, params, None,
                          int(mask.numel()))


def _trigger(cell: dict) -> Any:
    trigger, _ = build_method(("triggers",), {"name": cell["attack"]["name"], "params": cell["attack"]["params"]})
    return trigger


def _set_key(cell: dict) -> dict:
    return {"model": cell["model"], "trigger": cell["attack"], "victim": cell["victim"],
            "world": int(cell["data"].get("seed", 0)), "seed": int(cell["seed"])}


def _poisoned_set(cell: dict, base: Any) -> Any:
    """The label-poisoned training set (the same for every cell of one setting and seed)."""
    from ...attacks.backdoor.poisoning import resolve_target
    from ...data.shapes import ShapesWorld
    from ...train.poisoned_classifier import poison_labelled

    victim = cell["victim"]
    clean = CLASSIFIER_TRAIN.batch(ShapesWorld(base.image_size, seed=int(cell["data"].get("seed", 0))),
                                   int(victim["n_train"]))
    _, target = resolve_target(victim["target"], base.classes)
    return poison_labelled(clean.pixels(), clean.labels, _trigger(cell), int(target), rate=float(victim["rate"]),
                           seed=int(cell["seed"]))


def _arch_words(model: Any) -> str:
    cfg = model.config
    return f"ShapesClassifier (widths {tuple(cfg.widths)}, hidden {cfg.hidden})"


def _victim(ctx: Any, cell: dict, base: Any) -> Trained:
    """The victim trained on the poisoned set: once per setting and seed (persisted with the model's architecture)."""
    from dataclasses import replace

    from ...models.shapes_classifier import ShapesClassifier
    from ...train.classifier import ClassifierTrainConfig
    from ...train.poisoned_classifier import train_on_set

    victim = cell["victim"]
    widths = tuple(victim["widths"]) if victim["widths"] is not None else tuple(base.config.widths)
    hidden = int(victim["hidden"]) if victim["hidden"] is not None else int(base.config.hidden)
    own = widths == tuple(base.config.widths) and hidden == int(base.config.hidden)

    def build() -> Trained:
        data = ctx.cached({"poisoned_classifier_set": _set_key(cell)}, lambda: _poisoned_set(cell, base))
        cfg = replace(base.config, widths=widths, hidden=hidden, dropout=0.0, stage_dropout=0.0)
        torch.manual_seed(int(cell["seed"]))
        model = ShapesClassifier(cfg)
        train_on_set(model, data.pixels, data.labels, ClassifierTrainConfig(
            steps=int(victim["steps"]), lr=float(victim["lr"]), warmup=int(victim["warmup"])),
            batch_size=int(victim["batch_size"]), seed=int(cell["seed"]))
        return Trained(model.eval(), {"target_name": base.classes[data.target]}, {"poisoned": data.poisoned.to(torch.uint8)})

    # persisted only with the model's own architecture (a smaller victim is retrained in each process)
    return ctx.trained({"poisoned_classifier_victim": _set_key(cell)}, build, base=cell["model"] if own else None)


__all__ = ["PoisonedClassifierBlock", "PoisonedClassifierTask", "VictimSpec"]
