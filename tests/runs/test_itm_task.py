"""Task itm: a fusion model's image-text matching under embedding-space attacks, its defenses and its utility.

Effect (fixed seed 0, the recipe's smoke size): shapes-albef fine-tuned for 8 steps of 32 pairs (256 train
images) as plain fine-tuning (VILLA with adv_steps 1, the control) and as VILLA with the adversary's step
scaled to the tiny model's embeddings; ITM on 96 test scenes (~190 pairs) under FusedEmbeddingPGD at 5% of
the image tokens' norm. Measured: clean ITM 1.00 for both, robust 0.740 (VILLA) vs 0.635 (control), random
directions of the same norm leave 1.00.
"""

from pathlib import Path

import pytest
from runs_helpers import tiny_spec

from mmsec.runs.grid import expand
from mmsec.runs.results import query
from mmsec.runs.runner import run_spec
from mmsec.runs.spec import SpecError, load_spec

RECIPE = Path(__file__).resolve().parents[2] / "recipes" / "villa.yaml"
TRAIN = {"name": "shapes", "split": "train", "n": 256, "image_size": 32}
SHORT = {"epochs": 1, "batch_size": 32, "lr": 1e-4}


def itm_spec(**overrides) -> dict:
    base = dict(task="itm", model="zoo:shapes-albef", data={"name": "shapes", "split": "test", "n": 96, "image_size": 32},
                attack={"name": "fused_embedding_pgd", "params": {"eps": 0.05, "steps": 10, "modality": "image"}},
                defense=[{"name": "villa", "params": {"adv_steps": 1, **SHORT}, "data": TRAIN},
                         {"name": "villa", "params": {"adv_lr_img": 1.0, "adv_lr_txt": 0.5, **SHORT}, "data": TRAIN}],
                metrics=["itm_accuracy", "itm_accuracy_adv", "itm_accuracy_noise", "itm_attack_success_rate",
                         "i2t_r1", "clean_accuracy", "defense_train_seconds"],
                batch_size=256, save_artifacts=False)
    base.update(overrides)
    return tiny_spec("itm-test", **base)


@pytest.mark.parametrize("overrides, expected", [
    (dict(model="zoo:shapes-clip-resnet"), "'zoo:shapes-clip-resnet' is a 'contrastive' model, but task 'itm' needs "
                                           "a 'fusion' model"),
    (dict(attack={"name": "pgd", "params": {}}), "unknown embedding-space attack 'pgd' for task 'itm'"),
    (dict(attack={"name": "fused_embedding_pgd", "params": {"modality": "audio"}}), "modality must be one of"),
    (dict(data={"name": "imagefolder", "path": "."}), "data.name: task 'itm' builds its non-matching pairs"),
    (dict(defense={"name": "villa", "params": {"adv_stepz": 2}}), "villa has no parameter 'adv_stepz'"),
    (dict(baseline=None, metrics=["itm_accuracy_noise"]), "'itm_accuracy_noise' needs a baseline"),
    (dict(metrics=["robust_accuracy"]), "metric 'robust_accuracy' is not computed for task 'itm'"),
])
def test_bad_itm_specs_are_named(overrides, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(itm_spec(**overrides))


def test_villa_raises_robust_itm_over_plain_fine_tuning_at_equal_clean_utility(tmp_path):
    summaries = run_spec(itm_spec(), tmp_path)
    assert [s["status"] for s in summaries] == ["done", "done"], summaries
    rows = query(tmp_path, "itm-test")
    control, villa = ({r["metric"]: r["value"] for r in rows if r["cell_hash"] == s["cell_hash"]} for s in summaries)
    for m in (control, villa):
        assert m["itm_accuracy"] >= 0.97 and m["i2t_r1"] >= 0.95 and m["clean_accuracy"] >= 0.95, m
        assert m["itm_accuracy_noise"] >= 0.95, m  # random directions of the same norm do nothing
        assert m["itm_accuracy_adv"] <= m["itm_accuracy_noise"] - 0.2, m  # the attack does
        assert m["defense_train_seconds"] > 0
    assert villa["itm_accuracy_adv"] >= control["itm_accuracy_adv"] + 0.05, (villa, control)  # 0.740 vs 0.635
    assert villa["itm_attack_success_rate"] < control["itm_attack_success_rate"]
    adv = next(r for r in rows if r["metric"] == "itm_accuracy_adv")
    assert adv["threat_model"] == ("white-box, perturbation of the fusion encoder's input embeddings: "
                                   "fused_embedding_pgd, untargeted, L2 eps=0.05 x the clean image embeddings' norm, "
                                   "10 steps")
    # both fine-tuned models keep the published architecture: persisted for later runs
    assert len(list((tmp_path / "models").glob("*.safetensors"))) == 2
    assert all(s["status"] == "cached" for s in run_spec(itm_spec(), tmp_path))


def test_the_villa_recipe_compares_four_models_at_three_radii_and_two_modalities():
    paper = expand(load_spec(RECIPE, preset="paper"))
    assert len(paper) == 4 * 3 * 2
    defenses = {(c.config.get("defense") or {}).get("params", {}).get("adv_steps") for c in paper}
    assert defenses == {None, 1}  # the zoo model, the control (adv_steps 1) and VILLA's own default (3)
    assert {c.config["attack"]["params"]["modality"] for c in paper} == {"image", "text"}
    smoke = load_spec(RECIPE, preset="smoke")
    assert smoke.name == "villa-smoke" and len(expand(smoke)) == 2
    # the smoke preset is this file's effect test
    spec = load_spec(itm_spec())
    assert [d.params for d in smoke.defenses] == [d.params for d in spec.defenses]
    assert smoke.data.n == spec.data.n and smoke.attack == spec.attack
