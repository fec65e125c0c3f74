"""Spec validation: every error names the field path and what is allowed, with no pydantic noise."""

from pathlib import Path

import pytest
from runs_helpers import tiny_spec

from mmsec.runs import SpecError, expand, load_spec
from mmsec.runs.spec import parse_number

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def _error(source) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(source)
    msg = str(info.value)
    assert "pydantic" not in msg and "errors.pydantic.dev" not in msg and "Value error" not in msg
    return msg


def test_valid_spec_is_normalised():
    spec = load_spec(tiny_spec())
    assert spec.attack.params["eps"] == [2 / 255, 8 / 255]
    assert spec.attack.params["alpha"] == "eps/4"
    # the baseline's metric is always stored when a baseline runs
    assert "noise_accuracy" in spec.metrics
    assert load_spec(spec) == spec  # idempotent


def test_unknown_attack_lists_close_names():
    msg = _error(tiny_spec(attack={"name": "pdg", "params": {}}))
    assert "attack.name" in msg and "'pdg'" in msg and "Did you mean 'pgd'" in msg
    assert "fgsm" in msg and "noise" in msg  # the registered attacks are listed


def test_eps_out_of_range_names_field_path():
    msg = _error(tiny_spec(attack={"name": "pgd", "params": {"eps": ["1/255", "2/255", 2.0]}}))
    assert "attack.params.eps[2]" in msg and "[0, 1]" in msg and "8/255" in msg
    msg = _error(tiny_spec(attack={"name": "pgd", "params": {"eps": 2.0}}))
    assert "attack.params.eps:" in msg
    msg = _error(tiny_spec(attack={"name": "pgd", "params": {"eps": "eight"}}))
    assert "attack.params.eps" in msg and "'eight'" in msg


def test_unknown_field_and_unknown_param():
    msg = _error(tiny_spec(seeds=[0, 1]))
    assert "seeds: unknown field 'seeds'" in msg and "Did you mean 'seed'?" in msg
    msg = _error(tiny_spec(data={"name": "shapes", "n": 32, "nn": 3}))
    assert "data.nn: unknown field" in msg
    msg = _error(tiny_spec(attack={"name": "pgd", "params": {"alpah": 0.01}}))
    assert "attack.params.alpah" in msg and "Did you mean 'alpha'?" in msg


def test_unknown_task_metric_dataset_and_model_names():
    msg = _error(tiny_spec(task="zeroshoot"))
    assert "task: unknown task 'zeroshoot'" in msg and "Did you mean 'zeroshot'?" in msg
    msg = _error(tiny_spec(metrics=["robust_acuracy"]))
    assert "metrics[0]" in msg and "Did you mean 'robust_accuracy'" in msg
    msg = _error(tiny_spec(metrics=["i2t_r1_adv"]))
    assert "not computed for task 'zeroshot'" in msg
    msg = _error(tiny_spec(data={"name": "shape", "n": 32}))
    assert "data.name" in msg and "Did you mean 'shapes'?" in msg
    msg = _error(tiny_spec(model="shapes-clip-resnet"))
    assert "model: 'shapes-clip-resnet' must be 'zoo:NAME'" in msg and "Did you mean 'zoo:shapes-clip-resnet'?" in msg
    msg = _error(tiny_spec(attack={"name": "pgd", "params": {"eps": "8/255", "alpha": "eps/0"}}))
    assert "attack.params.alpha: 'eps/0' divides eps by zero" in msg
    msg = _error(tiny_spec(model=["zoo:shapes-clip-resnet", "zoo:shapes-clip-resnt"]))
    assert "model[1]" in msg and "Did you mean 'shapes-clip-resnet'" in msg


def test_type_errors_and_several_problems_at_once():
    msg = _error(tiny_spec(seed=[0, "a"], batch_size=0))
    assert "seed[1]: expected an integer, got 'a'" in msg
    assert "batch_size: input should be greater than 0" in msg
    assert "2 problems" in msg


def test_attack_rejection_is_reported():
    msg = _error(tiny_spec(attack={"name": "pgd", "params": {"norm": ["linf", "l3"]}}))
    assert "attack.params" in msg and "l3" in msg


def test_bad_yaml_and_missing_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nattack: {name: pgd\n")
    msg = _error(bad)
    assert "not valid YAML" in msg and "line" in msg and str(bad) in msg
    assert "not found" in _error(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    assert "top level must be a mapping" in _error(listy)


def test_parse_number():
    assert parse_number("8/255") == 8 / 255
    assert parse_number(" 0.5 ") == 0.5
    assert parse_number(1) == 1.0
    assert parse_number(True) is None and parse_number("eps/4") is None and parse_number("1/0") is None


def test_quickstart_recipe():
    spec = load_spec(RECIPES / "quickstart.yaml")
    cells = expand(spec)
    assert [c.config["attack"]["params"]["eps"] for c in cells] == [k / 255 for k in (1, 2, 4, 8)]
    assert [c.config["attack"]["params"]["alpha"] for c in cells] == [k / 255 / 4 for k in (1, 2, 4, 8)]
    assert spec.data.n == 1000 and spec.baseline == "noise" and spec.seeds == [0]
