"""The small trained models shipped with the tests (tests/fixtures, see tests/shipped_models.py): each file is
what its card says, and (``-m slow``) what a fresh training with the card's settings gives."""

import json

import pytest
import torch

import shipped_models
from mmsec.models.checkpoint import CheckpointError, sha256_file

NAMES = sorted(shipped_models.MODELS)


@pytest.mark.parametrize("name", NAMES)
def test_each_shipped_file_is_small_and_matches_its_card(name):
    weights, _ = shipped_models._paths(name)
    card = shipped_models.card(name)  # settings as tests/shipped_models.py says, trained from today's zoo model
    assert weights.stat().st_size <= 4 * 2**20  # a few MB at most
    assert sha256_file(weights) == card["sha256"]
    model, info = shipped_models.load(name)
    assert not model.training and info == card["info"]


def test_a_stale_or_modified_file_is_refused_by_name(tmp_path, monkeypatch):
    name = NAMES[0]
    weights, card_path = shipped_models._paths(name)
    monkeypatch.setattr(shipped_models, "FIXTURES", tmp_path)
    with pytest.raises(FileNotFoundError, match=f"shipped test model '{name}'.*tests/shipped_models.py {name}"):
        shipped_models.load(name)
    card = json.loads(card_path.read_text())
    (tmp_path / weights.name).write_bytes(weights.read_bytes()[:-8] + b"\0" * 8)
    (tmp_path / card_path.name).write_text(json.dumps(card))
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        shipped_models.load(name)
    (tmp_path / card_path.name).write_text(json.dumps({**card, "settings": {**card["settings"], "steps": 1}}))
    with pytest.raises(ValueError, match="was trained with .*rebuild it"):
        shipped_models.load(name)
    (tmp_path / card_path.name).write_text(json.dumps({**card, "base_sha256": "0" * 64}))
    with pytest.raises(ValueError, match="from another shapes-clip-resnet checkpoint"):
        shipped_models.load(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_a_fresh_training_equals_the_shipped_model(name):
    shipped, _ = shipped_models.load(name)
    fresh, info = shipped_models.train(name)
    assert info == shipped_models.card(name)["info"]
    expected = fresh.state_dict()
    for key, value in shipped.state_dict().items():
        # bit for bit where the card's torch wrote it; another CPU's kernels may round a little differently
        assert torch.allclose(value, expected[key], rtol=1e-4, atol=1e-5), key
