"""Task backdoor: a poisoning attack, the victim's training, the backdoor measured; spec checks, store, record."""

import json

import pytest
from runs_helpers import tiny_spec

from mmsec.attacks.backdoor import PoisonRecord
from mmsec.attacks.backdoor.triggers import trigger_from_dict
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
    (dict(attack={"name": "badclip", "params": {"target": "red circle", "lr": -1}}), "lr"),
    (dict(defense="roclip"), "pre-training defense: it needs task 'backdoor' with training"),
    (dict(training={"mode": "finetune", "epochs": 3}), "only mode 'pretrain' trains in epochs"),
    (dict(training={"mode": "pretrain", "epochs": 3, "steps": 10}), "not both"),
    (dict(training={"mode": "pretrain", "epochs": 3, "pairs": 512},
          defense={"name": "safeclip", "params": {"epochs": 2}}), "set training.epochs"),
])
def test_bad_backdoor_specs_are_named(overrides, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(backdoor_spec(**overrides))


def test_training_belongs_to_the_backdoor_task_only():
    with pytest.raises(SpecError, match="only these tasks have this field: 'backdoor' \\(trains the victim\\)"):
        load_spec(tiny_spec(training={"steps": 10}))
    assert "training" not in expand(tiny_spec())[0].config  # other tasks' cell hashes are unchanged
    cell = expand(backdoor_spec(training=None))[0].config
    assert cell["training"] == {"mode": "finetune", "steps": 300, "pairs": 4096, "batch_size": 64, "lr": 2e-3}


def test_a_backdoor_grid_plants_the_backdoor_and_stores_the_ground_truth(tmp_path):
    spec = backdoor_spec(attack={"name": "pbcl_backdoor", "params": {"target": "red circle", "trigger": "patch",
                                                                      "rate": [0.03, 0.002]}},
                         metrics=["backdoor_asr", "clean_accuracy", "clean_accuracy_control", "clean_accuracy_drop",
                                  "backdoor_asr_probe", "backdoor_asr_control", "n_poisoned", "detection_auroc"])
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
    # the planted pairs sit apart in the poisoned model's embedding space: k-dist finds them (measured 0.96)
    assert rows[(0.03, "detection_auroc")] >= 0.9, rows
    # The record of what was poisoned is stored beside the results and rebuilds the trigger.
    records = sorted(tmp_path.glob("artifacts/backdoor-test/*/poison_record.json"))
    assert len(records) == 2
    loaded = [PoisonRecord.from_dict(json.loads(p.read_text())["record"]) for p in records]
    assert sorted(r.n_poisoned for r in loaded) == [2, 32]
    assert all(r.target == "red circle" and r.trigger["name"] == "patch" for r in loaded)
    assert all(s["status"] == "cached" for s in run_spec(spec, tmp_path))


def test_a_defense_cleans_the_poisoned_model_of_the_same_cell(tmp_path):
    """defense: [none, clean_finetune] -> the poisoned model is trained once and cleaned in the second cell."""
    spec = backdoor_spec(defense=["none", {"name": "clean_finetune", "params": {"steps": 150, "lr": 3e-3},
                                           "data": {"name": "shapes", "split": "val", "n": 1024}}],
                         metrics=["backdoor_asr", "backdoor_asr_undefended", "clean_accuracy",
                                  "clean_accuracy_undefended", "clean_accuracy_cost", "defense_train_seconds"])
    assert [s["status"] for s in run_spec(spec, tmp_path)] == ["done"] * 2
    rows = {(r["defense"], r["metric"]): r["value"] for r in query(tmp_path, "backdoor-test")}
    none = {m: rows[("none", m)] for m in ("backdoor_asr", "backdoor_asr_undefended", "clean_accuracy_cost",
                                           "defense_train_seconds")}
    assert none["backdoor_asr"] == none["backdoor_asr_undefended"] and none["clean_accuracy_cost"] == 0, none
    assert none["defense_train_seconds"] == 0
    # the defended cell starts from the very same poisoned model (trained once, shared) ...
    assert rows[("clean_finetune", "backdoor_asr_undefended")] == none["backdoor_asr"] >= 0.6, rows
    assert rows[("clean_finetune", "defense_train_seconds")] > 0
    # ... and an aggressive clean fine-tune (lr 3e-3) erases this corner checkerboard (measured 0.94 -> 0.00)
    assert rows[("clean_finetune", "backdoor_asr")] <= none["backdoor_asr"] - 0.5, rows
    assert rows[("clean_finetune", "clean_accuracy_cost")] <= 3.0, rows


def test_badclip_optimises_its_patch_on_the_clean_model_inside_the_cell(tmp_path):
    spec = backdoor_spec(attack={"name": "badclip", "params": {"target": "red circle", "rate": 0.03, "steps": 5}},
                         training={"mode": "finetune", "pairs": 256, "steps": 5, "batch_size": 32, "lr": 2e-3},
                         data={"name": "shapes", "split": "test", "n": 60, "image_size": 32},
                         metrics=["backdoor_asr", "n_poisoned"])
    assert [s["status"] for s in run_spec(spec, tmp_path)] == ["done"]
    (path,) = tmp_path.glob("artifacts/backdoor-test/*/poison_record.json")
    saved = json.loads(path.read_text())
    assert saved["trigger"]["name"] == "optimized_patch" and saved["record"]["n_poisoned"] == 8
    trigger = trigger_from_dict(saved["trigger"])  # the 4 x 4 patch the attack optimised (stage 1), rebuilt
    assert tuple(trigger.pattern.shape) == (3, 4, 4) and trigger.position == "bottom_right"


def test_a_model_tampering_attack_runs_in_the_same_task_against_the_published_model(tmp_path):
    """BadEncoder (kind model_backdoors) changes the model itself: no poisoned pairs, the control is the zoo model."""
    spec = backdoor_spec(attack={"name": "badencoder", "params": {"target": "red circle", "epochs": 1,
                                                                  "batch_size": 64}},
                         training={"mode": "finetune", "pairs": 256},
                         data={"name": "shapes", "split": "test", "n": 60, "image_size": 32},
                         metrics=["backdoor_asr", "clean_accuracy_control", "n_poisoned", "train_seconds",
                                  "detection_auroc"])
    assert [s["status"] for s in run_spec(spec, tmp_path)] == ["done"]
    rows = {r["metric"]: r for r in query(tmp_path, "backdoor-test")}
    assert "detection_auroc" not in rows  # no poisoned training set to detect in
    assert rows["n_poisoned"]["value"] == 0 and rows["train_seconds"]["value"] > 0
    assert rows["clean_accuracy_control"]["threat_model"] == "the published clean model"
    assert rows["clean_accuracy_control"]["value"] >= 0.95  # the shipped model, untouched
    (path,) = tmp_path.glob("artifacts/backdoor-test/*/poison_record.json")
    saved = json.loads(path.read_text())
    assert saved["record"]["kind"] == "badencoder" and saved["record"]["shadow_size"] == 256
    assert saved["record"]["reference_indices"][0] >= 90_000 and saved["trigger"]["name"] == "patch"


def test_a_pretraining_defense_trains_the_victim_in_place_of_plain_training(tmp_path):
    # 1 epoch over 512 pairs + 16 poisoned: far too short to plant anything; what is checked is the
    # wiring -- the defended and the plain training of one cell, the cost between them, the cell hash.
    spec = backdoor_spec(training={"mode": "pretrain", "pairs": 512, "epochs": 1}, defense=["none", "roclip"],
                         metrics=["backdoor_asr", "backdoor_asr_undefended", "clean_accuracy",
                                  "clean_accuracy_undefended", "clean_accuracy_cost", "defense_train_seconds"])
    cells = expand(load_spec(spec))
    assert cells[0].config["training"] == {"mode": "pretrain", "epochs": 1, "pairs": 512}
    assert [s["status"] for s in run_spec(spec, tmp_path)] == ["done", "done"]
    rows = {(r["defense"], r["metric"]): r for r in query(tmp_path, "backdoor-test")}
    plain, roclip = rows[("none", "clean_accuracy")]["value"], rows[("roclip", "clean_accuracy")]["value"]
    assert rows[("roclip", "clean_accuracy_undefended")]["value"] == pytest.approx(plain)
    assert rows[("roclip", "clean_accuracy_cost")]["value"] == pytest.approx(100 * (plain - roclip))
    assert rows[("roclip", "defense_train_seconds")]["value"] > 0
    assert "pre-trained with defense roclip instead" in rows[("roclip", "backdoor_asr")]["threat_model"]


def test_backdoored_and_control_gives_a_cell_s_two_models(tmp_path):
    """The tampered model and, as its control, the published model; the context's cache hands back the same
    objects on a second call, and a new process on the same results folder loads the persisted model."""
    import torch

    from mmsec.runs.context import CellContext, ModelCache
    from mmsec.runs.tasks.backdoored import backdoored, control
    from mmsec.zoo import load_model

    ctx = CellContext(tmp_path, cache=ModelCache())

    def backdoored_and_control(model, attack, training):
        bd = backdoored(ctx, model, attack, training, 0)
        return bd, control(ctx, model, bd, training, 0)

    attack = {"name": "badencoder", "params": {"target": "red circle", "epochs": 1, "batch_size": 64}}
    bd, control_model = backdoored_and_control("zoo:shapes-clip-resnet", attack, {"mode": "finetune", "pairs": 128})
    published = load_model("shapes-clip-resnet").state_dict()
    assert bd.tampered and bd.n_poisoned == 0 and bd.target == "red circle"
    assert all(torch.equal(v, published[k]) for k, v in control_model.state_dict().items())
    assert any(not torch.equal(v, published[k]) for k, v in bd.model.state_dict().items())
    again, _ = backdoored_and_control("zoo:shapes-clip-resnet", attack, {"pairs": 128, "mode": "finetune"})
    assert again.model is bd.model  # key order of the dicts does not matter
    # another process (a fresh cache) on the same results folder loads the persisted weights and facts
    fresh = backdoored(CellContext(tmp_path, cache=ModelCache()), "zoo:shapes-clip-resnet", attack,
                       {"mode": "finetune", "pairs": 128}, 0)
    assert fresh.model is not bd.model and fresh.record == bd.record and fresh.target == bd.target
    assert all(torch.equal(v, bd.model.state_dict()[k]) for k, v in fresh.model.state_dict().items())
