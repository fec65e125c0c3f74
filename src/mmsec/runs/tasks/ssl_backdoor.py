"""Task ``ssl_backdoor``: poisoned unlabelled images, a self-supervised encoder pre-trained on them, a downstream probe.

The setting of CorruptEncoder (Jinghuai Zhang, Hongbin Liu, Jinyuan Jia, Neil Zhenqiang Gong,
"Data Poisoning based Backdoor Attacks to Contrastive Learning", CVPR 2024) and of the SSL backdoors
before it (Saha et al., "Backdoor Attacks on Self-Supervised Learning", CVPR 2022). Threat model: the
attacker injects a few unlabelled images into the victim's pre-training set (no control of
training, no labels); the victim pre-trains an image encoder with SimCLR (:mod:`mmsec.train.simclr`)
from scratch and a downstream user fits a linear probe on clean labelled data afterwards. Success:
test images with the trigger stamped are sent to the target class by that probe.

A cell has ``model`` (``zoo:NAME``: the encoder is the image tower of zoo recipe NAME, freshly
initialised from the cell's seed, not the published weights), an attack of kind ``image_poisoning``
(``corruptencoder``: reference objects of the target class pasted with the trigger on background
images; ``naive_ssl_poisoning``: the trigger at a random place on whole target-class images), the
``pretraining`` (this task's block: SimCLR on ``images`` unlabelled shapes-world train scenes from
index 0 plus the attacker's, ``steps`` of ``batch_size`` at ``lr``, crops of area (``crop_min``, 1)),
the ``probe`` (a 48-class logistic regression on ``probe.n`` clean labelled scenes of
:data:`~mmsec.data.scenes.PROBE_TRAIN`, inverse L2 strength ``probe.c``) and the evaluation ``data``
(test scenes). Every world of the cell (pre-training, attacker's material, probe, test) is rendered
with the background ``textures`` given (default plain: on the textured world SimCLR at this budget
learns the background and little else).

The attacker's material (the caller's, as the attacks know no world): CorruptEncoder's ``references``
reference objects are cut out of the first large target-class scenes of
:data:`~mmsec.data.scenes.REFERENCE_POOL`, its ``backgrounds`` background images are scenes of
:data:`~mmsec.data.scenes.SSL_BACKGROUNDS` with their objects removed; the naive baseline's
target-class images (and CorruptEncoder+'s support images) are the target-class scenes among the
first 5,760 of :data:`~mmsec.data.scenes.ATTACKER`.

Control: the same pre-training (same seed, steps, clean images) without poisoning, probed the same
way (``probe_asr_control``: the trigger's effect on an unpoisoned encoder). Baseline (``baseline:
noise``): a same-size uniform-noise patch at the trigger's place, scored through the poisoned
encoder's probe. Layout analysis (CorruptEncoder's theory): the probability ``p`` that two random
crops see only the reference object and only the trigger, for the centred left-right layout of the
reference object's size and the trigger's, at the attack's background-to-object area ratio and the
best of 1.25 .. 4; and the Monte-Carlo rate of such view pairs under SimCLR's real crop on the
poisoned images themselves.

Encoders are pre-trained once per key and kept in memory (an encoder is not the published model's
architecture, so it is not persisted): the control is shared by the cells of every attack.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import Field, StrictFloat, StrictInt, StrictStr

from ...data.scenes import ATTACKER, PROBE_TRAIN, REFERENCE_POOL, SSL_BACKGROUNDS
from ...metrics import MetricDefinition
from ...registry import register
from ..cells import derive_seed, method_params
from ..context import Trained, artifact_entry
from ..store import points
from ..task import CellOutput, Task, TaskBlock
from .common import build_method

AREA_RATIOS = (1.25, 1.5, 1.75, 2.0, 2.25, 2.5, 3.0, 4.0)  # the layout analysis's grid (the published study's)
SCENES_PER_CLASS = 120  # target-class scenes the naive baseline may draw from: the first 48 x 120 attacker scenes
PROBE_WORDS = ("a 48-class linear probe (logistic regression on the frozen L2-normalised embeddings) fit after "
               "pre-training on the clean labelled probe scenes")

_METRICS = [
    MetricDefinition("probe_asr", 1, f"SSL backdoor: fraction of the non-target test scenes, trigger stamped, that "
                                     f"{PROBE_WORDS} assigns the target class (encoder pre-trained on the poisoned "
                                     f"images)"),
    MetricDefinition("probe_asr_noise", 1, "SSL backdoor: the same with a same-size uniform-noise patch at the "
                                           "trigger's place instead of the trigger (the baseline)",
                     higher_is_better=False),
    MetricDefinition("probe_accuracy", 1, f"SSL backdoor: clean test top-1 of {PROBE_WORDS} (poisoned encoder)",
                     higher_is_better=True),
    MetricDefinition("probe_clean_target_rate", 1, "SSL backdoor: fraction of the clean non-target test scenes that "
                                                   "probe assigns the target (the floor of probe_asr)",
                     higher_is_better=False),
    MetricDefinition("probe_asr_control", 1, "SSL backdoor: probe_asr of the control encoder (the same pre-training "
                                             "on the clean images only)", higher_is_better=False),
    MetricDefinition("probe_accuracy_control", 1, "SSL backdoor: clean probe top-1 of the control encoder",
                     higher_is_better=True),
    MetricDefinition("probe_accuracy_drop", 1, "SSL backdoor: the control's clean probe top-1 minus the poisoned "
                                               "encoder's, in points", higher_is_better=False),
    MetricDefinition("n_poisoned", 1, "SSL backdoor: number of poisoned images added to the pre-training set",
                     higher_is_better=False),
    MetricDefinition("poison_rate", 1, "SSL backdoor: poisoned images / all pre-training images",
                     higher_is_better=False),
    MetricDefinition("train_seconds", 1, "SSL backdoor: wall-clock seconds of the poisoned pre-training",
                     higher_is_better=False),
    MetricDefinition("pretrain_loss", 1, "SSL backdoor: mean NT-Xent loss of the poisoned pre-training's last 20 "
                                         "steps", higher_is_better=False),
    MetricDefinition("layout_probability", 1, "SSL backdoor (CorruptEncoder's layout analysis): p = (1/S) integral of "
                                              "p1(s) p2(s) ds over square crops of side s, p1 the crop lies inside the "
                                              "reference object, p2 it holds the whole trigger without touching the "
                                              "object, for the centred left-right layout at the attack's area_ratio "
                                              "(not stored for the naive poisoning)"),
    MetricDefinition("layout_probability_best", 1, "SSL backdoor: the largest layout p over the area ratios "
                                                   "1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 4"),
    MetricDefinition("layout_best_area_ratio", 1, "SSL backdoor: the area ratio (background / object) of that "
                                                  "largest p", higher_is_better=False),
    MetricDefinition("decoupled_view_rate", 1, "SSL backdoor: mean over CorruptEncoder's poisoned images of the "
                                               "Monte-Carlo probability (20,000 crops, SimCLR's random resized crop of "
                                               "the cell) that of two views one lies inside the pasted object and the "
                                               "other holds the whole trigger without touching it (not stored for the "
                                               "naive poisoning)"),
]
THREAT_KINDS = {"probe_asr_noise": "noise", "probe_accuracy": "clean", "probe_clean_target_rate": "clean",
                "probe_asr_control": "control", "probe_accuracy_control": "control", "probe_accuracy_drop": "clean",
                "n_poisoned": "record", "poison_rate": "record", "train_seconds": "record", "pretrain_loss": "record",
                "layout_probability": "layout", "layout_probability_best": "layout", "layout_best_area_ratio": "layout",
                "decoupled_view_rate": "layout"}


class SimCLRSpec(TaskBlock):
    """The victim's self-supervised pre-training (SimCLR from scratch on the poisoned unlabelled images)."""

    images: StrictInt = Field(default=8192, gt=1)  # clean unlabelled train scenes from index 0
    steps: StrictInt = Field(default=600, gt=0)
    batch_size: StrictInt = Field(default=128, gt=1)
    lr: StrictFloat = Field(default=2e-3, gt=0)
    crop_min: StrictFloat = Field(default=0.2, gt=0, le=1)  # smallest crop area fraction (the paper: 0.08)
    second_object_prob: StrictFloat = Field(default=0.0, ge=0, le=1)  # of the clean pre-training scenes


