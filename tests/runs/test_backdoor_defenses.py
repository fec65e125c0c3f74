"""Task backdoor with every kind of backdoor defense in one axis: sample detectors, model detectors, repairs.

The backdoored model is the one tests/runs/test_backdoor_task.py plants (PBCL, 3% of a 1,024-pair fine-tune):
the context's process-wide cache hands it over when that test ran first in this process.
"""

import json

import pytest
from runs_helpers import tiny_spec

from mmsec.runs.results import query
from mmsec.runs.runner import run_spec
from mmsec.runs.spec import SpecError, load_spec
from mmsec.runs.store import reading

DETECTION = ["detector_auroc", "detector_tpr_at_1fpr", "detector_flagged_poisoned", "detector_flagged_clean"]
MODEL_DETECTION = ["model_detector_score", "model_detector_score_control", "model_detector_flagged",
                   "model_detector_flagged_control", "model_detector_target_named"]


def defended_spec(**overrides) -> dict:
    base = dict(task="backdoor", data={"name": "shapes", "split": "test", "n": 150, "image_size": 32},
                attack={"name": "pbcl_backdoor", "params": {"target": "red circle", "trigger": "patch", "rate": 0.03}},
                training={"mode": "finetune", "pairs": 1024, "steps": 150, "batch_size": 64, "lr": 2e-3},
                metrics=["backdoor_asr", "backdoor_asr_undefended", "clean_accuracy", "clean_accuracy_undefended",
                         *DETECTION, *MODEL_DETECTION, "repair_bug_fixed", "repair_clean_cost_max"],
                save_artifacts=False)
    base.update(overrides)
    return tiny_spec("backdoor-defenses", **base)


@pytest.mark.parametrize("overrides, expected", [
    (dict(defense="kdist", attack={"name": "badencoder", "params": {"target": "red circle"}}),
     "tamper.*poison no data"),
    (dict(defense="slof", training={"mode": "pretrain", "steps": 10}), "streams fresh scenes"),
    (dict(defense={"name": "kdist", "params": {"k": 0}}), "defense.params: kdist rejected"),
    (dict(attack={"name": "pbcl_backdoor", "params": {"target": "blue banana"}}), "attack.params.target"),
    (dict(bug_reports=0), "bug_reports"),
])
def test_bad_defense_specs_are_named(overrides, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(defended_spec(**overrides))


def test_detectors_model_detectors_and_repairs_in_one_defense_axis(tmp_path):
    spec = defended_spec(defense=["none", "kdist", {"name": "seer", "params": {"steps": 20}},
                                  {"name": "mudjacking", "params": {"epochs": 2}}], bug_reports=2,
                         save_artifacts=True)
    summaries = run_spec(spec, tmp_path, quiet=True)
    assert [s["status"] for s in summaries] == ["done"] * 4, [s["error"] for s in summaries]
    by = {(r["defense"], r["metric"]): r["value"] for r in query(tmp_path, "backdoor-defenses")}
    undefended = by[("none", "backdoor_asr")]
    assert undefended >= 0.8  # the backdoor is there to defend against
    # a sample detector leaves the model as it is and finds the poisoned pairs (the ResNet fine-tune: AUROC ~0.97)
    assert by[("kdist", "backdoor_asr")] == undefended
    assert by[("kdist", "detector_auroc")] >= 0.9
    assert by[("kdist", "detector_tpr_at_1fpr")] >= 0.3 and by[("kdist", "detector_flagged_clean")] <= 0.05
    assert not any(m in {k[1] for k in by if k[0] == "none"} for m in DETECTION + MODEL_DETECTION)
    # a model detector scores both the backdoored model and its control, with its verdicts
    for m in MODEL_DETECTION:
        assert ("seer", m) in by
    assert by[("seer", "model_detector_flagged")] in (0.0, 1.0) and by[("seer", "backdoor_asr")] == undefended
    # a repair changes the model: the backdoor metrics are the repaired models' (mean over the 2 bug reports)
    assert by[("mudjacking", "backdoor_asr_undefended")] == undefended
    assert by[("mudjacking", "backdoor_asr")] != undefended
    assert 0.0 <= by[("mudjacking", "repair_bug_fixed")] <= 1.0 and by[("mudjacking", "repair_clean_cost_max")] >= -100
    threat = {r["metric"]: r["threat_model"] for r in query(tmp_path, "backdoor-defenses") if r["defense"] == "kdist"}
    assert threat["detector_auroc"].startswith("detector kdist on the image embeddings")
    # the sample detector's cell alone keeps its ROC curve (roc.json), the curve of the stored AUROC
    with reading(tmp_path) as conn:
        rocs = [(r[0], r[1]) for r in conn.execute("SELECT json_extract(r.cell_json, '$.defense.name'), a.path FROM "
                                                   "artifacts a JOIN runs r USING (run_id) WHERE a.kind = 'roc_json'")]
    assert [name for name, _ in rocs] == ["kdist"]
    (curve,) = json.loads((tmp_path / rocs[0][1]).read_text())["curves"]
    assert curve["metric"] == "detector_auroc" and curve["auroc"] == pytest.approx(by[("kdist", "detector_auroc")])
    assert curve["fpr"][0] == 0 and curve["tpr"][-1] == 1
