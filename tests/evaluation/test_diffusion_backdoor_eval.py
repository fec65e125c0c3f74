"""The diffusion backdoor report: samples from the same noises with and without the trigger, scored by the judge."""

from __future__ import annotations

import pytest
import torch

from mmsec.attacks.backdoor import NoiseTrigger
from mmsec.evaluation.diffusion_backdoor import diffusion_backdoor_report, sample_pair


@pytest.fixture(scope="module")
def tiny():
    import diffusers

    from mmsec.models.diffusers_adapter import DiffusersUNet

    torch.manual_seed(0)
    unet = diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(8, 16),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "DownBlock2D"),
                                 up_block_types=("UpBlock2D", "UpBlock2D"), norm_num_groups=4)
    return DiffusersUNet(unet, diffusers.DDPMScheduler(beta_schedule="squaredcos_cap_v2")).eval()


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_pairs_differ_by_the_trigger_alone(tiny, sampler):
    nothing = NoiseTrigger(torch.zeros(3, 16, 16))
    pair = sample_pair(tiny, nothing, 5, sampler, steps=3, generator=1, batch_size=2)
    assert pair.triggered.shape == pair.clean.shape == (5, 3, 16, 16)
    assert torch.equal(pair.triggered, pair.clean)  # same noises, same step noise: a zero trigger changes nothing
    shift = torch.zeros(3, 16, 16)
    shift[:, 12:, 12:] = 1.0
    moved = sample_pair(tiny, NoiseTrigger(shift), 5, sampler, steps=3, generator=1, batch_size=2)
    assert torch.equal(moved.clean, pair.clean) and not torch.equal(moved.triggered, pair.clean)
    with pytest.raises(ValueError, match="sampler must be one of"):
        sample_pair(tiny, nothing, 2, "euler")


def test_report_numbers_and_control(tiny):
    from mmsec import load_model

    judge = load_model("zoo:shapes-judge")
    target = torch.rand(3, 16, 16)
    report = diffusion_backdoor_report(tiny, NoiseTrigger(torch.zeros(3, 16, 16)), target, "cyan ring", judge,
                                       reference=tiny, n=4, steps=2, generator=0)
    values = report.values()
    assert set(values) == {"target_hit_rate", "mse_to_target_median", "mse_to_target_within", "ssim_to_target",
                           "clean_recognition_rate", "clean_target_hit_rate", "clean_recognition_rate_control",
                           "target_hit_rate_control", "mse_to_target_median_control"}
    # the reference is the same model on the same noises: its numbers are the backdoored model's
    assert values["clean_recognition_rate_control"] == values["clean_recognition_rate"]
    assert values["mse_to_target_median_control"] == values["mse_to_target_median"]
    assert report.samples.triggered.shape == (4, 3, 16, 16) and report.sampler == "ddim"


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_a_trigger_with_its_own_generative_process_generates_the_triggered_samples(tiny, sampler):
    from mmsec.attacks.backdoor.trojdiff import TrojanNoise

    identity = TrojanNoise(torch.zeros(3, 16, 16), torch.ones(3, 16, 16))  # TrojDiff's sampler reduces to the clean one
    pair = sample_pair(tiny, identity, 3, sampler, steps=3, generator=1, batch_size=2)
    assert (pair.triggered - pair.clean).abs().max() < 1e-5
    trojan = TrojanNoise(torch.full((3, 16, 16), 0.4), torch.full((3, 16, 16), 0.6))
    moved = sample_pair(tiny, trojan, 3, sampler, steps=3, generator=1, batch_size=2)
    assert torch.equal(moved.clean, pair.clean) and (moved.triggered - pair.clean).abs().max() > 0.01


def test_a_target_the_judge_lacks_leaves_its_metrics_out(tiny):
    from mmsec import load_model

    report = diffusion_backdoor_report(tiny, NoiseTrigger(torch.zeros(3, 16, 16)), torch.rand(3, 16, 16), None,
                                       load_model("zoo:shapes-judge"), reference=tiny, n=2, steps=2, generator=0)
    assert not {"target_hit_rate", "clean_target_hit_rate", "target_hit_rate_control"} & set(report.values())
    assert "clean_recognition_rate" in report.values() and report.samples.triggered.shape == (2, 3, 16, 16)
