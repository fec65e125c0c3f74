"""Claims of the CLIP track's backdoor side: poisoning and backdoor attacks on CLIP, their defenses, model
merging.

Each effect reads one seed's cells of its recipe (:class:`~mmsec.claims.base.Cells`); the recipe's header
comment states the claim and its setting, and ``benchmarks/README.md`` has the one-seed figures these
claims were first read from.

Bars are the acceptance bars of the issues that asked for each method (issue 6: attacks; issue 7:
defenses; issue 18: PSBD, whose victim is a shapes classifier). Where an issue states a claim without a
number ("clearly higher", "cuts ASR") or not at all, the claim's statement says which bar it borrows and
from where. Where an issue asks two things at once ("ASR >= 90% at a clean cost of at most 2 points"),
each is its own claim, so a verdict says which half holds. Rates and costs are as the tasks store them:
ASR, Hit@10 and AUROC as fractions, clean-accuracy drops and costs in points (0-100).
"""

from __future__ import annotations

from .base import Cells, Claim, MissingResult

RESNET = "zoo:shapes-clip-resnet"
JUDGE = "zoo:shapes-judge"  # (PSBD's victim architecture)
YANG_ATTACKS = ("yang_single_target_image", "yang_single_target_label", "yang_multiple_target_label")
MERGING_METHODS = ("weight_averaging", "task_arithmetic", "ties", "regmean", "adamerging")
OUTLIER_DETECTORS = ("kdist", "slof", "lid", "dao")


def _cut(c: Cells, defense: str, attack: str = "pbcl_backdoor") -> float:
    """ASR before minus after ``defense``, both measured in the defense's cell (the same backdoored model;
    for a pre-training defense, before = plain training on the same poisoned pairs)."""
    on = {"model": RESNET, "attack": attack, "defense": defense}
    return c.value("backdoor_asr_undefended", **on) - c.value("backdoor_asr", **on)


def _per_merge(c: Cells, metric: str, **where) -> dict[str, float]:
    """``metric`` per merging method (the name before its parameters); every method in MERGING_METHODS must
    be there, so a seed with a merge missing is incomplete rather than judged on the others."""
    found = {str(rec["params"]["merging"]).split("(")[0]: v for rec, v in c.values(metric, **where)}
    missing = [m for m in MERGING_METHODS if m not in found]
    if missing:
        raise MissingResult(f"seed {c.seed}: no finished cell with {metric} merged by {', '.join(missing)}")
    return {m: found[m] for m in MERGING_METHODS}


# -- PBCL (Carlini & Terzis): fine-tuning at 1% (backdoor.yaml), pre-training from scratch (poison_rate.yaml) --
def _pbcl_asr_finetune_1pct(c: Cells) -> float:
    """Zero-shot ASR of the zoo ResNet fine-tuned on 1% PBCL-poisoned pairs (no defense)."""
    return c.value("backdoor_asr", model=RESNET, attack="pbcl_backdoor", defense="none")


def _pbcl_drop_finetune_1pct(c: Cells) -> float:
    """Clean zero-shot accuracy of the clean-pair control minus the 1%-poisoned model's, in points."""
    return c.value("clean_accuracy_drop", model=RESNET, attack="pbcl_backdoor", defense="none")


def _pbcl_asr_pretrain_1pct(c: Cells) -> float:
    """Zero-shot ASR after pre-training from scratch on a stream with 1% PBCL pairs."""
    return c.value("backdoor_asr", model=RESNET, attack="pbcl_backdoor", rate=0.01)


def _pbcl_asr_pretrain_01pct(c: Cells) -> float:
    """Zero-shot ASR after pre-training from scratch on a stream with 0.1% PBCL pairs (the dev grid's lowest
    rate)."""
    return c.value("backdoor_asr", model=RESNET, attack="pbcl_backdoor", rate=0.001)


