"""The zoo: shipped checkpoints load, are small, meet their quality bar, and refuse tampering."""

import json
import shutil

import pytest
import torch

from mmsec import zoo
from mmsec.data.shapes import ShapesWorld
from mmsec.models.checkpoint import CheckpointError, load_checkpoint, sha256_file
from mmsec.zoo.evaluate import retrieval, zeroshot_accuracy
from mmsec.zoo.train import train_recipe

# Models shipped as one checkpoint file (the diffusion models are folders: tests/zoo/test_diffusion_zoo.py).
FILE_MODELS = [n for n in zoo.available() if (zoo.CHECKPOINTS / f"{n}.safetensors").is_file()]


@pytest.mark.parametrize("name", FILE_MODELS)
def test_shipped_checkpoint_card_and_quality(name):
    path = zoo.CHECKPOINTS / f"{name}.safetensors"
    card = zoo.card(name)
    assert path.stat().st_size <= 5 * 1024 * 1024
    assert card["sha256"] == sha256_file(path)
    for key in ("recipe", "seed", "data", "metrics", "version"):
        assert key in card
    family = card.get("family", "contrastive")
    if family in ("contrastive", "fusion"):
        assert card["metrics"]["zeroshot_top1"] >= 0.95
        assert "i2t_r1" in card["metrics"]
    elif family == "classifier":  # the judge of generated images (issue 18: >= 0.98 on real test images)
        assert card["metrics"]["accuracy"] >= 0.98


def test_second_vit_meets_the_issue_bar():
    """zoo:shapes-clip-vit2 (issue 19): zero-shot >= 0.98 and image-to-text R@1 >= 0.9 on its card, where
    shapes-clip-vit (kept for comparison) retrieves at 0.39; its card is its recipe's, and it re-measures so."""
    card, first = zoo.card("shapes-clip-vit2"), zoo.card("shapes-clip-vit")
    assert card["metrics"]["zeroshot_top1"] >= 0.98 and card["metrics"]["i2t_r1"] >= 0.9
    assert first["metrics"]["i2t_r1"] < 0.5 and first["recipe"]["model"]["image_tower"] == "vit"
    assert card["recipe"] == zoo.load_recipe("shapes-clip-vit2") and card["recipe"]["model"]["image_tower"] == "vit"
    model = zoo.load_model("shapes-clip-vit2")
    assert (model.config.vit_pos_embed, model.config.vit_stem) == ("sincos", "conv")
    assert zeroshot_accuracy(model, ShapesWorld(32, 0, 0.0), 300)["zeroshot_top1"] >= 0.97
    assert retrieval(model, ShapesWorld(32, 0, 0.25), 300)["i2t_r1"] >= 0.9


def test_both_architectures_are_shipped():
    towers = {zoo.card(n)["recipe"]["model"].get("image_tower") for n in FILE_MODELS}
    assert {"resnet", "vit"} <= towers


