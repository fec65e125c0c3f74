"""Merging methods: their maths on hand-made task vectors, their contract on zoo task models."""

import pytest
import torch

from mmsec.data.shapes_tasks import get_task
from mmsec.merging import (
    MERGING_METHODS,
    AdaMerging,
    RegMean,
    TaskArithmetic,
    TiesMerging,
    WeightAveraging,
    finetune_tower,
    task_accuracy,
    task_head,
)
from mmsec.merging.regmean import gram_matrices
from mmsec.merging.task_vectors import task_vector, tower_names, tower_state


@pytest.fixture(scope="module")
def setting(zoo_resnet):
    """Pre-trained model and two short-fine-tuned task models (position, texture), with data."""
    pre = zoo_resnet.eval()
    tasks = [get_task("position"), get_task("texture")]
    train = [t.data("train", 0, 256) for t in tasks]
    test = [t.data("test", 0, 200) for t in tasks]
    models = [finetune_tower(pre, t, x, y, steps=40, batch_size=32, lr=3e-4, generator=i).model
              for i, (t, (x, y)) in enumerate(zip(tasks, train, strict=True))]
    return pre, tasks, models, train, test


def _data(method, tasks, train, test, pre):
    if method.name == "regmean":
        return [x for x, _ in train]
    if method.name == "adamerging":
        return [(x, task_head(pre, t)) for t, (x, _) in zip(tasks, test, strict=True)]
    return None


def _toy(values):
    return {"w": torch.tensor(values, dtype=torch.float32)}


def test_averaging_and_task_arithmetic_are_their_formulas(setting):
    pre, _, models, _, _ = setting
    names = tower_names(pre)
    p, taus = tower_state(pre, names), [task_vector(pre, m, names) for m in models]
    avg = tower_state(WeightAveraging()(pre, models).model, names)
    ta = tower_state(TaskArithmetic(lam=0.3)(pre, models).model, names)
    for n in names:
        torch.testing.assert_close(avg[n], p[n] + (taus[0][n] + taus[1][n]) / 2)
        torch.testing.assert_close(ta[n], p[n] + 0.3 * (taus[0][n] + taus[1][n]))
    one = tower_state(TaskArithmetic(lam=1.0)(pre, models[:1]).model, names)
    for n in names:
        torch.testing.assert_close(one[n], tower_state(models[0], names)[n])


def test_ties_trims_elects_and_takes_the_disjoint_mean():
    pre = _toy([0.0] * 5)
    taus = [_toy([1.0, -0.1, 3.0, 0.2, -2.0]), _toy([-2.0, 0.05, 1.0, 0.1, 4.0])]
    # k = 40%: keep the 2 largest of each: tau0 -> [0,0,3,0,-2], tau1 -> [-2,0,0,0,4]
    state, extras = TiesMerging(k=40, lam=1.0).merge_state(None, None, pre, taus, None)
    # elected signs: [-, 0, +, 0, +]; disjoint means: [-2, 0, 3, 0, 4]
    torch.testing.assert_close(state["w"], torch.tensor([-2.0, 0.0, 3.0, 0.0, 4.0]))
    assert extras["kept_fraction"] == pytest.approx(0.4)


def test_regmean_solves_the_per_layer_regression(setting):
    pre, tasks, models, train, _ = setting
    names = set(tower_names(pre))
    # One model: the regression's solution is that model's weights.
    alone = RegMean(n_samples=64)(pre, models[:1], [train[0][0]]).model
    for n in names:
        torch.testing.assert_close(tower_state(alone, [n])[n], tower_state(models[0], [n])[n], atol=1e-4, rtol=1e-3)
    # alpha = 1 (exact Gram): a lower merged regression error than plain averaging, on every merged layer.
    result = RegMean(alpha=1.0, n_samples=64)(pre, models, [x for x, _ in train])
    avg = WeightAveraging()(pre, models).model
    grams = [gram_matrices(m, x[:64], names) for m, (x, _) in zip(models, train, strict=True)]
    layers = result.extras["regmean_layers"]
    assert len(layers) >= 5  # the ResNet tower's convolutions and its projection
    for n in layers:
        assert _regression_error(result.model, n, models, grams) <= _regression_error(avg, n, models, grams) * (1 + 1e-6)


def _regression_error(model, name, models, grams):
    """sum_k ||X_k W^T - X_k W_k^T||^2 / |X_k| of one layer (from the Gram matrices)."""
    w = tower_state(model, [name])[name].double()
    w = w.reshape(w.shape[0], -1)
    total = 0.0
    for g, m in zip(grams, models, strict=True):
        d = w - tower_state(m, [name])[name].double().reshape(w.shape)
        total += float(torch.trace(d @ g[name] @ d.T))
    return total


