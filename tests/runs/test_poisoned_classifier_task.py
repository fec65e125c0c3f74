"""Task poisoned_classifier: PSBD through the runner on the smoke-size victim of recipes/psbd.yaml.

One cell, run once per module (~15 CPU-s: a ShapesClassifier (16, 32, 48) trained 400 steps on 500 shapes
scenes, 10% BadNets-poisoned to class 0). Measured (seed 0): detection_auroc 0.990, flagged 0.96 of the poisoned
and 0.04 of the clean samples, the max-softmax baseline 0.971, ASR 0.91, clean accuracy 0.575 (48 classes).
"""

import json
from pathlib import Path

import numpy as np
import pytest

from mmsec.runs.results import query
from mmsec.runs.runner import run_spec
from mmsec.runs.spec import SpecError, load_spec
from mmsec.runs.store import reading

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "psbd.yaml"


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("psbd")
    spec = load_spec(RECIPE, preset="smoke").model_copy(update={"save_artifacts": True})  # (+ roc.json)
    summaries = run_spec(spec, folder, quiet=True)
    assert [s["status"] for s in summaries] == ["done"]
    return {r["metric"]: {**r, "folder": folder} for r in query(folder, "psbd-smoke")}


def test_psbd_finds_the_poisoned_training_samples_through_the_runner(rows):
    assert rows["victim_asr"]["value"] >= 0.8  # the backdoor was learnt (measured 0.91)
    assert rows["detection_auroc"]["value"] >= 0.9  # measured 0.990
    assert rows["flagged_poisoned"]["value"] >= 0.8 and rows["flagged_clean"]["value"] <= 0.15  # 0.96, 0.04
    baseline = rows["confidence_auroc"]
    # measured 0.971: on this victim the confidence ranks them too (the trigger is learnt more surely than 48
    # classes from 450 clean images), so PSBD's margin over it is small here
    assert baseline["value"] >= 0.8 and "baseline" in baseline["definition"]
    assert "max-softmax" in baseline["threat_model"]
    assert all(r["definition"] for r in rows.values())
    assert rows["detection_auroc"]["params"]["detector"]["name"] == "psbd"


def test_the_detector_and_its_baseline_leave_their_roc_curves(rows):
    folder = rows["detection_auroc"]["folder"]
    with reading(folder) as conn:
        (path,) = [r[0] for r in conn.execute("SELECT path FROM artifacts WHERE kind = 'roc_json'")]
    curves = {c["metric"]: c for c in json.loads((folder / path).read_text())["curves"]}
    assert set(curves) == {"detection_auroc", "confidence_auroc"} and curves["detection_auroc"]["label"] == "psbd"
    for metric, c in curves.items():  # each curve is the one whose area was stored
        assert c["auroc"] == pytest.approx(rows[metric]["value"], abs=1e-6)
        assert np.trapezoid(c["tpr"], c["fpr"]) == pytest.approx(c["auroc"], abs=0.01)
        assert c["n_positive"] + c["n_negative"] == 500 and c["n_positive"] == 50


@pytest.mark.parametrize("overrides, expected", [
    (dict(defense=None), "needs a sample detector of family 'classifier'; registered: psbd"),
    (dict(defense="kdist"), "defense 'kdist' scores embeddings"),
    (dict(data={"name": "shapes", "split": "test", "n": 6000}), "overlap the detector's validation scenes"),
    (dict(victim={"target": "purple blob"}), "victim.target"),
    (dict(baseline="noise"), "set `baseline: null`"),
])
def test_bad_poisoned_classifier_specs_are_named(overrides, expected):
    spec = load_spec(RECIPE).model_dump()
    spec.update(overrides)
    spec.pop("presets", None)
    with pytest.raises(SpecError, match=expected):
        load_spec(spec)


def test_the_backdoor_task_sends_psbd_here():
    spec = load_spec(Path(__file__).resolve().parents[2] / "recipes" / "outlier_detection.yaml").model_dump()
    spec.update(defense="psbd")
    spec.pop("presets", None)
    with pytest.raises(SpecError, match="use task 'poisoned_classifier'"):
        load_spec(spec)
