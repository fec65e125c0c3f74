"""PromptableText: text towers run on token embeddings (prompt learning), on TinyCLIP and HFCLIP."""

from __future__ import annotations

import json

import pytest
import torch

from mmsec.data.shapes import shape_color_classes
from mmsec.models.base import ContrastiveModel, PromptableText, require_promptable_text
from mmsec.models.hf_clip import HFCLIP

TEXTS = ["a photo of a red circle", "a cyan ring", "there is a small purple diamond", "a"]


@pytest.fixture(scope="module")
def hf_model(tmp_path_factory):
    """A tiny random transformers CLIP with a character-level CLIP BPE tokenizer (no merges)."""
    from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    folder = tmp_path_factory.mktemp("hf_promptable")
    chars = list(bytes_to_unicode().values())
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab["<|startoftext|>"], vocab["<|endoftext|>"] = len(vocab), len(vocab) + 1
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    tokenizer = CLIPTokenizer.from_pretrained(str(folder), local_files_only=True)
    n = len(tokenizer)
    config = CLIPConfig(
        text_config=dict(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=40, bos_token_id=n - 2,
                         eos_token_id=n - 1, pad_token_id=n - 1),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=16)
    torch.manual_seed(0)
    return HFCLIP(CLIPModel(config), tokenizer).eval()


@pytest.fixture(params=["zoo_resnet", "zoo_vit", "hf_model"])
def model(request):
    return request.getfixturevalue(request.param)


def test_protocol_is_implemented(model):
    assert isinstance(model, ContrastiveModel) and isinstance(model, PromptableText)
    require_promptable_text(model, "test")  # no error


def test_encode_text_equals_encode_text_embeddings(model):
    tokens = model.tokenize(TEXTS)
    embeds = model.token_embeddings(tokens)
    assert embeds.shape[:2] == tokens.shape and embeds.ndim == 3
    with torch.no_grad():
        expected = model.encode_text(tokens)
        got = model.encode_text_embeddings(embeds, tokens)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-6, rtol=1e-6)


def test_embeddings_are_used_and_differentiable(model):
    """Replacing one word's embedding changes that text only, and gradients reach the embeddings."""
    tokens = model.tokenize(TEXTS[:2])
    embeds = model.token_embeddings(tokens).detach().clone()
    embeds[0, 1] = torch.randn(embeds.shape[-1], generator=torch.Generator().manual_seed(0))
    embeds.requires_grad_(True)
    out = model.encode_text_embeddings(embeds, tokens)
    with torch.no_grad():
        ref = model.encode_text(tokens)
    assert not torch.allclose(out[0], ref[0], atol=1e-4)
    torch.testing.assert_close(out[1], ref[1], atol=1e-6, rtol=1e-6)
    (grad,) = torch.autograd.grad(out[0].sum(), embeds)
    assert grad[0].abs().sum() > 0 and grad[1].abs().sum() == 0  # rows are independent
    assert all(p.grad is None for p in model.parameters())


def test_hf_hook_is_removed_even_on_error(hf_model):
    table = hf_model.model.text_model.embeddings.token_embedding
    tokens = hf_model.tokenize(TEXTS)
    hf_model.encode_text_embeddings(hf_model.token_embeddings(tokens), tokens)
    assert not table._forward_hooks
    with pytest.raises(ValueError, match=r"embeds must have shape \(B, L, W\)"):
        hf_model.encode_text_embeddings(torch.zeros(1, 3, 32), tokens)
    bad = hf_model.token_embeddings(tokens)[..., :-1]
    with pytest.raises(ValueError, match="text width"):
        hf_model.encode_text_embeddings(bad, tokens)
    assert not table._forward_hooks


def test_wrong_inputs_are_rejected(zoo_resnet, hf_model):
    tokens = zoo_resnet.tokenize(TEXTS)
    with pytest.raises(ValueError, match=r"\(B, L, W\)"):
        zoo_resnet.encode_text_embeddings(zoo_resnet.token_embeddings(tokens)[:1], tokens)
    with pytest.raises(ValueError, match="integer tensor"):
        hf_model.token_embeddings(torch.rand(2, 8))


def test_models_without_the_capability_get_a_teaching_error():
    class ImageOnly:
        def encode_text(self, tokens):
            return tokens

    assert not isinstance(ImageOnly(), PromptableText)
    with pytest.raises(TypeError, match="PromptableText.*lacks.*token_embeddings"):
        require_promptable_text(ImageOnly(), "AdvPT")


def test_class_names_fit_the_zoo_context(zoo_resnet):
    """The zoo's 48 class names are two words: <sos> + 12 learnt tokens + name + <eos> = 16."""
    lengths = {int((zoo_resnet.tokenize([n])[0] != 0).sum()) for n in shape_color_classes()}
    assert lengths == {4}  # <sos> colour shape <eos>


def test_learnt_prompt_with_word_vectors_equals_the_written_prompt(model):
    """With the context set to the token embeddings of "a photo of a", the learnt-prompt embedding
    of each class equals the text embedding of "a photo of a <class name>" (the layout is right)."""
    from mmsec.defenses.adversarial.advpt import learnt_class_embeddings, prompt_tokens

    names = ["red circle", "magenta diamond", "green square"]
    if isinstance(model, HFCLIP):
        k = len(model.tokenizer("a photo of a")["input_ids"]) - 2  # BPE tokens between start and end
    else:
        k = 4
    words = model.token_embeddings(model.tokenize(["a photo of a"]))[0, 1:1 + k]  # (k, W)
    with torch.no_grad():
        got = learnt_class_embeddings(model, words, prompt_tokens(model, names, k))  # (3, D)
        expected = torch.nn.functional.normalize(model.encode_text(model.tokenize([f"a photo of a {n}" for n in names])),
                                                 dim=-1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_advpt_on_hf_clip_leaves_it_unchanged(hf_model):
    from mmsec.data import ShapesDataset, zeroshot_prompts
    from mmsec.defenses.adversarial.advpt import AdvPT

    data = ShapesDataset("train", n=16).to_data(quiet=True)
    before = {k: v.clone() for k, v in hf_model.state_dict().items()}
    result = AdvPT(eps=4 / 255, steps=2, n_ctx=4, epochs=1, batch_size=8)(hf_model, data, zeroshot_prompts())
    assert result.extras["class_embeddings"].shape == (48, 16) and result.extras["context"].shape == (4, 32)
    assert all(torch.equal(v, hf_model.state_dict()[k]) for k, v in before.items())
    assert all(p.grad is None for p in hf_model.parameters())
    assert not hf_model.model.text_model.embeddings.token_embedding._forward_hooks
    pixels = data.pixels[:4]
    with torch.no_grad():
        assert torch.equal(result.model.encode_image(pixels), hf_model.encode_image(pixels))
