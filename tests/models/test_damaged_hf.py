"""A truncated model.safetensors in an hf: folder (issue 16): one line naming the file, exit 2, no traceback."""

import shutil

from test_hf_clip import clip_dir  # noqa: F401 - the tiny random CLIP folder fixture

from mmsec.cli import main


def test_truncated_hf_weights_are_one_clean_line(capsys, clip_dir, tmp_path):  # noqa: F811
    folder = shutil.copytree(clip_dir, tmp_path / "hf")
    weights = folder / "model.safetensors"
    for cut in (5000, weights.stat().st_size - 100):
        shutil.copy(clip_dir / "model.safetensors", weights)
        with open(weights, "r+b") as f:
            f.truncate(cut)
        code = main(["quickstart", "--n", "4", "--model", f"hf:{folder}", "--results-dir", str(tmp_path / "S")])
        err = capsys.readouterr().err
        assert code == 2 and "Traceback" not in err
        assert f"{weights} is not a complete safetensors file" in err and len(err.strip().splitlines()) == 1
