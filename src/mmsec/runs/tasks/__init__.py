"""Task plugins of the runner, one module per task; importing this package registers them.

``zeroshot`` and ``retrieval`` (evasion attacks against an objective, :mod:`.evasion`), ``transfer``
(pair attacks crafted on a source, scored on targets), ``backdoor`` (a backdoored model, a defense,
the backdoor measured), ``universal`` (a universal patch scored by downstream users), ``itm`` (a
fusion model's image-text matching under embedding-space attacks), ``merging`` (a backdoored task
model in a merge), ``targeted_poisoning`` (Yang et al.'s and PBCL's targeted poisoning of
fine-tuning, retrieval of the target), ``ssl_backdoor`` (poisoned self-supervised pre-training, a
downstream probe), ``poisoned_classifier`` (a supervised classifier trained on a label-poisoned set, a
sample detector such as PSBD on its training images), ``diffusion_backdoor`` (a backdoored diffusion model
sampled with and without its trigger, judged against its target and the clean model), ``t2i_backdoor`` (a
text-to-image model backdoored through a trigger word, BadT2I). A new task is one
module here plus its import below.
"""

from . import (
           backdoor,
           diffusion_backdoor,
           itm,
           merging,
           poisoned_classifier,
           retrieval,
           ssl_backdoor,
           t2i_backdoor,
           targeted_poisoning,
           transfer,
           universal,
           zeroshot,
)

__all__ = ["backdoor", "diffusion_backdoor", "itm", "merging", "poisoned_classifier", "retrieval", "ssl_backdoor",
           "t2i_backdoor", "targeted_poisoning", "transfer", "universal", "zeroshot"]
