"""The diffusers adapters on tiny random configs saved in tmp_path: the DiffusionModel protocol, sampling
(DDIM determinism, gradients, guidance), folder round trips and the loader's refusals."""

import shutil

import pytest
import torch

from mmsec.models.base import missing_members
from mmsec.models.checkpoint import CheckpointError
from mmsec.models.loaders import load_model

pytest.importorskip("diffusers")

from tiny_diffusion import PROMPTS, tiny_conditional, tiny_pipeline, tiny_unconditional  # noqa: E402


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def uncond():
    return tiny_unconditional()


@pytest.fixture(scope="module")
def cond():
    return tiny_conditional()


def test_adapters_satisfy_the_protocol(uncond, cond):
    for model in (uncond, cond):
        assert missing_members(model, "diffusion") == []
        assert (model.image_size, model.channels) == (8, 3)
    x = torch.randn(3, 3, 8, 8)
    assert uncond.predict_noise(x, 10).shape == (3, 3, 8, 8)
    assert uncond.predict_noise(x, torch.tensor([1, 500, 999])).shape == (3, 3, 8, 8)
    assert cond.predict_noise(x, 10, PROMPTS + ["a red square"]).shape == (3, 3, 8, 8)
    assert cond.encode_prompts(PROMPTS).shape == (2, 8, 16)
    assert cond.predict_noise(x, 10, cond.encode_prompts(PROMPTS + [""])).shape == (3, 3, 8, 8)


def test_ddim_is_deterministic_and_ddpm_follows_its_generator(uncond):
    a = uncond.sample(2, steps=4, generator=_gen(0))
    b = uncond.sample(2, steps=4, generator=_gen(0))
    assert a.shape == (2, 3, 8, 8) and 0 <= a.min() and a.max() <= 1 and not a.requires_grad
    assert torch.equal(a, b)
    assert not torch.equal(a, uncond.sample(2, steps=4, generator=_gen(1)))
    # DDIM (eta 0) is a function of the initial noise; the ancestral sampler adds noise from the generator.
    noise = torch.randn(2, 3, 8, 8, generator=_gen(5))
    assert torch.equal(uncond.sample(noise, steps=4, generator=_gen(1)), uncond.sample(noise, steps=4, generator=_gen(2)))
    p, q = (uncond.sample(noise, steps=4, sampler="ddpm", generator=_gen(s)) for s in (1, 2))
    assert (p - q).abs().max() > 1e-3
    assert torch.equal(p, uncond.sample(noise, steps=4, sampler="ddpm", generator=_gen(1)))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sampling_with_grad_reaches_the_noise_and_the_weights(uncond, sampler):
    noise = torch.randn(2, 3, 8, 8, generator=_gen(3), requires_grad=True)
    uncond.zero_grad()
    images = uncond.sample(noise, steps=3, grad=True, sampler=sampler, generator=_gen(0))
    images.mean().backward()
    assert noise.grad is not None and noise.grad.abs().sum() > 0
    assert uncond.unet.conv_in.weight.grad.abs().sum() > 0
    uncond.zero_grad()
    assert not uncond.sample(noise, steps=3).requires_grad


def test_guidance_changes_the_images_and_the_null_prompt_is_the_default(cond):
    noise = torch.randn(2, 3, 8, 8, generator=_gen(4))
    plain = cond.sample(noise, PROMPTS, steps=4)
    guided = cond.sample(noise, PROMPTS, steps=4, guidance=3.0)
    assert (plain - guided).abs().max() > 0.05
    null = cond.sample(noise, ["", ""], steps=4)
    assert torch.equal(null, cond.sample(noise, None, steps=4))
    assert (null - plain).abs().max() > 1e-3
    # Guidance 1 is the conditional prediction alone; guidance 0 the null prediction.
    x = torch.randn(2, 3, 8, 8)
    e = cond.encode_prompts(PROMPTS)
    n = cond.encode_prompts(["", ""])
    torch.testing.assert_close(cond.guided_noise(x, 7, e, n, 0.0), cond.predict_noise(x, 7, None), rtol=1e-4, atol=1e-5)


