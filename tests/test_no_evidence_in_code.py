"""Measured numbers live in benchmark output and the docs, never in the package's docstrings,
help texts, printed sentences or comments: a copy there goes stale the day a benchmark is
run again. This test reads every string and comment of gwa_diag/ and fails on the shapes
such evidence takes (an AUROC value, "N of M runs", a measured range), naming each place."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

EVIDENCE = re.compile(
    r"AUROC\s*(of\s*)?\d"  # an AUROC value
    r"|\bAP\s+\d"  # an average precision
    r"|\b\d+ of (the )?\d+ (runs|memorising|benchmark|recorded|cells)"  # a run count
    r"|\b(Measured|measured) (on|over) (the )?\d"  # "measured on 23 runs"
    r"|\bon \d+ (runs|later|fresh|recorded|memorising)"  # "on 26 later runs"
    r"|\b\d+(\.\d+)?-\d+(\.\d+)?\s*(AUROC|points)"  # a measured range
)


def _places(path: Path) -> list[str]:
    """Every piece of evidence in ``path``'s strings and comments, as ``file:line: 'text'``."""
    source = path.read_text(encoding="utf-8")
    texts = [(node.lineno, node.value) for node in ast.walk(ast.parse(source))
             if isinstance(node, ast.Constant) and isinstance(node.value, str)]
    texts += [(token.start[0], token.string) for token in tokenize.generate_tokens(io.StringIO(source).readline)
              if token.type == tokenize.COMMENT]
    return [f"{path.name}:{line}: {match.group(0)!r}" for line, text in texts for match in EVIDENCE.finditer(text)]


def test_no_measured_numbers_in_the_package():
    places = [p for f in sorted((ROOT / "gwa_diag").rglob("*.py")) for p in _places(f)]
    places += [p for f in sorted((ROOT / "app").rglob("*.py")) for p in _places(f)]
    assert places == [], "measured numbers in the code (move them to the benchmark output or docs):\n" + "\n".join(places)


def test_the_check_finds_evidence(tmp_path):
    sample = tmp_path / "sample.py"
    sample.write_text('"""Ranked at AUROC 0.61 on 22 of 26 runs."""\n# measured on 23 runs\nX = 1\n')
    assert len(_places(sample)) == 3
    sample.write_text('"""The share of 10% of the epochs; a 95% interval."""\n')
    assert _places(sample) == []  # contracts with numbers in them are not evidence
