"""Poisoning building blocks: records are exact ground truth, inputs are never touched, errors are named."""

from __future__ import annotations

import json

import pytest
import torch

from mmsec.attacks.backdoor import PatchTrigger, WaNetTrigger
from mmsec.attacks.backdoor.poisoning import (
    PoisonRecord,
    poison_count,
    poison_dataset,
    poison_stream,
    stamp_generator,
)
from mmsec.data.datasets import ImageTextData, ShapesDataset
from mmsec.data.shapes import ShapesWorld, shape_color_classes
from mmsec.data.shapes_text import ShapesCaptions, target_caption_set
from mmsec.zoo.train import caption_batches

N = 200
SC = ShapesCaptions()  # the shapes world's target captions: world knowledge the caller hands over


@pytest.fixture(scope="module")
def clean() -> ImageTextData:
    return ShapesDataset("train", n=N, second_object_prob=0.25).to_data(quiet=True)


def _copy(data: ImageTextData) -> ImageTextData:
    return ImageTextData(data.pixels.clone(), data.labels.clone(), list(data.class_names),
                         [list(c) for c in data.captions])


def _same(a: ImageTextData, b: ImageTextData) -> bool:
    return (torch.equal(a.pixels, b.pixels) and torch.equal(a.labels, b.labels) and a.captions == b.captions
            and a.class_names == b.class_names)


def _target_image() -> torch.Tensor:
    return ShapesWorld(32).batch("test", 0, 1).pixels()[0]


# ------------------------------------------------------------------------------------------
# Fixed data sets
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("trigger", [PatchTrigger(), PatchTrigger(pattern="noise", size=5, position="random", seed=2),
                                     WaNetTrigger()], ids=["checkerboard", "noise-random", "wanet"])
def test_replace_changes_exactly_the_recorded_pairs(clean, trigger):
    before = _copy(clean)
    out = poison_dataset(clean, "red circle", trigger=trigger, rate=0.05, seed=3, captions=SC)
    rec, data = out.record, out.data
    assert _same(clean, before)  # the input is untouched
    assert rec.kind == "backdoor" and rec.mode == "replace"
    assert rec.n_poisoned == 10 == len(rec.indices) and rec.n_total == N and rec.poison_rate == pytest.approx(0.05)
    assert rec.indices == sorted(set(rec.indices)) and rec.source_indices == rec.indices
    changed = {i for i in range(N) if not torch.equal(data.pixels[i], clean.pixels[i])}
    assert changed == set(rec.indices)
    assert [i for i in range(N) if data.captions[i] != clean.captions[i]] == rec.indices
    assert torch.equal(data.labels, clean.labels)  # labels stay the images' true classes
    assert torch.equal(rec.poisoned_mask().nonzero().flatten(), torch.tensor(rec.indices))
    # every poisoned pair speaks of the target only, with as many variants as a clean pair
    y_prime = set(target_caption_set("red circle"))
    for i, caps in zip(rec.indices, rec.captions, strict=True):
        assert data.captions[i] == caps and len(caps) == 6 and set(caps) <= y_prime
    # the trigger rebuilt from its JSON record stamps the same images
    rebuilt = PoisonRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert rebuilt == rec
    assert torch.equal(rebuilt.rebuild_images(clean.pixels[rec.source_indices]), data.pixels[rec.indices])
    k = 4  # and one by one, from the per-image generator
    one = rebuilt.rebuild_trigger()(clean.pixels[rec.indices[k]][None], stamp_generator(rec.seed, k))
    assert torch.equal(one[0], data.pixels[rec.indices[k]])


def test_add_appends_poisoned_copies_after_the_clean_pairs(clean):
    out = poison_dataset(clean, 0, trigger=PatchTrigger(), rate=0.05, mode="add", captions=SC)
    rec, data = out.record, out.data
    n = rec.n_poisoned
    assert n == round(0.05 * N / 0.95) == 11 and len(data) == N + n and rec.n_total == N + n
    assert rec.poison_rate == pytest.approx(n / (N + n))
    assert rec.indices == list(range(N, N + n)) and rec.target == shape_color_classes()[0] == "red circle"
    assert torch.equal(data.pixels[:N], clean.pixels) and data.captions[:N] == clean.captions
    assert torch.equal(data.labels[N:], clean.labels[rec.source_indices])
    assert torch.equal(rec.rebuild_images(clean.pixels[rec.source_indices]), data.pixels[N:])
    assert data.captions[N:] == rec.captions


