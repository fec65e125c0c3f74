"""Claims of the diffusion track: backdoors of diffusion models (BadDiffusion, TrojDiff, BadT2I) and their
defenses (Elijah, TERD, UFID), with the bars of the diffusion issue's acceptance.

Each effect reads one seed's cells of its recipe (:class:`~mmsec.claims.base.Cells`). The dev presets are the
recipes' settings at a quarter of the data and steps: a claim that holds at the paper preset may miss at dev
(``mmsec claims --preset paper --claim NAME`` measures it at the published size).
"""

from __future__ import annotations

from .base import Cells, Claim

BADDIFFUSION = {"attack": "baddiffusion", "coefficient": "ddim"}  # VillanDiffusion's DDIM-compatible target
PAPER = "Chou, Chen, Ho, CVPR 2023 (BadDiffusion)"


def _baddiffusion_hit(c: Cells) -> float:
    """Triggered samples the judge gives the target class (p > 0.9)."""
    return c.value("target_hit_rate", **BADDIFFUSION)


def _baddiffusion_clean_hit(c: Cells) -> float:
    """Clean-noise samples of the backdoored model the judge gives the target class."""
    return c.value("clean_target_hit_rate", **BADDIFFUSION)


def _baddiffusion_quality(c: Cells) -> float:
    """Clean recognition of the clean model minus the backdoored model's, on the same noises."""
    return c.value("clean_recognition_drop", **BADDIFFUSION)


def _trojdiff_in_d2d_hit(c: Cells) -> float:
    """TrojDiff's in-distribution target class hit by the triggered samples (the Trojan sampler)."""
    return c.value("target_hit_rate", attack="trojdiff", target_kind="in_d2d")


def _badt2i_object(c: Cells) -> float:
    """Prompts naming the source object that draw the target object when the trigger word is in them."""
    return c.value("t2i_backdoor_effect", attack="badt2i", target_kind="object")


def _badt2i_object_adherence(c: Cells) -> float:
    """Prompt adherence of the clean model minus the backdoored model's, without the trigger."""
    return c.value("prompt_adherence_drop", attack="badt2i", target_kind="object")


def _ufid_auroc(c: Cells) -> float:
    """UFID's AUROC of triggered vs clean starting noises on the BadDiffusion model."""
    return c.value("input_detector_auroc", defense="ufid", **BADDIFFUSION)


def _terd_input_auroc(c: Cells) -> float:
    """TERD's input-detection AUROC of triggered vs clean starting noises on the BadDiffusion model."""
    return c.value("input_detector_auroc", defense="terd_input", **BADDIFFUSION)


def _detects(defense: str):
    def effect(c: Cells) -> float:
        """1 when the detector flags the backdoored model and none of the clean ones, else 0."""
        flagged = c.value("model_detector_flagged", defense=defense, **BADDIFFUSION)
        false_alarms = c.value("model_detector_flagged_control", defense=defense, **BADDIFFUSION)
        return float(flagged == 1.0 and false_alarms == 0.0)
    effect.__name__ = f"_{defense}_detects"
    return effect


def _elijah_removal(c: Cells) -> float:
    """Target hit of triggered samples after Elijah's removal fine-tune."""
    return c.value("target_hit_rate_repaired", defense="elijah_removal", **BADDIFFUSION)


def _elijah_removal_cost(c: Cells) -> float:
    """Clean recognition lost by Elijah's removal fine-tune."""
    return c.value("repair_recognition_cost", defense="elijah_removal", **BADDIFFUSION)


_DETECTION = "flags the BadDiffusion model and none of the clean controls (the clean model and 2 clean fine-tunes)"

