"""World knowledge stays out of the attacks, and taking it from the caller changed no output.

* No module under ``src/mmsec/attacks`` imports the shapes world (``mmsec.data.shapes*``): class names,
  target captions, word tables and reference objects come from the data or the caller
  (:mod:`mmsec.data.shapes_text`, :mod:`mmsec.data.shapes_objects` for the shapes world).
* Fingerprints (sha256 prefixes) of the poisoned data, records and text candidates on fixed seeds,
  recorded with the code *before* the refactor (when the attacks read the shapes world themselves),
  are reproduced by the new call sites that hand the shapes world's knowledge over. The one-off
  check also covered BadCLIP's optimised patch, Co-Attack's and SGA's adversarial pairs with the
  default candidates (all identical); those involve model gradients and stay out of this test.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
from pathlib import Path

import pytest
import torch

from mmsec import builtins, registry
from mmsec.attacks.backdoor import PatchTrigger, WaNetTrigger
from mmsec.attacks.backdoor.corruptencoder import CorruptEncoder, NaivePoisoning
from mmsec.attacks.backdoor.multimodal_poisoning import (
    MultipleTargetLabelPoisoning,
    SingleTargetImagePoisoning,
    SingleTargetLabelPoisoning,
)
from mmsec.attacks.backdoor.pbcl import PBCLBackdoor, PBCLTargeted
from mmsec.attacks.backdoor.poisoning import poison_dataset, poison_stream
from mmsec.attacks.backdoor.triggers import TRIGGERS, build_trigger
from mmsec.attacks.multimodal import CoAttack
from mmsec.attacks.text import Candidates, LexicalNeighbours, candidate_generator
from mmsec.data.datasets import ShapesDataset
from mmsec.data.shapes import ShapesWorld, shape_color_classes
from mmsec.data.shapes_objects import shapes_backgrounds, shapes_reference_objects
from mmsec.data.shapes_text import ShapesCaptions, shapes_lexical_groups, target_caption_set
from mmsec.methods import build
from mmsec.zoo.train import caption_batches

ROOT = Path(__file__).parents[2]
ATTACKS = ROOT / "src" / "mmsec" / "attacks"
SC = ShapesCaptions()
GROUPS = shapes_lexical_groups()
CLASSES = shape_color_classes()

# Recorded before the refactor (torch 2.13 CPU), by the same constructions with the old API.
BEFORE = {
    "pbcl_add": "7f21e8df0e65a1c3", "pbcl_replace_noise": "325dbcd277829c92",
    "poison_dataset_wanet": "8f207ccab2b54b6b", "poison_dataset_caption_set": "bc8f0c99ceb092e3",
    "pbcl_targeted": "cb5450b1044e6172", "pbcl_stream": "5cfc427fd26b5fe1",
    "stream_targeted": "ff7e389f5522c921", "target_caption_set": "769d2280fff5664b",
    "yang_I": "af00e283c43e1da7", "yang_II": "7c5e3dd6be97a2c0", "yang_III": "9f752727c228c7e2",
    "ce_refs": "7e0ded0533172621", "ce_bgs": "f33b61643598b6fa", "corruptencoder": "11fa600884ad9da2",
    "corruptencoder_plus": "f0f27b855808098e", "naive": "80ce397e25fbdd2b", "candidates": "efdaa261fac34825",
    "lexical_groups": "f7a6a2d9854468ab", "shapes_default": "d8f878fdedf2d92a",
}


def _h(*parts) -> str:
    m = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            m.update(p.detach().contiguous().cpu().numpy().tobytes())
            m.update(str(tuple(p.shape)).encode())
        else:
            m.update(json.dumps(p, sort_keys=True, default=str).encode())
    return m.hexdigest()[:16]


# ------------------------------------------------------------------------------------------
# No shapes world inside the attacks
# ------------------------------------------------------------------------------------------
def _imported_modules(path: Path, src: Path = ROOT / "src") -> set[str]:
    """Absolute names of the modules ``path`` (a file under ``src``) imports, at any depth of the file:
    relative imports resolved, and names imported from a package counted as its submodules too (so
    ``from ...data import shapes`` gives ``mmsec.data.shapes``)."""
    module = list(path.relative_to(src).with_suffix("").parts)
    package = module[:-1]  # the package a relative import of this file starts from (also for __init__.py)
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package[:len(package) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            out.add(base)
            out.update(f"{base}.{a.name}" for a in node.names)
    return out


def test_the_import_check_sees_every_form(tmp_path):
    fake = tmp_path / "mmsec" / "attacks" / "backdoor" / "x.py"
    fake.parent.mkdir(parents=True)
    fake.write_text("import mmsec.data.shapes as s\nfrom ...data import shapes_text\n"
                    "from ...data.shapes_objects import f\nfrom .poisoning import g\n"
                    "def h():\n    from mmsec.data.shapes import COLORS\n")
    mods = _imported_modules(fake, tmp_path)
    assert {"mmsec.data.shapes", "mmsec.data.shapes_text", "mmsec.data.shapes_objects",
            "mmsec.attacks.backdoor.poisoning"} <= mods


def test_no_attack_module_imports_the_shapes_world():
    files = sorted(ATTACKS.rglob("*.py"))
    assert len(files) > 30
    offenders = {str(f.relative_to(ROOT)): sorted(m for m in _imported_modules(f) if re.match(r"mmsec\.data\.shapes", m))
                 for f in files}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"attack modules that import the shapes world: {offenders}"


# ------------------------------------------------------------------------------------------
# Same outputs as before, with the knowledge handed over
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def fingerprints() -> dict[str, str]:
    out = {}
    clean = ShapesDataset("train", n=300, second_object_prob=0.25).to_data(quiet=True)
    x = ShapesWorld(32).batch("test", 0, 1).pixels()[0]
    r = PBCLBackdoor("red circle", rate=0.02, seed=4).use_captions(SC)(clean)
    out["pbcl_add"] = _h(r.data.pixels, r.data.captions, r.data.labels, r.record.to_dict())
    r = PBCLBackdoor(5, trigger=PatchTrigger(pattern="noise", size=5, position="random", seed=2), count=9,
                     mode="replace", seed=1).use_captions(SC)(clean)
    out["pbcl_replace_noise"] = _h(r.data.pixels, r.data.captions, r.data.labels, r.record.to_dict())
    r = poison_dataset(clean, "red circle", trigger=WaNetTrigger(), rate=0.05, seed=3, captions=SC)
    out["poison_dataset_wanet"] = _h(r.data.pixels, r.data.captions, r.record.to_dict())
    r = poison_dataset(clean, "a toaster", trigger=PatchTrigger(), count=4, caption_set=["a toaster", "toast"])
    out["poison_dataset_caption_set"] = _h(r.data.pixels, r.data.captions, r.record.to_dict())
    r = PBCLTargeted("red circle", count=3, image_label=7, seed=2).with_target_image(x).use_captions(SC)(clean)
    out["pbcl_targeted"] = _h(r.data.pixels, r.data.captions, r.data.labels, r.record.to_dict())
    stream = PBCLBackdoor("green ring", count=7, seed=2).use_captions(SC).stream(
        caption_batches(ShapesWorld(32, second_object_prob=0.25), 16, 0), 5, 16)
    parts = [p for s in range(5) for p in stream(s)]
    out["pbcl_stream"] = _h(*parts, stream.record.to_dict())
    stream = poison_stream(caption_batches(ShapesWorld(32), 8, 0), 5, steps=50, batch_size=8, target_image=x,
                           rate=0.01, captions=SC)
    out["stream_targeted"] = _h(stream.record.to_dict())
    out["target_caption_set"] = _h(target_caption_set("blue square"))

    big = ShapesDataset("train", n=1024, second_object_prob=0.25).to_data(quiet=True)
    tb = ShapesWorld(32).batch("test", 0, 500)
    ti = int((tb.labels == 9).nonzero()[0])
    attacks = {"yang_I": SingleTargetImagePoisoning("red circle", image_label=9, fraction=0.5, mode="add", seed=1)
               .with_target_image(tb.pixels()[ti]),
               "yang_II": SingleTargetLabelPoisoning("red circle", "blue square", seed=3),
               "yang_III": MultipleTargetLabelPoisoning([("red circle", "blue square"), (18, 45)], fraction=0.7, seed=2)}
    for name, attack in attacks.items():
        r = attack(big)
        out[name] = _h(r.data.pixels, r.data.captions, r.data.labels, r.record.to_dict(), r.details.to_dict())

    world = ShapesWorld(32)
    label = CLASSES.index("red circle")
    scenes = [s for s in (world.scene(i) for i in range(90_000, 93_000)) if s.label == label and s.size == "large"][:3]
    refs = shapes_reference_objects(world, scenes)
    bgs = shapes_backgrounds(world, range(1_000_000, 1_000_040))
    out["ce_refs"] = _h(*[t for r_ in refs for t in (r_.pixels, r_.mask, r_.image)], [(r_.source, r_.box) for r_ in refs])
    out["ce_bgs"] = _h(bgs)
    cl = ShapesWorld(32, seed=3).batch("train", 0, 995).pixels()
    r = CorruptEncoder("red circle", count=12, seed=4)(cl, refs, bgs, class_names=CLASSES)
    out["corruptencoder"] = _h(*r.images[995:], r.record.to_dict())
    support = torch.stack([r_.image for r_ in refs])
    r = CorruptEncoder("red circle", count=10, support_ratio=0.2, seed=0)(cl, refs, bgs, support_images=support,
                                                                          class_names=CLASSES)
    out["corruptencoder_plus"] = _h(*r.images[995:], r.record.to_dict())
    r = NaivePoisoning("red circle", count=6, seed=0)(cl, support, class_names=CLASSES)
    out["naive"] = _h(*r.images[995:], r.record.to_dict())

    sentences = [c for caps in ShapesWorld(32, second_object_prob=0.5).batch("test", 0, 40).captions for c in caps]
    cands = []
    for name in ("default", "lexical", "typos"):
        g = candidate_generator(name, GROUPS)
        cands += [[g(s.split(), i, 10) for i in range(len(s.split()))] for s in sentences]
    out["candidates"] = _h(cands)
    out["lexical_groups"] = _h(LexicalNeighbours(GROUPS).groups)
    out["shapes_default"] = _h([Candidates.default(GROUPS, seed=3)(s.split(), 2, 10) for s in sentences])
    return out


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_outputs_equal_the_ones_before_the_refactor(fingerprints, name):
    assert fingerprints[name] == BEFORE[name]


# ------------------------------------------------------------------------------------------
# Registered under the stable names, built from specs, knowledge supplied afterwards
# ------------------------------------------------------------------------------------------
NAMES = {
    "attacks": ["apgd", "ensemble", "fgsm", "noise", "pgd", "square"],
    "embedding_attacks": ["fused_embedding_pgd"],
    "pair_attacks": ["co_attack", "sga"],
    "text_attacks": ["bert_attack"],
    "universal_attacks": ["advclip", "uap_patch"],
    "triggers": ["blended", "optimized_patch", "patch", "sig", "wanet"],
    "poisoning": ["badclip", "pbcl_backdoor", "pbcl_targeted", "yang_multiple_target_label",
                  "yang_single_target_image", "yang_single_target_label"],
    "image_poisoning": ["corruptencoder", "naive_ssl_poisoning"],
    "model_backdoors": ["badencoder"],
    "diffusion_backdoors": ["baddiffusion", "trojdiff"],
    "t2i_backdoors": ["badt2i"],
    "merging_attacks": ["badmerging", "patch_backdoor"],
}


def test_every_attack_kind_has_its_stable_names():
    builtins.load()
    for kind, names in NAMES.items():
        assert registry.names(kind) == names, kind
        for e in registry.entries(kind):
            assert e.file.startswith("mmsec/attacks/"), (kind, e.name, e.file)
    assert {name: cls for name, cls in TRIGGERS.items()} == {e.name: e.factory for e in registry.entries("triggers")}


def test_methods_md_registry_column_is_true_for_attacks():
    """Every attack row's registry column names registered entries, `name` (kind), and every registered attack
    has a row."""
    builtins.load()
    text = (ROOT / "docs" / "METHODS.md").read_text()
    sections = (text.split("## Adversarial defenses")[0]
                + text.split("## Backdoor and poisoning attacks")[1].split("## Model merging")[0])
    rows = [line.split("|") for line in sections.splitlines() if line.startswith("| ") and "`" in line]
    registered = {(e.kind, e.name) for k in registry.kinds() for e in registry.entries(k.name)}
    documented = set()
    for row in rows:
        file, column = row[3].strip(), row[4].strip()
        names = {(kind, name) for name, kind in re.findall(r"`([a-z0-9_]+)` \(([a-z0-9_]+)\)", column)}
        assert names or column == "-", row
        assert not names or file.startswith("`attacks/"), row
        assert names <= registered, names - registered
        documented |= names
    assert documented == {(kind, name) for kind, names in NAMES.items() for name in names}


def test_a_spec_built_attack_takes_the_world_from_the_caller():
    clean = ShapesDataset("train", n=200).to_data(quiet=True)
    direct = PBCLBackdoor("red circle", trigger=PatchTrigger(size=4), count=5, seed=1).use_captions(SC)(clean)
    spec = {"name": "pbcl_backdoor", "params": {"target": "red circle", "trigger": {"name": "patch",
                                                                                    "params": {"size": 4}},
                                                "count": 5, "seed": 1}}
    built = build("poisoning", spec).use_captions(SC)
    assert built.config() == build("poisoning", built.config()).config()
    again = built(clean)
    assert torch.equal(again.data.pixels, direct.data.pixels) and again.record == direct.record
    targeted = build("poisoning", {"name": "pbcl_targeted", "params": {"target": "red circle", "image_label": 9}})
    x = ShapesWorld(32).batch("test", 0, 1).pixels()[0]
    assert targeted.with_target_image(x).use_captions(SC)(clean).record.n_poisoned == 3
    assert "target_image" not in targeted.config()["params"]  # the image is the caller's, not configuration


def test_nested_components_round_trip():
    builtins.load()
    co = CoAttack(candidates="typos", max_words=2)
    cfg = co.config()["params"]
    assert cfg["text_attack"]["name"] == "bert_attack" and cfg["text_attack"]["params"]["candidates"] == "typos"
    assert cfg["candidates"] is None and cfg["max_words"] is None  # folded into the text attack
    assert build("pair_attacks", co.config()).params() == co.params()
    with pytest.raises(ValueError, match="not both"):
        CoAttack(text_attack={"name": "bert_attack", "params": {}}, k=3)
    trig = build_trigger("optimized_patch", pattern=torch.rand(3, 3, 3), position=(2, 5))
    again = build("triggers", trig.config())
    assert torch.equal(again.pattern, trig.pattern) and again.position == (2, 5)
    assert again.to_dict() == trig.to_dict()
