"""TeCoA and FARE: contract (new model, input and text tower untouched, bad arguments) and effect.

Effect: a short adversarial fine-tune of the shipped ``shapes-clip-resnet`` (module-scoped, run
once per session) on 1,024 shapes-world train images, at the budget EPS where the undefended
model is weak, evaluated with PGD-10 (alpha = eps/4, random start, seed 0) on 200 test images.
Thresholds sit between the values measured with seed 0 (comments) and the undefended model's.

Measured (seed 0; training seed 1 in brackets): undefended clean 1.00, robust 0.38 at 4/255;
TeCoA clean 1.00 [1.00], robust 0.695 [0.685], clean-embedding drift ||phi - phi_orig||^2 1.31
[1.49], cosine 0.959 [0.954]; FARE clean 1.00 [1.00], robust 0.65 [0.655], drift 0.16 [0.16],
cosine 0.993 [0.993] (||phi_orig||^2 = 10.9). With bn_mode="eval": TeCoA 0.55 [0.66], drift 8.0
[7.2]; FARE 0.595 [0.575], drift 0.28 [0.27]. A 16-step run at lr 1e-3 instead cost FARE 41
points of clean accuracy: the first large Adam steps disrupt the small network before it adapts.
"""

from __future__ import annotations

import pytest
import torch

from mmsec.attacks import PGD, ZeroShotObjective
from mmsec.data.datasets import ImageTextData, ShapesDataset
from mmsec.data.shapes import zeroshot_prompts
from mmsec.defenses import FARE, DefenseResult, TeCoA, embedding_drift, image_tower_parameters
from mmsec.registry import get

EPS = 4 / 255
N_TRAIN, N_TEST = 1024, 200
# Short, test-sized run: 5-step inner PGD (alpha = 2.5 * eps / 5), 3 epochs of 8 batches of 128.
SHORT = dict(eps=EPS, alpha=2.5 * EPS / 5, steps=5, epochs=3, batch_size=128, lr=5e-4)


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def accuracies(model, pixels, labels) -> tuple[float, float]:
    objective = ZeroShotObjective(model, zeroshot_prompts())
    clean = (objective.predict(pixels) == labels).float().mean().item()
    adv = PGD(eps=EPS, alpha=EPS / 4, steps=10)(objective, pixels, labels, generator=0)
    return clean, 1.0 - adv.success_rate


@pytest.fixture(scope="module")
def train_data() -> ImageTextData:
    return ShapesDataset("train", n=N_TRAIN, image_size=32).to_data(quiet=True)


@pytest.fixture(scope="module")
def test_data() -> ImageTextData:
    return ShapesDataset("test", n=N_TEST, image_size=32).to_data(quiet=True)


@pytest.fixture(scope="module")
def hardened(zoo_resnet, train_data):
    """Both defenses run once on the zoo model; the model's state before and after."""
    before = snapshot(zoo_resnet)
    results = {name: cls(**SHORT)(zoo_resnet, train_data, zeroshot_prompts(), torch.Generator().manual_seed(0))
               for name, cls in (("tecoa", TeCoA), ("fare", FARE))}
    return before, snapshot(zoo_resnet), results


@pytest.fixture(scope="module")
def evaluation(zoo_resnet, hardened, test_data):
    _, _, results = hardened
    out = {"none": accuracies(zoo_resnet, test_data.pixels, test_data.labels)}
    for name, result in results.items():
        out[name] = accuracies(result.model, test_data.pixels, test_data.labels)
        out[name + "_drift"] = embedding_drift(result.model, zoo_resnet, test_data.pixels)
    return out


# ---------------------------------------------------------------------------------------------
# Contract
# ---------------------------------------------------------------------------------------------
def test_registered():
    assert get("defenses", "tecoa").factory is TeCoA
    assert get("defenses", "fare").factory is FARE


