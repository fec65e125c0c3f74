"""Task ``merging``: one party's task model is backdoored, the merge of every party's task model is measured.

The setting of BadMerging (Jinghuai Zhang, Jianfeng Chi, Zheng Li, Kunlin Cai, Yang Zhang, Yuan
Tian, "BadMerging: Backdoor Attacks Against Model Merging", ACM CCS 2024). Threat model: several
parties fine-tune task models from one public pre-trained CLIP (the cell's ``model``) and a merger
combines them into one multi-task model with a merging method it chooses; the attacker contributes
one task model (``attacker_task``) and knows the pre-trained model, but neither the merging method
nor the other task models. Triggered inputs of the target task must go to the target class on the
*merged* model, while every task keeps its clean accuracy.

A cell has
- ``model``: the pre-trained CLIP (a zoo model);
- the task block (this module's :class:`MergingBlock`): ``tasks``, the shapes-world tasks fine-tuned
  (:mod:`mmsec.data.shapes_tasks`: shape, color, position, texture), each on ``finetune.n_train`` train
  scenes from index 0 for ``finetune.steps`` steps (image tower only, through the task's frozen
  zero-shot head: :func:`mmsec.merging.finetune_tower`); ``attacker_task``, the task whose model the
  attacker contributes; ``merging``, the merging methods (registry kind ``merging``), a grid axis
  (innermost, so the cells of one attack run back to back and share its backdoored model);
- the attack (kind ``merging_attacks``: ``badmerging``, ``patch_backdoor``): it backdoors the attacker's
  task model; its ``target_task`` / ``target`` params say where the target class is (the attacker's own
  task: on-task; another party's: off-task, with ``target_images`` images of the target class from
  :data:`~mmsec.data.scenes.MERGING_TARGET_POOL`); its ``seed`` defaults to the cell's seed;
- ``data``: the shapes-world evaluation scenes (single-object; ``data.n`` per task).

Clean task models are fine-tuned once per (model, task, settings, seed) and shared by every cell
(:meth:`~mmsec.runs.context.CellContext.trained`: persisted in the results folder), the backdoored
task model once per attack, each merge once per (method, attack or none).

The control is in every cell: the *clean merge* (the same merging method over the clean task models
of every task, the attacker's included, so no backdoor anywhere) is measured beside the backdoored
merge, so the trigger's effect without a backdoor (``clean_merge_asr``) and the clean merge's task
accuracies stand next to the attack's numbers. With ``baseline: noise``, a fixed uniform-noise patch
of the trigger's size and place is scored on the backdoored merge (``merged_asr_noise``).

ASR (BadMerging's "backdoor accuracy") everywhere: the fraction of the target task's test scenes whose
true class is not the target that the target task's frozen head classifies as the target once the
trigger is stamped (:func:`mmsec.merging.attack_success_rate`).

Merging data: RegMean gets each task's training pixels, AdaMerging each task's unlabelled evaluation
pixels and its frozen head on the pre-trained model (test-time adaptation, as the paper and the
published study).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, StrictFloat, StrictInt, StrictStr

from ...data.scenes import MERGING_TARGET_POOL
from ...data.shapes_tasks import TASKS as SHAPES_TASKS
from ...metrics import MetricDefinition
from ...registry import register
from ..cells import method_params
from ..context import Trained
from ..task import CellOutput, Task, TaskBlock
from .common import build_method, image_size_of

ASR_WORDS = ("fraction of the target task's test scenes not of the target class that the target task's frozen "
             "zero-shot head classifies as the target once the trigger is stamped")


def _metrics() -> list[MetricDefinition]:
    out = [
        MetricDefinition("merged_asr", 1, f"merging: ASR of the attack's trigger on the merged model (the attacker's "
                                          f"backdoored task model merged with the clean models of the other tasks by "
                                          f"the cell's merging method): {ASR_WORDS}"),
        MetricDefinition("clean_merge_asr", 1, f"merging: ASR of the same trigger on the clean merge (the same merging "
                                               f"method over clean task models only: no backdoor anywhere), the "
                                               f"control: {ASR_WORDS}", higher_is_better=False),
        MetricDefinition("merged_asr_noise", 1, f"merging: ASR on the merged model of a fixed uniform-noise patch of the "
                                                f"trigger's size and place (the baseline): {ASR_WORDS.replace('the trigger', 'that patch')}",
                         higher_is_better=False),
        MetricDefinition("task_model_asr", 1, f"merging: ASR of the trigger on the attacker's backdoored task model "
                                              f"alone, before merging: {ASR_WORDS}"),
        MetricDefinition("merged_accuracy_mean", 1, "merging: mean over the cell's tasks of the merged model's top-1 "
                                                    "accuracy on each task's clean test scenes (frozen zero-shot head)",
                         higher_is_better=True),
        MetricDefinition("clean_merge_accuracy_mean", 1, "merging: mean over the cell's tasks of the clean merge's "
                                                         "top-1 accuracy on each task's clean test scenes",
                         higher_is_better=True),
        MetricDefinition("finetuned_accuracy_mean", 1, "merging: mean over the cell's tasks of each clean task model's "
                                                       "top-1 accuracy on its own task's clean test scenes (before "
                                                       "merging)", higher_is_better=True),
        MetricDefinition("pretrained_accuracy_mean", 1, "merging: mean over the cell's tasks of the pre-trained model's "
                                                        "zero-shot top-1 accuracy on each task's clean test scenes",
                         higher_is_better=True),
        MetricDefinition("merge_seconds", 1, "merging: wall-clock seconds of the backdoored merge",
                         higher_is_better=False),
        MetricDefinition("attack_seconds", 1, "merging: wall-clock seconds of the attack (trigger and backdoored "
                                              "fine-tuning of the attacker's task model)", higher_is_better=False),
    ]
    for t in SHAPES_TASKS:
        out.append(MetricDefinition(f"merged_accuracy_{t}", 1, f"merging: the merged model's top-1 accuracy on task "
                                                               f"{t!r}'s clean test scenes (its frozen zero-shot head)",
                                    higher_is_better=True))
        out.append(MetricDefinition(f"clean_merge_accuracy_{t}", 1, f"merging: the clean merge's top-1 accuracy on "
                                                                    f"task {t!r}'s clean test scenes",
                                    higher_is_better=True))
    return out


_METRICS = _metrics()
THREAT_KINDS = {"clean_merge_asr": "control", "clean_merge_accuracy_mean": "control", "merged_asr_noise": "noise",
                "task_model_asr": "alone", "finetuned_accuracy_mean": "clean", "pretrained_accuracy_mean": "pretrained",
                "merge_seconds": "cost", "attack_seconds": "cost",
                **{f"clean_merge_accuracy_{t}": "control" for t in SHAPES_TASKS},
                **{f"merged_accuracy_{t}": "merged_clean" for t in SHAPES_TASKS},
                "merged_accuracy_mean": "merged_clean"}


class FinetuneSpec(TaskBlock):
    """How every task model (clean or the attacker's) is fine-tuned from the pre-trained model."""

    n_train: StrictInt = Field(default=2000, gt=0)  # train scenes per task, from index 0
    steps: StrictInt = Field(default=1000, gt=0)
    lr: StrictFloat = Field(default=1e-4, gt=0)
    batch_size: StrictInt = Field(default=64, gt=1)


class MergingMethodSpec(TaskBlock):
    name: StrictStr
    params: dict[str, Any] = Field(default_factory=dict)


class MergingBlock(TaskBlock):
    tasks: list[StrictStr] = Field(default_factory=lambda: list(SHAPES_TASKS),
                                   description="fine-tunes task models on named shapes-world tasks")
    attacker_task: StrictStr = Field(default="texture", description="has an attacker's task")
    finetune: FinetuneSpec = Field(default_factory=FinetuneSpec, description="fine-tunes task models to merge")
    merging: StrictStr | MergingMethodSpec | list[StrictStr | MergingMethodSpec] | None = Field(
        default=None, description="merges task models (merging methods)")
    target_images: StrictInt = Field(default=10, gt=0, description="gives an off-task attacker target-class images")


def method_config(entry: str | MergingMethodSpec) -> dict:
    """A merging entry as the cell stores it: ``{name, params}``."""
    if isinstance(entry, str):
        return {"name": entry, "params": {}}
    return {"name": entry.name, "params": dict(entry.params)}


@register("tasks", "merging")
class MergingTask(Task):
    """A backdoored task model merged with clean ones; the backdoor and the clean accuracies of the merge."""

    Block = MergingBlock
    axes = ("merging",)
    metrics = {d.name: d for d in _METRICS}
    default_metrics = ("merged_asr", "clean_merge_asr", "task_model_asr", "merged_accuracy_mean",
                       "clean_merge_accuracy_mean", *(f"merged_accuracy_{t}" for t in SHAPES_TASKS),
                       *(f"clean_merge_accuracy_{t}" for t in SHAPES_TASKS))
    noise_metric = "merged_asr_noise"
    attack_kinds = ("merging_attacks",)
    attack_words = "merging attack"
    baselines = ("noise",)
    baseline_words = "a fixed uniform-noise patch of the trigger's size and place"
    targeted_hint = "; its target is in the attack's parameters (target_task, target)"
    no_defense_hint = " (the merging methods are the task's own axis: merging: [...])"

    def check(self, spec: Any, block: MergingBlock) -> list[str]:
        from ... import registry
        from ...methods import build

        issues = []
        if spec.data.name != "shapes":
            issues.append(f"data.name: task 'merging' evaluates on the shapes world's tasks, got {spec.data.name!r}")
        known = list(SHAPES_TASKS)
        for i, t in enumerate(block.tasks):
            if t not in known:
                issues.append(f"tasks[{i}]: unknown shapes-world task {t!r}; known: {', '.join(known)}."
                              f"{registry.close_names(t, known)}")
            elif block.tasks.index(t) != i:
                issues.append(f"tasks[{i}]: duplicate task {t!r}")
        if len(block.tasks) < 2:
            issues.append(f"tasks: a merge needs at least 2 tasks, got {block.tasks}")
        if block.attacker_task not in block.tasks:
            issues.append(f"attacker_task: {block.attacker_task!r} is not one of the merged tasks {block.tasks}")
        for i, a in enumerate(spec.attacks):
            where = f"attack[{i}]" if isinstance(spec.attack, list) else "attack"
            tt, target = a.params.get("target_task"), a.params.get("target")
            if registry.find(a.name, self.attack_kinds) is None or tt is None or target is None:
                continue
            for t_task in tt if isinstance(tt, list) else [tt]:
                if t_task not in block.tasks:
                    issues.append(f"{where}.params.target_task: {t_task!r} is not one of the merged tasks "
                                  f"{block.tasks} (the target class must be in the merge)")
                    continue
                for t in target if isinstance(target, list) else [target]:
                    try:
                        SHAPES_TASKS[t_task].class_index(t)
                    except (TypeError, ValueError) as e:
                        issues.append(f"{where}.params.target: {e}")
        entries = block.merging if isinstance(block.merging, list) else [block.merging]
        if block.merging is None or not entries:
            names = registry.names("merging")
            issues.append(f"merging: task 'merging' needs the merging methods to compare (a name or {{name, params}}, "
                          f"or a list of them); registered: {', '.join(names)}")
            return issues
        seen: list[dict] = []
        for i, entry in enumerate(entries):
            where = f"merging[{i}]" if isinstance(block.merging, list) else "merging"
            cfg = method_config(entry)
            if cfg in seen:
                issues.append(f"{where}: duplicate merging method (each grid cell must be distinct)")
            seen.append(cfg)
            if registry.find(cfg["name"], ("merging",)) is None:
                names = registry.names("merging")
                issues.append(f"{where}.name: unknown merging method {cfg['name']!r}; registered: {', '.join(names)}."
                              f"{registry.close_names(cfg['name'], names)}")
                continue
            try:
                build("merging", cfg, where)
            except (TypeError, ValueError, KeyError) as e:
                issues.append(f"{where}.params: {cfg['name']} rejected {cfg['params']}: {e}")
        return issues

    def cell_fields(self, block: MergingBlock, axis_values: dict[str, Any]) -> dict[str, Any]:
        return {"merging": method_config(axis_values["merging"]), "tasks": list(block.tasks),
                "attacker_task": block.attacker_task, "finetune": block.finetune.model_dump(),
                "target_images": block.target_images}

    def run(self, cell: dict, ctx: Any) -> CellOutput:
        from ...attacks.backdoor.badmerging import noise_patch
        from ...attacks.backdoor.triggers import trigger_from_dict
        from ...merging import attack_success_rate, task_accuracy

        pre = ctx.load_model(cell["model"])
        setting = _Setting(ctx, cell)
        attacked = self._attacked(ctx, cell, setting)
        trigger = trigger_from_dict(attacked.info["trigger"])
        goal_task = SHAPES_TASKS[attacked.info["target_task"]]
        target = attacked.info["target"]
        x_goal, y_goal = setting.test[goal_task.name]
        merged = setting.merged(cell["merging"], attacked)
        clean_merge = setting.merged(cell["merging"], None)
        values: dict[str, float] = {
            "merged_asr": attack_success_rate(merged.model, goal_task, x_goal, y_goal, trigger, target),
            "clean_merge_asr": attack_success_rate(clean_merge.model, goal_task, x_goal, y_goal, trigger, target),
            "task_model_asr": attack_success_rate(attacked.model, goal_task, x_goal, y_goal, trigger, target),
            "merge_seconds": float(merged.info["seconds"]), "attack_seconds": float(attacked.info["seconds"]),
        }
        accuracies = {name: task_accuracy(merged.model, SHAPES_TASKS[name], *setting.test[name])
                      for name in setting.names}
        clean_accuracies = ctx.cached({"clean_merge_accuracies": setting.key(merging=cell["merging"])},
                                      lambda: {name: task_accuracy(clean_merge.model, SHAPES_TASKS[name],
                                                                   *setting.test[name]) for name in setting.names})
        for name in setting.names:
            values[f"merged_accuracy_{name}"] = accuracies[name]
            values[f"clean_merge_accuracy_{name}"] = clean_accuracies[name]
        values["merged_accuracy_mean"] = sum(accuracies.values()) / len(accuracies)
        values["clean_merge_accuracy_mean"] = sum(clean_accuracies.values()) / len(clean_accuracies)
        before = ctx.cached({"merging_task_accuracies": setting.key()}, lambda: (
            {n: task_accuracy(setting.clean_model(n), SHAPES_TASKS[n], *setting.test[n]) for n in setting.names},
            {n: task_accuracy(pre, SHAPES_TASKS[n], *setting.test[n]) for n in setting.names}))
        values["finetuned_accuracy_mean"] = sum(before[0].values()) / len(before[0])
        values["pretrained_accuracy_mean"] = sum(before[1].values()) / len(before[1])
        attack, _ = build_method(self.attack_kinds, self._attack_config(cell))
        noise = None
        if "merged_asr_noise" in cell["metrics"]:
            noise = noise_patch(attack.patch_size, attack.position)
            values["merged_asr_noise"] = attack_success_rate(merged.model, goal_task, x_goal, y_goal, noise, target)
        record = attacked.info["record"]
        how = (f"{cell['attack']['name']} ({record['mode']}-task: target {target!r} of task {goal_task.name!r}) in the "
               f"{cell['attacker_task']!r} task model of {cell['model']}, merged by {cell['merging']['name']} with the "
               f"clean task models of {', '.join(n for n in setting.names if n != cell['attacker_task'])} "
               f"({_finetune_words(cell['finetune'])})")
        threat = {"adv": f"{how}; triggered {goal_task.name} test scenes",
                  "merged_clean": f"clean test scenes of each task on the merged model ({how})",
                  "control": (f"the clean merge: {cell['merging']['name']} over clean task models of "
                              f"{', '.join(setting.names)} ({_finetune_words(cell['finetune'])}), no backdoor"),
                  "noise": f"a fixed uniform-noise patch of the trigger's size and place on the merged model ({how})",
                  "alone": f"the attacker's backdoored {cell['attacker_task']!r} task model alone, before merging",
                  "clean": f"each clean task model alone on its own task ({_finetune_words(cell['finetune'])})",
                  "pretrained": f"the pre-trained {cell['model']} zero-shot, with each task's frozen head",
                  "cost": f"wall-clock cost ({how})"}
        params = {k: v for k, v in method_params(attack).items()}
        params["merging"] = cell["merging"]["name"]  # the task's axis, shown beside the attack's parameters
        if cell["merging"]["params"]:
            params["merging_params"] = cell["merging"]["params"]
        baseline = None if noise is None else {"pattern": "noise", "size": attack.patch_size,
                                               "position": attack.position}
        values = {k: v for k, v in values.items() if k in cell["metrics"]}
        return CellOutput(values, lambda m: threat[THREAT_KINDS.get(m, "adv")], [], params, baseline,
                          int(y_goal.shape[0]))

    @staticmethod
    def _attack_config(cell: dict) -> dict:
        """The cell's attack with the cell's seed as its seed, unless the spec set one."""
        params = dict(cell["attack"]["params"])
        params.setdefault("seed", int(cell["seed"]))
        return {"name": cell["attack"]["name"], "params": params}

    def _attacked(self, ctx: Any, cell: dict, setting: _Setting) -> Trained:
        """The attacker's backdoored task model (built once per attack, setting and seed)."""
        config = self._attack_config(cell)
        key = {"merging_attack": setting.key(), "attack": config, "attacker_task": cell["attacker_task"],
               "target_images": int(cell["target_images"])}

        def build() -> Trained:
            attack, _ = build_method(self.attack_kinds, config)
            x, y = setting.train[cell["attacker_task"]]
            target_pixels = None
            if attack.target_task != cell["attacker_task"]:  # off-task: a few images of the target class
                goal = SHAPES_TASKS[attack.target_task]
                px, py = goal.data(MERGING_TARGET_POOL.split, MERGING_TARGET_POOL.start, MERGING_TARGET_POOL.count,
                                   world_seed=setting.world_seed, image_size=setting.image_size)
                target_pixels = px[py == goal.class_index(attack.target)][:int(cell["target_images"])]
                if target_pixels.shape[0] == 0:
                    raise ValueError(f"no scene of target class {attack.target!r} in {MERGING_TARGET_POOL}")
            # the attacker names its tasks among the shapes world's; off-task, the world's other classes are its
            # shadow classes (its stand-in vocabulary; the paper: 300 ImageNet classes), whatever the merge holds
            result = attack(setting.pre, cell["attacker_task"], x, y, target_pixels=target_pixels, tasks=SHAPES_TASKS)
            record = result.record
            info = {"trigger": result.trigger.to_dict(), "target_task": record.target_task, "target": record.target,
                    "seconds": float(result.seconds),
                    "record": {"mode": record.mode, "attacker_task": record.attacker_task,
                               "target_task": record.target_task, "target": record.target,
                               "target_index": record.target_index, "bd_classes": list(record.bd_classes)}}
            return Trained(result.model.eval(), info)

        return ctx.trained(key, build, base=cell["model"])


def _finetune_words(ft: dict) -> str:
    return f"{ft['steps']} fine-tuning steps of {ft['batch_size']} at lr {ft['lr']:g} on {ft['n_train']} scenes per task"


class _Setting:
    """The cell's shared material: the pre-trained model, each task's data and clean model, merges."""

    def __init__(self, ctx: Any, cell: dict):
        self.ctx, self.cell = ctx, cell
        self.pre = ctx.load_model(cell["model"])
        self.names = list(cell["tasks"])
        data = cell["data"]
        self.image_size = int(data.get("image_size") or image_size_of(self.pre))
        self.world_seed = int(data.get("seed", 0))
        n_train, n_test = int(cell["finetune"]["n_train"]), int(data["n"])
        split = data.get("split", "test")
        self.train = {n: ctx.cached({"merging_data": "train", "task": n, "n": n_train, "world": self.world_seed,
                                     "image_size": self.image_size},
                                    lambda n=n: SHAPES_TASKS[n].data("train", 0, n_train, self.world_seed,
                                                                     self.image_size))
                      for n in self.names}
        self.test = {n: ctx.cached({"merging_data": split, "task": n, "n": n_test, "world": self.world_seed,
                                    "image_size": self.image_size},
                                   lambda n=n: SHAPES_TASKS[n].data(split, 0, n_test, self.world_seed,
                                                                    self.image_size))
                     for n in self.names}

    def key(self, **more: Any) -> dict:
        return {"model": self.cell["model"], "tasks": self.names, "finetune": self.cell["finetune"],
                "seed": int(self.cell["seed"]), "world": self.world_seed, "image_size": self.image_size,
                "data": self.cell["data"], **more}

    def clean_model(self, name: str) -> Any:
        """The clean task model of ``name`` (fine-tuned once per model, task, settings and seed)."""
        from ...merging import finetune_tower

        ft = self.cell["finetune"]
        key = {"merging_task_model": self.cell["model"], "task": name, "finetune": ft, "seed": int(self.cell["seed"]),
               "world": self.world_seed, "image_size": self.image_size}

        def build() -> Trained:
            result = finetune_tower(self.pre, SHAPES_TASKS[name], *self.train[name], steps=int(ft["steps"]),
                                    lr=float(ft["lr"]), batch_size=int(ft["batch_size"]),
                                    generator=int(self.cell["seed"]))
            return Trained(result.model.eval(), {"seconds": float(result.seconds)})

        return self.ctx.trained(key, build, base=self.cell["model"]).model

    def merged(self, method_cfg: dict, attacked: Trained | None) -> Trained:
        """The merge by ``method_cfg`` of the clean task models, the attacker's replaced by ``attacked`` (None: the
        clean merge)."""
        from ...merging import AdaMerging, RegMean, task_head
        from ...methods import build

        attack_key = None if attacked is None else {"attack": MergingTask._attack_config(self.cell),
                                                    "attacker_task": self.cell["attacker_task"],
                                                    "target_images": int(self.cell["target_images"])}
        key = {"merged": self.key(), "merging": method_cfg, "backdoored": attack_key}

        def build_merge() -> Trained:
            method = build("merging", method_cfg, "merging")
            models = [attacked.model if (attacked is not None and n == self.cell["attacker_task"])
                      else self.clean_model(n) for n in self.names]
            data = None
            if isinstance(method, RegMean):
                data = [self.train[n][0] for n in self.names]
            elif isinstance(method, AdaMerging):
                data = [(self.test[n][0], task_head(self.pre, SHAPES_TASKS[n])) for n in self.names]
            result = method(self.pre, models, data)
            return Trained(result.model.eval(), {"seconds": float(result.seconds)})

        return self.ctx.trained(key, build_merge, base=self.cell["model"])


__all__ = ["FinetuneSpec", "MergingBlock", "MergingTask"]
