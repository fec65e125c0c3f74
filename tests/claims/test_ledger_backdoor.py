"""The backdoor side's claims on synthetic records of their recipes' dev grids: for each claim, records where
its effect must clear the bar and records where it must miss it. Every cell and metric the claim should NOT
read holds a decoy value that would flip the outcome, so a selector reading the wrong cell (another defense,
attack, rate, merge or target task) or the wrong metric, or a flipped sign, fails one of the two."""

import functools
import sys
from pathlib import Path

import pytest

from mmsec.claims import Cells, MissingResult, claim_spec, get_claim
from mmsec.claims.backdoor import BACKDOOR_CLAIMS, MERGING_METHODS, OUTLIER_DETECTORS, YANG_ATTACKS

sys.path.insert(0, str(Path(__file__).resolve().parent))
from claims_helpers import synthetic_cells  # noqa: E402

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
ANY: dict = {}  # (a rule matching every cell)


@functools.cache
def _spec(recipe: str):
    return claim_spec(next(c for c in BACKDOOR_CLAIMS if c.recipe == recipe), "dev", seeds=1, recipes=RECIPES)


def rules(*entries, default=0.5):
    """A value function: the first ``(where, metric, value)`` whose selector matches the cell gives the value,
    else ``default``."""
    def value(rec, metric):
        for where, m, v in entries:
            if m == metric and Cells([rec], 0).select(**where):
                return v
        return default
    return value


def single(where, metric, passing, failing):
    """(good, bad) for a claim reading one cell's metric: the decoys (every other cell and metric) hold the
    value of the opposite case."""
    return rules((where, metric, passing), default=failing), [rules((where, metric, failing), default=passing)]


def cut(where, defended_after=0.02):
    """(good, bad) for a claim reading backdoor_asr_undefended - backdoor_asr in one defense cell."""
    good = rules((where, "backdoor_asr_undefended", 1.0), (where, "backdoor_asr", defended_after), default=0.5)
    bad = rules((where, "backdoor_asr_undefended", 1.0), (where, "backdoor_asr", 0.5),
                (ANY, "backdoor_asr_undefended", 1.0), (ANY, "backdoor_asr", 0.0))
    return good, [bad]


PBCL = {"attack": "pbcl_backdoor", "defense": "none"}
PERSIST = {"attack": "badclip", "defense": "cleanclip"}, {"attack": "pbcl_backdoor", "defense": "cleanclip"}
BADCLIP_NONE, PATCH_NONE = {"attack": "badclip", "defense": "none"}, {"attack": "pbcl_backdoor", "defense": "none"}
OFF_BM = {"attack": "badmerging", "target_task": "shape"}
OFF_PATCH = {"attack": "patch_backdoor", "target_task": "shape"}


def _merge_name(rec):
    return str(rec["params"]["merging"]).split("(")[0]  # ("ties(k=20.0,lam=1.0)" -> "ties")


def _by_merge(where, metric, per_merge, default):
    """Value function: ``metric`` of the cells matching ``where`` set per merging method, else ``default``."""
    def value(rec, m):
        if m == metric and Cells([rec], 0).select(**where):
            return per_merge[_merge_name(rec)]
        return default
    return value


def _one_merge_low(low):
    """BadMerging off-task at 0.99 after every merge but ``low`` (0.5); every other cell at 0.99 too."""
    return _by_merge(OFF_BM, "merged_asr", {m: 0.5 if m == low else 0.99 for m in MERGING_METHODS}, default=0.99)


