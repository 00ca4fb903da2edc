"""gwa-diag: find mislabeled training samples with gradient-weight alignment.

The public API is a handful of verbs; everything else lives in task-named modules.
"""

__version__ = "0.1.0"

from .alignment import gwa_from_scores, per_sample_alignment, select_epoch
from .recorder import AlignmentRecorder
from .store import open_run
from .engine import TrainConfig, train

__all__ = [
    "__version__",
    "AlignmentRecorder",
    "TrainConfig",
    "gwa_from_scores",
    "open_run",
    "per_sample_alignment",
    "select_epoch",
    "train",
]
