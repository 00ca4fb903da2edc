"""Every package states which parts of gwa_diag it may import, and the code keeps to it.

Each package's docstring (its ``__init__.py``) holds exactly one machine-readable sentence::

    May import: gwa_diag.checks, gwa_diag.store.

dotted prefixes inside gwa_diag, comma-separated, ending with a period (it may wrap over
lines), or ``May import: anything.``. A module follows the rule of the package it lies in;
the package's own modules are always allowed (for the top-level ``gwa_diag`` package: its
top-level modules, not its subpackages, which are layers with rules of their own). The
checker reads every import statement of every module, also those inside functions and
``TYPE_CHECKING`` blocks, with relative imports resolved; ``app/`` is installed as
``gwa_diag.app`` and is checked under that name. ``from gwa_diag import NAME`` of one of the
public verbs that ``gwa_diag/__init__.py`` re-exports lazily counts as an import of the
module the verb lives in; the top-level package itself (``__version__``) is allowed
everywhere, since its ``__init__`` imports nothing of gwa_diag when loaded and every module
loads it anyway.

``gwa_diag/__init__.py`` and ``gwa_diag/__main__.py`` are the entry points of the whole
package (lazy re-exports of the public verbs, ``python -m gwa_diag``), not core modules, so
the top-level rule does not apply to them (the docstring of ``gwa_diag/__init__.py`` says so).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Source folder -> the installed package name (pyproject.toml's package-dir).
SOURCE_ROOTS = {"gwa_diag": ROOT / "gwa_diag", "gwa_diag.app": ROOT / "app"}
TOP = "gwa_diag"
# Entry points exempt from the top-level rule (see the module docstring).
ENTRY_POINTS = frozenset({"gwa_diag", "gwa_diag.__main__"})
ANYTHING = "anything"

# One sentence: "May import:", then everything up to the first period that ends the sentence
# (one followed by whitespace or the end of the docstring: the dots inside dotted names are not).
_RULE = re.compile(r"May import:\s*(.*?)\.(?=\s|$)", re.DOTALL)
_PREFIX = re.compile(r"gwa_diag(\.[A-Za-z_][A-Za-z0-9_]*)*")


@dataclass(frozen=True)
class Rule:
    """The parsed ``May import:`` sentence of one package."""

    package: str
    prefixes: tuple[str, ...]  # empty with ``anything``
    anything: bool


@dataclass(frozen=True)
class Module:
    """One source file under its installed dotted name."""

    name: str
    path: Path
    package: str  # the package whose rule applies (for __init__.py: the package itself)
    is_package: bool  # an __init__.py


def discover(roots: dict[str, Path]) -> tuple[dict[str, Path], list[Module]]:
    """Every package (a folder with ``__init__.py``) under ``roots`` -> its folder, and every
    module in them. Folders without ``__init__.py`` (and everything below them) are not
    packages and are skipped, as the installer skips them."""
    packages: dict[str, Path] = {}
    modules: list[Module] = []
    for base, folder in roots.items():
        stack = [(base, folder)]
        while stack:
            name, path = stack.pop()
            if not (path / "__init__.py").is_file():
                continue
            packages[name] = path
            for file in sorted(path.glob("*.py")):
                is_init = file.name == "__init__.py"
                modules.append(Module(name if is_init else f"{name}.{file.stem}", file, name, is_init))
            stack.extend((f"{name}.{sub.name}", sub) for sub in sorted(path.iterdir())
                         if sub.is_dir() and sub.name != "__pycache__")
    return packages, modules


def parse_rule(package: str, docstring: str | None) -> Rule:
    """The ``May import:`` sentence of ``docstring``.

    Raises:
        ValueError: no such sentence, more than one, or a malformed one.
    """
    found = _RULE.findall(docstring or "")
    if len(found) != 1:
        raise ValueError(f"{package}: its docstring needs exactly one 'May import: ...' sentence, found {len(found)}")
    items = [" ".join(item.replace("`", "").split()) for item in found[0].split(",")]
    if items == [ANYTHING]:
        return Rule(package, (), True)
    bad = [item for item in items if not _PREFIX.fullmatch(item)]
    if bad:
        raise ValueError(f"{package}: 'May import:' lists {bad}; use dotted names inside gwa_diag, comma-separated")
    return Rule(package, tuple(items), False)


def read_rules(packages: dict[str, Path]) -> tuple[dict[str, Rule], list[str]]:
    """Each package's rule, and one line per package whose docstring has none (or a bad one)."""
    rules: dict[str, Rule] = {}
    missing: list[str] = []
    for name, folder in sorted(packages.items()):
        docstring = ast.get_docstring(ast.parse((folder / "__init__.py").read_text(encoding="utf-8")))
        try:
            rules[name] = parse_rule(name, docstring)
        except ValueError as exc:
            missing.append(str(exc))
    return rules, missing