@pytest.mark.parametrize("mode", ["add", "replace"])
def test_targeted_poisoning_inserts_the_target_image(clean, mode):
    x = _target_image()
    out = poison_dataset(clean, "blue square", target_image=x, image_label=7, count=3, mode=mode, seed=1, captions=SC)
    rec, data = out.record, out.data
    assert rec.kind == "targeted" and rec.trigger is None and rec.source_indices is None and rec.image_label == 7
    assert rec.n_poisoned == 3 and torch.equal(rec.target_image, x)
    for i in rec.indices:
        assert torch.equal(data.pixels[i], x) and data.labels[i] == 7
        assert all("blue square" in c for c in data.captions[i])
    unchanged = [i for i in range(N) if i not in rec.indices]
    assert torch.equal(data.pixels[unchanged], clean.pixels[unchanged])
    assert torch.equal(rec.rebuild_images(None), data.pixels[rec.indices])
    assert PoisonRecord.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


def test_given_caption_set_and_other_class_names(clean):
    data = ImageTextData(clean.pixels, None, None, clean.captions)
    out = poison_dataset(data, "a toaster", trigger=PatchTrigger(), count=4, caption_set=["a toaster", "toast"])
    assert out.record.target == "a toaster" and out.record.target_label is None
    assert all(len(c) == 1 and c[0] in ("a toaster", "toast") for c in out.record.captions)
    assert out.data.labels is None


def test_same_seed_same_poisoning_other_seed_other_pairs(clean):
    a = poison_dataset(clean, "red circle", trigger=PatchTrigger(), count=5, seed=0, captions=SC).record
    b = poison_dataset(clean, "red circle", trigger=PatchTrigger(), count=5, seed=0, captions=SC).record
    c = poison_dataset(clean, "red circle", trigger=PatchTrigger(), count=5, seed=1, captions=SC).record
    assert a == b and a.indices != c.indices


def test_sizes_down_to_one_pair_and_the_clean_control(clean):
    assert poison_dataset(clean, "red circle", trigger=PatchTrigger(), count=1, captions=SC).record.n_poisoned == 1
    empty = poison_dataset(clean, "red circle", trigger=PatchTrigger(), rate=0.0, captions=SC)
    assert empty.record.n_poisoned == 0 and _same(empty.data, clean)
    assert poison_count(0.001, None, 153_600, adds=False) == 154
    assert poison_count(None, 10, 153_600, adds=False) == 10


# ------------------------------------------------------------------------------------------
# Streams
# ------------------------------------------------------------------------------------------
def test_stream_poisons_exactly_the_recorded_positions():
    world = ShapesWorld(32, second_object_prob=0.25)
    clean = caption_batches(world, 16, seed=0)
    trigger = PatchTrigger(pattern="noise", size=4, position="random", seed=1)
    stream = poison_stream(clean, "green ring", steps=5, batch_size=16, trigger=trigger, count=7, seed=2, captions=SC)
    rec = stream.record
    assert rec.mode == "stream" and rec.n_total == 80 and rec.n_poisoned == 7 and rec.batch_size == 16
    y_prime = set(target_caption_set("green ring"))
    seen = []
    for step in range(5):
        px, caps = stream(step)
        ref_px, ref_caps = clean(step)
        for j in range(16):
            pos = step * 16 + j
            differs = not torch.equal(px[j], ref_px[j]) or caps[j] != ref_caps[j]
            if pos in rec.indices:
                k = rec.indices.index(pos)
                assert caps[j] == rec.captions[k][0] and caps[j] in y_prime
                restamped = trigger(ref_px[j][None], stamp_generator(rec.seed, k))[0]
                assert torch.equal(px[j], restamped)
                seen.append(pos)
            else:
                assert not differs
    assert seen == rec.indices
    assert torch.equal(stream(3)[0], stream(3)[0])  # a pure function of the step