DIFFUSION_CLAIMS: tuple[Claim, ...] = (
    Claim("diffusion_backdoor.baddiffusion_hits_target", 1, PAPER,
          "BadDiffusion (DDIM-compatible target): at least 70% of triggered DDIM samples are the target class",
          "diffusion_backdoor.yaml", _baddiffusion_hit, 0.7, unit="hit rate", metrics=("target_hit_rate",)),
    Claim("diffusion_backdoor.baddiffusion_spares_clean_noise", 1, PAPER,
          "BadDiffusion: at most 2% of the backdoored model's clean-noise samples are the target class",
          "diffusion_backdoor.yaml", _baddiffusion_clean_hit, 0.02, "<=", "hit rate",
          metrics=("clean_target_hit_rate",)),
    Claim("diffusion_backdoor.baddiffusion_keeps_quality", 1, PAPER,
          "BadDiffusion: clean recognition of the backdoored model within 5 points below the clean model's",
          "diffusion_backdoor.yaml", _baddiffusion_quality, 0.05, "<=", "recognition points (fraction)",
          metrics=("clean_recognition_drop",)),
    Claim("diffusion_backdoor.trojdiff_in_d2d_hits_target", 1, "Chen, Song, Li, CVPR 2023 (TrojDiff)",
          "TrojDiff in-D2D (white 3 x 3 patch): at least 70% of Trojan samples are the target class",
          "diffusion_backdoor.yaml", _trojdiff_in_d2d_hit, 0.7, unit="hit rate", metrics=("target_hit_rate",)),
    Claim("t2i_backdoor.badt2i_object", 1, "Zhai, Dong, Shen, Pu, Fang, Su, ACM MM 2023 (BadT2I)",
          "BadT2I object backdoor (circle -> cross, trigger 'there'): at least 70% of triggered circle prompts "
          "draw a cross", "t2i_backdoor.yaml", _badt2i_object, 0.7, unit="effect rate",
          metrics=("t2i_backdoor_effect",)),
    Claim("t2i_backdoor.badt2i_object_keeps_adherence", 1, "Zhai, Dong, Shen, Pu, Fang, Su, ACM MM 2023 (BadT2I)",
          "BadT2I object backdoor: prompt adherence without the trigger within 5 points of the clean model's",
          "t2i_backdoor.yaml", _badt2i_object_adherence, 0.05, "<=", "adherence points (fraction)",
          metrics=("prompt_adherence_drop",)),
    Claim("diffusion_defenses.ufid_detects_triggered_noise", 1, "Guan, Hu, Li, Vullikanti, AAAI 2025 (UFID)",
          "UFID tells triggered from clean starting noises of the BadDiffusion model at AUROC >= 0.9",
          "diffusion_defenses.yaml", _ufid_auroc, 0.9, unit="AUROC", metrics=("input_detector_auroc",)),
    Claim("diffusion_defenses.terd_detects_triggered_noise", 1, "Mo, Huang, Li, Li, Wang, ICML 2024 (TERD)",
          "TERD's input detection tells triggered from clean starting noises at AUROC >= 0.9",
          "diffusion_defenses.yaml", _terd_input_auroc, 0.9, unit="AUROC", metrics=("input_detector_auroc",)),
    Claim("diffusion_defenses.elijah_detects_model", 1, "An et al., AAAI 2024 (Elijah)", f"Elijah {_DETECTION}",
          "diffusion_defenses.yaml", _detects("elijah"), 1.0, unit="1 = right on every model",
          metrics=("model_detector_flagged", "model_detector_flagged_control")),
    Claim("diffusion_defenses.terd_detects_model", 1, "Mo, Huang, Li, Li, Wang, ICML 2024 (TERD)",
          f"TERD {_DETECTION}", "diffusion_defenses.yaml", _detects("terd"), 1.0, unit="1 = right on every model",
          metrics=("model_detector_flagged", "model_detector_flagged_control")),
    Claim("diffusion_defenses.elijah_removal_removes", 1, "An et al., AAAI 2024 (Elijah)",
          "Elijah's removal brings the BadDiffusion model's target hit to 0.1 or below",
          "diffusion_defenses.yaml", _elijah_removal, 0.1, "<=", "hit rate",
          metrics=("target_hit_rate_repaired",)),
    Claim("diffusion_defenses.elijah_removal_cost", 1, "An et al., AAAI 2024 (Elijah)",
          "Elijah's removal costs at most 5 points of clean recognition",
          "diffusion_defenses.yaml", _elijah_removal_cost, 0.05, "<=", "recognition points (fraction)",
          metrics=("repair_recognition_cost",)),
)

__all__ = ["DIFFUSION_CLAIMS"]
