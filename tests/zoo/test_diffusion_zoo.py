"""The zoo's diffusion models: shipped folders load with every file's sha256 checked, refuse tampering, sample;
a smoke training writes a loadable folder and card; (slow) the card's metrics are measured again."""

import copy
import json
import shutil

import pytest
import torch

from mmsec import zoo
from mmsec.models.base import missing_members
from mmsec.models.checkpoint import CheckpointError, sha256_file
from mmsec.models.loaders import declared_family, load_model

DIFFUSION = ("shapes-ddpm", "shapes-t2i")


@pytest.fixture(scope="module")
def shipped():
    return {name: zoo.load_model(name) for name in DIFFUSION}


@pytest.mark.parametrize("name", DIFFUSION)
def test_shipped_folder_and_card(name, shipped):
    card = zoo.card(name)
    folder = zoo.CHECKPOINTS / name
    assert card["family"] == "diffusion" == declared_family(f"zoo:{name}") and card["format"] == "diffusers"
    assert card["files"] == {rel: sha256_file(folder / rel) for rel in card["files"]} == zoo.folder_files(folder)
    assert card["sha256"] == zoo.folder_sha256(card["files"])
    assert card["size_bytes"] <= 8 * 1024 * 1024
    for key in ("recipe", "seed", "data", "metrics", "version", "train_seconds", "parameters"):
        assert key in card
    model = shipped[name]
    assert missing_members(model, "diffusion") == [] and not model.training
    assert (model.image_size, model.channels) == (16, 3)
    assert card["parameters"] == sum(p.numel() for p in model.unet.parameters())


def test_shipped_models_sample_and_are_the_recipes(shipped):
    ddpm, t2i = shipped["shapes-ddpm"], shipped["shapes-t2i"]
    assert not ddpm.conditional and t2i.conditional
    noise = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    a = ddpm.sample(noise, steps=4)
    b = t2i.sample(noise, ["a red circle", "a blue ring"], steps=4, guidance=3.0)
    assert a.shape == b.shape == (2, 3, 16, 16) and torch.isfinite(a).all() and torch.isfinite(b).all()
    # The text encoder is the zoo CLIP's text tower, frozen.
    clip = zoo.load_model(zoo.card("shapes-t2i")["recipe"]["model"]["text_encoder"].removeprefix("zoo:"))
    clip_state = clip.text.state_dict()
    assert all(torch.equal(v, clip_state[k]) for k, v in t2i.text_encoder.text.state_dict().items())
    assert not any(p.requires_grad for p in t2i.text_encoder.parameters())
    assert tuple(load_model("zoo:shapes-ddpm", family="diffusion").unet.config.block_out_channels) == (32, 64, 64)


def _copy(tmp_path, name="shapes-ddpm"):
    shutil.copytree(zoo.CHECKPOINTS / name, tmp_path / name)
    shutil.copy(zoo.CHECKPOINTS / f"{name}.json", tmp_path / f"{name}.json")
    return tmp_path / name


def test_tampered_folders_are_refused(tmp_path):
    folder = _copy(tmp_path)
    zoo.load_model("shapes-ddpm", checkpoint_dir=tmp_path)  # an intact copy loads
    weights = folder / "unet" / "diffusion_pytorch_model.safetensors"
    with open(weights, "r+b") as f:  # flip one byte of the weights
        f.seek(-3, 2)
        byte = f.read(1)
        f.seek(-3, 2)
        f.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(CheckpointError, match="sha256 mismatch for .*diffusion_pytorch_model.safetensors"):
        zoo.load_model("shapes-ddpm", checkpoint_dir=tmp_path)
    shutil.rmtree(folder)
    folder = _copy(tmp_path)
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError, match="pickle"):
        zoo.load_model("shapes-ddpm", checkpoint_dir=tmp_path)
    (folder / "unet" / "diffusion_pytorch_model.bin").unlink()
    card = json.loads((tmp_path / "shapes-ddpm.json").read_text())
    card["files"]["unet/config.json"] = "0" * 64
    (tmp_path / "shapes-ddpm.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="not that of its file list"):
        zoo.load_model("shapes-ddpm", checkpoint_dir=tmp_path)


@pytest.fixture
def small_diffusion_recipes(monkeypatch):
    """The diffusion recipes as shipped but on 128 training images, with a small card evaluation."""
    import mmsec.zoo.train as zoo_train

    def small(name: str) -> dict:
        recipe = copy.deepcopy(zoo.load_recipe(name))
        recipe["data"]["n_images"] = 128
        recipe["eval"] = {**recipe["eval"], "n_samples": 8, "per_class": 1, "steps": 2}
        return recipe

    monkeypatch.setattr(zoo_train, "load_recipe", small)


@pytest.mark.parametrize("name", DIFFUSION)
def test_recipe_smoke_train_writes_a_loadable_folder_and_card(tmp_path, small_diffusion_recipes, name):
    from mmsec.zoo.train import train_recipe

    card = train_recipe(name, out_dir=tmp_path, steps=2, quiet=True)
    assert card["steps_run"] == 2 and card["family"] == "diffusion"
    assert json.loads((tmp_path / f"{name}.json").read_text())["files"] == zoo.folder_files(tmp_path / name)
    model = load_model(f"zoo:{tmp_path / name}", family="diffusion")
    if name == "shapes-t2i":
        assert {"colour_adherence", "shape_adherence", "prompt_adherence", "recognition_rate"} <= set(card["metrics"])
        assert card["text_encoder"]["sha256"] == zoo.card("shapes-clip-resnet")["sha256"]
        assert model.conditional and model.sample(1, ["a red circle"], steps=2).shape == (1, 3, 16, 16)
    else:
        assert {"recognition_rate", "distinct_classes", "class_distribution_distance",
                "class_distribution_distance_real"} <= set(card["metrics"])
        assert not model.conditional and model.sample(1, steps=2).shape == (1, 3, 16, 16)


@pytest.mark.slow
@pytest.mark.parametrize("name", DIFFUSION)
def test_card_metrics_are_measured_again(name, shipped):
    from mmsec.zoo.diffusion import card_metrics

    card = zoo.card(name)
    again = card_metrics(shipped[name], card["recipe"])
    for key, value in card["metrics"].items():
        assert again[key] == pytest.approx(value, abs=0.02), key
