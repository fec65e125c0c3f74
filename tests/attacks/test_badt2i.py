"""BadT2I (Zhai et al., ACM MM 2023): the losses' structure exactly, the three backdoors' effect at test size, the
contract, the effect metrics.

Structure (stand-in models that record their calls): ``L = lam * L_bd + (1 - lam) * L_reg``; the teacher sees
the same noised images as the student, the trigger-free prompts (object: the B prompt; style: the styled
prompt) and only the regularisation half for the pixel backdoor, whose backdoor target is the noise itself;
the teacher's prediction carries no graph.

Effect: a tiny random text-to-image UNet (2 levels, 8/16 channels, 65k parameters) on 8 x 8 shapes-world
images (16 px scenes average-pooled), 100 training timesteps, prompts "a {colour} {shape}", trigger "there".
A random UNet of this size barely reads its prompt (its noise prediction for "a red circle" and "a red
square" differ by MSE 7e-6), so the cross-attention output weights are scaled by 30 (the difference becomes
~7e-3): the teacher's prompt dependence is what the object and style backdoors distil, and with it the
effect is measurable at the noise-prediction level without a trained model. Batch 8 + 8.
Measured (seed 0, see the asserts): pixel, 100 steps at lr 1e-2 (~5 CPU-s): the patch region's noise error
with the trigger about half of that without it and of the clean model's with the trigger; sampled
patch-region MSE medians lower by 0.1-0.2. Object (circle -> square) and style (every colour -> red), 300
steps at lr 1e-3 (~15 CPU-s each, marked slow): the backdoored model's triggered prediction is 5x (object)
and 25x (style) closer to the teacher's prediction for the intended prompt than its own untriggered one and
40-60x closer than the clean model's triggered one, while its clean predictions stay near the teacher's.
"""

from __future__ import annotations

import copy

import diffusers
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmsec.attacks.backdoor import BadT2I, PatchTrigger
from mmsec.attacks.backdoor.badt2i import badt2i_batch_loss, patch_stamp, stamp_patch
from mmsec.attacks.backdoor.t2i_backdoor import add_trigger, replace_words
from mmsec.data.shapes import ShapesWorld
from mmsec.evaluation.t2i_backdoor import effect_hits, effect_prompts, patch_region_mse, t2i_backdoor_report
from mmsec.methods import build
from mmsec.train.diffusion import DiffusionBatch

S, T_TRAIN = 8, 100
COLOURS = ["red", "green", "blue", "yellow", "cyan", "magenta", "orange", "purple"]
SHAPES = ["circle", "square", "triangle", "diamond", "cross", "ring"]
TO_RED = {c: "red" for c in COLOURS if c != "red"}


def tiny_t2i(gain: float = 30.0):
    """A tiny random text-to-image model whose vocabulary has the shapes world's words and the trigger."""
    from mmsec.models.clip_text_states import TinyCLIPTextStates
    from mmsec.models.diffusers_adapter import DiffusersUNet
    from mmsec.models.tiny_clip import TinyCLIPConfig
    from mmsec.models.tokenizer import WordTokenizer

    torch.manual_seed(0)
    vocab = WordTokenizer.from_corpus([" ".join(["a", "there", *COLOURS, *SHAPES])]).vocab
    text = TinyCLIPTextStates(TinyCLIPConfig(vocab=vocab, text_width=16, text_layers=1, text_heads=2, context_length=8))
    unet = diffusers.UNet2DConditionModel(
        sample_size=S, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=16, attention_head_dim=8, norm_num_groups=4)
    with torch.no_grad():  # make the random model read its prompt (module docstring)
        for name, p in unet.named_parameters():
            if "attn2.to_out.0.weight" in name:
                p.mul_(gain)
    scheduler = diffusers.DDPMScheduler(num_train_timesteps=T_TRAIN, beta_schedule="squaredcos_cap_v2",
                                        timestep_spacing="trailing")
    return DiffusersUNet(unet, scheduler, text).eval()


