"""Pieces every ``gwa-diag`` subcommand shares: whole-number argument types, and the one
line an OS error becomes."""

from __future__ import annotations

import argparse
from typing import Callable

__all__ = ["int_in_range", "os_error_line"]


def int_in_range(low: int, high: int | None = None, *, what: str = "") -> Callable[[str], int]:
    """An argparse ``type`` accepting whole numbers in ``[low, high]`` (``high`` None: no
    upper bound). Refused while parsing, before any data is read or written."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if high is not None and not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{what} {value} is out of range: use {low}-{high}".lstrip())
        if value < low:
            floor = "0 or more" if low == 0 else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be {floor}, got {value}")
        return value

    return parse


def os_error_line(command: str, exc: OSError, paths: str) -> str:
    """``gwa-diag CMD: error: ...`` for an OS error (a file where a folder goes, no
    permission, a full disk). os.replace names the temporary file first and the destination
    (the user's path) second, so the second name is the one shown when there is one."""
    path = getattr(exc, "filename2", None) or exc.filename
    where = f" ({path})" if path else ""
    return (f"gwa-diag {command}: error: {exc.strerror or exc}{where}; check {paths}: folders must be "
            "folders, files files, and writable")
