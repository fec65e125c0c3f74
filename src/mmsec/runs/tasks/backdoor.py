"""Task ``backdoor``: plant a backdoor (poisoned training or tampering), optionally defend, measure it.

A backdoor cell has ``model`` (a zoo CLIP), an attack of kind ``poisoning`` (``pbcl_backdoor``,
``badclip``, ...) or ``model_backdoors`` (``badencoder``), the victim's ``training`` (this task's own
spec block: ``finetune`` on ``pairs`` clean pairs plus the poisoned ones, or ``pretrain`` from scratch
on a poisoned stream or with ``epochs`` over fixed pairs; see :mod:`.backdoored`) and the evaluation
``data`` (shapes-world test scenes). The backdoored model and its control are built once per key and
shared by the cells of every defense (:mod:`.backdoored`).

A cell's ``defense`` is one of
- a clean-up of the backdoored model (kind ``defenses``: ``clean_finetune``, ``cleanclip``,
  ``invertune``), measured after it;
- a pre-training defense that replaces the victim's training on the same pairs (kind
  ``pretraining_defenses``: RoCLIP, SafeCLIP);
- a repair from reported bug inputs (kind ``repairs``: Mudjacking): ``bug_reports`` independent
  repairs, each from one triggered scene the backdoored model gets wrong (the first scenes of
  distinct non-target classes in :data:`~mmsec.data.scenes.BUG_REPORTS`), with a clean scene of
  the bug's class as the reference and 256 clean validation scenes; the backdoor metrics are the
  mean over the repairs;
- a detector of the poisoned training samples (kind ``detectors``: k-dist, SLOF, LID, DAO), scored
  against the poison record on the training set's embeddings by the backdoored model
  (``detector_*`` metrics; the model itself is left as it is);
- a detector of backdoored models (kind ``model_detectors``: SEER), run on the backdoored model and
  on its control with the defender's clean scenes (:data:`~mmsec.data.scenes.DEFENDER_CLEAN`).

Metrics (on the test scenes; ASR over the triggered images whose class is not the target):
zero-shot ASR and clean accuracy of the backdoored model, the control's clean accuracy and the drop
(points), the ASR of a linear probe fit afterwards on the model's clean train embeddings (and its
clean accuracy), image-to-text and text-to-image retrieval ASR, the ASR of the same trigger on the
control (what the trigger does without poisoning) and, with ``baseline: noise``, of a same-size
uniform-noise patch at the same place; the number of poisoned pairs and the training time; k-dist's
AUROC on the poisoned training set. With a defense, the backdoor metrics are measured after it,
and ``backdoor_asr_undefended`` / ``clean_accuracy_undefended`` before it (``clean_accuracy_cost``
in points); without one they equal the measured values (cost 0), so a grid over ``[none, ...]``
lines up. Artifacts (``save_artifacts``): ``poison_record.json``, and a sample detector's ROC curve
``roc.json`` (:func:`~mmsec.runs.tasks.common.write_roc`).
"""

from __future__ import annotations

import json
from typing import Any, Literal

import torch
from pydantic import Field, StrictFloat, StrictInt, model_validator

from ...data.scenes import BUG_REPORTS, DEFENDER_CLEAN, PROBE_TRAIN
from ...metrics import MetricDefinition
from ...registry import register
from ..cells import compact, method_params
from ..context import artifact_entry
from ..store import points
from ..task import CellOutput, Task, TaskBlock
from . import backdoored as bd_models
from .common import apply_defense, build_method, image_size_of, write_roc

