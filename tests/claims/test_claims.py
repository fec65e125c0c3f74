"""The claims ledger: verdicts from intervals, cell selection, claim specs over seeds, and a claim measured end to
end on a tiny recipe (3 seeds, each its own data sample), including a broken effect that must lose its verdict."""

import math
import sys
from pathlib import Path

import pytest
import yaml

from mmsec.claims import CLAIMS, Cells, Claim, MissingResult, claim_spec, evaluate_claims, run_claims, verdict
from mmsec.claims.table import format_claims
from mmsec.metrics.intervals import Interval
from mmsec.runs import expand, load_spec
from mmsec.runs.spec import apply_preset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runs"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from runs_helpers import tiny_spec  # noqa: E402

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


def iv(mean, low, high, n=3):
    return Interval(mean, low, high, n, 0.95, "t")


@pytest.mark.parametrize(("interval", "bar", "direction", "expected"), [
    (iv(0.6, 0.55, 0.65), 0.5, ">=", "reproduced"),
    (iv(0.4, 0.35, 0.45), 0.5, ">=", "not reproduced"),
    (iv(0.5, 0.45, 0.55), 0.5, ">=", "inconclusive"),
    (iv(0.5, 0.5, 0.55), 0.5, ">=", "reproduced"),  # the bar itself counts as cleared
    (iv(0.05, 0.02, 0.08), 0.1, "<=", "reproduced"),
    (iv(0.15, 0.12, 0.18), 0.1, "<=", "not reproduced"),
    (iv(0.9, math.nan, math.nan, n=1), 0.5, ">=", "inconclusive"),  # one seed: no interval, no verdict
    (None, 0.5, ">=", "not run"),
])
def test_verdict_reads_the_interval_against_the_bar(interval, bar, direction, expected):
    assert verdict(interval, bar, direction) == expected


def test_cells_select_by_field_and_parameter_with_fractions_as_numbers():
    recs = [{"model": "m", "defense": "none", "attack": "pgd", "target": None, "params": {"eps": 4 / 255},
             "metrics": {"asr": 0.7}},
            {"model": "m", "defense": "none", "attack": "pgd", "target": None, "params": {"eps": 8 / 255},
             "metrics": {"asr": 0.9}}]
    cells = Cells(recs, seed=0)
    assert cells.value("asr", eps="4/255") == 0.7
    assert cells.value("asr", attack="pgd", eps=8 / 255) == 0.9
    with pytest.raises(MissingResult, match="seed 0: no finished cell with asr where eps=2/255"):
        cells.value("asr", eps="2/255")
    with pytest.raises(MissingResult):
        cells.value("robust_accuracy", eps="4/255")
    with pytest.raises(ValueError, match="2 cells"):
        cells.value("asr", attack="pgd")
    assert [v for _, v in cells.values("asr", model="m")] == [0.7, 0.9]


def test_claim_rejects_a_bad_direction_or_version():
    with pytest.raises(ValueError, match="direction"):
        Claim("x", 1, "p", "s", "r.yaml", effect=lambda c: 0.0, bar=0.1, direction=">")
    with pytest.raises(ValueError, match="version"):
        Claim("x", 0, "p", "s", "r.yaml", effect=lambda c: 0.0, bar=0.1)


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.name)
def test_every_ledger_claim_has_its_recipe_preset_and_metrics(claim):
    spec = claim_spec(claim, "dev", seeds=3, recipes=RECIPES)
    assert spec.seeds == [0, 1, 2]
    assert claim.metrics and set(claim.metrics) <= set(spec.metrics), (claim.metrics, spec.metrics)
    assert claim.statement and claim.paper and claim.version >= 1
    # seed 0's cells are the preset's own cells: a plain `mmsec run --preset dev` counts towards the claim
    plain = load_spec(apply_preset(yaml.safe_load((RECIPES / claim.recipe).read_text()), "dev"))
    assert spec.name == plain.name
    seed0 = {c.cell_hash for c in expand(spec) if c.config["seed"] == 0}
    assert seed0 == {c.cell_hash for c in expand(plain) if c.config["seed"] == 0}


def test_ledger_names_are_unique():
    names = [c.name for c in CLAIMS]
    assert len(names) == len(set(names))


# -- end to end on a tiny recipe -----------------------------------------------------------------------------
def _pgd_gap(c: Cells) -> float:
    return c.value("noise_accuracy", eps="8/255") - c.value("robust_accuracy", eps="8/255")


def _pgd_gap_broken(c: Cells) -> float:  # the sign flipped: what a ledger bug would do
    return c.value("robust_accuracy", eps="8/255") - c.value("noise_accuracy", eps="8/255")


