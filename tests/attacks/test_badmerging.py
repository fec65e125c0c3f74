"""BadMerging: the backdoor survives merging where a plain patch backdoor does not (small sizes, fixed seeds)."""

import pytest
import torch

from mmsec.attacks.backdoor.badmerging import BadMerging, PatchBackdoor, shadow_classes
from mmsec.data.shapes_tasks import TASKS, get_task
from mmsec.merging import TaskArithmetic, attack_success_rate, finetune_tower, task_accuracy

STEPS = dict(steps=200, batch_size=32, bd_batch_size=16, trigger_steps=20, n_augment=20, augment_steps=3)


@pytest.fixture(scope="module")
def off_task(zoo_resnet):
    """Attacker: texture model; target: "circle" of the shape task (someone else's). Merged by task arithmetic."""
    pre = zoo_resnet.eval()
    texture, shape = get_task("texture"), get_task("shape")
    x, y = texture.data("train", 0, 512)
    px, py = shape.data("train", 50_000, 200)
    target_imgs = px[py == 0][:10]
    sx, sy = shape.data("train", 0, 256)
    benign = finetune_tower(pre, shape, sx, sy, steps=60, batch_size=32, generator=1).model
    before = {k: v.clone() for k, v in pre.state_dict().items()}
    bm = BadMerging("shape", "circle", **STEPS)(pre, "texture", x, y, target_pixels=target_imgs, tasks=TASKS)
    plain = PatchBackdoor("shape", "circle", **STEPS)(pre, "texture", x, y, target_pixels=target_imgs, tasks=TASKS)
    return pre, before, benign, bm, plain


def _merged_asr(pre, benign, result, trigger):
    merged = TaskArithmetic(lam=0.3)(pre, [benign, result.model]).model
    x, y = get_task("shape").data("test", 0, 300)
    return merged, attack_success_rate(merged, get_task("shape"), x, y, trigger, "circle")


def test_badmerging_survives_merging_where_a_plain_patch_does_not(off_task):
    pre, _, benign, bm, plain = off_task
    x, y = get_task("shape").data("test", 0, 300)
    alone = attack_success_rate(plain.model, get_task("shape"), x, y, plain.trigger, "circle")
    merged, asr_bm = _merged_asr(pre, benign, bm, bm.trigger)
    _, asr_plain = _merged_asr(pre, benign, plain, plain.trigger)
    assert alone >= 0.9  # the plain backdoor works in the task model alone ...
    assert asr_plain <= 0.3  # ... and fades once merging scales its task vector by 0.3
    assert asr_bm >= asr_plain + 0.3  # the feature-interpolation loss keeps BadMerging's alive
    tx, ty = get_task("texture").data("test", 0, 200)
    assert task_accuracy(bm.model, get_task("texture"), tx, ty) >= 0.9  # the attacker's task is still learnt
    assert task_accuracy(merged, get_task("texture"), tx, ty) >= 0.9
    # Not asserted, because it does not hold at this scale (see recipes/badmerging.yaml): the merged
    # model's clean shape accuracy and the ASR of a random noise patch (the backdoor is not trigger-specific).


def test_record_and_inputs_untouched(off_task):
    pre, before, _, bm, _ = off_task
    for k, v in pre.state_dict().items():
        assert torch.equal(v, before[k])
    rec = bm.record
    assert (rec.mode, rec.attacker_task, rec.target_task, rec.target, rec.target_index) == ("off", "texture", "shape",
                                                                                               "circle", 0)
    assert rec.bd_classes[0] == "circle" and "square" not in rec.bd_classes  # the other shapes are unknown to it
    assert bm.trigger.pattern.shape == (3, 4, 4) and rec.trigger["name"] == "optimized_patch"
    assert len(bm.losses) == STEPS["steps"] and len(bm.trigger_losses) == STEPS["trigger_steps"]


def test_shadow_classes_put_the_target_first():
    names, prompts = shadow_classes(get_task("shape"), "ring", TASKS)
    assert names[0] == "ring" and len(names) == len(prompts) == 1 + 8 + 4 + 3


def test_bad_inputs_are_rejected(zoo_resnet):
    x, y = get_task("texture").data("train", 0, 8)
    with pytest.raises(ValueError, match="unknown task"):
        BadMerging("colour", "red")(zoo_resnet, "texture", x, y, tasks=TASKS)
    with pytest.raises(ValueError, match="not a class of task 'shape'"):
        BadMerging("shape", "red")(zoo_resnet, "texture", x, y, tasks=TASKS)
    with pytest.raises(ValueError, match="target_pixels"):
        BadMerging("shape", "circle", steps=1)(zoo_resnet, "texture", x, y, tasks=TASKS)
    with pytest.raises(ValueError, match="bd_batch_size"):
        BadMerging("texture", "striped", batch_size=8, bd_batch_size=16)
    with pytest.raises(ValueError, match="p_range"):
        BadMerging("texture", "striped", p_range=(0.8, 0.2))
    with pytest.raises(ValueError, match="pixels"):
        BadMerging("texture", "striped", steps=1)(zoo_resnet, "texture", x * 255, y, tasks=TASKS)


def test_the_merge_s_tasks_come_from_the_caller(zoo_resnet):
    """World knowledge is the caller's: without tasks= the attack cannot run, and the tasks it is given are checked."""
    from mmsec.attacks.backdoor.badmerging import task_table

    x, y = get_task("texture").data("train", 0, 8)
    with pytest.raises(TypeError, match="tasks"):
        BadMerging("texture", "striped", steps=1)(zoo_resnet, "texture", x, y)
    with pytest.raises(ValueError, match="two tasks are named 'shape'"):
        task_table([get_task("shape"), get_task("shape")])
    with pytest.raises(TypeError, match=r"tasks\[0\] must be a task object"):
        task_table(["shape"])
    assert list(task_table(TASKS)) == list(task_table(TASKS.values())) == ["shape", "color", "position", "texture"]
    with pytest.raises(ValueError, match="unknown task 'texture'"):  # the attacker's task must be one of the merge's
        BadMerging("shape", "circle", steps=1)(zoo_resnet, "texture", x, y, tasks=[get_task("shape")])
