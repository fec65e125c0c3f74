"""Contract tests of every registered evasion attack (a new attack is tested on arrival).

Each attack is built from its registry factory with its defaults (plus a budget where it has
one) and run on a tiny random-weight CLIP: budget respected in every norm it supports, pixels in
[0, 1], inputs and model untouched (no parameter .grad), deterministic under a seed, shapes and
dtypes kept, bad arguments and bad inputs rejected with a teaching error.
"""

from __future__ import annotations

import copy
import inspect
import math

import pytest
import torch

from mmsec.attacks.base import EvasionAttack, EvasionResult
from mmsec.attacks.objectives import RetrievalObjective, ZeroShotObjective
from mmsec.attacks.projection import lp_norm
from mmsec.data.shapes import ShapesWorld, zeroshot_prompts
from mmsec.models.tiny_clip import TinyCLIP, TinyCLIPConfig
from mmsec.models.tokenizer import WordTokenizer
from mmsec.registry import entries

ATTACKS = entries("attacks")
IDS = [e.name for e in ATTACKS]
EPS = {"linf": 8 / 255, "l2": 0.5}
B = 6


def _takes(entry, arg: str) -> bool:
    return arg in inspect.signature(entry.factory).parameters


def make(entry, **kwargs) -> EvasionAttack:
    """Build an attack, passing only the arguments its __init__ takes."""
    return entry.factory(**{k: v for k, v in kwargs.items() if _takes(entry, k)})


def budgeted(entry, norm: str, eps: float | None = None) -> EvasionAttack:
    eps = EPS[norm] if eps is None else eps
    # A step that can reach the edge of the ball in the attack's default number of steps.
    return make(entry, eps=eps, norm=norm, alpha=eps / 2)


def norms_of(entry) -> tuple[str, ...]:
    return entry.factory.norms if _takes(entry, "eps") else ()


CASES = [pytest.param(e, n, id=f"{e.name}-{n}") for e in ATTACKS for n in norms_of(e)]


@pytest.fixture(scope="module")
def model() -> TinyCLIP:
    torch.manual_seed(0)
    prompts = [p for group in zeroshot_prompts() for p in group]
    vocab = WordTokenizer.from_corpus(prompts + ["a photo"]).vocab
    cfg = TinyCLIPConfig(vocab=vocab, resnet_widths=(8, 16), embed_dim=16, text_width=16, text_layers=1,
                         text_heads=2)
    return TinyCLIP(cfg).eval()


@pytest.fixture(scope="module")
def objective(model) -> ZeroShotObjective:
    return ZeroShotObjective(model, zeroshot_prompts())


@pytest.fixture(scope="module")
def data() -> tuple[torch.Tensor, torch.Tensor]:
    batch = ShapesWorld().batch("test", 0, B)
    return batch.pixels(), batch.labels


def test_registry_lists_the_first_attacks():
    assert {"fgsm", "pgd", "noise"} <= set(IDS)


@pytest.mark.parametrize("entry", ATTACKS, ids=IDS)
def test_defaults_build_and_record_params(entry):
    attack = entry.factory()
    assert isinstance(attack, EvasionAttack)
    assert attack.name == entry.name
    assert entry.summary, "the class docstring's first line is the registry summary"
    params = attack.params()
    signature = inspect.signature(entry.factory).parameters
    assert set(params) == set(signature) - {"self"}, "every __init__ argument is recorded"
    assert all(params[k] == p.default for k, p in signature.items() if p.default is not inspect.Parameter.empty)
    assert type(attack).__name__ in repr(attack)


@pytest.mark.parametrize("entry, norm", CASES)
def test_budget_range_shapes(entry, norm, objective, data):
    pixels, labels = data
    attack = budgeted(entry, norm)
    result = attack(objective, pixels, labels, generator=0)
    assert isinstance(result, EvasionResult)
    adv = result.adv_pixels
    assert adv.shape == pixels.shape and adv.dtype == pixels.dtype and adv.device == pixels.device
    assert not adv.requires_grad
    assert adv.min() >= 0 and adv.max() <= 1
    assert (lp_norm(adv - pixels, norm) <= EPS[norm] * (1 + 1e-5) + 1e-6).all()
    if entry.factory.perturbs_misclassified:  # an evaluation ensemble skips already-wrong images
        assert (adv != pixels).any(), "a positive budget changes the images"
    assert result.success.shape == (B,) and result.success.dtype == torch.bool
    trace = result.loss_trace
    assert trace.ndim == 2 and trace.shape[1] == B and trace.shape[0] >= 1
    assert torch.isfinite(trace).all() and not trace.requires_grad
    assert result.params == attack.params()
    if "steps" in result.params:
        assert trace.shape[0] == result.params["steps"]