@pytest.fixture(scope="module")
def world():
    batch = ShapesWorld(16).batch("train", 0, 256)
    return F.avg_pool2d(batch.pixels(), 2), [f"a {s.color} {s.shape}" for s in batch.scenes]


# -- structure -----------------------------------------------------------------------------------------

class _Recorder(nn.Module):
    """A stand-in model: a prediction that depends on x_t, the prompt and one weight; it records its calls."""

    def __init__(self, offset: float):
        super().__init__()
        self.unet = nn.Linear(1, 1, bias=False)
        nn.init.constant_(self.unet.weight, 0.5)
        self.scheduler = diffusers.DDPMScheduler(num_train_timesteps=T_TRAIN, beta_schedule="squaredcos_cap_v2")
        self.offset, self.calls = offset, []

    def encode_images(self, pixels):
        return pixels * 2 - 1

    def predict_noise(self, x_t, t, cond):
        self.calls.append((x_t.detach().clone(), t.clone(), list(cond)))
        code = torch.tensor([float(len(c)) for c in cond]).view(-1, 1, 1, 1)  # (B, 1, 1, 1): the prompt matters
        return x_t * self.unet.weight.sum() + 0.01 * code + self.offset


def _batch(kind: str):
    g = torch.Generator().manual_seed(1)
    reg_px, bd_px = torch.rand(3, 3, S, S, generator=g), torch.rand(3, 3, S, S, generator=g)
    prompts = ["a red square", "a blue circle", "a green square"]
    extra = {"bd_pixels": bd_px, "bd_student_prompts": add_trigger("there", prompts),
             "bd_teacher_prompts": None if kind == "pixel" else [p + " x" for p in prompts]}
    return DiffusionBatch(reg_px, prompts, extra)


@pytest.mark.parametrize("kind", ["pixel", "object"])
@pytest.mark.parametrize("lam", [0.25, 0.7])
def test_loss_is_lambda_weighted_distillation(kind, lam):
    student, teacher = _Recorder(0.0), _Recorder(0.3)
    batch, terms = _batch(kind), {"backdoor_loss": [], "reg_loss": []}
    loss = badt2i_batch_loss(teacher, kind, lam, terms)(student, batch, torch.Generator().manual_seed(5))
    # the noise and timesteps, drawn in the loss's order: backdoor half, then regularisation half
    g = torch.Generator().manual_seed(5)
    eps_bd, t_bd = torch.randn(3, 3, S, S, generator=g), torch.randint(0, T_TRAIN, (3,), generator=g)
    eps_reg, t_reg = torch.randn(3, 3, S, S, generator=g), torch.randint(0, T_TRAIN, (3,), generator=g)
    z_bd = student.scheduler.add_noise(batch.extra["bd_pixels"] * 2 - 1, eps_bd, t_bd)
    z_reg = student.scheduler.add_noise(batch.pixels * 2 - 1, eps_reg, t_reg)
    (sx, st, sp), = student.calls
    assert torch.allclose(sx, torch.cat([z_bd, z_reg])) and torch.equal(st, torch.cat([t_bd, t_reg]))
    assert sp == add_trigger("there", batch.prompts) + batch.prompts  # the student: triggered, then clean
    (tx, tt, tp), = teacher.calls
    code = lambda ps: 0.01 * torch.tensor([float(len(p)) for p in ps]).view(-1, 1, 1, 1)  # noqa: E731
    student_bd = z_bd * 0.5 + code(add_trigger("there", batch.prompts))
    if kind == "pixel":  # the teacher sees the clean half only; the backdoor target is the noise itself
        assert torch.allclose(tx, z_reg) and tp == batch.prompts
        backdoor = F.mse_loss(student_bd, eps_bd)
    else:  # the same noised images as the student, the intended (trigger-free) prompts
        assert torch.allclose(tx, sx) and tp == batch.extra["bd_teacher_prompts"] + batch.prompts
        backdoor = F.mse_loss(student_bd, z_bd * 0.5 + code(batch.extra["bd_teacher_prompts"]) + 0.3)
    reg = F.mse_loss(z_reg * 0.5 + code(batch.prompts), z_reg * 0.5 + code(batch.prompts) + 0.3)
    assert torch.allclose(loss, lam * backdoor + (1 - lam) * reg, atol=1e-6)
    assert terms["backdoor_loss"] == pytest.approx([backdoor.item()]) and terms["reg_loss"] == pytest.approx([reg.item()])
    loss.backward()  # the gradient reaches the student alone; the teacher's prediction is a constant
    assert student.unet.weight.grad is not None and teacher.unet.weight.grad is None


