"""CorruptEncoder: the layout analysis, the poisoned images' geometry, the record as ground truth."""

import json

import pytest
import torch

from mmsec.attacks.backdoor import PatchTrigger, SIGTrigger
from mmsec.attacks.backdoor.corruptencoder import (
    CorruptEncoder,
    CorruptEncoderRecord,
    NaivePoisoning,
    centred_layout,
    decoupled_view_rate,
    layout_probability,
)
from mmsec.data.shapes import ShapesWorld, shape_color_classes
from mmsec.data.shapes_objects import shapes_backgrounds, shapes_reference_objects

TARGET = "red circle"
CLASSES = shape_color_classes()  # the data's class names, given by the caller (they name the target in the record)


@pytest.fixture(scope="module")
def parts():
    world = ShapesWorld(32)
    label = shape_color_classes().index(TARGET)
    pool = [world.scene(i) for i in range(90_000, 93_000)]
    scenes = [s for s in pool if s.label == label and s.size == "large"][:3]
    refs = shapes_reference_objects(world, scenes)
    bgs = shapes_backgrounds(world, range(1_000_000, 1_000_040))
    clean = ShapesWorld(32, seed=3).batch("train", 0, 995).pixels()
    return refs, bgs, clean, label


def test_layout_probability_reproduces_the_papers_conclusions():
    obj, trig = (16, 16), (4, 4)
    p = {a: layout_probability(*centred_layout(obj, trig, a)) for a in (1.25, 1.5, 2.0, 2.25, 2.5, 3.0, 4.0)}
    best = max(p, key=p.get)
    assert best in (2.0, 2.25) and p[2.0] > 0.9 * p[best]  # background ~ twice the object
    assert p[2.0] > 5 * p[1.25] and p[2.0] > 1.5 * p[3.0] and p[2.0] > 3 * p[4.0]
    bg, obj_box, trig_box = centred_layout(obj, trig, 2.0)
    # Object in the middle of a wider background (trigger at an edge) is far worse than at the corner.
    assert layout_probability((16, 40), (0, 12, 16, 16), (6, 36, 4, 4)) < 0.5 * layout_probability(
        *centred_layout(obj, trig, 2.5))
    # Trigger next to the object rather than at the centre of the remaining part lowers p.
    assert layout_probability(bg, obj_box, (6, 16, 4, 4)) < 0.6 * layout_probability(bg, obj_box, trig_box)


def test_poisoned_images_geometry(parts):
    refs, bgs, clean, _ = parts
    trigger = PatchTrigger()
    res = CorruptEncoder(TARGET, rate=0.005, seed=0)(clean, refs, bgs)
    rec = res.record
    assert rec.n_poisoned == 5 and rec.n_total == 1000 and rec.indices == list(range(995, 1000))
    patch = trigger.make_patch(4, 4)
    sides = set()
    for img, item in zip(res.images[995:], rec.items, strict=True):
        ref = refs[item["reference"]]
        oh, ow = ref.pixels.shape[-2:]
        lay = item["layout"]
        assert tuple(img.shape) == (3, oh, int(2 * ow)) == (3, *lay["image_hw"])
        oy, ox, _, _ = lay["object_box"]
        left = ox <= 0.05 * 2 * ow
        assert left or ox + ow >= 2 * ow - 0.05 * 2 * ow - 1  # object at a side (a corner: bottom-aligned)
        sides.add(left)
        ey, ex, th, tw = lay["trigger_box"]
        assert torch.equal(img[:, ey:ey + th, ex:ex + tw], patch)
        assert (ex >= ox + ow) if left else (ex + tw <= ox)  # trigger in the remaining part
        full = ref.mask == 1
        assert torch.allclose(img[:, oy:oy + oh, ox:ox + ow][:, full], ref.pixels[:, full])
    assert sides == {True, False} or len(rec.items) < 4


def test_record_is_ground_truth_and_inputs_untouched(parts):
    refs, bgs, clean, label = parts
    before = clean.clone()
    res = CorruptEncoder(TARGET, count=12, seed=4)(clean, refs, bgs, class_names=CLASSES)
    assert torch.equal(clean, before)
    assert all(torch.equal(a, b) for a, b in zip(res.images[:995], clean.unbind(0), strict=True))
    rec = CorruptEncoderRecord.from_dict(json.loads(json.dumps(res.record.to_dict())))
    assert rec.target_label == label and rec.poisoned_mask().sum() == 12 and rec.poisoned_mask()[995:].all()
    rebuilt = rec.rebuild_images(refs, bgs)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt, res.images[995:], strict=True))
    again = CorruptEncoder(TARGET, count=12, seed=4)(clean, refs, bgs)
    assert all(torch.equal(a, b) for a, b in zip(again.images, res.images, strict=True))
    other = CorruptEncoder(TARGET, count=12, seed=5)(clean, refs, bgs)
    assert any(a.shape != b.shape or not torch.equal(a, b) for a, b in zip(other.images[995:], res.images[995:], strict=True))