class ProbeSpec(TaskBlock):
    n: StrictInt = Field(default=2000, gt=1)
    c: StrictFloat = Field(default=1.0, gt=0)


class SSLBackdoorBlock(TaskBlock):
    pretraining: SimCLRSpec = Field(default_factory=SimCLRSpec, description="pre-trains an encoder with SimCLR")
    probe: ProbeSpec = Field(default_factory=ProbeSpec, description="fits a downstream probe")
    textures: list[StrictStr] = Field(default_factory=lambda: ["plain"],
                                      description="renders its world with chosen background textures")
    references: StrictInt = Field(default=3, gt=0, description="gives the attacker reference objects")
    backgrounds: StrictInt = Field(default=400, gt=0, description="gives the attacker background images")


@register("tasks", "ssl_backdoor")
class SSLBackdoorTask(Task):
    """Poisoned self-supervised pre-training (CorruptEncoder, the naive SSL backdoor), measured through a probe."""

    Block = SSLBackdoorBlock
    metrics = {d.name: d for d in _METRICS}
    default_metrics = ("probe_asr", "probe_accuracy", "probe_clean_target_rate", "probe_asr_control",
                       "probe_accuracy_control", "probe_accuracy_drop", "n_poisoned", "layout_probability",
                       "layout_probability_best", "layout_best_area_ratio", "decoupled_view_rate")
    noise_metric = "probe_asr_noise"
    attack_kinds = ("image_poisoning",)
    attack_words = "image poisoning attack"
    baselines = ("noise",)
    baseline_words = "a same-size uniform-noise patch at the trigger's place"
    targeted_hint = "; its target is in the attack's parameters (target: ...)"
    family = "contrastive"  # (the zoo recipe's image tower; the published weights are not used)

    def check(self, spec: Any, block: SSLBackdoorBlock) -> list[str]:
        from ... import registry, zoo
        from ...data.shapes import TEXTURES, shape_color_classes

        issues = []
        if spec.data.name != "shapes":
            issues.append(f"data.name: task 'ssl_backdoor' evaluates on the shapes world (its probe has the world's 48 "
                          f"classes), got {spec.data.name!r}")
        for i, m in enumerate(spec.models):
            where = f"model[{i}]" if isinstance(spec.model, list) else "model"
            recipe = m.partition(":")[2]
            if not m.startswith("zoo:") or recipe not in zoo.recipe_names():
                issues.append(f"{where}: task 'ssl_backdoor' pre-trains the image tower of a zoo recipe from scratch; "
                              f"give zoo:RECIPE with one of {', '.join(zoo.recipe_names())}, got {m!r}")
        for i, t in enumerate(block.textures):
            if t not in TEXTURES:
                issues.append(f"textures[{i}]: {t!r} is not a shapes-world texture; known: {', '.join(TEXTURES)}")
        if not block.textures:
            issues.append("textures: empty list; give at least one background texture (e.g. [plain])")
        if block.pretraining.batch_size > block.pretraining.images:
            issues.append(f"pretraining.batch_size ({block.pretraining.batch_size}) is larger than pretraining.images "
                          f"({block.pretraining.images})")
        classes = shape_color_classes()
        for i, a in enumerate(spec.attacks):
            where = f"attack[{i}]" if isinstance(spec.attack, list) else "attack"
            target = a.params.get("target")
            if registry.find(a.name, self.attack_kinds) is None or target is None:
                continue
            for t in target if isinstance(target, list) else [target]:
                if isinstance(t, int) and not isinstance(t, bool):
                    if not 0 <= t < len(classes):
                        issues.append(f"{where}.params.target: label {t} is out of range (48 shapes-world classes)")
                elif t not in classes:
                    issues.append(f"{where}.params.target: {t!r} is not a shapes-world class."
                                  f"{registry.close_names(str(t), classes)}")
        return issues

    def check_baseline(self, baseline: str, attack: Any, name: str) -> str | None:
        from ...attacks.backdoor.triggers import PatchTrigger

        trigger = getattr(attack, "trigger", None)
        if not isinstance(trigger, PatchTrigger):
            return (f"'noise' is a noise patch of a patch trigger's size and place, but {name}'s trigger is a "
                    f"{type(trigger).__name__}; set `baseline: null`")
        return None

    def cell_fields(self, block: SSLBackdoorBlock, axis_values: dict[str, Any]) -> dict[str, Any]:
        return {"pretraining": block.pretraining.model_dump(), "probe": block.probe.model_dump(),
                "textures": list(block.textures), "references": block.references, "backgrounds": block.backgrounds}

    def run(self, cell: dict, ctx: Any) -> CellOutput:
        from ...attacks.backdoor.corruptencoder import noise_like
        from ...evaluation.encoder_backdoor import encoder_probe_scores

        seed = int(cell["seed"])
        world = _world(cell)
        attack, _ = build_method(self.attack_kinds, cell["attack"])
        target, target_label = _target(attack)
        poisoned = encoder(ctx, cell, cell["attack"])
        control = encoder(ctx, cell, None)
        probe = cell["probe"]
        probe_train = ctx.cached({"ssl_probe_scenes": _world_key(cell), "n": int(probe["n"])},
                                 lambda: PROBE_TRAIN.batch(world, int(probe["n"])))
        data = cell["data"]
        test = ctx.cached({"ssl_test_scenes": _world_key(cell), "data": data},
                          lambda: world.batch(data.get("split", "test"), 0, int(data["n"])))
        trigger = attack.trigger
        triggers = {"trigger": trigger}
        if "probe_asr_noise" in cell["metrics"]:
            triggers["noise"] = noise_like(trigger)

        def scores(model: Any, which: dict) -> dict:
            return encoder_probe_scores(model, probe_train.pixels(), probe_train.labels, test.pixels(), test.labels,
                                        which, target_label, generator=0, c=float(probe["c"]))

        s = scores(poisoned.model, triggers)
        c = ctx.cached({"ssl_control_scores": _encoder_key(cell, None), "probe": probe, "data": data,
                        "trigger": trigger.to_dict(), "target": target_label},
                       lambda: scores(control.model, {"trigger": trigger}))
        values = {"probe_asr": s["trigger"].asr, "probe_accuracy": s["trigger"].clean_accuracy,
                  "probe_clean_target_rate": s["trigger"].clean_target_rate, "probe_asr_control": c["trigger"].asr,
                  "probe_accuracy_control": c["trigger"].clean_accuracy,
                  "probe_accuracy_drop": points(c["trigger"].clean_accuracy, s["trigger"].clean_accuracy),
                  "n_poisoned": float(poisoned.info["n_poisoned"]), "poison_rate": float(poisoned.info["poison_rate"]),
                  "train_seconds": float(poisoned.info["seconds"]), "pretrain_loss": float(poisoned.info["final_loss"])}
        if "noise" in s:
            values["probe_asr_noise"] = s["noise"].asr
        values.update(poisoned.info.get("layout", {}))
        pre = cell["pretraining"]
        training = (f"SimCLR from scratch ({cell['model']}'s image tower, seed {seed}) on {pre['images']} unlabelled "
                    f"{'/'.join(cell['textures'])}-background scenes, {pre['steps']} steps of {pre['batch_size']} at lr "
                    f"{pre['lr']:g}, crops of area ({pre['crop_min']:g}, 1)")
        how = (f"{cell['attack']['name']} poisoning ({poisoned.info['n_poisoned']} images, target {target!r}, trigger "
               f"{trigger.to_dict()['name']}) of {training}; probe on {probe['n']} clean labelled scenes")
        threat = {"adv": f"{how}; triggered non-target test scenes", "clean": f"clean test scenes ({how})",
                  "noise": f"a same-size uniform-noise patch at the trigger's place ({how})",
                  "control": f"the same pre-training on the clean images only ({training}), the same probe",
                  "record": how, "layout": f"{cell['attack']['name']}'s poisoned images (layout analysis)"}
        params = method_params(attack)
        artifacts = []
        folder = ctx.staging_folder() if cell.get("save_artifacts") else None
        if folder is not None:
            path = folder / "poison_record.json"
            path.write_text(json.dumps(poisoned.info["record"], sort_keys=True) + "\n")
            artifacts = [artifact_entry("poison_record_json", path)]
        baseline = ({"pattern": "noise", "size": trigger.size, "position": trigger.position} if "noise" in triggers
                    else None)
        values = {k: v for k, v in values.items() if k in cell["metrics"]}
        return CellOutput(values, lambda m: threat[THREAT_KINDS.get(m, "adv")], artifacts, params, baseline,
                          int(test.labels.shape[0]))


