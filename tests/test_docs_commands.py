"""Every ``gwa-diag`` command the README and the docs show parses with the CLI's own parser.

Documentation goes stale silently when an option is renamed or removed; parsing what it shows
catches that. Commands in code blocks are parsed whole (``parse_args``, as the shell would
run them); commands quoted inline in prose are checked for their subcommand and option names
only, since prose often quotes a fragment.
"""

from __future__ import annotations

import argparse
import ast
import re
import shlex
from pathlib import Path

import pytest

from gwa_diag.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted([REPO / "README.md", *(REPO / "docs").rglob("*.md")])
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`(gwa-diag [^`]+)`")
ENTRY = re.compile(r"(?:^|\s)(?:gwa-diag|-m gwa_diag)\s+(.*)$")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse keeps subcommands only here
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("gwa-diag has no subcommands")


def block_commands(text: str) -> list[list[str]]:
    """The gwa-diag argument lists of the shell lines in ``text``'s fenced code blocks."""
    found = []
    for block in FENCE.findall(text):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|;|\|", line):
                part = part.split(" #", 1)[0].strip()
                match = ENTRY.search(part) if part.startswith(("gwa-diag ", "torchrun ", "python -m gwa_diag")) else None
                if match:
                    found.append(shlex.split(match.group(1)))
    return found


def inline_commands(text: str) -> list[list[str]]:
    """The argument lists of the ``gwa-diag ...`` spans quoted in prose (outside code blocks)."""
    prose = FENCE.sub("", text)
    return [shlex.split(span)[1:] for span in INLINE.findall(prose)]


def _page_commands() -> list[tuple[str, list[str], bool]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        name = str(page.relative_to(REPO))
        found += [(name, args, True) for args in block_commands(text)]
        found += [(name, args, False) for args in inline_commands(text)]
    return found


COMMANDS = _page_commands()


def test_the_pages_show_every_subcommand_and_enough_commands_to_check():
    subs = set(_subparsers(build_parser()))
    shown = {args[0] for _, args, _ in COMMANDS if args}
    assert subs <= shown, f"subcommands no page shows: {sorted(subs - shown)}"
    assert sum(whole for *_, whole in COMMANDS) >= 20


@pytest.mark.parametrize("page,args,whole", COMMANDS, ids=[f"{p}:{' '.join(a)[:60]}" for p, a, _ in COMMANDS])
def test_documented_command_parses(page, args, whole, capsys):
    parser = build_parser()
    if whole:
        try:
            parser.parse_args(args)
        except SystemExit as stop:  # --help and --version exit 0: they parsed
            if stop.code == 0:
                return
            pytest.fail(f"{page}: `gwa-diag {' '.join(args)}` does not parse: {capsys.readouterr().err.strip()}")
        return
    subs = _subparsers(parser)
    target = parser if args and args[0].startswith("-") else subs.get(args[0] if args else "")
    assert target is not None, f"{page}: `gwa-diag {' '.join(args)}` names no subcommand"
    known = {s for action in target._actions for s in action.option_strings}
    options = [a.split("=", 1)[0] for a in args if a.startswith("-")]
    unknown = [o for o in options if o not in known]
    assert not unknown, f"{page}: `gwa-diag {' '.join(args)}` names options {target.prog!r} lacks: {unknown}"


def test_extraction_finds_continued_chained_and_torchrun_lines():
    text = ("```bash\npip install x && gwa-diag demo --out a   # c\n"
            "gwa-diag train --data sample \\\n    --epochs 2\n"
            "torchrun --nproc-per-node 2 -m gwa_diag train --data sample\n```\n"
            "prose `gwa-diag rank RUN --k 5` and `pip install`\n")
    assert block_commands(text) == [["demo", "--out", "a"], ["train", "--data", "sample", "--epochs", "2"],
                                    ["train", "--data", "sample"]]
    assert inline_commands(text) == [["rank", "RUN", "--k", "5"]]


def test_a_removed_option_fails(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["rank", "runs/x", "--no-such-option"])
    assert "--no-such-option" in capsys.readouterr().err


@pytest.mark.parametrize("command", [None, *sorted(_subparsers(build_parser()))])
def test_every_help_text_formats(command):
    # A stray % in a help string only fails when --help is asked for; format them all here.
    parser = build_parser()
    target = parser if command is None else _subparsers(parser)[command]
    assert target.format_help().startswith("usage: gwa-diag")


def test_the_pages_use_only_pictures_the_browser_tests_take():
    # The docs' pictures are replaced by tests/test_docs_screenshots.py (GWA_DIAG_SCREENSHOT=1),
    # so a picture no test takes would go stale unseen.
    module = ast.parse((REPO / "tests" / "test_docs_screenshots.py").read_text(encoding="utf-8"))
    shots = next(ast.literal_eval(node.value) for node in module.body
                 if isinstance(node, ast.AnnAssign | ast.Assign) and "SHOTS" in ast.unparse(node))
    used = {Path(m).name for page in PAGES for m in re.findall(r"\]\(([^)\s]+\.png)\)", page.read_text(encoding="utf-8"))}
    assert used and used <= set(shots), sorted(used - set(shots))
    assert {p.name for p in (REPO / "docs" / "images").glob("*.png")} == set(shots)


def test_the_readme_stays_a_landing_page():
    # The manual lives in docs/; the README keeps what a newcomer needs on two screens.
    assert len((REPO / "README.md").read_text(encoding="utf-8").splitlines()) <= 200


def test_hand_written_pages_carry_no_measured_numbers():
    # Measured numbers live in the pages the benchmarks write (docs/benchmarks/<script>.md);
    # a figure typed into prose goes stale the day a benchmark is re-run.
    generated = {p for p in (REPO / "docs" / "benchmarks").glob("*.md") if p.name != "index.md"}
    measured = re.compile(r"\b0\.\d{3}\b|\b\d+\.\d+%|AUROC \d")
    for page in sorted(set(PAGES) - generated):
        prose = FENCE.sub("", page.read_text(encoding="utf-8"))
        prose = re.sub(r"<!-- headline:start -->.*?<!-- headline:end -->", "", prose, flags=re.DOTALL)
        assert not measured.findall(prose), (page.name, measured.findall(prose))
