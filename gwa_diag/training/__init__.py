"""Training: datasets that carry stable sample ids (:mod:`.data`), model presets
(:mod:`.models`), the run settings (:mod:`.config`, torch-free: the CLI builds its options
from them), batches on the device (:mod:`.batches`), resuming a stopped run (:mod:`.resume`),
the training loop (:mod:`.engine`) and the PyTorch Lightning callback (:mod:`.lightning`).

Everything here but :mod:`.config` imports torch. It builds on the recording core only,
never on ``gwa_diag.analysis``, ``gwa_diag.cli`` or the app:

May import: gwa_diag.alignment, gwa_diag.early_stopping, gwa_diag.phase_rule, gwa_diag.recorder,
gwa_diag.store, gwa_diag.checks.
"""