def test_load_refuses_a_hash_mismatch(tmp_path):
    for suffix in (".safetensors", ".json"):
        shutil.copy(zoo.CHECKPOINTS / f"shapes-clip-resnet{suffix}", tmp_path / f"shapes-clip-resnet{suffix}")
    with open(tmp_path / "shapes-clip-resnet.safetensors", "r+b") as f:  # flip one byte of the weights
        f.seek(-3, 2)
        byte = f.read(1)
        f.seek(-3, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        zoo.load_model("shapes-clip-resnet", checkpoint_dir=tmp_path)


def test_pickle_checkpoints_are_refused_without_unpickling(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name in ("model.pt", "model.safetensors"):  # also when a pickle hides behind the right suffix
        torch.save({"x": Evil()}, tmp_path / name)
        with pytest.raises(CheckpointError, match="pickle"):
            load_checkpoint(tmp_path / name)
    assert not marker.exists()


def test_corrupt_and_missing_files_get_clear_errors(tmp_path):
    (tmp_path / "broken.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(CheckpointError, match="not a valid safetensors"):
        load_checkpoint(tmp_path / "broken.safetensors")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.safetensors")
    with pytest.raises(CheckpointError, match="available"):
        zoo.load_model("shapes-clip-resnett")


def test_recipe_smoke_train_writes_a_loadable_card(tmp_path, small_recipe_eval):
    card = train_recipe("shapes-clip-resnet", out_dir=tmp_path, steps=3, quiet=True)
    assert card["steps_run"] == 3
    assert json.loads((tmp_path / "shapes-clip-resnet.json").read_text())["sha256"] == card["sha256"]
    model = zoo.load_model("shapes-clip-resnet", checkpoint_dir=tmp_path)
    emb = model.encode_image(torch.rand(2, 3, 32, 32))
    assert emb.shape == (2, 64) and torch.isfinite(emb).all()


def test_zoo_trainers_are_registered_per_model_family(monkeypatch):
    from mmsec.models import checkpoint
    from mmsec.models.checkpoint import register_checkpoint_family
    from mmsec.models.tiny_clip import TinyCLIP, TinyCLIPConfig
    from mmsec.zoo.train import ZOO_TRAINERS, recipe_start, zoo_trainer

    assert {"contrastive", "fusion", "classifier", "diffusion"} <= set(ZOO_TRAINERS)  # each model family adds its own
    assert zoo_trainer("contrastive", "r") is ZOO_TRAINERS["contrastive"]
    assert zoo_trainer("fusion", "r") is ZOO_TRAINERS["fusion"]
    assert zoo_trainer("classifier", "r") is ZOO_TRAINERS["classifier"]
    with pytest.raises(ValueError, match=r"recipe r: family must be one of \[.*'contrastive', 'fusion'.*\], got 'nope'"):
        recipe_start({**zoo.load_recipe("shapes-clip-resnet"), "family": "nope"}, "r")
    monkeypatch.setattr(checkpoint, "_CHECKPOINT_FAMILIES", dict(checkpoint._CHECKPOINT_FAMILIES))
    register_checkpoint_family("toyvlm", TinyCLIPConfig, TinyCLIP, family="vlm")
    with pytest.raises(ValueError, match=r"recipe r: the zoo has no trainer for 'vlm' models \(checkpoint family "
                                         r"'toyvlm'\); trainers exist for \[.*'contrastive'.*'fusion'.*\]"):
        zoo_trainer("toyvlm", "r")


def test_zoo_reexports_the_checkpoint_io():
    from mmsec.models import checkpoint

    for name in ("CheckpointError", "load_checkpoint", "save_checkpoint", "read_card", "sha256_file"):
        assert getattr(zoo, name) is getattr(checkpoint, name)


def _shipped_hashes() -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(zoo.CHECKPOINTS.iterdir()) if p.is_file()}


def test_training_refuses_the_shipped_zoo_before_training(monkeypatch, tmp_path):
    from mmsec.zoo.train import output_dir

    before = _shipped_hashes()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(zoo.USER_DIR_ENV, raising=False)
    assert output_dir() == zoo.DEFAULT_USER_DIR == zoo.user_dir()
    assert output_dir(tmp_path / "mine") == tmp_path / "mine"
    assert output_dir(overwrite_shipped=True) == zoo.CHECKPOINTS
    with pytest.raises(ValueError, match=r"out_dir \(--out\) is .*checkpoints, the package's shipped zoo.*"
                                         r"--overwrite-shipped"):
        train_recipe("shapes-clip-resnet", out_dir=zoo.CHECKPOINTS, steps=1, quiet=True)
    with pytest.raises(ValueError, match="shipped zoo"):  # the same folder written another way
        train_recipe("shapes-clip-resnet", out_dir=zoo.CHECKPOINTS / ".." / "checkpoints", steps=1, quiet=True)
    monkeypatch.setenv(zoo.USER_DIR_ENV, str(zoo.CHECKPOINTS))
    with pytest.raises(ValueError, match=r"the user zoo \(\$MMSEC_ZOO_DIR\) is .*the package's shipped zoo"):
        train_recipe("shapes-clip-resnet", steps=1, quiet=True)
    with pytest.raises(ValueError, match=r"--overwrite-shipped .* but the output folder is .*mine"):
        train_recipe("shapes-clip-resnet", out_dir=tmp_path / "mine", steps=1, quiet=True, overwrite_shipped=True)
    assert _shipped_hashes() == before
    assert not (tmp_path / "mine").exists() and not (tmp_path / "mmsec-zoo").exists()


def test_overwrite_shipped_is_explicit_and_says_so(monkeypatch, tmp_path, caplog):
    from mmsec.zoo import train as zoo_train

    fake = tmp_path / "package" / "checkpoints"  # a stand-in for the package's folder: the real one stays intact
    shutil.copytree(zoo.CHECKPOINTS, fake)
    monkeypatch.setattr(zoo, "CHECKPOINTS", fake)
    monkeypatch.setattr(zoo_train, "CHECKPOINTS", fake)
    shipped_sha = zoo.card("shapes-clip-resnet")["sha256"]
    with caplog.at_level("WARNING", logger="mmsec.zoo.train"):
        card = train_recipe("shapes-clip-resnet", steps=1, quiet=True, overwrite_shipped=True)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1
    assert f"overwriting the shipped zoo checkpoint {fake / 'shapes-clip-resnet.safetensors'}" in warnings[0]
    assert "with 1 steps instead of the recipe's" in warnings[0] and "smoke run" in warnings[0]
    assert card["sha256"] != shipped_sha and zoo.card("shapes-clip-resnet")["sha256"] == card["sha256"]
    assert sha256_file(fake / "shapes-clip-resnet.safetensors") == card["sha256"]


def test_user_trained_models_load_by_name_and_by_path(monkeypatch, tmp_path):
    from mmsec.models.loaders import load_model as load_any
    from mmsec.zoo.loader import zoo_names

    mine = tmp_path / "my-zoo"
    mine.mkdir()
    shipped = zoo.load_model("shapes-clip-vit")
    for suffix in (".safetensors", ".json"):  # a model only the user zoo has
        shutil.copy(zoo.CHECKPOINTS / f"shapes-clip-vit{suffix}", mine / f"my-clip{suffix}")
    monkeypatch.setenv(zoo.USER_DIR_ENV, str(mine))
    assert zoo.user_dir() == mine and zoo.user_trained() == ["my-clip"] and "my-clip" in zoo_names()
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = shipped.encode_image(x)
        for spec in ("zoo:my-clip", "my-clip", f"zoo:{mine / 'my-clip'}", f"zoo:{mine / 'my-clip.safetensors'}"):
            torch.testing.assert_close(load_any(spec).encode_image(x), expected, rtol=0, atol=0)
    # A shipped name stays the shipped model even when the user zoo holds one of that name.
    for suffix in (".safetensors", ".json"):
        shutil.copy(zoo.CHECKPOINTS / f"shapes-clip-resnet{suffix}", mine / f"shapes-clip-vit{suffix}")
    assert zoo.user_trained() == ["my-clip"]
    with torch.no_grad():
        torch.testing.assert_close(load_any("zoo:shapes-clip-vit").encode_image(x), expected, rtol=0, atol=0)
        assert not torch.allclose(load_any(f"zoo:{mine / 'shapes-clip-vit'}").encode_image(x), expected)
    with pytest.raises(CheckpointError, match=r"no zoo checkpoint 'my-clipp' in the shipped zoo .* or the user zoo "
                                              r"\(.*my-zoo\); available: .*'my-clip'.*Did you mean"):
        zoo.load_model("my-clipp")


def test_a_card_without_sha256_loads_with_one_warning_per_file(tmp_path, caplog):
    for suffix in (".safetensors", ".json"):
        shutil.copy(zoo.CHECKPOINTS / f"shapes-clip-resnet{suffix}", tmp_path / f"unhashed{suffix}")
    card = json.loads((tmp_path / "unhashed.json").read_text())
    del card["sha256"]
    (tmp_path / "unhashed.json").write_text(json.dumps(card))
    path = tmp_path / "unhashed.safetensors"
    with caplog.at_level("WARNING"):
        zoo.load_model_file(path)
        zoo.load_model("unhashed", checkpoint_dir=tmp_path)  # the same file again: no second warning
        zoo.load_model("shapes-clip-resnet")  # hashed: no warning
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].name == "mmsec.models.checkpoint"
    assert f"checkpoint {path} has no sha256 in its card: loading it unchecked" in warnings[0].getMessage()
    caplog.clear()
    for i, sha in enumerate(("", None)):  # an empty or null sha256 is no hash either; another file warns again
        for suffix in (".safetensors", ".json"):
            shutil.copy(tmp_path / f"unhashed{suffix}", tmp_path / f"other{i}{suffix}")
        (tmp_path / f"other{i}.json").write_text(json.dumps({**card, "sha256": sha}))
        with caplog.at_level("WARNING"):
            zoo.load_model(f"other{i}", checkpoint_dir=tmp_path)
    assert [str(tmp_path / f"other{i}.safetensors") in r.getMessage() for i, r in enumerate(caplog.records)] == [True] * 2
    (tmp_path / "unhashed.json").write_text(json.dumps({**card, "sha256": 12}))
    with pytest.raises(CheckpointError, match=r"model card .*unhashed.json: sha256 must be 64 lowercase hex digits.*got 12"):
        zoo.load_model("unhashed", checkpoint_dir=tmp_path)
    (tmp_path / "unhashed.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError, match=r"model card .*unhashed.json must hold a JSON object.*got list"):
        zoo.load_model("unhashed", checkpoint_dir=tmp_path)