CASES = {
    "backdoor.pbcl_asr_at_1pct": single(PBCL, "backdoor_asr", 0.95, 0.6),
    "backdoor.pbcl_clean_drop_at_1pct": single(PBCL, "clean_accuracy_drop", 0.5, 4.0),
    "poison_rate.pbcl_asr_at_1pct": single({"attack": "pbcl_backdoor", "rate": 0.01}, "backdoor_asr", 0.95, 0.3),
    "poison_rate.pbcl_asr_at_0_1pct": single({"attack": "pbcl_backdoor", "rate": 0.001}, "backdoor_asr", 0.95, 0.3),
    "badencoder.probe_asr": single({"attack": "badencoder"}, "backdoor_asr_probe", 0.95, 0.5),
    "badencoder.clean_drop": single({"attack": "badencoder"}, "clean_accuracy_drop", 1.0, 5.0),
    "badclip_persistence.outlasts_patch_under_cleanclip": (
        # BadCLIP 0.9 vs the patch 0.3 after CleanCLIP; before it the patch is ahead (a decoy)
        rules((PERSIST[0], "backdoor_asr", 0.9), (PERSIST[1], "backdoor_asr", 0.3),
              (BADCLIP_NONE, "backdoor_asr", 0.5), (PATCH_NONE, "backdoor_asr", 1.0)),
        [rules((PERSIST[0], "backdoor_asr", 0.5), (PERSIST[1], "backdoor_asr", 0.4),  # 10 points: below 20
               (BADCLIP_NONE, "backdoor_asr", 1.0), (PATCH_NONE, "backdoor_asr", 0.0))]),
    "badmerging.off_task_asr_every_merge": (
        rules((OFF_BM, "merged_asr", 0.95), default=0.1),
        [_one_merge_low(m) for m in MERGING_METHODS]),  # each merge in turn is the one below 0.9
    "badmerging.plain_patch_fades_off_task": (
        # the patch keeps 0.2 of its 1.0 after merging; BadMerging and on-task cells keep everything (decoys)
        rules((OFF_PATCH, "merged_asr", 0.2), (OFF_PATCH, "task_model_asr", 1.0), (ANY, "task_model_asr", 1.0),
              default=0.99),
        [rules((OFF_PATCH, "merged_asr", 0.8), (OFF_PATCH, "task_model_asr", 1.0), (ANY, "task_model_asr", 1.0),
               default=0.0),
         # kept 0.1 of 1.0 after averaging and task arithmetic but all of it after the other three: the mean
         # (0.64) misses where the best merge alone (0.1) would clear
         _by_merge(OFF_PATCH, "merged_asr", {"weight_averaging": 0.1, "task_arithmetic": 0.1, "ties": 1.0,
                                             "regmean": 1.0, "adamerging": 1.0}, default=1.0)]),
    "defense_matrix.cleanclip_cuts_patch_asr": cut({"attack": "pbcl_backdoor", "defense": "cleanclip"}),
    "defense_matrix.cleanclip_clean_cost": single({"attack": "pbcl_backdoor", "defense": "cleanclip"},
                                                  "clean_accuracy_cost", 0.5, 8.0),
    "robust_pretraining.roclip_cuts_patch_asr": cut({"attack": "pbcl_backdoor", "defense": "roclip"}),
    "robust_pretraining.roclip_clean_cost": single({"defense": "roclip"}, "clean_accuracy_cost", 1.0, 14.0),
    "defense_matrix_pretraining.safeclip_cuts_patch_asr": cut({"attack": "pbcl_backdoor", "defense": "safeclip"}),
    "defense_matrix_pretraining.safeclip_clean_cost": single({"attack": "pbcl_backdoor", "defense": "safeclip"},
                                                             "clean_accuracy_cost", 1.0, 90.0),
    "outlier_detection.kdist_auroc": single({"defense": "kdist"}, "detector_auroc", 0.97, 0.6),
    "outlier_detection.every_detector_auroc": (
        rules((ANY, "detector_auroc", 0.95), default=0.1),
        [rules(({"defense": d}, "detector_auroc", 0.7), (ANY, "detector_auroc", 0.99), default=0.99)
         for d in OUTLIER_DETECTORS]),  # each detector in turn is the one below 0.9
    "seer.flags_backdoored_not_clean": (
        rules((ANY, "model_detector_flagged", 1.0), (ANY, "model_detector_flagged_control", 0.0), default=1.0),
        [rules((ANY, "model_detector_flagged", 1.0), (ANY, "model_detector_flagged_control", 1.0), default=1.0),
         rules((ANY, "model_detector_flagged", 0.0), (ANY, "model_detector_flagged_control", 1.0), default=1.0)]),
    "mudjacking.cuts_asr": cut({"attack": "badencoder", "defense": "mudjacking"}, defended_after=0.2),
    "mudjacking.worst_repair_clean_cost": single({"defense": "mudjacking"}, "repair_clean_cost_max", 1.0, 6.0),
    "invertune.cuts_asr": cut({"attack": "pbcl_backdoor", "defense": "invertune"}),
    "invertune.clean_cost": single({"defense": "invertune"}, "clean_accuracy_cost", 0.5, 4.0),
    "targeted_poisoning.yang_attacks_retrieve_target": (
        # every Yang attack at Hit@10 1.0 over baselines of 0; PBCL's targeted cell (not claimed) at 0
        rules(*[({"attack": a}, "hit_at_10", 1.0) for a in YANG_ATTACKS], default=0.0),
        [*[rules(({"attack": a}, "hit_at_10", 0.5), (ANY, "hit_at_10", 1.0), default=0.0)
           for a in YANG_ATTACKS],  # each attack in turn is the weak one
         rules((ANY, "hit_at_10", 1.0), (ANY, "hit_at_10_control", 0.3), default=0.0),  # the control retrieves too
         rules((ANY, "hit_at_10", 1.0), (ANY, "random_hit_at_10", 0.3), default=0.0)]),  # random captions too
    "corruptencoder.probe_asr": single({"attack": "corruptencoder"}, "probe_asr", 0.95, 0.05),
    "psbd.detection_auroc": single({"defense": "psbd"}, "detection_auroc", 0.95, 0.7),
}


