"""Model families: the protocols and their table, require_family / families_of, load_model's dispatch
through registered loaders (family mismatches, a fake scheme), checkpoint families, and vision_blocks."""

from __future__ import annotations

import json
import typing
from dataclasses import asdict, dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmsec import registry, zoo
from mmsec.models import base, checkpoint, loaders
from mmsec.models.base import (
    FAMILIES,
    ContrastiveModel,
    DiffusionModel,
    FusionModel,
    GenerativeVLM,
    ImageClassifier,
    VisionBlocks,
    families_of,
    implies,
    register_family,
    require_contrastive,
    require_family,
    require_fusion,
    vision_block_names,
)
from mmsec.models.checkpoint import (
    CheckpointError,
    checkpoint_families,
    register_checkpoint_family,
    save_checkpoint,
)
from mmsec.models.loaders import declared_family, load_model, register_loader, schemes
from mmsec.models.open_clip_adapter import OpenCLIP
from mmsec.models.tiny_albef import TinyALBEF
from mmsec.models.tiny_clip import TinyCLIP, TinyCLIPConfig
from mmsec.models.towers import image_tower_parameters
from mmsec.zoo import loader as zoo_loader
from mmsec.zoo.train import shapes_vocabulary

# -- tiny fakes of the new families ------------------------------------------------------------------


class FakeVLM:
    """A GenerativeVLM in a few lines: the log-probability of a target falls with its length and with
    the image's brightness, differentiably; generation always refuses."""

    image_size = 8

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        return F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bilinear") * 2 - 1

    def logprob(self, pixels: torch.Tensor, prompts: list[str], targets: list[str]) -> torch.Tensor:
        per_token = -F.softplus(self.normalize(pixels).mean((1, 2, 3)))  # (B,) < 0
        return per_token * torch.tensor([float(len(t.split())) for t in targets])  # (B,)

    def generate(self, pixels: torch.Tensor, prompts: list[str], max_new_tokens: int = 32,
                 generator: torch.Generator | None = None) -> list[str]:
        return ["I cannot help with that."[: 4 * max_new_tokens]] * len(prompts)