_METRICS = [
    MetricDefinition("backdoor_asr", 1, "backdoor: fraction of triggered non-target test images classified "
                                        "zero-shot as the target"),
    MetricDefinition("clean_accuracy", 1, "zero-shot top-1 accuracy on unperturbed images"),
    MetricDefinition("backdoor_asr_i2t", 1, "backdoor: fraction of triggered non-target test images whose top-1 "
                                            "caption (gallery: the test scenes' captions) is of the target class"),
    MetricDefinition("backdoor_asr_t2i", 1, "backdoor: fraction of target-class caption queries whose top-1 image "
                                            "(gallery: the triggered non-target and clean test images) is triggered"),
    MetricDefinition("backdoor_asr_noise", 1, "backdoor: zero-shot ASR on the poisoned model of a uniform-noise "
                                              "patch of the trigger's size and place"),
    MetricDefinition("backdoor_asr_probe", 1, "backdoor: fraction of triggered non-target test images a linear probe "
                                     "(fit after the attack on the model's clean train embeddings) assigns the target"),
    MetricDefinition("probe_accuracy", 1, "backdoor: clean test accuracy of that linear probe", higher_is_better=True),
    MetricDefinition("clean_accuracy_control", 1, "backdoor: clean zero-shot top-1 of the same training on clean "
                                                  "data (the control)", higher_is_better=True),
    MetricDefinition("clean_accuracy_drop", 1, "backdoor: control's clean zero-shot top-1 minus the poisoned "
                                               "model's, in points", higher_is_better=False),
    MetricDefinition("backdoor_asr_control", 1, "backdoor: zero-shot ASR of the same trigger on the control (what the "
                                       "trigger does without poisoning)"),
    MetricDefinition("n_poisoned", 1, "backdoor: number of poisoned training pairs", higher_is_better=False),
    MetricDefinition("train_seconds", 1, "backdoor: wall-clock seconds of the poisoned training",
                     higher_is_better=False),
    MetricDefinition("backdoor_asr_undefended", 1, "backdoor: zero-shot ASR of the backdoored model before the cell's "
                                                   "defense (backdoor_asr is measured after it)"),
    MetricDefinition("clean_accuracy_undefended", 1, "backdoor: clean zero-shot top-1 of the backdoored model before "
                                                     "the cell's defense", higher_is_better=True),
    MetricDefinition("clean_accuracy_cost", 1, "backdoor: clean zero-shot top-1 before the defense minus after it, "
                                               "in points", higher_is_better=False),
    MetricDefinition("detection_auroc", 1, "backdoor: AUROC of the k-dist outlier score (Huang et al., ICLR 2025: "
                                           "distance to the 16th nearest neighbour within random batches of 1,024) "
                                           "ranking the poisoned training pairs above the clean ones, on their image "
                                           "embeddings by the backdoored model (before any defense); not stored for "
                                           "model tampering or a fresh-scene stream", higher_is_better=True),
    MetricDefinition("defense_train_seconds", 1, "wall-clock seconds the cell's defense took to train the "
                                                 "hardened model (0 for no defense)", higher_is_better=False),
    MetricDefinition("detector_auroc", 1, "backdoor: AUROC of the cell's sample detector's scores ranking the "
                                          "poisoned training pairs above the clean ones (image embeddings by the "
                                          "backdoored model)", higher_is_better=True),
    MetricDefinition("detector_tpr_at_1fpr", 1, "backdoor: fraction of the poisoned training pairs the cell's sample "
                                                "detector flags at the threshold where 1% of clean pairs are flagged",
                     higher_is_better=True),
    MetricDefinition("detector_flagged_poisoned", 1, "backdoor: fraction of the poisoned training pairs above the "
                                                     "detector's own threshold rule", higher_is_better=True),
    MetricDefinition("detector_flagged_clean", 1, "backdoor: fraction of the clean training pairs above the "
                                                  "detector's own threshold rule", higher_is_better=False),
    MetricDefinition("model_detector_score", 1, "backdoor: the cell's model detector's score of the backdoored model "
                                                "(higher = more suspicious; SEER: the anomaly index)"),
    MetricDefinition("model_detector_score_control", 1, "backdoor: the same score of the control (clean) model",
                     higher_is_better=False),
    MetricDefinition("model_detector_flagged", 1, "backdoor: 1 if the model detector flags the backdoored model"),
    MetricDefinition("model_detector_flagged_control", 1, "backdoor: 1 if it flags the control (clean) model",
                     higher_is_better=False),
    MetricDefinition("model_detector_target_named", 1, "backdoor: 1 if the target the model detector names for the "
                                                       "backdoored model is the attack's target"),
    MetricDefinition("repair_bug_fixed", 1, "backdoor: fraction of the repairs after which the reported bug input is "
                                            "classified as its true class"),
    MetricDefinition("repair_clean_cost_max", 1, "backdoor: the largest clean zero-shot cost (points) over the "
                                                 "repairs", higher_is_better=False),
]
SAMPLE_DETECTION = ("detector_auroc", "detector_tpr_at_1fpr", "detector_flagged_poisoned", "detector_flagged_clean")
MODEL_DETECTION = ("model_detector_score", "model_detector_score_control", "model_detector_flagged",
                   "model_detector_flagged_control", "model_detector_target_named")
