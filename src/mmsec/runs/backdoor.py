"""Execute one backdoor cell: train a model on poisoned data, then measure the backdoor.

A backdoor cell has ``model`` (a zoo CLIP), a poisoning attack (``registry`` kind ``poisoning``:
``pbcl_backdoor``, ...), the victim's ``training`` (``finetune``: the model fine-tuned on
``pairs`` clean shapes-world train pairs plus the attack's poisoned pairs; ``pretrain``: the
model's zoo recipe trained from scratch on a poisoned stream of fresh scenes) and the evaluation
``data`` (shapes-world test scenes). The control -- the same training on clean data -- is trained
once per (model, training, seed) in a process and shared by every attack setting.

Metrics (on the test scenes; ASR over the triggered images whose class is not the target):
zero-shot ASR and clean accuracy of the poisoned model, the control's clean accuracy and the drop
(points), the ASR of a linear probe fit afterwards on the poisoned model's clean train embeddings
(and its clean accuracy), image-to-text and text-to-image retrieval ASR, the ASR of the same
trigger on the control (what the trigger does without poisoning) and, with ``baseline: noise``,
of a same-size uniform-noise patch at the same place on the poisoned model; the number of
poisoned pairs and the training time.
"""

from __future__ import annotations

import json
import time
from functools import lru_cache
from pathlib import Path
from typing import Any

from .execute import (
    artifact_entry,
    build_attack,
    cell_result,
    load_model,
    metric_rows,
    staging_folder,
)

PROBE_TRAIN_START = 300_000  # probe-training scenes far beyond any training stream or pair set
PROBE_TRAIN_N = 2000


def _pairs(n: int, image_size: int, seed: int) -> Any:
    from ..data.datasets import ShapesDataset

    # the zoo's training distribution (a second object in a quarter of the scenes)
    return ShapesDataset("train", n=n, image_size=image_size, second_object_prob=0.25, seed=seed).to_data(quiet=True)


def _train(model_name: str, attack: Any, training: dict, seed: int) -> Any:
    """A :class:`~mmsec.train.poisoned.TrainedModel` (``attack`` None: the clean control)."""
    from ..train.poisoned import clean_finetune, poisoned_finetune, pretrain_poisoned

    if training["mode"] == "pretrain":
        if not model_name.startswith("zoo:"):
            raise ValueError(f"training.mode 'pretrain' retrains a zoo recipe from scratch; model {model_name!r} "
                             "is not a zoo model")
        return pretrain_poisoned(attack, recipe=model_name[len("zoo:"):], steps=training.get("steps"))
    model = load_model(model_name)
    pairs = _pairs(int(training["pairs"]), int(getattr(model, "image_size", 32)), 0)
    common = dict(steps=int(training["steps"]), batch_size=int(training["batch_size"]), lr=float(training["lr"]),
                  seed=seed)
    return clean_finetune(model, pairs, **common) if attack is None else poisoned_finetune(model, attack, pairs,
                                                                                           **common)


@lru_cache(maxsize=2)
def _control(model_name: str, training_json: str, seed: int) -> Any:
    return _train(model_name, None, json.loads(training_json), seed)


def _batches(data: dict, image_size: int):
    from ..data.shapes import ShapesWorld

    if data["name"] != "shapes":
        raise ValueError(f"task 'backdoor' evaluates on the shapes world (its target-class captions come from it); "
                         f"got data set {data['name']!r}")
    world = ShapesWorld(image_size=data.get("image_size") or image_size, seed=data.get("seed", 0))
    test = world.batch(data.get("split", "test"), 0, int(data.get("n") or 1000))
    probe_train = world.batch("train", PROBE_TRAIN_START, PROBE_TRAIN_N)
    return probe_train, test


def _write_record(record: Any, trigger: Any, staging: Path) -> list[dict]:
    """The poisoning record (ground truth for detectors) as a JSON artifact."""
    path = staging_folder(staging) / "poison_record.json"
    path.write_text(json.dumps({"record": record.to_dict(), "trigger": trigger.to_dict()}, sort_keys=True) + "\n")
    return [artifact_entry("poison_record_json", path)]


