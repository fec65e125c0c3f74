"""Fail-fast sizes (issue 16): load_spec rejects specs too large for one run on a CPU, naming the limit;
MMSEC_NO_LIMITS=1 lets them through; every shipped recipe and preset is within the limits."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from runs_helpers import tiny_spec

from mmsec import limits
from mmsec.data.shapes import MIN_IMAGE_SIZE, ShapesWorld
from mmsec.runs.grid import expand
from mmsec.runs.spec import SpecError, grid_size, load_spec, preset_names
from mmsec.runs.task import get_task

REPO = Path(__file__).resolve().parents[2]


def problems(spec: dict) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    return str(e.value)


def test_a_billion_images_fails_at_once_naming_the_limit():
    t0 = time.process_time()
    text = problems(tiny_spec(data={"name": "shapes", "split": "test", "n": 1_000_000_000, "image_size": 32}))
    assert time.process_time() - t0 < 2
    assert "data.n: 1,000,000,000 images is above the limit of 100,000 images" in text and "MMSEC_NO_LIMITS=1" in text


def test_image_size_below_the_renderers_minimum():
    text = problems(tiny_spec(data={"name": "shapes", "split": "test", "n": 8, "image_size": 10}))
    assert f"data.image_size: 10 is too small for the shapes world, which renders images of {MIN_IMAGE_SIZE}" in text
    with pytest.raises(ValueError, match=f">= {MIN_IMAGE_SIZE}"):  # the spec's bound is the renderer's own
        ShapesWorld(image_size=MIN_IMAGE_SIZE - 1)
    assert ShapesWorld(image_size=MIN_IMAGE_SIZE).batch("test", 0, 2).images.shape[-1] == MIN_IMAGE_SIZE
    load_spec(tiny_spec(data={"name": "shapes", "split": "test", "n": 8, "image_size": MIN_IMAGE_SIZE}))
    text = problems(tiny_spec(data={"name": "shapes", "split": "test", "n": 8, "image_size": 4096}))
    assert "data.image_size: 4,096 pixels is above the limit of 1,024 pixels" in text


def test_memory_estimate():
    text = problems(tiny_spec(data={"name": "shapes", "split": "test", "n": 50_000, "image_size": 512}))
    assert "data: 50,000 images of 512x512 need about 183.1 GiB in memory, above the limit of 4.0 GiB" in text
    assert limits.data_bytes(1000, 32) == 1000 * 3 * 32 * 32 * 5


def test_steps_epochs_pairs_anywhere():
    text = problems(tiny_spec(attack={"name": "pgd", "params": {"eps": "8/255", "alpha": "eps/4",
                                                                  "steps": 10**9}}))
    assert "attack.params.steps: 1,000,000,000 steps is above the limit of 100,000 steps" in text
    spec = tiny_spec(task="backdoor", training={"mode": "pretrain", "epochs": 10**6, "pairs": 10**8},
                     attack={"name": "pbcl_backdoor", "params": {"target": "red circle", "trigger": "patch",
                                                                  "rate": 0.01}}, baseline=None)
    text = problems(spec)
    assert "training.epochs: 1,000,000 epochs is above the limit of 1,000 epochs" in text
    assert "training.pairs: 100,000,000 pairs is above the limit of 1,000,000 pairs" in text
    text = problems(tiny_spec(defense={"name": "tecoa", "params": {"steps": 10**7}}))
    assert "defense.params.steps: 10,000,000 steps" in text


def test_grid_size_is_counted_without_expanding():
    spec = tiny_spec(seed=list(range(100)))
    spec["attack"]["params"]["eps"] = [f"{k}/255" for k in range(1, 201)]
    t0 = time.process_time()
    text = problems(spec)
    assert time.process_time() - t0 < 5
    assert "the grid (model x defense x seed x attack x list-valued parameters): 20,000 cells is above the limit " \
           "of 10,000 cells" in text


def test_no_limits_lets_a_large_spec_through(monkeypatch):
    spec = tiny_spec(data={"name": "shapes", "split": "test", "n": 1_000_000, "image_size": 32})
    problems(spec)
    monkeypatch.setenv("MMSEC_NO_LIMITS", "1")
    assert load_spec(spec).data.n == 1_000_000
    monkeypatch.setenv("MMSEC_NO_LIMITS", "0")
    problems(spec)


def test_every_recipe_and_preset_is_within_the_limits_and_the_count_matches_the_grid():
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        for preset in [None, *preset_names(path)]:
            spec = load_spec(path, preset=preset)
            assert grid_size(spec, get_task(spec.task), spec.block) == len(expand(spec)), (path.name, preset)