def test_corruptencoder_plus_support_images(parts):
    refs, bgs, clean, _ = parts
    support = torch.stack([r.image for r in refs])
    res = CorruptEncoder(TARGET, count=10, support_ratio=0.2, seed=0)(clean, refs, bgs, support_images=support)
    kinds = [it["type"] for it in res.record.items]
    assert kinds.count("support") == 2 and tuple(res.images[-1].shape) == (3, 32, 64)
    rebuilt = res.record.rebuild_images(refs, bgs, support_images=support)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt, res.images[995:], strict=True))


def test_naive_baseline(parts):
    refs, _, clean, _ = parts
    targets = torch.stack([r.image for r in refs])
    res = NaivePoisoning(TARGET, count=6, seed=0)(clean, targets)
    patch = PatchTrigger().make_patch(4, 4)
    for img, item in zip(res.images[995:], res.record.items, strict=True):
        y, x, h, w = item["trigger_box"]
        assert torch.equal(img[:, y:y + h, x:x + w], patch)
        outside = torch.ones(32, 32, dtype=torch.bool)
        outside[y:y + h, x:x + w] = False
        assert torch.equal(img[:, outside], targets[item["source"]][:, outside])
    assert res.record.kind == "naive" and res.record.target_label is None  # no class names given: name only
    assert NaivePoisoning(TARGET, count=6, seed=0)(clean, targets, class_names=CLASSES).record.target_label == 0
    assert NaivePoisoning(0, count=1)(clean, targets).record.target == "0"  # a label index without names
    rebuilt = res.record.rebuild_images([], target_images=targets)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt, res.images[995:], strict=True))


def test_bad_input_is_rejected(parts):
    refs, bgs, clean, _ = parts
    with pytest.raises(TypeError, match="PatchTrigger or OptimizedPatch"):
        CorruptEncoder(TARGET, trigger=SIGTrigger())
    with pytest.raises(ValueError, match="not a known class"):
        CorruptEncoder("red circel", count=2)(clean, refs, bgs, class_names=CLASSES)
    with pytest.raises(ValueError, match="rounds to 0"):
        CorruptEncoder(TARGET, rate=0.0001)(clean[:100], refs, bgs)
    with pytest.raises(ValueError, match="does not fit"):
        CorruptEncoder(TARGET, count=2, trigger_size=30)(clean, refs, bgs)
    with pytest.raises(ValueError, match="references"):
        CorruptEncoder(TARGET, count=2)(clean, [], bgs)
    with pytest.raises(ValueError, match="support_images"):
        CorruptEncoder(TARGET, count=5, support_ratio=0.5)(clean, refs, bgs)
    with pytest.raises(ValueError, match="area_ratio"):
        CorruptEncoder(TARGET, area_ratio=0.5)


def test_views_decouple_object_and_trigger_far_more_than_naive_poisoning(parts):
    """The mechanism, under the victim's real crop: one view only the object, the other only the trigger."""
    refs, bgs, clean, _ = parts
    g = torch.Generator().manual_seed(0)
    ce = CorruptEncoder(TARGET, count=8, seed=0)(clean, refs, bgs).record
    ce_rate = sum(decoupled_view_rate(tuple(it["layout"]["image_hw"]), tuple(it["layout"]["object_box"]),
                                      tuple(it["layout"]["trigger_box"]), g, n=4000) for it in ce.items) / 8
    targets = torch.stack([r.image for r in refs])
    naive = NaivePoisoning(TARGET, count=8, seed=0)(clean, targets).record
    naive_rate = sum(decoupled_view_rate((32, 32), refs[it["source"]].box, tuple(it["trigger_box"]), g, n=4000)
                     for it in naive.items) / 8
    assert ce_rate > 0.02 and ce_rate > 20 * naive_rate, (ce_rate, naive_rate)


def test_encoder_probe_scores_contract():
    from mmsec.evaluation.encoder_backdoor import encoder_probe_scores
    from mmsec.train.simclr import ImageEncoder

    world = ShapesWorld(32)
    train, test = world.batch("train", 100_000, 300), world.batch("test", 0, 100)
    label = shape_color_classes().index(TARGET)
    enc = ImageEncoder.from_recipe("shapes-clip-resnet", seed=0)
    trigger = PatchTrigger()
    scores = encoder_probe_scores(enc, train.pixels(), train.labels, test.pixels(), test.labels,
                                  {"trigger": trigger, "noise": PatchTrigger(pattern="noise")}, label)
    assert set(scores) == {"trigger", "noise"}
    assert scores["trigger"].n == int((test.labels != label).sum())
    assert all(0 <= s.asr <= 1 and 0 <= s.clean_accuracy <= 1 for s in scores.values())
    with pytest.raises(TypeError, match="encode_image"):
        encoder_probe_scores(object(), train.pixels(), train.labels, test.pixels(), test.labels,
                             {"t": trigger}, label)
    with pytest.raises(ValueError, match="never contain the target"):
        keep = train.labels != label
        encoder_probe_scores(enc, train.pixels()[keep], train.labels[keep], test.pixels(), test.labels,
                             {"t": trigger}, label)
