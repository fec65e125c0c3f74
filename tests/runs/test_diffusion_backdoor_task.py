"""Task diffusion_backdoor: spec checks, a tiny cell end to end (metrics with their definitions, the gallery, the
backdoored model persisted and reused), the recipe's presets.

The cell runs BadDiffusion for 2 steps on a tiny random 16 px UNet saved as a diffusers folder (``diffusers:DIR``),
judged by the shipped zoo:shapes-judge: the pipeline, not the effect (tests/attacks/test_baddiffusion.py asserts
the effect; recipes/diffusion_backdoor.yaml measures it on the zoo model).
"""

from __future__ import annotations

import json

import pytest
from runs_helpers import tiny_spec

from mmsec.runs.grid import expand
from mmsec.runs.results import query
from mmsec.runs.runner import run_spec
from mmsec.runs.spec import SpecError, load_spec

METRICS = ["target_hit_rate", "mse_to_target_median", "mse_to_target_within", "ssim_to_target",
           "clean_recognition_rate", "clean_recognition_rate_control", "clean_recognition_drop",
           "clean_target_hit_rate", "target_hit_rate_control", "mse_to_target_median_control", "n_poisoned",
           "train_seconds"]


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory):
    import diffusers
    import torch

    from mmsec.models.diffusers_adapter import DiffusersUNet

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    sched = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                    timestep_spacing="trailing")
    folder = tmp_path_factory.mktemp("tiny-ddpm")
    DiffusersUNet(unet, sched).save(folder)
    return folder


def diffusion_spec(folder, **overrides) -> dict:
    base = dict(model=f"diffusers:{folder}", task="diffusion_backdoor",
                data={"name": "shapes", "split": "train", "n": 40, "image_size": 16},
                attack={"name": "baddiffusion", "params": {"coefficient": "ddim", "epochs": 1, "batch_size": 20,
                                                           "poison_rate": 0.25}},
                samples=4, steps=2, metrics=METRICS)
    base.update(overrides)
    spec = tiny_spec("diffusion-backdoor-test", **base)
    return spec


