"""Backdoored models as backdoor cells build them: poisoned training or tampering, and their clean controls.

Shared by the tasks that study a backdoored model (``backdoor`` and its defenses and detectors).
Each model is built once per key and kept by the cell context: in memory, and persisted in the
results folder (weights as safetensors, the record and the facts in its card), so a resumed run,
another process or a Ray worker reuses it instead of training it again.

- Poisoning (registry kind ``poisoning``): the victim's ``training`` on the attack's poisoned data:
  ``finetune`` of the published model on ``pairs`` clean shapes-world train pairs plus the poisoned
  ones; ``pretrain`` of its zoo recipe from scratch on a poisoned stream of fresh scenes, or with
  ``epochs`` over ``pairs`` fixed clean pairs plus the poisoned ones. An attack that needs the clean
  model first (BadCLIP's optimised patch) prepares on the attacker's own clean scenes
  (:data:`mmsec.data.scenes.ATTACKER`). A pre-training defense (RoCLIP, SafeCLIP) can replace plain
  training on the same pairs.
- Tampering (kind ``model_backdoors``: BadEncoder): the published model changed with a shadow set of
  ``training.pairs`` clean train images and reference inputs of the target class.
- The control: poisoning's is the same training on clean data; tampering's is the published model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from ...data.scenes import ATTACKER, REFERENCE_POOL
from ..context import Trained
from .common import build_method, image_size_of

ATTACK_KINDS = ("poisoning", "model_backdoors")


@dataclass
class Backdoored:
    """A backdoored model as a cell measures it, made by poisoned training or by tampering with it."""

    model: Any
    trigger: Any
    target: str
    target_label: int
    n_poisoned: int  # poisoned training pairs (0: the model itself was changed)
    seconds: float  # the poisoned training's, or the tampering's
    record: dict  # the JSON artifact: what was done, enough to rebuild the trigger
    how: str  # the threat model in words, for the stored metrics
    tampered: bool = False  # the attack changed the model itself (its control is the published model)
    training_embeddings: torch.Tensor | None = None  # (N, D) the poisoned training set by this model, if fixed

    def poisoned_mask(self) -> torch.Tensor:
        """(N,) bool: which rows of the training set (and of ``training_embeddings``) were poisoned."""
        record = self.record["record"]
        mask = torch.zeros(int(record["n_total"]), dtype=torch.bool)
        mask[torch.tensor(record["indices"], dtype=torch.long)] = True
        return mask


def training_words(training: dict) -> str:
    if training.get("epochs"):
        return f"pretrain ({training['epochs']} epochs over {training['pairs']} clean pairs + the poisoned ones)"
    return (f"{training['mode']} ({training.get('steps')} steps"
            + (f", {training['pairs']} clean pairs" if training["mode"] == "finetune" else "") + ")")


def clean_pairs(n: int, image_size: int, seed: int = 0) -> Any:
    """``n`` clean shapes-world train pairs from index 0 (the zoo's distribution: a second object in a quarter)."""
    from ...data.datasets import ShapesDataset

    return ShapesDataset("train", n=n, image_size=image_size, second_object_prob=0.25, seed=seed).to_data(quiet=True)


def references(target_label: int, image_size: int, n: int = 1) -> tuple[torch.Tensor, list[int]]:
    """The first ``n`` single-object train scenes of the target class in the reference pool (BadEncoder's
    reference inputs; disjoint from the shadow set and the probe's scenes) and their indices."""
    from ...data.shapes import ShapesWorld

    pool = REFERENCE_POOL.batch(ShapesWorld(image_size), 48 * 20 * n)
    idx = (pool.labels == target_label).nonzero().flatten()[:n]
    return pool.pixels()[idx], [REFERENCE_POOL.start + int(i) for i in idx]


def is_pretraining(defense: dict | None) -> bool:
    """Whether a cell's defense replaces the victim's training (RoCLIP, SafeCLIP)."""
    from ... import registry

    return defense is not None and registry.find(defense["name"], ("pretraining_defenses",)) is not None


def backdoored(ctx: Any, model_name: str, attack: dict, training: dict, seed: int,
               pretraining: dict | None = None) -> Backdoored:
    """The cell's backdoored model (built once per key; ``pretraining``: a pre-training defense trains it
    instead of plain training)."""
    key = {"backdoored": model_name, "attack": attack, "training": training, "seed": seed,
           "pretraining_defense": pretraining}
    out = ctx.trained(key, lambda: _build(ctx, model_name, attack, training, seed, pretraining), base=model_name)
    return _as_backdoored(out)


def control(ctx: Any, model_name: str, bd: Backdoored, training: dict, seed: int) -> Any:
    """Poisoning: the same training on clean data; tampering: the published clean model itself."""
    if bd.tampered:
        return ctx.load_model(model_name)
    key = {"control": model_name, "training": training, "seed": seed}
    return ctx.trained(key, lambda: _train(ctx, model_name, None, training, seed)[0], base=model_name).model


def build_attack(attack_cfg: dict) -> tuple[Any, str]:
    """The cell's attack, with the shapes world's captions handed to a caption-poisoning attack (the task
    evaluates on the shapes world; the attack itself knows no world)."""
    from ...data.shapes_text import ShapesCaptions

    attack, kind = build_method(ATTACK_KINDS, attack_cfg)
    if callable(getattr(attack, "use_captions", None)):
        attack.use_captions(ShapesCaptions())
    return attack, kind


def _as_backdoored(out: Trained) -> Backdoored:
    from ...attacks.backdoor.triggers import trigger_from_dict

    info = out.info
    return Backdoored(out.model, trigger_from_dict(info["record"]["trigger"]), info["target"],
                      int(info["target_label"]), int(info["n_poisoned"]), float(info["seconds"]), info["record"],
                      info["how"], bool(info["tampered"]), out.tensors.get("training_embeddings"))


def _build(ctx: Any, model_name: str, attack_cfg: dict, training: dict, seed: int,
           pretraining: dict | None) -> Trained:
    from ...attacks.backdoor.poisoning import resolve_target
    from ...data.shapes import shape_color_classes
    from ...models.zeroshot import embed_images

    attack, kind = build_attack(attack_cfg)
    if kind == "poisoning":
        _prepare(ctx, attack, model_name, seed)
        run, data = _train(ctx, model_name, attack, training, seed, pretraining)
        record = run.info.pop("poison_record")
        how = (f"{attack_cfg['name']} poisoning of {model_name}'s {training_words(training)}: "
               f"{record['n_poisoned']} poisoned pairs, target {record['target']!r}, trigger "
               f"{attack.trigger.to_dict()['name']}")
        info = {"record": {"record": record, "trigger": attack.trigger.to_dict()}, "target": record["target"],
                "target_label": record["target_label"], "n_poisoned": record["n_poisoned"],
                "seconds": run.info["seconds"], "how": how, "tampered": False}
        tensors = {}
        if data is not None:  # a fixed training set: its embeddings by the backdoored model, for detectors
            tensors["training_embeddings"] = embed_images(run.model, data.pixels).float()
        return Trained(run.model, info, tensors)
    if pretraining is not None:
        raise ValueError(f"a pre-training defense needs a poisoning attack; {attack_cfg['name']!r} tampers with the model")
    # A model-tampering attack (BadEncoder): its unlabelled shadow set is `training.pairs` clean train
    # images (its own epochs / lr / batch are its parameters); the victim uses the published model as is.
    if attack.target is None:
        raise ValueError(f"attack {attack_cfg['name']!r} needs a target class in task 'backdoor' (params: target: ...)")
    target, label = resolve_target(attack.target, shape_color_classes())
    model = ctx.load_model(model_name)
    size = image_size_of(model)
    shadow = clean_pairs(int(training["pairs"]), size, 0).pixels
    refs, ref_ids = references(label, size)
    result = attack(model, shadow, refs, generator=seed, reference_indices=ref_ids)
    how = (f"{attack_cfg['name']} tampering of {model_name} ({shadow.shape[0]} shadow images): target {target!r}, "
           f"trigger {attack.trigger.to_dict()['name']}")
    info = {"record": {"record": result.record.to_dict(), "trigger": attack.trigger.to_dict()}, "target": target,
            "target_label": label, "n_poisoned": 0, "seconds": result.seconds, "how": how, "tampered": True}
    return Trained(result.model, info)


def _prepare(ctx: Any, attack: Any, model_name: str, seed: int) -> None:
    """White-box preparation on the clean model (BadCLIP's trigger), on the attacker's own scenes."""
    from ...data.datasets import ShapesDataset

    model = ctx.load_model(model_name)
    data = ShapesDataset("train", n=ATTACKER.count, start=ATTACKER.start,
                         image_size=image_size_of(model)).to_data(quiet=True)
    attack.prepare(model, data, generator=seed)


def _train(ctx: Any, model_name: str, attack: Any, training: dict, seed: int,
           defense: dict | None = None) -> tuple[Trained, Any]:
    """The victim trained on the (poisoned) data -- with a pre-training ``defense``, by that defense -- as a
    Trained (info: seconds and, when poisoned, ``poison_record``), and the pairs it trained on (None for a
    stream of fresh scenes). ``attack`` None: the clean control."""
    from ...train.poisoned import finetune_pairs, pretrain_pairs, pretrain_poisoned

    def done(run: Any, record: Any, data: Any) -> tuple[Trained, Any]:
        info = {"seconds": float(run.seconds)}
        if record is not None:
            info["poison_record"] = record.to_dict()
        return Trained(run.model.eval(), info), data

    if training["mode"] == "pretrain":
        if not model_name.startswith("zoo:"):
            raise ValueError(f"training.mode 'pretrain' retrains a zoo recipe from scratch; model {model_name!r} "
                             "is not a zoo model")
        recipe = model_name[len("zoo:"):]
        if not training.get("epochs"):
            run = pretrain_poisoned(attack, recipe=recipe, steps=training.get("steps"))
            return done(run, run.record, None)
        clean = clean_pairs(int(training["pairs"]), image_size_of(ctx.load_model(model_name)), 0)
        poisoned = None if attack is None else attack(clean)
        data = clean if poisoned is None else poisoned.data
        if defense is None:
            run = pretrain_pairs(data, recipe, int(training["epochs"]), seed=seed)
        else:
            # the defense trains as long as plain training does (its epochs are the cell's)
            built, _ = build_method(("pretraining_defenses",),
                                    {"name": defense["name"],
                                     "params": {**defense["params"], "epochs": int(training["epochs"])}}, "defense")
            t0 = time.perf_counter()
            run = built(data, recipe=recipe, seed=seed)
            if getattr(run, "seconds", None) is None:
                run.seconds = time.perf_counter() - t0
        return done(run, None if poisoned is None else poisoned.record, data)
    model = ctx.load_model(model_name)
    pairs = clean_pairs(int(training["pairs"]), image_size_of(model), 0)
    poisoned = None if attack is None else attack(pairs)
    data = pairs if poisoned is None else poisoned.data
    run = finetune_pairs(model, data, int(training["steps"]), batch_size=int(training["batch_size"]),
                         lr=float(training["lr"]), seed=seed,
                         desc="clean fine-tuning" if poisoned is None else "poisoned fine-tuning")
    return done(run, None if poisoned is None else poisoned.record, data)


__all__ = ["ATTACK_KINDS", "Backdoored", "backdoored", "build_attack", "clean_pairs", "control", "is_pretraining", "references",
           "training_words"]
