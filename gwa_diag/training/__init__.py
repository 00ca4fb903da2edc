"""Training: datasets that carry stable sample ids, model presets, the training engine
(with resume and the data fingerprint) and the PyTorch Lightning callback.

Everything here imports torch. It may import the recording core (``gwa_diag.alignment``,
``early_stopping``, ``recorder``, ``store``), never ``gwa_diag.analysis`` or ``gwa_diag.cli``.
"""
