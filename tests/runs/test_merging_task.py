"""Task merging: a backdoored task model in a merge of task models; spec checks, the backdoor through a merge
beside the clean merge (the control) and a noise patch (the baseline)."""

import pytest
from runs_helpers import tiny_spec

from mmsec.runs.grid import expand
from mmsec.runs.results import query
from mmsec.runs.runner import run_spec
from mmsec.runs.spec import SpecError, load_spec

METRICS = ["merged_asr", "clean_merge_asr", "task_model_asr", "merged_accuracy_mean", "clean_merge_accuracy_mean",
           "merged_accuracy_shape", "merged_accuracy_texture", "clean_merge_accuracy_shape",
           "clean_merge_accuracy_texture"]


def merging_spec(**overrides) -> dict:
    base = dict(task="merging", data={"name": "shapes", "split": "test", "n": 100, "image_size": 32},
                attack={"name": "badmerging", "params": {"target_task": "shape", "target": "circle", "steps": 5,
                                                         "trigger_steps": 2, "n_augment": 4, "augment_steps": 1,
                                                         "batch_size": 16, "bd_batch_size": 8}},
                tasks=["shape", "texture"], attacker_task="texture",
                finetune={"n_train": 64, "steps": 5, "batch_size": 16}, target_images=4,
                merging="task_arithmetic", baseline="noise", metrics=METRICS)
    base.update(overrides)
    return tiny_spec("merging-test", **base)


@pytest.mark.parametrize("overrides, expected", [
    (dict(data={"name": "imagefolder", "path": "x"}), "evaluates on the shapes world's tasks"),
    (dict(tasks=["shape", "colour"]), "tasks\\[1\\]: unknown shapes-world task 'colour'"),
    (dict(tasks=["shape", "shape"]), "tasks\\[1\\]: duplicate task 'shape'"),
    (dict(tasks=["texture"]), "a merge needs at least 2 tasks"),
    (dict(attacker_task="position"), "attacker_task: 'position' is not one of the merged tasks"),
    (dict(attack={"name": "badmerging", "params": {"target_task": "color", "target": "red"}}),
     "attack.params.target_task: 'color' is not one of the merged tasks"),
    (dict(attack={"name": "badmerging", "params": {"target_task": "shape", "target": "red"}}),
     "attack.params.target: target 'red' is not a class of task 'shape'"),
    (dict(attack={"name": "badmerging", "params": {"target": "circle"}}), "target_task"),
    (dict(attack={"name": "pbcl_backdoor", "params": {}}), "unknown merging attack 'pbcl_backdoor'"),
    (dict(merging=None), "merging: task 'merging' needs the merging methods"),
    (dict(merging=["ties", "tiez"]), "merging\\[1\\].name: unknown merging method 'tiez'"),
    (dict(merging={"name": "ties", "params": {"k": 500}}), "merging.params: ties rejected"),
    (dict(merging=["ties", "ties"]), "merging\\[1\\]: duplicate merging method"),
    (dict(defense="clean_finetune"), "the merging methods are the task's own axis"),
    (dict(finetune={"steps": 0}), "finetune.steps"),
])
def test_bad_merging_specs_are_named(overrides, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(merging_spec(**overrides))


def test_the_merging_methods_are_the_innermost_axis():
    with pytest.raises(SpecError, match="only task 'merging' fine-tunes task models on named shapes-world tasks"):
        load_spec(tiny_spec(tasks=["shape"]))
    cells = expand(merging_spec(merging=["weight_averaging", {"name": "ties", "params": {"k": 10.0}}],
                                attack=[{"name": "badmerging", "params": {"target_task": "shape", "target": "circle"}},
                                        {"name": "patch_backdoor", "params": {"target_task": "shape",
                                                                              "target": "circle"}}]))
    assert [(c.config["attack"]["name"], c.config["merging"]) for c in cells] == [
        ("badmerging", {"name": "weight_averaging", "params": {}}), ("badmerging", {"name": "ties", "params": {"k": 10.0}}),
        ("patch_backdoor", {"name": "weight_averaging", "params": {}}),
        ("patch_backdoor", {"name": "ties", "params": {"k": 10.0}})]
    assert cells[0].config["finetune"] == {"n_train": 64, "steps": 5, "lr": 1e-4, "batch_size": 16}
    assert cells[0].config["tasks"] == ["shape", "texture"] and cells[0].config["attacker_task"] == "texture"


def test_badmerging_outlives_the_merge_where_the_plain_patch_fades(tmp_path):
    """Off-task (target "circle" of the shape task, attacker: the texture model) on the zoo ResNet, merged by task
    arithmetic at lambda 0.3, as tests/attacks/test_badmerging.py but through the runner: both backdoors are complete
    in the attacker's model alone; after the merge BadMerging's stays (measured 0.79) and the plain patch's fades
    (0.05); the same triggers do nothing to the clean merge (0.00), and the attacker's own task is kept. Clean
    task models are trained once and shared by both cells and both merges. (Not asserted, as it does not hold on
    the ResNet: a noise patch on BadMerging's merge scores about as high, see recipes/badmerging.yaml.)"""
    steps = {"steps": 200, "batch_size": 32, "bd_batch_size": 16, "trigger_steps": 20, "n_augment": 20,
             "augment_steps": 3}
    spec = merging_spec(attack=[{"name": "badmerging", "params": {"target_task": "shape", "target": "circle", **steps}},
                                {"name": "patch_backdoor", "params": {"target_task": "shape", "target": "circle",
                                                                      **steps}}],
                        finetune={"n_train": 512, "steps": 60, "batch_size": 32}, target_images=10,
                        merging={"name": "task_arithmetic", "params": {"lam": 0.3}},
                        data={"name": "shapes", "split": "test", "n": 300, "image_size": 32})
    summaries = run_spec(spec, tmp_path)
    assert [s["status"] for s in summaries] == ["done", "done"], summaries
    rows = {(r["attack"], r["metric"]): r for r in query(tmp_path, "merging-test")}
    bm = {m: rows[("badmerging", m)]["value"] for m in METRICS + ["merged_asr_noise"]}
    plain = {m: rows[("patch_backdoor", m)]["value"] for m in METRICS + ["merged_asr_noise"]}
    assert bm["task_model_asr"] >= 0.9 and plain["task_model_asr"] >= 0.9, (bm, plain)
    assert plain["merged_asr"] <= 0.3, plain  # the plain backdoor fades once merging scales its vector by 0.3
    assert bm["merged_asr"] >= plain["merged_asr"] + 0.3, (bm, plain)
    assert bm["merged_asr"] >= bm["clean_merge_asr"] + 0.5, bm  # the control: the trigger on the clean merge
    assert bm["merged_accuracy_texture"] >= 0.9 and bm["clean_merge_accuracy_mean"] >= 0.9, bm
    # one clean merge, measured in both cells: the same numbers
    assert bm["clean_merge_accuracy_shape"] == plain["clean_merge_accuracy_shape"]
    assert 0.0 <= bm["merged_asr_noise"] <= 1.0
    assert rows[("badmerging", "merged_asr")]["params"]["merging"] == "task_arithmetic(lam=0.3)"  # the axis value, as a parameter
    assert "clean merge" in rows[("badmerging", "clean_merge_asr")]["threat_model"]
    assert "off-task" in rows[("badmerging", "merged_asr")]["threat_model"]
    # the task models are persisted beside the results: a second run recomputes nothing
    assert len(list((tmp_path / "models").glob("*.safetensors"))) >= 4  # 2 clean, 2 backdoored (+ merges)
    assert all(s["status"] == "cached" for s in run_spec(spec, tmp_path))
