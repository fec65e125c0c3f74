"""The adversarial side's claims on synthetic records of their recipe's dev grid: for each claim, a world where its
effect must clear the bar and one where it must miss it. The cells a claim must not read (other models, targets,
worlds, attacks, defense entries, budgets) carry decoy values that flip the verdict if they were read, so a
selector that reads the wrong cell, or a flipped sign, fails here."""

import sys
from functools import cache
from pathlib import Path

import pytest

from mmsec.claims import Cells, get_claim
from mmsec.claims.adversarial import ADVERSARIAL_CLAIMS, FUSION, RESNET, VIT
from mmsec.claims.evaluate import claim_spec

sys.path.insert(0, str(Path(__file__).resolve().parent))
from claims_helpers import synthetic_cells  # noqa: E402

RECIPES = Path(__file__).resolve().parents[2] / "recipes"


@cache
def _spec(recipe: str):
    return claim_spec(next(c for c in ADVERSARIAL_CLAIMS if c.recipe == recipe), "dev", seeds=1, recipes=RECIPES)


def is_(rec: dict, **where) -> bool:
    """Whether ``rec`` is the cell ``where`` selects (the claims' own matching: fractions compare as numbers)."""
    return bool(Cells([rec], 0).select(**where))


def eps_index(rec: dict) -> int:
    """0, 1, 2, 3 for 1, 2, 4, 8 /255."""
    return {1: 0, 2: 1, 4: 2, 8: 3}[round(rec["params"]["eps"] * 255)]


# -- quickstart, Co-Attack -------------------------------------------------------------------------------------
def quickstart(robust_at_4=0.4):
    def value(rec, m):
        if m == "noise_accuracy":
            return 1.0
        if m == "robust_accuracy":  # decoys: the other budgets say nothing about 4/255
            return robust_at_4 if is_(rec, eps="4/255") else 1.0 - robust_at_4
        return 0.5
    return value


def co_attack(co_at_4):
    """Image-only PGD < 60% at 2 and 4/255 (the claim must hold at both; 4/255 carries the margin under test, 2/255
    clears it), not at 8/255 (a decoy); text 0.88."""
    image = {"2/255": 0.0, "4/255": 0.15, "8/255": 0.65}

    def value(rec, m):
        if m != "asr":
            return 0.5
        mode, eps = rec["params"]["mode"], next(e for e in image if is_(rec, eps=e))
        return {"image": image[eps], "text": 0.88, "both": 0.99,  # `both` is not a single modality: a decoy
                "co": co_at_4 if eps == "4/255" else 0.99}[mode]
    return value


# -- SGA transfer ----------------------------------------------------------------------------------------------
def transfer(weak=None, weak_by="co"):
    """SGA beats Co-Attack by 5 points and PGD by far from each CLIP to the other models, except in the setting
    ``weak`` = (source, target, eps), where ``weak_by`` (co or pgd) beats SGA. Decoys: from the fusion model and
    white-box (source = target), Co-Attack beats SGA (as measured)."""
    def value(rec, m):
        if m != "asr":
            return 0.5
        src, tgt = rec["model"], rec["target"]
        mode = rec["params"].get("mode") if rec["attack"] == "co_attack" else "sga"
        co, pgd, sga = 0.70, 0.05, 0.75
        if src == FUSION or src == tgt:
            sga = 0.60
        if weak and src == weak[0] and tgt == weak[1] and is_(rec, eps=weak[2]):
            co, pgd = (0.80, 0.05) if weak_by == "co" else (0.70, 0.80)
        return {"image": pgd, "co": co, "sga": sga}[mode]
    return value


# -- AdvCLIP ---------------------------------------------------------------------------------------------------
def advclip(strong):
    """Patches in the (attack, world) cells of ``strong`` lower the probes 10x more than the random patch; every
    other cell's patch lowers them no more than the random patch (and its zero-shot drop, which the claims do not
    read, is large)."""
    def value(rec, m):
        good = (rec["attack"], rec["params"]["world"]) in strong
        if m.startswith("probe_") and m.endswith("_drop"):
            return 0.30 if good else 0.05
        if m.startswith("probe_") and m.endswith("_drop_noise"):
            return 0.03 if good else 0.05
        return 0.9 if m.endswith("_drop") else 0.5
    return value


ALL_PATCHES = {(a, w) for a in ("advclip", "uap_patch") for w in ("standard", "scenes", "48px")}


# -- TeCoA and FARE --------------------------------------------------------------------------------------------
UNDEFENDED = (0.99, 0.90, 0.45, 0.03)  # PGD-10 at 1/2/4/8 /255: the acceptance budget is 8/255
DEFENDED = (0.95, 0.92, 0.85, 0.55)