def clears(claim, effect: float) -> bool:
    return effect >= claim.bar if claim.direction == ">=" else effect <= claim.bar


def test_every_backdoor_claim_has_cases():
    assert sorted(CASES) == sorted(c.name for c in BACKDOOR_CLAIMS)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_effect_clears_its_bar_only_where_the_claimed_cells_do(name):
    claim = get_claim(name)
    good, bads = CASES[name]
    effect = claim.effect(synthetic_cells(_spec(claim.recipe), 0, good))
    assert clears(claim, effect), (name, effect, claim.bar)
    for i, bad in enumerate(bads):
        effect = claim.effect(synthetic_cells(_spec(claim.recipe), 0, bad))
        assert not clears(claim, effect), (name, f"bad case {i}", effect, claim.bar)


def test_a_seed_missing_one_merge_is_incomplete_not_judged_on_the_rest():
    claim = get_claim("badmerging.off_task_asr_every_merge")
    cells = synthetic_cells(_spec(claim.recipe), 0, rules((OFF_BM, "merged_asr", 0.95), default=0.1))
    kept = [r for r in cells.records if not (r["attack"] == "badmerging" and _merge_name(r) == "regmean")]
    with pytest.raises(MissingResult, match="regmean"):
        claim.effect(Cells(kept, 0))


def test_a_plain_patch_that_never_took_has_no_fade():
    claim = get_claim("badmerging.plain_patch_fades_off_task")
    cells = synthetic_cells(_spec(claim.recipe), 0, rules((OFF_PATCH, "task_model_asr", 0.0), default=0.0))
    assert claim.effect(cells) == float("inf")
    assert not clears(claim, claim.effect(cells))


def test_cuts_and_costs_read_the_stored_units():
    """ASR cuts are fractions, clean costs points (as the backdoor task stores them): a 95-point cut at a
    2-point cost clears both InverTune bars."""
    spec = _spec("invertune.yaml")
    where = {"defense": "invertune"}
    cells = synthetic_cells(spec, 0, rules((where, "backdoor_asr_undefended", 0.99), (where, "backdoor_asr", 0.04),
                                           (where, "clean_accuracy_cost", 2.0)))
    assert get_claim("invertune.cuts_asr").effect(cells) == pytest.approx(0.95)
    assert get_claim("invertune.clean_cost").effect(cells) == pytest.approx(2.0)
