"""Task backdoor: a poisoning attack, the victim's training, the backdoor measured; spec checks, store, record."""

import json

import pytest
from runs_helpers import tiny_spec

from mmsec.attacks.backdoor import PoisonRecord
from mmsec.runs.grid import expand
from mmsec.runs.results import query
from mmsec.runs.runner import run_spec
from mmsec.runs.spec import SpecError, load_spec


def backdoor_spec(**overrides) -> dict:
    base = dict(task="backdoor", data={"name": "shapes", "split": "test", "n": 150, "image_size": 32},
                attack={"name": "pbcl_backdoor", "params": {"target": "red circle", "trigger": "patch",
                                                             "rate": 0.03}},
                training={"mode": "finetune", "pairs": 1024, "steps": 150, "batch_size": 64, "lr": 2e-3},
                metrics=["backdoor_asr", "clean_accuracy", "clean_accuracy_control", "clean_accuracy_drop",
                         "backdoor_asr_probe", "backdoor_asr_control", "n_poisoned"])
    base.update(overrides)
    return tiny_spec("backdoor-test", **base)


@pytest.mark.parametrize("overrides, expected", [
    (dict(data={"name": "imagefolder", "path": "x"}), "evaluates on the shapes world"),
    (dict(attack={"name": "pgd", "params": {}}), "unknown attack 'pgd' for task 'backdoor'"),
    (dict(attack={"name": "pbcl_backdoor", "params": {"target": "red circle", "trigger": "sig"}}),
     "trigger is not a patch"),
    (dict(attack={"name": "pbcl_backdoor", "params": {"target": "blue banana"}}), "blue banana"),
    (dict(training={"mode": "distill"}), "training.mode"),
    (dict(defense="fare"), "not supported with task 'backdoor'"),
])
def test_bad_backdoor_specs_are_named(overrides, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(backdoor_spec(**overrides))


def test_training_belongs_to_the_backdoor_task_only():
    with pytest.raises(SpecError, match="only task 'backdoor' trains the victim"):
        load_spec(tiny_spec(training={"steps": 10}))
    assert "training" not in expand(tiny_spec())[0].config  # other tasks' cell hashes are unchanged
    cell = expand(backdoor_spec(training=None))[0].config
    assert cell["training"] == {"mode": "finetune", "steps": 300, "pairs": 4096, "batch_size": 64, "lr": 2e-3}


def test_a_backdoor_grid_plants_the_backdoor_and_stores_the_ground_truth(tmp_path):
    spec = backdoor_spec(attack={"name": "pbcl_backdoor", "params": {"target": "red circle", "trigger": "patch",
                                                                      "rate": [0.03, 0.002]}})
    summaries = run_spec(spec, tmp_path)
    assert [s["status"] for s in summaries] == ["done", "done"]
    rows = {(r["params"]["rate"], r["metric"]): r["value"] for r in query(tmp_path, "backdoor-test")}
    # 32 poisoned pairs beside 1,024 clean ones: the patch now means "red circle" (measured 0.94 zero-shot, 0.78 probe);
    # without poisoning the same trigger does nothing (the control) and clean accuracy is kept.
    assert rows[(0.03, "n_poisoned")] == 32 and rows[(0.002, "n_poisoned")] == 2  # added: 32 / (1024 + 32) = 3%
    assert rows[(0.03, "backdoor_asr")] >= rows[(0.03, "backdoor_asr_control")] + 0.6, rows
    assert rows[(0.03, "backdoor_asr_probe")] >= 0.6, rows
    assert rows[(0.03, "backdoor_asr_noise")] <= 0.1, rows  # the baseline: a noise patch of the same size
    assert rows[(0.03, "clean_accuracy_drop")] <= 3.0 and rows[(0.03, "clean_accuracy")] >= 0.95, rows
    assert rows[(0.03, "clean_accuracy_control")] == rows[(0.002, "clean_accuracy_control")]  # one control
    # The record of what was poisoned is stored beside the results and rebuilds the trigger.
    records = sorted(tmp_path.glob("artifacts/backdoor-test/*/poison_record.json"))
    assert len(records) == 2
    loaded = [PoisonRecord.from_dict(json.loads(p.read_text())["record"]) for p in records]
    assert sorted(r.n_poisoned for r in loaded) == [2, 32]
    assert all(r.target == "red circle" and r.trigger["name"] == "patch" for r in loaded)
    assert all(s["status"] == "cached" for s in run_spec(spec, tmp_path))
