"""InverTune: names a BadEncoder backdoor's target (and finds no such winner on the clean zoo model),
then removes the backdoor with one batch of 64 clean images at a small clean-accuracy cost.

Step 1 uses the GAN-free ``UAPPatch`` for speed (it names a BadEncoder target; InverTune's default,
AdvCLIP, is measured on four attacks by ``recipes/invertune.yaml``)."""

import pytest
import torch

from mmsec.attacks.universal.uap_patch import UAPPatch
from mmsec.data.shapes import ShapesWorld, shape_color_classes, zeroshot_prompts
from mmsec.defenses.backdoor.invertune import InverTune, critical_neurons, kmeans_1d
from mmsec.defenses.backdoor.invertune_inversion import ssim
from mmsec.defenses.backdoor.invertune_target import identify_target
from mmsec.evaluation.backdoor import zeroshot_asr

NAMES, PROMPTS = shape_color_classes(), zeroshot_prompts()
TARGET = NAMES.index("red circle")


def _small(**kw) -> InverTune:
    """Small sizes for one CPU thread: a short UAP, a short inversion on batches of 32, 100 tuning steps."""
    settings = dict(uap=UAPPatch(epochs=4), inversion_steps=200, inversion_batch=32, inversion_lr=0.02, steps=100)
    return InverTune(**{**settings, **kw})


@pytest.fixture(scope="module")
def data():
    inversion = ShapesWorld(32).batch("val", 0, 256).pixels()
    tuning = ShapesWorld(32).batch("val", 5000, 64).pixels()
    test = ShapesWorld(32).batch("test", 0, 300)
    return inversion, tuning, test


def test_the_frequency_rise_names_the_target_of_a_backdoored_model_only(badencoder_resnet, zoo_resnet, data):
    inversion = data[0]
    bad = identify_target(badencoder_resnet.model.eval(), inversion, PROMPTS, UAPPatch(epochs=4), NAMES, 0)
    clean = identify_target(zoo_resnet.eval(), inversion, PROMPTS, UAPPatch(epochs=4), NAMES, 0)
    # measured: backdoored "red circle" +0.97 (margin 0.97); the clean model's winner ("cyan cross") +0.05
    assert bad.name == "red circle" and bad.label == TARGET
    assert float(bad.rise[TARGET]) >= 0.6 and bad.margin >= 0.5, bad.to_dict()
    assert float(clean.rise[clean.label]) <= float(bad.rise[TARGET]) - 0.4, (clean.to_dict(), bad.to_dict())


def test_invertune_removes_the_backdoor_with_64_images_at_a_small_clean_cost(badencoder_resnet, data):
    inversion, tuning, test = data
    model, trigger = badencoder_resnet.model.eval(), badencoder_resnet.record.rebuild_trigger()
    before_state = {k: v.clone() for k, v in model.state_dict().items()}
    s0 = zeroshot_asr(model, test.pixels(), test.labels, trigger, TARGET, generator=0)
    out = _small().repair(model, inversion, tuning, PROMPTS, NAMES, generator=0)
    s1 = zeroshot_asr(out.model, test.pixels(), test.labels, trigger, TARGET, generator=0)
    # measured: ASR 1.00 -> 0.02, clean zero-shot 0.990 -> 0.973; inverted mask mean 0.044
    assert out.target.name == "red circle"
    assert s0.asr >= 0.9 and s1.asr <= s0.asr - 0.7, (s0.asr, s1.asr)
    assert s1.clean_accuracy >= s0.clean_accuracy - 0.05, (s0.clean_accuracy, s1.clean_accuracy)
    assert out.model is not model
    assert all(torch.equal(before_state[k], v) for k, v in model.state_dict().items())  # input untouched
    assert all(p.grad is None for p in model.parameters())
    assert out.trigger.mask.shape == (3, 32, 32) and float(out.trigger.mask.mean()) <= 0.2  # a small trigger
    assert out.layers and set(out.neurons) == set(out.layers)
    assert out.losses.shape == (100, 3) and out.losses[-1, 1] < out.losses[0, 1]  # L_activation went down


def test_the_tuning_batch_is_limited_to_64_images(zoo_resnet):
    pixels = torch.rand(65, 3, 32, 32)
    with pytest.raises(ValueError, match="max_tuning_images=64"):
        InverTune().repair(zoo_resnet, pixels, pixels, PROMPTS, NAMES)


@pytest.mark.parametrize("kwargs, words", [(dict(lr=0.0), "lr"), (dict(tune="all"), "tune"),
                                           (dict(n_layers=0), "n_layers"), (dict(k=1), "k"),
                                           (dict(w_mask=-1.0), "w_mask"), (dict(layers=[]), "layers")])
def test_bad_configuration_is_named(kwargs, words):
    with pytest.raises((ValueError, TypeError), match=words):
        InverTune(**kwargs)