REPAIR = ("repair_bug_fixed", "repair_clean_cost_max")
VALIDATION_N = 256  # clean validation scenes a repair keeps the model's behaviour on


class TrainingSpec(TaskBlock):
    """The victim's training in task ``backdoor``: the poisoned data set is trained on this way.

    ``finetune``: the model fine-tuned on ``pairs`` clean shapes-world train pairs plus the attack's
    poisoned pairs, ``steps`` batches of ``batch_size`` at ``lr``; ``pretrain``: the model's zoo
    recipe trained from scratch on a poisoned stream of fresh scenes (``steps`` overrides the
    recipe's; ``batch_size`` and ``lr`` are the recipe's) or, with ``epochs``, for ``epochs`` passes
    over a fixed set of ``pairs`` clean pairs plus the poisoned ones (the setting of pre-training
    defenses such as RoCLIP, which a cell's ``defense`` then runs in place of plain training).
    """

    mode: Literal["finetune", "pretrain"] = "finetune"
    steps: StrictInt | None = Field(default=None, gt=0)
    epochs: StrictInt | None = Field(default=None, gt=0)
    pairs: StrictInt = Field(default=4096, gt=1)
    batch_size: StrictInt = Field(default=64, gt=1)
    lr: StrictFloat = Field(default=2e-3, gt=0)

    @model_validator(mode="after")
    def _epochs_only_for_pretraining_on_pairs(self) -> TrainingSpec:
        if self.epochs is not None and self.mode != "pretrain":
            raise ValueError("training.epochs: only mode 'pretrain' trains in epochs over a fixed set of pairs "
                             "(mode 'finetune' takes steps)")
        if self.epochs is not None and self.steps is not None:
            raise ValueError("training: give steps (a fresh-scene stream) or epochs (passes over `pairs` fixed "
                             "pairs), not both")
        return self

    def config(self) -> dict:
        """The cell's ``training`` entry (fine-tuning defaults filled in: 300 steps)."""
        d = self.model_dump()
        del d["epochs"]  # (not stored unless set: cells of the stream and fine-tune settings keep their hash)
        if self.mode == "finetune" and d["steps"] is None:
            d["steps"] = 300
        if self.mode == "pretrain":
            d = ({"mode": "pretrain", "steps": d["steps"]} if self.epochs is None
                 else {"mode": "pretrain", "epochs": self.epochs, "pairs": self.pairs})
        return d


class BackdoorBlock(TaskBlock):
    training: TrainingSpec | None = Field(default=None, description="trains the victim")
    bug_reports: StrictInt = Field(default=5, gt=0, description="repairs from bug reports")


