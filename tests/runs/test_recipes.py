"""Every shipped recipe is a valid spec (so `mmsec run recipes/X.yaml` never fails on its own text)."""

from pathlib import Path

import pytest

from mmsec.runs.grid import expand
from mmsec.runs.spec import SpecError, load_spec, preset_names

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_is_a_valid_spec(path):
    cells = expand(load_spec(path))
    assert cells and len({c.cell_hash for c in cells}) == len(cells)


PRESETS = [(p, name) for p in RECIPES for name in preset_names(p)]


@pytest.mark.parametrize("path, preset", PRESETS, ids=[f"{p.stem}-{n}" for p, n in PRESETS])
def test_every_preset_of_a_recipe_is_a_valid_spec(path, preset):
    spec = load_spec(path, preset=preset)
    cells = expand(spec)
    assert cells and len({c.cell_hash for c in cells}) == len(cells)
    assert spec.name == path.stem or spec.name == f"{path.stem}-{preset}"


@pytest.mark.parametrize("stem, task", [("badmerging", "merging"), ("targeted_poisoning", "targeted_poisoning"),
                                        ("corruptencoder", "ssl_backdoor")])
def test_the_study_recipes_have_the_three_size_presets(stem, task):
    """The studies that were benchmark scripts: smoke (under a minute), dev, paper (the published figure's setting,
    the recipe's body itself)."""
    path = next(p for p in RECIPES if p.stem == stem)
    assert {"smoke", "dev", "paper"} <= set(preset_names(path))
    paper, body = load_spec(path, preset="paper"), load_spec(path)
    assert paper.name == body.name == stem and paper.task == task
    assert [c.cell_hash for c in expand(paper)] == [c.cell_hash for c in expand(body)]
    assert len(expand(load_spec(path, preset="smoke"))) < len(expand(body))


def test_the_study_recipes_run_every_method_of_their_kinds():
    """Every registered merging method, merging attack, targeted poisoning and image poisoning runs from a recipe."""
    from mmsec.registry import entries

    def recipe(stem):
        return load_spec(next(p for p in RECIPES if p.stem == stem))

    bm = recipe("badmerging")
    merging = bm.block.merging
    assert {m if isinstance(m, str) else m.name for m in merging} == {e.name for e in entries("merging")}
    assert {a.name for a in bm.attacks} == {e.name for e in entries("merging_attacks")}
    targeted = {e.name for e in entries("poisoning") if getattr(e.factory, "kind", "") == "targeted"}
    assert {a.name for a in recipe("targeted_poisoning").attacks} == targeted
    assert {a.name for a in recipe("corruptencoder").attacks} == {e.name for e in entries("image_poisoning")}


def test_the_leaderboard_covers_every_registered_clip_defense():
    from mmsec.registry import entries

    spec = load_spec(next(p for p in RECIPES if p.stem == "robustness"))
    named = {d.name for d in spec.defenses if d is not None}
    assert named == {e.name for e in entries("defenses")
                     if getattr(e.factory, "model_kind", "") == "contrastive" and e.factory.threat == "evasion"}
    for m in spec.models:  # every defense on every model
        assert {d.name for d in spec.defenses if d is not None and d.applies_to(m)} == named
    assert set(spec.models) == {"zoo:shapes-clip-resnet", "zoo:shapes-clip-vit"}


def test_the_defense_matrix_covers_every_registered_backdoor_defense():
    from mmsec.registry import entries

    # the clean-ups of a trained model in one matrix, the pre-training defenses in the other
    specs = [load_spec(next(p for p in RECIPES if p.stem == stem))
             for stem in ("defense_matrix", "defense_matrix_pretraining")]
    named = {d.name for spec in specs for d in spec.defenses if d is not None}
    registered = [e for k in ("defenses", "pretraining_defenses") for e in entries(k)]
    assert named == {e.name for e in registered if getattr(e.factory, "threat", "") == "backdoor"}


SIZES = ("smoke", "dev", "paper")


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_recipe_has_the_three_size_presets_and_each_is_valid(path):
    assert set(SIZES) <= set(preset_names(path)), f"{path.name} lacks a size preset"
    sizes = {}
    for preset in SIZES:
        spec = load_spec(path, preset=preset)
        cells = expand(spec)
        assert cells and len({c.cell_hash for c in cells}) == len(cells)
        sizes[preset] = (len(cells), spec.name)
    # smoke is the small one (a minute): few cells, renamed apart from the recipe's own results
    assert sizes["smoke"][0] <= min(sizes["paper"][0], 6) and sizes["smoke"][1] != sizes["paper"][1]


def test_a_preset_merges_mappings_replaces_the_rest_and_renames(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("""
name: r
model: zoo:shapes-clip-resnet
data: {name: shapes, split: test, n: 500, image_size: 32}
attack: {name: pgd, params: {eps: [2/255, 4/255], steps: 10}}
presets:
  smoke: {data: {n: 10}, attack: {name: fgsm, params: {eps: 4/255}}}
  paper: {}
""")
    smoke = load_spec(recipe, preset="smoke")
    assert smoke.name == "r-smoke" and smoke.data.n == 10 and smoke.data.image_size == 32
    assert smoke.attack.name == "fgsm" and "steps" not in smoke.attack.params
    assert load_spec(recipe, preset="paper").name == "r" and load_spec(recipe).data.n == 500
    with pytest.raises(SpecError, match="no preset 'smok'.*Did you mean 'smoke'"):
        load_spec(recipe, preset="smok")


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_every_preset_a_recipe_declares_loads_and_expands(path):
    for preset in preset_names(path):  # the size presets and any other a recipe offers
        cells = expand(load_spec(path, preset=preset))
        assert cells and len({c.cell_hash for c in cells}) == len(cells), (path.name, preset)
def _strings(node) -> set[str]:
    if isinstance(node, dict):
        return {s for v in node.values() for s in _strings(v)}
    if isinstance(node, list):
        return {s for v in node for s in _strings(v)}
    return {node} if isinstance(node, str) else set()


def test_every_registered_method_runs_from_a_recipe_at_the_smoke_preset():
    """Each method of docs/METHODS.md is named in some recipe's smoke preset (so `--preset smoke` runs it)."""
    import yaml

    from mmsec import registry

    named: set[str] = set()
    for path in RECIPES:
        raw = yaml.safe_load(path.read_text())
        smoke = load_spec(path, preset="smoke")
        named |= _strings({**raw, **raw["presets"]["smoke"]}) if smoke else set()
        named |= {a.name for a in smoke.attacks} | {d.name for d in smoke.defenses if d is not None}
    methods = [e for k in registry.kinds() if k.name not in ("models", "datasets", "tasks", "triggers")
               for e in registry.entries(k.name)]
    missing = sorted(f"{e.kind}:{e.name}" for e in methods if e.name not in named)
    assert not missing, f"registered methods no recipe runs at its smoke preset: {missing}"