# -- BadEncoder (Jia, Liu, Gong) ------------------------------------------------------------------------------
def _badencoder_probe_asr(c: Cells) -> float:
    """ASR of a linear probe fit on the backdoored tower's clean embeddings after the attack."""
    return c.value("backdoor_asr_probe", model=RESNET, attack="badencoder")


def _badencoder_clean_drop(c: Cells) -> float:
    """Clean zero-shot accuracy of the published model minus the backdoored tower's, in points."""
    return c.value("clean_accuracy_drop", model=RESNET, attack="badencoder")


# -- BadCLIP (Liang et al.) vs a plain patch, after CleanCLIP --------------------------------------------------
def _badclip_over_patch_after_cleanclip(c: Cells) -> float:
    """BadCLIP's ASR after CleanCLIP minus the plain (PBCL) patch's after the same CleanCLIP, same place."""
    after = {"model": RESNET, "defense": "cleanclip"}
    return c.value("backdoor_asr", attack="badclip", **after) - c.value("backdoor_asr", attack="pbcl_backdoor", **after)


# -- BadMerging (Zhang et al.), off-task: the target "circle" is a class of the shape task, not the attacker's --
def _badmerging_off_task_worst_merge(c: Cells) -> float:
    """BadMerging's off-task ASR on the merged model, the lowest over the five merging methods."""
    return min(_per_merge(c, "merged_asr", model=RESNET, attack="badmerging", target_task="shape").values())


def _plain_patch_off_task_kept(c: Cells) -> float:
    """The plain patch's off-task ASR after merging as a share of its ASR in the attacker's task model alone,
    averaged over the five merging methods."""
    on = {"model": RESNET, "attack": "patch_backdoor", "target_task": "shape"}
    merged = _per_merge(c, "merged_asr", **on)
    alone = _per_merge(c, "task_model_asr", **on)
    if min(alone.values()) <= 0:
        return float("inf")  # the backdoor never took in the task model: "fades" has no meaning
    return sum(merged[m] / alone[m] for m in MERGING_METHODS) / len(MERGING_METHODS)


# -- defenses: the cut of a patch backdoor's ASR and the clean-accuracy cost -----------------------------------
def _cleanclip_cut(c: Cells) -> float:
    """PBCL's ASR before minus after CleanCLIP (fine-tune poisoning at 1%)."""
    return _cut(c, "cleanclip")


def _cleanclip_cost(c: Cells) -> float:
    """Clean zero-shot accuracy before minus after CleanCLIP, in points."""
    return c.value("clean_accuracy_cost", model=RESNET, attack="pbcl_backdoor", defense="cleanclip")


def _roclip_cut(c: Cells) -> float:
    """PBCL's ASR after plain pre-training minus after RoCLIP pre-training on the same poisoned pairs."""
    return _cut(c, "roclip")


def _roclip_cost(c: Cells) -> float:
    """Clean zero-shot accuracy of plain pre-training minus RoCLIP's, in points."""
    return c.value("clean_accuracy_cost", model=RESNET, attack="pbcl_backdoor", defense="roclip")


def _safeclip_cut(c: Cells) -> float:
    """PBCL's ASR after plain pre-training minus after SafeCLIP pre-training on the same poisoned pairs."""
    return _cut(c, "safeclip")


def _safeclip_cost(c: Cells) -> float:
    """Clean zero-shot accuracy of plain pre-training minus SafeCLIP's, in points."""
    return c.value("clean_accuracy_cost", model=RESNET, attack="pbcl_backdoor", defense="safeclip")


def _kdist_auroc(c: Cells) -> float:
    """AUROC of k-dist ranking the 1%-poisoned fine-tuning pairs above the clean ones."""
    return c.value("detector_auroc", model=RESNET, attack="pbcl_backdoor", defense="kdist")


def _worst_detector_auroc(c: Cells) -> float:
    """The lowest AUROC of the four local outlier scores (k-dist, SLOF, LID, DAO) on the same pairs."""
    return min(c.value("detector_auroc", model=RESNET, attack="pbcl_backdoor", defense=d) for d in OUTLIER_DETECTORS)


