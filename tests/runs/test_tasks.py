"""Other tasks and data sources through the runner: retrieval (targeted), image folders, caption files."""

import pytest
import torch
from runs_helpers import tiny_spec

from mmsec.data.export import export_shapes
from mmsec.runs import query, run_spec
from mmsec.runs.tasks.common import choose_targets


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "shapes"
    export_shapes(out, "test", 32, quiet=True)
    return out


def test_retrieval_on_shapes(tmp_path):
    spec = tiny_spec(name="retr", task="retrieval",
                     attack={"name": "pgd", "params": {"eps": "8/255", "alpha": "eps/4", "steps": 10}},
                     metrics=["i2t_r1", "i2t_r5", "t2i_r1", "i2t_r1_adv", "t2i_r1_adv", "attack_success_rate",
                              "mean_perturbation_linf"], save_artifacts=False)
    (cell,) = run_spec(spec, tmp_path, quiet=True)
    m = cell["metrics"]
    assert cell["status"] == "done" and "i2t_r1_noise" in m  # the baseline's metric is always stored
    assert m["i2t_r1"] >= 0.8 and m["i2t_r1_noise"] >= m["i2t_r1"] - 0.2
    assert m["i2t_r1_adv"] <= m["i2t_r1_noise"] - 0.3  # the attack moves images off their captions; noise does not
    assert m["attack_success_rate"] >= 0.3
    threat = {r["metric"]: r["threat_model"] for r in query(tmp_path)}
    assert threat["i2t_r1"].startswith("clean") and "untargeted" in threat["attack_success_rate"]
    assert threat["i2t_r1_noise"].startswith("uniform random noise, linf eps=8/255")


def test_imagefolder_zeroshot_and_caption_file_retrieval(tmp_path, exported):
    folder = tiny_spec(name="folder", data={"name": "imagefolder", "path": str(exported)},
                       attack={"name": "fgsm", "params": {"eps": "8/255"}}, save_artifacts=False)
    (cell,) = run_spec(folder, tmp_path, quiet=True)
    assert cell["status"] == "done", cell["error"]
    assert cell["metrics"]["clean_accuracy"] >= 0.9  # "a photo of a {class}" prompts work on folder names
    caps = next(p for p in exported.iterdir() if p.name.startswith("captions."))
    captions = tiny_spec(name="captions", task="retrieval", data={"name": "captions", "path": str(caps)},
                         attack={"name": "fgsm", "params": {"eps": "8/255"}}, save_artifacts=False)
    (cell,) = run_spec(captions, tmp_path, quiet=True)
    assert cell["status"] == "done", cell["error"]
    assert cell["metrics"]["i2t_r1"] >= 0.8


def test_targets_are_deterministic_and_never_the_label(tmp_path):
    labels = torch.arange(48).repeat(20)
    t = choose_targets(labels, 48, seed=3)
    assert torch.equal(t, choose_targets(labels, 48, seed=3)) and not torch.equal(t, choose_targets(labels, 48, 4))
    assert (t != labels).all() and t.min() >= 0 and t.max() < 48
    assert len(set(t.tolist())) == 48  # every class is reachable
    spec = tiny_spec(name="tgt", targeted=True, attack={"name": "pgd", "params": {"eps": "8/255", "steps": 10}},
                     save_artifacts=False)
    (cell,) = run_spec(spec, tmp_path, quiet=True)
    assert cell["status"] == "done"
    # targeted ASR counts hits of the target only; a wrong-but-not-target prediction is not a success
    m = cell["metrics"]
    assert m["attack_success_rate"] <= 1 - m["robust_accuracy"] + 1e-9
    rows = query(tmp_path)
    assert {r["threat_model"] for r in rows if r["metric"] == "attack_success_rate"} == {
        "white-box pgd, targeted, linf eps=8/255"}
