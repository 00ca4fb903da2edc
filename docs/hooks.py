"""MkDocs hook: the command-line reference is the parser's own help, so it cannot go stale.

A page line ``<!-- gwa-diag help: COMMAND -->`` becomes the ``--help`` text of
``gwa-diag COMMAND`` (``-`` for the top-level command), rendered at build time.
"""

from __future__ import annotations

import argparse
import os
import re

from gwa_diag.cli import build_parser

_MARK = re.compile(r"^<!-- gwa-diag help: (\S+) -->$", re.MULTILINE)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _help(command: str) -> str:
    os.environ["COLUMNS"] = "100"  # a fixed width: the page is the same on every terminal
    parser = build_parser()
    if command != "-":
        subs = _subparsers(parser)
        if command not in subs:
            raise ValueError(f"docs: no gwa-diag subcommand {command!r}; choose from {sorted(subs)}")
        parser = subs[command]
    return "```text\n" + parser.format_help().rstrip() + "\n```"


def on_page_markdown(markdown: str, **_: object) -> str:
    return _MARK.sub(lambda m: _help(m.group(1)), markdown)
