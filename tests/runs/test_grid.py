"""Grid expansion: cartesian product in a fixed order, stable hashes."""

import yaml
from runs_helpers import tiny_spec

from mmsec.runs import expand, load_spec, spec_hash


def test_expansion_counts_and_order():
    spec = tiny_spec(seed=[0, 1, 2], attack={"name": "pgd", "params": {
        "eps": ["1/255", "2/255"], "steps": [1, 3], "alpha": "eps/4"}})
    cells = expand(spec)
    assert len(cells) == 3 * 2 * 2
    got = [(c.config["seed"], c.config["attack"]["params"]["eps"], c.config["attack"]["params"]["steps"])
           for c in cells]
    assert got == [(s, e / 255, k) for s in (0, 1, 2) for e in (1, 2) for k in (1, 3)]
    assert [c.index for c in cells] == list(range(12))
    assert cells[0].label == "seed=0 eps=1/255 steps=1"
    assert all(c.config["attack"]["params"]["alpha"] == c.config["attack"]["params"]["eps"] / 4 for c in cells)


def test_models_are_the_outer_axis():
    cells = expand(tiny_spec(model=["zoo:shapes-clip-resnet", "zoo:shapes-clip-vit"]))
    assert [c.config["model"] for c in cells] == ["zoo:shapes-clip-resnet"] * 2 + ["zoo:shapes-clip-vit"] * 2


def test_hashes_are_stable(tmp_path):
    a = expand(tiny_spec())
    path = tmp_path / "spec.yaml"
    # same spec from YAML, keys in another order, eps written as floats
    raw = tiny_spec()
    raw["attack"]["params"]["eps"] = [2 / 255, 8 / 255]
    path.write_text(yaml.safe_dump(dict(reversed(list(raw.items()))), sort_keys=False))
    b = expand(path)
    assert [c.cell_hash for c in a] == [c.cell_hash for c in b]
    assert spec_hash(tiny_spec()) == spec_hash(path)
    assert len({c.cell_hash for c in a}) == len(a)
    assert all(len(c.cell_hash) == 64 for c in a)


def test_changes_change_hashes_but_extending_a_list_keeps_the_others():
    base = expand(tiny_spec())
    other_seed = expand(tiny_spec(seed=1))
    assert not {c.cell_hash for c in base} & {c.cell_hash for c in other_seed}
    extended = expand(tiny_spec(attack={"name": "pgd", "params": {
        "eps": ["2/255", "8/255", "16/255"], "alpha": "eps/4", "steps": 5}}))
    assert [c.cell_hash for c in extended[:2]] == [c.cell_hash for c in base]
    assert spec_hash(tiny_spec()) != spec_hash(tiny_spec(seed=1))
    assert load_spec(tiny_spec()).model_dump() == load_spec(tiny_spec()).model_dump()