def test_bad_inputs_are_named(zoo_resnet):
    pixels = torch.rand(8, 3, 32, 32)
    defense = InverTune()
    with pytest.raises(ValueError, match="prompts"):
        defense.repair(zoo_resnet, pixels, pixels, [["a red circle"]])
    with pytest.raises(ValueError, match="class_names"):
        defense.repair(zoo_resnet, pixels, pixels, PROMPTS, NAMES[:3])
    with pytest.raises(ValueError, match="tuning_batch"):
        defense.repair(zoo_resnet, pixels, pixels[:1], PROMPTS)
    with pytest.raises(ValueError, match="clean_pixels"):
        defense.repair(zoo_resnet, pixels * 2, pixels, PROMPTS)
    with pytest.raises(TypeError, match="ContrastiveModel"):
        defense.repair(torch.nn.Linear(2, 2), pixels, pixels, PROMPTS)
    with pytest.raises(ValueError, match="layers"):
        InverTune(layers=["visual.nowhere"])._tune(zoo_resnet, zoo_resnet, pixels, None)


def test_kmeans_splits_the_divergent_neurons_and_ssim_is_one_on_equal_images():
    values = torch.cat([torch.full((50,), 0.01), torch.full((5,), 3.0)]) + torch.linspace(0, 0.001, 55)
    labels = kmeans_1d(values)
    assert labels[:50].unique().numel() == 1 and labels[50:].unique().numel() == 1 and labels[0] != labels[-1]
    mask = critical_neurons(torch.zeros(5, 11), values.view(5, 11))
    assert int(mask.sum()) == 5 and bool(mask.flatten()[50:].all())
    x = torch.rand(2, 3, 32, 32)
    assert abs(float(ssim(x, x)) - 1) < 1e-5 and float(ssim(x, torch.rand(2, 3, 32, 32))) < 0.2


def test_the_registered_defense_follows_the_hardening_contract_on_image_text_data(zoo_resnet):
    from mmsec.data.datasets import ImageTextData
    from mmsec.defenses.base import DefenseResult, HardeningDefense

    data = ImageTextData(ShapesWorld(32).batch("val", 0, 80).pixels(), class_names=NAMES)
    tiny = InverTune(uap=UAPPatch(epochs=1, max_steps=2), inversion_steps=2, inversion_batch=8, steps=2)
    assert isinstance(tiny, HardeningDefense)
    before = {k: v.clone() for k, v in zoo_resnet.state_dict().items()}
    out = tiny(zoo_resnet, data, prompts=PROMPTS, generator=torch.Generator().manual_seed(0))
    assert isinstance(out, DefenseResult) and out.model is not zoo_resnet and len(out.losses) == 2
    assert out.extras["target"]["name"] in NAMES and out.params["max_tuning_images"] == 64
    uap = out.params["uap"]  # recorded as its config once it is a registered method, else as its repr
    assert uap["name"] == "uap_patch" if isinstance(uap, dict) else uap.startswith("UAPPatch(")
    assert all(torch.equal(before[k], v) for k, v in zoo_resnet.state_dict().items())
    # the contract entry is the explicit one on the data's first 64 (tuning) and other images (inversion)
    again = tiny.repair(zoo_resnet, data.pixels[64:], data.pixels[:64], PROMPTS, NAMES,
                        generator=torch.Generator().manual_seed(0))
    assert again.losses[:, 0].tolist() == out.losses
    assert all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(), out.model.state_dict().values(),
                                                  strict=True))
    with pytest.raises(ValueError, match="needs 64 for tuning"):
        tiny(zoo_resnet, ImageTextData(data.pixels[:64]), prompts=PROMPTS)
    # the candidate classes come from the caller: no default vocabulary
    with pytest.raises(ValueError, match="needs prompts"):
        tiny(zoo_resnet, data)


def test_invertune_is_registered_with_its_universal_perturbation_as_a_component():
    from mmsec import builtins, registry
    from mmsec.attacks.universal.advclip import AdvCLIP
    from mmsec.methods import build

    builtins.load()
    entry = registry.get("defenses", "invertune")
    assert entry.factory is InverTune and entry.paper and entry.family == "contrastive"
    assert InverTune.components == {"uap": "universal_attacks"}
    defense = build("defenses", {"name": "invertune", "params": {"steps": 7, "tune": "tower"}})
    assert isinstance(defense, InverTune) and (defense.steps, defense.tune) == (7, "tower")
    assert isinstance(defense.uap, AdvCLIP)  # the paper's perturbation by default
    import mmsec.defenses.backdoor.invertune as module

    assert not hasattr(module, "InverTuneDefense")  # the wrapper is gone: InverTune itself is the defense


def test_the_uap_component_round_trips_through_a_nested_config():
    from mmsec import builtins, registry
    from mmsec.methods import build

    builtins.load()
    if "universal_attacks" not in [k.name for k in registry.kinds()]:
        pytest.skip("the universal_attacks kind (advclip, uap_patch) is not registered on this branch yet")
    spec = {"name": "invertune", "params": {"uap": {"name": "uap_patch", "params": {"epochs": 4}}, "steps": 7}}
    defense = build("defenses", spec)
    assert isinstance(defense.uap, UAPPatch) and defense.uap.epochs == 4
    config = defense.config()
    assert config["params"]["uap"]["name"] == "uap_patch" and config["params"]["uap"]["params"]["epochs"] == 4
    assert build("defenses", config).config() == config
    assert InverTune().config()["params"]["uap"]["name"] == "advclip"
    assert isinstance(InverTune(uap="uap_patch").uap, UAPPatch)
