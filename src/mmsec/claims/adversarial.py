"""Claims of the CLIP track's adversarial side: evasion attacks on CLIP-like models and their defenses.

Each effect reads one seed's cells of its recipe (:class:`~mmsec.claims.base.Cells`); the recipe's header
comment states the claim and its setting, and ``benchmarks/README.md`` has the one-seed figures these
claims were first read from.

Not in the ledger yet, because no recipe's ``dev`` preset measures them: AdvPT (under its own text-free
embedding attack and under an adaptive attack: ``recipes/robustness.yaml`` and ``masking_checks.yaml`` train
it only at their ``paper`` preset, and no attack of task ``zeroshot`` runs AdvPT's own evaluation attack), and
the ViT rows of TeCoA and FARE (``adv_finetune.yaml``'s dev preset has the ResNet CLIP only).
"""

from __future__ import annotations

from .base import Cells, Claim, MissingResult

FUSION = "zoo:shapes-albef"
RESNET = "zoo:shapes-clip-resnet"
VIT = "zoo:shapes-clip-vit"
LEADERBOARD_EPS = ("1/255", "2/255", "4/255", "8/255")
NO_SETTING = float("-inf")  # the seed has no budget where the claim's setting holds: the claim fails there


def _quickstart_pgd(c: Cells) -> float:
    """Accuracy under the noise baseline minus accuracy under PGD-10 at 4/255 (the same budget)."""
    return (c.value("noise_accuracy", attack="pgd", eps="4/255")
            - c.value("robust_accuracy", attack="pgd", eps="4/255"))


def _co_attack_margin(c: Cells) -> float:
    """co - max(image, text) ASR on the fusion model, white-box, the smallest over the budgets where image-only
    PGD breaks fewer than 60% of the pairs (the issue's "a budget where there is room to improve"; it names no
    single one, so the claim must hold at each)."""
    on = {"model": FUSION, "target": FUSION, "attack": "co_attack"}
    image = {float(r["params"]["eps"]): v for r, v in c.values("asr", **on, mode="image")}
    budgets = [eps for eps, asr in image.items() if asr < 0.6]
    if not budgets:
        return NO_SETTING  # image-only PGD alone breaks most pairs at every budget: the claim has no setting
    return min(c.value("asr", **on, mode="co", eps=eps) - max(image[eps], c.value("asr", **on, mode="text", eps=eps))
               for eps in budgets)


# -- SGA transfer (recipes/transfer.yaml) --------------------------------------------------------------------
CLIP_TRANSFERS = ((RESNET, VIT), (RESNET, FUSION), (VIT, RESNET), (VIT, FUSION))  # (source, target)


def _sga_transfer_margin(c: Cells) -> float:
    """SGA's transfer ASR minus the better of Co-Attack's and image-only PGD's (Co-Attack mode image), in the
    worst of the four transfers from a tiny CLIP (to the other CLIP, to the fusion model) at 2 and 4/255."""
    margins = []
    for source, target in CLIP_TRANSFERS:
        for eps in ("2/255", "4/255"):
            at = {"model": source, "target": target, "eps": eps}
            sga = c.value("asr", attack="sga", **at)
            co = c.value("asr", attack="co_attack", mode="co", **at)
            pgd = c.value("asr", attack="co_attack", mode="image", **at)
            margins.append(sga - max(co, pgd))
    return min(margins)


# -- AdvCLIP vs a random patch (recipes/advclip.yaml) --------------------------------------------------------
PROBES = ("probe_color", "probe_position")  # the linear probes downstream users fit after the patch exists
MIN_DROP = 0.01  # one accuracy point: the smallest drop that counts as lowering the probes at all


def _advclip_vs_random(c: Cells, world: str) -> float:
    """AdvCLIP's drop of the post-hoc probes' accuracy minus 3x the random patch's (mean over the colour and
    position probes), on the ResNet CLIP in ``world``: >= 0 when the patch lowers them at least 3x more *and* by
    at least one point (MIN_DROP): a patch that lowers nothing is not "3x a random patch that lowers nothing"."""
    at = {"model": RESNET, "attack": "advclip", "world": world}
    patch = sum(c.value(f"{p}_drop", **at) for p in PROBES) / len(PROBES)
    random_patch = sum(c.value(f"{p}_drop_noise", **at) for p in PROBES) / len(PROBES)
    return min(patch - 3 * random_patch, patch - MIN_DROP)


def _advclip_own_world(c: Cells) -> float:
    """AdvCLIP vs 3x a random patch on the probes, in the attacker's own world."""
    return _advclip_vs_random(c, "standard")


def _advclip_scenes(c: Cells) -> float:
    """AdvCLIP vs 3x a random patch on the probes, in the held-out world of other backgrounds and scenes."""
    return _advclip_vs_random(c, "scenes")