@pytest.mark.parametrize("overrides, expected", [
    (dict(target_class="cyan rnig"), "target_class: 'cyan rnig' is not a shapes-world class"),
    (dict(attack={"name": "baddiffusion", "params": {"target": "red sqaure"}}),
     "attack.params.target: 'red sqaure' is not a shapes-world class"),
    (dict(attack={"name": "baddiffusion", "params": {"coefficient": "ode"}}), "coefficient must be one of"),
    (dict(attack={"name": "badencoder", "params": {}}), "unknown diffusion backdoor 'badencoder'"),
    (dict(data={"name": "imagefolder", "path": "x"}), "fine-tunes on shapes-world scenes"),
    (dict(baseline="pgd"), "has only the 'noise' baseline"),
    (dict(samples=0), "samples"),
    (dict(attack={"name": "trojdiff", "params": {"target_kind": "out_d2d", "target": "cyan ring"}}),
     "attack.params.target: 'cyan ring' is not a digit class"),
    (dict(attack={"name": "trojdiff", "params": {"target_kind": ["in_d2d", "d2i"], "target": "digit 7"}}),
     "attack.params.target: 'digit 7' is not a shapes-world class"),
    (dict(attack={"name": "trojdiff", "params": {"target_kind": "d3i"}}), "target_kind must be one of"),
    (dict(steps={"euler": 5}), "steps.euler: unknown sampler 'euler'"),
    (dict(steps=0), "steps: inference steps must be >= 1"),
])
def test_bad_specs_are_named(tiny_folder, overrides, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(diffusion_spec(tiny_folder, **overrides))


def test_a_contrastive_model_is_refused(tiny_folder):
    with pytest.raises(SpecError, match="needs a 'diffusion' model"):
        load_spec(diffusion_spec(tiny_folder, model="zoo:shapes-clip-resnet"))


def test_a_cell_end_to_end_and_the_model_is_reused(tiny_folder, tmp_path):
    spec = diffusion_spec(tiny_folder)
    run_spec(spec, tmp_path)
    rows = {r["metric"]: r for r in query(tmp_path, "diffusion-backdoor-test")}
    assert set(rows) == set(METRICS) | {"target_hit_rate_noise"}  # the noise baseline is stored too
    for name in ("target_hit_rate", "clean_recognition_rate", "clean_target_hit_rate", "target_hit_rate_noise",
                 "mse_to_target_within"):
        assert 0.0 <= rows[name]["value"] <= 1.0
    assert rows["n_poisoned"]["value"] == 10  # a quarter of 40 images
    assert rows["clean_recognition_drop"]["value"] == pytest.approx(
        rows["clean_recognition_rate_control"]["value"] - rows["clean_recognition_rate"]["value"])
    assert "triggered starting noise" in rows["target_hit_rate"]["threat_model"]
    assert "the clean diffusers:" in rows["target_hit_rate_control"]["threat_model"]
    assert "judge" in rows["target_hit_rate"]["definition"]
    assert rows["target_hit_rate"]["params"]["target"] == "cyan ring"  # the task's default target class
    persisted = list((tmp_path / "models").glob("*.json"))
    assert len(persisted) == 1
    card = json.loads(persisted[0].read_text())
    assert card["info"]["sampler"] == "ddim" and card["info"]["n_poisoned"] == 10
    pngs = list(tmp_path.rglob("samples.png"))
    assert len(pngs) == 1 and pngs[0].stat().st_size > 500
    # another seed-identical spec under a new name trains nothing: the persisted model is loaded
    again = dict(spec, name="diffusion-backdoor-again")
    run_spec(again, tmp_path)
    assert len(list((tmp_path / "models").glob("*.json"))) == 1
    first = {r["metric"]: r["value"] for r in query(tmp_path, "diffusion-backdoor-test")}
    second = {r["metric"]: r["value"] for r in query(tmp_path, "diffusion-backdoor-again")}
    assert {k: v for k, v in first.items() if k != "train_seconds"} == {
        k: v for k, v in second.items() if k != "train_seconds"}


def test_the_recipe_presets():
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "recipes" / "diffusion_backdoor.yaml"
    paper, smoke = load_spec(path), load_spec(path, preset="smoke")
    cells = expand(paper)
    assert [c.config["attack"]["params"]["coefficient"] for c in cells[:2]] == ["ddim", "baddiffusion"]
    assert cells[0].config["data"]["n"] == 8192 and cells[0].config["samples"] == 256
    assert cells[0].config["attack"]["params"]["poison_rate"] == 0.1
    troj = [c.config["attack"]["params"] for c in cells[2:]]
    assert [(p["target_kind"], p["sampler"]) for p in troj] == [
        (k, s) for k in ("in_d2d", "d2i", "out_d2d", "d2i") for s in ("ddim", "ddpm")]
    assert [p["trigger"] if isinstance(p["trigger"], str) else p["trigger"]["name"] for p in troj[::2]] == [
        "optimized_patch"] * 3 + ["blended"]
    assert cells[0].config["steps"] == {"ddim": 25, "ddpm": 1000}
    assert len(expand(smoke)) == 2 and smoke.name == "diffusion_backdoor-smoke"


TROJ = {"trigger": {"name": "optimized_patch", "params": {"pattern": [[[1.0] * 3] * 3] * 3}}, "steps": 2,
        "batch_size": 20, "ema": None}


def test_trojdiff_cells_of_each_target_kind(tiny_folder, tmp_path):
    """TrojDiff end to end: the In-D2D cells of both Trojan samplers share one trained model; a class target
    stores no distances to a target image; Out-D2D is scored by the nearest-neighbour judge, not the shapes judge."""
    attack = [{"name": "trojdiff", "params": dict(TROJ, target_kind="in_d2d", target="red circle",
                                                  sampler=["ddim", "ddpm"])},
              {"name": "trojdiff", "params": dict(TROJ, target_kind="out_d2d")}]
    spec = dict(diffusion_spec(tiny_folder, attack=attack, data={"name": "shapes", "split": "train", "n": 200,
                                                                 "image_size": 16},
                               metrics=[*METRICS, "nearest_target_hit_rate", "clean_nearest_target_hit_rate",
                                        "nearest_target_hit_rate_control", "nearest_target_hit_rate_noise"]),
                name="trojdiff-test")
    run_spec(spec, tmp_path)
    rows = query(tmp_path, "trojdiff-test")
    by_cell: dict[tuple, dict] = {}
    for r in rows:
        key = (r["params"]["target_kind"], r["params"]["sampler"])
        by_cell.setdefault(key, {})[r["metric"]] = r
    assert set(by_cell) == {("in_d2d", "ddim"), ("in_d2d", "ddpm"), ("out_d2d", "ddim")}
    distances = {"mse_to_target_median", "mse_to_target_within", "ssim_to_target", "mse_to_target_median_control"}
    nearest = {"nearest_target_hit_rate", "clean_nearest_target_hit_rate", "nearest_target_hit_rate_control",
               "nearest_target_hit_rate_noise"}
    judged = {"target_hit_rate", "clean_target_hit_rate", "target_hit_rate_control", "target_hit_rate_noise"}
    for sampler in ("ddim", "ddpm"):
        cell = by_cell[("in_d2d", sampler)]
        assert judged <= set(cell) and not (distances | nearest) & set(cell)
        assert "Trojan sampler" in cell["target_hit_rate"]["threat_model"] and f"sampler {sampler}" in cell[
            "target_hit_rate"]["threat_model"]
    out = by_cell[("out_d2d", "ddim")]
    assert nearest <= set(out) and not (distances | judged) & set(out)
    assert "nearest-neighbour" in out["nearest_target_hit_rate"]["definition"]
    assert out["nearest_target_hit_rate"]["params"]["target"] == "digit 7"  # Out-D2D's default target
    assert out["n_poisoned"]["value"] == 10 * 10  # 10 batches of 20 per pass, 10 poisoned rows each (rate 0.5)
    assert len(list((tmp_path / "models").glob("*.json"))) == 2  # the two samplers' cells share one model


DEFENSES = [{"name": "elijah", "params": {"steps": 2, "batch_size": 4, "n_images": 4, "trim": 1, "sample_steps": 2}},
            {"name": "ufid", "params": {"copies": 3, "steps": 2, "calibration_inputs": 4, "encoder": "judge"}},
            {"name": "elijah_removal", "params": {"epochs": 1, "batch_size": 4, "inversion_steps": 2}}]


def test_defended_cells_of_each_defense_kind(tiny_folder, tmp_path):
    """A model detector, an input detector and a repair on one backdoored model: the attack is trained once, the
    detector runs on the clean model and its clean fine-tunes (trained once, persisted), each kind stores its metrics."""
    metrics = ["target_hit_rate", "clean_recognition_rate", "model_detector_flagged", "model_detector_score",
               "model_detector_flagged_control", "model_detector_score_control", "model_detector_clean_models",
               "trigger_cosine", "input_detector_auroc", "input_detector_tpr", "input_detector_fpr",
               "input_detector_auroc_control", "target_hit_rate_repaired", "mse_to_target_median_repaired",
               "clean_recognition_rate_repaired", "repair_recognition_cost", "defense_seconds"]
    spec = diffusion_spec(tiny_folder, defense=DEFENSES, metrics=metrics, clean_controls=1, clean_control_steps=2,
                          input_samples=4)
    run_spec(spec, tmp_path)
    rows = query(tmp_path, "diffusion-backdoor-test")
    by = {}
    for r in rows:
        by.setdefault(r["defense"] if isinstance(r.get("defense"), str) else str(r.get("defense")), {})[r["metric"]] = r
    detector = next(v for k, v in by.items() if "elijah" in k and "removal" not in k)
    assert detector["model_detector_flagged"]["value"] in (0.0, 1.0)
    assert detector["model_detector_clean_models"]["value"] == 2  # the clean model and one clean fine-tune
    assert 0.0 <= detector["model_detector_flagged_control"]["value"] <= 1.0
    assert -1.0 <= detector["trigger_cosine"]["value"] <= 1.0
    assert "clean fine-tunes" in detector["model_detector_flagged_control"]["threat_model"]
    ufid = next(v for k, v in by.items() if "ufid" in k)
    assert 0.0 <= ufid["input_detector_auroc"]["value"] <= 1.0 and "input_detector_auroc_control" in ufid
    assert "defense ufid" in ufid["input_detector_auroc"]["threat_model"]
    repair = next(v for k, v in by.items() if "removal" in k)
    assert {"target_hit_rate_repaired", "clean_recognition_rate_repaired", "repair_recognition_cost"} <= set(repair)
    assert repair["repair_recognition_cost"]["value"] == pytest.approx(
        repair["clean_recognition_rate"]["value"] - repair["clean_recognition_rate_repaired"]["value"])
    # one clean fine-tune persisted (the backdoored model too, unless an earlier test of this process trained it)
    cards = [json.loads(p.read_text()) for p in (tmp_path / "models").glob("*.json")]
    assert len(cards) <= 2 and sum("steps" in c["info"] and "sampler" not in c["info"] for c in cards) == 1
