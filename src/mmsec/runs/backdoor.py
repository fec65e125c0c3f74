"""Execute one backdoor cell: train a model on poisoned data, then measure the backdoor.

A backdoor cell has ``model`` (a zoo CLIP), a poisoning attack (``registry`` kind ``poisoning``:
``pbcl_backdoor``, ...), the victim's ``training`` (``finetune``: the model fine-tuned on
``pairs`` clean shapes-world train pairs plus the attack's poisoned pairs; ``pretrain``: the
model's zoo recipe trained from scratch on a poisoned stream of fresh scenes, or with ``epochs``
over ``pairs`` fixed clean pairs plus the poisoned ones) and the evaluation
``data`` (shapes-world test scenes). The control -- the same training on clean data -- is trained
once per (model, training, seed) in a process and shared by every attack setting. An attack that
needs the clean model first (BadCLIP's optimised patch) prepares on 512 of the attacker's own
clean train scenes (ids from 100,000 on) before poisoning. A cell's ``defense`` (e.g.
``clean_finetune``) is trained on the poisoned model; the poisoned model is trained once per
process for all the defenses of a grid. A pre-training defense (RoCLIP, SafeCLIP) instead *is* the
victim's training on the poisoned pairs, compared with the plain training of the same cell.

Metrics (on the test scenes; ASR over the triggered images whose class is not the target):
zero-shot ASR and clean accuracy of the poisoned model, the control's clean accuracy and the drop
(points), the ASR of a linear probe fit afterwards on the poisoned model's clean train embeddings
(and its clean accuracy), image-to-text and text-to-image retrieval ASR, the ASR of the same
trigger on the control (what the trigger does without poisoning) and, with ``baseline: noise``,
of a same-size uniform-noise patch at the same place on the poisoned model; the number of
poisoned pairs and the training time. With a defense, the backdoor metrics are measured after it,
and ``backdoor_asr_undefended`` / ``clean_accuracy_undefended`` before it (``clean_accuracy_cost``
in points); without one they equal the measured values (cost 0), so a grid over ``[none, ...]``
lines up.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from .execute import (
    apply_defense,
    artifact_entry,
    attack_kind,
    build_attack,
    build_defense,
    cell_result,
    load_model,
    metric_rows,
    staging_folder,
)

PROBE_TRAIN_START = 300_000  # probe-training scenes far beyond any training stream or pair set
PROBE_TRAIN_N = 2000
ATTACKER_START = 100_000  # the attacker's own clean scenes (an optimised trigger is fit on them)
ATTACKER_N = 512
REFERENCE_START = 90_000  # BadEncoder's reference inputs (target-class scenes), as benchmarks/badencoder_eval.py


def _pairs(n: int, image_size: int, seed: int) -> Any:
    from ..data.datasets import ShapesDataset

    # the zoo's training distribution (a second object in a quarter of the scenes)
    return ShapesDataset("train", n=n, image_size=image_size, second_object_prob=0.25, seed=seed).to_data(quiet=True)


@dataclass
class Backdoored:
    """A backdoored model as a cell measures it, made by poisoned training or by tampering with it."""

    attack: Any
    model: Any
    trigger: Any
    target: str
    target_label: int
    n_poisoned: int  # poisoned training pairs (0: the model itself was changed)
    seconds: float  # the poisoned training's, or the tampering's
    record: dict  # the JSON artifact: what was done, enough to rebuild the trigger
    how: str  # the threat model in words, for the stored metrics
    tampered: bool = False  # the attack changed the model itself (its control is the published model)
    training_pixels: Any = None  # (N, 3, H, W) the poisoned training set's images, when it is a fixed set
    detection: float | None = None  # k-dist AUROC on them, once measured (then the pixels are let go)


def _prepare(attack: Any, model_name: str, seed: int) -> None:
    """White-box preparation on the clean model (BadCLIP's trigger), on the attacker's own scenes."""
    from ..data.datasets import ShapesDataset

    model = load_model(model_name)
    data = ShapesDataset("train", n=ATTACKER_N, start=ATTACKER_START,
                         image_size=int(getattr(model, "image_size", 32))).to_data(quiet=True)
    attack.prepare(model, data, generator=seed)


def _training_words(training: dict) -> str:
    if training.get("epochs"):
        return f"pretrain ({training['epochs']} epochs over {training['pairs']} clean pairs + the poisoned ones)"
    return (f"{training['mode']} ({training.get('steps')} steps"
            + (f", {training['pairs']} clean pairs" if training["mode"] == "finetune" else "") + ")")


def _references(target_label: int, image_size: int, n: int = 1) -> tuple[Any, list[int]]:
    """The first ``n`` single-object train scenes of the target class from id 90,000 on (BadEncoder's
    reference inputs; disjoint from the shadow set and the probe's scenes) and their indices."""
    from ..data.shapes import ShapesWorld

    pool = ShapesWorld(image_size).batch("train", REFERENCE_START, 48 * 20 * n)
    idx = (pool.labels == target_label).nonzero().flatten()[:n]
    return pool.pixels()[idx], [REFERENCE_START + int(i) for i in idx]


def is_pretraining(defense: dict | None) -> bool:
    """Whether a cell's defense replaces the victim's training (RoCLIP, SafeCLIP)."""
    from ..defenses.base import PretrainingDefense

    return defense is not None and isinstance(build_defense(defense["name"], defense["params"]), PretrainingDefense)


@lru_cache(maxsize=16)
def _backdoored(model_name: str, attack_json: str, training_json: str, seed: int,
                pretraining_json: str | None = None) -> Backdoored:
    """The cell's backdoored model, once per process: cells that differ only in a post-training
    defense share it. ``pretraining_json``: a pre-training defense trains it instead of plain training."""
    from ..attacks.backdoor.poisoning import resolve_target

    a, training = json.loads(attack_json), json.loads(training_json)
    kind = attack_kind("backdoor", a["name"])
    attack = build_attack(a["name"], a["params"], kind)
    if kind == "poisoning":
        _prepare(attack, model_name, seed)
        defense = None if pretraining_json is None else json.loads(pretraining_json)
        run, data = _train(model_name, attack, training, seed, defense)
        how = (f"{a['name']} poisoning of {model_name}'s {_training_words(training)}: {run.record.n_poisoned} "
               f"poisoned pairs, target {run.record.target!r}, trigger {attack.trigger.to_dict()['name']}")
        return Backdoored(attack, run.model, attack.trigger, run.record.target, run.record.target_label,
                          run.record.n_poisoned, run.seconds,
                          {"record": run.record.to_dict(), "trigger": attack.trigger.to_dict()}, how,
                          training_pixels=None if data is None else data.pixels)
    if pretraining_json is not None:
        raise ValueError(f"a pre-training defense needs a poisoning attack; {a['name']!r} tampers with the model")
    # A model-tampering attack (BadEncoder): its unlabelled shadow set is `training.pairs` clean train
    # images (its own epochs / lr / batch are its parameters); the victim uses the published model as is.
    if attack.target is None:
        raise ValueError(f"attack {a['name']!r} needs a target class in task 'backdoor' (params: target: ...)")
    target, label = resolve_target(attack.target)
    model = load_model(model_name)
    size = int(getattr(model, "image_size", 32))
    shadow = _pairs(int(training["pairs"]), size, 0).pixels
    refs, ref_ids = _references(label, size)
    result = attack(model, shadow, refs, generator=seed, reference_indices=ref_ids)
    how = (f"{a['name']} tampering of {model_name} ({shadow.shape[0]} shadow images): target {target!r}, trigger "
           f"{attack.trigger.to_dict()['name']}")
    return Backdoored(attack, result.model, attack.trigger, target, label, 0, result.seconds,
                      {"record": result.record.to_dict(), "trigger": attack.trigger.to_dict()}, how, tampered=True)


def _train(model_name: str, attack: Any, training: dict, seed: int, defense: dict | None = None) -> tuple[Any, Any]:
    """A :class:`~mmsec.train.poisoned.TrainedModel` (``attack`` None: the clean control) -- with a
    pre-training ``defense``, that defense's result (``.model``, ``.seconds``; ``.record`` set here) --
    and the (poisoned) pairs it trained on (None for a stream of fresh scenes)."""
    from ..train.poisoned import finetune_pairs, pretrain_pairs, pretrain_poisoned

    if training["mode"] == "pretrain":
        if not model_name.startswith("zoo:"):
            raise ValueError(f"training.mode 'pretrain' retrains a zoo recipe from scratch; model {model_name!r} "
                             "is not a zoo model")
        recipe = model_name[len("zoo:"):]
        if not training.get("epochs"):
            return pretrain_poisoned(attack, recipe=recipe, steps=training.get("steps")), None
        clean = _pairs(int(training["pairs"]), int(getattr(load_model(model_name), "image_size", 32)), 0)
        poisoned = None if attack is None else attack(clean)
        data = clean if poisoned is None else poisoned.data
        if defense is None:
            run = pretrain_pairs(data, recipe, int(training["epochs"]), seed=seed)
        else:
            # the defense trains as long as plain training does (its epochs are the cell's)
            built = build_defense(defense["name"], {**defense["params"], "epochs": int(training["epochs"])})
            run = built(data, recipe=recipe, seed=seed)
        run.record = None if poisoned is None else poisoned.record
        return run, data
    model = load_model(model_name)
    pairs = _pairs(int(training["pairs"]), int(getattr(model, "image_size", 32)), 0)
    poisoned = None if attack is None else attack(pairs)
    data = pairs if poisoned is None else poisoned.data
    run = finetune_pairs(model, data, int(training["steps"]), batch_size=int(training["batch_size"]),
                         lr=float(training["lr"]), seed=seed,
                         desc="clean fine-tuning" if poisoned is None else "poisoned fine-tuning")
    run.record = None if poisoned is None else poisoned.record
    return run, data


@lru_cache(maxsize=2)
def _control(model_name: str, training_json: str, seed: int) -> Any:
    return _train(model_name, None, json.loads(training_json), seed)[0]


def _batches(data: dict, image_size: int):
    from ..data.shapes import ShapesWorld

    if data["name"] != "shapes":
        raise ValueError(f"task 'backdoor' evaluates on the shapes world (its target-class captions come from it); "
                         f"got data set {data['name']!r}")
    world = ShapesWorld(image_size=data.get("image_size") or image_size, seed=data.get("seed", 0))
    test = world.batch(data.get("split", "test"), 0, int(data.get("n") or 1000))
    probe_train = world.batch("train", PROBE_TRAIN_START, PROBE_TRAIN_N)
    return probe_train, test


def _detection_auroc(bd: Backdoored, seed: int) -> float:
    """k-dist (the paper's k 16, batches of 1,024) on the poisoned training set, by the backdoored model;
    measured once per backdoored model (its cells, one per defense, share it)."""
    if bd.detection is not None:
        return bd.detection
    import torch

    from ..defenses.detection import KDistanceDetector
    from ..evaluation.detection import auroc
    from ..models.zeroshot import embed_images

    record = bd.record["record"]
    mask = torch.zeros(int(record["n_total"]), dtype=torch.bool)
    mask[torch.tensor(record["indices"], dtype=torch.long)] = True
    scores = KDistanceDetector(seed=seed)(embed_images(bd.model, bd.training_pixels).float()).scores
    bd.detection, bd.training_pixels = auroc(scores, mask), None
    return bd.detection


def _write_record(bd: Backdoored, staging: Path) -> list[dict]:
    """What the attack did (ground truth for detectors: poisoned indices, trigger) as a JSON artifact."""
    path = staging_folder(staging) / "poison_record.json"
    path.write_text(json.dumps(bd.record, sort_keys=True) + "\n")
    return [artifact_entry("poison_record_json", path)]


def _control_model(cell: dict, bd: Backdoored, training_json: str) -> Any:
    """Poisoning: the same training on clean data; tampering: the published clean model itself."""
    if bd.tampered:
        return load_model(cell["model"])
    return _control(cell["model"], training_json, int(cell["seed"])).model


def backdoored_and_control(model: str, attack: dict, training: dict, seed: int = 0) -> tuple[Backdoored, Any]:
    """The backdoored model a backdoor cell measures and its control (poisoning: the same training on
    clean pairs; tampering: the published model), built and cached exactly as the runner builds them.
    For studies of the models themselves (``benchmarks/seer_eval.py``). ``attack``: ``{name, params}``."""
    training_json = json.dumps(training, sort_keys=True)
    bd = _backdoored(model, json.dumps(attack, sort_keys=True), training_json, seed)
    return bd, _control_model({"model": model, "seed": seed}, bd, training_json)


def execute_backdoor_cell(cell: dict, staging_dir: str | Path | None = None) -> dict:
    """Run one backdoor cell; returns the same plain dict as :func:`mmsec.runs.execute.execute_cell`."""
    from ..attacks.backdoor.triggers import OptimizedPatch, PatchTrigger
    from ..evaluation.backdoor import backdoor_report, zeroshot_asr

    t0 = time.perf_counter()
    seed, training = int(cell["seed"]), cell["training"]
    training_json = json.dumps(training, sort_keys=True)
    attack_json, defense = json.dumps(cell["attack"], sort_keys=True), cell.get("defense")
    pretraining = is_pretraining(defense)
    bd = _backdoored(cell["model"], attack_json, training_json, seed)
    control = _control_model(cell, bd, training_json)
    probe_train, test = _batches(cell["data"], int(getattr(bd.model, "image_size", 32)))
    target, trigger, attack = bd.target_label, bd.trigger, bd.attack
    model, defense_seconds = bd.model, 0.0
    values: dict[str, float] = {}
    if defense:  # measured before the defense: the backdoored model it cleans, or plain training on the same data
        undefended = backdoor_report(model, probe_train, test, trigger, target, generator=seed,
                                     tasks=("zeroshot",))["zeroshot"]
        values.update(backdoor_asr_undefended=undefended.asr, clean_accuracy_undefended=undefended.clean_accuracy)
        if pretraining:
            defended = _backdoored(cell["model"], attack_json, training_json, seed,
                                   json.dumps(defense, sort_keys=True))
            model, defense_seconds = defended.model, defended.seconds
        else:
            model, defense_seconds = apply_defense(model, defense, seed)
    scores = backdoor_report(model, probe_train, test, trigger, target, generator=seed)
    control_zs = backdoor_report(control, probe_train, test, trigger, target, generator=seed,
                                 tasks=("zeroshot",))["zeroshot"]
    values.update({
        "backdoor_asr": scores["zeroshot"].asr, "clean_accuracy": scores["zeroshot"].clean_accuracy,
        "clean_accuracy_control": control_zs.clean_accuracy,
        "clean_accuracy_drop": 100 * (control_zs.clean_accuracy - scores["zeroshot"].clean_accuracy),
        "backdoor_asr_probe": scores["linear_probe"].asr, "probe_accuracy": scores["linear_probe"].clean_accuracy,
        "backdoor_asr_i2t": scores["retrieval_i2t"].asr, "backdoor_asr_t2i": scores["retrieval_t2i"].asr,
        "backdoor_asr_control": control_zs.asr, "n_poisoned": float(bd.n_poisoned),
        "train_seconds": bd.seconds, "defense_train_seconds": defense_seconds,
    })
    if "detection_auroc" in cell["metrics"] and (bd.training_pixels is not None or bd.detection is not None):
        values["detection_auroc"] = _detection_auroc(bd, seed)
    # without a defense the backdoored model is the undefended one (so grids over [none, defense] align)
    values.setdefault("backdoor_asr_undefended", values["backdoor_asr"])
    values.setdefault("clean_accuracy_undefended", values["clean_accuracy"])
    values["clean_accuracy_cost"] = 100 * (values["clean_accuracy_undefended"] - values["clean_accuracy"])
    size = trigger.size if getattr(trigger, "size", None) is not None else getattr(trigger, "pattern", None)
    size = int(size.shape[-1]) if hasattr(size, "shape") else size  # an optimised patch: its pixel size
    if "backdoor_asr_noise" in cell["metrics"]:
        if not isinstance(trigger, (PatchTrigger, OptimizedPatch)):
            raise ValueError(f"baseline 'noise' is a noise patch of the trigger's size and place; trigger "
                             f"{trigger.to_dict()['name']!r} is not a patch (set `baseline: null`)")
        noise = PatchTrigger(pattern="noise", size=size, position=trigger.position, seed=seed + 1)
        values["backdoor_asr_noise"] = zeroshot_asr(model, test.pixels(), test.labels, noise, target,
                                                    generator=seed).asr
    after = (f", pre-trained with defense {defense['name']} instead" if pretraining
             else f", then defense {defense['name']}" if defense else "")
    control_words = ("the published clean model" if bd.tampered else f"the same training on clean data ({_training_words(training)})")
    threat = {"adv": f"{bd.how}; triggered test images{after}",
              "clean": f"clean test images, backdoored model ({bd.how}){after}", "control": control_words,
              "noise": f"a uniform-noise patch of the trigger's size and place on the backdoored model{after}",
              "undefended": f"{bd.how}; " + ("plain training, without the pre-training defense" if pretraining
                                             else "before the defense"),
              "cost": f"training cost of defense {defense['name']}" if defense else "no defense",
              "detection": f"k-dist on the image embeddings of the {bd.n_poisoned} poisoned + clean training pairs"}
    kinds = {"clean_accuracy": "clean", "probe_accuracy": "clean", "clean_accuracy_control": "control",
             "backdoor_asr_control": "control", "backdoor_asr_noise": "noise",
             "backdoor_asr_undefended": "undefended", "clean_accuracy_undefended": "undefended",
             "clean_accuracy_cost": "cost", "defense_train_seconds": "cost", "detection_auroc": "detection"}
    names = [m for m in cell["metrics"] if m != "detection_auroc" or m in values]  # no training set: not applicable
    metrics = metric_rows(names, values, lambda name: threat[kinds.get(name, "adv")])
    params = {k: v for k, v in attack.params().items() if k not in ("trigger", "caption_set")}
    params["trigger"] = trigger.to_dict()["name"]
    artifacts = []
    if cell.get("save_artifacts") and staging_dir is not None:
        artifacts = _write_record(bd, Path(staging_dir))
    baseline = {"pattern": "noise", "size": size} if "backdoor_asr_noise" in cell["metrics"] else None
    return cell_result(metrics, artifacts, params, baseline, int(test.labels.shape[0]), t0)


__all__ = ["Backdoored", "backdoored_and_control", "execute_backdoor_cell"]