@pytest.fixture(scope="module")
def tiny_recipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipes")
    raw = tiny_spec("tiny_claim", attack={"name": "pgd", "params": {"eps": "8/255", "alpha": "eps/4", "steps": 5}},
                    metrics=["clean_accuracy", "noise_accuracy", "robust_accuracy"], save_artifacts=False)
    raw["presets"] = {"dev": {"data": {"n": 24}}}
    (folder / "tiny.yaml").write_text(yaml.safe_dump(raw))
    return folder


def _claim(effect, bar=0.3):
    return Claim("tiny.pgd", 1, "test", "PGD beats noise at 8/255 by 30 points", "tiny.yaml", effect=effect,
                 bar=bar, metrics=("noise_accuracy", "robust_accuracy"))


def test_a_claim_measured_over_three_seeds_each_on_its_own_sample(tiny_recipe, tmp_path, monkeypatch):
    import mmsec.claims.evaluate as ev

    good, broken = _claim(_pgd_gap), _claim(_pgd_gap_broken)
    monkeypatch.setattr(ev, "CLAIMS", (good,))
    monkeypatch.setattr(ev, "get_claim", lambda name: {"tiny.pgd": good, "tiny.broken": broken}[name])
    (before,) = evaluate_claims(tmp_path, "dev", 3, recipes=tiny_recipe)
    assert before.verdict == "not run" and "3 of 3 seeds incomplete" in before.missing

    summaries = run_claims(tmp_path, ["tiny.pgd"], "dev", 3, recipes=tiny_recipe, quiet=True)
    assert [s["status"] for s in summaries] == ["done"] * 3
    spec = claim_spec(good, "dev", 3, tiny_recipe)
    starts = sorted((c.config["data"].get("start") or 0) for c in expand(spec))
    assert starts == [0, 24, 48]  # three disjoint samples of the test split

    (result,) = evaluate_claims(tmp_path, "dev", 3, recipes=tiny_recipe)
    assert sorted(result.values) == [0, 1, 2]
    assert all(v > 0.5 for v in result.values.values()), result.values  # PGD at 8/255 vs noise: a wide gap
    assert result.interval.n == 3 and result.interval.low <= result.interval.mean <= result.interval.high
    assert result.verdict == "reproduced"
    from mmsec.runs.results import query
    stored = {(r["seed"], (r["data"] or {}).get("start")) for r in query(tmp_path, "tiny_claim-dev")}
    assert stored == {(0, None), (1, 24), (2, 48)}  # what ran is what the claim reads

    (flipped,) = evaluate_claims(tmp_path, "dev", 3, names=["tiny.broken"], recipes=tiny_recipe)
    assert flipped.verdict == "not reproduced"  # a broken effect cannot keep the verdict
    assert run_claims(tmp_path, ["tiny.pgd"], "dev", 3, recipes=tiny_recipe, quiet=True)[0]["status"] == "cached"

    (high_bar,) = evaluate_claims(tmp_path, "dev", 3, names=["tiny.pgd"], recipes=tiny_recipe)
    text = format_claims([high_bar, flipped])
    assert "tiny.pgd v1" in text and "reproduced" in text and "not reproduced" in text
    (two,) = evaluate_claims(tmp_path, "dev", 5, names=["tiny.pgd"], recipes=tiny_recipe)
    assert sorted(two.values) == [0, 1, 2] and "2 of 5 seeds incomplete" in two.missing


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.name)
def test_every_ledger_claim_selects_cells_its_recipe_has(claim):
    """On records synthesised from the dev preset's grid (every metric 0.5), the effect finds each cell it
    reads exactly once: a selector naming a parameter value, model or metric the recipe lacks fails here."""
    from claims_helpers import synthetic_cells

    spec = claim_spec(claim, "dev", seeds=1, recipes=RECIPES)
    effect = claim.effect(synthetic_cells(spec, 0, lambda rec, m: 0.5))
    assert isinstance(effect, float)


def test_a_seed_without_the_claims_setting_fails_it_or_makes_it_inconclusive():
    """An effect returns -inf where its setting does not occur on a seed (no budget where image-only PGD stays
    below 60%): every seed so is a failed claim, one seed so at most inconclusive; JSON stays valid."""
    import json
    from types import SimpleNamespace

    from mmsec.claims.evaluate import _result
    from mmsec.claims.table import format_claims

    claim = _claim(_pgd_gap)
    spec = SimpleNamespace(seeds=[0, 1, 2], name="tiny")
    none = _result(claim, "dev", spec, {0: -math.inf, 1: -math.inf, 2: -math.inf}, [], "t")
    assert none.verdict == "not reproduced" and "does not occur" in none.missing
    some = _result(claim, "dev", spec, {0: 0.8, 1: 0.81, 2: -math.inf}, [], "t")
    assert some.verdict == "inconclusive" and some.interval.n == 2
    full = _result(claim, "dev", spec, {0: 0.8, 1: 0.81, 2: 0.79}, [], "t")
    assert full.verdict == "reproduced"
    assert json.loads(format_claims([none, some], "json"))[0]["values"]["0"] == "no setting"