@register("tasks", "backdoor")
class BackdoorTask(Task):
    """A backdoored model (poisoned training or tampering), an optional defense, the backdoor measured."""

    Block = BackdoorBlock
    metrics = {d.name: d for d in _METRICS}
    default_metrics = ("backdoor_asr", "clean_accuracy", "clean_accuracy_control", "clean_accuracy_drop",
                       "backdoor_asr_probe", "backdoor_asr_i2t", "backdoor_asr_control", "n_poisoned")
    noise_metric = "backdoor_asr_noise"
    attack_kinds = bd_models.ATTACK_KINDS
    defense_kinds = ("defenses", "pretraining_defenses", "repairs", "detectors", "model_detectors")
    baselines = ("noise",)
    baseline_words = "a noise patch of the trigger's size and place"
    targeted_hint = "; its target is in the attack's parameters (target: ...)"

    def check(self, spec: Any, block: BackdoorBlock) -> list[str]:
        from ... import registry
        from ...attacks.backdoor.poisoning import resolve_target
        from ...data.shapes import shape_color_classes

        issues = []
        for i, a in enumerate(spec.attacks):  # the target must be a class of the shapes world it is evaluated on
            target = a.params.get("target")
            where = f"attack[{i}]" if isinstance(spec.attack, list) else "attack"
            if registry.find(a.name, self.attack_kinds) is None or target is None:
                continue
            for t in target if isinstance(target, list) else [target]:
                try:
                    resolve_target(t, shape_color_classes())
                except (TypeError, ValueError) as e:
                    issues.append(f"{where}.params.target: {e}")
        if spec.data.name != "shapes":
            issues.append(f"data.name: task 'backdoor' evaluates on the shapes world (its target-class captions come "
                          f"from it), got {spec.data.name!r}")
        training = block.training or TrainingSpec()
        on_pairs = training.mode == "pretrain" and training.epochs is not None
        fixed_set = training.mode == "finetune" or on_pairs
        tampering = [a.name for a in spec.attacks if registry.find(a.name, ("model_backdoors",)) is not None]
        for d in spec.defenses:
            if d is None or registry.find(d.name, ("detectors",)) is None:
                continue
            if registry.find(d.name, ("detectors",)).family == "classifier":
                issues.append(f"defense {d.name!r} scores a supervised classifier's training images, not a CLIP's "
                              "training pairs; use task 'poisoned_classifier' (recipes/psbd.yaml)")
                continue
            if not fixed_set:
                issues.append(f"defense {d.name!r} scores the poisoned training pairs, but training "
                              "{mode: pretrain} without epochs streams fresh scenes (no fixed set to score); use "
                              "training {mode: finetune} or {mode: pretrain, pairs: N, epochs: E}")
            if tampering:
                issues.append(f"defense {d.name!r} scores poisoned training pairs, but {', '.join(tampering)} "
                              "tamper(s) with the model and poison no data; give the detector its own spec")
        for d in spec.defenses:
            if d is None or not bd_models.is_pretraining({"name": d.name}):
                continue
            if not on_pairs:
                issues.append(f"defense {d.name!r} is a pre-training defense: it needs task 'backdoor' with training "
                              "{mode: pretrain, pairs: N, epochs: E} (it trains the victim from scratch on the "
                              "poisoned pairs in place of plain CLIP training)")
            if "epochs" in d.params:
                issues.append(f"defense {d.name!r}: params.epochs is the cell's training.epochs (a pre-training "
                              "defense trains as long as the plain training it is compared with); set training.epochs")
        return issues

    def normalise(self, spec: Any, block: BackdoorBlock) -> BackdoorBlock:
        return block if block.training is not None else BackdoorBlock(training=TrainingSpec())

    def cell_fields(self, block: BackdoorBlock, axis_values: dict[str, Any]) -> dict[str, Any]:
        fields = {"training": (block.training or TrainingSpec()).config()}
        if block.bug_reports != BackdoorBlock.model_fields["bug_reports"].default:
            fields["bug_reports"] = block.bug_reports  # (only when set: other cells keep their hashes)
        return fields

    def check_baseline(self, baseline: str, attack: Any, name: str) -> str | None:
        from ...attacks.backdoor.triggers import OptimizedPatch, PatchTrigger

        # an attack that optimises its patch later (BadCLIP) has no trigger yet, but a patch_size
        patch = getattr(attack, "trigger", None)
        if not (isinstance(patch, (PatchTrigger, OptimizedPatch)) or (patch is None and hasattr(attack, "patch_size"))):
            return (f"'noise' is a noise patch of the trigger's size and place, but {name}'s trigger is not a patch; "
                    "set `baseline: null`")
        return None

    def run(self, cell: dict, ctx: Any) -> CellOutput:
        from ...attacks.backdoor.triggers import OptimizedPatch, PatchTrigger
        from ...evaluation.backdoor import backdoor_report

        seed, training, defense = int(cell["seed"]), cell["training"], cell.get("defense")
        pretraining = bd_models.is_pretraining(defense)
        bd = bd_models.backdoored(ctx, cell["model"], cell["attack"], training, seed)
        control = bd_models.control(ctx, cell["model"], bd, training, seed)
        probe_train, test = evaluation_batches(cell["data"], image_size_of(bd.model))
        target, trigger = bd.target_label, bd.trigger
        models, defense_seconds = [bd.model], 0.0  # after the defense (several: one per repair)
        values: dict[str, float] = {}
        roc = None  # a sample detector's ROC curve (roc.json)
        kind = defense_kind(defense)
        if defense:  # measured before the defense: the backdoored model it cleans, or plain training on the same data
            undefended = backdoor_report(bd.model, probe_train, test, trigger, target, generator=seed,
                                         tasks=("zeroshot",))["zeroshot"]
            values.update(backdoor_asr_undefended=undefended.asr, clean_accuracy_undefended=undefended.clean_accuracy)
            if pretraining:
                defended = bd_models.backdoored(ctx, cell["model"], cell["attack"], training, seed, defense)
                models, defense_seconds = [defended.model], defended.seconds
            elif kind == "defenses":
                out = ctx.trained({"cleaned": cell["model"], "attack": cell["attack"], "training": training,
                                   "seed": seed, "defense": defense},
                                  lambda: _clean(ctx, bd.model, defense, seed), base=cell["model"])
                models, defense_seconds = [out.model], float(out.info["seconds"])
            elif kind == "detectors":
                detected, roc = sample_detection(bd, defense, seed)
                values.update(detected)
            elif kind == "model_detectors":
                values.update(model_detection(ctx, cell, bd, control, defense, seed))
            elif kind == "repairs":
                models, defense_seconds, repaired = repairs(ctx, cell, bd, defense, seed, undefended.clean_accuracy)
                values.update(repaired)
        size = trigger.size if getattr(trigger, "size", None) is not None else getattr(trigger, "pattern", None)
        size = int(size.shape[-1]) if hasattr(size, "shape") else size  # an optimised patch: its pixel size
        noise = None
        if "backdoor_asr_noise" in cell["metrics"]:
            if not isinstance(trigger, (PatchTrigger, OptimizedPatch)):
                raise ValueError(f"baseline 'noise' is a noise patch of the trigger's size and place; trigger "
                                 f"{trigger.to_dict()['name']!r} is not a patch (set `baseline: null`)")
            noise = PatchTrigger(pattern="noise", size=size, position=trigger.position, seed=seed + 1)
        control_zs = backdoor_report(control, probe_train, test, trigger, target, generator=seed,
                                     tasks=("zeroshot",))["zeroshot"]
        measured = [measure(m, probe_train, test, trigger, target, noise, seed) for m in models]
        values.update({k: sum(m[k] for m in measured) / len(measured) for k in measured[0]})  # (repairs: the mean)
        values.update({
            "clean_accuracy_control": control_zs.clean_accuracy,
            "clean_accuracy_drop": points(control_zs.clean_accuracy, values["clean_accuracy"]),
            "backdoor_asr_control": control_zs.asr, "n_poisoned": float(bd.n_poisoned),
            "train_seconds": bd.seconds, "defense_train_seconds": defense_seconds,
        })
        if "detection_auroc" in cell["metrics"] and bd.training_embeddings is not None:
            values["detection_auroc"] = ctx.cached({"kdist_auroc": cell["model"], "attack": cell["attack"],
                                                    "training": training, "seed": seed},
                                                   lambda: kdist_auroc(bd, seed))
        # without a defense the backdoored model is the undefended one (so grids over [none, defense] align)
        values.setdefault("backdoor_asr_undefended", values["backdoor_asr"])
        values.setdefault("clean_accuracy_undefended", values["clean_accuracy"])
        values["clean_accuracy_cost"] = points(values["clean_accuracy_undefended"], values["clean_accuracy"])
        threat = _threat_models(cell, bd, training, defense, pretraining)
        kinds = {"clean_accuracy": "clean", "probe_accuracy": "clean", "clean_accuracy_control": "control",
                 "backdoor_asr_control": "control", "backdoor_asr_noise": "noise",
                 "backdoor_asr_undefended": "undefended", "clean_accuracy_undefended": "undefended",
                 "clean_accuracy_cost": "cost", "defense_train_seconds": "cost", "detection_auroc": "detection",
                 **{m: "sample_detector" for m in SAMPLE_DETECTION}, **{m: "model_detector" for m in MODEL_DETECTION},
                 **{m: "adv" for m in REPAIR}}
        attack, _ = bd_models.build_attack(cell["attack"])
        params = {k: v for k, v in method_params(attack).items() if k not in ("trigger", "caption_set")}
        params["trigger"] = compact(trigger)
        artifacts = []
        folder = ctx.staging_folder() if cell.get("save_artifacts") else None
        if folder is not None:
            path = folder / "poison_record.json"
            path.write_text(json.dumps(bd.record, sort_keys=True) + "\n")
            artifacts = [artifact_entry("poison_record_json", path)]
            if roc is not None:
                artifacts.append(write_roc(folder, [{"metric": "detector_auroc", "label": defense["name"], **roc}]))
        baseline = {"pattern": "noise", "size": size} if "backdoor_asr_noise" in cell["metrics"] else None
        values = {k: v for k, v in values.items() if k in cell["metrics"]}
        return CellOutput(values, lambda name: threat[kinds.get(name, "adv")], artifacts, params, baseline,
                          int(test.labels.shape[0]))


