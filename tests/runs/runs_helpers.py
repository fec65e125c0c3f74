"""Shared helpers for the runs tests: tiny specs (32 images) on the shipped zoo model."""

import copy


def tiny_spec(name: str = "tiny", **overrides) -> dict:
    spec = {
        "name": name,
        "seed": 0,
        "model": "zoo:shapes-clip-resnet",
        "data": {"name": "shapes", "split": "test", "n": 32, "image_size": 32},
        "task": "zeroshot",
        "attack": {"name": "pgd", "params": {"eps": ["2/255", "8/255"], "alpha": "eps/4", "steps": 5}},
        "baseline": "noise",
        "batch_size": 16,
        "save_artifacts": True,
    }
    spec.update(copy.deepcopy(overrides))
    return spec