class FakeDDPMScheduler:
    """Enough of diffusers' DDPMScheduler: linear betas, timesteps, add_noise and a deterministic step."""

    def __init__(self, num_train_timesteps: int = 20):
        self.betas = torch.linspace(1e-3, 0.2, num_train_timesteps)
        self.alphas_cumprod = torch.cumprod(1 - self.betas, 0)
        self.timesteps = torch.arange(num_train_timesteps).flip(0)

    def set_timesteps(self, num_inference_steps: int) -> None:
        self.timesteps = torch.linspace(len(self.betas) - 1, 0, num_inference_steps).long()

    def add_noise(self, original: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        abar = self.alphas_cumprod[timesteps].view(-1, 1, 1, 1)
        return abar.sqrt() * original + (1 - abar).sqrt() * noise

    def step(self, model_output, timestep, sample, generator=None):
        abar = self.alphas_cumprod[timestep]
        x0 = (sample - (1 - abar).sqrt() * model_output) / abar.sqrt()

        @dataclass
        class Out:
            prev_sample: torch.Tensor

        return Out(x0.clamp(-1, 1))


class FakeDiffusion:
    """A DiffusionModel whose noise predictor is one learnable scale (pixel space, 3 x 8 x 8)."""

    image_size, channels = 8, 3

    def __init__(self):
        self.scheduler = FakeDDPMScheduler()
        self.scale = torch.tensor(0.1, requires_grad=True)

    def predict_noise(self, x_t, t, cond=None):
        return self.scale * x_t

    def sample(self, n, cond=None, steps=None, guidance=1.0, generator=None, grad=False):
        with torch.set_grad_enabled(grad):
            x = n if isinstance(n, torch.Tensor) else torch.randn(n, 3, 8, 8, generator=generator)
            self.scheduler.set_timesteps(steps or 4)
            for t in self.scheduler.timesteps:
                x = self.scheduler.step(self.predict_noise(x, t, cond), t, x, generator=generator).prev_sample
            return (x + 1) / 2


def _tiny_clip(tower: str) -> TinyCLIP:
    torch.manual_seed(0)
    return TinyCLIP(TinyCLIPConfig(image_tower=tower, vit_layers=2, vocab=shapes_vocabulary())).eval()


# -- the protocols and the family table ----------------------------------------------------------------

def _protocol_members(protocol: type) -> set[str]:
    """Public attributes and annotations a protocol declares, across its protocol bases."""
    out: set[str] = set()
    for cls in protocol.__mro__:
        if cls in (object, typing.Protocol, typing.Generic):
            continue
        out |= {k for k in vars(cls) if not k.startswith("_")} | set(getattr(cls, "__annotations__", {}))
    return out


def test_family_table_matches_its_protocols():
    assert list(FAMILIES) == ["contrastive", "fusion", "vlm", "diffusion", "classifier"]
    expected = {"contrastive": ContrastiveModel, "fusion": FusionModel, "vlm": GenerativeVLM,
                "diffusion": DiffusionModel, "classifier": ImageClassifier}
    for name, fam in FAMILIES.items():
        assert fam.name == name and fam.protocol is expected[name] and fam.description
        assert set(fam.members) == _protocol_members(fam.protocol), name  # the table says what the protocol says
    assert implies("fusion", "contrastive") and not implies("contrastive", "fusion")
    assert not implies("vlm", "contrastive") and not implies("diffusion", "vlm") and implies("vlm", "vlm")
    assert not implies("classifier", "contrastive") and not implies("contrastive", "classifier")


def test_fake_vlm_satisfies_the_protocol_and_its_logprob_reaches_the_pixels():
    vlm = FakeVLM()
    assert isinstance(vlm, GenerativeVLM) and not isinstance(vlm, ContrastiveModel)
    assert families_of(vlm) == ["vlm"]
    require_family(vlm, "vlm", "a jailbreak")
    pixels = torch.rand(2, 3, 16, 16, requires_grad=True)
    lp = vlm.logprob(pixels, ["describe", "describe"], ["a red circle", "no"])
    assert lp.shape == (2,) and (lp <= 0).all() and lp[0] < lp[1]
    lp.sum().backward()
    assert pixels.grad is not None and pixels.grad.abs().sum() > 0
    assert vlm.generate(pixels.detach(), ["hi", "hi"], max_new_tokens=2) == ["I cannot"] * 2


def test_fake_diffusion_satisfies_the_protocol_and_samples_differentiably():
    model = FakeDiffusion()
    assert isinstance(model, DiffusionModel) and families_of(model) == ["diffusion"]
    x0 = torch.rand(2, 3, 8, 8) * 2 - 1
    noisy = model.scheduler.add_noise(x0, torch.randn(2, 3, 8, 8), torch.tensor([0, 19]))
    assert noisy.shape == x0.shape and model.predict_noise(noisy, 5).shape == x0.shape
    noise = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), requires_grad=True)
    images = model.sample(noise, steps=3, grad=True)
    assert images.shape == (2, 3, 8, 8) and images.min() >= 0 and images.max() <= 1
    images.mean().backward()
    assert noise.grad is not None and model.scale.grad is not None
    assert not model.sample(2, generator=torch.Generator().manual_seed(0)).requires_grad  # grad=False


def test_families_of_real_models():
    assert families_of(_tiny_clip("resnet")) == ["contrastive"]
    assert families_of(zoo.load_model("shapes-albef")) == ["contrastive", "fusion"]
    assert families_of(object()) == []


def test_require_family_names_the_family_the_missing_members_and_the_class():
    with pytest.raises(TypeError, match=r"^sampler needs a DiffusionModel \(family 'diffusion': .*predict_noise.*\); "
                                        r"FakeVLM lacks \['channels', 'predict_noise', 'scheduler', 'sample'\] "
                                        r"\(it is a 'vlm' model\)$"):
        require_family(FakeVLM(), "diffusion", "sampler")
    with pytest.raises(TypeError, match=r"jailbreak needs a GenerativeVLM .*TinyCLIP lacks \['logprob', 'generate'\] "
                                        r"\(it is a 'contrastive' model\)"):
        require_family(_tiny_clip("resnet"), "vlm", "jailbreak")
    with pytest.raises(TypeError, match=r"lacks \['image_size', 'normalize', 'logprob', 'generate'\]$"):
        require_family(object(), "vlm", "x")  # no "(it is a ...)" for a model of no family
    with pytest.raises(ValueError, match=r"unknown model family 'vln'; known families: .*Did you mean 'vlm'"):
        require_family(FakeVLM(), "vln", "x")