def test_bad_arguments_are_named(uncond, cond):
    with pytest.raises(ValueError, match="sampler"):
        uncond.sample(1, sampler="euler")
    with pytest.raises(ValueError, match="guidance"):
        uncond.sample(1, guidance=3.0)
    with pytest.raises(ValueError, match="cond"):
        uncond.predict_noise(torch.randn(1, 3, 8, 8), 1, ["a red circle"])
    with pytest.raises(ValueError, match="2 prompts for a batch of 1"):
        cond.predict_noise(torch.randn(1, 3, 8, 8), 1, PROMPTS)
    with pytest.raises(ValueError, match=r"x_t must be \(B, 3, 8, 8\)"):
        uncond.predict_noise(torch.randn(1, 3, 16, 16), 1)


def test_pixel_folder_round_trip_through_the_loader(tmp_path, cond):
    files = cond.save(tmp_path / "t2i")
    assert {f.relative_to(tmp_path / "t2i").as_posix() for f in files} == {
        "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "scheduler/scheduler_config.json",
        "text_encoder/config.json", "text_encoder/model.safetensors"}
    again = load_model(f"diffusers:{tmp_path / 't2i'}", family="diffusion")
    noise = torch.randn(2, 3, 8, 8, generator=_gen(6))
    assert torch.equal(cond.sample(noise, PROMPTS, steps=3, guidance=2.0),
                       again.sample(noise, PROMPTS, steps=3, guidance=2.0))


def test_pipeline_folder_saves_and_reloads_bit_identically(tmp_path):
    from mmsec.models.diffusers_adapter import DiffusersLatentPipeline

    pipe = tiny_pipeline(tmp_path / "sd")
    made = DiffusersLatentPipeline(pipe).eval()
    loaded = load_model(f"diffusers:{tmp_path / 'sd'}", family="diffusion")
    assert isinstance(loaded, DiffusersLatentPipeline) and missing_members(loaded, "diffusion") == []
    assert (loaded.image_size, loaded.channels, loaded.pixel_size) == (8, 4, 16)
    a = made.sample(2, PROMPTS, steps=3, guidance=2.0, generator=_gen(0))
    b = loaded.sample(2, PROMPTS, steps=3, guidance=2.0, generator=_gen(0))
    assert a.shape == (2, 3, 16, 16) and torch.equal(a, b)
    assert loaded.predict_noise(torch.randn(2, 4, 8, 8), 10, PROMPTS).shape == (2, 4, 8, 8)
    assert loaded.encode_images(torch.rand(1, 3, 16, 16)).shape == (1, 4, 8, 8)


