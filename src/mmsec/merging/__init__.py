"""Model merging of CLIP task models fine-tuned from one pre-trained model (the setting BadMerging attacks).

The generic parts: what a task must provide and its frozen zero-shot head (:mod:`.tasks`),
fine-tuning through that head (:mod:`.finetune`), task vectors (:mod:`.task_vectors`), evaluation
(:mod:`.evaluate`) and one merging method per file: simple averaging, task arithmetic, TIES-merging,
RegMean, AdaMerging. A method is configured in ``__init__`` with its paper's defaults and called as
``method(pretrained, task_models, data=None) -> MergeResult(model, ...)``. Importing this package
registers the methods (kind ``merging``); ``MERGING_METHODS`` is the same table as a read-only
mapping from registered name to class. The shapes world's tasks are data: :mod:`mmsec.data.shapes_tasks`.
"""

from types import MappingProxyType

from .. import registry
from .adamerging import AdaMerging
from .averaging import WeightAveraging
from .base import MergeResult, MergingMethod
from .evaluate import attack_success_rate, task_accuracy
from .finetune import FinetuneResult, finetune_tower
from .regmean import RegMean
from .task_arithmetic import TaskArithmetic
from .tasks import ClassificationTask, check_task, features_logits, head_logits, task_head
from .ties import TiesMerging

MERGING_METHODS = MappingProxyType({e.name: e.factory for e in registry.entries("merging")})


__all__ = ["MERGING_METHODS", "AdaMerging", "ClassificationTask", "FinetuneResult", "MergeResult", "MergingMethod",
           "RegMean", "TaskArithmetic", "TiesMerging", "WeightAveraging", "attack_success_rate", "check_task",
           "features_logits", "finetune_tower", "head_logits", "task_accuracy", "task_head"]
