"""Task transfer: pairs crafted on a source model, scored on every target; spec checks, grid, store, matrix."""

import pytest
from runs_helpers import tiny_spec

from mmsec.runs.grid import expand
from mmsec.runs.results import format_matrix, format_results, query
from mmsec.runs.runner import run_spec
from mmsec.runs.spec import SpecError, load_spec
from mmsec.runs.tasks import transfer

MODELS = ["zoo:shapes-clip-resnet", "zoo:shapes-albef"]


def transfer_spec(**overrides) -> dict:
    base = dict(model=MODELS, target=MODELS, task="transfer",
                data={"name": "shapes", "split": "test", "n": 16, "image_size": 32},
                attack={"name": "co_attack", "params": {"mode": ["image", "co"], "eps": "8/255",
                                                         "candidates": "typos"}},
                metrics=["asr", "asr_i2t", "asr_t2i", "asr_noise", "clean_i2t_r1", "words_changed"],
                save_artifacts=False)
    base.update(overrides)
    return tiny_spec("transfer-test", **base)


def test_targets_are_the_innermost_axis():
    cells = expand(transfer_spec())
    assert len(cells) == 8
    assert [(c.config["model"], c.config["attack"]["params"]["mode"], c.config["target"]) for c in cells[:4]] == [
        (MODELS[0], "image", MODELS[0]), (MODELS[0], "image", MODELS[1]),
        (MODELS[0], "co", MODELS[0]), (MODELS[0], "co", MODELS[1])]
    assert cells[1].label.startswith("model=zoo:shapes-clip-resnet target=zoo:shapes-albef")
    # cells of other tasks carry no target key, so their hashes are unchanged
    assert "target" not in expand(tiny_spec())[0].config


@pytest.mark.parametrize("overrides, expected", [
    (dict(target=None), "task 'transfer' needs the target models"),
    (dict(attack={"name": "pgd", "params": {"eps": "8/255"}}), "unknown pair attack 'pgd'"),
    (dict(target=["zoo:nope"]), r"target\[0\]: unknown zoo model 'nope'"),
    (dict(baseline="fgsm"), "only the 'noise' baseline"),
    (dict(attack={"name": "co_attack", "params": {"mode": "all"}}), "mode must be one of"),
    (dict(attack={"name": "co_attack", "params": {"candidates": "synonyms"}}), "candidates must be one of"),
])
def test_bad_transfer_specs_are_named(overrides, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(transfer_spec(**overrides))


def test_target_only_belongs_to_the_transfer_task():
    with pytest.raises(SpecError, match="only task 'transfer' has target models"):
        load_spec(tiny_spec(target="zoo:shapes-clip-vit"))


def test_a_transfer_grid_runs_stores_and_prints_a_matrix(tmp_path, monkeypatch, capsys):
    crafted = []
    real = transfer.craft

    def counting(ctx, source, *args):
        crafted.append(source)
        return real(ctx, source, *args)

    monkeypatch.setattr(transfer, "craft", counting)
    summaries = run_spec(transfer_spec(), tmp_path)
    assert all(s["status"] == "done" for s in summaries)
    assert len(crafted) == 4  # once per (source, attack setting), shared by both targets
    rows = query(tmp_path, "transfer-test")
    by = {}
    for r in rows:
        by[(r["model"], r["target"], r["params"]["mode"], r["metric"])] = r["value"]
    # White-box Co-Attack on the fusion model breaks far more pairs than uniform noise of its budget.
    assert by[(MODELS[1], MODELS[1], "co", "asr")] >= by[(MODELS[1], MODELS[1], "co", "asr_noise")] + 0.4
    assert by[(MODELS[1], MODELS[1], "co", "words_changed")] == 1.0
    assert by[(MODELS[1], MODELS[1], "image", "words_changed")] == 0.0
    table = format_results(rows)
    assert "target" in table and "asr_noise" in table
    matrix = format_matrix(rows, "asr")
    assert "rows = source, columns = target" in matrix and matrix.count("zoo:shapes-albef") >= 4
    threat = {r["threat_model"] for r in rows if r["metric"] == "asr"}
    assert any("transfer co_attack from zoo:shapes-clip-resnet to zoo:shapes-albef" in t for t in threat)
    from mmsec.cli import main

    capsys.readouterr()
    assert main(["results", "--results-dir", str(tmp_path), "--matrix", "asr"]) == 0
    assert "rows = source, columns = target" in capsys.readouterr().out
    # A second run is a no-op.
    assert all(s["status"] == "cached" for s in run_spec(transfer_spec(), tmp_path))


def test_attacks_side_by_side_and_sga_gets_each_images_caption_set(tmp_path, monkeypatch):
    from mmsec.attacks.multimodal import SGA

    seen = []
    real_call = SGA.__call__

    def spy(self, model, pixels, captions, generator=None, caption_sets=None):
        seen.append(caption_sets)
        return real_call(self, model, pixels, captions, generator=generator, caption_sets=caption_sets)

    monkeypatch.setattr(SGA, "__call__", spy)
    spec = transfer_spec(model=MODELS[0], target=MODELS[0], data={"name": "shapes", "split": "test", "n": 8},
                         attack=[{"name": "co_attack", "params": {"mode": "image", "eps": "8/255"}},
                                 {"name": "sga", "params": {"eps": "8/255", "steps": 3, "candidates": "typos"}}])
    summaries = run_spec(spec, tmp_path)
    assert [s["status"] for s in summaries] == ["done", "done"]
    assert len(seen) == 1 and len(seen[0]) == 8 and all(len(s) == 6 for s in seen[0])  # the six templates
    rows = {(r["attack"], r["metric"]): r["value"] for r in query(tmp_path, "transfer-test")}
    assert rows[("sga", "words_changed")] == 1.0 and rows[("co_attack", "words_changed")] == 0.0
    assert rows[("sga", "asr")] > rows[("sga", "asr_noise")]
    matrix = format_matrix(query(tmp_path, "transfer-test"), "asr")
    assert "| sga (" in matrix and "mode=" not in matrix.split("| sga (")[1].split(")")[0]  # only its own params
