"""The zoo: shipped checkpoints load, are small, meet their quality bar, and refuse tampering."""

import json
import shutil

import pytest
import torch

from mmsec import zoo
from mmsec.models.checkpoint import CheckpointError, load_checkpoint, sha256_file
from mmsec.zoo.train import train_recipe


@pytest.mark.parametrize("name", zoo.available())
def test_shipped_checkpoint_card_and_quality(name):
    path = zoo.CHECKPOINTS / f"{name}.safetensors"
    card = zoo.card(name)
    assert path.stat().st_size <= 5 * 1024 * 1024
    assert card["sha256"] == sha256_file(path)
    for key in ("recipe", "seed", "data", "metrics", "version"):
        assert key in card
    assert card["metrics"]["zeroshot_top1"] >= 0.95
    assert "i2t_r1" in card["metrics"]


def test_both_architectures_are_shipped():
    towers = {zoo.card(n)["recipe"]["model"]["image_tower"] for n in zoo.available()}
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

    assert set(ZOO_TRAINERS) == {"contrastive", "fusion"}
    assert zoo_trainer("contrastive", "r") is ZOO_TRAINERS["contrastive"]
    assert zoo_trainer("fusion", "r") is ZOO_TRAINERS["fusion"]
    with pytest.raises(ValueError, match=r"recipe r: family must be one of \['contrastive', 'fusion'\], got 'nope'"):
        recipe_start({**zoo.load_recipe("shapes-clip-resnet"), "family": "nope"}, "r")
    monkeypatch.setattr(checkpoint, "_CHECKPOINT_FAMILIES", dict(checkpoint._CHECKPOINT_FAMILIES))
    register_checkpoint_family("toyvlm", TinyCLIPConfig, TinyCLIP, family="vlm")
    with pytest.raises(ValueError, match=r"recipe r: the zoo has no trainer for 'vlm' models \(checkpoint family "
                                         r"'toyvlm'\); trainers exist for \['contrastive', 'fusion'\]"):
        zoo_trainer("toyvlm", "r")


def test_zoo_reexports_the_checkpoint_io():
    from mmsec.models import checkpoint

    for name in ("CheckpointError", "load_checkpoint", "save_checkpoint", "read_card", "sha256_file"):
        assert getattr(zoo, name) is getattr(checkpoint, name)
