"""Task ssl_backdoor: poisoned unlabelled images, SimCLR pre-training, a downstream probe. CorruptEncoder does not
reproduce at a test's size (nor at the published study's, see recipes/corruptencoder.yaml), so the end-to-end test
asserts what the pipeline must do: the poisoned images carry the trigger, the attacker's material comes from the
named scene ranges, the control is another encoder, the metrics are in range and the layout analysis is the paper's."""

import json

import pytest
import torch
from runs_helpers import tiny_spec

from mmsec.runs.grid import expand
from mmsec.runs.results import query
from mmsec.runs.runner import run_spec
from mmsec.runs.spec import SpecError, load_spec

METRICS = ["probe_asr", "probe_asr_control", "probe_accuracy", "probe_accuracy_control", "probe_accuracy_drop",
           "probe_clean_target_rate", "n_poisoned", "poison_rate", "layout_probability", "layout_probability_best",
           "layout_best_area_ratio", "decoupled_view_rate"]


def ssl_spec(**overrides) -> dict:
    base = dict(task="ssl_backdoor", data={"name": "shapes", "split": "test", "n": 200, "image_size": 32},
                attack={"name": "corruptencoder", "params": {"target": "red circle", "rate": 0.02}},
                pretraining={"images": 512, "steps": 10, "batch_size": 64}, probe={"n": 500}, backgrounds=50,
                baseline="noise", metrics=METRICS)
    base.update(overrides)
    return tiny_spec("ssl-test", **base)


@pytest.mark.parametrize("overrides, expected", [
    (dict(data={"name": "imagefolder", "path": "x"}), "evaluates on the shapes world"),
    (dict(model="hf:/nowhere"), "pre-trains the image tower of a zoo recipe from scratch"),
    (dict(attack={"name": "corruptencoder", "params": {"target": "blue banana"}}),
     "'blue banana' is not a shapes-world class"),
    (dict(attack={"name": "pbcl_backdoor", "params": {"target": "red circle"}}),
     "unknown image poisoning attack 'pbcl_backdoor'"),
    (dict(attack={"name": "corruptencoder", "params": {"target": "red circle", "trigger": "sig"}}),
     "trigger must be a PatchTrigger or OptimizedPatch"),
    (dict(textures=["plain", "dotted"]), "textures\\[1\\]: 'dotted' is not a shapes-world texture"),
    (dict(pretraining={"images": 32, "batch_size": 64}), "pretraining.batch_size \\(64\\) is larger"),
    (dict(pretraining={"crop_min": 0}), "pretraining.crop_min"),
    (dict(defense="clean_finetune"), "defense: not supported with task 'ssl_backdoor'"),
])
def test_bad_ssl_backdoor_specs_are_named(overrides, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(ssl_spec(**overrides))


def test_pretraining_belongs_to_this_task():
    with pytest.raises(SpecError, match="only task 'ssl_backdoor' pre-trains an encoder with SimCLR"):
        load_spec(tiny_spec(pretraining={"steps": 10}))
    (cell,) = expand(ssl_spec())
    assert cell.config["pretraining"] == {"images": 512, "steps": 10, "batch_size": 64, "lr": 2e-3, "crop_min": 0.2,
                                          "second_object_prob": 0.0}
    assert cell.config["probe"] == {"n": 500, "c": 1.0} and cell.config["textures"] == ["plain"]


def test_the_poisoned_images_carry_the_trigger_where_the_record_says():
    from mmsec.attacks.backdoor.corruptencoder import trigger_patch
    from mmsec.attacks.backdoor.triggers import PatchTrigger
    from mmsec.runs.tasks.ssl_backdoor import clean_images, poisoned_set

    (ce,) = expand(ssl_spec())
    (naive,) = expand(ssl_spec(attack={"name": "naive_ssl_poisoning", "params": {"target": "red circle",
                                                                                 "rate": 0.02}}))
    clean = clean_images(ce.config)
    for cell in (ce.config, naive.config):
        images, record, _ = poisoned_set(cell, cell["attack"])
        assert record.n_clean == 512 and record.n_poisoned == 10 and len(images) == 522
        assert all(torch.equal(images[i], clean[i]) for i in range(512))  # the clean images unchanged, first
        patch = trigger_patch(PatchTrigger(), (32, 32))  # the 4 x 4 checkerboard at its test-time size
        for k, item in zip(record.indices, record.items, strict=True):
            y, x, h, w = item["layout"]["trigger_box"] if item["type"] == "object" else item["trigger_box"]
            y, x = int(round(y)), int(round(x))
            assert torch.allclose(images[k][:, y:y + h, x:x + w], patch, atol=1e-6), (cell["attack"]["name"], item)
    _, ce_record, material = poisoned_set(ce.config, ce.config["attack"])
    assert ce_record.references and all(r >= 90_000 for r in ce_record.references)  # REFERENCE_POOL's scenes
    assert len(material["references"]) == 3 and material["backgrounds"].shape == (50, 3, 32, 32)


def test_an_ssl_grid_pretrains_the_poisoned_and_the_clean_encoder(tmp_path):
    """10 SimCLR steps learn nothing that matters (probe ~0.1 on 48 classes): checked is the wiring."""
    spec = ssl_spec(attack=[{"name": "corruptencoder", "params": {"target": "red circle", "rate": 0.02}},
                            {"name": "naive_ssl_poisoning", "params": {"target": "red circle", "rate": 0.02}}])
    summaries = run_spec(spec, tmp_path)
    assert [s["status"] for s in summaries] == ["done", "done"], summaries
    rows = {(r["attack"], r["metric"]): r["value"] for r in query(tmp_path, "ssl-test")}
    for a in ("corruptencoder", "naive_ssl_poisoning"):
        for m in ("probe_asr", "probe_asr_noise", "probe_asr_control", "probe_accuracy", "probe_accuracy_control",
                  "probe_clean_target_rate"):
            assert 0.0 <= rows[(a, m)] <= 1.0, (a, m)
        assert rows[(a, "n_poisoned")] == 10 and rows[(a, "poison_rate")] == pytest.approx(10 / 522)
        assert rows[(a, "probe_accuracy_drop")] == pytest.approx(
            100 * (rows[(a, "probe_accuracy_control")] - rows[(a, "probe_accuracy")]))
    # one control for both cells, a different encoder from either poisoned one
    assert rows[("corruptencoder", "probe_accuracy_control")] == rows[("naive_ssl_poisoning", "probe_accuracy_control")]
    assert rows[("corruptencoder", "probe_accuracy")] != rows[("corruptencoder", "probe_accuracy_control")] or \
        rows[("naive_ssl_poisoning", "probe_accuracy")] != rows[("naive_ssl_poisoning", "probe_accuracy_control")]
    # CorruptEncoder's layout analysis: the paper's optimum near an area ratio of 2 (its theory, Fig. 4)
    assert 1.75 <= rows[("corruptencoder", "layout_best_area_ratio")] <= 2.5
    assert 0 < rows[("corruptencoder", "layout_probability")] <= rows[("corruptencoder", "layout_probability_best")]
    assert 0 < rows[("corruptencoder", "decoupled_view_rate")] < 0.5
    assert ("naive_ssl_poisoning", "layout_probability") not in rows  # no object layout to analyse
    records = [json.loads(p.read_text()) for p in tmp_path.glob("artifacts/ssl-test/*/poison_record.json")]
    assert sorted(r["kind"] for r in records) == ["corruptencoder", "naive"]