@pytest.mark.parametrize("entry, norm", CASES)
def test_zero_budget_returns_the_clean_images(entry, norm, objective, data):
    pixels, labels = data
    result = budgeted(entry, norm, eps=0.0)(objective, pixels, labels, generator=0)
    assert torch.equal(result.adv_pixels, pixels)


@pytest.mark.parametrize("entry, norm", CASES)
def test_large_l2_and_full_linf_budget_stay_in_range(entry, norm, objective, data):
    pixels, labels = data
    eps = 1.0 if norm == "linf" else 20.0
    adv = budgeted(entry, norm, eps=eps)(objective, pixels, labels, generator=0).adv_pixels
    assert adv.min() >= 0 and adv.max() <= 1
    assert (lp_norm(adv - pixels, norm) <= eps * (1 + 1e-5)).all()


@pytest.mark.parametrize("entry", ATTACKS, ids=IDS)
def test_inputs_and_model_untouched(entry, model, objective, data):
    pixels, labels = data
    pixels = pixels.clone().requires_grad_(True)  # a caller's tensor that is part of a graph
    pixels_before, labels_before = pixels.detach().clone(), labels.clone()
    targets = (labels + 1) % 48
    targets_before = targets.clone()
    state_before = {k: v.clone() for k, v in model.state_dict().items()}  # parameters and buffers
    flags_before = [p.requires_grad for p in model.parameters()]
    for tgt in (None, targets):
        entry.factory()(objective, pixels, labels, tgt, generator=0)
    assert torch.equal(pixels.detach(), pixels_before) and pixels.grad is None
    assert torch.equal(labels, labels_before) and torch.equal(targets, targets_before)
    assert not model.training
    assert [p.requires_grad for p in model.parameters()] == flags_before
    assert all(p.grad is None for p in model.parameters()), "attacks must not accumulate parameter .grad"
    for k, v in model.state_dict().items():
        assert torch.equal(v, state_before[k]), f"model tensor {k} changed"


@pytest.mark.parametrize("entry", ATTACKS, ids=IDS)
def test_deterministic_under_a_seed(entry, objective, data):
    pixels, labels = data
    attack = entry.factory()
    torch.manual_seed(1)  # the global RNG must not matter
    a = attack(objective, pixels, labels, generator=torch.Generator().manual_seed(7))
    torch.manual_seed(2)
    b = attack(objective, pixels, labels, generator=7)
    assert torch.equal(a.adv_pixels, b.adv_pixels)
    assert torch.equal(a.loss_trace, b.loss_trace) and torch.equal(a.success, b.success)
    c = attack(objective, pixels, labels)  # None means seed 0
    d = attack(objective, pixels, labels, generator=0)
    assert torch.equal(c.adv_pixels, d.adv_pixels)


@pytest.mark.parametrize("entry", ATTACKS, ids=IDS)
def test_targeted_and_retrieval_objectives(entry, model, data):
    pixels, labels = data
    captions = ShapesWorld().batch("test", 0, B).captions
    gallery = [c[0] for c in captions]
    objective = RetrievalObjective(model, gallery)
    targets = torch.roll(torch.arange(B), 1)
    result = entry.factory()(objective, pixels, torch.arange(B), targets, generator=0)
    assert result.success.shape == (B,) and result.adv_pixels.shape == pixels.shape


@pytest.mark.parametrize("entry", ATTACKS, ids=IDS)
def test_dtype_float64_kept(entry, model, data):
    pixels, labels = data
    model64 = copy.deepcopy(model).double()
    objective = ZeroShotObjective(model64, zeroshot_prompts())
    result = entry.factory()(objective, pixels.double(), labels, generator=0)
    assert result.adv_pixels.dtype == torch.float64
    assert result.adv_pixels.min() >= 0 and result.adv_pixels.max() <= 1


BAD_ARGS = [  # (argument, value, exception, norm)
    ("eps", -0.1, ValueError, "linf"),
    ("eps", 1.5, ValueError, "linf"),
    ("eps", -1.0, ValueError, "l2"),
    ("eps", math.inf, ValueError, "l2"),
    ("eps", math.nan, ValueError, "linf"),
    ("eps", "8/255", TypeError, "linf"),
    ("eps", True, TypeError, "linf"),
    ("alpha", -0.01, ValueError, "linf"),
    ("alpha", 2.0, ValueError, "linf"),
    ("alpha", None, TypeError, "linf"),
    ("steps", 0, ValueError, "linf"),
    ("steps", 2.5, TypeError, "linf"),
    ("random_start", "yes", TypeError, "linf"),
    ("norm", "l3", ValueError, None),
    ("norm", 2, TypeError, None),
]