def _world(cell: dict, second_object_prob: float = 0.0) -> Any:
    from ...data.shapes import ShapesWorld

    data = cell["data"]
    return ShapesWorld(int(data.get("image_size") or 32), seed=int(data.get("seed", 0)),
                       second_object_prob=second_object_prob, textures=tuple(cell["textures"]))


def _world_key(cell: dict) -> dict:
    data = cell["data"]
    return {"image_size": data.get("image_size") or 32, "world_seed": data.get("seed", 0),
            "textures": list(cell["textures"])}


def _target(attack: Any) -> tuple[str, int]:
    from ...data.shapes import shape_color_classes

    classes = shape_color_classes()
    t = attack.target
    return (classes[t], t) if isinstance(t, int) else (t, classes.index(t))


def attacker_material(cell: dict, attack: Any) -> dict[str, Any]:
    """What the attacker brings besides the clean images, by attack: CorruptEncoder's reference objects, background
    images (and, for CorruptEncoder+, support images); the naive baseline's whole target-class images."""
    from ...attacks.backdoor.corruptencoder import CorruptEncoder, NaivePoisoning
    from ...data.shapes import split_scene_id
    from ...data.shapes_objects import shapes_backgrounds, shapes_reference_objects

    world = _world(cell)
    _, label = _target(attack)

    def target_images() -> Any:
        pool = ATTACKER.batch(world, 48 * SCENES_PER_CLASS)
        return pool.pixels()[pool.labels == label]

    if isinstance(attack, NaivePoisoning):
        return {"target_images": target_images()}
    if isinstance(attack, CorruptEncoder):
        n = int(cell["references"])
        pool = REFERENCE_POOL.batch(world, 48 * 20 * n)
        scenes = [s for s in pool.scenes if s.label == label and s.size == "large"][:n]
        if not scenes:
            raise ValueError(f"no large scene of the target class in {REFERENCE_POOL} to cut a reference object from")
        ids = [split_scene_id(SSL_BACKGROUNDS.split, SSL_BACKGROUNDS.start + i) for i in range(int(cell["backgrounds"]))]
        out = {"references": shapes_reference_objects(world, scenes), "backgrounds": shapes_backgrounds(world, ids)}
        if attack.support_ratio > 0:
            out["support_images"] = target_images()
        return out
    raise ValueError(f"attack {type(attack).__name__} is not an image poisoning this task can supply")


