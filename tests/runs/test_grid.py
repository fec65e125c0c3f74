"""Grid expansion: cartesian product in a fixed order, stable hashes."""

import pytest
import yaml
from runs_helpers import tiny_spec

from mmsec.runs import expand, load_spec, spec_hash
from mmsec.runs.spec import SpecError


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


def test_a_list_of_attacks_is_an_axis_and_keeps_single_attack_hashes():
    pgd = tiny_spec()["attack"]
    fgsm = {"name": "fgsm", "params": {"eps": "4/255"}}
    cells = expand(tiny_spec(attack=[pgd, fgsm]))
    assert [(c.config["attack"]["name"], c.config["attack"]["params"]["eps"]) for c in cells] == [
        ("pgd", 2 / 255), ("pgd", 8 / 255), ("fgsm", 4 / 255)]
    assert cells[0].label == "attack=pgd eps=2/255" and cells[2].label == "attack=fgsm eps=4/255"
    # the pgd cells are the cells of the pgd-only spec: its stored results stay valid
    assert [c.cell_hash for c in cells[:2]] == [c.cell_hash for c in expand(tiny_spec())]


def test_problems_in_a_list_of_attacks_name_the_entry():
    pgd = tiny_spec()["attack"]
    with pytest.raises(SpecError, match=r"attack\[1\]\.params\.eps"):
        load_spec(tiny_spec(attack=[pgd, {"name": "fgsm", "params": {"eps": 3}}]))
    with pytest.raises(SpecError, match=r"attack\[1\]\.name: unknown attack 'pdg'"):
        load_spec(tiny_spec(attack=[pgd, {"name": "pdg"}]))
    with pytest.raises(SpecError, match=r"attack\[1\]: duplicate entry"):
        load_spec(tiny_spec(attack=[pgd, pgd]))
    with pytest.raises(SpecError, match="attack: empty list"):
        load_spec(tiny_spec(attack=[]))


def test_resample_gives_each_seed_its_own_scenes_and_keeps_seed_0s_cells():
    plain = expand(tiny_spec(seed=[0, 1, 2]))
    raw = tiny_spec(seed=[0, 1, 2])
    raw["data"] = {**raw["data"], "resample": True}
    resampled = expand(raw)
    n = raw["data"]["n"]
    starts = {c.config["seed"]: c.config["data"].get("start") for c in resampled}
    assert starts == {0: None, 1: n, 2: 2 * n}  # disjoint samples, in order
    assert all("resample" not in c.config["data"] for c in resampled)
    seed0 = [c.cell_hash for c in resampled if c.config["seed"] == 0]
    assert seed0 == [c.cell_hash for c in plain if c.config["seed"] == 0]  # results of seed 0 are reused
    assert {c.cell_hash for c in resampled} & {c.cell_hash for c in plain} == set(seed0)


def test_resample_offsets_an_explicit_start_and_needs_the_shapes_world():
    raw = tiny_spec(seed=3)
    raw["data"] = {**raw["data"], "start": 100, "resample": True}
    cell = expand(raw)[0]
    assert cell.config["data"]["start"] == 100 + 3 * raw["data"]["n"]
    bad = tiny_spec()
    bad["data"] = {"name": "imagefolder", "path": ".", "resample": True}
    with pytest.raises(SpecError, match="data.resample"):
        load_spec(bad)
