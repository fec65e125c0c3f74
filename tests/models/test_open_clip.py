"""OpenCLIP on a tiny random open_clip model saved to a temp file (never a download).

Skipped where open_clip is not importable (it needs torchvision beside torch, and the README's CPU torch
2.13.0 has none that imports). `.ci/open-clip` runs this file in a second venv with a real torch/torchvision
pair and open_clip_torch, with MMSEC_REQUIRE_OPEN_CLIP=1: there a missing open_clip is an error, not a skip.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

if os.environ.get("MMSEC_REQUIRE_OPEN_CLIP") == "1":
    import open_clip  # an ImportError here fails the run: the CI step must not pass by skipping
else:
    open_clip = pytest.importorskip("open_clip")

from safetensors.torch import save_file  # noqa: E402

from mmsec.attacks.adversarial.noise import UniformNoise  # noqa: E402
from mmsec.attacks.adversarial.pgd import PGD  # noqa: E402
from mmsec.attacks.objectives import ZeroShotObjective  # noqa: E402
from mmsec.data.shapes import ShapesWorld, zeroshot_prompts  # noqa: E402
from mmsec.models.base import ContrastiveModel, vision_block_names  # noqa: E402
from mmsec.models.checkpoint import CheckpointError  # noqa: E402
from mmsec.models.loaders import load_contrastive  # noqa: E402
from mmsec.models.open_clip_adapter import OpenCLIP  # noqa: E402
from mmsec.models.zeroshot import ZeroShotClassifier  # noqa: E402

ARCH = "mmsec-tiny-vit"
CONTEXT = 16
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """(model config JSON, safetensors weights) of a tiny ViT CLIP, registered with open_clip."""
    folder = tmp_path_factory.mktemp("open_clip")
    config = folder / f"{ARCH}.json"
    config.write_text(json.dumps({
        "embed_dim": 16,
        "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
        "text_cfg": {"context_length": CONTEXT, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
    }))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH)
    weights = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    return config, weights


@pytest.fixture(scope="module")
def raw(files):
    return open_clip.create_model(ARCH, pretrained=str(files[1])).eval()


@pytest.fixture(scope="module")
def model(files):
    return OpenCLIP.from_file(ARCH, files[1], model_config=files[0])


@pytest.fixture(scope="module")
def shapes():
    return ShapesWorld(image_size=32).batch("test", 0, 12)


def test_protocol_and_metadata(model, raw):
    assert isinstance(model, ContrastiveModel)
    assert model.image_size == 32 and model.context_length == CONTEXT
    assert not model.training
    torch.testing.assert_close(model.mean.flatten(), torch.tensor(OPENAI_MEAN))
    torch.testing.assert_close(model.std.flatten(), torch.tensor(OPENAI_STD))
    torch.testing.assert_close(model.logit_scale, raw.logit_scale.exp())
    raw_sd = raw.state_dict()
    assert all(torch.equal(v, raw_sd[k]) for k, v in model.model.state_dict().items())


def test_vision_blocks_are_the_residual_attention_blocks(model):
    blocks = list(model.model.visual.transformer.resblocks)
    assert len(blocks) == 2 and model.vision_blocks() == blocks
    assert vision_block_names(model) == ["model.visual.transformer.resblocks.0", "model.visual.transformer.resblocks.1"]


def test_image_embeddings_equal_raw_model(model, raw, shapes):
    pixels = shapes.pixels()
    normalised = (pixels - torch.tensor(OPENAI_MEAN).view(1, 3, 1, 1)) / torch.tensor(OPENAI_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(model.normalize(pixels), normalised)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_image(pixels), raw.encode_image(normalised), atol=1e-5, rtol=1e-5)


def test_text_embeddings_equal_raw_model(model, raw):
    texts = ["a photo of a red circle", "a cyan ring", " ".join(["red circle"] * 20)]
    tokens = model.tokenize(texts)
    assert tokens.dtype == torch.long and tokens.shape == (3, CONTEXT)
    expected_tokens = open_clip.get_tokenizer(ARCH)(texts)
    assert torch.equal(tokens, expected_tokens)
    with torch.no_grad():
        torch.testing.assert_close(model.encode_text(tokens), raw.encode_text(expected_tokens), atol=1e-5, rtol=1e-5)


def test_load_contrastive_open_clip_spec(files, model, shapes):
    loaded = load_contrastive(f"open_clip:{ARCH}:{files[1]}")  # the config is registered by now
    assert isinstance(loaded, OpenCLIP)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(shapes.pixels()), model.encode_image(shapes.pixels()))


def test_preprocessing_overrides(files):
    m = OpenCLIP.from_file(ARCH, files[1], image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
                           image_resize_mode="squash")
    assert m.preprocess.resize_mode == "squash"
    x = m.normalize(torch.full((1, 3, 40, 80), 0.75))
    assert x.shape == (1, 3, 32, 32)
    torch.testing.assert_close(x, torch.full_like(x, 0.5))


def test_normalize_handles_other_sizes_differentiably(model):
    pixels = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    assert model.normalize(pixels).shape == (2, 3, 32, 32)
    (grad,) = torch.autograd.grad(model.encode_image(pixels).sum(), pixels)
    assert grad.abs().sum() > 0
    # Centre crop of a non-square image: a white middle half survives, black sides do not.
    img = torch.zeros(1, 3, 32, 64)
    img[..., 16:48] = 1.0
    torch.testing.assert_close(model.normalize(img) * model.std + model.mean, torch.ones(1, 3, 32, 32),
                               atol=1e-5, rtol=0)


def test_zeroshot_and_pgd_end_to_end_leave_model_unchanged(model, shapes):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pixels = shapes.pixels()
    clf = ZeroShotClassifier(model, zeroshot_prompts())
    assert clf.class_embeddings.shape == (48, 16)
    labels = clf.predict(pixels)  # random weights: attack the model's own predictions
    objective = ZeroShotObjective(model, zeroshot_prompts())
    eps = 8 / 255
    result = PGD(eps=eps, alpha=2 / 255, steps=10)(objective, pixels, labels, generator=torch.Generator().manual_seed(0))
    noise = UniformNoise(eps=eps)(objective, pixels, labels, generator=torch.Generator().manual_seed(0))
    assert (result.adv_pixels - pixels).abs().max() <= eps + 1e-6
    assert result.adv_pixels.min() >= 0 and result.adv_pixels.max() <= 1
    assert result.loss_trace[-1].mean() > result.loss_trace[0].mean()
    assert result.success_rate >= noise.success_rate + 0.5
    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_errors(files, model, tmp_path):
    with pytest.raises(FileNotFoundError, match="open_clip weights not found"):
        OpenCLIP.from_file(ARCH, tmp_path / "missing.safetensors")
    torch.save({"x": torch.ones(1)}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="arbitrary code"):
        OpenCLIP.from_file(ARCH, tmp_path / "w.pt")
    with pytest.raises(ValueError, match="unknown open_clip architecture 'mmsec-tiny-vt'.*Did you mean"):
        OpenCLIP.from_file("mmsec-tiny-vt", files[1])
    with pytest.raises(ValueError, match="hf-hub"):
        OpenCLIP.from_file("hf-hub:org/model", files[1])
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.encode_image(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="integer id tensor"):
        model.encode_text(torch.rand(2, CONTEXT))
