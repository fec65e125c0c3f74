"""Adversarial-robustness defenses: TeCoA and FARE fine-tune the image tower; AdvPT learns a text prompt;
VILLA fine-tunes a fusion model against embedding-space perturbations of both modalities.

TeCoA and FARE run the shared loop :func:`mmsec.train.adversarial.adversarial_finetune` on a deep copy
of the model, training the image tower only; they differ in the loss the inner PGD maximises and the outer
step minimises (TeCoA: zero-shot cross-entropy against frozen class text embeddings; FARE: squared
L2 distance to the original encoder's clean embedding).
"""

from .advpt import AdvPT, PromptTunedCLIP
from .fare import FARE, embedding_drift, fare_loss
from .tecoa import TeCoA, tecoa_loss
from .villa import VILLA, symmetric_kl

__all__ = ["FARE", "AdvPT", "PromptTunedCLIP", "TeCoA", "VILLA", "embedding_drift", "fare_loss", "symmetric_kl",
           "tecoa_loss"]