def _seer_separates(c: Cells) -> float:
    """SEER's verdict on the PBCL-backdoored model minus its verdict on the clean control (1: flags the
    backdoored model and not the clean one; 0 or -1 otherwise)."""
    on = {"model": RESNET, "attack": "pbcl_backdoor", "defense": "seer"}
    return c.value("model_detector_flagged", **on) - c.value("model_detector_flagged_control", **on)


def _mudjacking_cut(c: Cells) -> float:
    """BadEncoder's ASR before minus after Mudjacking's repair (mean over the repairs, one bug input each)."""
    return _cut(c, "mudjacking", attack="badencoder")


def _mudjacking_worst_cost(c: Cells) -> float:
    """The largest clean zero-shot cost over Mudjacking's repairs, in points."""
    return c.value("repair_clean_cost_max", model=RESNET, attack="badencoder", defense="mudjacking")


def _invertune_cut(c: Cells) -> float:
    """PBCL's ASR before minus after InverTune (fine-tune poisoning at 1%)."""
    return _cut(c, "invertune")


def _invertune_cost(c: Cells) -> float:
    """Clean zero-shot accuracy before minus after InverTune, in points."""
    return c.value("clean_accuracy_cost", model=RESNET, attack="pbcl_backdoor", defense="invertune")


# -- further poisoning attacks and a poisoned-sample detector --------------------------------------------------
def _yang_worst_attack_margin(c: Cells) -> float:
    """Hit@10 of the poisoned model minus the larger of the control's and random captions' Hit@10, the lowest
    over Yang et al.'s attacks I, II and III."""
    def margin(attack: str) -> float:
        on = {"model": RESNET, "attack": attack}
        baseline = max(c.value("hit_at_10_control", **on), c.value("random_hit_at_10", **on))
        return c.value("hit_at_10", **on) - baseline
    return min(margin(a) for a in YANG_ATTACKS)


def _corruptencoder_probe_asr(c: Cells) -> float:
    """ASR of a linear probe fit on clean labelled data after SimCLR pre-training on CorruptEncoder's images."""
    return c.value("probe_asr", model=RESNET, attack="corruptencoder")


def _psbd_auroc(c: Cells) -> float:
    """AUROC of PSBD's prediction-shift score ranking the BadNets-poisoned training images first."""
    return c.value("detection_auroc", model=JUDGE, attack="patch", defense="psbd")


PBCL = "Carlini, Terzis, ICLR 2022 (PBCL)"
BADENCODER = "Jia, Liu, Gong, IEEE S&P 2022 (BadEncoder)"
BADCLIP = "Liang, Zhu, Liu, Wu, Cao, Chang, CVPR 2024 (BadCLIP)"
BADMERGING = "Zhang, Chi, Li, Cai, Zhang, Tian, ACM CCS 2024 (BadMerging)"
CLEANCLIP = "Bansal, Singhi, Yang, Yin, Grover, Chang, ICCV 2023 (CleanCLIP)"
ROCLIP = "Yang, Gao, Mirzasoleiman, NeurIPS 2023 (RoCLIP)"
SAFECLIP = "Yang, Gao, Mirzasoleiman, ICML 2024 (SafeCLIP)"
OUTLIERS = "Huang, Erfani, Li, Ma, Bailey, ICLR 2025 (local outlier scores)"
SEER = "Zhu, Ning, Li, Xin, Wu, AAAI 2024 (SEER)"
MUDJACKING = "Liu, Reiter, Gong, USENIX Security 2024 (Mudjacking)"
INVERTUNE = "Sun, Li, Liu, Du, Ge, arXiv 2025 (InverTune)"
YANG = "Yang, He, Li, Backes, Humbert, Berrang, Zhang, ICML 2023 (multimodal targeted poisoning)"
CORRUPTENCODER = "Zhang, Liu, Jia, Gong, CVPR 2024 (CorruptEncoder)"
PSBD = "Li, Chen, Liu, Wang, CVPR 2025 (PSBD)"
ASR = "ASR (fraction)"
ASR_POINTS = "ASR points (fraction)"
CLEAN_POINTS = "clean-accuracy points (0-100)"

