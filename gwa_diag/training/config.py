"""The settings of one training run, :class:`TrainConfig`, saved in ``run.json``.

Owns each setting's default, valid names (the ``Literal`` types of :mod:`gwa_diag.checks`),
minimum and command-line help; the ``train`` command builds its options from these fields,
so none is restated there. Imports only the standard library and :mod:`gwa_diag.checks`:
no torch, so building the CLI's parser stays fast for the commands that never train.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, get_origin, get_type_hints

from gwa_diag.checks import InputError, Mode, Optimizer, Precision, Schedule, check_choice

__all__ = ["TrainConfig"]


def _setting(default: Any, help: str = "", *, flag: str | None = None, minimum: int | None = None,
             group: str = "model and optimisation", cli: bool = True) -> Any:
    """A :class:`TrainConfig` field with what the ``train`` command needs to offer it.

    The CLI builds its options from these fields (``gwa_diag.cli.train``), so a setting's
    default, help and valid values are written once, here. ``flag`` overrides the option
    name (default ``--field-name``); for a bool field it is a switch that sets the opposite
    of the default (``--no-augment``, ``--quiet``). ``minimum`` is checked by
    :meth:`TrainConfig.validate` and while the CLI parses; ``cli=False`` keeps a setting
    out of the command line.
    """
    return field(default=default, metadata={"help": help, "flag": flag, "minimum": minimum,
                                            "group": group, "cli": cli})


@dataclass
class TrainConfig:
    """Hyper-parameters of one run (saved in run.json). Settings chosen by name take their
    valid values from the ``Literal`` types of :mod:`gwa_diag.checks`."""

    epochs: int = _setting(20, minimum=1)
    batch_size: int = _setting(256, minimum=1)
    lr: float = _setting(0.1)
    optimizer: Optimizer = _setting("sgd")
    momentum: float = _setting(0.9, cli=False)
    weight_decay: float = _setting(5e-4)
    warmup_epochs: float = _setting(2.0)
    schedule: Schedule = _setting("linear")
    augment: bool = _setting(True, "disable crop+flip augmentation", flag="--no-augment")
    precision: Precision = _setting("auto")  # auto: bf16 on CUDA, fp32 on the CPU
    device: str = _setting("auto")
    seed: int = _setting(0)
    mode: Mode = _setting("scratch", "GWA early-stopping rule: from scratch, or fine-tuning a pre-trained model")
    # Only datasets without an in-memory array go through a DataLoader.
    num_workers: int = _setting(0, "DataLoader workers (image folders)", flag="--workers", minimum=0)
    progress: bool = _setting(True, "no progress bar", flag="--quiet", group="output")

    def validate(self) -> None:
        """:class:`~gwa_diag.checks.InputError` for an unknown name or a number below its
        minimum (the CLI refuses both while parsing; this guards Python callers)."""
        hints = get_type_hints(TrainConfig)
        for f in fields(self):
            value = getattr(self, f.name)
            if get_origin(hints[f.name]) is Literal:
                check_choice(value, hints[f.name], f.name)
            minimum = f.metadata.get("minimum")
            if minimum is not None and value < minimum:
                raise InputError(f"{f.name} must be >= {minimum}, got {value}")
        if not self.lr > 0:
            raise InputError(f"lr must be > 0, got {self.lr}")
