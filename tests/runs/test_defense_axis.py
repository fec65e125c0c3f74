"""Specs with a defense axis: each (model, defense) is trained once and evaluated at every eps."""

import json

import pytest
from runs_helpers import tiny_spec

from mmsec.runs.grid import expand
from mmsec.runs.results import format_results, query
from mmsec.runs.runner import run_spec
from mmsec.runs.spec import SpecError, load_spec
from mmsec.runs.tasks import common

# A deliberately tiny TeCoA: two optimisation steps, enough to exercise the plumbing.
TINY_TECOA = {"name": "tecoa", "params": {"eps": "2/255", "epochs": 1, "batch_size": 64, "lr": 1e-4},
              "data": {"name": "shapes", "split": "train", "n": 128, "image_size": 32}}


def defended_spec(**overrides) -> dict:
    overrides.setdefault("defense", ["none", TINY_TECOA])
    return tiny_spec("defended",
                     metrics=["clean_accuracy", "robust_accuracy", "i2t_r1", "defense_train_seconds"],
                     save_artifacts=False, **overrides)


def test_defense_axis_expands_and_keeps_undefended_hashes():
    cells = expand(defended_spec())
    assert [(c.config.get("defense") or {}).get("name", "none") for c in cells] == ["none", "none", "tecoa", "tecoa"]
    assert cells[2].config["defense"]["params"]["eps"] == pytest.approx(2 / 255)
    assert cells[0].label == "defense=none eps=2/255"
    # An undefended cell hashes as it did before defenses existed: stored results stay valid.
    plain = expand(tiny_spec("defended", metrics=["clean_accuracy", "robust_accuracy", "i2t_r1",
                                                  "defense_train_seconds"], save_artifacts=False))
    assert cells[0].cell_hash == plain[0].cell_hash


@pytest.mark.parametrize("defense, expected", [
    ({"name": "villa"}, "'zoo:shapes-clip-resnet' is a 'contrastive' model, but defense 'villa' needs a 'fusion' model"),
    ({"name": "tecoaa"}, "Did you mean 'tecoa'"),
    ({"name": "fare", "params": {"epsilon": 0.1}}, "defense.params.epsilon"),
    ({"name": "fare", "params": {"eps": 3.0}}, "defense.params"),
    ({"name": "fare", "data": {"name": "shapes", "split": "test", "n": 8}}, "must not train on the test split"),
])
def test_bad_defenses_are_named(defense, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(tiny_spec(defense=defense))


def test_each_defense_is_trained_once_and_its_cost_is_stored(tmp_path, monkeypatch):
    calls = []
    train = common.apply_defense

    def counting(*args, **kwargs):
        calls.append(args)
        return train(*args, **kwargs)

    monkeypatch.setattr(common, "apply_defense", counting)
    summaries = run_spec(defended_spec(), tmp_path, quiet=True)
    assert [s["status"] for s in summaries] == ["done"] * 4
    assert len(calls) == 1, "the TeCoA model is trained once and shared by both eps cells"
    rows = query(tmp_path, "defended")
    cost = {(r["defense"], r["params"]["eps"]): r["value"] for r in rows if r["metric"] == "defense_train_seconds"}
    assert all(v == 0 for (d, _), v in cost.items() if d == "none")
    assert all(v > 0 for (d, _), v in cost.items() if d == "tecoa")
    r1 = [r["value"] for r in rows if r["metric"] == "i2t_r1"]
    assert len(r1) == 4 and all(0 <= v <= 1 for v in r1)
    table = format_results(rows, "table")
    assert "defense" in table.splitlines()[1] and "tecoa" in table
    csv_header = format_results(rows, "csv").splitlines()[0].split(",")
    assert "defense" in csv_header and "defense_train_seconds" in csv_header
    assert json.loads(format_results(rows, "json"))


def test_a_defense_entry_can_name_the_models_it_is_for():
    other = "zoo:shapes-clip-vit"
    spec = defended_spec(model=["zoo:shapes-clip-resnet", other],
                         defense=["none", dict(TINY_TECOA, models=[other]),
                                  dict(TINY_TECOA, params=dict(TINY_TECOA["params"], lr=1e-3),
                                       models=["zoo:shapes-clip-resnet"])])
    cells = expand(spec)
    pairs = [(c.config["model"], (c.config.get("defense") or {}).get("params", {}).get("lr")) for c in cells]
    # each model: 2 eps undefended + 2 eps with its own TeCoA settings, never the other's
    assert pairs.count(("zoo:shapes-clip-resnet", 1e-3)) == 2 and pairs.count((other, 1e-4)) == 2
    assert ("zoo:shapes-clip-resnet", 1e-4) not in pairs and (other, 1e-3) not in pairs
    assert len(cells) == 8
    assert "models" not in cells[-1].config["defense"]  # the filter is not part of the cell's identity
    with pytest.raises(SpecError, match=r"defense\[1\]\.models: 'zoo:nope'"):
        load_spec(defended_spec(defense=["none", dict(TINY_TECOA, models=["zoo:nope"])]))
