"""The diffusion training loop on a tiny random UNet: the loss falls, prompts are dropped, a custom loss
is used as given, EMA replaces the weights."""

import random

import pytest
import torch

from mmsec.train.diffusion import (
    DiffusionBatch,
    DiffusionTrainConfig,
    drop_prompts,
    noise_prediction_loss,
    train_diffusion,
)

pytest.importorskip("diffusers")

from tiny_diffusion import tiny_conditional, tiny_unconditional  # noqa: E402


def test_training_reduces_the_noise_prediction_loss():
    model = tiny_unconditional()
    images = torch.zeros(32, 3, 8, 8)
    images[:, 0, 2:6, 2:6] = 1.0  # one red square on black: easy to learn
    g = torch.Generator().manual_seed(123)
    x0 = images[:16] * 2 - 1
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (16,), generator=g)
    x_t = model.scheduler.add_noise(x0, noise, t)

    def eval_loss() -> float:  # written out here, not the loop's loss: the test checks what is learnt
        return torch.nn.functional.mse_loss(model.predict_noise(x_t, t), noise).item()

    before = eval_loss()
    batches = lambda step: DiffusionBatch(images[(step % 2) * 16:(step % 2 + 1) * 16])  # noqa: E731
    log = train_diffusion(model, batches, DiffusionTrainConfig(steps=60, warmup=5, ema=None), quiet=True)
    after = eval_loss()
    assert len(log.losses) == 60 and log.seconds > 0
    assert after < 0.6 * before, (before, after)
    assert not model.unet.training


def test_prompt_dropout_and_a_custom_loss_reach_the_loss_function():
    model = tiny_conditional()
    seen: list[list[str]] = []

    def loss_fn(m, batch, generator):
        seen.append(batch.prompts)
        assert batch.extra["tag"] == "poison"
        return noise_prediction_loss(m, batch, generator)

    batch = DiffusionBatch(torch.rand(8, 3, 8, 8), ["a red circle"] * 8, {"tag": "poison"})
    before = [p.detach().clone() for p in model.unet.parameters()]
    train_diffusion(model, lambda step: batch, DiffusionTrainConfig(steps=4, warmup=1, prompt_dropout=0.5, ema=0.9),
                    loss_fn=loss_fn, quiet=True)
    dropped = sum(p == "" for prompts in seen for p in prompts)
    assert len(seen) == 4 and 6 <= dropped <= 26  # 32 prompts at p = 0.5
    assert any(not torch.equal(a, b) for a, b in zip(before, model.unet.parameters(), strict=True))
    assert drop_prompts(["x"] * 1000, 0.1, random.Random(0)).count("") in range(70, 131)


def test_the_ema_replaces_the_weights_at_the_end():
    batch = DiffusionBatch(torch.rand(8, 3, 8, 8))
    moved = {}
    for ema in (None, 0.999):
        model = tiny_unconditional()
        start = torch.cat([p.detach().flatten() for p in model.unet.parameters()])
        train_diffusion(model, lambda step: batch, DiffusionTrainConfig(steps=5, warmup=1, ema=ema), quiet=True)
        moved[ema] = (torch.cat([p.detach().flatten() for p in model.unet.parameters()]) - start).norm().item()
    # After 5 steps an EMA of decay 0.999 has moved ~0.5% of the way: far less than the raw weights.
    assert moved[0.999] < 0.05 * moved[None], moved


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="prompt_dropout"):
        DiffusionTrainConfig(prompt_dropout=1.5)
    with pytest.raises(ValueError, match="ema"):
        DiffusionTrainConfig(ema=1.0)