def execute_backdoor_cell(cell: dict, staging_dir: str | Path | None = None) -> dict:
    """Run one backdoor cell; returns the same plain dict as :func:`mmsec.runs.execute.execute_cell`."""
    from ..attacks.backdoor.triggers import PatchTrigger
    from ..evaluation.backdoor import backdoor_report, zeroshot_asr

    t0 = time.perf_counter()
    seed, training = int(cell["seed"]), cell["training"]
    attack = build_attack(cell["attack"]["name"], cell["attack"]["params"], "poisoning")
    run = _train(cell["model"], attack, training, seed)
    control = _control(cell["model"], json.dumps(training, sort_keys=True), seed)
    model = run.model
    probe_train, test = _batches(cell["data"], int(getattr(model, "image_size", 32)))
    target, trigger = run.record.target_label, attack.trigger
    scores = backdoor_report(model, probe_train, test, trigger, target, generator=seed)
    control_zs = backdoor_report(control.model, probe_train, test, trigger, target, generator=seed,
                                 tasks=("zeroshot",))["zeroshot"]
    values: dict[str, float] = {
        "backdoor_asr": scores["zeroshot"].asr, "clean_accuracy": scores["zeroshot"].clean_accuracy,
        "clean_accuracy_control": control_zs.clean_accuracy,
        "clean_accuracy_drop": 100 * (control_zs.clean_accuracy - scores["zeroshot"].clean_accuracy),
        "backdoor_asr_probe": scores["linear_probe"].asr, "probe_accuracy": scores["linear_probe"].clean_accuracy,
        "backdoor_asr_i2t": scores["retrieval_i2t"].asr, "backdoor_asr_t2i": scores["retrieval_t2i"].asr,
        "backdoor_asr_control": control_zs.asr, "n_poisoned": float(run.record.n_poisoned),
        "train_seconds": run.log.seconds,
    }
    if "backdoor_asr_noise" in cell["metrics"]:
        if not isinstance(trigger, PatchTrigger):
            raise ValueError(f"baseline 'noise' is a noise patch of the trigger's size and place; trigger "
                             f"{trigger.to_dict()['name']!r} is not a patch (set `baseline: null`)")
        noise = PatchTrigger(pattern="noise", size=trigger.size, position=trigger.position, seed=seed + 1)
        values["backdoor_asr_noise"] = zeroshot_asr(model, test.pixels(), test.labels, noise, target,
                                                    generator=seed).asr
    how = (f"{training['mode']} ({training.get('steps')} steps"
           + (f", {training['pairs']} clean pairs" if training["mode"] == "finetune" else "") + ")")
    poisoned = (f"{cell['attack']['name']} poisoning of {cell['model']}'s {how}: {run.record.n_poisoned} poisoned "
                f"pairs, target {run.record.target!r}, trigger {trigger.to_dict()['name']}; triggered test images")
    threat = {"adv": poisoned, "clean": f"clean test images, poisoned model ({how})",
              "control": f"the same training on clean data ({how})",
              "noise": "a uniform-noise patch of the trigger's size and place on the poisoned model"}
    kinds = {"clean_accuracy": "clean", "probe_accuracy": "clean", "clean_accuracy_control": "control",
             "backdoor_asr_control": "control", "backdoor_asr_noise": "noise"}
    metrics = metric_rows(cell["metrics"], values, lambda name: threat[kinds.get(name, "adv")])
    params = {k: v for k, v in attack.params().items() if k not in ("trigger", "caption_set")}
    params["trigger"] = trigger.to_dict()["name"]
    artifacts = []
    if cell.get("save_artifacts") and staging_dir is not None:
        artifacts = _write_record(run.record, trigger, Path(staging_dir))
    baseline = {"pattern": "noise", "size": trigger.size} if "backdoor_asr_noise" in cell["metrics"] else None
    return cell_result(metrics, artifacts, params, baseline, int(test.labels.shape[0]), t0)


__all__ = ["execute_backdoor_cell"]
