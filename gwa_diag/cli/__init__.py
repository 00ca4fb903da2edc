"""The ``gwa-diag`` command line: ``train | demo | rank | score | report | audit | labels | relocate | app``.

One module per group of subcommands, each with a ``register(subparsers)``: ``train``
(training options from the engine's config), ``demo``, ``analysis`` (rank, score, report), ``audit`` (a verified sample),
``labels`` (corrected labels out of a reviewed run), ``relocate`` (point a run at its moved
data) and ``app``; ``common`` holds what they share. This layer sits on top of everything
else and nothing imports it. The analysis commands must not load torch (they start in well
under a second), so training modules are imported inside the functions that need them.

May import: anything.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from gwa_diag import __version__
from gwa_diag.checks import InputError
from gwa_diag.cli import analysis, app, audit, demo, labels, relocate, train
from gwa_diag.cli.common import os_error_line
from gwa_diag.store import RunDirError

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gwa-diag", description="Find mislabeled training samples with gradient-weight alignment.")
    parser.add_argument("--version", action="version", version=f"gwa-diag {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    train.register(sub)
    demo.register(sub)
    analysis.register(sub)
    audit.register(sub)
    labels.register(sub)
    relocate.register(sub)
    app.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (InputError, RunDirError) as exc:
        # Bad input: one clear line (what is wrong and how to fix it), no traceback. Any
        # other exception is a bug in gwa-diag and keeps its traceback.
        print(f"gwa-diag {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(os_error_line(args.command, exc, "the paths given (--out, --data-path, ...)"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\n" + train.interrupted_line(args, argv), file=sys.stderr)
        return 130