def finetune(robust=None, clean=None, drift=None):
    """PGD-10 robust accuracy per defense (a tuple over 1/2/4/8 /255), clean accuracy and drift per defense;
    the ensemble rows say the opposite of the PGD rows (decoys: the claims read PGD-10)."""
    robust = {"none": UNDEFENDED, "tecoa": DEFENDED, "fare": DEFENDED, **(robust or {})}
    clean = {"none": 1.0, "tecoa": 0.93, "fare": 1.0, **(clean or {})}
    drift = {"none": 0.0, "tecoa": 10.0, "fare": 0.6, **(drift or {})}

    def value(rec, m):
        d = rec["defense"]
        if m == "robust_accuracy":
            if rec["attack"] == "ensemble":
                return 0.9 if d == "none" else 0.0
            return robust[d][eps_index(rec)]
        return {"clean_accuracy": clean, "embedding_drift_sq_l2": drift}.get(m, {}).get(d, 0.5)
    return value


# -- VILLA -----------------------------------------------------------------------------------------------------
def villa(scaled=(0.92, 0.66), control=(0.69, 0.35), paper_step=(0.95, 0.70), none=(0.95, 0.70)):
    """ITM accuracy under embedding PGD at 5% (image tokens, word embeddings) per model; clean ITM 1.0. Decoys: the
    zoo model and VILLA at the paper's step are the most robust here (read as the control, the gain vanishes)."""
    def value(rec, m):
        if m != "itm_accuracy_adv":
            return 1.0 if m != "defense_train_seconds" else 100.0
        p = rec["defense_params"]
        acc = (none if rec["defense"] == "none" else control if p.get("adv_steps") == 1
               else scaled if "adv_lr_img" in p else paper_step)
        return acc[0] if rec["params"]["modality"] == "image" else acc[1]
    return value


# -- attacks, masking checks -----------------------------------------------------------------------------------
def attacks(**curves):
    """Robust accuracy over 1/2/4/8 /255 per attack (apgd by loss)."""
    curves = {"fgsm": (0.99, 0.95, 0.70, 0.40), "pgd": (0.99, 0.90, 0.40, 0.03), "apgd_ce": (0.98, 0.85, 0.25, 0.0),
              "apgd_dlr": (0.99, 0.95, 0.60, 0.30), "square": (1.0, 0.97, 0.85, 0.6), "ensemble": (0.97, 0.8, 0.2, 0.0),
              **curves}

    def value(rec, m):
        if m != "robust_accuracy":
            return 1.0 if m != "mean_perturbation_linf" else 0.01
        name = rec["attack"] + (f"_{rec['params']['loss']}" if rec["attack"] == "apgd" else "")
        return curves[name][eps_index(rec)]
    return value


def masking(**failed):
    failed = {"none": 3, "tecoa": 0, "fare": 0, **failed}  # decoy: the claim is about the defended models

    def value(rec, m):
        return float(failed[rec["defense"]]) if m == "masking_checks_failed" else 0.0
    return value


# (claim, values where the effect must clear the bar, values where it must miss it)
CASES = [
    ("quickstart.pgd_beats_noise", quickstart(0.4), quickstart(0.6)),
    ("co_attack.beats_single_modality", co_attack(0.95), co_attack(0.90)),
    ("transfer.sga_beats_co_attack_and_pgd", transfer(), transfer((VIT, FUSION, "4/255"), "co")),
    ("transfer.sga_beats_co_attack_and_pgd", transfer(), transfer((RESNET, VIT, "2/255"), "pgd")),
    ("advclip.probes_3x_random_own_world", advclip({("advclip", "standard")}),
     advclip(ALL_PATCHES - {("advclip", "standard")})),
    ("advclip.probes_3x_random_scenes", advclip({("advclip", "scenes")}), advclip(ALL_PATCHES - {("advclip", "scenes")})),
    ("advclip.probes_3x_random_48px", advclip({("advclip", "48px")}), advclip(ALL_PATCHES - {("advclip", "48px")})),
    ("adv_finetune.tecoa_robust_gain", finetune(), finetune({"tecoa": (0.95, 0.92, 0.85, 0.25)})),
    # the undefended model below 40% at 4/255 already: the gain is read there (where TeCoA adds only 15 points)
    ("adv_finetune.tecoa_robust_gain", finetune({"none": (0.99, 0.9, 0.35, 0.03), "tecoa": (0.95, 0.92, 0.85, 0.55)}),
     finetune({"none": (0.99, 0.9, 0.35, 0.03), "tecoa": (0.95, 0.92, 0.50, 0.55)})),
    ("adv_finetune.tecoa_clean_cost", finetune(), finetune(clean={"tecoa": 0.85})),
    ("adv_finetune.fare_robust_gain", finetune(), finetune({"fare": (0.95, 0.92, 0.85, 0.25)})),
    ("adv_finetune.fare_robust_gain", finetune({"none": (0.99, 0.9, 0.35, 0.03), "fare": (0.95, 0.92, 0.85, 0.55)}),
     finetune({"none": (0.99, 0.9, 0.35, 0.03), "fare": (0.95, 0.92, 0.50, 0.55)})),
    ("adv_finetune.fare_clean_cost", finetune(), finetune(clean={"fare": 0.85})),
    ("adv_finetune.fare_drifts_less_than_tecoa", finetune(), finetune(drift={"fare": 12.0})),
    ("villa.robust_gain_over_finetuning", villa(), villa(scaled=(0.92, 0.30), paper_step=(0.95, 0.90))),
    ("villa.robust_gain_over_finetuning", villa(), villa(scaled=(0.60, 0.66))),
    ("attacks.pgd_beats_fgsm", attacks(),
     attacks(fgsm=(0.99, 0.90, 0.40, 0.03), pgd=(0.99, 0.95, 0.70, 0.40))),
    ("attacks.apgd_beats_pgd", attacks(),
     attacks(apgd_ce=(0.99, 0.95, 0.60, 0.20), apgd_dlr=(0.9, 0.7, 0.1, 0.0))),
    ("masking_checks.defended_models_pass", masking(), masking(fare=1, none=0)),
]


