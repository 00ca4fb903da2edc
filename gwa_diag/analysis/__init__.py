"""Analysis of a recorded run directory: per-sample summaries and scorers, ranking and
flagging, ground truth, detection metrics, the report, and relabel decisions;
``pipeline.analyze`` assembles them into one ``Analysis``, which everything else reads.

Nothing here imports torch (tests/test_packaging.py checks it), so the analysis commands
start in well under a second. It reads runs through the core, never through
``gwa_diag.training``, ``gwa_diag.cli`` or the app:

May import: gwa_diag.checks, gwa_diag.store, gwa_diag.early_stopping, gwa_diag.phase_rule.
"""