def test_loader_refuses_pickles_and_names_what_is_missing(tmp_path, uncond):
    folder = tmp_path / "ddpm"
    uncond.save(folder)
    assert torch.equal(load_model(f"diffusers:{folder}").unet.conv_in.weight, uncond.unet.conv_in.weight)
    (folder / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x04K\x01.")
    with pytest.raises(CheckpointError, match=r"unet/diffusion_pytorch_model.bin is a pickle-based file"):
        load_model(f"diffusers:{folder}")
    (folder / "unet" / "diffusion_pytorch_model.bin").unlink()
    (folder / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="weights diffusion_pytorch_model.safetensors are missing"):
        load_model(f"diffusers:{folder}")
    shutil.rmtree(folder / "scheduler")
    with pytest.raises(CheckpointError, match="scheduler/ sub-folder is missing"):
        load_model(f"diffusers:{folder}")
    with pytest.raises(CheckpointError, match="not found"):
        load_model(f"diffusers:{tmp_path / 'nowhere'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="is not a diffusers model folder"):
        load_model(f"diffusers:{tmp_path / 'empty'}")
    with pytest.raises(TypeError, match="'diffusion'"):
        load_model(f"diffusers:{tmp_path / 'empty'}", family="contrastive")


def test_card_hashes_are_checked(tmp_path, uncond):
    from mmsec.models.checkpoint import sha256_file
    from mmsec.models.diffusers_adapter import load_diffusers

    folder = tmp_path / "m"
    files = uncond.save(folder)
    sha = {f.relative_to(folder).as_posix(): sha256_file(f) for f in files}
    load_diffusers(folder, sha)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(config.read_text().replace('"trailing"', '"leading"'))
    with pytest.raises(CheckpointError, match="sha256 mismatch for .*scheduler_config.json"):
        load_diffusers(folder, sha)
    (folder / "extra.safetensors").write_bytes(b"")
    with pytest.raises(CheckpointError, match="extra.safetensors is not listed"):
        load_diffusers(folder, sha)


@pytest.fixture(scope="module")
def vmodel():
    """The tiny unconditional UNet read as a v-prediction model (its scheduler says so)."""
    import diffusers

    from mmsec.models.diffusers_adapter import DiffusersUNet

    model = tiny_unconditional()
    config = {k: v for k, v in dict(model.scheduler.config).items() if k != "_use_default_values"}
    scheduler = diffusers.DDPMScheduler.from_config({**config, "prediction_type": "v_prediction"})
    return DiffusersUNet(model.unet, scheduler).eval()


def test_v_prediction_model_gives_the_noise_and_trains_on_the_velocity(vmodel):
    from mmsec.train.diffusion import DiffusionBatch, noise_prediction_loss

    assert vmodel.prediction_type == "v_prediction"
    x0 = torch.rand(4, 3, 8, 8, generator=_gen(1)) * 2 - 1
    noise = torch.randn(4, 3, 8, 8, generator=_gen(2))
    t = torch.tensor([0, 250, 700, 999])
    x_t = vmodel.scheduler.add_noise(x0, noise, t)
    abar = vmodel.scheduler.alphas_cumprod[t].view(-1, 1, 1, 1)
    v = vmodel.unet(x_t, t).sample
    with torch.no_grad():
        assert torch.allclose(vmodel.predict_output(x_t, t), v)
        assert torch.allclose(vmodel.predict_noise(x_t, t), abar.sqrt() * v + (1 - abar).sqrt() * x_t, atol=1e-6)
    target = vmodel.training_target(x0, noise, t)
    assert torch.allclose(target, vmodel.scheduler.get_velocity(x0, noise, t), atol=1e-6)
    # x_0 is recovered from (x_t, v) exactly, even at t = 999 where sqrt(abar) is ~5e-5
    assert torch.allclose(abar.sqrt() * x_t - (1 - abar).sqrt() * target, x0, atol=1e-5)
    # the training loss regresses the velocity (not the noise) for a v-model
    pixels = torch.rand(4, 3, 8, 8, generator=_gen(3))
    loss = noise_prediction_loss(vmodel, DiffusionBatch(pixels), _gen(4))
    g = _gen(4)
    x0 = vmodel.encode_images(pixels)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, 1000, (4,), generator=g)
    x_t = vmodel.scheduler.add_noise(x0, noise, t)
    want = torch.nn.functional.mse_loss(vmodel.unet(x_t, t).sample, vmodel.scheduler.get_velocity(x0, noise, t))
    assert torch.allclose(loss, want)


def test_v_prediction_sampling_steps_on_the_velocity(vmodel):
    """sample() steps a v-model on its native output; a loop stepping an epsilon scheduler on predict_noise
    (what attack samplers do) lands on the same images wherever sqrt(abar_t) is not ~0."""
    from mmsec.models.diffusers_adapter import sampler_scheduler

    noise = torch.randn(3, 3, 8, 8, generator=_gen(6))
    config = {k: v for k, v in dict(vmodel.scheduler.config).items() if k != "_use_default_values"}
    config["timestep_spacing"] = "leading"  # the first step at t = 750, not 999
    model = type(vmodel)(vmodel.unet, type(vmodel.scheduler).from_config(config)).eval()
    native = model.sample(noise, steps=4)
    sched = sampler_scheduler(model.scheduler.config, "ddim", 4, prediction_type="epsilon")
    x = noise
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(model.predict_noise(x, int(t)), t, x).prev_sample
    assert (native - model.decode(x)).abs().max() < 1e-4
    # feeding the velocity to an epsilon scheduler (the wrong parameterisation) gives other images
    wrong = sampler_scheduler(model.scheduler.config, "ddim", 4, prediction_type="epsilon")
    x = noise
    with torch.no_grad():
        for t in wrong.timesteps:
            x = wrong.step(model.predict_output(x, int(t)), t, x).prev_sample
    assert (native - model.decode(x)).abs().max() > 0.05