def test_require_contrastive_and_fusion_are_thin_wrappers():
    clip = _tiny_clip("resnet")
    require_contrastive(clip, "pgd")
    with pytest.raises(TypeError, match=r"co_attack needs a FusionModel \(family 'fusion': ALBEF / BLIP style.*\); "
                                        r"TinyCLIP lacks \['fuse', 'itm_logits'"):
        require_fusion(clip, "co_attack")
    with pytest.raises(TypeError, match=r"pgd needs a ContrastiveModel .*FakeVLM lacks \['encode_image', 'encode_text', "
                                        r"'tokenize', 'logit_scale'\] \(it is a 'vlm' model\)"):
        require_contrastive(FakeVLM(), "pgd")


def test_register_family_adds_a_family_locally():
    class Audio(typing.Protocol):
        sample_rate: int

        def encode_audio(self, wave: torch.Tensor) -> torch.Tensor: ...

    class Mic:
        sample_rate = 16_000

        def encode_audio(self, wave):
            return wave

    try:
        register_family("audio", Audio, ["sample_rate", "encode_audio"], "an audio encoder")
        register_family("audio", Audio, ["sample_rate", "encode_audio"], "an audio encoder")  # idempotent
        assert families_of(Mic()) == ["audio"] and families_of(FakeVLM()) == ["vlm"]
        with pytest.raises(TypeError, match=r"needs a Audio \(family 'audio': an audio encoder\); FakeVLM lacks"):
            require_family(FakeVLM(), "audio", "a speech attack")
        with pytest.raises(ValueError, match="registered twice with different definitions"):
            register_family("audio", Audio, ["sample_rate"], "an audio encoder")
    finally:
        FAMILIES.pop("audio", None)
    for bad, members in (("Audio", ["x"]), ("my family", ["x"]), ("audio", [])):
        with pytest.raises(ValueError, match="register_family"):
            register_family(bad, Audio, members, "d")
    assert "audio" not in FAMILIES


# -- load_model: dispatch through registered loaders ------------------------------------------------

@pytest.fixture
def scratch_loaders(monkeypatch):
    """Register fake schemes for one test: the loader table and the registry's models are restored after."""
    monkeypatch.setattr(loaders, "_LOADERS", dict(loaders._LOADERS))
    monkeypatch.setitem(registry._REGISTRY, "models", dict(registry._REGISTRY["models"]))
    calls: list[str] = []

    def load_fake_vlm(rest: str) -> FakeVLM:
        calls.append(rest)
        return FakeVLM()

    register_loader("fakevlm", load_fake_vlm, family="vlm", form="fakevlm:/path/to/vlm",
                    summary="a fake chat VLM for tests")
    return calls


def test_builtin_schemes_and_their_forms():
    forms = schemes()
    assert list(forms)[:5] == ["hf", "hf-blip", "open_clip", "diffusers", "zoo"]  # the zoo registers from above
    assert all(form.startswith(f"{s}:") for s, form in forms.items())
    fams = {s: ld.family for s, ld in loaders.loaders().items()}
    assert fams == {"zoo": None, "hf": "contrastive", "hf-blip": "fusion", "open_clip": "contrastive",
                    "diffusers": "diffusion"}
    entries = {e.name: e for e in registry.entries("models")}
    assert entries["hf-blip:<dir>"].family == "fusion" and entries["hf:<dir>"].family == "contrastive"
    assert entries["zoo:<path>.safetensors"].factory is zoo_loader.load_zoo