@pytest.mark.parametrize("entry", ATTACKS, ids=IDS)
@pytest.mark.parametrize("arg, value, exc, norm", BAD_ARGS, ids=[f"{a}={v!r}-{n}" for a, v, _, n in BAD_ARGS])
def test_bad_arguments_rejected(entry, arg, value, exc, norm):
    if not _takes(entry, arg) or (norm is not None and norm not in norms_of(entry)):
        pytest.skip(f"{entry.name} has no {arg!r} for norm {norm}")
    kwargs = {arg: value}
    if norm is not None and _takes(entry, "norm"):
        kwargs["norm"] = norm
    with pytest.raises(exc, match=arg) as info:
        entry.factory(**kwargs)
    assert str(value) in str(info.value) or repr(value) in str(info.value), "the error shows the value received"


@pytest.mark.parametrize("entry", ATTACKS, ids=IDS)
def test_unknown_argument_rejected(entry):
    with pytest.raises(TypeError):
        entry.factory(epsilon=0.1)


@pytest.mark.parametrize("entry", ATTACKS, ids=IDS)
def test_bad_inputs_rejected(entry, model, objective, data):
    pixels, labels = data
    attack = entry.factory()
    nan = pixels.clone()
    nan[0, 0, 0, 0] = float("nan")
    bad_pixels = {
        "NaN": nan,
        "no batch dim": pixels[0],
        "one channel": pixels[:, :1],
        "out of [0, 1]": pixels * 255,
        "negative": pixels - 0.5,
        "uint8": (pixels * 255).to(torch.uint8),
    }
    for why, bad in bad_pixels.items():
        with pytest.raises(ValueError, match="pixels"):
            attack(objective, bad, labels[: bad.shape[0]] if bad.ndim == 4 else labels)
            pytest.fail(f"pixels with {why} accepted")
    with pytest.raises(ValueError, match="labels"):
        attack(objective, pixels, labels[:-1])
    with pytest.raises(ValueError, match="labels"):
        attack(objective, pixels, labels.float())
    with pytest.raises(ValueError, match="targets"):
        attack(objective, pixels, labels, labels[:, None])
    with pytest.raises(TypeError, match="objective"):
        attack(model, pixels, labels)  # the model itself, not an objective
    with pytest.raises(TypeError, match="generator"):
        attack(objective, pixels, labels, generator="seed")
    trained = copy.deepcopy(model).train()
    with pytest.raises(ValueError, match="training mode"):
        attack(ZeroShotObjective(trained, zeroshot_prompts()), pixels, labels)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_helpers(norm):
    from mmsec.attacks.projection import ascent_direction, project, random_delta, random_start

    gen = torch.Generator().manual_seed(0)
    clean = torch.rand(64, 3, 8, 8, generator=gen)
    eps = EPS[norm]
    uniform = random_delta(clean, eps, norm, gen)
    sphere = random_delta(clean, eps, norm, gen, radius="sphere")
    assert (lp_norm(uniform, norm) <= eps * (1 + 1e-6)).all()
    if norm == "l2":
        assert torch.allclose(lp_norm(sphere, "l2"), torch.full((64,), eps))
        assert lp_norm(uniform, "l2").std() > 0.1 * eps  # radius uniform in [0, eps], not constant
    else:
        assert uniform.abs().mean().item() == pytest.approx(eps / 2, rel=0.05)  # uniform in [-eps, eps]
    start = random_start(clean, eps, norm, torch.Generator().manual_seed(3))
    assert torch.equal(start, random_start(clean, eps, norm, torch.Generator().manual_seed(3)))
    far = clean + 10 * torch.randn(clean.shape, generator=gen)
    projected = project(far, clean, eps, norm)
    assert projected.min() >= 0 and projected.max() <= 1
    assert (lp_norm(projected - clean, norm) <= eps * (1 + 1e-5)).all()
    assert torch.allclose(project(projected, clean, eps, norm), projected, atol=1e-6)  # idempotent
    direction = ascent_direction(torch.randn(clean.shape, generator=gen), norm)
    assert torch.allclose(lp_norm(direction, norm), torch.ones(64))
    assert torch.equal(ascent_direction(torch.zeros_like(clean), norm), torch.zeros_like(clean))
