"""Training: datasets that carry stable sample ids (:mod:`.data`), model presets
(:mod:`.models`), the run settings (:mod:`.config`, torch-free: the CLI builds its options
from them), batches on the device (:mod:`.batches`), resuming a stopped run (:mod:`.resume`),
the training loop (:mod:`.engine`) and the PyTorch Lightning callback (:mod:`.lightning`).

Everything here but :mod:`.config` imports torch. It may import the recording core
(``gwa_diag.alignment``, ``early_stopping``, ``recorder``, ``store``, ``checks``), never
``gwa_diag.analysis`` or ``gwa_diag.cli``.
"""
