"""Backdoor attacks on multimodal models and the trigger library they share.

:mod:`mmsec.attacks.backdoor.triggers`: patch (BadNets / Carlini & Terzis), blended (Chen et al.
2017), SIG (Barni et al. 2019), WaNet (Nguyen & Tran 2021) and optimised patches (BadCLIP-style),
all ``Trigger.apply(pixels, generator) -> pixels`` with a JSON record (``to_dict`` /
``trigger_from_dict``) so "what was poisoned" can be rebuilt exactly.

:mod:`~mmsec.attacks.backdoor.poisoning`: poisoning a caption data set or a training stream, with a
:class:`PoisonRecord` (indices, trigger, target) as ground truth; :mod:`~mmsec.attacks.backdoor.pbcl`:
PBCL's backdoor and targeted poisoning (Carlini & Terzis, ICLR 2022); :mod:`~mmsec.attacks.backdoor.badencoder`:
BadEncoder (Jia, Liu, Gong, S&P 2022), a backdoored image encoder from a shadow set;
:mod:`~mmsec.attacks.backdoor.multimodal_poisoning`: Yang et al.'s (ICML 2023) three targeted
poisoning attacks on text-to-image retrieval (scored by :mod:`mmsec.evaluation.targeted_poisoning`);
:mod:`~mmsec.attacks.backdoor.badclip`: BadCLIP (Liang et al., CVPR 2024), a dual-embedding-guided
optimised patch, then poisoning with it; :mod:`~mmsec.attacks.backdoor.corruptencoder`: CorruptEncoder
(Zhang et al., CVPR 2024) and the naive SSL-backdoor baseline, poisoning an unlabelled image set for
image-only contrastive pre-training (:mod:`mmsec.train.simclr`); :mod:`~mmsec.attacks.backdoor.baddiffusion`: BadDiffusion (Chou et al., CVPR 2023), a diffusion model
fine-tuned so a trigger on its starting noise generates a target image; :mod:`~mmsec.attacks.backdoor.trojdiff`: TrojDiff (Chen et al., CVPR 2023), Trojan noise N(mu, gamma^2 I) and a Trojan generative process towards an in-distribution class, an out-of-domain class or one image; :mod:`~mmsec.attacks.backdoor.badt2i`: BadT2I (Zhai et al., ACM MM 2023), a text-to-image model whose prompt trigger adds a patch, swaps an object or sets a style; :mod:`~mmsec.attacks.backdoor.badmerging`:
BadMerging (Zhang et al., CCS 2024), a backdoor of one task model meant to survive model merging
(:mod:`mmsec.merging`). Training on poisoned data is
:mod:`mmsec.train.poisoned`; attack success rates are :mod:`mmsec.evaluation.backdoor`.

Registry kinds declared here: ``triggers`` (:class:`Trigger`), ``poisoning``
(:class:`PoisoningAttack`: PBCL, BadCLIP, Yang et al.'s I-III), ``image_poisoning``
(:class:`ImagePoisoningAttack`: CorruptEncoder, the naive SSL backdoor), ``model_backdoors``
(:class:`ModelTamperingAttack`: BadEncoder), ``diffusion_backdoors`` (:class:`DiffusionBackdoorAttack`:
BadDiffusion, TrojDiff: a backdoored diffusion model triggered on its starting noise), ``t2i_backdoors``
(:class:`T2IBackdoorAttack`: BadT2I, a text-to-image model triggered by a word in the prompt) and ``merging_attacks`` (:class:`MergingAttack`:
BadMerging, the plain patch backdoor). World knowledge (class names, the target's captions, the
reference objects) is the caller's: see :class:`~mmsec.attacks.backdoor.poisoning.CaptionSource` and
:mod:`mmsec.data.shapes_text` / :mod:`mmsec.data.shapes_objects` for the shapes world's.
"""

from .badclip import BadCLIP
from .baddiffusion import BadDiffusion, BadDiffusionRecord, BadDiffusionResult
from .badencoder import BadEncoder, BadEncoderRecord, BadEncoderResult
from .badmerging import BadMerging, BadMergingRecord, BadMergingResult, PatchBackdoor
from .badt2i import BadT2I, BadT2IRecord, BadT2IResult
from .corruptencoder import (
    CorruptEncoder,
    CorruptEncoderRecord,
    NaivePoisoning,
    PoisonedImages,
    ReferenceObject,
)
from .diffusion_backdoor import DiffusionBackdoorAttack, NoiseTrigger
from .image_poisoning import ImagePoisoningAttack
from .merging_attack import MergingAttack
from .multimodal_poisoning import (
    MultipleTargetLabelPoisoning,
    SingleTargetImagePoisoning,
    SingleTargetLabelPoisoning,
)
from .pbcl import PBCLBackdoor, PBCLTargeted
from .poisoning import (
    CaptionSource,
    FixedCaptions,
    PoisonedData,
    PoisonedStream,
    PoisoningAttack,
    PoisonRecord,
    poison_dataset,
    poison_stream,
)
from .t2i_backdoor import T2IBackdoorAttack
from .tampering import ModelTamperingAttack
from .triggers import (
    CORNERS,
    POSITIONS,
    TRIGGERS,
    BlendedTrigger,
    OptimizedPatch,
    PatchTrigger,
    SIGTrigger,
    Trigger,
    WaNetTrigger,
    build_trigger,
    trigger_from_dict,
)
from .trojdiff import TrojanNoise, TrojDiff, TrojDiffRecord, TrojDiffResult

__all__ = ["CORNERS", "POSITIONS", "TRIGGERS", "BadCLIP", "BadDiffusion", "BadDiffusionRecord", "BadDiffusionResult", "BadEncoder", "BadEncoderRecord", "BadEncoderResult",
           "BadMerging", "BadMergingRecord", "BadMergingResult", "BadT2I", "BadT2IRecord", "BadT2IResult", "BlendedTrigger", "CaptionSource", "CorruptEncoder",
           "CorruptEncoderRecord", "DiffusionBackdoorAttack", "FixedCaptions", "ImagePoisoningAttack", "MergingAttack", "ModelTamperingAttack",
           "MultipleTargetLabelPoisoning", "NaivePoisoning", "NoiseTrigger", "OptimizedPatch", "PBCLBackdoor", "PBCLTargeted",
           "PatchBackdoor", "PatchTrigger", "PoisonRecord", "PoisonedData", "PoisonedImages", "PoisonedStream",
           "PoisoningAttack", "ReferenceObject", "T2IBackdoorAttack", "SIGTrigger", "SingleTargetImagePoisoning", "SingleTargetLabelPoisoning",
           "Trigger", "TrojDiff", "TrojDiffRecord", "TrojDiffResult", "TrojanNoise", "WaNetTrigger", "build_trigger", "poison_dataset", "poison_stream", "trigger_from_dict"]
