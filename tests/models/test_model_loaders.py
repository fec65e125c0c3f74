"""load_contrastive: spec forms, dispatch, and the error messages for bad specs and paths.

(Named test_model_loaders.py: tests/data/test_loaders.py exists, and two test modules with
the same basename cannot be collected together without packages.)
"""

from __future__ import annotations

import importlib.util

import pytest
import torch
from safetensors.torch import save_file

from mmsec import registry, zoo
from mmsec.models import loaders
from mmsec.models.checkpoint import CheckpointError
from mmsec.models.loaders import load_contrastive


class FakeZooModel(str):
    """A stand-in zoo model: the text 'model:NAME', with the ContrastiveModel members load_contrastive checks."""

    image_size = 32
    logit_scale = 1.0

    def tokenize(self, texts): ...
    def normalize(self, pixels): ...
    def encode_image(self, pixels): ...
    def encode_text(self, tokens): ...


@pytest.fixture
def fake_zoo(monkeypatch):
    calls = []
    monkeypatch.setattr(zoo, "load_model", lambda name: calls.append(name) or FakeZooModel(f"model:{name}"))
    return calls


def test_zoo_prefix_and_bare_name_dispatch_to_the_zoo(fake_zoo):
    assert load_contrastive("zoo:shapes-clip-resnet") == "model:shapes-clip-resnet"
    assert load_contrastive("  shapes-clip-vit ") == "model:shapes-clip-vit"
    assert fake_zoo == ["shapes-clip-resnet", "shapes-clip-vit"]


def test_unknown_zoo_model_names_the_model():
    with pytest.raises(CheckpointError, match="no zoo checkpoint 'nope'"):
        load_contrastive("zoo:nope")


@pytest.mark.parametrize("spec, match", [
    ("timm:resnet50", r"unknown model prefix 'timm'.*hf:/path.*open_clip:ARCH:/path.*zoo:NAME"),
    ("open-clip:ViT-B-32:/w.safetensors", r"unknown model prefix 'open-clip'.*Did you mean 'open_clip'"),
    ("HF:/models/clip", r"unknown model prefix 'HF'.*Did you mean 'hf'"),
    ("shapes-clip-resnt", r"unknown model 'shapes-clip-resnt'.*Did you mean 'shapes-clip-resnet'.*Accepted forms"),
    ("/models/clip-vit-b-32", r"looks like a path: write 'hf:/models/clip-vit-b-32'"),
    ("", r"non-empty string"),
    ("zoo:", r"names no zoo model"),
    ("hf:", r"names no folder"),
    ("open_clip:ViT-B-32", r"must be open_clip:ARCH:/path/to/weights.safetensors"),
    ("open_clip::/w.safetensors", r"must be open_clip:ARCH:/path/to/weights.safetensors"),
])
def test_bad_specs_teach_the_accepted_forms(spec, match):
    with pytest.raises(ValueError, match=match):
        load_contrastive(spec)


def test_spec_must_be_a_string():
    with pytest.raises(ValueError, match="non-empty string"):
        load_contrastive(None)  # type: ignore[arg-type]


def test_missing_hf_folder_names_the_path(tmp_path):
    missing = tmp_path / "no-such-clip"
    with pytest.raises(FileNotFoundError, match=rf"not found: {missing}.*config.json.*model.safetensors"):
        load_contrastive(f"hf:{missing}")


def test_hf_folder_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"no config.json in {tmp_path}"):
        load_contrastive(f"hf:{tmp_path}")


def test_missing_open_clip_weights_name_the_path(tmp_path):
    # Checked before open_clip is imported, so the message is the same with or without it.
    missing = tmp_path / "w.safetensors"
    with pytest.raises(FileNotFoundError, match=rf"open_clip weights not found: {missing}"):
        load_contrastive(f"open_clip:ViT-B-32:{missing}")


@pytest.mark.parametrize("name", ["w.pt", "w.bin", "disguised.safetensors"])
def test_open_clip_pickle_weights_are_refused(tmp_path, name):
    torch.save({"logit_scale": torch.ones(())}, tmp_path / name)
    with pytest.raises(CheckpointError, match=r"refusing to load .*arbitrary code.*save_file"):
        load_contrastive(f"open_clip:ViT-B-32:{tmp_path / name}")


@pytest.mark.skipif(importlib.util.find_spec("open_clip") is not None, reason="open_clip is installed here")
def test_open_clip_missing_package_says_how_to_install(tmp_path):
    save_file({"logit_scale": torch.ones(())}, str(tmp_path / "w.safetensors"))
    with pytest.raises(ImportError, match=r'pip install "mmsec\[open_clip\]".*torchvision'):
        load_contrastive(f"open_clip:ViT-B-32:{tmp_path / 'w.safetensors'}")


def test_registry_lists_model_kinds():
    names = [e.name for e in registry.entries("models")]
    for recipe in zoo.recipe_names():
        assert f"zoo:{recipe}" in names
    assert "hf:<dir>" in names and "open_clip:<arch>:<file>" in names
    assert registry.get("models", "hf:<dir>").factory is loaders.load_hf
    assert all(e.summary for e in registry.entries("models"))


def test_registered_zoo_factory_loads_that_model(fake_zoo):
    assert registry.get("models", "zoo:shapes-clip-vit").factory() == "model:shapes-clip-vit"


def test_importing_models_does_not_import_heavy_libraries():
    import subprocess
    import sys

    code = ("import sys, mmsec.models, mmsec.registry as r; r.entries('models'); "
            "print(any(m in sys.modules for m in ('transformers', 'open_clip', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert out.stdout.strip() == "False"
