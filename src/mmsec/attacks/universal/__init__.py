"""Universal, downstream-agnostic attacks on a pre-trained encoder: one patch for every image and task.

:class:`AdvCLIP` (Zhou et al., ACM MM 2023) learns the patch with a topology-deviation GAN;
:class:`UAPPatch` optimises it directly (its GAN-free baseline); :func:`random_patch` is the
noise control. :func:`apply_patch` pastes a patch on images of any size; the downstream
evaluation (post-hoc linear probes, zero-shot, retrieval) is :mod:`mmsec.evaluation.downstream`.
"""

from .advclip import (
    DEFAULT_FRACTION,
    AdvCLIP,
    AdvCLIPResult,
    PatchResult,
    apply_patch,
    embedding_deviation,
    info_nce,
    patch_side,
    random_patch,
    topology_deviation,
    topology_divergence,
)
from .base import UniversalAttack
from .uap_patch import UAPPatch, UAPPatchResult

__all__ = ["DEFAULT_FRACTION", "AdvCLIP", "AdvCLIPResult", "PatchResult", "UAPPatch", "UAPPatchResult", "UniversalAttack",
           "apply_patch", "embedding_deviation", "info_nce", "patch_side", "random_patch", "topology_deviation",
           "topology_divergence"]