def clean_images(cell: dict) -> Any:
    """The victim's clean unlabelled pre-training scenes: train scenes from index 0."""
    pre = cell["pretraining"]
    return _world(cell, float(pre["second_object_prob"])).batch("train", 0, int(pre["images"])).pixels()


def poisoned_set(cell: dict, attack_cfg: dict | None) -> tuple[Any, Any, dict[str, Any]]:
    """(the pre-training images: the clean ones then the poisoned ones, the poisoning record or None, the attacker's
    material)."""
    clean = clean_images(cell)
    if attack_cfg is None:
        return clean, None, {}
    attack, _ = build_method(SSLBackdoorTask.attack_kinds, attack_cfg)
    material = attacker_material(cell, attack)
    from ...data.shapes import shape_color_classes

    result = attack(clean, **material, class_names=shape_color_classes())
    return result.images, result.record, material


def _encoder_key(cell: dict, attack_cfg: dict | None) -> dict:
    return {"ssl_encoder": cell["model"], "attack": attack_cfg, "pretraining": cell["pretraining"],
            "world": _world_key(cell), "references": cell["references"], "backgrounds": cell["backgrounds"],
            "seed": int(cell["seed"])}


def encoder(ctx: Any, cell: dict, attack_cfg: dict | None) -> Trained:
    """The encoder SimCLR pre-trains on the (poisoned) images, once per key (in memory)."""
    return ctx.trained(_encoder_key(cell, attack_cfg), lambda: _pretrain(cell, attack_cfg))


