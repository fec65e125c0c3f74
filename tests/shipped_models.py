"""Small trained models shipped with the tests, for tests that start from a trained model but do not assert
what its training does (that is another test's claim, which trains it itself).

Each model is ``tests/fixtures/NAME.safetensors`` (the state dict of its base zoo model's architecture,
safetensors only) and ``tests/fixtures/NAME.json``, its card: the settings it was trained with, the base
zoo checkpoint's sha256, the file's sha256, torch's version and facts the tests need (a trigger). Loading
checks all of them and refuses a stale or modified file by name, with the command that rebuilds it::

    PYTHONPATH=src python tests/shipped_models.py NAME      # retrain NAME, rewrite its file and card

``pytest -m slow tests/test_shipped_models.py`` retrains each one and checks that the shipped weights equal
a fresh training (bit for bit on the machine that wrote them; within a small tolerance elsewhere).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@dataclass(frozen=True)
class Shipped:
    """A shipped test model: its base zoo model, the settings of its training, and the function that trains
    it (``train(settings) -> (model, info)``, ``info`` JSON-safe)."""

    base: str
    settings: dict
    train: Callable[[dict], tuple[torch.nn.Module, dict]]
    description: str


def _pbcl_finetune(settings: dict) -> tuple[torch.nn.Module, dict]:
    from mmsec.attacks.backdoor.pbcl import PBCLBackdoor
    from mmsec.data.datasets import ShapesDataset
    from mmsec.train.poisoned import poisoned_finetune
    from mmsec.zoo import load_model

    zoo = load_model(settings["base"])
    pairs = ShapesDataset("train", n=settings["pairs"], second_object_prob=settings["second_object_prob"]
                          ).to_data(quiet=True)
    attack = PBCLBackdoor(settings["target"], rate=settings["rate"])
    run = poisoned_finetune(zoo, attack, pairs, steps=settings["steps"], batch_size=settings["batch_size"],
                            lr=settings["lr"], seed=settings["seed"])
    return run.model, {"trigger": attack.trigger.to_dict(), "n_poisoned": run.record.n_poisoned}


MODELS: dict[str, Shipped] = {
    # CleanCLIP's starting point (tests/defenses/test_cleanclip.py): measured zero-shot ASR 0.93 on 195
    # non-target test scenes. What PBCL fine-tuning plants is tests/attacks/test_pbcl.py's claim (trained there).
    "pbcl_resnet_150": Shipped(
        base="shapes-clip-resnet",
        settings={"base": "shapes-clip-resnet", "attack": "pbcl_backdoor", "target": "red circle", "rate": 0.03,
                  "pairs": 1024, "second_object_prob": 0.25, "steps": 150, "batch_size": 64, "lr": 2e-3, "seed": 0},
        train=_pbcl_finetune,
        description="shapes-clip-resnet fine-tuned on 1,024 clean train pairs + 3% PBCL-poisoned pairs "
                    "(target 'red circle', the default 4 x 4 checkerboard patch, the data's own captions), "
                    "150 steps of 64 at lr 2e-3, seed 0"),
}


def _paths(name: str) -> tuple[Path, Path]:
    return FIXTURES / f"{name}.safetensors", FIXTURES / f"{name}.json"


def _spec(name: str) -> Shipped:
    if name not in MODELS:
        raise KeyError(f"no shipped test model {name!r}; known: {sorted(MODELS)}")
    return MODELS[name]


def _base_sha256(base: str) -> str:
    from mmsec import zoo

    return zoo.card(base)["sha256"]


def train(name: str) -> tuple[torch.nn.Module, dict]:
    """A fresh training of shipped model ``name`` (what its file must equal)."""
    spec = _spec(name)
    return spec.train(spec.settings)


def write(name: str) -> dict:
    """Train ``name`` and write its file and card; returns the card."""
    from mmsec.models.checkpoint import save_checkpoint

    spec = _spec(name)
    model, info = spec.train(spec.settings)
    weights, card_path = _paths(name)
    sha = save_checkpoint(weights, model.state_dict(), {"name": name, "base": spec.base})
    card = {"name": name, "description": spec.description, "base": spec.base,
            "base_sha256": _base_sha256(spec.base), "settings": spec.settings, "sha256": sha,
            "torch": torch.__version__, "info": info}
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return card


def card(name: str) -> dict:
    """The card of shipped model ``name``, checked against the settings here and the zoo's base checkpoint."""
    spec = _spec(name)
    weights, card_path = _paths(name)
    rebuild = f"rebuild it: PYTHONPATH=src python tests/shipped_models.py {name}"
    if not card_path.is_file() or not weights.is_file():
        raise FileNotFoundError(f"shipped test model {name!r}: {weights} or its card is missing; {rebuild}")
    found = json.loads(card_path.read_text())
    if found["settings"] != spec.settings:
        raise ValueError(f"shipped test model {name!r} was trained with {found['settings']}, but "
                         f"tests/shipped_models.py now says {spec.settings}; {rebuild}")
    if found["base_sha256"] != _base_sha256(spec.base):
        raise ValueError(f"shipped test model {name!r} was trained from another {spec.base} checkpoint "
                         f"(sha256 {found['base_sha256'][:12]}..., the zoo's is now "
                         f"{_base_sha256(spec.base)[:12]}...); {rebuild}")
    return found


def load(name: str) -> tuple[torch.nn.Module, dict]:
    """Shipped model ``name`` (eval mode) and its card's ``info``; refuses a stale or modified file."""
    from mmsec.models.checkpoint import load_checkpoint
    from mmsec.zoo import load_model

    found = card(name)
    tensors, _ = load_checkpoint(_paths(name)[0], expected_sha256=found["sha256"])
    model = load_model(found["base"])
    model.load_state_dict(tensors, strict=True)
    return model.eval(), found["info"]


def main(argv: list[str]) -> int:
    from mmsec import builtins

    names = argv or sorted(MODELS)
    torch.set_num_threads(1)  # as the tests train: one thread, the same numbers
    builtins.load()
    for name in names:
        written = write(name)
        print(f"{name}: {written['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
