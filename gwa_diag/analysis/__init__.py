"""Analysis of a recorded run directory: per-sample summaries and scorers, ranking and
flagging, ground truth, detection metrics, the report, and relabel decisions;
``pipeline.analyze`` assembles them into one ``Analysis``, which everything else reads.

Nothing here imports torch, so the analysis commands start in well under a second. It may
import ``gwa_diag.store`` and ``gwa_diag.early_stopping`` from the core, never
``gwa_diag.training`` or ``gwa_diag.cli``.
"""
