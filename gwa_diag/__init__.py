"""gwa-diag: find mislabeled training samples with gradient-weight alignment."""

__version__ = "0.1.0"