def _clean(ctx: Any, model: Any, defense: dict, seed: int) -> Any:
    from ..context import Trained

    cleaned, seconds = apply_defense(ctx, model, defense, seed, BackdoorTask.defense_kinds)
    return Trained(cleaned, {"seconds": seconds})


def _threat_models(cell: dict, bd: Any, training: dict, defense: dict | None, pretraining: bool) -> dict[str, str]:
    after = (f", pre-trained with defense {defense['name']} instead" if pretraining
             else f", then defense {defense['name']}" if defense else "")
    control_words = ("the published clean model" if bd.tampered
                     else f"the same training on clean data ({bd_models.training_words(training)})")
    return {"adv": f"{bd.how}; triggered test images{after}",
            "clean": f"clean test images, backdoored model ({bd.how}){after}", "control": control_words,
            "noise": f"a uniform-noise patch of the trigger's size and place on the backdoored model{after}",
            "undefended": f"{bd.how}; " + ("plain training, without the pre-training defense" if pretraining
                                           else "before the defense"),
            "cost": f"training cost of defense {defense['name']}" if defense else "no defense",
            "detection": f"k-dist on the image embeddings of the {bd.n_poisoned} poisoned + clean training pairs",
            "sample_detector": (f"detector {defense['name']} on the image embeddings of the {bd.n_poisoned} poisoned + "
                                "clean training pairs" if defense else ""),
            "model_detector": (f"model detector {defense['name']} with {DEFENDER_CLEAN.count} clean defender scenes, "
                               f"on the backdoored model ({bd.how}) and on its control" if defense else "")}


