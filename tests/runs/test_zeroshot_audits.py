"""Task zeroshot's robustness audits: the gradient-masking checks and the embedding drift as metrics.

The stored check values are those of ``gradient_masking_checks`` called directly on the same classifier,
images, budget, ensemble preset and derived seed; on a masked classifier (input rounded to 32 grey levels:
zero gradients) the zero-gradient check fails in the store, on the zoo model no check does. The
drift of the undefended model is 0 (cosine 1) and a FARE fine-tune's is not. Both audits are computed only
when the spec's metrics ask for them.
"""

from pathlib import Path

import pytest
import torch
from runs_helpers import tiny_spec

from mmsec.attacks import ZeroShotObjective
from mmsec.runs.cells import derive_seed
from mmsec.runs.grid import expand
from mmsec.runs.results import query
from mmsec.runs.runner import run_spec
from mmsec.runs.spec import SpecError, load_spec
from mmsec.runs.tasks.zeroshot import AUDIT

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
MASKING = ["masking_zero_gradients", "masking_large_eps", "masking_monotone_eps", "masking_black_box",
           "masking_single_step", "masking_unbounded", "masking_checks_failed"]
N = 8  # test images
DRIFT = ["embedding_drift_sq_l2", "embedding_drift_cosine", "embedding_sq_norm"]
FARE = {"name": "fare", "params": {"eps": "8/255", "alpha": "2/255", "steps": 2, "epochs": 1, "batch_size": 64,
                                   "lr": 1e-3},
        "data": {"name": "shapes", "split": "train", "n": 64, "image_size": 32}}


def audit_spec(**overrides) -> dict:
    base = dict(data={"name": "shapes", "split": "test", "n": N, "image_size": 32},
                attack={"name": "ensemble", "params": {"eps": "8/255", "preset": "fast"}},
                defense=["none", FARE], baseline=None, save_artifacts=False,
                metrics=["clean_accuracy", "robust_accuracy", *MASKING, *DRIFT])
    base.update(overrides)
    return tiny_spec("audit-test", **base)


@pytest.mark.parametrize("overrides, expected", [
    (dict(attack={"name": "pgd", "params": {"eps": 0.5, "norm": "l2"}}),
     "attack.params.norm: the masking checks run at the attack's budget and black_box runs the L-inf Square"),
    (dict(task="retrieval", defense=None), "metric 'masking_zero_gradients' is not computed for task 'retrieval'"),
])
def test_bad_audit_specs_are_named(overrides, expected):
    with pytest.raises(SpecError, match=expected):
        load_spec(audit_spec(**overrides))


def test_audits_are_only_computed_when_asked_for():
    assert not set(AUDIT) & set(load_spec(tiny_spec()).metrics)
    # an L2 attack may still have the checks that do not need Square
    load_spec(audit_spec(attack={"name": "pgd", "params": {"eps": 0.5, "norm": "l2"}},
                         metrics=["masking_zero_gradients", "masking_unbounded"]))


class Quantised(ZeroShotObjective):
    """A zero-shot objective whose input is rounded to 32 grey levels first: exactly zero gradients, the
    textbook masked classifier (Athalye et al., 2018)."""

    def __init__(self, inner: ZeroShotObjective):
        self.model, self.classifier = inner.model, inner.classifier

    def logits(self, pixels):
        return super().logits(torch.round(pixels * 32) / 32)


