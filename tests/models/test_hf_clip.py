"""HFCLIP on a tiny random transformers CLIP saved to a temp folder (never a download)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from mmsec.attacks.adversarial.noise import UniformNoise
from mmsec.attacks.adversarial.pgd import PGD
from mmsec.attacks.objectives import ZeroShotObjective
from mmsec.data.shapes import ShapesWorld, zeroshot_prompts
from mmsec.models.base import ContrastiveModel, VisionBlocks, vision_block_names
from mmsec.models.checkpoint import CheckpointError
from mmsec.models.hf_clip import HFCLIP
from mmsec.models.loaders import load_contrastive
from mmsec.models.zeroshot import ZeroShotClassifier

# transformers is a test dependency (mmsec[test]): imported by the fixtures, never skipped.
MEAN, STD = (0.45, 0.44, 0.43), (0.25, 0.26, 0.27)  # not OpenAI's, so reading the file is tested
CONTEXT = 24


def _tiny_tokenizer_files(folder) -> None:
    """A byte-level CLIP BPE vocabulary: every byte (alone and word-final) plus merges that
    spell the shapes-world words, and the two special tokens last (as in OpenAI's)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    words = sorted({w for group in zeroshot_prompts() for p in group for w in p.split()})
    merges: list[str] = []
    for word in words:
        parts = list(word[:-1]) + [word[-1] + "</w>"]
        while len(parts) > 1:
            merged = parts[0] + parts[1]
            if f"{parts[0]} {parts[1]}" not in merges:
                merges.append(f"{parts[0]} {parts[1]}")
            vocab.setdefault(merged, len(vocab))
            parts = [merged] + parts[2:]
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")


def _preprocessor_config(size: int = 32, crop: int = 32) -> dict:
    return {"image_processor_type": "CLIPImageProcessor", "do_resize": True, "size": {"shortest_edge": size},
            "resample": 3, "do_center_crop": True, "crop_size": {"height": crop, "width": crop},
            "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(MEAN), "image_std": list(STD), "do_convert_rgb": True}


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """config.json + model.safetensors + tokenizer + preprocessor_config.json of a tiny CLIP."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer

    src = tmp_path_factory.mktemp("tok_src")
    _tiny_tokenizer_files(src)
    tokenizer = CLIPTokenizer.from_pretrained(str(src), local_files_only=True)
    n = len(tokenizer)
    config = CLIPConfig(
        text_config=dict(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=CONTEXT, bos_token_id=n - 2,
                         eos_token_id=n - 1, pad_token_id=n - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hf_clip")
    CLIPModel(config).eval().save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config()))
    assert (folder / "model.safetensors").is_file()
    return folder


@pytest.fixture(scope="module")
def raw(clip_dir):
    from transformers import AutoTokenizer, CLIPModel

    return (CLIPModel.from_pretrained(str(clip_dir), local_files_only=True).eval(),
            AutoTokenizer.from_pretrained(str(clip_dir), local_files_only=True))


@pytest.fixture(scope="module")
def model(clip_dir):
    return HFCLIP.from_pretrained(clip_dir)


@pytest.fixture(scope="module")
def shapes():
    return ShapesWorld(image_size=32).batch("test", 0, 12)


def _feat(out):
    return out if isinstance(out, torch.Tensor) else out.pooler_output


def _copy_dir(src, dst):
    shutil.copytree(src, dst)
    return dst


# -- the protocol and equality with the raw model --------------------------------------------

def test_protocol_and_metadata(model):
    assert isinstance(model, ContrastiveModel)
    assert model.image_size == 32 and model.context_length == CONTEXT
    assert not model.training and not model.model.training
    assert torch.allclose(model.mean.flatten(), torch.tensor(MEAN)) and torch.allclose(model.std.flatten(),
                                                                                       torch.tensor(STD))
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert torch.allclose(model.logit_scale, model.model.logit_scale.exp())


def test_vision_blocks_are_the_vision_encoder_layers_in_order(model, shapes):
    layers = list(model.model.vision_model.encoder.layers)
    assert isinstance(model, VisionBlocks) and len(layers) == 2 and model.vision_blocks() == layers
    assert vision_block_names(model) == ["model.vision_model.encoder.layers.0", "model.vision_model.encoder.layers.1"]
    order: list[int] = []
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: order.append(k)) for k, b in enumerate(layers)]
    try:
        model.encode_image(shapes.pixels()[:2])
        model.encode_text(model.tokenize(["a red circle"]))  # the text tower does not run them
    finally:
        for h in hooks:
            h.remove()
    assert order == [0, 1]


def test_image_embeddings_equal_raw_model(model, raw, shapes):
    pixels = shapes.pixels()
    normalised = (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    assert torch.equal(model.normalize(pixels), normalised)  # 32x32 in: no resampling at all
    with torch.no_grad():
        expected = _feat(raw[0].get_image_features(pixel_values=normalised))
        got = model.encode_image(pixels)
    assert got.shape == (12, 16) and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_text_embeddings_equal_raw_model(model, raw):
    texts = ["a photo of a red circle", "a cyan ring", "a picture of a purple diamond!", "A  Blue   Square"]
    tokens = model.tokenize(texts)
    assert tokens.dtype == torch.long and tokens.shape == (4, CONTEXT)
    # The tokenizer's own output, padded to the longest text and with its attention mask.
    enc = raw[1](texts, padding=True, return_tensors="pt")
    assert enc["input_ids"].shape[1] < CONTEXT
    with torch.no_grad():
        expected = _feat(raw[0].get_text_features(**enc))
        got = model.encode_text(tokens)
        shorter = model.encode_text(enc["input_ids"])  # ids of any length up to the context work too
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(shorter, expected, atol=1e-5, rtol=1e-5)


def test_tokenize_truncates_at_context_length_and_keeps_eos(model, raw):
    long = " ".join(["red circle"] * 40)
    tokens = model.tokenize([long, "a red circle"])
    assert tokens.shape == (2, CONTEXT)
    assert tokens[0, -1].item() == model.eos_token_id  # truncated, still ends with end-of-text
    assert model.attention_mask(tokens)[1].sum().item() == 5  # <start> a red circle <end>
    with torch.no_grad():
        expected = _feat(raw[0].get_text_features(**raw[1]([long], truncation=True, max_length=CONTEXT,
                                                             return_tensors="pt")))
        torch.testing.assert_close(model.encode_text(tokens[:1]), expected, atol=1e-5, rtol=1e-5)


def test_load_contrastive_hf_spec(clip_dir, model, shapes):
    loaded = load_contrastive(f"hf:{clip_dir}")
    assert isinstance(loaded, HFCLIP)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode_image(shapes.pixels()), model.encode_image(shapes.pixels()))


def test_openai_defaults_without_preprocessor_config(clip_dir, tmp_path):
    folder = _copy_dir(clip_dir, tmp_path / "clip")
    (folder / "preprocessor_config.json").unlink()
    m = HFCLIP.from_pretrained(folder)
    torch.testing.assert_close(m.mean.flatten(), torch.tensor([0.48145466, 0.4578275, 0.40821073]))
    torch.testing.assert_close(m.std.flatten(), torch.tensor([0.26862954, 0.26130258, 0.27577711]))


# -- preprocessing ----------------------------------------------------------------------------

def _pil_reference(pixels: torch.Tensor, size: int) -> torch.Tensor:
    """CLIPImageProcessor's geometry done with PIL on uint8: shortest edge -> size, bicubic, centre crop."""
    out = []
    for img in (pixels * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy():
        h, w = img.shape[:2]
        new = (int(size * w / h), size) if h <= w else (size, int(size * h / w))  # PIL takes (W, H)
        im = Image.fromarray(img).resize(new, Image.BICUBIC)
        left, top = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
        out.append(np.asarray(im.crop((left, top, left + size, top + size))))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255


@pytest.mark.parametrize("hw", [(64, 64), (48, 80), (96, 40), (20, 20)])
def test_normalize_any_size_matches_clip_processor_geometry(model, hw):
    world = ShapesWorld(image_size=max(hw) if max(hw) >= 16 else 16)
    big = world.batch("val", 0, 4).pixels()  # (4, 3, S, S)
    pixels = torch.nn.functional.interpolate(big, size=hw, mode="bilinear", antialias=True).clamp(0, 1)
    pixels = (pixels * 255).round() / 255  # exactly representable as uint8, like a decoded image
    x = model.normalize(pixels)
    assert x.shape == (4, 3, 32, 32)
    resized = x * model.std + model.mean
    ref = _pil_reference(pixels, 32)
    # Same geometry as Hugging Face's processor; only interpolation rounding differs.
    assert (resized - ref).abs().mean().item() < 2 / 255
    assert (resized - ref).abs().max().item() < 12 / 255


def test_normalize_is_differentiable_for_other_sizes(model):
    pixels = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    (grad,) = torch.autograd.grad(model.encode_image(pixels).sum(), pixels)
    assert grad.shape == pixels.shape and grad.abs().sum() > 0


def test_non_square_crop_is_centred(model):
    # A 32x64 image whose left and right quarters are black and middle half is white: the
    # centre crop keeps only the white part.
    pixels = torch.zeros(1, 3, 32, 64)
    pixels[..., 16:48] = 1.0
    resized = model.normalize(pixels) * model.std + model.mean
    torch.testing.assert_close(resized, torch.ones(1, 3, 32, 32), atol=1e-5, rtol=0)


# -- end to end: zero-shot and PGD -------------------------------------------------------------

def test_zeroshot_and_pgd_end_to_end_leave_model_unchanged(model, shapes):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pixels = shapes.pixels()
    clf = ZeroShotClassifier(model, zeroshot_prompts())
    assert clf.class_embeddings.shape == (48, 16)
    scores = clf.scores(pixels)
    assert scores.shape == (12, 48) and torch.isfinite(scores).all()
    # Random weights: attack the model's own predictions, so clean accuracy is 100% by construction.
    labels = clf.predict(pixels)

    objective = ZeroShotObjective(model, zeroshot_prompts())
    eps = 8 / 255
    result = PGD(eps=eps, alpha=2 / 255, steps=10)(objective, pixels, labels, generator=torch.Generator().manual_seed(0))
    noise = UniformNoise(eps=eps)(objective, pixels, labels, generator=torch.Generator().manual_seed(0))
    assert result.adv_pixels.shape == pixels.shape
    assert (result.adv_pixels - pixels).abs().max() <= eps + 1e-6
    assert result.adv_pixels.min() >= 0 and result.adv_pixels.max() <= 1
    # Effect with a margin: PGD's loss rises and it flips far more predictions than noise does.
    assert result.loss_trace[-1].mean() > result.loss_trace[0].mean()
    assert result.success_rate >= noise.success_rate + 0.5
    assert (clf.predict(result.adv_pixels) != labels).float().mean().item() == result.success_rate

    assert all(p.grad is None for p in model.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not model.training


def test_targeted_pgd_pulls_towards_target(model, shapes):
    pixels = shapes.pixels()
    objective = ZeroShotObjective(model, zeroshot_prompts())
    with torch.no_grad():
        top2 = objective.logits(pixels).topk(2, dim=1).indices  # (B, 2)
    labels, targets = top2[:, 0], top2[:, 1]  # target: each image's runner-up class
    result = PGD(eps=8 / 255, alpha=2 / 255, steps=10)(objective, pixels, labels, targets,
                                                       generator=torch.Generator().manual_seed(0))
    assert result.loss_trace[-1].mean() > result.loss_trace[0].mean()  # -CE(target) rises
    assert result.success_rate >= 0.4
    assert torch.equal(result.success, objective.predict(result.adv_pixels) == targets)


# -- errors -------------------------------------------------------------------------------------

def test_missing_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found.*nope.*config.json"):
        HFCLIP.from_pretrained(tmp_path / "nope")


def test_file_instead_of_folder(tmp_path):
    f = tmp_path / "model.safetensors"
    f.write_bytes(b"x")
    with pytest.raises(NotADirectoryError, match="expects a folder"):
        HFCLIP.from_pretrained(f)


def test_missing_config(clip_dir, tmp_path):
    folder = _copy_dir(clip_dir, tmp_path / "clip")
    (folder / "config.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"no config.json in .*clip"):
        HFCLIP.from_pretrained(folder)


def test_wrong_model_type(clip_dir, tmp_path):
    folder = _copy_dir(clip_dir, tmp_path / "clip")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "siglip"}))
    with pytest.raises(ValueError, match="model_type 'siglip'"):
        HFCLIP.from_pretrained(folder)


def test_pickle_only_weights_are_refused(clip_dir, raw, tmp_path):
    folder = _copy_dir(clip_dir, tmp_path / "clip")
    (folder / "model.safetensors").unlink()
    torch.save(raw[0].state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pickle-based weights \(pytorch_model.bin\).*arbitrary code.*"
                                              r"save_pretrained"):
        HFCLIP.from_pretrained(folder)


def test_pickle_disguised_as_safetensors_is_refused(clip_dir, raw, tmp_path):
    folder = _copy_dir(clip_dir, tmp_path / "clip")
    torch.save(raw[0].state_dict(), folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="pickle"):
        HFCLIP.from_pretrained(folder)


def test_no_weights(clip_dir, tmp_path):
    folder = _copy_dir(clip_dir, tmp_path / "clip")
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no weights .*model.safetensors"):
        HFCLIP.from_pretrained(folder)


def test_missing_tokenizer(clip_dir, tmp_path):
    folder = _copy_dir(clip_dir, tmp_path / "clip")
    for name in ("tokenizer.json", "vocab.json", "merges.txt"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        HFCLIP.from_pretrained(folder)


def test_preprocessor_that_does_not_fit_the_tower(clip_dir, tmp_path):
    folder = _copy_dir(clip_dir, tmp_path / "clip")
    (folder / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config(224, 224)))
    with pytest.raises(ValueError, match="224x224 .* image_size is 32"):
        HFCLIP.from_pretrained(folder)


def test_tokenizer_and_config_disagree_on_eos(clip_dir, tmp_path):
    folder = _copy_dir(clip_dir, tmp_path / "clip")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["text_config"]["eos_token_id"] = 5
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="eos_token_id is 5"):
        HFCLIP.from_pretrained(folder)


@pytest.mark.parametrize("bad, match", [
    (torch.rand(3, 32, 32), r"\(B, 3, H, W\).*unsqueeze"),
    (torch.rand(2, 1, 32, 32), r"\(B, 3, H, W\)"),
    ((torch.rand(2, 3, 32, 32) * 255).to(torch.uint8), "divide uint8 images by 255"),
])
def test_wrong_pixels(model, bad, match):
    with pytest.raises(ValueError, match=match):
        model.encode_image(bad)


def test_wrong_tokens(model):
    with pytest.raises(TypeError, match="list of strings"):
        model.tokenize("a red circle")
    with pytest.raises(ValueError, match="integer tensor"):
        model.encode_text(torch.rand(2, 8))
    with pytest.raises(ValueError, match="exceed"):
        model.encode_text(torch.zeros(1, CONTEXT + 1, dtype=torch.long))
    with pytest.raises(TypeError, match="input_ids"):
        model.encode_text({"input_ids": model.tokenize(["a"])})


def test_seer_searches_a_hugging_face_clip_with_its_bpe_words(model, shapes):
    """SEER's dictionary from a BPE vocabulary: whole-word tokens without </w>, no byte or special tokens."""
    from mmsec.defenses.backdoor import SEER, model_dictionary

    words = model_dictionary(model)
    assert {"red", "circle", "photo"} <= set(words)
    assert not any("<" in w or "</w>" in w for w in words) and len(words) == len(set(words))
    pixels = shapes.pixels()[:8]
    result = SEER(steps=3, batch_size=4)(model, pixels, generator=0)
    assert -1 <= result.similarity <= 1 and result.mask.shape[-2:] == pixels.shape[-2:]