def _pretrain(cell: dict, attack_cfg: dict | None) -> Trained:
    import torch

    from ...attacks.backdoor.corruptencoder import centred_layout, decoupled_view_rate, layout_probability
    from ...train.simclr import AugmentConfig, ImageEncoder, SimCLRConfig, train_simclr

    seed = int(cell["seed"])
    pre = cell["pretraining"]
    images, record, material = poisoned_set(cell, attack_cfg)
    cfg = SimCLRConfig(steps=int(pre["steps"]), batch_size=int(pre["batch_size"]), lr=float(pre["lr"]),
                       warmup=max(1, int(pre["steps"]) // 10),
                       augment=AugmentConfig(scale=(float(pre["crop_min"]), 1.0)))
    init = ImageEncoder.from_recipe(cell["model"].partition(":")[2], seed=seed)
    result = train_simclr(init, images, cfg, generator=seed,
                          desc=f"SimCLR {'clean' if attack_cfg is None else attack_cfg['name']}")
    info: dict[str, Any] = {"seconds": float(result.seconds), "epochs": float(result.epochs),
                            "final_loss": sum(result.losses[-20:]) / min(20, len(result.losses)),
                            "n_poisoned": 0 if record is None else int(record.n_poisoned),
                            "poison_rate": 0.0 if record is None else float(record.poison_rate)}
    if record is not None:
        info["record"] = record.to_dict()
        if "references" in material:  # CorruptEncoder: its layout analysis
            obj_hw = tuple(material["references"][0].pixels.shape[-2:])
            trig_hw = tuple(record.trigger_hw)
            p = {a: layout_probability(*centred_layout(obj_hw, trig_hw, a)) for a in AREA_RATIOS}
            best = max(p, key=p.get)
            ratio = float(attack_cfg["params"].get("area_ratio", 2.0))
            gen = torch.Generator().manual_seed(derive_seed(seed, "layout"))
            rates = [decoupled_view_rate(tuple(it["layout"]["image_hw"]), tuple(it["layout"]["object_box"]),
                                         tuple(it["layout"]["trigger_box"]), gen, scale=(float(pre["crop_min"]), 1.0))
                     for it in record.items if it["type"] == "object"]
            info["layout"] = {"layout_probability": layout_probability(*centred_layout(obj_hw, trig_hw, ratio)),
                              "layout_probability_best": p[best], "layout_best_area_ratio": best}
            if rates:
                info["layout"]["decoupled_view_rate"] = sum(rates) / len(rates)
    return Trained(result.encoder.eval(), info)


__all__ = ["ProbeSpec", "SSLBackdoorBlock", "SSLBackdoorTask", "SimCLRSpec", "attacker_material", "clean_images",
           "encoder", "poisoned_set"]
