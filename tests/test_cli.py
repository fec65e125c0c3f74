"""The CLI as a user meets it: commands work, bad input gets one clear line and no traceback."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from mmsec import zoo
from mmsec.cli import main
from mmsec.quickstart import quickstart_spec

REPO = Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_quickstart_recipe_file_matches_the_builtin_spec():
    recipe = yaml.safe_load((REPO / "recipes" / "quickstart.yaml").read_text())
    recipe.pop("presets")  # (its size presets; the body is the quickstart itself)
    assert recipe == quickstart_spec()


def test_quickstart_json_prints_only_one_json_object(tmp_path):
    # A real subprocess, so that stdout holds exactly what a user's pipe would get.
    proc = subprocess.run([sys.executable, "-c", "import sys; from mmsec.cli import main; sys.exit(main())",
                           "quickstart", "--json", "--n", "64", "--results-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=300, env={"OMP_NUM_THREADS": "1",
                                                                            "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)  # the whole of stdout parses as one object
    assert {"model", "clean_accuracy", "noise_accuracy", "robust_accuracy"} <= set(summary)
    assert list(summary["robust_accuracy"]) == ["1/255", "2/255", "4/255", "8/255"]
    assert summary["clean_accuracy"] >= 0.95
    assert summary["robust_accuracy"]["8/255"] < 0.2 < summary["clean_accuracy"] - 0.5
    assert abs(summary["noise_accuracy"] - summary["clean_accuracy"]) <= 0.05
    assert Path(summary["example_png"]).is_file()


def test_list_and_zoo_commands(capsys):
    code, out, _ = run_cli(capsys, "list", "attacks")
    assert code == 0 and "pgd" in out and "fgsm" in out and "noise" in out
    code, out, _ = run_cli(capsys, "list")
    assert code == 0 and "zoo:shapes-clip-vit" in out and "shapes" in out
    code, out, _ = run_cli(capsys, "zoo", "list")
    assert code == 0 and "shapes-clip-resnet" in out
    code, out, _ = run_cli(capsys, "zoo", "info", "shapes-clip-vit")
    assert code == 0 and json.loads(out)["sha256"] == zoo.card("shapes-clip-vit")["sha256"]


def test_data_export_then_run_on_the_exported_folder(capsys, tmp_path):
    code, _, err = run_cli(capsys, "data", "export", str(tmp_path / "shapes"), "--n", "12")
    assert code == 0, err
    assert (tmp_path / "shapes" / "captions.jsonl").is_file()
    code, _, err = run_cli(capsys, "data", "export", str(tmp_path / "shapes"), "--n", "12")
    assert code == 2 and "overwrite" in err


def _write_spec(tmp_path: Path, **changes) -> Path:
    spec = quickstart_spec(n=16)
    spec["attack"]["params"]["eps"] = ["8/255"]
    spec["save_artifacts"] = False
    for key, value in changes.items():
        spec[key] = value
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_run_and_results_formats(capsys, tmp_path):
    spec = _write_spec(tmp_path)
    results = tmp_path / "results"
    code, out, err = run_cli(capsys, "run", str(spec), "--results-dir", str(results))
    assert code == 0, err
    assert "robust_accuracy" in out
    code, out, _ = run_cli(capsys, "results", "--results-dir", str(results), "--format", "json")
    rows = json.loads(out)  # one object per (run, metric), each with its definition
    robust = [r for r in rows if r["metric"] == "robust_accuracy"]
    assert code == 0 and len(robust) == 1 and robust[0]["value"] < 0.5
    assert robust[0]["metric_version"] >= 1 and "pgd" in robust[0]["threat_model"]
    code, out, _ = run_cli(capsys, "results", "--results-dir", str(results), "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("run_id,")


@pytest.mark.parametrize("mutate, expected", [
    (lambda s: s["attack"].update(name="pgdd"), "Did you mean 'pgd'"),
    (lambda s: s["attack"]["params"].update(eps=[1.5]), "attack.params.eps"),
    (lambda s: s.update(task="segmentation"), "zeroshot"),
])
def test_bad_specs_get_one_clear_line(capsys, tmp_path, mutate, expected):
    spec = quickstart_spec(n=16)
    mutate(spec)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(spec))
    code, _, err = run_cli(capsys, "run", str(path), "--results-dir", str(tmp_path / "r"))
    assert code == 2
    assert expected in err and "Traceback" not in err


def test_corrupt_image_is_named_and_the_run_fails_cleanly(capsys, tmp_path):
    folder = tmp_path / "images"
    (folder / "cat").mkdir(parents=True)
    (folder / "cat" / "broken.png").write_bytes(b"not a png at all")
    spec = _write_spec(tmp_path, data={"name": "imagefolder", "path": str(folder), "image_size": 32})
    code, _, err = run_cli(capsys, "run", str(spec), "--results-dir", str(tmp_path / "r"))
    assert code == 1
    assert "broken.png" in err and "Traceback" not in err


def test_checkpoint_with_wrong_hash_is_refused_at_the_cli(capsys, tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(zoo.CHECKPOINTS / f"shapes-clip-resnet{suffix}", tmp_path / f"tampered{suffix}")
    with open(tmp_path / "tampered.safetensors", "r+b") as f:
        f.seek(-1, 2)
        f.write(b"\x00" if f.read(1) != b"\x00" else b"\x01")
    code, _, err = run_cli(capsys, "quickstart", "--n", "8", "--model", f"zoo:{tmp_path / 'tampered.safetensors'}",
                           "--results-dir", str(tmp_path / "r"))
    assert code == 2 and "sha256 mismatch" in err and "Traceback" not in err


def test_pickle_checkpoint_is_refused_at_the_cli(capsys, tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "model.pt")
    code, _, err = run_cli(capsys, "quickstart", "--n", "8", "--model", f"zoo:{tmp_path / 'model.pt'}",
                           "--results-dir", str(tmp_path / "r"))
    assert code == 2 and "pickle" in err and "Traceback" not in err


def test_unknown_names_suggest_close_ones(capsys):
    code, _, err = run_cli(capsys, "zoo", "info", "shapes-clip-resnett")
    assert code == 2 and "shapes-clip-resnet" in err
    code, _, err = run_cli(capsys, "quickstart", "--model", "zoo:shapes-clip-vitt", "--n", "8")
    assert code == 2 and "shapes-clip-vit" in err


def test_results_without_a_store_says_what_to_do(capsys, tmp_path):
    code, _, err = run_cli(capsys, "results", "--results-dir", str(tmp_path))
    assert code == 2 and "mmsec quickstart" in err


def test_zoo_train_writes_to_a_user_folder_never_into_the_package(capsys, tmp_path, monkeypatch):
    """Issue 16: `mmsec zoo train NAME --steps 1` replaced the shipped checkpoint and card, silently."""
    shipped = {p.name: p.read_bytes() for p in zoo.CHECKPOINTS.iterdir() if p.is_file()}
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(zoo.USER_DIR_ENV, raising=False)
    code, out, err = run_cli(capsys, "zoo", "train", "shapes-clip-resnet", "--steps", "1")
    assert code == 0, err
    result = json.loads(out)
    written = tmp_path / "mmsec-zoo" / "shapes-clip-resnet.safetensors"
    assert result["checkpoint"] == str(written) and result["model"] == f"zoo:{written}"
    assert json.loads(written.with_suffix(".json").read_text())["sha256"] == result["sha256"]
    assert result["sha256"] != zoo.card("shapes-clip-resnet")["sha256"]
    code, out, err = run_cli(capsys, "quickstart", "--json", "--n", "8", "--model", result["model"],
                             "--results-dir", str(tmp_path / "r"))
    assert code == 0, err
    assert json.loads(out)["model"] == result["model"]
    for argv in (["--out", str(zoo.CHECKPOINTS)], ["--out", str(tmp_path / "x"), "--overwrite-shipped"]):
        code, out, err = run_cli(capsys, "zoo", "train", "shapes-clip-resnet", "--steps", "1", *argv)
        assert code == 2 and out == "" and "Traceback" not in err
        assert "--overwrite-shipped" in err and str(zoo.CHECKPOINTS) in err
    monkeypatch.setenv(zoo.USER_DIR_ENV, str(zoo.CHECKPOINTS))
    code, _, err = run_cli(capsys, "zoo", "train", "shapes-clip-resnet", "--steps", "1")
    assert code == 2 and "$MMSEC_ZOO_DIR" in err and "shipped zoo" in err
    assert {p.name: p.read_bytes() for p in zoo.CHECKPOINTS.iterdir() if p.is_file()} == shipped
    assert not (tmp_path / "x").exists()
    code, out, _ = run_cli(capsys, "zoo", "train", "--help")
    assert code == 0 and "--overwrite-shipped" in out and "mmsec-zoo" in out
