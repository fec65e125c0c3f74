"""Backdoor evaluation: the ASR definitions checked on an oracle backdoor, targeted success, named errors.

The oracle wraps the shipped ``shapes-clip-resnet``: an image carrying the exact 4 x 4 checkerboard
in its bottom-right corner is embedded as a fixed training image of the target class; every other
image as the zoo embeds it. So the triggered images *are* target-class images to every head.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmsec.attacks.backdoor import PatchTrigger
from mmsec.data.shapes import ShapesWorld
from mmsec.evaluation.backdoor import (
    BackdoorScore,
    backdoor_report,
    probe_asr,
    retrieval_asr,
    targeted_success,
    zeroshot_asr,
)

TARGET = 0  # "red circle"


class OracleBackdoor(nn.Module):
    def __init__(self, model: nn.Module, reference: torch.Tensor):
        super().__init__()
        self.model = model
        self.image_size, self.logit_scale = model.image_size, model.logit_scale
        self.tokenize, self.normalize, self.encode_text = model.tokenize, model.normalize, model.encode_text
        self.patch = PatchTrigger().make_patch(4, 4)
        with torch.no_grad():
            self.reference = model.encode_image(reference[None])[0]

    def encode_image(self, pixels: torch.Tensor) -> torch.Tensor:
        emb = self.model.encode_image(pixels)
        hit = (pixels[:, :, -4:, -4:] == self.patch).flatten(1).all(1)  # (B,)
        return torch.where(hit[:, None], self.reference.expand_as(emb), emb)


@pytest.fixture(scope="module")
def data():
    world = ShapesWorld(32)
    train = world.batch("train", 0, 600)
    test = world.batch("test", 0, 300)
    reference = train.pixels()[int((train.labels == TARGET).nonzero()[0])]
    return train, test, reference


@pytest.fixture(scope="module")
def oracle(zoo_resnet, data):
    return OracleBackdoor(zoo_resnet, data[2])


def test_oracle_backdoor_succeeds_on_every_head_and_a_noise_patch_does_not(oracle, data):
    train, test, _ = data
    hit = backdoor_report(oracle, train, test, PatchTrigger(), TARGET)
    miss = backdoor_report(oracle, train, test, PatchTrigger(pattern="noise", seed=3), TARGET)
    n = int((test.labels != TARGET).sum())
    for task in ("zeroshot", "linear_probe", "retrieval_i2t"):
        assert isinstance(hit[task], BackdoorScore) and hit[task].n == n
        assert hit[task].asr >= 0.99 and miss[task].asr <= 0.01
        assert hit[task].clean_target_rate <= 0.01 and hit[task].clean_accuracy >= 0.85  # probe: 12 images a class
        assert hit[task].clean_accuracy == miss[task].clean_accuracy  # clean scores ignore the trigger
    assert hit["retrieval_t2i"].clean_target_rate is None and 0 <= hit["retrieval_t2i"].asr <= 1
    assert miss["retrieval_t2i"].asr == 0.0
    assert hit["zeroshot"].to_dict()["task"] == "zeroshot"


def test_the_clean_zoo_has_no_backdoor(zoo_resnet, data):
    _, test, _ = data
    score = zeroshot_asr(zoo_resnet, test.pixels(), test.labels, PatchTrigger(), TARGET)
    assert score.asr <= 0.01 and score.clean_accuracy >= 0.99


def test_targeted_success_reads_the_zero_shot_prediction(zoo_resnet, data):
    _, test, _ = data
    x, y = test.pixels()[5], int(test.labels[5])
    right = targeted_success(zoo_resnet, x, y)
    assert right.success and right.target_rank == 0 and right.predicted == y
    wrong = targeted_success(zoo_resnet, x, (y + 1) % 48)
    assert not wrong.success and wrong.target_rank > 0 and wrong.predicted == y


def test_errors_name_the_bad_input(zoo_resnet, data):
    train, test, _ = data
    px, labels = test.pixels(), test.labels
    with pytest.raises(TypeError, match="trigger must be"):
        zeroshot_asr(zoo_resnet, px, labels, "patch", TARGET)
    with pytest.raises(ValueError, match="labels must be"):
        zeroshot_asr(zoo_resnet, px, labels[:5], PatchTrigger(), TARGET)
    with pytest.raises(ValueError, match="target_label"):
        zeroshot_asr(zoo_resnet, px, labels, PatchTrigger(), -2)
    with pytest.raises(ValueError, match="out of range"):
        zeroshot_asr(zoo_resnet, px, labels, PatchTrigger(), 48)
    with pytest.raises(ValueError, match="every test image is of the target"):
        zeroshot_asr(zoo_resnet, px[:3], torch.zeros(3, dtype=torch.long), PatchTrigger(), TARGET)
    with pytest.raises(ValueError, match="never contain the target"):
        no_target = train.labels != TARGET
        probe_asr(zoo_resnet, train.pixels()[no_target], train.labels[no_target], px, labels, PatchTrigger(), TARGET)
    with pytest.raises(ValueError, match="no caption of the target"):
        retrieval_asr(zoo_resnet, px, labels, ["a blue square"], torch.tensor([3]), PatchTrigger(), TARGET)
    with pytest.raises(ValueError, match="two classes"):
        retrieval_asr(zoo_resnet, px, labels, ["a red circle", "a red circle"], torch.tensor([0, 1]),
                      PatchTrigger(), TARGET)
    with pytest.raises(ValueError, match="unknown tasks"):
        backdoor_report(zoo_resnet, train, test, PatchTrigger(), TARGET, tasks=("zero-shot",))
    with pytest.raises(TypeError, match="ContrastiveModel"):
        zeroshot_asr(nn.Linear(2, 2), px, labels, PatchTrigger(), TARGET)