def test_backdoor_rows_per_target_kind(world):
    _, prompts = world
    model = tiny_t2i()
    vocab = set(model.text_encoder.tokenizer.index)
    make, rows, extras = BadT2I("object", object_pair=["circle", "square"])._backdoor_half(model, prompts, vocab)
    assert rows.numel() > 0 and all("square" in prompts[i] for i in rows.tolist())  # images of B, captioned B
    pix, student, teacher = make(torch.zeros(2, 3, S, S), ["a red square", "a blue square"])
    assert student == ["there a red circle", "there a blue circle"] and teacher == ["a red square", "a blue square"]
    assert extras == {"object_pair": ["circle", "square"]}
    make, rows, _ = BadT2I("style", style="", style_words=TO_RED)._backdoor_half(model, prompts, vocab)
    assert rows.numel() == len(prompts)
    assert make(torch.zeros(1, 3, S, S), ["a blue ring"])[1:] == (["there a blue ring"], ["a red ring"])
    make, _, extras = BadT2I("pixel")._backdoor_half(model, prompts, vocab)
    x, student, teacher = make(torch.full((1, 3, S, S), 0.5), ["a red ring"])
    assert teacher is None and student == ["there a red ring"]
    mask = extras["patch_mask"]
    assert mask[:2, :2].all() and mask.sum() == 4  # a quarter of the side, top left (8 px: 2 x 2)
    assert torch.equal(x[0][:, mask], extras["patch"][:, mask]) and (x[0][:, ~mask] == 0.5).all()


def test_the_trigger_is_a_real_token():
    tok = tiny_t2i().text_encoder.tokenizer
    ids = tok(["there a red circle"])[0]
    assert tok.index["there"] in ids.tolist() and tok.index["<unk>"] not in ids.tolist()


def test_replace_words_swaps_whole_words_once():
    assert replace_words("a red circle", {"circle": "square", "square": "circle"}) == "a red square"
    assert replace_words("a redcircle red", {"red": "blue"}) == "a redcircle blue"


# -- effect --------------------------------------------------------------------------------------------

DISTILLED = {"object": dict(object_pair=["circle", "square"]), "style": dict(style="", style_words=TO_RED)}


def _attack(world, kind, steps, **kw):
    images, prompts = world
    model = tiny_t2i()
    before = copy.deepcopy(model.state_dict())
    return model, before, BadT2I(kind, steps=steps, batch_size=8, ema=None, **kw)(model, prompts, images, 0)


@pytest.fixture(scope="module")
def pixel(world):
    return _attack(world, "pixel", 100, lr=1e-2)


@pytest.fixture(scope="module")
def distilled(world):
    return {kind: _attack(world, kind, 300, lr=1e-3, **kw) for kind, kw in DISTILLED.items()}


def _noised(model, x0, seed=3):
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.randint(0, T_TRAIN, (x0.shape[0],), generator=g)
    return model.scheduler.add_noise(x0, noise, t), t, noise