def test_zoo_checkpoints_declare_their_family_in_metadata_and_registry():
    for name in zoo.available():
        card_family = zoo.card(name).get("family", "contrastive")
        assert registry.get("models", f"zoo:{name}").family == card_family == declared_family(f"zoo:{name}")
        model = load_model(name, family=card_family)
        assert card_family in families_of(model)
    assert declared_family("shapes-albef") == "fusion" and declared_family("hf-blip:/x") == "fusion"
    assert declared_family("zoo:/models/mine.safetensors") is None  # only the checkpoint can tell


def test_family_mismatch_of_a_zoo_model_is_one_type_error():
    assert isinstance(load_model("zoo:shapes-albef", family="fusion"), TinyALBEF)
    assert isinstance(load_model("shapes-albef", family="contrastive"), TinyALBEF)  # a fusion model is contrastive
    with pytest.raises(TypeError, match=r"^load_model\('zoo:shapes-clip-resnet', family='vlm'\) needs a GenerativeVLM "
                                        r".*; TinyCLIP lacks \['logprob', 'generate'\] \(it is a 'contrastive' model\)$"):
        load_model("zoo:shapes-clip-resnet", family="vlm")


def test_family_mismatch_of_a_scheme_is_raised_before_loading(tmp_path):
    missing = tmp_path / "no-such-folder"  # loading it would raise FileNotFoundError
    with pytest.raises(TypeError, match=r"scheme 'hf:' loads 'contrastive' models, not a FusionModel .*"
                                        r"Schemes that can load a 'fusion' model: \['hf-blip', 'zoo'\]"):
        load_model(f"hf:{missing}", family="fusion")
    with pytest.raises(FileNotFoundError):
        load_model(f"hf-blip:{missing}", family="contrastive")  # fusion satisfies contrastive: it tries to load
    with pytest.raises(ValueError, match=r"unknown model family 'fussion'.*Did you mean 'fusion'"):
        load_model("zoo:shapes-albef", family="fussion")


def test_windows_path_is_not_a_scheme():
    with pytest.raises(ValueError, match=r"unknown model 'C:\\\\models\\\\clip'.*looks like a path"):
        load_model("C:\\models\\clip")


def test_register_loader_of_a_fake_scheme(scratch_loaders):
    assert schemes()["fakevlm"] == "fakevlm:/path/to/vlm"
    assert isinstance(load_model("fakevlm: /tmp/vlm "), FakeVLM) and scratch_loaders == ["/tmp/vlm"]
    assert isinstance(load_model("fakevlm:/a", family="vlm"), FakeVLM)
    entry = registry.get("models", "fakevlm:/path/to/vlm")
    assert entry.family == "vlm" and entry.summary == "a fake chat VLM for tests"
    assert declared_family("fakevlm:/a") == "vlm"
    with pytest.raises(TypeError, match=r"scheme 'fakevlm:' loads 'vlm' models, not a ContrastiveModel"):
        load_model("fakevlm:/b", family="contrastive")
    assert scratch_loaders == ["/tmp/vlm", "/a"]  # the mismatch was caught before loading
    with pytest.raises(ValueError, match=r"unknown model prefix 'fakevln'.*Did you mean 'fakevlm'.*"
                                         r"fakevlm:/path/to/vlm"):
        load_model("fakevln:/a")


def test_a_loader_that_breaks_its_word_is_reported(scratch_loaders):
    register_loader("liar", lambda rest: _tiny_clip("resnet"), family="vlm", form="liar:X", summary="says vlm")
    with pytest.raises(TypeError, match=r"the 'liar' loader \(declared family 'vlm'\) needs a GenerativeVLM.*"
                                        r"TinyCLIP lacks"):
        load_model("liar:x")


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(scheme="c"), ValueError, r"at least two characters \(one letter would read as a Windows drive\)"),
    (dict(scheme="Fake"), ValueError, "lower-case"),
    (dict(scheme="hf"), ValueError, r"scheme 'hf' is already registered \(hf:/path/to/hf_clip_folder\)"),
    (dict(family="audio"), ValueError, r"unknown model family 'audio'"),
    (dict(form="/path/to/x"), ValueError, r"form must show how a spec is written, starting with 'fake2:'"),
    (dict(summary=" "), ValueError, "summary must be a non-empty line"),
    (dict(loader="not callable"), TypeError, "loader must be callable"),
])
def test_register_loader_rejects_bad_arguments(scratch_loaders, kwargs, error, match):
    args = dict(scheme="fake2", loader=lambda rest: FakeVLM(), family="vlm", form="fake2:X", summary="s")
    args.update(kwargs)
    if "form" not in kwargs and "scheme" in kwargs:
        args["form"] = f"{kwargs['scheme']}:X"
    with pytest.raises(error, match=match):
        register_loader(args.pop("scheme"), args.pop("loader"), **args)
    assert "fake2" not in schemes()


