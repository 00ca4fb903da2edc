"""Pieces the ``gwa-diag`` subcommands share: whole-number argument types, the one line an
OS error becomes, the library defaults the options show, and, for the commands that read a
run's analysis (``rank``, ``score``, ``report``, ``labels``), their common options, the
flag-rule checks, the one place their :class:`~gwa_diag.analysis.options.AnalysisOptions`
is built (:func:`analysis_options`), the output-path checks and the guard that turns
expected failures into one line.

No torch is imported here: every command's parser is built from this module.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path
from typing import Any, Callable

from gwa_diag.analysis.options import AnalysisOptions
from gwa_diag.analysis.scorers import SCORERS
from gwa_diag.checks import DEFAULT_RULE, DEFAULT_SCORER, DEFAULT_WINDOW, InputError, Rule, Window, values
from gwa_diag.store import RunDirError

__all__ = [
    "int_in_range",
    "os_error_line",
    "default_of",
    "FLAG_RULES",
    "add_run_args",
    "add_flag_args",
    "flag_rule",
    "rule_options",
    "analysis_options",
    "check_output_file",
    "check_output_dir",
    "guarded",
]


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


def default_of(function: Callable[..., Any], parameter: str) -> Any:
    """The default value of ``function``'s keyword ``parameter``: an option that passes its
    value on to a library function defaults (and says in its help it defaults) to what the
    function does, without writing the value a second time."""
    default = inspect.signature(function).parameters[parameter].default
    if default is inspect.Parameter.empty:
        raise TypeError(f"{function.__qualname__}() has no default for {parameter!r}")
    return default



#: CLI spelling (dashes) -> flag rule name; the rules themselves are :data:`gwa_diag.checks.Rule`.
FLAG_RULES: dict[str, str] = {rule.replace("_", "-"): rule for rule in values(Rule)}
_FLAG_OF_RULE = {rule: flag for flag, rule in FLAG_RULES.items()}
# What each rule flags, for --flag's help (keyed by rule; the default is marked from DEFAULT_RULE).
_RULE_HELP = {
    "estimate": "the top of the ranking down to the estimated number of wrong labels (the samples the model "
                "did not fit, or confidently contradicted where its learning levelled off)",
    "negative": "alignment < 0 at the GWA-selected epoch",
    "topk": "the --k most suspicious",
    "noise_rate": "the top --noise-rate fraction",
    "p_wrong": "the samples with p_wrong >= 0.5 (needs answers for a verified sample: gwa-diag audit)",
}


def add_run_args(p: argparse.ArgumentParser, *, scorer_help: str) -> None:
    """The run directory, ``--scorer`` and ``--window``: the options of every command that
    ranks a run's samples."""
    p.add_argument("run", type=Path, metavar="RUN", help="run directory (the --out of gwa-diag train)")
    p.add_argument("--scorer", default=DEFAULT_SCORER, choices=list(SCORERS), help=scorer_help)
    p.add_argument("--window", default=DEFAULT_WINDOW, choices=list(values(Window)),
                   help=f"epochs the mean scores average over (default {DEFAULT_WINDOW}: the epochs before "
                        "the model memorised its labels, else the second half)")


def add_flag_args(p: argparse.ArgumentParser) -> None:
    """``--flag``, ``--k`` and ``--noise-rate``: the options that choose the flagged samples
    (checked together by :func:`flag_rule`)."""
    rules = "; ".join(f"{flag}{' (default)' if rule == DEFAULT_RULE else ''}: {_RULE_HELP[rule]}"
                      for flag, rule in FLAG_RULES.items())
    p.add_argument("--flag", choices=list(FLAG_RULES), help=rules)
    p.add_argument("--k", type=int, help="number of samples to flag (implies --flag topk)")
    p.add_argument("--noise-rate", type=float, help="expected noise fraction in [0, 1] (implies --flag noise-rate)")


