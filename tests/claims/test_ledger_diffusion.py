"""The diffusion claims read the cells they name: on the dev grid's synthetic records, each effect follows the
one metric of the one cell it is about (other cells and metrics set apart), and a detector counts only when it
flags the backdoored model and no clean one."""

from pathlib import Path

import pytest
from claims_helpers import synthetic_cells

from mmsec.claims import claim_spec, get_claim
from mmsec.claims.diffusion import DIFFUSION_CLAIMS

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
# claim -> (the metric it reads, the cell it must read it from: record fields and parameters)
TARGETS = {
    "diffusion_backdoor.baddiffusion_hits_target": ("target_hit_rate", {"attack": "baddiffusion"}),
    "diffusion_backdoor.baddiffusion_spares_clean_noise": ("clean_target_hit_rate", {"attack": "baddiffusion"}),
    "diffusion_backdoor.baddiffusion_keeps_quality": ("clean_recognition_drop", {"attack": "baddiffusion"}),
    "diffusion_backdoor.trojdiff_in_d2d_hits_target": ("target_hit_rate", {"attack": "trojdiff"}),
    "t2i_backdoor.badt2i_object": ("t2i_backdoor_effect", {"attack": "badt2i"}),
    "t2i_backdoor.badt2i_object_keeps_adherence": ("prompt_adherence_drop", {"attack": "badt2i"}),
    "diffusion_defenses.ufid_detects_triggered_noise": ("input_detector_auroc", {"defense": "ufid"}),
    "diffusion_defenses.terd_detects_triggered_noise": ("input_detector_auroc", {"defense": "terd_input"}),
    "diffusion_defenses.elijah_removal_removes": ("target_hit_rate_repaired", {"defense": "elijah_removal"}),
    "diffusion_defenses.elijah_removal_cost": ("repair_recognition_cost", {"defense": "elijah_removal"}),
}


def _is(rec, where):
    return all(rec.get(k) == v for k, v in where.items())


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_each_effect_reads_its_metric_in_its_cell(name):
    claim = get_claim(name)
    metric, where = TARGETS[name]
    spec = claim_spec(claim, "dev", seeds=1, recipes=RECIPES)
    for good in (True, False):  # the target cell's value clears the bar, then misses it; every other value the opposite
        inside = claim.bar + (0.01 if (claim.direction == ">=") == good else -0.01)
        outside = claim.bar + (-0.3 if (claim.direction == ">=") == good else 0.3)
        cells = synthetic_cells(spec, 0, lambda rec, m, i=inside, o=outside: i if (m == metric and _is(rec, where)) else o)
        effect = claim.effect(cells)
        assert effect == pytest.approx(inside), (name, good)
        assert (effect >= claim.bar if claim.direction == ">=" else effect <= claim.bar) == good


@pytest.mark.parametrize("defense", ["elijah", "terd"])
@pytest.mark.parametrize(("flagged", "false_alarms", "expected"), [(1, 0, 1.0), (0, 0, 0.0), (1, 1 / 3, 0.0)])
def test_a_model_detector_counts_only_without_false_alarms(defense, flagged, false_alarms, expected):
    claim = get_claim(f"diffusion_defenses.{defense}_detects_model")
    spec = claim_spec(claim, "dev", seeds=1, recipes=RECIPES)
    values = {"model_detector_flagged": flagged, "model_detector_flagged_control": false_alarms}
    cells = synthetic_cells(spec, 0, lambda rec, m: values.get(m, 0.5) if rec["defense"] == defense else 1 - expected)
    assert claim.effect(cells) == expected


def test_every_diffusion_claim_is_tested_here():
    detectors = {"diffusion_defenses.elijah_detects_model", "diffusion_defenses.terd_detects_model"}
    assert {c.name for c in DIFFUSION_CLAIMS} == set(TARGETS) | detectors