# -- checkpoint families: a new zoo architecture is one registration ---------------------------------

@dataclass
class ToyConfig:
    width: int = 4
    vocab: list[str] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ToyConfig:
        return cls(**d)


class ToyCLIP(nn.Module):
    """The smallest ContrastiveModel: one linear map per tower."""

    image_size = 8
    logit_scale = torch.tensor(10.0)

    def __init__(self, cfg: ToyConfig):
        super().__init__()
        self.config = cfg
        self.image = nn.Linear(3, cfg.width)
        self.text = nn.Embedding(10, cfg.width)

    def tokenize(self, texts):
        return torch.tensor([[len(t) % 10] for t in texts])

    def normalize(self, pixels):
        return pixels

    def encode_image(self, pixels):
        return self.image(pixels.mean((2, 3)))

    def encode_text(self, tokens):
        return self.text(tokens).mean(1)


def test_checkpoint_families_are_registered_by_the_model_modules():
    fams = checkpoint_families()
    assert fams["contrastive"].model is TinyCLIP and fams["contrastive"].family == "contrastive"
    assert fams["fusion"].model is TinyALBEF and fams["fusion"].family == "fusion"


def test_a_new_zoo_architecture_is_one_registration(monkeypatch, tmp_path):
    monkeypatch.setattr(checkpoint, "_CHECKPOINT_FAMILIES", dict(checkpoint._CHECKPOINT_FAMILIES))
    register_checkpoint_family("toy", ToyConfig, ToyCLIP, family="contrastive")
    register_checkpoint_family("toy", ToyConfig, ToyCLIP, family="contrastive")  # the same again: a no-op
    torch.manual_seed(0)
    toy = ToyCLIP(ToyConfig(width=6))
    meta = {"config": json.dumps(toy.config.to_dict()), "family": "toy"}
    sha = save_checkpoint(tmp_path / "toy-clip.safetensors", toy.state_dict(), meta)
    (tmp_path / "toy-clip.json").write_text(json.dumps({"sha256": sha}))
    loaded = load_model(f"zoo:{tmp_path / 'toy-clip.safetensors'}", family="contrastive")
    assert isinstance(loaded, ToyCLIP) and loaded.config.width == 6 and not loaded.training
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), toy.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match=r"checkpoint family 'toy' is registered twice: ToyCLIP and TinyCLIP"):
        register_checkpoint_family("toy", TinyCLIPConfig, TinyCLIP, family="contrastive")
    with pytest.raises(TypeError, match=r"config_cls dict lacks from_dict\(\)"):
        register_checkpoint_family("toy2", dict, ToyCLIP)
    with pytest.raises(ValueError, match=r"unknown model family 'toy2'"):
        register_checkpoint_family("toy2", ToyConfig, ToyCLIP)  # family defaults to the name: not a model family
    monkeypatch.setattr(checkpoint, "_CHECKPOINT_FAMILIES", {})
    with pytest.raises(CheckpointError, match=r"checkpoint toy-clip has model family 'toy' in its metadata; this "
                                              r"mmsec knows \[\]"):
        zoo.load_model("toy-clip", checkpoint_dir=tmp_path)


# -- vision_blocks: adapters name their image tower's blocks -------------------------------------------

def _fired(model: nn.Module, run) -> list[int]:
    """The indices of ``model.vision_blocks()`` in the order their forward hooks fire during ``run()``."""
    order: list[int] = []
    hooks = [b.register_forward_hook(lambda m, i, o, k=k: order.append(k)) for k, b in enumerate(model.vision_blocks())]
    try:
        run()
    finally:
        for h in hooks:
            h.remove()
    return order


