"""Analysis of a recorded run directory: per-sample summaries and scorers, ranking and
flagging, detection metrics against ground truth, the report, and relabel decisions.

Nothing here imports torch, so the analysis commands start in well under a second. It may
import ``gwa_diag.store`` and ``gwa_diag.early_stopping`` from the core, never
``gwa_diag.training`` or ``gwa_diag.cli``.
"""