def _advclip_48px(c: Cells) -> float:
    """AdvCLIP vs 3x a random patch on the probes, in the held-out world at another image size."""
    return _advclip_vs_random(c, "48px")


# -- TeCoA and FARE (recipes/adv_finetune.yaml; the dev preset has the ResNet CLIP) -------------------------
def _acceptance_eps(c: Cells) -> float | None:
    """The smallest leaderboard budget where the undefended ResNet's PGD-10 robust accuracy is below 40% (the
    adversarial-defenses issue's setting), or None when there is none."""
    undefended = c.values("robust_accuracy", model=RESNET, defense="none", attack="pgd")
    below = [float(r["params"]["eps"]) for r, acc in undefended if acc < 0.4]
    return min(below) if below else None


def _robust_gain(c: Cells, defense: str) -> float:
    """Defended minus undefended PGD-10 robust accuracy at the acceptance budget."""
    eps = _acceptance_eps(c)
    if eps is None:
        return NO_SETTING
    at = {"model": RESNET, "attack": "pgd", "eps": eps}
    return c.value("robust_accuracy", defense=defense, **at) - c.value("robust_accuracy", defense="none", **at)


def _clean_cost(c: Cells, defense: str) -> float:
    """Undefended minus defended clean accuracy (the same in every attack cell of a model: read at 8/255)."""
    at = {"model": RESNET, "attack": "pgd", "eps": "8/255"}
    return c.value("clean_accuracy", defense="none", **at) - c.value("clean_accuracy", defense=defense, **at)


def _tecoa_gain(c: Cells) -> float:
    """TeCoA's robust-accuracy gain at the acceptance budget."""
    return _robust_gain(c, "tecoa")


def _tecoa_cost(c: Cells) -> float:
    """TeCoA's clean-accuracy cost."""
    return _clean_cost(c, "tecoa")


def _fare_gain(c: Cells) -> float:
    """FARE's robust-accuracy gain at the acceptance budget."""
    return _robust_gain(c, "fare")


def _fare_cost(c: Cells) -> float:
    """FARE's clean-accuracy cost."""
    return _clean_cost(c, "fare")


def _fare_drift_below_tecoa(c: Cells) -> float:
    """TeCoA's minus FARE's mean ||phi(x) - phi_orig(x)||^2 on clean test images (> 0: FARE stays closer to the
    original encoder)."""
    at = {"model": RESNET, "attack": "pgd", "eps": "8/255"}  # (a clean-image metric: the same in every cell)
    return (c.value("embedding_drift_sq_l2", defense="tecoa", **at)
            - c.value("embedding_drift_sq_l2", defense="fare", **at))


# -- VILLA (recipes/villa.yaml) -----------------------------------------------------------------------------
# The villa defense entries differ only in their parameters: the control is plain fine-tuning (adv_steps 1:
# a zero perturbation and a zero KL term), "scaled" the adversary's step scaled to the tiny embeddings.
VILLA_CONTROL = {"adv_steps": 1}
VILLA_SCALED = {"adv_lr_img": 1.0, "adv_lr_txt": 0.5}


def _villa_entry(c: Cells, metric: str, entry: dict, **where: object) -> float:
    """``metric`` of the fusion model under the villa defense entry whose parameters include ``entry``."""
    found = [v for r, v in c.values(metric, model=FUSION, defense="villa", **where)
             if entry.items() <= r["defense_params"].items()]
    if not found:
        raise MissingResult(f"seed {c.seed}: no finished villa cell with parameters {entry} and {metric} where {where}")
    if len(found) > 1:
        raise ValueError(f"seed {c.seed}: {len(found)} villa cells with parameters {entry} have {metric} where "
                         f"{where}; the claim must select one")
    return found[0]


def _villa_robust_gain(c: Cells) -> float:
    """Scaled VILLA's minus plain fine-tuning's ITM accuracy under embedding-space PGD at a 5% radius, the
    smaller over image tokens and word embeddings."""
    return min(_villa_entry(c, "itm_accuracy_adv", VILLA_SCALED, eps=0.05, modality=m)
               - _villa_entry(c, "itm_accuracy_adv", VILLA_CONTROL, eps=0.05, modality=m) for m in ("image", "text"))


# -- Evasion attacks side by side (recipes/attacks.yaml) -----------------------------------------------------
def _robust(c: Cells, attack: str, eps: str, **params: object) -> float:
    return c.value("robust_accuracy", model=RESNET, attack=attack, eps=eps, **params)


def _pgd_beats_fgsm(c: Cells) -> float:
    """FGSM's minus PGD-10's robust accuracy, mean over the four budgets."""
    return sum(_robust(c, "fgsm", e) - _robust(c, "pgd", e) for e in LEADERBOARD_EPS) / len(LEADERBOARD_EPS)