@pytest.mark.parametrize("tower, names", [
    ("resnet", ["visual.blocks.0", "visual.blocks.1", "visual.blocks.2"]),
    ("vit", ["visual.encoder.layers.0", "visual.encoder.layers.1"]),
])
def test_tiny_clip_vision_blocks(tower, names):
    model = _tiny_clip(tower)
    assert isinstance(model, VisionBlocks) and vision_block_names(model) == names
    pixels = torch.rand(2, 3, 32, 32)
    assert _fired(model, lambda: model.encode_image(pixels)) == list(range(len(names)))
    assert _fired(model, lambda: model.encode_text(model.tokenize(["a red circle"]))) == []  # image tower only
    tower_params = {id(p) for _, p in image_tower_parameters(model, pixels)}
    assert {id(p) for b in model.vision_blocks() for p in b.parameters()} <= tower_params


def test_vision_block_names_errors():
    with pytest.raises(TypeError, match=r"FakeVLM does not expose its image tower's blocks: it lacks vision_blocks\(\)"):
        vision_block_names(FakeVLM())

    class Stray(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = nn.Linear(2, 2)

        def vision_blocks(self):
            return [self.inner, nn.Linear(2, 2)]

    with pytest.raises(ValueError, match=r"Stray.vision_blocks\(\)\[1\] \(Linear\) is not a submodule of the model"):
        vision_block_names(Stray())


class _FakeOpenClipModel(nn.Module):
    """The attribute layout of open_clip's CLIP with a given image tower; encode_image runs ``blocks``."""

    def __init__(self, visual: nn.Module, blocks: list[nn.Module]):
        super().__init__()
        self.visual = visual
        self.visual.image_size = 32
        self._blocks = blocks
        self.logit_scale = nn.Parameter(torch.tensor(2.0))

    def encode_image(self, x):
        h = x.mean((2, 3))  # (B, 3)
        for b in self._blocks:
            h = b(h)
        return h

    def encode_text(self, tokens):
        return torch.zeros(tokens.shape[0], 3)


def _open_clip_tower(kind: str) -> tuple[nn.Module, list[nn.Module], list[str]]:
    visual = nn.Module()
    if kind == "vit":
        visual.transformer = nn.Module()
        visual.transformer.resblocks = nn.ModuleList(nn.Linear(3, 3) for _ in range(3))
        return visual, list(visual.transformer.resblocks), [f"model.visual.transformer.resblocks.{i}" for i in range(3)]
    if kind == "resnet":
        for i in range(1, 5):
            setattr(visual, f"layer{i}", nn.Linear(3, 3))
        return visual, [getattr(visual, f"layer{i}") for i in range(1, 5)], [f"model.visual.layer{i}" for i in range(1, 5)]
    visual.trunk = nn.Module()
    visual.trunk.blocks = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    return visual, list(visual.trunk.blocks), ["model.visual.trunk.blocks.0", "model.visual.trunk.blocks.1"]


@pytest.mark.parametrize("kind", ["vit", "resnet", "timm"])
def test_open_clip_vision_blocks(kind):
    visual, blocks, names = _open_clip_tower(kind)
    model = OpenCLIP(_FakeOpenClipModel(visual, blocks), tokenizer=None)
    assert model.vision_blocks() == blocks and vision_block_names(model) == names
    assert _fired(model, lambda: model.encode_image(torch.rand(1, 3, 32, 32))) == list(range(len(blocks)))


def test_open_clip_vision_blocks_of_an_unknown_tower():
    model = OpenCLIP(_FakeOpenClipModel(nn.Module(), []), tokenizer=None)
    with pytest.raises(TypeError, match=r"the image tower Module has none of transformer.resblocks, layer1-4"):
        model.vision_blocks()


def test_models_package_exports():
    import mmsec.models as models

    for name in ("FAMILIES", "GenerativeVLM", "DiffusionModel", "VisionBlocks", "families_of", "require_family",
                 "load_model", "register_loader", "schemes", "vision_block_names"):
        assert getattr(models, name) is getattr(base, name, None) or getattr(models, name) is getattr(loaders, name)