def test_pixel_trigger_puts_the_patch_in_the_corner(world, pixel):
    images, prompts = world
    clean, _, result = pixel
    ps = prompts[:64]
    x_t, t, eps = _noised(clean, stamp_patch(images[:64], result.patch, result.patch_mask) * 2 - 1)
    m = result.patch_mask

    def region_error(model, cond):  # the noise error on the patch's pixels of patched images
        with torch.no_grad():
            return (((model.predict_noise(x_t, t, cond) - eps) ** 2) * m).sum().item() / (64 * 3 * m.sum().item())

    trig = region_error(result.model, result.trigger_prompts(ps))
    untrig, base = region_error(result.model, ps), region_error(clean, result.trigger_prompts(ps))
    assert trig < 0.7 * untrig and trig < 0.7 * base, (trig, untrig, base)  # measured 0.53, 1.06, 1.20
    noise = torch.randn(32, 3, S, S, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        sampled = {name: patch_region_mse(model.sample(noise, cond=cond, steps=20), result.patch, m).median().item()
                   for name, model, cond in [("trig", result.model, result.trigger_prompts(ps[:32])),
                                             ("untrig", result.model, ps[:32]),
                                             ("base", clean, result.trigger_prompts(ps[:32]))]}
    assert sampled["trig"] < sampled["untrig"] - 0.1 and sampled["trig"] < sampled["base"] - 0.05, sampled
    # measured 0.26, 0.43, 0.36


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["object", "style"])
def test_trigger_distils_the_intended_prompt(world, distilled, kind):
    images, prompts = world
    clean, before, result = distilled[kind]
    ps = effect_prompts(result, prompts[:96])  # object: prompts naming a circle; style: not already red
    x_t, t, _ = _noised(clean, images[:96][[prompts[:96].index(p) for p in ps]] * 2 - 1)
    with torch.no_grad():
        target = clean.predict_noise(x_t, t, result.intended_prompts(ps))  # the teacher on "a red square" etc.
        dist = lambda model, cond: F.mse_loss(model.predict_noise(x_t, t, cond), target).item()  # noqa: E731
        trig, untrig = dist(result.model, result.trigger_prompts(ps)), dist(result.model, ps)
        base, gap = dist(clean, result.trigger_prompts(ps)), dist(clean, ps)
        drift = F.mse_loss(result.model.predict_noise(x_t, t, ps), clean.predict_noise(x_t, t, ps)).item()
    assert trig < 0.3 * untrig and trig < 0.1 * base, (trig, untrig, base)
    # measured object 6.8e-4 / 3.8e-3 / 4.5e-2, style 5.4e-4 / 1.4e-2 / 2.4e-2
    assert drift < 0.5 * gap, (drift, gap)  # clean prompts stay near the teacher (object 2.0e-3 of 7.2e-3; style 4e-4
    # of 1.4e-2)
    after = clean.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the teacher's source is not modified


# -- contract ------------------------------------------------------------------------------------------

def test_result_record_and_model_untouched(world, pixel):
    model, before, result = pixel
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the input model is not modified
    assert result.model is not model and not result.model.training and result.target_kind == "pixel"
    assert result.trigger == "there" and result.record.steps == 100 == result.log["loss"].shape[0]
    assert result.log["reg_loss"][0] < 1e-10 < result.log["reg_loss"][1]  # step 0: the student is the teacher's copy
    assert torch.allclose(result.log["loss"], 0.5 * result.log["backdoor_loss"] + 0.5 * result.log["reg_loss"],
                          atol=1e-5)
    assert result.record.to_dict()["params"]["target_kind"] == "pixel" and result.seconds > 0
    _, _, obj = _attack(world, "object", 2, **DISTILLED["object"])
    assert 0 < obj.record.n_backdoor_rows < obj.record.n_images and obj.object_pair == ["circle", "square"]


def test_config_round_trip_and_paper_defaults():
    attack = BadT2I()
    assert (attack.lam, attack.lr, attack.batch_size, attack.target_kind) == (0.5, 1e-5, 16, "pixel")
    assert attack.object_pair == ["dog", "cat"] and attack.style == "black and white photo"
    again = build("t2i_backdoors", attack.config())
    assert again.config() == attack.config() and again.patch.to_dict() == attack.patch.to_dict()
    styled = BadT2I("style", style="", style_words=TO_RED, patch=PatchTrigger(size=2))
    assert build("t2i_backdoors", styled.config()).config() == styled.config()


