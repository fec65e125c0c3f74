"""Task t2i_backdoor: a tiny cell end to end (BadT2I for 2 steps on the shipped zoo:shapes-t2i, judged by
zoo:shapes-judge): the metrics and their definitions, the backdoored model persisted and its result rebuilt from
the record (the pixel patch, the object pair), the recipe's presets. The effect is asserted in
tests/attacks/test_badt2i.py; recipes/t2i_backdoor.yaml measures it on the zoo model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from runs_helpers import tiny_spec

from mmsec.runs.grid import expand
from mmsec.runs.results import query
from mmsec.runs.runner import run_spec
from mmsec.runs.spec import SpecError, load_spec

METRICS = ["t2i_backdoor_effect", "t2i_backdoor_effect_clean", "t2i_backdoor_effect_reference", "patch_mse_median",
           "colour_adherence", "prompt_adherence", "prompt_adherence_reference", "prompt_adherence_drop", "train_seconds"]


def t2i_spec(**overrides) -> dict:
    base = dict(model="zoo:shapes-t2i", task="t2i_backdoor", data={"name": "shapes", "split": "train", "n": 32,
                                                                    "image_size": 16},
                attack=[{"name": "badt2i", "params": {"target_kind": "pixel", "steps": 2, "batch_size": 4}},
                        {"name": "badt2i", "params": {"target_kind": "object", "object_pair": "circle->cross",
                                                      "steps": 2, "batch_size": 4}}],
                per_class=1, steps=3, metrics=METRICS, baseline=None)
    base.update(overrides)
    return tiny_spec("t2i-backdoor-test", **base)


def test_bad_specs_are_named():
    with pytest.raises(SpecError, match="fine-tunes on captioned shapes-world scenes"):
        load_spec(t2i_spec(data={"name": "imagefolder", "path": "x"}))
    with pytest.raises(SpecError, match="object_pair must be two different words"):
        load_spec(t2i_spec(attack={"name": "badt2i", "params": {"target_kind": "object", "object_pair": "circle"}}))


def test_cells_end_to_end_and_the_model_is_reused(tmp_path):
    spec = t2i_spec()
    run_spec(spec, tmp_path)
    rows = query(tmp_path, "t2i-backdoor-test")
    by = {}
    for r in rows:
        by.setdefault(r["params"]["target_kind"], {})[r["metric"]] = r
    pixel, obj = by["pixel"], by["object"]
    assert set(METRICS) <= set(pixel) and set(METRICS) - {"patch_mse_median"} <= set(obj)
    for kind in (pixel, obj):
        for name in ("t2i_backdoor_effect", "t2i_backdoor_effect_clean", "t2i_backdoor_effect_reference",
                     "prompt_adherence"):
            assert 0.0 <= kind[name]["value"] <= 1.0
        assert kind["prompt_adherence_drop"]["value"] == pytest.approx(
            kind["prompt_adherence_reference"]["value"] - kind["prompt_adherence"]["value"])
    assert "with the trigger 'there'" in pixel["t2i_backdoor_effect"]["threat_model"]
    assert "the clean zoo:shapes-t2i" in pixel["t2i_backdoor_effect_reference"]["threat_model"]
    cards = [json.loads(p.read_text()) for p in (tmp_path / "models").glob("*.json")]
    assert sorted(c["info"]["target_kind"] for c in cards) == ["object", "pixel"]
    assert next(c for c in cards if c["info"]["target_kind"] == "object")["info"]["object_pair"] == ["circle", "cross"]
    # the same cells again under another name: the persisted models are loaded, the numbers repeat
    run_spec(dict(spec, name="t2i-backdoor-again"), tmp_path)
    assert len(list((tmp_path / "models").glob("*.json"))) == 2
    first = {(r["params"]["target_kind"], r["metric"]): r["value"] for r in rows if r["metric"] != "train_seconds"}
    second = {(r["params"]["target_kind"], r["metric"]): r["value"] for r in query(tmp_path, "t2i-backdoor-again")
              if r["metric"] != "train_seconds"}
    assert first == second


def test_the_recipe_presets():
    path = Path(__file__).resolve().parents[2] / "recipes" / "t2i_backdoor.yaml"
    paper = expand(load_spec(path))
    assert [c.config["attack"]["params"]["target_kind"] for c in paper] == ["pixel", "object", "style"]
    assert paper[1].config["attack"]["params"]["object_pair"] == "circle->cross"
    assert paper[2].config["attack"]["params"]["style_words"]["blue"] == "red"
    assert len(expand(load_spec(path, preset="smoke"))) == 1