BACKDOOR_CLAIMS: tuple[Claim, ...] = (
    Claim(
        name="backdoor.pbcl_asr_at_1pct", version=1, paper=PBCL,
        statement="fine-tuning the zoo ResNet CLIP on pairs of which 1% carry PBCL's 4 x 4 patch and captions of "
                  "the target class gives a zero-shot ASR of at least 90%",
        recipe="backdoor.yaml", effect=_pbcl_asr_finetune_1pct, bar=0.9, unit=ASR, metrics=("backdoor_asr",)),
    Claim(
        name="backdoor.pbcl_clean_drop_at_1pct", version=1, paper=PBCL,
        statement="that 1% poisoning costs at most 2 points of clean zero-shot accuracy against the same "
                  "fine-tuning on clean pairs",
        recipe="backdoor.yaml", effect=_pbcl_drop_finetune_1pct, bar=2.0, direction="<=", unit=CLEAN_POINTS,
        metrics=("clean_accuracy_drop",)),
    Claim(
        name="poison_rate.pbcl_asr_at_1pct", version=1, paper=PBCL,
        statement="pre-training the zoo ResNet CLIP from scratch on a stream of which 1% carries PBCL's patch "
                  "and target captions gives a zero-shot ASR of at least 90%",
        recipe="poison_rate.yaml", effect=_pbcl_asr_pretrain_1pct, bar=0.9, unit=ASR, metrics=("backdoor_asr",)),
    Claim(
        name="poison_rate.pbcl_asr_at_0_1pct", version=1, paper=PBCL,
        statement="the poison-rate curve's low end: at 0.1% of the pre-training stream (ten times the 0.01% the "
                  "paper needs) PBCL still reaches a zero-shot ASR of at least 90%",
        recipe="poison_rate.yaml", effect=_pbcl_asr_pretrain_01pct, bar=0.9, unit=ASR, metrics=("backdoor_asr",)),
    Claim(
        name="badencoder.probe_asr", version=1, paper=BADENCODER,
        statement="BadEncoder's backdoored image tower sends at least 90% of triggered images to the target "
                  "through a linear probe fit after the attack",
        recipe="badencoder.yaml", effect=_badencoder_probe_asr, bar=0.9, unit=ASR, metrics=("backdoor_asr_probe",)),
    Claim(
        name="badencoder.clean_drop", version=1, paper=BADENCODER,
        statement="the backdoored tower's clean zero-shot accuracy is within 3 points of the published model's",
        recipe="badencoder.yaml", effect=_badencoder_clean_drop, bar=3.0, direction="<=", unit=CLEAN_POINTS,
        metrics=("clean_accuracy_drop",)),
    Claim(
        name="badclip_persistence.outlasts_patch_under_cleanclip", version=1, paper=BADCLIP,
        statement="after the same CleanCLIP clean-up (lr 1e-3), BadCLIP's optimised centre patch keeps a zero-shot "
                  "ASR at least 20 points above a plain centre patch poisoned at the same rate ('clearly higher': "
                  "the issues give no number; 20 points is this ledger's reading)",
        recipe="badclip_persistence.yaml", effect=_badclip_over_patch_after_cleanclip, bar=0.2, unit=ASR_POINTS,
        metrics=("backdoor_asr",)),
    Claim(
        name="badmerging.off_task_asr_every_merge", version=1, paper=BADMERGING,
        statement="a BadMerging texture model with an off-task target (the shape 'circle') keeps an ASR of at "
                  "least 90% on the merged model under every merging method (averaging, task arithmetic, TIES, "
                  "RegMean, AdaMerging)",
        recipe="badmerging.yaml", effect=_badmerging_off_task_worst_merge, bar=0.9, unit=ASR,
        metrics=("merged_asr",)),
    Claim(
        name="badmerging.plain_patch_fades_off_task", version=1, paper=BADMERGING,
        statement="a plain patch backdoor in the same task model loses most of its off-task ASR in the merge: "
                  "after merging it keeps at most half of its ASR in the task model alone (mean over the five "
                  "methods)",
        recipe="badmerging.yaml", effect=_plain_patch_off_task_kept, bar=0.5, direction="<=",
        unit="share of the task model's ASR", metrics=("merged_asr", "task_model_asr")),
    Claim(
        name="defense_matrix.cleanclip_cuts_patch_asr", version=1, paper=CLEANCLIP,
        statement="CleanCLIP (300 steps at lr 1e-3 on 2,000 clean pairs) cuts the zero-shot ASR of PBCL's patch "
                  "backdoor (1% of a fine-tune) by at least 70 points",
        recipe="defense_matrix.yaml", effect=_cleanclip_cut, bar=0.7, unit=ASR_POINTS,
        metrics=("backdoor_asr", "backdoor_asr_undefended")),
    Claim(
        name="defense_matrix.cleanclip_clean_cost", version=1, paper=CLEANCLIP,
        statement="that CleanCLIP clean-up costs at most 5 points of clean zero-shot accuracy",
        recipe="defense_matrix.yaml", effect=_cleanclip_cost, bar=5.0, direction="<=", unit=CLEAN_POINTS,
        metrics=("clean_accuracy_cost",)),
    Claim(
        name="robust_pretraining.roclip_cuts_patch_asr", version=1, paper=ROCLIP,
        statement="pre-training with RoCLIP instead of plain CLIP on the same pairs (1% PBCL patch) cuts the "
                  "zero-shot ASR by at least 70 points",
        recipe="robust_pretraining.yaml", effect=_roclip_cut, bar=0.7, unit=ASR_POINTS,
        metrics=("backdoor_asr", "backdoor_asr_undefended")),
    Claim(
        name="robust_pretraining.roclip_clean_cost", version=1, paper=ROCLIP,
        statement="RoCLIP's pre-training costs at most 5 points of clean zero-shot accuracy against plain CLIP",
        recipe="robust_pretraining.yaml", effect=_roclip_cost, bar=5.0, direction="<=", unit=CLEAN_POINTS,
        metrics=("clean_accuracy_cost",)),
    Claim(
        name="defense_matrix_pretraining.safeclip_cuts_patch_asr", version=1, paper=SAFECLIP,
        statement="pre-training with SafeCLIP instead of plain CLIP on the same pairs (1% PBCL patch) cuts the "
                  "zero-shot ASR by at least 70 points",
        recipe="defense_matrix_pretraining.yaml", effect=_safeclip_cut, bar=0.7, unit=ASR_POINTS,
        metrics=("backdoor_asr", "backdoor_asr_undefended")),
    Claim(
        name="defense_matrix_pretraining.safeclip_clean_cost", version=1, paper=SAFECLIP,
        statement="SafeCLIP's pre-training costs at most 5 points of clean zero-shot accuracy against plain CLIP",
        recipe="defense_matrix_pretraining.yaml", effect=_safeclip_cost, bar=5.0, direction="<=", unit=CLEAN_POINTS,
        metrics=("clean_accuracy_cost",)),
    Claim(
        name="outlier_detection.kdist_auroc", version=1, paper=OUTLIERS,
        statement="k-dist on the backdoored model's image embeddings ranks the 1% PBCL-poisoned fine-tuning pairs "
                  "above the clean ones with an AUROC of at least 0.9",
        recipe="outlier_detection.yaml", effect=_kdist_auroc, bar=0.9, unit="AUROC", metrics=("detector_auroc",)),
    Claim(
        name="outlier_detection.every_detector_auroc", version=1, paper=OUTLIERS,
        statement="each of the four local outlier scores (k-dist, SLOF, LID, DAO) reaches an AUROC of at least "
                  "0.9 on those pairs (the effect: the lowest of the four)",
        recipe="outlier_detection.yaml", effect=_worst_detector_auroc, bar=0.9, unit="AUROC",
        metrics=("detector_auroc",)),
    Claim(
        name="seer.flags_backdoored_not_clean", version=1, paper=SEER,
        statement="SEER (threshold 2.5) flags the PBCL-backdoored zoo ResNet and does not flag its clean control "
                  "(the effect: flagged minus flagged control, 1 when both verdicts are right)",
        recipe="seer.yaml", effect=_seer_separates, bar=1.0, unit="verdict difference",
        metrics=("model_detector_flagged", "model_detector_flagged_control")),
    Claim(
        name="mudjacking.cuts_asr", version=1, paper=MUDJACKING,
        statement="Mudjacking's repair from one bug input cuts BadEncoder's zero-shot ASR by at least 70 points "
                  "(mean over the repairs; issue 7 asks 'cuts ASR' with no number, 70 is its bar for the "
                  "other clean-ups)",
        recipe="mudjacking.yaml", effect=_mudjacking_cut, bar=0.7, unit=ASR_POINTS,
        metrics=("backdoor_asr", "backdoor_asr_undefended")),
    Claim(
        name="mudjacking.worst_repair_clean_cost", version=1, paper=MUDJACKING,
        statement="every repair keeps clean zero-shot accuracy within 3 points (the effect: the worst repair's "
                  "cost)",
        recipe="mudjacking.yaml", effect=_mudjacking_worst_cost, bar=3.0, direction="<=", unit=CLEAN_POINTS,
        metrics=("repair_clean_cost_max",)),
    Claim(
        name="invertune.cuts_asr", version=1, paper=INVERTUNE,
        statement="InverTune (64 clean images for the tuning) cuts the zero-shot ASR of PBCL's patch backdoor "
                  "(1% of a fine-tune) by at least 90 points",
        recipe="invertune.yaml", effect=_invertune_cut, bar=0.9, unit=ASR_POINTS,
        metrics=("backdoor_asr", "backdoor_asr_undefended")),
    Claim(
        name="invertune.clean_cost", version=1, paper=INVERTUNE,
        statement="InverTune's clean-up costs at most 3 points of clean zero-shot accuracy",
        recipe="invertune.yaml", effect=_invertune_cost, bar=3.0, direction="<=", unit=CLEAN_POINTS,
        metrics=("clean_accuracy_cost",)),
    Claim(
        name="targeted_poisoning.yang_attacks_retrieve_target", version=1, paper=YANG,
        statement="after fine-tuning on pairs poisoned by each of Yang et al.'s attacks I, II and III, the class-A "
                  "test captions retrieve the attacker's target in the top 10 at least 90 points more often than "
                  "on the clean control or for random captions (issue 6 gives no bar; 0.9 is its bar for backdoor "
                  "ASR, and 'far above' the recipe's words)",
        recipe="targeted_poisoning.yaml", effect=_yang_worst_attack_margin, bar=0.9, unit="Hit@10 points (fraction)",
        metrics=("hit_at_10", "hit_at_10_control", "random_hit_at_10")),
    Claim(
        name="corruptencoder.probe_asr", version=1, paper=CORRUPTENCODER,
        statement="SimCLR pre-training on a set with CorruptEncoder's poisoned images gives a backdoor a linear "
                  "probe fit afterwards inherits: probe ASR of at least 90% (issue 6 gives no bar for "
                  "CorruptEncoder; 0.9 is its bar for BadEncoder's probe ASR)",
        recipe="corruptencoder.yaml", effect=_corruptencoder_probe_asr, bar=0.9, unit=ASR, metrics=("probe_asr",)),
    Claim(
        name="psbd.detection_auroc", version=1, paper=PSBD,
        statement="PSBD ranks the BadNets-poisoned training images of a shapes classifier (10%, all-to-one) above "
                  "the clean ones with an AUROC of at least 0.9",
        recipe="psbd.yaml", effect=_psbd_auroc, bar=0.9, unit="AUROC", metrics=("detection_auroc",)),
)

__all__ = ["BACKDOOR_CLAIMS"]