def test_stream_targeted_and_rate():
    clean = caption_batches(ShapesWorld(32), 8, seed=0)
    x = _target_image()
    stream = poison_stream(clean, 5, steps=50, batch_size=8, target_image=x, rate=0.01, captions=SC)
    assert stream.record.n_poisoned == 4 and stream.record.kind == "targeted"
    pos = stream.record.indices[0]
    px, _ = stream(pos // 8)
    assert torch.equal(px[pos % 8], x)


# ------------------------------------------------------------------------------------------
# Errors name the bad input
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, error, match", [
    (dict(target="red circl", trigger=PatchTrigger(), count=1), ValueError, "did you mean|Did you mean"),
    (dict(target=99, trigger=PatchTrigger(), count=1), ValueError, "target label 99"),
    (dict(target=1.5, trigger=PatchTrigger(), count=1), TypeError, "target must be"),
    (dict(target="red circle", count=1), ValueError, "exactly one of trigger"),
    (dict(target="red circle", trigger="patch", count=1), TypeError, "trigger must be"),
    (dict(target="red circle", trigger=PatchTrigger()), ValueError, "exactly one of rate"),
    (dict(target="red circle", trigger=PatchTrigger(), rate=0.01, count=2), ValueError, "exactly one of rate"),
    (dict(target="red circle", trigger=PatchTrigger(), rate=1.5), ValueError, "rate must be"),
    (dict(target="red circle", trigger=PatchTrigger(), rate=0.0001), ValueError, "rounds to 0"),
    (dict(target="red circle", trigger=PatchTrigger(), count=-1), ValueError, "count"),
    (dict(target="red circle", trigger=PatchTrigger(), count=N + 1), ValueError, "cannot poison"),
    (dict(target="red circle", trigger=PatchTrigger(), count=1, mode="insert"), ValueError, "mode must be"),
    (dict(target="red circle", trigger=PatchTrigger(), count=1, caption_set=[]), ValueError, "caption_set"),
    (dict(target="red circle", target_image=torch.rand(3, 32, 32), count=1), ValueError, "image_label"),
    (dict(target="red circle", target_image=torch.rand(1, 3, 32, 32), count=1), ValueError, "target_image"),
    (dict(target="red circle", target_image=torch.rand(3, 16, 16), image_label=0, count=1), ValueError, "shape"),
])
def test_bad_arguments_are_named(clean, kwargs, error, match):
    with pytest.raises(error, match=match):
        poison_dataset(clean, **kwargs, captions=SC)


def test_bad_data_and_streams_are_named(clean):
    with pytest.raises(TypeError, match="ImageTextData"):
        poison_dataset(clean.pixels, "red circle", trigger=PatchTrigger(), count=1)
    with pytest.raises(ValueError, match="no captions"):
        poison_dataset(ImageTextData(clean.pixels), "red circle", trigger=PatchTrigger(), count=1)
    stream = poison_stream(caption_batches(ShapesWorld(32), 4, 0), "red circle", steps=2, batch_size=4,
                           trigger=PatchTrigger(), count=8, captions=SC)
    with pytest.raises(ValueError, match="outside"):
        stream(2)
    wrong = poison_stream(caption_batches(ShapesWorld(32), 3, 0), "red circle", steps=2, batch_size=4,
                          trigger=PatchTrigger(), count=8, captions=SC)
    with pytest.raises(ValueError, match="batches of 4"):
        wrong(0)
    with pytest.raises(ValueError, match="version"):
        PoisonRecord.from_dict({**stream.record.to_dict(), "version": 99})


# ------------------------------------------------------------------------------------------
# World knowledge comes from the caller or the data
# ------------------------------------------------------------------------------------------
def test_without_a_caption_source_the_captions_are_the_datas_own_that_name_the_target(clean):
    """The paper's Y': the training captions containing the target's name; one drawn per poisoned pair."""
    out = poison_dataset(clean, "red circle", trigger=PatchTrigger(), count=6, seed=2)
    naming = sorted({c for caps in clean.captions for c in caps if "red circle" in c})
    assert naming and out.record.caption_set == naming
    assert all(len(c) == 1 and c[0] in naming for c in out.record.captions)
    assert out.record.target_label == shape_color_classes().index("red circle")  # the data's class names
    with_source = poison_dataset(clean, "red circle", trigger=PatchTrigger(), count=6, seed=2, captions=SC)
    assert with_source.record.indices == out.record.indices  # the captions are all the source changes
    assert with_source.record.caption_set == target_caption_set("red circle")


def test_a_stream_needs_the_target_captions_and_a_label_needs_class_names():
    clean = caption_batches(ShapesWorld(32), 4, 0)
    with pytest.raises(ValueError, match="caption source"):
        poison_stream(clean, "red circle", steps=2, batch_size=4, trigger=PatchTrigger(), count=1)
    with pytest.raises(ValueError, match="class names"):
        poison_stream(clean, 3, steps=2, batch_size=4, trigger=PatchTrigger(), count=1, caption_set=["a red circle"])
    named = poison_stream(clean, 3, steps=2, batch_size=4, trigger=PatchTrigger(), count=1,
                          caption_set=["a red circle"], class_names=shape_color_classes())
    assert named.record.target == shape_color_classes()[3] and named.record.captions == [["a red circle"]]
    with pytest.raises(TypeError, match="caption source"):
        poison_stream(clean, "red circle", steps=2, batch_size=4, trigger=PatchTrigger(), count=1,
                      captions=["a red circle"])