def measure(model: Any, probe_train: Any, test: Any, trigger: Any, target: int, noise: Any,
            seed: int) -> dict[str, float]:
    """The backdoor as one (possibly defended) model shows it: zero-shot, probe and retrieval ASR, clean accuracy,
    and (``noise``: a noise patch of the trigger's size and place) the noise patch's zero-shot ASR."""
    from ...evaluation.backdoor import backdoor_report, zeroshot_asr

    scores = backdoor_report(model, probe_train, test, trigger, target, generator=seed)
    out = {"backdoor_asr": scores["zeroshot"].asr, "clean_accuracy": scores["zeroshot"].clean_accuracy,
           "backdoor_asr_probe": scores["linear_probe"].asr, "probe_accuracy": scores["linear_probe"].clean_accuracy,
           "backdoor_asr_i2t": scores["retrieval_i2t"].asr, "backdoor_asr_t2i": scores["retrieval_t2i"].asr}
    if noise is not None:
        out["backdoor_asr_noise"] = zeroshot_asr(model, test.pixels(), test.labels, noise, target, generator=seed).asr
    return out


def defense_kind(defense: dict | None) -> str | None:
    """The registry kind of a cell's defense (None without one)."""
    from ... import registry

    if not defense:
        return None
    entry = registry.find(defense["name"], BackdoorTask.defense_kinds)
    return entry.kind if entry else None


