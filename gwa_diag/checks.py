"""Input checks and option names, in one place.

Every choice a user makes by name (optimizer, schedule, precision, stopping mode, noise
kind, averaging window, flag rule, automatic relabel policy) is a ``Literal`` type here; the
training config, the analysis functions and the CLI's ``choices=`` all read their valid
values from it (:func:`values`), so a new option is added once.

Errors a user can fix (a bad option, path, file or value) are :class:`InputError`, a
``ValueError``; the CLI prints them as one line with exit status 2. Any other exception is a
bug and keeps its traceback. The helpers below raise :class:`InputError` naming the value and
the valid ones. Imports nothing heavy: the analysis commands load this without torch.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from typing import Any, Literal, get_args

__all__ = [
    "InputError",
    "InputTypeError",
    "MissingFileError",
    "Optimizer",
    "Schedule",
    "Precision",
    "Mode",
    "NoiseKind",
    "Window",
    "DEFAULT_WINDOW",
    "Rule",
    "DEFAULT_SCORER",
    "DEFAULT_RULE",
    "AutoPolicy",
    "values",
    "check_choice",
    "check_keys",
    "check_fraction",
]


class InputError(ValueError):
    """Input the user can fix; the message names it and says how. The CLI prints it as one
    line (``gwa-diag CMD: error: ...``), never as a traceback."""


class InputTypeError(InputError, TypeError):
    """An input of the wrong kind (float images, label names where indices go). Also a
    ``TypeError``, which is what Python callers expect for it."""


class MissingFileError(InputError, FileNotFoundError):
    """A file or folder the user named does not exist (the message says what to pass)."""


Optimizer = Literal["sgd", "adamw"]
Schedule = Literal["cosine", "linear", "constant"]
#: auto: bf16 on CUDA, fp32 on the CPU.
Precision = Literal["auto", "bf16", "fp16", "fp32"]
#: Which GWA early-stopping rule: training from scratch, or fine-tuning a pre-trained model.
Mode = Literal["scratch", "finetune"]
NoiseKind = Literal["symmetric", "pair"]
#: Epochs the mean-over-epochs scorers average (descriptions: gwa_diag.analysis.phase.WINDOWS).
Window = Literal["phase", "second_half", "after_warmup", "all"]
#: The window used when none is named: the epochs the training phase says carry the signal
#: (gwa_diag.analysis.phase).
DEFAULT_WINDOW: Window = "phase"
#: Flag rules (descriptions: gwa_diag.analysis.rank.RULES).
Rule = Literal["estimate", "negative", "topk", "noise_rate", "p_wrong"]
#: The ranking and flag rule used when none is named (the measurements behind the choice:
#: docs/benchmarks/detect_cifar10n.md). AUM ranked the wrong CIFAR-10-N labels a
#: little better than mean alignment on every label set; the "estimate" rule flags the top
#: of that ranking down to the estimated number of wrong labels.
DEFAULT_SCORER = "aum"
DEFAULT_RULE: Rule = "estimate"
#: What corrected labels do with flagged samples nobody reviewed (descriptions:
#: gwa_diag.analysis.corrected.AUTO_POLICIES).
AutoPolicy = Literal["keep", "drop", "relabel"]


def values(options: Any) -> tuple[str, ...]:
    """The valid values of a ``Literal`` type (or the keys of a registry dict), in order."""
    if isinstance(options, Mapping):
        return tuple(options)
    found = get_args(options)
    return found if found else tuple(options)


def check_choice(value: Any, options: Any, what: str) -> str:
    """``value`` if it is one of ``options`` (a ``Literal`` type, a registry dict or a
    sequence of names); else :class:`InputError` naming it, the closest valid name and all
    valid names."""
    valid = values(options)
    if isinstance(value, str) and value in valid:
        return value
    close = difflib.get_close_matches(str(value), list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise InputError(f"unknown {what} {value!r}{hint}; valid: {', '.join(map(repr, valid))}")


def check_keys(given: Iterable[str], valid: Iterable[str], what: str) -> None:
    """:class:`InputError` for keys of ``given`` that are not in ``valid`` (a misspelt
    option would otherwise be ignored)."""
    allowed = list(valid)
    unknown = sorted(set(given) - set(allowed))
    if unknown:
        raise InputError(
            f"unknown {what} key(s) {', '.join(map(repr, unknown))}: valid keys are {', '.join(map(repr, allowed))}"
        )


def check_fraction(value: Any, what: str) -> float:
    """``value`` as a float in [0, 1] (NaN refused); else :class:`InputError`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be a fraction in [0, 1], got {value!r}") from None
    if not 0.0 <= number <= 1.0:  # False for NaN too
        raise InputError(f"{what} must be a fraction in [0, 1], got {value!r}")
    return number
