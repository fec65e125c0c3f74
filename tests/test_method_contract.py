"""The contract every registered method shares, over every kind (not only evasion attacks).

Each entry of a method kind is built from its config the way a spec builds it, records its
``__init__`` arguments, round-trips through ``config()`` and says which model family it needs and
which paper it implements. A method that needs arguments to be built names them in EXAMPLE_PARAMS.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mmsec import builtins, registry
from mmsec.methods import Method, build

builtins.load()

NOT_METHODS = {"models", "datasets", "tasks"}  # kinds of loaders and plugins, not methods
FAMILIES = {None, "any", "contrastive", "fusion", "vlm", "diffusion", "classifier"}
# Methods that are baselines or building blocks rather than a paper's method.
NO_PAPER = {("attacks", "noise")}
# Arguments without defaults, as a spec would give them.
EXAMPLE_PARAMS: dict[tuple[str, str], dict] = {
    ("triggers", "optimized_patch"): {"pattern": [[[0.0, 1.0], [0.5, 0.25]]] * 3, "position": [1, 2]},
    ("poisoning", "pbcl_backdoor"): {"target": "red circle", "trigger": {"name": "patch", "params": {"size": 4}}},
    ("poisoning", "pbcl_targeted"): {"target": 3, "image_label": 7},
    ("poisoning", "badclip"): {"target": "red circle", "position": "center"},
    ("poisoning", "yang_single_target_image"): {"text_class": "red circle", "image_label": 9},
    ("poisoning", "yang_single_target_label"): {"text_class": "red circle", "image_class": "blue square"},
    ("poisoning", "yang_multiple_target_label"): {"goals": [["red circle", "blue square"], [18, 45]]},
    ("image_poisoning", "corruptencoder"): {"target": "red circle", "count": 5, "trigger": "patch"},
    ("image_poisoning", "naive_ssl_poisoning"): {"target": 0},
    ("model_backdoors", "badencoder"): {"target": "red circle", "trigger": {"name": "blended", "params": {}}},
    ("merging_attacks", "badmerging"): {"target_task": "texture", "target": "striped"},
    ("merging_attacks", "patch_backdoor"): {"target_task": "shape", "target": 0, "p_range": [0.5, 1.0]},
    ("pair_attacks", "co_attack"): {"candidates": "typos", "eps": 4 / 255},
    ("pair_attacks", "sga"): {"text_attack": {"name": "bert_attack", "params": {"neighbours": [["red", "blue"]]}}},
    ("universal_attacks", "advclip"): {"position": [20, 20], "betas": [0.5, 0.9]},
}

ENTRIES = [e for k in registry.kinds() if k.name not in NOT_METHODS for e in registry.entries(k.name)]


def _build(entry: registry.Entry) -> Method:
    return build(entry.kind, {"name": entry.name, "params": EXAMPLE_PARAMS.get((entry.kind, entry.name), {})})


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e.kind}:{e.name}")
def test_builds_from_its_config_and_round_trips(entry):
    method = _build(entry)
    assert isinstance(method, Method), f"{entry.kind}:{entry.name} does not derive from mmsec.methods.Method"
    config = method.config()
    assert config["name"] == entry.name
    again = build(entry.kind, config)
    assert type(again) is type(method)
    assert again.config() == config
    assert repr(method).startswith(type(method).__name__)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: f"{e.kind}:{e.name}")
def test_declares_family_paper_and_file(entry):
    assert entry.family in FAMILIES, f"{entry.kind}:{entry.name} declares family {entry.family!r}"
    if (entry.kind, entry.name) not in NO_PAPER:
        assert entry.paper, f"{entry.kind}:{entry.name} names no paper (class attribute `paper`)"
    assert entry.file.startswith("mmsec/") and entry.file.endswith(".py")
    assert (Path(__file__).parents[1] / "src" / entry.file).is_file()
    assert entry.summary


def test_every_kind_names_its_contract():
    for kind in registry.kinds():
        assert kind.summary and kind.contract, kind