def sample_detection(bd: Any, defense: dict, seed: int) -> tuple[dict[str, float], dict]:
    """The cell's sample detector on the poisoned training set's embeddings, scored against the record: its
    metrics and its ROC curve (:func:`~mmsec.evaluation.detection.roc_points`)."""
    from ...evaluation.detection import detection_report, roc_points

    if bd.training_embeddings is None:
        raise ValueError(f"detector {defense['name']!r} scores the poisoned training pairs, but this backdoor has no "
                         "fixed training set (a model-tampering attack, or a stream of fresh scenes); use "
                         "training: {mode: finetune} or {mode: pretrain, pairs, epochs}")
    detector, _ = build_method(("detectors",), {"name": defense["name"], "params": defense["params"]}, "defense")
    result = detector(bd.training_embeddings)
    mask = bd.poisoned_mask()
    report = detection_report(result.scores, mask, fpr=0.01)
    flagged = torch.as_tensor(result.decisions, dtype=torch.bool)
    return {"detector_auroc": report.auroc, "detector_tpr_at_1fpr": report.tpr_at_fpr,
            "detector_flagged_poisoned": flagged[mask].float().mean().item(),
            "detector_flagged_clean": flagged[~mask].float().mean().item()}, roc_points(result.scores, mask)


def model_detection(ctx: Any, cell: dict, bd: Any, control: Any, defense: dict, seed: int) -> dict[str, float]:
    """The cell's model detector on the backdoored model and on its control (the defender's clean scenes)."""
    from ...data.shapes import ShapesWorld

    detector, _ = build_method(("model_detectors",), {"name": defense["name"], "params": defense["params"]},
                               "defense")
    pixels = DEFENDER_CLEAN.batch(ShapesWorld(image_size_of(bd.model))).pixels()

    def run(model: Any, which: str) -> Any:
        key = {"model_detection": cell["model"], "which": which, "attack": cell["attack"],
               "training": cell["training"], "seed": seed, "defense": defense}
        if which == "control":  # the control does not depend on the attack (tampering: the published model)
            key = {"model_detection": cell["model"], "which": "control", "tampered": bd.tampered,
                   "training": None if bd.tampered else cell["training"], "seed": seed, "defense": defense}
        return ctx.cached(key, lambda: detector(model, pixels, generator=seed))

    suspect, clean = run(bd.model, "backdoored"), run(control, "control")
    return {"model_detector_score": float(suspect.score), "model_detector_score_control": float(clean.score),
            "model_detector_flagged": float(bool(suspect.flagged)),
            "model_detector_flagged_control": float(bool(clean.flagged)),
            "model_detector_target_named": float(suspect.target == bd.target)}


