"""SEER (Zhu et al., AAAI 2024): the joint trigger / target-text search and its verdict.

The search is checked on a toy CLIP with a planted backdoor of known trigger and target (white 4 x 4
corner -> the word "red"), where the answer is known, against the same model without it. On the
shipped models SEER does not separate clean from backdoored (recipes/seer.yaml): those
numbers live in the benchmark, not here.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmsec.defenses.backdoor import SEER, SEERResult, model_dictionary

VOCAB = ["<pad>", "red", "circle", "blue", "square", "green", "star", "a", "photo", "of", "large", "small"]
SIZE, DIM = 16, 24


class ToyCLIP(nn.Module):
    """A fixed random linear image tower and a word-embedding text tower; with ``backdoor`` a white
    4 x 4 bottom-right corner sends any image to the text feature of "red". The gate is smooth enough
    to pass a gradient from SEER's start (mask and pattern at 0.5): with a sharp one (slope 40 at 0.8)
    the search never finds the corner -- the same failure as on the zoo's backdoors (benchmark)."""

    image_size = SIZE
    normalize = None

    def __init__(self, backdoor: bool, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.image = nn.Linear(3 * SIZE * SIZE, DIM)
        self.words = nn.Embedding(len(VOCAB), DIM)
        with torch.no_grad():
            self.image.weight.copy_(torch.randn(DIM, 3 * SIZE * SIZE, generator=g) / SIZE)
            self.image.bias.zero_()
            self.words.weight.copy_(torch.randn(len(VOCAB), DIM, generator=g))
        self.logit_scale = nn.Parameter(torch.tensor(1.0))
        self.backdoor = backdoor
        self.tokenizer = type("Tok", (), {"vocab": VOCAB})()

    def tokenize(self, texts: list[str]) -> torch.Tensor:
        ids = [[VOCAB.index(w) for w in t.split()] for t in texts]
        width = max(len(i) for i in ids)
        return torch.tensor([i + [0] * (width - len(i)) for i in ids])

    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        keep = (tokens != 0).float().unsqueeze(-1)
        return (self.words(tokens) * keep).sum(1) / keep.sum(1)

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        feats = self.image((pixels - 0.5).flatten(1))
        if not self.backdoor:
            return feats
        gate = torch.sigmoid(10 * (pixels[:, :, -4:, -4:].mean((1, 2, 3)) - 0.7)).unsqueeze(-1)
        red = self.words.weight[VOCAB.index("red")]
        return (1 - gate) * feats + gate * 4 * red


@pytest.fixture(scope="module")
def images():
    return torch.rand(128, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def test_the_search_finds_a_planted_trigger_and_target_and_flags_only_that_model(images):
    bad, clean = ToyCLIP(backdoor=True), ToyCLIP(backdoor=False)
    seer = SEER(batch_size=32)
    r_bad, r_clean = seer(bad, images, generator=0), seer(clean, images, generator=0)
    assert isinstance(r_bad, SEERResult) and r_bad.mask.shape == (1, SIZE, SIZE) and r_bad.pattern.shape == (3, SIZE, SIZE)
    # the backdoored model: S_IT near 1 with a small mask sitting on the corner, and the target named
    assert r_bad.similarity > 0.9 and r_bad.backdoored, r_bad.similarity
    corner = r_bad.mask[0, -4:, -4:].sum() / r_bad.mask.sum()
    assert corner > 0.7 and r_bad.mask.sum() < 8, (float(corner), float(r_bad.mask.sum()))
    assert r_bad.target_ranking[0][0] == "red"
    # the same model without the backdoor: no small mask aligns the images with one text
    assert r_clean.similarity < 0.75 and not r_clean.backdoored, r_clean.similarity
    assert r_bad.anomaly_index > r_clean.anomaly_index + 1.5
    # the model-detector contract: flagged, score (higher = more suspicious), threshold, target
    assert (r_bad.flagged, r_clean.flagged) == (True, False) and r_bad.target == "red"
    assert r_bad.score == r_bad.anomaly_index >= r_bad.threshold > r_clean.score


def test_seer_is_the_registered_model_detector():
    from mmsec import builtins, registry
    from mmsec.defenses.base import ModelDetector
    from mmsec.methods import build

    builtins.load()
    assert registry.get("model_detectors", "seer").factory is SEER and issubclass(SEER, ModelDetector)
    seer = build("model_detectors", {"name": "seer", "params": {"steps": 5, "restarts": 2}})
    assert (seer.steps, seer.restarts) == (5, 2) and build("model_detectors", seer.config()).config() == seer.config()


def test_the_model_is_left_untouched_and_restarts_keep_the_lowest_objective(images):
    model = ToyCLIP(backdoor=True)
    before = copy.deepcopy(model.state_dict())
    model.train()
    r = SEER(steps=30, batch_size=16, restarts=3)(model, images, generator=0)
    assert model.training  # mode restored
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert len(r.restart_similarities) == 3 and len(r.trace) == 30
    assert r.similarity in r.restart_similarities
    # determinism on a fixed seed
    again = SEER(steps=30, batch_size=16, restarts=3)(model, images, generator=0)
    assert again.restart_similarities == r.restart_similarities


def test_the_dictionary_is_the_model_vocabulary_without_special_tokens(zoo_resnet):
    words = model_dictionary(zoo_resnet)
    assert "red" in words and "circle" in words and not any(w.startswith("<") for w in words)
    with pytest.raises(ValueError, match="tokenizer vocabulary"):
        model_dictionary(nn.Linear(2, 2))


def test_bad_inputs_are_named(images):
    model = ToyCLIP(backdoor=False)
    with pytest.raises(ValueError, match="lambda1"):
        SEER(lambda1=-1)
    with pytest.raises(ValueError, match="restarts"):
        SEER(restarts=0)
    with pytest.raises(ValueError, match="N >= 2"):
        SEER(steps=1)(model, images[:1])
    with pytest.raises(ValueError, match="NaN"):
        SEER(steps=1)(model, images.clone().fill_(float("nan")))
    with pytest.raises(ValueError, match="dictionary"):
        SEER(steps=1)(model, images, dictionary=["red", ""])
    with pytest.raises(TypeError, match="ContrastiveModel"):
        SEER(steps=1)(nn.Linear(2, 2), images)


def test_a_free_text_feature_finds_the_target_direction(images):
    """F^T moves from the dictionary mean to the target: its cosine to "red" rises during the search."""
    model = ToyCLIP(backdoor=True)
    words = model_dictionary(model)
    feats = F.normalize(model.encode_text(model.tokenize(words)).detach(), dim=-1)
    start = float(F.normalize(feats.mean(0), dim=0) @ feats[words.index("red")].detach())
    r = SEER(batch_size=32)(model, images, generator=0)
    assert dict(r.target_ranking)["red"] > start + 0.3


def test_a_candidate_start_is_kept_only_where_it_explains_a_backdoor(images):
    """Started on the true trigger, the search keeps it on the backdoored model; on the clean model the
    same start does not survive (the objective, not the start, decides)."""
    mask, pattern = torch.zeros(1, SIZE, SIZE), torch.full((3, SIZE, SIZE), 0.5)
    mask[:, -4:, -4:], pattern[:, -4:, -4:] = 1.0, 1.0
    seer = SEER(steps=100, batch_size=32)
    on_bad = seer(ToyCLIP(backdoor=True), images, generator=0, start=(mask, pattern))
    on_clean = seer(ToyCLIP(backdoor=False), images, generator=0, start=(mask, pattern))
    assert on_bad.similarity > 0.9 and on_bad.mask[0, -4:, -4:].sum() > 0.7 * on_bad.mask.sum()
    assert on_clean.similarity < 0.75
    with pytest.raises(ValueError, match=r"mask \(1, 16, 16\)"):
        seer(ToyCLIP(backdoor=True), images, start=(mask[:, :8], pattern))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        seer(ToyCLIP(backdoor=True), images, start=(mask * 2, pattern))
