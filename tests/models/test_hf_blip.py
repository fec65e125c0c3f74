"""HFBLIPRetrieval on a tiny random transformers BLIP saved to a temp folder (never a download)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from mmsec.attacks.adversarial.noise import UniformNoise
from mmsec.attacks.adversarial.pgd import PGD
from mmsec.attacks.objectives import RetrievalObjective
from mmsec.data.shapes import ShapesWorld
from mmsec.models.base import (
    ContrastiveModel,
    FusionModel,
    PromptableText,
    VisionBlocks,
    require_fusion,
    vision_block_names,
)
from mmsec.models.checkpoint import CheckpointError
from mmsec.models.hf_blip import HFBLIPRetrieval
from mmsec.models.loaders import load_contrastive, load_fusion
from mmsec.models.preprocess import OPENAI_CLIP_MEAN
from mmsec.zoo.train import shapes_vocabulary

# transformers is a test dependency (mmsec[test]): imported by the fixtures, never skipped.
MEAN, STD = (0.45, 0.44, 0.43), (0.25, 0.26, 0.27)  # not BLIP's, so reading the file is tested
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def _config(vocab_size: int):
    from transformers import BlipConfig

    return BlipConfig(
        text_config=dict(vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=40, pad_token_id=0, bos_token_id=2,
                         sep_token_id=3, eos_token_id=3),
        # BLIP's vision initializer_range defaults to 1e-10 (weights come from a checkpoint); a random
        # model needs ordinary weights for its image embeddings to depend on the image.
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8, initializer_range=0.02),
        image_text_hidden_size=16)


def _preprocessor_config(size: int = 32) -> dict:
    return {"image_processor_type": "BlipImageProcessor", "do_resize": True, "size": {"height": size, "width": size},
            "resample": 3, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
            "image_mean": list(MEAN), "image_std": list(STD), "do_convert_rgb": True}


@pytest.fixture(scope="module")
def blip_dir(tmp_path_factory):
    """config.json + model.safetensors + a word-level BERT tokenizer + preprocessor_config.json."""
    from transformers import BertTokenizer, BlipForImageTextRetrieval

    words = [w for w in shapes_vocabulary() if not w.startswith("<")]
    tokenizer = BertTokenizer(vocab={t: i for i, t in enumerate(SPECIALS + words)})
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("hf_blip")
    BlipForImageTextRetrieval(_config(len(tokenizer))).eval().save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / "preprocessor_config.json").write_text(json.dumps(_preprocessor_config()))
    assert (folder / "model.safetensors").is_file()
    return folder


@pytest.fixture(scope="module")
def raw(blip_dir):
    from transformers import AutoTokenizer, BlipForImageTextRetrieval

    return (BlipForImageTextRetrieval.from_pretrained(str(blip_dir), local_files_only=True).eval(),
            AutoTokenizer.from_pretrained(str(blip_dir), local_files_only=True))


@pytest.fixture(scope="module")
def model(blip_dir):
    return HFBLIPRetrieval.from_pretrained(blip_dir)


@pytest.fixture(scope="module")
def shapes():
    return ShapesWorld(image_size=32, second_object_prob=0.25).batch("test", 0, 12)


def _normalised(pixels):
    return (pixels - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


# -- protocol and equality with the raw model ------------------------------------------------------

def test_protocol_and_metadata(model):
    assert isinstance(model, FusionModel) and isinstance(model, ContrastiveModel)
    assert isinstance(model, PromptableText)
    require_fusion(model, "test")
    assert model.image_size == 32 and model.context_length == 35
    assert not model.training and not model.model.training
    torch.testing.assert_close(model.mean.flatten(), torch.tensor(MEAN))
    assert model.logit_scale.item() == pytest.approx(1 / 0.07, rel=1e-3)  # exp(logit_scale_init_value)


def test_vision_blocks_are_the_vit_encoder_layers_in_order(model, shapes):
    layers = list(model.model.vision_model.encoder.layers)
    assert isinstance(model, VisionBlocks) and len(layers) == 2 and model.vision_blocks() == layers
    assert vision_block_names(model) == ["model.vision_model.encoder.layers.0", "model.vision_model.encoder.layers.1"]
    order: list[int] = []
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: order.append(k)) for k, b in enumerate(layers)]
    try:
        model.image_features(shapes.pixels()[:2])
    finally:
        for h in hooks:
            h.remove()
    assert order == [0, 1]


def test_itc_embeddings_equal_raw_model(model, raw, shapes):
    pixels, texts = shapes.pixels(), [c[0] for c in shapes.captions]
    assert torch.equal(model.normalize(pixels), _normalised(pixels))  # 32x32 in: no resampling at all
    enc = raw[1](texts, padding=True, return_tensors="pt")  # the tokenizer's own ids and mask, padded to the longest
    tokens = model.tokenize(texts)
    assert tokens.shape == (12, 35) and enc["input_ids"].shape[1] < 35
    with torch.no_grad():
        out = raw[0](input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                     pixel_values=_normalised(pixels), use_itm_head=False)
        img, txt = model.encode_image(pixels), model.encode_text(tokens)
        expected_img = raw[0].vision_proj(out.last_hidden_state[:, 0])
        expected_txt = raw[0].text_proj(out.question_embeds[:, 0])
    assert img.shape == (12, 16) and txt.shape == (12, 16)
    torch.testing.assert_close(img, expected_img, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(txt, expected_txt, atol=1e-5, rtol=1e-5)
    # The raw model's ITC output is the cosine-similarity matrix of the two.
    torch.testing.assert_close(F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T, out.itm_score,
                               atol=1e-5, rtol=1e-5)


def test_itm_and_fused_embedding_equal_raw_model(model, raw, shapes):
    pixels, texts = shapes.pixels(), [c[0] for c in shapes.captions]
    enc = raw[1](texts, padding=True, return_tensors="pt")
    tokens = model.tokenize(texts)
    with torch.no_grad():
        out = raw[0](input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                     pixel_values=_normalised(pixels), use_itm_head=True)
        fused = model.fuse(pixels, tokens)
        itm = model.itm_logits(pixels, tokens)
        feats, embeds = model.image_features(pixels), model.text_token_embeddings(tokens)
    assert fused.shape == (12, 32) and itm.shape == (12, 2) and feats.shape == (12, 1 + 16, 32)
    torch.testing.assert_close(fused, out.question_embeds[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(itm, out.itm_score, atol=1e-5, rtol=1e-5)
    # The protocol's identities.
    with torch.no_grad():
        torch.testing.assert_close(model.fuse_features(feats, embeds, tokens), fused)
        torch.testing.assert_close(model.itm_head(fused), itm)
        torch.testing.assert_close(model.encode_text_embeddings(model.token_embeddings(tokens), tokens),
                                   model.encode_text(tokens))


def test_fuse_is_differentiable_in_pixels_and_embeddings(model):
    pixels = torch.rand(2, 3, 50, 70, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    tokens = model.tokenize(["a red circle", "a photo of a blue ring"])
    (g,) = torch.autograd.grad(model.itm_logits(pixels, tokens)[:, 1].sum(), pixels)
    assert g.shape == pixels.shape and g.abs().sum() > 0  # any size: resized differentiably inside
    feats = model.image_features(pixels.detach()).detach().requires_grad_(True)
    embeds = model.text_token_embeddings(tokens).detach().requires_grad_(True)
    kept = embeds.detach().clone()
    g_feat, g_emb = torch.autograd.grad(model.fuse_features(feats, embeds, tokens).square().sum(), [feats, embeds])
    assert torch.equal(embeds, kept)  # inputs untouched (transformers adds positions in place)
    model.encode_text_embeddings(embeds, tokens)
    assert torch.equal(embeds, kept)
    real = model.attention_mask(tokens).bool()
    assert g_feat.abs().sum() > 0 and g_emb[real].abs().sum() > 0
    assert g_emb[~real].abs().max() == 0  # padding is masked
    assert all(p.grad is None for p in model.parameters())


def test_blip_processor_defaults_without_preprocessor_config(blip_dir, tmp_path):
    folder = _copy(blip_dir, tmp_path / "blip")
    (folder / "preprocessor_config.json").unlink()
    m = HFBLIPRetrieval.from_pretrained(folder)
    torch.testing.assert_close(m.mean.flatten(), torch.tensor(OPENAI_CLIP_MEAN))
    assert m.preprocess.resize_mode == "squash" and m.preprocess.interpolation == "bicubic"


def test_load_through_model_specs(blip_dir, model, shapes):
    for loaded in (load_contrastive(f"hf-blip:{blip_dir}"), load_fusion(f"hf-blip:{blip_dir}")):
        assert isinstance(loaded, HFBLIPRetrieval)
        with torch.no_grad():
            torch.testing.assert_close(loaded.encode_image(shapes.pixels()), model.encode_image(shapes.pixels()))
    with pytest.raises(ValueError, match="names no folder"):
        load_contrastive("hf-blip:")


# -- end to end: a PGD retrieval attack through the dual-encoder path ------------------------------

def test_pgd_retrieval_attack_end_to_end_leaves_model_unchanged(model, shapes):
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pixels = shapes.pixels()
    gallery = list(dict.fromkeys(c[0] for c in shapes.captions))
    objective = RetrievalObjective(model, gallery)
    labels = objective.predict(pixels)  # random weights: attack the model's own top-1 caption
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
    assert not model.training


# -- errors ------------------------------------------------------------------------------------------

def test_pickle_only_weights_are_refused(blip_dir, raw, tmp_path):
    folder = _copy(blip_dir, tmp_path / "blip")
    (folder / "model.safetensors").unlink()
    torch.save(raw[0].state_dict(), folder / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"pickle-based weights \(pytorch_model.bin\).*arbitrary code"):
        HFBLIPRetrieval.from_pretrained(folder)


def test_pickle_disguised_as_safetensors_is_refused(blip_dir, raw, tmp_path):
    folder = _copy(blip_dir, tmp_path / "blip")
    torch.save(raw[0].state_dict(), folder / "model.safetensors")
    with pytest.raises(CheckpointError, match="pickle"):
        HFBLIPRetrieval.from_pretrained(folder)


def test_other_blip_heads_and_model_types_are_refused(blip_dir, tmp_path):
    folder = _copy(blip_dir, tmp_path / "blip")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "architectures": ["BlipForConditionalGeneration"]}))
    with pytest.raises(ValueError, match="not BlipForImageTextRetrieval.*random"):
        HFBLIPRetrieval.from_pretrained(folder)
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "clip"}))
    with pytest.raises(ValueError, match="model_type 'clip'"):
        HFBLIPRetrieval.from_pretrained(folder)


def test_weights_missing_parameters_are_refused(blip_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    folder = _copy(blip_dir, tmp_path / "blip")
    tensors = load_file(str(folder / "model.safetensors"))
    save_file({k: v for k, v in tensors.items() if not k.startswith("itm_head")}, str(folder / "model.safetensors"),
              metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="lack 2 parameters.*itm_head"):
        HFBLIPRetrieval.from_pretrained(folder)


def test_missing_folder_and_tokenizer(blip_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found.*never downloads"):
        HFBLIPRetrieval.from_pretrained(tmp_path / "nope")
    folder = _copy(blip_dir, tmp_path / "blip")
    for name in ("tokenizer.json", "vocab.txt"):
        (folder / name).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="no tokenizer"):
        HFBLIPRetrieval.from_pretrained(folder)


def test_wrong_inputs(model):
    with pytest.raises(TypeError, match="list of strings"):
        model.tokenize("a red circle")
    with pytest.raises(ValueError, match="integer tensor"):
        model.encode_text(torch.rand(2, 8))
    with pytest.raises(ValueError, match="exceed"):
        model.encode_text(torch.zeros(1, 41, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        model.encode_image(torch.rand(3, 32, 32))
    with pytest.raises(ValueError, match="2 images and 1 texts"):
        model.fuse(torch.rand(2, 3, 32, 32), model.tokenize(["a"]))
