"""Every shipped recipe is a valid spec (so `mmsec run recipes/X.yaml` never fails on its own text)."""

from pathlib import Path

import pytest

from mmsec.runs.grid import expand
from mmsec.runs.spec import load_spec

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml"))


@pytest.mark.parametrize("path", RECIPES, ids=[p.stem for p in RECIPES])
def test_recipe_is_a_valid_spec(path):
    cells = expand(load_spec(path))
    assert cells and len({c.cell_hash for c in cells}) == len(cells)


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