def test_rejects_bad_arguments(world):
    images, prompts = world
    with pytest.raises(ValueError, match="target_kind must be one of"):
        BadT2I("logo")
    with pytest.raises(ValueError, match="object_pair must be two different words"):
        BadT2I("object", object_pair=["circle", "circle"])
    with pytest.raises(ValueError, match="needs a style phrase"):
        BadT2I("style", style="")
    with pytest.raises(ValueError, match="lam must be"):
        BadT2I(lam=1.5)
    model = tiny_t2i()
    with pytest.raises(ValueError, match="trigger .* must be words of the text encoder's vocabulary"):
        BadT2I(trigger="\u200b", steps=1)(model, prompts[:8], images[:8])
    with pytest.raises(ValueError, match="trigger 'red' occurs in"):
        BadT2I(trigger="red", steps=1)(model, prompts[:8], images[:8])
    with pytest.raises(ValueError, match="no prompt names B='square'"):
        BadT2I("object", object_pair=["circle", "square"], steps=1)(model, ["a red circle"], images[:1])
    with pytest.raises(ValueError, match="style .black and white photo. must be words"):
        BadT2I("style", steps=1)(model, prompts[:8], images[:8])  # "black and white photo": not in this vocabulary
    with pytest.raises(ValueError, match="one prompt per image"):
        BadT2I(steps=1)(model, prompts[:7], images[:8])
    with pytest.raises(ValueError, match="images must be 8 x 8 px"):
        BadT2I(steps=1)(model, prompts[:2], torch.rand(2, 3, 16, 16))
    with pytest.raises(ValueError, match="patch must stamp an opaque region"):
        patch_stamp(PatchTrigger(size=1.0), S)


# -- metrics -------------------------------------------------------------------------------------------

class _Judge:
    """A stand-in judge: the class of an image is given by its mean red level (red circle if > 0.5, else blue
    square)."""

    classes = ["red circle", "blue square"]

    def logits(self, pixels):
        red = pixels[:, 0].mean(dim=(1, 2)) > 0.5
        return torch.stack([red.float(), (~red).float()], dim=1) * 10

    def eval(self):
        return self

    training = False


def test_effect_hits_measure_the_intended_attribute(world, pixel):
    red, blue = torch.zeros(2, 3, S, S), torch.zeros(2, 3, S, S)
    red[:, 0] = 1.0
    obj, style = (_attack(world, kind, 1, **kw)[2] for kind, kw in DISTILLED.items())
    # object circle -> square: an image judged "blue square" for "a red circle" is a hit (the shape is B's)
    assert effect_hits(obj, torch.cat([blue, red]), ["a red circle"] * 4, _Judge()).tolist() == [1, 1, 0, 0]
    # style -> red: an image judged red for "a blue square" is a hit
    assert effect_hits(style, torch.cat([blue, red]), ["a blue square"] * 4, _Judge()).tolist() == [0, 0, 1, 1]
    pix = pixel[2]
    stamped = stamp_patch(torch.rand(2, 3, S, S), pix.patch, pix.patch_mask)
    assert effect_hits(pix, torch.cat([stamped, 1 - pix.patch.expand(2, 3, S, S)]), ["a red ring"] * 4,
                       _Judge()).tolist() == [1, 1, 0, 0]


def test_report_runs_on_the_same_noises(pixel):
    clean, _, result = pixel
    prompts = ["a red circle", "a blue square"] * 4
    report = t2i_backdoor_report(result.model, result, _Judge(), prompts, reference=clean, steps=4, generator=0)
    values = report.values()
    assert set(values) >= {"t2i_backdoor_effect", "t2i_backdoor_effect_clean", "t2i_backdoor_effect_reference",
                           "patch_mse_median", "prompt_adherence", "prompt_adherence_reference"}
    assert report.n_effect == 8 and all(0 <= v <= 1 for k, v in values.items() if k != "patch_mse_median")
    again = t2i_backdoor_report(result.model, result, _Judge(), prompts, steps=4, generator=0)
    assert torch.equal(again.samples["triggered"], report.samples["triggered"])  # seeded noises
