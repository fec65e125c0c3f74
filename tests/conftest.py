"""Test set-up: one torch thread per process (two cores shared with other work), deterministic seeds, models
trained once per test run, and the scheduling of ``pytest -n 2`` (pytest-xdist, two worker processes).

Shared models: a session fixture below trains each model that several test modules need (the zoo ResNet
backdoored by BadEncoder), so a test run trains it once. Every run still trains it: the effect test of the
attack itself (tests/attacks/test_badencoder.py) asserts on the very model the other modules then defend.
Models that a test starts from without asserting their training are shipped instead (tests/shipped_models.py).

Workers: under ``-n N`` with the default ``--dist load``, :func:`pytest_xdist_make_scheduler` hands xdist the
scheduler of tests/xdist_groups.py, which sends whole modules, or whole groups of modules that share a
trained model, to one worker (nothing is trained twice), the heaviest first.
"""

import os

os.environ.setdefault("MMSEC_QUIET", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)  # in every process: the sequential run and each xdist worker import this file

from mmsec import builtins  # noqa: E402

builtins.load()  # every registration (methods, loaders, tasks), as the CLI and the runner have them


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist: ignored where it is not installed
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "load":  # another --dist mode asked for by name: xdist's own
        return None
    import xdist_groups

    return xdist_groups.scheduler(config, log)


@pytest.fixture(scope="session")
def zoo_resnet():
    from mmsec.zoo import load_model

    return load_model("shapes-clip-resnet")


@pytest.fixture(scope="session")
def zoo_vit():
    from mmsec.zoo import load_model

    return load_model("shapes-clip-vit")


@pytest.fixture(scope="session")
def badencoder_resnet(zoo_resnet):
    """The zoo ResNet's image tower backdoored by BadEncoder (target "red circle", the 4 x 4 checkerboard),
    small: 512 shadow scenes, 16 epochs of 32 at lr 3e-3 (~40 s). Shared by the attack's tests and the
    defenses that repair it, so it is trained once per test session."""
    from mmsec.attacks.backdoor.badencoder import BadEncoder
    from mmsec.data.shapes import ShapesWorld, shape_color_classes

    shadow = ShapesWorld(32, second_object_prob=0.25).batch("train", 0, 512).pixels()
    pool = ShapesWorld(32).batch("train", 90_000, 300)
    idx = (pool.labels == shape_color_classes().index("red circle")).nonzero().flatten()[:1]
    attack = BadEncoder(target="red circle", epochs=16, batch_size=32, lr=3e-3)
    return attack(zoo_resnet, shadow, pool.pixels()[idx], generator=0,
                  reference_indices=[90_000 + int(i) for i in idx], reference_seed=0)



@pytest.fixture
def small_recipe_eval(monkeypatch):
    """Zoo recipes as shipped but for a small evaluation (96 classification, 64 retrieval, 32 binding scenes in
    place of 2,000 / 1,000 / 500): for smoke trainings of a few steps that check the card and the checkpoint
    they write, not the numbers of an untrained model."""
    import copy

    import mmsec.zoo.train as zoo_train
    from mmsec.zoo import load_recipe

    def small(name: str) -> dict:
        recipe = copy.deepcopy(load_recipe(name))
        recipe["eval"] = {**recipe["eval"], "n_classification": 96, "n_retrieval": 64, "n_binding": 32}
        return recipe

    monkeypatch.setattr(zoo_train, "load_recipe", small)