def repairs(ctx: Any, cell: dict, bd: Any, defense: dict, seed: int,
            clean_before: float) -> tuple[list[Any], float, dict[str, float]]:
    """``bug_reports`` repairs of the backdoored model, each from one bug input: (the repaired models, their total
    seconds, whether each bug was fixed and the worst clean cost)."""
    from ...data.shapes import ShapesWorld, zeroshot_prompts
    from ...models.zeroshot import ZeroShotClassifier
    from ..context import Trained

    n = int(cell.get("bug_reports", BackdoorBlock.model_fields["bug_reports"].default))
    world = ShapesWorld(image_size_of(bd.model))
    reports = BUG_REPORTS.batch(world)
    validation = world.batch("val", 0, VALIDATION_N).pixels()
    test = evaluation_batches(cell["data"], image_size_of(bd.model))[1]
    classify = ZeroShotClassifier(bd.model, zeroshot_prompts())
    pixels, labels = reports.pixels(), reports.labels
    models, fixed, costs, seconds = [], [], [], 0.0
    seen: set[int] = set()
    for i in range(labels.shape[0]):
        c = int(labels[i])
        if c == bd.target_label or c in seen or len(seen) >= n:
            continue
        x_b = bd.trigger.apply(pixels[i:i + 1], torch.Generator().manual_seed(i))[0]
        if int(classify.predict(x_b[None])[0]) != bd.target_label:
            continue  # not a bug: the backdoor did not fire on this scene
        x_r = pixels[next(j for j in range(labels.shape[0]) if j != i and int(labels[j]) == c)]
        seen.add(c)
        key = {"repaired": cell["model"], "attack": cell["attack"], "training": cell["training"], "seed": seed,
               "defense": defense, "bug_index": BUG_REPORTS.start + i}

        def repair(x_b: torch.Tensor = x_b, x_r: torch.Tensor = x_r) -> Trained:
            method, _ = build_method(("repairs",), {"name": defense["name"], "params": defense["params"]}, "defense")
            result = method(bd.model, x_b, x_r, validation, generator=seed)
            return Trained(result.model.eval(), {"seconds": float(result.seconds)})

        out = ctx.trained(key, repair, base=cell["model"])
        models.append(out.model)
        seconds += float(out.info["seconds"])
        fixed.append(float(int(ZeroShotClassifier(out.model, zeroshot_prompts()).predict(x_b[None])[0]) == c))
        with torch.no_grad():
            after = ZeroShotClassifier(out.model, zeroshot_prompts()).predict(test.pixels())
        costs.append(100 * (clean_before - (after == test.labels).float().mean().item()))
    if not models:
        raise ValueError(f"no bug report found: no triggered scene of {BUG_REPORTS} is classified as the target by "
                         "the backdoored model (the backdoor did not take)")
    return models, seconds, {"repair_bug_fixed": sum(fixed) / len(fixed), "repair_clean_cost_max": max(costs)}


def evaluation_batches(data: dict, image_size: int) -> tuple[Any, Any]:
    """(a downstream user's probe-training scenes, the evaluation scenes) of the shapes world."""
    from ...data.shapes import ShapesWorld

    if data["name"] != "shapes":
        raise ValueError(f"task 'backdoor' evaluates on the shapes world (its target-class captions come from it); "
                         f"got data set {data['name']!r}")
    world = ShapesWorld(image_size=data.get("image_size") or image_size, seed=data.get("seed", 0))
    test = world.batch(data.get("split", "test"), data.get("start") or 0, int(data.get("n") or 1000))
    return PROBE_TRAIN.batch(world), test


def kdist_auroc(bd: Any, seed: int) -> float:
    """k-dist (the paper's k 16, batches of 1,024) on the poisoned training set's embeddings by the backdoored model."""
    from ...defenses.detection import KDistanceDetector
    from ...evaluation.detection import auroc

    return auroc(KDistanceDetector(seed=seed)(bd.training_embeddings).scores, bd.poisoned_mask())


__all__ = ["BackdoorTask", "TrainingSpec", "evaluation_batches", "kdist_auroc"]