def lazy_exports(top_init: Path) -> dict[str, str]:
    """The public verbs ``gwa_diag/__init__.py`` re-exports on first use (its ``_EXPORTS``:
    name -> module relative to the package), read from the source; {} without one."""
    for node in ast.parse(top_init.read_text(encoding="utf-8")).body:
        target = node.target if isinstance(node, ast.AnnAssign) else (
            node.targets[0] if isinstance(node, ast.Assign) and len(node.targets) == 1 else None)
        if isinstance(target, ast.Name) and target.id == "_EXPORTS" and node.value is not None:
            return dict(ast.literal_eval(node.value))
    return {}


def imported_names(module: Module, known: frozenset[str] = frozenset(),
                   lazy: dict[str, str] | None = None) -> list[str]:
    """Every module or name ``module`` imports, absolute, in order of appearance: ``import a.b``
    gives ``a.b``, ``from a import b`` gives ``a.b`` (a submodule or a name of ``a``: both
    start with ``a``, which is what the rules match). ``from gwa_diag import VERB`` of a verb
    in ``lazy`` (and not a module in ``known``) gives ``gwa_diag.<its module>.VERB``: that is
    what the import loads."""
    lazy = lazy or {}
    tree = ast.parse(module.path.read_text(encoding="utf-8"), filename=str(module.path))
    # Relative imports resolve against the package the module is in (for __init__.py: itself).
    here = module.name if module.is_package else module.name.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):  # every statement, also in functions and `if TYPE_CHECKING:`
        if isinstance(node, ast.Import):
            names.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = here.split(".")
                assert node.level <= len(parts), f"{module.name}: relative import beyond the top package"
                base = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            for alias in node.names:
                name = base if alias.name == "*" else f"{base}.{alias.name}"
                if base == TOP and alias.name in lazy and name not in known:
                    name = f"{TOP}.{lazy[alias.name]}.{alias.name}"
                names.append(name)
    return names