def flag_rule(args: argparse.Namespace) -> str:
    """The flagging rule the options of :func:`add_flag_args` ask for, checked here so that
    errors name the CLI's flags (--k, --noise-rate, --flag) rather than
    gwa_diag.analysis.rank.flag's Python arguments.

    Raises:
        InputError: a rule without the value it needs, a value it does not read, or a value
            out of range.
    """
    # --k alone means top-k, --noise-rate alone means noise-rate; otherwise the GWA rule.
    if args.flag is not None:
        rule, chosen_by = FLAG_RULES[args.flag], f"--flag {args.flag}"
    elif args.k is not None:
        rule, chosen_by = "topk", "--k"
    elif args.noise_rate is not None:
        rule, chosen_by = "noise_rate", "--noise-rate"
    else:
        rule, chosen_by = DEFAULT_RULE, f"the default --flag {_FLAG_OF_RULE[DEFAULT_RULE]}"
    shown = f"--flag {_FLAG_OF_RULE[rule]}"
    if rule == "topk":
        if args.k is None:
            raise InputError("--flag topk needs --k N, the number of samples to flag")
        if args.k < 0:
            raise InputError(f"--k must be a whole number >= 0, got {args.k}")
    elif args.k is not None:
        raise InputError(f"--k applies only to --flag topk, but {chosen_by} selects {shown}; drop --k or pass --flag topk")
    if rule == "noise_rate":
        if args.noise_rate is None:
            raise InputError("--flag noise-rate needs --noise-rate R, the expected noise fraction in [0, 1]")
        if not 0.0 <= args.noise_rate <= 1.0:  # False for NaN too
            raise InputError(f"--noise-rate must be a fraction in [0, 1], got {args.noise_rate}")
    elif args.noise_rate is not None:
        raise InputError(
            f"--noise-rate applies only to --flag noise-rate, but {chosen_by} selects {shown}; "
            "drop --noise-rate or pass --flag noise-rate"
        )
    return rule


def rule_options(args: argparse.Namespace, rule: str) -> dict[str, Any]:
    """``k`` and ``noise_rate`` to pass with ``rule`` (from :func:`flag_rule`): each only for
    the rule that reads it, None otherwise. A command without --k / --noise-rate (``score``
    flags by the default rule) passes None for both."""
    return {"k": getattr(args, "k", None) if rule == "topk" else None,
            "noise_rate": getattr(args, "noise_rate", None) if rule == "noise_rate" else None}


def analysis_options(args: argparse.Namespace) -> AnalysisOptions:
    """The command's analysis options, built once from its parsed arguments: ``--scorer``,
    ``--window``, the flag rule with its ``--k`` / ``--noise-rate`` (:func:`flag_rule`, so
    errors name the CLI's flags; a command without ``--flag``, such as ``score``, flags by
    the default rule) and ``--truth`` where the command has it. Everything after this reads
    the options from the object (and from the Analysis made with it), never from ``args``.

    Raises:
        InputError: a flag rule without the value it needs, or a value it does not read
            or that is out of range.
    """
    rule = flag_rule(args) if hasattr(args, "flag") else DEFAULT_RULE
    return AnalysisOptions(scorer=args.scorer, window=args.window, rule=rule,  # type: ignore[arg-type]
                           **rule_options(args, rule), truth=getattr(args, "truth", None))


def _first_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def check_output_file(path: Path | None, option: str, example: str) -> None:
    """Refuse an output file path that cannot be written before any work is done (a
    folder, or a path under a file); otherwise the failure would come at the very end,
    naming the writer's temporary file. ``example`` is a file name to suggest in a folder.

    Raises:
        InputError: naming ``option`` and what to pass instead.
    """
    if path is None:
        return
    if path.is_dir():
        raise InputError(f"{option} is a folder, not a file ({path}); pass a file name, e.g. {path / example}")
    parent = _first_existing(path.parent)
    if not parent.is_dir():
        raise InputError(f"{option} lies under {parent}, which is a file, not a folder ({path}); pass a path in a folder")


def check_output_dir(path: Path | None, option: str) -> None:
    """Refuse an output folder path that is a file or lies under one, before any work.

    Raises:
        InputError: naming ``option`` and what to pass instead.
    """
    if path is None:
        return
    existing = _first_existing(path)
    if existing == path and not path.is_dir():
        raise InputError(f"{option} is a file, not a folder ({path}); pass a folder (it is created when missing)")
    if not existing.is_dir():
        raise InputError(f"{option} lies under {existing}, which is a file, not a folder ({path}); pass a folder")


def guarded(name: str, body: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """``body`` as the command ``name``'s function, with the expected failures (no complete
    epoch, bad option, bad path, missing file) turned into one clear line on stderr and exit
    status 2, never a traceback."""

    def run(args: argparse.Namespace) -> int:
        try:
            return body(args)
        except (RunDirError, InputError) as exc:
            print(f"gwa-diag {name}: error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            # Left after the up-front path checks: no permission, a full disk, a path that
            # changed meanwhile.
            print(os_error_line(name, exc, "the --out/--out-dir/--truth paths"), file=sys.stderr)
            return 2

    run.__name__ = f"cmd_{name}"
    run.__doc__ = body.__doc__
    return run
