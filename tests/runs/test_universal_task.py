"""Task universal: a universal patch learnt once by the attacker, scored by downstream users in each world.

Effect (fixed seed 0, the zoo ResNet CLIP): AdvCLIP for 120 steps at lr 3e-3 (its code's GAN at 15x its
step, so that the patch forms in a test's time; the recipe keeps 2e-4 and 20 epochs) on 256 attacker
scenes; probes fit on 300 clean scenes per world, 160 test scenes. Measured: standard world, colour
probe drop 0.125 vs 0.000 for the noise patch, position 0.294 vs 0.006, zero-shot 0.512 vs 0.012;
held-out "scenes" world, colour 0.156 vs -0.025.
"""

from pathlib import Path

import pytest
import torch
from runs_helpers import tiny_spec

from mmsec.runs.grid import expand
from mmsec.runs.results import query
from mmsec.runs.runner import run_spec
from mmsec.runs.spec import SpecError, load_spec

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "advclip.yaml"


def universal_spec(**overrides) -> dict:
    base = dict(task="universal", data={"name": "shapes", "split": "test", "n": 160},
                attack={"name": "advclip", "params": {"max_steps": 120, "lr": 0.003}},
                world=["standard", "scenes"], surrogate=256, probe_train=300,
                metrics=[f"{t}_{k}" for t in ("probe_color", "probe_position", "zeroshot")
                         for k in ("clean", "drop", "drop_noise")] + ["probe_color_fooling", "patch_seconds"])
    base.update(overrides)
    return tiny_spec("universal-test", **base)


@pytest.mark.parametrize("overrides, expected", [
    (dict(world="48pix"), r"world: unknown world '48pix'; allowed: standard, scenes, 48px\. Did you mean '48px'"),
    (dict(world=["standard", "standard"]), r"world\[1\]: duplicate value 'standard'"),
    (dict(data={"name": "shapes", "split": "test", "n": 10, "image_size": 32}), "data.image_size: set by the world"),
    (dict(data={"name": "shapes", "split": "test", "n": 10, "seed": 3}), "data.seed: set by the world"),
    (dict(data={"name": "shapes", "split": "train", "n": 10}), "data.split: the attacker's and the probes' scenes"),
    (dict(attack={"name": "pgd", "params": {}}), "unknown universal attack 'pgd' for task 'universal'"),
    (dict(attack={"name": "advclip", "params": {"position": [20, 20]}}, world=["standard", "48px"]),
     r"attack.params.position: a \(y, x\) corner is in pixels of the 32 px surrogate images, but world '48px'"),
    (dict(baseline=None, metrics=["probe_color_drop", "zeroshot_drop_noise"]),
     r"metrics\[1\]: 'zeroshot_drop_noise' is the noise patch's drop and needs `baseline: noise`"),
    (dict(defense="tecoa"), "defense: not supported with task 'universal'"),
    (dict(surrogate=1), "surrogate"),
    (dict(surrogate=200_000), "surrogate: 200000 scenes run past the attacker's range"),
])
def test_bad_universal_specs_are_named(overrides, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(universal_spec(**overrides))


def test_worlds_belong_to_the_universal_task_and_are_its_innermost_axis():
    with pytest.raises(SpecError, match="only task 'universal' scores a patch in shapes-world variants"):
        load_spec(tiny_spec(world="standard"))
    assert "world" not in expand(tiny_spec())[0].config  # other tasks' cell hashes are unchanged
    cells = expand(universal_spec(attack=[{"name": "advclip", "params": {}}, {"name": "uap_patch", "params": {}}]))
    assert [(c.config["attack"]["name"], c.config["world"]) for c in cells] == [
        ("advclip", "standard"), ("advclip", "scenes"), ("uap_patch", "standard"), ("uap_patch", "scenes")]
    assert cells[0].config["surrogate"] == 256 and cells[0].config["probe_train"] == 300
    # the default metrics: the noise patch's colour-probe drop joins them with a baseline, and only then
    assert "probe_color_drop_noise" in load_spec(universal_spec(metrics=None)).metrics
    spec = load_spec(universal_spec(baseline=None, metrics=None))
    assert not [m for m in spec.metrics if m.endswith("_noise")] and "probe_color_drop" in spec.metrics


def test_the_learnt_patch_hurts_downstream_users_far_more_than_a_noise_patch(tmp_path):
    summaries = run_spec(universal_spec(), tmp_path)
    assert [s["status"] for s in summaries] == ["done", "done"], summaries
    rows = query(tmp_path, "universal-test")
    by_world: dict[str, dict[str, float]] = {}
    for s in summaries:
        world = "standard" if "world=standard" in s["label"] else "scenes"
        by_world[world] = {r["metric"]: r["value"] for r in rows if r["cell_hash"] == s["cell_hash"]}
    std, held = by_world["standard"], by_world["scenes"]
    assert std["probe_color_clean"] >= 0.95 and std["zeroshot_clean"] >= 0.95, std
    assert std["probe_color_drop"] >= std["probe_color_drop_noise"] + 0.08, std  # measured 0.125 vs 0.000
    assert std["probe_position_drop"] >= std["probe_position_drop_noise"] + 0.2, std  # 0.294 vs 0.006
    assert std["zeroshot_drop"] >= std["zeroshot_drop_noise"] + 0.3, std  # 0.512 vs 0.012
    assert std["probe_color_fooling"] >= std["probe_color_drop"] - 1e-9  # every lost prediction changed
    assert held["probe_color_drop"] >= held["probe_color_drop_noise"] + 0.08, held  # 0.156 vs -0.025
    # one patch for both worlds: learnt once, stored beside each cell
    assert std["patch_seconds"] == held["patch_seconds"] > 0
    from safetensors.torch import load_file

    patches = [load_file(str(p))["patch"] for p in sorted(tmp_path.glob("artifacts/universal-test/*/patch.safetensors"))]
    assert len(patches) == 2 and torch.equal(patches[0], patches[1]) and patches[0].shape == (3, 6, 6)
    noise_rows = [r for r in rows if r["metric"] == "probe_color_drop_noise"]
    assert noise_rows[0]["threat_model"].startswith("uniform-noise patch of 6x6 px (3.5% of the 32 px")
    assert all(s["status"] == "cached" for s in run_spec(universal_spec(), tmp_path))


def test_the_advclip_recipe_runs_both_attacks_in_three_worlds():
    paper = expand(load_spec(RECIPE, preset="paper"))
    assert {(c.config["model"], c.config["attack"]["name"], c.config["world"]) for c in paper} == {
        (m, a, w) for m in ("zoo:shapes-clip-resnet", "zoo:shapes-clip-vit") for a in ("advclip", "uap_patch")
        for w in ("standard", "scenes", "48px")}
    assert paper[0].config["surrogate"] == 2000 and paper[0].config["data"]["n"] == 1000
    smoke = load_spec(RECIPE, preset="smoke")
    assert smoke.name == "advclip-smoke" and {a.name for a in smoke.attacks} == {"advclip", "uap_patch"}
    assert len(expand(smoke)) == 2
