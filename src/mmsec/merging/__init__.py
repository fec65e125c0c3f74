"""Model merging of CLIP task models fine-tuned from one pre-trained model (the setting BadMerging attacks).

Tasks (:mod:`.tasks`), fine-tuning through frozen zero-shot heads (:mod:`.finetune`), task vectors
(:mod:`.task_vectors`) and one merging method per file: simple averaging, task arithmetic,
TIES-merging, RegMean, AdaMerging. A method is configured in ``__init__`` with its paper's defaults
and called as ``method(pretrained, task_models, data=None) -> MergeResult(model, ...)``.
"""

from .adamerging import AdaMerging
from .averaging import WeightAveraging
from .base import MergeResult, MergingMethod
from .evaluate import attack_success_rate, task_accuracy
from .finetune import FinetuneResult, finetune_tower
from .regmean import RegMean
from .task_arithmetic import TaskArithmetic
from .tasks import TASKS, ShapesTask, get_task, head_logits
from .ties import TiesMerging

MERGING_METHODS = {cls.name: cls for cls in (WeightAveraging, TaskArithmetic, TiesMerging, RegMean, AdaMerging)}

__all__ = ["MERGING_METHODS", "TASKS", "AdaMerging", "FinetuneResult", "MergeResult", "MergingMethod", "RegMean",
           "ShapesTask", "TaskArithmetic", "TiesMerging", "WeightAveraging", "attack_success_rate", "finetune_tower",
           "get_task", "head_logits", "task_accuracy"]
