"""`mmsec results` aggregates a grid's seed axis: one line per group of runs that differ only in their seed,
each metric's mean with a 95% Student-t interval and the number of seeds; `--seeds each` shows every run."""

import csv
import io
import json

import pytest

from mmsec.cli import main
from mmsec.runs.store import ResultsStore


def store_with_seeds(folder, values_by_eps):
    """Finished runs written through the store's API: for each eps, one run per value (seed = position)."""
    with ResultsStore(folder) as store:
        for eps, values in values_by_eps.items():
            for seed, value in enumerate(values):
                cell = {"spec_name": "grid", "model": "zoo:shapes-clip-resnet", "seed": seed,
                        "attack": {"name": "pgd", "params": {"eps": eps}}}
                run_id = store.claim(f"cell-{eps}-{seed}", cell, "spec-hash")
                store.finish(run_id, {"metrics": [{"name": "robust_accuracy", "value": value, "metric_version": 1,
                                                   "threat_model": "pgd", "definition": "top-1 under attack",
                                                   "higher_is_better": True}], "artifacts": [],
                                      "wall_time_s": 1.0 + seed})
    return folder


def cli(capsys, *argv):
    code = main(list(argv))
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_table_shows_mean_interval_and_seed_count(capsys, tmp_path):
    store = store_with_seeds(tmp_path / "S", {2 / 255: [0.5, 0.6, 0.7], 4 / 255: [0.2, 0.2, 0.2]})
    out = cli(capsys, "results", "--results-dir", str(store))
    lines = [line for line in out.splitlines() if line.startswith(("2/255", "4/255"))]
    assert len(lines) == 2, out  # one line per eps, not per run
    # mean 0.6, sd 0.1, t_{0.975,2} * 0.1 / sqrt(3) = 0.248
    assert "0.600 ± 0.248" in lines[0] and " 3 " in lines[0], lines[0]
    assert "0.200 ± 0.000" in lines[1], lines[1]
    assert "Student-t" in out
    each = cli(capsys, "results", "--results-dir", str(store), "--seeds", "each")
    assert sum(line.startswith("2/255") for line in each.splitlines()) == 3 and "±" not in each


def test_csv_and_json_keep_runs_unless_asked_and_then_carry_the_bounds(capsys, tmp_path):
    store = store_with_seeds(tmp_path / "S", {2 / 255: [0.5, 0.6, 0.7]})
    rows = list(csv.DictReader(io.StringIO(cli(capsys, "results", "--results-dir", str(store), "--format", "csv"))))
    assert len(rows) == 3  # machine formats: one row per run by default
    rows = list(csv.DictReader(io.StringIO(cli(capsys, "results", "--results-dir", str(store), "--format", "csv",
                                               "--seeds", "mean"))))
    assert len(rows) == 1 and rows[0]["n_seeds"] == "3" and rows[0]["seeds"] == "0 1 2"
    assert float(rows[0]["robust_accuracy"]) == pytest.approx(0.6)
    assert float(rows[0]["robust_accuracy_low"]) == pytest.approx(0.6 - 0.2484, abs=1e-3)
    assert float(rows[0]["robust_accuracy_high"]) == pytest.approx(0.6 + 0.2484, abs=1e-3)
    groups = json.loads(cli(capsys, "results", "--results-dir", str(store), "--format", "json", "--seeds", "mean"))
    (g,) = groups
    assert g["n_seeds"] == 3 and g["metrics"]["robust_accuracy"] == pytest.approx(0.6)
    assert g["intervals"]["robust_accuracy"]["method"] == "t" and g["wall_time_s"] == pytest.approx(2.0)


def test_a_store_without_a_seed_axis_keeps_the_per_run_table(capsys, tmp_path):
    store = store_with_seeds(tmp_path / "S", {2 / 255: [0.5], 4 / 255: [0.25]})
    out = cli(capsys, "results", "--results-dir", str(store))
    assert "Student-t" not in out and "0.250" in out and "±" not in out
    groups = json.loads(cli(capsys, "results", "--results-dir", str(store), "--format", "json", "--seeds", "mean"))
    assert [g["intervals"]["robust_accuracy"]["low"] for g in groups] == [None, None]  # one seed: no interval


def test_a_method_parameter_named_seed_is_headed_apart_from_the_cells_seed(capsys, tmp_path):
    with ResultsStore(tmp_path / "S") as store:
        for attack_seed in (3, 4):
            cell = {"spec_name": "grid", "model": "zoo:shapes-clip-resnet", "seed": 0,
                    "attack": {"name": "pgd", "params": {"eps": 2 / 255, "seed": attack_seed}}}
            run_id = store.claim(f"cell-{attack_seed}", cell, "spec-hash")
            store.finish(run_id, {"metrics": [{"name": "robust_accuracy", "value": 0.5, "metric_version": 1,
                                               "threat_model": "pgd", "definition": "d", "higher_is_better": True}],
                                  "artifacts": [], "wall_time_s": 1.0})
    header = next(line for line in cli(capsys, "results", "--results-dir", str(tmp_path / "S")).splitlines()
                  if "robust_accuracy" in line)
    assert "seed (param)" in header and header.replace("seed (param)", "").split().count("seed") == 1, header
