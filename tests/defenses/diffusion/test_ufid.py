"""UFID (Guan, Hu, Li & Vullikanti, AAAI 2025): the graph density, the perturbations, the threshold, and the
effect on a backdoored unconditional model and on a text-conditional model with a trigger word.

Unconditional effect: the tiny BadDiffusion fixture of tests/attacks/test_baddiffusion.py (8 x 8 shapes-world
images, 165k-parameter UNet, the 4 x 4 checkerboard trigger, "corner" target, DDIM coefficient, 304 steps),
and the same model fine-tuned as long on the clean images alone as the control; UFID
with the zoo CLIP's image tower scores 16 starting noises with and without the trigger (DDIM, STEPS steps).

Conditional effect: a stand-in text-to-image model (no training: the effect under test is UFID's, not a
backdoor's) whose generation is a shapes-world image picked by its starting noise and prompt, except that
a prompt holding the trigger word always gives the same target image (BadT2I's behaviour).
"""

from __future__ import annotations

import copy
import zlib

import pytest
import torch
import torch.nn.functional as F

from mmsec import registry
from mmsec.defenses.diffusion import UFID, InputVerdict
from mmsec.defenses.diffusion.ufid import (
    SHAPES_PHRASES,
    graph_density,
    load_image_encoder,
    perturb_noise,
    perturb_prompts,
)
from mmsec.methods import build
from tiny_diffusion import corner as shared_corner
from tiny_diffusion import tiny_backdoor_unet

S = 8
EPOCHS = 38  # steps = EPOCHS * 8 at batch 32 of 256 images
STEPS = 20


def auroc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    pos, neg = pos.double(), neg.double()
    return ((pos[:, None] > neg[None]).double() + 0.5 * (pos[:, None] == neg[None]).double()).mean().item()


# -- numerics ------------------------------------------------------------------------------------------

def test_graph_density_is_the_mean_pairwise_cosine():
    same = torch.ones(1, 4, 3)
    ortho = torch.eye(3).unsqueeze(0)  # 3 orthogonal embeddings
    g = torch.Generator().manual_seed(0)
    f = torch.randn(2, 5, 7, generator=g)
    n = F.normalize(f, dim=-1)
    want = torch.stack([sum((n[b, i] @ n[b, j]) for i in range(5) for j in range(i + 1, 5)) / 10 for b in range(2)])
    assert torch.allclose(graph_density(same), torch.ones(1))
    assert torch.allclose(graph_density(ortho), torch.zeros(1), atol=1e-6)
    assert torch.allclose(graph_density(f), want, atol=1e-6)
    assert torch.allclose(graph_density(3 * f), graph_density(f), atol=1e-6)  # scale-free (cosine)
    with pytest.raises(ValueError, match="n >= 2 generations"):
        graph_density(torch.randn(2, 1, 4))


def test_noise_perturbation_keeps_the_query_and_adds_gaussian_noise():
    x = torch.randn(3, 3, S, S)
    out = perturb_noise(x, 5, 0.5, torch.Generator().manual_seed(0))
    assert out.shape == (15, 3, S, S)
    rows = out.view(3, 5, 3, S, S)
    assert torch.equal(rows[:, 0], x)  # the first copy is the query itself
    delta = rows[:, 1:] - x[:, None]
    assert delta.abs().min() > 0 and abs(delta.std().item() - 0.5) < 0.05  # measured 0.50
    assert torch.equal(perturb_noise(x, 5, 0.0, torch.Generator()), x.repeat_interleave(5, 0))


