"""Task targeted_poisoning: Yang et al.'s attacks and PBCL's targeted poisoning of fine-tuning; spec checks, the
attacks' effect on text-to-image retrieval against the clean control and the random-caption baseline."""

import json

import pytest
from runs_helpers import tiny_spec

from mmsec.attacks.backdoor import PoisonRecord
from mmsec.runs.grid import expand
from mmsec.runs.results import query
from mmsec.runs.runner import run_spec
from mmsec.runs.spec import SpecError, load_spec

METRICS = ["hit_at_1", "hit_at_10", "min_rank", "hit_at_10_control", "min_rank_control", "utility_t2i_r1",
           "utility_t2i_r1_control", "n_poisoned"]


def tp_spec(**overrides) -> dict:
    base = dict(task="targeted_poisoning", data={"name": "shapes", "split": "test", "n": 300, "image_size": 32},
                attack={"name": "yang_single_target_label",
                        "params": {"text_class": "red circle", "image_class": "blue square"}},
                training={"mode": "finetune", "pairs": 1024, "steps": 60, "batch_size": 64, "lr": 2e-3},
                utility_n=200, baseline="random_captions", metrics=METRICS)
    base.update(overrides)
    return tiny_spec("tp-test", **base)


@pytest.mark.parametrize("overrides, expected", [
    (dict(data={"name": "imagefolder", "path": "x"}), "evaluates on the shapes world"),
    (dict(attack={"name": "pbcl_backdoor", "params": {"target": "red circle"}}),
     "is a backdoor \\(trigger\\) poisoning, measured by task 'backdoor'"),
    (dict(attack={"name": "pgd", "params": {}}), "unknown targeted poisoning attack 'pgd'"),
    (dict(attack={"name": "yang_single_target_label", "params": {"text_class": "red circle",
                                                                  "image_class": "blue banana"}}),
     "'blue banana' is not a shapes-world class"),
    (dict(attack={"name": "pbcl_targeted", "params": {"target": "red circle"}}),
     "image_label: task 'targeted_poisoning' needs the true class of PBCL's target image"),
    (dict(attack={"name": "yang_single_target_image", "params": {"text_class": "red circle", "image_label": 99}}),
     "label 99 is out of range"),
    (dict(training={"mode": "pretrain", "steps": 10}), "training.mode: task 'targeted_poisoning' fine-tunes"),
    (dict(baseline="noise"), "has only the 'random_captions' baseline"),
    (dict(defense="clean_finetune"), "defense: not supported with task 'targeted_poisoning'"),
    (dict(utility_n=0), "utility_n"),
])
def test_bad_targeted_poisoning_specs_are_named(overrides, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(tp_spec(**overrides))


def test_utility_n_belongs_to_this_task_and_goals_are_a_mapping():
    with pytest.raises(SpecError, match="only task 'targeted_poisoning' measures clean retrieval utility"):
        load_spec(tiny_spec(utility_n=10))
    spec = tp_spec(attack={"name": "yang_multiple_target_label",
                           "params": {"goals": {"red circle": "blue square", "green triangle": "yellow ring"}}})
    (cell,) = expand(spec)
    assert cell.config["training"] == {"mode": "finetune", "steps": 60, "pairs": 1024, "batch_size": 64, "lr": 2e-3}
    assert cell.config["utility_n"] == 200
    assert cell.config["attack"]["params"]["goals"] == {"red circle": "blue square", "green triangle": "yellow ring"}


def test_the_attacks_send_the_text_class_to_their_targets(tmp_path):
    """60 steps on 1,024 pairs (20-41 poisoned): every attack's queries find their targets in the top 10 (measured
    Hit@10 1.0, MinRank 1.4 / 1.9 / 3.4) where the control ranks them 95th-136th and random captions almost never
    reach them (Hit@10 <= 0.06); clean retrieval stays within 3 points of the control's. (Attack II is Attack III
    with one goal: its wiring is the spec test above.)"""
    spec = tp_spec(attack=[{"name": "yang_single_target_image", "params": {"text_class": "red circle",
                                                                            "image_label": 10}},
                           {"name": "yang_multiple_target_label",
                            "params": {"goals": {"red circle": "blue square", "green triangle": "yellow ring"}}},
                           {"name": "pbcl_targeted", "params": {"target": "red circle", "image_label": 10,
                                                                "count": 20}}])
    summaries = run_spec(spec, tmp_path)
    assert [s["status"] for s in summaries] == ["done"] * 3, summaries
    rows = {(r["attack"], r["metric"]): r for r in query(tmp_path, "tp-test")}
    attacks = ("yang_single_target_image", "yang_multiple_target_label", "pbcl_targeted")
    for a in attacks:
        v = {m: rows[(a, m)]["value"] for m in METRICS + ["random_hit_at_10"]}
        assert v["hit_at_10"] >= 0.9 and v["hit_at_10"] >= v["hit_at_10_control"] + 0.8, (a, v)
        assert v["hit_at_10"] >= v["random_hit_at_10"] + 0.7, (a, v)  # targeted: random captions do not go there
        assert v["min_rank"] <= 5 and v["min_rank_control"] >= 10 * v["min_rank"], (a, v)
        assert v["utility_t2i_r1"] >= v["utility_t2i_r1_control"] - 0.05, (a, v)
    # Attack III poisons the pairs of both text classes; Attack I those of one (all of them: fraction 1)
    assert rows[("yang_multiple_target_label", "n_poisoned")]["value"] > rows[("yang_single_target_image",
                                                                               "n_poisoned")]["value"]
    assert rows[("pbcl_targeted", "n_poisoned")]["value"] == 20
    # one control for every attack: the same clean fine-tuning (Attack I and PBCL share x*, so their numbers too)
    assert rows[("yang_single_target_image", "min_rank_control")]["value"] == \
        rows[("pbcl_targeted", "min_rank_control")]["value"]
    assert rows[("yang_multiple_target_label", "utility_t2i_r1_control")]["value"] == \
        rows[("pbcl_targeted", "utility_t2i_r1_control")]["value"]
    assert "same training on clean data" in rows[("pbcl_targeted", "hit_at_10_control")]["threat_model"]
    # the poison record is stored beside the results; Attack I's x* is the first blue square of the gallery
    saved = [json.loads(p.read_text()) for p in tmp_path.glob("artifacts/tp-test/*/poison_record.json")]
    assert len(saved) == 3
    image_attacks = [PoisonRecord.from_dict(s["record"]) for s in saved if s["record"]["target_image"] is not None]
    assert len(image_attacks) == 2 and all(r.image_label == 10 for r in image_attacks)
    assert all(s["status"] == "cached" for s in run_spec(spec, tmp_path))