def _within(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def allowed(name: str, rule: Rule, *, top_modules: frozenset[str], packages: frozenset[str]) -> bool:
    """Whether a module under ``rule`` may import ``name``. ``top_modules`` are the top
    package's modules (not its subpackages), ``packages`` every package's name."""
    if not _within(name, TOP) or rule.anything:
        return True  # the rules are about gwa_diag's own layers only
    head = ".".join(name.split(".")[:2])
    if name == TOP or (head == name and name not in top_modules and name not in packages):
        # The top package itself or a name its __init__ defines (``__version__``; the lazy
        # verbs were resolved to their modules by imported_names): it loads nothing of gwa_diag.
        return True
    if rule.package == TOP:
        own = any(_within(name, m) for m in top_modules)  # not the subpackages: layers of their own
    else:
        own = _within(name, rule.package)
    return own or any(_within(name, prefix) for prefix in rule.prefixes)


def violations(roots: dict[str, Path], exempt: frozenset[str] = ENTRY_POINTS) -> tuple[list[str], list[str]]:
    """(``module: imported name (rule of package)`` per forbidden import, packages without a
    rule) for the source trees ``roots`` (installed name -> folder)."""
    packages, modules = discover(roots)
    rules, missing = read_rules(packages)
    top_modules = frozenset(m.name for m in modules if m.package == TOP and not m.is_package)
    known = frozenset(m.name for m in modules)
    lazy = lazy_exports(packages[TOP] / "__init__.py") if TOP in packages else {}
    found: list[str] = []
    for module in modules:
        rule = rules.get(module.package)
        if rule is None or module.name in exempt:
            continue  # a package without a rule is reported in `missing`
        found.extend(f"{module.name}: {name} (rule of {rule.package})"
                     for name in imported_names(module, known, lazy)
                     if not allowed(name, rule, top_modules=top_modules, packages=frozenset(packages)))
    return found, missing


def test_every_package_states_a_rule() -> None:
    packages, _ = discover(SOURCE_ROOTS)
    assert {"gwa_diag", "gwa_diag.training", "gwa_diag.analysis", "gwa_diag.cli", "gwa_diag.app"} <= set(packages)
    _, missing = read_rules(packages)
    assert not missing, "packages without a rule:\n" + "\n".join(missing)


def test_every_rule_names_existing_modules() -> None:
    # A misspelt prefix would allow nothing and could hide behind "anything else is refused".
    packages, modules = discover(SOURCE_ROOTS)
    rules, _ = read_rules(packages)
    known = {m.name for m in modules} | set(packages)
    unknown = [f"{rule.package}: {prefix}" for rule in rules.values() for prefix in rule.prefixes
               if prefix not in known]
    assert not unknown, "rules naming no module or package:\n" + "\n".join(unknown)


def test_imports_follow_the_package_rules() -> None:
    found, _ = violations(SOURCE_ROOTS)
    assert not found, "imports that break their package's 'May import:' rule:\n" + "\n".join(found)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def test_the_checker_catches_forbidden_imports(tmp_path: Path) -> None:
    # A tiny tree in which each kind of import breaks a rule once: were the checker to read
    # fewer imports than it should, this test, not only the real tree, would pass.
    pkg = tmp_path / "gwa_diag"
    _write(pkg / "__init__.py", ('"""Top.\n\nMay import: gwa_diag.checks,\n    gwa_diag.store.\n"""\n'
                                 '__version__ = "0"\n_EXPORTS = {"train": "training.engine"}\n'))
    _write(pkg / "checks.py", "from gwa_diag import __version__\n")  # the top package itself: allowed
    _write(pkg / "store.py", "from gwa_diag.checks import values\nfrom gwa_diag.analysis import x\n"
                             "from gwa_diag import train\n")  # a lazy verb: the module it lives in
    _write(pkg / "analysis" / "__init__.py", '"""Analysis. May import: ``gwa_diag.store``."""\n')
    _write(pkg / "analysis" / "rank.py", (
        "from typing import TYPE_CHECKING\n"
        "from gwa_diag.store import open_run\n"
        "from . import scorers\n"          # own package: allowed
        "from .. import checks\n"          # relative, resolves to gwa_diag.checks
        "if TYPE_CHECKING:\n"
        "    import gwa_diag.training.engine\n"
        "def later():\n"
        "    from ..cli import main\n"
    ))
    _write(pkg / "analysis" / "scorers.py", "")
    _write(pkg / "cli" / "__init__.py", '"""CLI. May import: anything."""\nfrom gwa_diag.training import engine\n')
    _write(pkg / "training" / "__init__.py", '"""Training, with no rule."""\n')
    _write(pkg / "training" / "engine.py", "import gwa_diag.cli\n")
    app = tmp_path / "app"
    _write(app / "__init__.py", '"""App. May import: gwa_diag.analysis."""\n')
    _write(app / "page.py", "from .views import table\nfrom gwa_diag.training import engine\n")
    _write(app / "views" / "__init__.py", '"""Views. May import: gwa_diag.analysis, gwa_diag.store."""\n')
    _write(app / "views" / "table.py", "from ... import store\nfrom ..page import draw\n")

    found, missing = violations({"gwa_diag": pkg, "gwa_diag.app": app}, exempt=frozenset())
    assert sorted(found) == sorted([
        "gwa_diag.store: gwa_diag.analysis.x (rule of gwa_diag)",
        "gwa_diag.store: gwa_diag.training.engine.train (rule of gwa_diag)",
        "gwa_diag.analysis.rank: gwa_diag.checks (rule of gwa_diag.analysis)",
        "gwa_diag.analysis.rank: gwa_diag.training.engine (rule of gwa_diag.analysis)",
        "gwa_diag.analysis.rank: gwa_diag.cli.main (rule of gwa_diag.analysis)",
        "gwa_diag.app.page: gwa_diag.training.engine (rule of gwa_diag.app)",
        "gwa_diag.app.views.table: gwa_diag.app.page.draw (rule of gwa_diag.app.views)",
    ])
    assert len(missing) == 1 and missing[0].startswith("gwa_diag.training:")


@pytest.mark.parametrize("docstring", [
    "No rule at all.",
    "May import: gwa_diag.store. May import: gwa_diag.checks.",
    "May import: store, checks.",
])
def test_a_missing_or_malformed_rule_is_refused(docstring: str) -> None:
    with pytest.raises(ValueError, match="gwa_diag.example"):
        parse_rule("gwa_diag.example", docstring)


def test_a_rule_may_wrap_and_quote() -> None:
    rule = parse_rule("gwa_diag.example", "Text.\n\nMay import: ``gwa_diag.checks``,\n    gwa_diag.store. More text.")
    assert rule.prefixes == ("gwa_diag.checks", "gwa_diag.store") and not rule.anything