def test_the_checks_of_a_masked_classifier_fail_and_are_stored(tmp_path, monkeypatch):
    from mmsec.data.datasets import ShapesDataset
    from mmsec.evaluation.robustness import gradient_masking_checks
    from mmsec.runs.tasks.zeroshot import ZeroShotTask
    from mmsec.zoo import load_model

    real = ZeroShotTask.objective
    monkeypatch.setattr(ZeroShotTask, "objective", lambda self, *a: (Quantised(real(self, *a)[0]), *real(self, *a)[1:]))
    cheap = ["masking_zero_gradients", "masking_single_step", "masking_unbounded"]  # (Square's 1,000 queries: slow)
    summaries = run_spec(audit_spec(defense=None, metrics=["robust_accuracy", *cheap]), tmp_path)
    assert [s["status"] for s in summaries] == ["done"], summaries
    rows = query(tmp_path, "audit-test")
    stored = {r["metric"]: r["value"] for r in rows}

    test = ShapesDataset("test", n=N, image_size=32).to_data(quiet=True)
    objective = Quantised(real(ZeroShotTask(), load_model("shapes-clip-resnet"), test, "shapes")[0])
    report = gradient_masking_checks(objective, test.pixels, torch.as_tensor(test.labels), 8 / 255, attacks="fast",
                                     generator=derive_seed(0, "masking_checks"), batch_size=16,
                                     checks=[m.removeprefix("masking_") for m in cheap])
    assert {f"masking_{k}": c.value for k, c in report.checks.items()} == {m: stored[m] for m in cheap}
    # zero gradients everywhere: the white-box ensemble reports a robust model, and the first check fails
    # (measured: black_box, Square breaking what the ensemble could not, fails too: 0.875)
    assert stored["robust_accuracy"] >= 0.9, stored
    assert stored["masking_zero_gradients"] == 1.0 > report.checks["zero_gradients"].threshold, stored
    threat = {r["metric"]: r["threat_model"] for r in rows}
    assert threat["masking_unbounded"] == ("gradient-masking audit at linf eps=8/255: the fast ensemble, Square, "
                                           "FGSM, unbounded APGD-CE")


def test_the_drift_and_the_failed_count_are_stored(tmp_path):
    # the undefended model: no drift, no check fails; a (2-step) FARE fine-tune: drift, asked for alone
    summaries = (run_spec(audit_spec(defense=None, metrics=[*DRIFT, "masking_checks_failed"]), tmp_path)
                 + run_spec(audit_spec(defense=FARE, metrics=DRIFT), tmp_path))
    assert [s["status"] for s in summaries] == ["done", "done"], summaries
    rows = query(tmp_path, "audit-test")
    none, fare = ({r["metric"]: r["value"] for r in rows if r["cell_hash"] == s["cell_hash"]} for s in summaries)
    assert set(fare) == set(DRIFT)  # only what was asked for
    assert none["masking_checks_failed"] == 0
    assert none["embedding_drift_sq_l2"] == 0 and none["embedding_drift_cosine"] == pytest.approx(1, abs=1e-6)
    assert fare["embedding_drift_sq_l2"] > 0.01 and fare["embedding_drift_cosine"] < 0.999, fare
    assert none["embedding_sq_norm"] == fare["embedding_sq_norm"] > 1  # the published model's, in both cells
    threat = {r["metric"]: r["threat_model"] for r in rows}
    assert threat["embedding_drift_sq_l2"].startswith("clean inputs: the cell's (defended) model")


def test_the_audit_recipes_reuse_the_leaderboard_defenses():
    board = load_spec(RECIPES / "robustness.yaml")
    for stem in ("masking_checks", "adv_finetune"):
        spec = load_spec(RECIPES / f"{stem}.yaml", preset="paper")
        # the same entries: in one results folder the defended models are trained once for all three recipes
        assert all(d in board.defenses for d in spec.defenses), stem
        assert set(spec.models) == set(board.models)
    masking = expand(load_spec(RECIPES / "masking_checks.yaml"))
    assert len(masking) == 2 * 4 * 2  # (model, its defenses: none, tecoa, fare, advpt) x two budgets
    assert all("masking_checks_failed" in c.config["metrics"] for c in masking)
    finetune = expand(load_spec(RECIPES / "adv_finetune.yaml"))
    assert len(finetune) == 2 * 3 * (4 + 2)  # (model, none/tecoa/fare) x (PGD at 4 budgets, ensemble at 2)