def test_prompt_perturbation_keeps_the_prompt_and_joins_a_phrase():
    prompts = ["a red circle cf", "a blue square"]
    out = perturb_prompts(prompts, 4, SHAPES_PHRASES, "append", torch.Generator().manual_seed(0))
    assert len(out) == 8 and out[0] == prompts[0] and out[4] == prompts[1]
    for k, p in enumerate(out):
        if k % 4:
            assert p.startswith(prompts[k // 4] + " ") and p[len(prompts[k // 4]) + 1:] in SHAPES_PHRASES
    assert len(set(out[1:4])) > 1  # the phrases vary
    pre = perturb_prompts(prompts, 4, SHAPES_PHRASES, "prepend", torch.Generator().manual_seed(0))
    assert all(p.endswith(prompts[k // 4]) for k, p in enumerate(pre))


# -- the conditional effect (a stand-in model) ---------------------------------------------------------

TRIGGER = "cf"


class TriggerWordModel:
    """A stand-in text-conditional DiffusionModel: a shapes-world image picked by a hash of the rounded
    starting noise and the prompt; a prompt containing TRIGGER gives bank image 0 whatever the noise."""

    conditional, channels, image_size = True, 3, 16

    def __init__(self, bank: torch.Tensor):
        self.bank, self.seen = bank, []

    def sample(self, n, cond=None, steps=None, guidance=1.0, generator=None, sampler="ddim"):
        self.seen += list(cond)
        out = []
        for x, prompt in zip(n, cond, strict=True):
            if TRIGGER in prompt.split():
                out.append(self.bank[0])
            else:
                # a stable hash (Python's hash() of a str changes with each process's PYTHONHASHSEED)
                key = zlib.crc32(repr((tuple((x.flatten()[:16] * 4).round().tolist()), prompt)).encode()) % (
                    len(self.bank) - 1)
                out.append(self.bank[1 + key])
        return torch.stack(out)


@pytest.fixture(scope="module")
def bank() -> torch.Tensor:
    from mmsec.data.shapes import ShapesWorld

    return ShapesWorld(16).batch("train", 1, 64).pixels()


def test_conditional_trigger_word_collapses_and_is_flagged(bank):
    model = TriggerWordModel(bank)
    prompts = ["a red circle", "a blue square", "a green ring", "a yellow cross"] * 2
    triggered = [f"{p} {TRIGGER}" for p in prompts]
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    detector = UFID(copies=6, calibration_inputs=12)
    verdict = detector(model, torch.cat([x, x]), prompts + triggered, generator=0)
    assert isinstance(verdict, InputVerdict) and verdict.scores.shape == (16,)
    clean_s, trig_s = verdict.scores[:8], verdict.scores[8:]
    assert auroc(trig_s, clean_s) == 1.0, (trig_s, clean_s)
    assert trig_s.min() > clean_s.max() + 0.1, (trig_s, clean_s)  # measured 1.00 vs at most ~0.8
    assert verdict.flagged[8:].all() and verdict.flagged[:8].float().mean() <= 0.25
    # every perturbed copy of a triggered prompt still carries the trigger, and the copies differ
    asked = [p for p in model.seen if p.startswith(triggered[0])]
    assert len(asked) >= 6 and all(TRIGGER in p.split() for p in asked)


class TriggerNoiseModel:
    """A stand-in unconditional DiffusionModel: a shapes-world image picked by a hash of the rounded starting
    noise; a noise whose projection on the trigger pattern ``r`` exceeds half of ``r`` gives bank image 0
    (what a working BadDiffusion backdoor does with ``x_T = eps + r``)."""

    conditional, channels, image_size = False, 3, 16

    def __init__(self, bank: torch.Tensor, r: torch.Tensor):
        self.bank, self.r = bank, r

    def sample(self, n, cond=None, steps=None, guidance=1.0, generator=None, sampler="ddim"):
        proj = (n * self.r).flatten(1).sum(1) / (self.r**2).sum()
        keys = [hash(tuple((x.flatten()[:16] * 4).round().tolist())) % (len(self.bank) - 1) for x in n]
        return torch.stack([self.bank[0] if p > 0.5 else self.bank[1 + k] for p, k in zip(proj, keys, strict=True)])


def test_unconditional_stand_in_triggered_noises_are_flagged(bank):
    from mmsec.attacks.backdoor import NoiseTrigger, PatchTrigger
    from mmsec.attacks.backdoor.baddiffusion import trigger_shift

    trigger = NoiseTrigger(trigger_shift(PatchTrigger(size=8), 16))
    model = TriggerNoiseModel(bank, trigger.shift)
    x = torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    verdict = UFID(copies=6, calibration_inputs=12)(model, torch.cat([x, trigger.apply(x)]), generator=0)
    clean_s, trig_s = verdict.scores[:8], verdict.scores[8:]
    assert auroc(trig_s, clean_s) == 1.0 and trig_s.min() > clean_s.max() + 0.1, (trig_s, clean_s)
    assert verdict.flagged[8:].all() and verdict.flagged[:8].float().mean() <= 0.25


# -- the unconditional effect (BadDiffusion) -----------------------------------------------------------

@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    from mmsec.data.shapes import ShapesWorld

    return F.avg_pool2d(ShapesWorld(16).batch("train", 0, 256).pixels(), 16 // S)


def tiny_model():
    """The tiny UNet of tests/attacks/test_baddiffusion.py (2 levels, 16/32 channels), 100 training steps."""
    return tiny_backdoor_unet(S)


def corner() -> torch.Tensor:
    return shared_corner(S)


@pytest.fixture(scope="module")
def untrained():
    return tiny_model()


@pytest.fixture(scope="module")
def backdoored(images):
    from mmsec.attacks.backdoor import BadDiffusion, PatchTrigger

    attack = BadDiffusion(trigger=PatchTrigger(size=4), coefficient="ddim", poison_rate=0.5, epochs=EPOCHS,
                          batch_size=32, lr=1e-2)
    return attack(tiny_model(), images, corner(), generator=0)


@pytest.fixture(scope="module")
def control(images, backdoored):
    """The same model fine-tuned as long on the clean images alone."""
    from mmsec.train.diffusion import DiffusionBatch, DiffusionTrainConfig, train_diffusion

    model, n, b = tiny_model(), images.shape[0], backdoored.extras["batch_size"]

    def batches(step: int) -> DiffusionBatch:
        return DiffusionBatch(images[torch.randint(0, n, (b,), generator=torch.Generator().manual_seed(step))])

    train_diffusion(model, batches, DiffusionTrainConfig(steps=backdoored.record.steps, lr=1e-2,
                                                         warmup=backdoored.extras["warmup"], ema=None,
                                                         prompt_dropout=0.0), quiet=True)
    return model


@pytest.fixture(scope="module")
def clip_encoder():
    return load_image_encoder("clip")


def _separation(model, trigger, encoder) -> tuple[float, torch.Tensor, torch.Tensor]:
    noise = torch.randn(16, 3, S, S, generator=torch.Generator().manual_seed(3))
    detector = UFID(copies=6, steps=STEPS)
    with torch.no_grad():
        trig = detector.scores(model, trigger.apply(noise), None, 1, encoder)
        clean = detector.scores(model, noise, None, 1, encoder)
    return auroc(trig, clean), trig, clean


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="measured: the tiny BadDiffusion backdoor is too weak for UFID (AUROC 0.76) "
                   "and the trigger pattern alone raises the clean control's density as much (AUROC 0.80)")
def test_unconditional_triggered_noises_score_higher(backdoored, control, clip_encoder):
    """The paper's claim at test size; a known gap (see the xfail): 19% of the triggered samples fall within MSE
    0.05 of the target, and the 4 x 4 checkerboard added to the noise makes even a clean model's generations
    alike. Kept strict so that a stronger fixture (or a fix) that makes it pass is noticed."""
    a, trig, clean = _separation(backdoored.model, backdoored.trigger, clip_encoder)
    a_ctrl, _, _ = _separation(control, backdoored.trigger, clip_encoder)
    assert a >= 0.9, (a, trig, clean)  # measured 0.76 (seed 0, 304 steps)
    assert a_ctrl <= 0.65, a_ctrl  # measured 0.80


def test_contract_registry_and_config(untrained):
    entry = registry.get("diffusion_input_detectors", "ufid")
    assert entry.factory is UFID and entry.family == "diffusion"
    d = UFID(copies=3, noise_strength=0.5, encoder="judge", threshold=0.5)
    again = build("diffusion_input_detectors", d.config())
    assert again.config() == d.config() and again.params()["copies"] == 3
    x = torch.randn(4, 3, S, S, generator=torch.Generator().manual_seed(0))
    before = copy.deepcopy(untrained.state_dict())
    verdict = UFID(copies=3, steps=5, threshold=0.5, encoder=lambda p: p.flatten(1))(untrained, x, generator=0)
    assert verdict.threshold == 0.5 and torch.equal(verdict.flagged, verdict.scores >= 0.5) and verdict.seconds > 0
    after = untrained.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the model is not modified


def test_calibrated_threshold_is_the_clean_quantile(untrained):
    d = UFID(copies=3, steps=5, calibration_inputs=8, false_positive_rate=0.25, encoder=lambda p: p.flatten(1))
    x = torch.randn(2, 3, S, S, generator=torch.Generator().manual_seed(0))
    verdict = d(untrained, x, generator=0)
    clean = torch.tensor(verdict.details["calibration_scores"], dtype=torch.float64)
    assert len(clean) == 8 and verdict.threshold == pytest.approx(torch.quantile(clean, 0.75).item())


def test_rejects_bad_arguments(untrained):
    with pytest.raises(ValueError, match="copies must be an int >= 2"):
        UFID(copies=1)
    with pytest.raises(ValueError, match="encoder must be one of"):
        UFID(encoder="vit")
    with pytest.raises(ValueError, match="phrase_position must be one of"):
        UFID(phrase_position="middle")
    with pytest.raises(ValueError, match="phrases must be a non-empty list"):
        UFID(phrases=[])
    with pytest.raises(ValueError, match="threshold must be None"):
        UFID(threshold=float("nan"))
    d = UFID(copies=2, steps=2, threshold=0.0, encoder=lambda p: p.flatten(1))
    with pytest.raises(ValueError, match=r"x_T must be \(B, 3, 8, 8\)"):
        d(untrained, torch.randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match="prompts must be None for an unconditional model"):
        d(untrained, torch.randn(2, 3, S, S), ["a", "b"])
