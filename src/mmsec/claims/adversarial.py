"""Claims of the CLIP track's adversarial side: evasion attacks on CLIP-like models and their defenses.

Each effect reads one seed's cells of its recipe (:class:`~mmsec.claims.base.Cells`); the recipe's header
comment states the claim and its setting, and ``benchmarks/README.md`` has the one-seed figures these
claims were first read from.
"""

from __future__ import annotations

from .base import Cells, Claim

FUSION = "zoo:shapes-albef"
RESNET = "zoo:shapes-clip-resnet"


def _quickstart_pgd(c: Cells) -> float:
    """Accuracy under the noise baseline minus accuracy under PGD-10 at 4/255 (the same budget)."""
    return (c.value("noise_accuracy", attack="pgd", eps="4/255")
            - c.value("robust_accuracy", attack="pgd", eps="4/255"))


def _co_attack_margin(c: Cells) -> float:
    """co - max(image, text) ASR on the fusion model, white-box, at the largest eps where image-only PGD
    breaks fewer than 60% of the pairs (where neither modality alone dominates)."""
    on = {"model": FUSION, "target": FUSION, "attack": "co_attack"}
    image = {float(r["params"]["eps"]): v for r, v in c.values("asr", **on, mode="image")}
    budgets = [eps for eps, asr in image.items() if asr < 0.6]
    if not budgets:
        return float("-inf")  # image-only PGD alone breaks most pairs at every budget: the claim has no setting
    eps = max(budgets)
    return c.value("asr", **on, mode="co", eps=eps) - max(image[eps], c.value("asr", **on, mode="text", eps=eps))


ADVERSARIAL_CLAIMS: tuple[Claim, ...] = (
    Claim(
        name="quickstart.pgd_beats_noise",
        version=1,
        paper="Madry, Makelov, Schmidt, Tsipras, Vladu, ICLR 2018 (PGD)",
        statement="PGD-10 (L-inf, 4/255) on the zoo ResNet CLIP's zero-shot classifier cuts accuracy at least "
                  "50 points more than uniform noise of the same budget",
        recipe="quickstart.yaml",
        effect=_quickstart_pgd,
        bar=0.5,
        unit="accuracy points (fraction)",
        metrics=("noise_accuracy", "robust_accuracy"),
    ),
    Claim(
        name="co_attack.beats_single_modality",
        version=1,
        paper="Zhang, Yi, Sang, ACM MM 2022 (Co-Attack)",
        statement="on the fusion model (white-box, one-typo text attack), Co-Attack's retrieval ASR exceeds both "
                  "single-modality attacks by at least 5 points at the largest budget where image-only PGD "
                  "succeeds on less than 60% of pairs",
        recipe="co_attack.yaml",
        effect=_co_attack_margin,
        bar=0.05,
        unit="ASR points (fraction)",
        metrics=("asr",),
    ),
)

__all__ = ["ADVERSARIAL_CLAIMS"]