def _apgd_beats_pgd(c: Cells) -> float:
    """PGD-10's minus APGD-CE's robust accuracy, mean over the four budgets."""
    return (sum(_robust(c, "pgd", e) - _robust(c, "apgd", e, loss="ce") for e in LEADERBOARD_EPS)
            / len(LEADERBOARD_EPS))


# -- Gradient-masking checks (recipes/masking_checks.yaml) ---------------------------------------------------
def _masking_checks_failed(c: Cells) -> float:
    """The most gradient-masking checks (of six) that TeCoA's or FARE's ResNet fails at 8/255 (0: all pass)."""
    return max(c.value("masking_checks_failed", model=RESNET, defense=d, attack="ensemble", eps="8/255")
               for d in ("tecoa", "fare"))


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
                  "single-modality attacks by at least 5 points at every budget where image-only PGD succeeds "
                  "on less than 60% of pairs",
        recipe="co_attack.yaml",
        effect=_co_attack_margin,
        bar=0.05,
        unit="ASR points (fraction)",
        metrics=("asr",),
    ),
    Claim(
        name="transfer.sga_beats_co_attack_and_pgd",
        version=1,
        paper="Lu, Wang, Wang, Guan, Gao, Zheng, ICCV 2023 (SGA)",
        statement="from each tiny CLIP to the other and to the fusion model, at 2/255 and 4/255 (one typo per "
                  "caption), SGA's retrieval ASR is higher than both Co-Attack's and image-only PGD's: the "
                  "smallest of the eight margins SGA - max(Co-Attack, PGD) is at least 0",
        recipe="transfer.yaml",
        effect=_sga_transfer_margin,
        bar=0.0,
        unit="ASR points (fraction)",
        metrics=("asr",),
    ),
    Claim(
        name="advclip.probes_3x_random_own_world",
        version=1,
        paper="Zhou, Hu, Li, Zhang, Zhang, Jin, ACM MM 2023 (AdvCLIP)",
        statement="on the ResNet CLIP, in the attacker's own world, AdvCLIP's patch lowers the accuracy of linear "
                  "probes fit after it was made (colour and position, mean drop) at least 3x more than a random "
                  "patch of the same size, and by at least one point: min(drop - 3 x random drop, drop - 0.01) >= 0",
        recipe="advclip.yaml",
        effect=_advclip_own_world,
        bar=0.0,
        unit="accuracy points (fraction)",
        metrics=("probe_color_drop", "probe_color_drop_noise", "probe_position_drop", "probe_position_drop_noise"),
    ),
    Claim(
        name="advclip.probes_3x_random_scenes",
        version=1,
        paper="Zhou, Hu, Li, Zhang, Zhang, Jin, ACM MM 2023 (AdvCLIP)",
        statement="on the ResNet CLIP, in the held-out world 'scenes' (other world seed, striped backgrounds, "
                  "second objects), AdvCLIP's patch still lowers the post-hoc probes (colour and position, mean "
                  "drop) at least 3x more than a random patch, and by at least one point: min(drop - 3 x random drop, drop - "
                  "0.01) >= 0",
        recipe="advclip.yaml",
        effect=_advclip_scenes,
        bar=0.0,
        unit="accuracy points (fraction)",
        metrics=("probe_color_drop", "probe_color_drop_noise", "probe_position_drop", "probe_position_drop_noise"),
    ),
    Claim(
        name="advclip.probes_3x_random_48px",
        version=1,
        paper="Zhou, Hu, Li, Zhang, Zhang, Jin, ACM MM 2023 (AdvCLIP)",
        statement="on the ResNet CLIP, in the held-out world '48px' (other world seed at 48 px, the patch "
                  "rescaled), AdvCLIP's patch still lowers the post-hoc probes (colour and position, mean drop) "
                  "at least 3x more than a random patch, and by at least one point: min(drop - 3 x random drop, "
                  "drop - 0.01) >= 0",
        recipe="advclip.yaml",
        effect=_advclip_48px,
        bar=0.0,
        unit="accuracy points (fraction)",
        metrics=("probe_color_drop", "probe_color_drop_noise", "probe_position_drop", "probe_position_drop_noise"),
    ),
    Claim(
        name="adv_finetune.tecoa_robust_gain",
        version=1,
        paper="Mao, Geng, Yang, Wang, Vondrick, ICLR 2023 (TeCoA)",
        statement="on the ResNet CLIP, at the smallest budget where the undefended model's PGD-10 robust "
                  "accuracy is below 40%, TeCoA raises PGD-10 robust zero-shot accuracy by at least 30 points",
        recipe="adv_finetune.yaml",
        effect=_tecoa_gain,
        bar=0.3,
        unit="accuracy points (fraction)",
        metrics=("robust_accuracy",),
    ),
    Claim(
        name="adv_finetune.tecoa_clean_cost",
        version=1,
        paper="Mao, Geng, Yang, Wang, Vondrick, ICLR 2023 (TeCoA)",
        statement="on the ResNet CLIP, TeCoA (trained at the acceptance budget) costs at most 10 points of clean "
                  "zero-shot accuracy",
        recipe="adv_finetune.yaml",
        effect=_tecoa_cost,
        bar=0.1,
        direction="<=",
        unit="accuracy points (fraction)",
        metrics=("clean_accuracy",),
    ),
    Claim(
        name="adv_finetune.fare_robust_gain",
        version=1,
        paper="Schlarmann, Singh, Croce, Hein, ICML 2024 (FARE)",
        statement="on the ResNet CLIP, at the smallest budget where the undefended model's PGD-10 robust "
                  "accuracy is below 40%, FARE raises PGD-10 robust zero-shot accuracy by at least 30 points",
        recipe="adv_finetune.yaml",
        effect=_fare_gain,
        bar=0.3,
        unit="accuracy points (fraction)",
        metrics=("robust_accuracy",),
    ),
    Claim(
        name="adv_finetune.fare_clean_cost",
        version=1,
        paper="Schlarmann, Singh, Croce, Hein, ICML 2024 (FARE)",
        statement="on the ResNet CLIP, FARE (trained at the acceptance budget) costs at most 10 points of clean "
                  "zero-shot accuracy",
        recipe="adv_finetune.yaml",
        effect=_fare_cost,
        bar=0.1,
        direction="<=",
        unit="accuracy points (fraction)",
        metrics=("clean_accuracy",),
    ),
    Claim(
        name="adv_finetune.fare_drifts_less_than_tecoa",
        version=1,
        paper="Schlarmann, Singh, Croce, Hein, ICML 2024 (FARE)",
        statement="on the ResNet CLIP, FARE keeps the embeddings of clean images closer to the original model's "
                  "than TeCoA does: TeCoA's minus FARE's mean squared L2 drift is above 0",
        recipe="adv_finetune.yaml",
        effect=_fare_drift_below_tecoa,
        bar=0.0,
        unit="squared L2 embedding drift",
        metrics=("embedding_drift_sq_l2",),
    ),
    Claim(
        name="villa.robust_gain_over_finetuning",
        version=1,
        paper="Gan, Chen, Li, Zhu, Cheng, Liu, NeurIPS 2020 (VILLA)",
        statement="on the fusion model, VILLA (the adversary's step scaled to the tiny embeddings) keeps more "
                  "image-text matching decisions than plain fine-tuning with the same data and steps under "
                  "embedding-space PGD at a 5% radius, on image tokens and on word embeddings alike: the smaller "
                  "of the two gains is at least 0",
        recipe="villa.yaml",
        effect=_villa_robust_gain,
        bar=0.0,
        unit="ITM accuracy points (fraction)",
        metrics=("itm_accuracy_adv",),
    ),
    Claim(
        name="attacks.pgd_beats_fgsm",
        version=1,
        paper="Madry, Makelov, Schmidt, Tsipras, Vladu, ICLR 2018 (PGD)",
        statement="on the zoo ResNet CLIP's zero-shot classifier, iterative PGD-10 leaves lower robust accuracy "
                  "than single-step FGSM of the same L-inf budget: FGSM - PGD, averaged over 1/2/4/8 /255, is at "
                  "least 0",
        recipe="attacks.yaml",
        effect=_pgd_beats_fgsm,
        bar=0.0,
        unit="accuracy points (fraction)",
        metrics=("robust_accuracy",),
    ),
    Claim(
        name="attacks.apgd_beats_pgd",
        version=1,
        paper="Croce, Hein, ICML 2020 (APGD)",
        statement="on the zoo ResNet CLIP's zero-shot classifier, APGD-CE (no step size to tune) leaves lower "
                  "robust accuracy than PGD-10 at the same L-inf budget: PGD - APGD-CE, averaged over "
                  "1/2/4/8 /255, is at least 0",
        recipe="attacks.yaml",
        effect=_apgd_beats_pgd,
        bar=0.0,
        unit="accuracy points (fraction)",
        metrics=("robust_accuracy",),
    ),
    Claim(
        name="masking_checks.defended_models_pass",
        version=1,
        paper="Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras, Goodfellow, Madry, Kurakin, arXiv 2019 "
              "(gradient-masking checks)",
        statement="the ResNet CLIP defended by TeCoA and by FARE passes every one of the six gradient-masking "
                  "checks at 8/255: the most checks either fails is 0",
        recipe="masking_checks.yaml",
        effect=_masking_checks_failed,
        bar=0.0,
        direction="<=",
        unit="failed checks (of 6)",
        metrics=("masking_checks_failed",),
    ),
)

__all__ = ["ADVERSARIAL_CLAIMS"]