def test_adamerging_lowers_entropy_and_keeps_coefficients_in_range(setting):
    pre, tasks, models, train, test = setting
    data = [(x[:32], task_head(pre, t)) for t, (x, _) in zip(tasks, test, strict=True)]
    start = AdaMerging(steps=0)(pre, models, data)
    ta = TaskArithmetic(lam=0.3)(pre, models).model
    names = tower_names(pre)
    for n in names:  # no step: task arithmetic at the initial 0.3
        torch.testing.assert_close(tower_state(start.model, [n])[n], tower_state(ta, [n])[n])
    result = AdaMerging(steps=40, lr=1e-2, batch_size=16)(pre, models, data)
    lambdas = torch.tensor(result.extras["lambdas"])
    assert lambdas.shape == (len(names), 2) and lambdas.min() >= 0 and lambdas.max() <= 1
    trace = result.extras["entropy"]
    assert sum(trace[-5:]) / 5 < 0.8 * sum(trace[:5]) / 5


@pytest.mark.parametrize("name", sorted(MERGING_METHODS))
def test_merged_model_keeps_task_accuracy_and_inputs_untouched(setting, name):
    pre, tasks, models, train, test = setting
    before = [{k: v.clone() for k, v in m.state_dict().items()} for m in (pre, *models)]
    method = MERGING_METHODS[name]() if name != "adamerging" else AdaMerging(steps=10)
    result = method(pre, models, _data(method, tasks, train, test, pre))
    for t, (x, y) in zip(tasks, test, strict=True):
        assert task_accuracy(result.model, t, x, y) >= 0.9
    assert result.model is not pre and result.method == name
    for m, state in zip((pre, *models), before, strict=True):
        for k, v in m.state_dict().items():
            assert torch.equal(v, state[k]), f"{name} modified an input model ({k})"


def test_bad_inputs_are_rejected(setting):
    pre, _, models, train, _ = setting
    with pytest.raises(ValueError, match="needs data"):
        RegMean()(pre, models)
    with pytest.raises(ValueError, match="at least 1"):
        WeightAveraging()(pre, [])
    with pytest.raises(TypeError, match="list of fine-tuned models"):
        WeightAveraging()(pre, models[0])
    with pytest.raises(ValueError, match="k must be > 0"):
        TiesMerging(k=0)
    with pytest.raises(ValueError, match="lam"):
        TaskArithmetic(lam=-1)
    with pytest.raises(ValueError, match="alpha"):
        RegMean(alpha=2)
    with pytest.raises(ValueError, match="pair"):
        AdaMerging(steps=1)(pre, models, [train[0][0], train[1][0]])
    with pytest.raises(ValueError, match="unknown task"):
        get_task("shapes")
    x, y = train[0]
    with pytest.raises(TypeError, match=r"task must be a task object.*shapes_tasks"):
        finetune_tower(pre, 3, x, y, steps=1)
    with pytest.raises(TypeError, match="task must be a task object"):
        task_accuracy(pre, {"name": "position"}, x, y)


def test_the_methods_are_registered_and_built_from_a_config():
    from mmsec import builtins, registry
    from mmsec.methods import build

    builtins.load()
    assert dict(MERGING_METHODS) == {e.name: e.factory for e in registry.entries("merging")}
    assert set(MERGING_METHODS) == {"weight_averaging", "task_arithmetic", "ties", "regmean", "adamerging"}
    for name, cls in MERGING_METHODS.items():
        assert cls.name == name and registry.get("merging", name).paper
    ties = build("merging", {"name": "ties", "params": {"k": 40.0, "lam": 0.5}})
    assert isinstance(ties, TiesMerging) and (ties.k, ties.lam) == (40.0, 0.5)
    assert build("merging", ties.config()).config() == ties.config() == {"name": "ties", "params": {"k": 40.0,
                                                                                                   "lam": 0.5}}


def test_any_task_object_works_not_only_the_shapes_worlds(setting):
    """A task is data the caller gives: name, classes, prompts. Here the position task under other names."""
    from dataclasses import dataclass

    pre, tasks, models, _, test = setting

    @dataclass(frozen=True)
    class Corners:
        name: str = "corners"
        classes: tuple = ("upper left", "upper right", "lower left", "lower right")

        @property
        def num_classes(self) -> int:
            return len(self.classes)

        def class_index(self, target):
            return target if isinstance(target, int) else self.classes.index(target)

        def prompts(self):
            return tasks[0].prompts()  # the same prompts, other class names

    x, y = test[0]
    merged = TaskArithmetic()(pre, models).model
    assert task_accuracy(merged, Corners(), x, y) == task_accuracy(merged, tasks[0], x, y) >= 0.9
    torch.testing.assert_close(task_head(pre, Corners()), task_head(pre, tasks[0]))


def test_the_old_shapes_task_spellings_are_gone(setting):
    """The transitional shim (merging/_shapes_compat.py) is deleted: merging knows no world, so a task given by
    name is an error that says what to give instead, and the package has no TASKS / ShapesTask / get_task."""
    import mmsec.merging as merging
    import mmsec.merging.tasks as merging_tasks

    pre, tasks, _, _, test = setting
    for module in (merging, merging_tasks):
        for name in ("TASKS", "ShapesTask", "get_task"):
            assert not hasattr(module, name), f"{module.__name__}.{name}"
    x, y = test[0]
    with pytest.raises(TypeError, match="task must be a task object"):
        task_accuracy(pre, "position", x, y)