def clears(claim, effect: float) -> bool:
    return effect >= claim.bar if claim.direction == ">=" else effect <= claim.bar


@pytest.mark.parametrize(("name", "passing", "failing"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_claim_clears_its_bar_in_a_world_built_to_and_misses_it_otherwise(name, passing, failing):
    claim = get_claim(name)
    spec = _spec(claim.recipe)
    good = claim.effect(synthetic_cells(spec, 0, passing))
    bad = claim.effect(synthetic_cells(spec, 0, failing))
    assert clears(claim, good), (name, good, claim.direction, claim.bar)
    assert not clears(claim, bad), (name, bad, claim.direction, claim.bar)


def test_every_adversarial_claim_has_a_case():
    assert {c.name for c in ADVERSARIAL_CLAIMS} == {name for name, _, _ in CASES}


def test_effects_read_the_magnitudes_the_worlds_were_built_with():
    """Beyond the side of the bar: the effect is the difference the claim states (so a claim reading a
    neighbouring cell with a similar value, or averaging the wrong way, is caught too)."""
    def effect(name, values):
        claim = get_claim(name)
        return claim.effect(synthetic_cells(_spec(claim.recipe), 0, values))

    assert effect("transfer.sga_beats_co_attack_and_pgd", transfer()) == pytest.approx(0.05)
    assert effect("advclip.probes_3x_random_own_world", advclip({("advclip", "standard")})) == pytest.approx(0.21)
    assert effect("adv_finetune.tecoa_robust_gain", finetune()) == pytest.approx(0.52)
    assert effect("adv_finetune.tecoa_clean_cost", finetune()) == pytest.approx(0.07)
    assert effect("adv_finetune.fare_drifts_less_than_tecoa", finetune()) == pytest.approx(9.4)
    assert effect("villa.robust_gain_over_finetuning", villa()) == pytest.approx(0.23)
    assert effect("attacks.pgd_beats_fgsm", attacks()) == pytest.approx((0.05 + 0.30 + 0.37) / 4)
    assert effect("attacks.apgd_beats_pgd", attacks()) == pytest.approx((0.01 + 0.05 + 0.15 + 0.03) / 4)
    assert effect("masking_checks.defended_models_pass", masking(tecoa=2)) == 2.0


def test_a_villa_entry_the_claim_needs_but_the_seed_lacks_is_missing_not_misread():
    from mmsec.claims import MissingResult

    claim = get_claim("villa.robust_gain_over_finetuning")
    cells = synthetic_cells(_spec(claim.recipe), 0, villa())
    without_scaled = Cells([r for r in cells.records if "adv_lr_img" not in r["defense_params"]], 0)
    with pytest.raises(MissingResult, match="adv_lr_img"):
        claim.effect(without_scaled)
    doubled = Cells(cells.records + [r for r in cells.records if "adv_lr_img" in r["defense_params"]], 0)
    with pytest.raises(ValueError, match="2 villa cells"):
        claim.effect(doubled)


@pytest.mark.parametrize("world", ["standard", "scenes", "48px"])
def test_a_patch_that_lowers_nothing_is_not_3x_a_random_patch_that_lowers_nothing(world):
    """Measured at dev on 48px: both drops 0.000 on every seed; 0 >= 3 x 0, but the claim is about lowering the
    probes, so the effect must miss the bar."""
    name = {"standard": "advclip.probes_3x_random_own_world", "scenes": "advclip.probes_3x_random_scenes",
            "48px": "advclip.probes_3x_random_48px"}[world]
    claim = get_claim(name)
    nothing = claim.effect(synthetic_cells(_spec(claim.recipe), 0, lambda rec, m: 0.0 if "_drop" in m else 0.5))
    assert not clears(claim, nothing)
