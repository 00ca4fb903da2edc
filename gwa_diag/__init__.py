"""gwa-diag: find mislabeled training samples with gradient-weight alignment.

The public API is a handful of verbs; everything else lives in task-named modules. They are
imported on first use, so the analysis commands start without loading torch.

Layers, each with its import rule in its package docstring (checked by
tests/test_import_rules.py): the core (the top-level modules ``alignment``, ``recorder``,
``store``, ``curves``, ``phase_rule``, ``early_stopping`` and ``checks``), then
:mod:`.training` and :mod:`.analysis` on top of it, the app, and :mod:`.cli` over everything.
The core records and stores alignment without knowing who trains or reads it, so the rule of
the top-level modules is:

May import: gwa_diag.alignment, gwa_diag.checks, gwa_diag.curves, gwa_diag.early_stopping,
gwa_diag.phase_rule, gwa_diag.recorder, gwa_diag.signals, gwa_diag.store.

This file and ``__main__.py`` are exempt: they are the entry points over every layer (the
verbs below come from training and analysis too, imported lazily; ``python -m gwa_diag``
runs the CLI).
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AlignmentRecorder": "recorder",
    "TrainConfig": "training.engine",
    "train": "training.engine",
    "open_run": "store",
    "per_sample_alignment": "alignment",
    "gwa_from_scores": "alignment",
    "select_epoch": "early_stopping",
    "summarize": "analysis.summaries",
    "analyze": "analysis.pipeline",
    "Analysis": "analysis.pipeline",
    "AnalysisOptions": "analysis.options",
    "flag": "analysis.rank",
    "detection_table": "analysis.metrics",
    "write_report": "analysis.report",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gwa_diag' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # cache: the next access skips this function
    return value