def test_paper_defaults():
    t, f = TeCoA(), FARE()
    assert (t.eps, t.alpha, t.steps) == (1 / 255, 1 / 255, 2)
    assert (f.eps, f.alpha, f.steps, f.epochs, f.batch_size, f.lr, f.weight_decay) == (4 / 255, 1 / 255, 10, 2, 128,
                                                                                       1e-5, 1e-4)
    assert set(t.params()) >= {"eps", "alpha", "steps", "epochs", "batch_size", "lr", "weight_decay", "bn_mode"}


def test_returns_new_model_and_leaves_input_untouched(zoo_resnet, hardened):
    before, after, results = hardened
    assert same(before, after), "the defense mutated the model it was given"
    assert not zoo_resnet.training
    for result in results.values():
        assert isinstance(result, DefenseResult)
        assert result.model is not zoo_resnet
        assert not result.model.training
        assert result.steps == 3 * (N_TRAIN // 128) == len(result.losses)
        assert result.seconds > 0 and result.params["eps"] == EPS
        assert all(p.grad is None for p in result.model.parameters())


def test_only_image_tower_trained(zoo_resnet, hardened):
    before, _, results = hardened
    tokens = zoo_resnet.tokenize(["a red circle", "a photo of a blue ring"])
    for name, result in results.items():
        trained = result.extras["trained_parameters"]
        assert trained and all(n.startswith("visual.") for n in trained), name
        new = snapshot(result.model)
        for k in before:
            if not k.startswith("visual."):
                assert torch.equal(before[k], new[k]), f"{name} changed {k}"
        assert any(not torch.equal(before[k], new[k]) for k in before if k.startswith("visual.")), name
        with torch.no_grad():
            assert torch.equal(result.model.encode_text(tokens), zoo_resnet.encode_text(tokens))
        assert torch.equal(result.model.logit_scale, zoo_resnet.logit_scale)
        # bn_mode="train" (default): BatchNorm's running averages moved towards adversarial statistics.
        assert any(not torch.equal(before[k], new[k]) for k in before if "running_mean" in k), name


def test_image_tower_parameters_of_tiny_clip(zoo_vit):
    names = [n for n, _ in image_tower_parameters(zoo_vit, torch.rand(2, 3, 32, 32))]
    expected = [n for n, _ in zoo_vit.named_parameters() if n.startswith("visual.")]
    assert names == expected


@pytest.mark.parametrize("kwargs", [dict(eps=-0.1), dict(eps=1.5), dict(eps=float("nan")), dict(alpha=2.0),
                                    dict(epochs=0), dict(steps=0), dict(batch_size=0), dict(lr=0.0),
                                    dict(weight_decay=-1.0), dict(warmup=1.5), dict(bn_mode="frozen"),
                                    dict(epochs=1.5)])
@pytest.mark.parametrize("cls", [TeCoA, FARE])
def test_bad_arguments_rejected(cls, kwargs):
    with pytest.raises((ValueError, TypeError)):
        cls(**kwargs)


def test_tecoa_needs_labels_and_prompts(zoo_resnet):
    unlabelled = ImageTextData(torch.rand(4, 3, 32, 32))
    with pytest.raises(ValueError, match="labels"):
        TeCoA(epochs=1)(zoo_resnet, unlabelled, zeroshot_prompts())
    labelled = ImageTextData(torch.rand(4, 3, 32, 32), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match="prompts"):
        TeCoA(epochs=1)(zoo_resnet, labelled, None)
    with pytest.raises(TypeError, match="ImageTextData"):
        TeCoA(epochs=1)(zoo_resnet, torch.rand(4, 3, 32, 32), zeroshot_prompts())


def test_fare_runs_without_labels_deterministic_and_bn_eval_mode(zoo_resnet, zoo_vit):
    unlabelled = ImageTextData(torch.rand(16, 3, 32, 32))
    fare = FARE(eps=4 / 255, steps=2, epochs=1, batch_size=8, lr=1e-3)
    a = fare(zoo_resnet, unlabelled, generator=torch.Generator().manual_seed(3))
    b = fare(zoo_resnet, unlabelled, generator=torch.Generator().manual_seed(3))
    assert same(snapshot(a.model), snapshot(b.model)) and a.losses == b.losses
    # bn_mode="eval": BatchNorm stays on its running statistics; the weights still train.
    before = snapshot(zoo_resnet)
    c = FARE(eps=4 / 255, steps=2, epochs=1, batch_size=8, lr=1e-3, bn_mode="eval")(zoo_resnet, unlabelled)
    new = snapshot(c.model)
    assert all(torch.equal(before[k], new[k]) for k in before if "running_" in k)
    assert any(not torch.equal(before[k], new[k]) for k in before if k.endswith("conv1.weight"))
    assert not c.model.training
    # The ViT tower (no BatchNorm) goes through the same loop.
    v = FARE(eps=4 / 255, steps=1, epochs=1, batch_size=8, lr=1e-3)(zoo_vit, unlabelled)
    assert v.steps == 2 and all(n.startswith("visual.") for n in v.extras["trained_parameters"])


# ---------------------------------------------------------------------------------------------
# Effect
# ---------------------------------------------------------------------------------------------
def test_robust_accuracy_rises_clean_accuracy_kept(evaluation):
    clean0, robust0 = evaluation["none"]  # measured: 1.00, 0.38
    for name in ("tecoa", "fare"):
        clean, robust = evaluation[name]  # measured: tecoa 1.00 / 0.695, fare 1.00 / 0.65
        assert robust >= robust0 + 0.10, f"{name}: robust accuracy {robust:.3f} vs undefended {robust0:.3f}"
        assert clean >= clean0 - 0.05, f"{name}: clean accuracy {clean:.3f} vs undefended {clean0:.3f}"


@pytest.mark.slow
def test_tecoa_against_the_same_fine_tuning_without_adversarial_examples(zoo_resnet, train_data, test_data,
                                                                          evaluation):
    """TeCoA's distinguishing test: the same fine-tuning (loss, data, steps, seed) at eps 0, where the inner
    maximisation leaves every image clean (~15 CPU-s more than the module's fixtures). Measured (seed 0): PGD-10
    robust accuracy at 4/255 0.695 for TeCoA, 0.41 at eps 0, 0.38 undefended; clean 1.00 for all. (So the effect
    test's +0.10 over the undefended model is also above what the ablation reaches, +0.03.)"""
    plain = TeCoA(**{**SHORT, "eps": 0.0})(zoo_resnet, train_data, zeroshot_prompts(), torch.Generator().manual_seed(0))
    clean, robust = accuracies(plain.model, test_data.pixels, test_data.labels)
    assert clean >= 0.95
    assert evaluation["tecoa"][1] >= robust + 0.15, (evaluation["tecoa"], robust)


def test_fare_stays_closer_to_original_embeddings_than_tecoa(evaluation):
    fare, tecoa = evaluation["fare_drift"], evaluation["tecoa_drift"]  # measured: 0.16 / 0.993 vs 1.31 / 0.959
    assert fare["sq_l2"] < 0.25 * tecoa["sq_l2"], (fare, tecoa)
    assert fare["cosine"] > tecoa["cosine"] + 0.01, (fare, tecoa)


@pytest.mark.parametrize("name", ["tecoa", "fare"])
def test_gradient_masking_checks_pass_on_the_hardened_models(hardened, test_data, name):
    """The robustness gain is not gradient masking: at the training budget every check passes
    (fast ensemble, 60 images, Square with 300 queries; the full-size run on the leaderboard's
    models is recipes/masking_checks.yaml)."""
    from mmsec.evaluation import gradient_masking_checks

    model = hardened[2][name].model
    objective = ZeroShotObjective(model, zeroshot_prompts())
    report = gradient_masking_checks(objective, test_data.pixels[:60], test_data.labels[:60], EPS, attacks="fast",
                                     generator=0, square_queries=300)
    assert report.passed, report.summary()
    assert report.accuracy_by_eps[EPS] >= 0.4  # the hardened model is robust here (measured PGD: 0.65-0.70)
