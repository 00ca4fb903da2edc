"""The options of one analysis, as one checked object: :class:`AnalysisOptions`.

Every choice that changes what an analysis ranks, flags or scores against (the scorer, the
averaging window, the flag rule with its ``k`` or ``noise_rate``, the truth file) lives in
this one frozen object, with its default, and is checked in one place (its
``__post_init__``, with the name checks of :mod:`gwa_diag.checks` and the rule check of
:func:`gwa_diag.analysis.rank.check_rule_options`). It is built once where a person chose
the options (the CLI's :func:`gwa_diag.cli.common.analysis_options`, the app's widgets, or
the keywords of :func:`gwa_diag.analysis.pipeline.analyze`) and then travels unchanged: into
:func:`~gwa_diag.analysis.pipeline.analyze`, on the :class:`~gwa_diag.analysis.pipeline.Analysis`
it makes (``Analysis.options``), and from there into the report, the label export and the
app's pages. Nobody downstream re-reads loose option values, so two parts of one analysis
cannot end up with different options.

Two rules every function that takes options follows:

* :meth:`AnalysisOptions.from_call`: a function takes either ``options=`` or the loose
  keywords, never both (which would win would be a guess);
* :meth:`AnalysisOptions.check_agrees`: a function given an ``Analysis`` (already made with
  its options) refuses an option given beside it that disagrees, a default spelled out
  included: the caller asked for that value, and silently using another would be a lie.

No torch; reads no data.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from gwa_diag.analysis.phase import WINDOWS
from gwa_diag.analysis.rank import RULES, check_rule_options
from gwa_diag.analysis.scorers import SCORERS
from gwa_diag.checks import DEFAULT_RULE, DEFAULT_SCORER, DEFAULT_WINDOW, InputError, InputTypeError, Rule, Window, check_choice

__all__ = ["AnalysisOptions", "LABELS_SOURCE"]

#: ``Analysis.truth_source`` when the clean labels come from the run itself (report.json's
#: ground truth says ``from`` this).
LABELS_SOURCE = "labels.parquet clean_label"


@dataclass(frozen=True, kw_only=True)
class AnalysisOptions:
    """Every option of an analysis, with its default; checked when made, so an instance is
    always valid (``dataclasses.replace`` checks again).

    Attributes:
        scorer: what to rank by (:data:`gwa_diag.analysis.scorers.SCORERS`); every score is
            higher = more suspicious.
        window: the epochs the mean scores average (:data:`gwa_diag.checks.Window`).
        rule: what to flag (:data:`gwa_diag.analysis.rank.RULES`).
        k: with ``rule="topk"`` only: how many to flag (a whole number >= 0).
        noise_rate: with ``rule="noise_rate"`` only: the expected fraction of wrong labels,
            in [0, 1].
        truth: a truth file (CSV, TSV or Parquet; sample_id, clean_label); None uses
            labels.parquet's clean_label when there is one.

    Raises:
        InputError: a value that is not valid, naming the option, the valid values and what
            to pass instead (an :class:`~gwa_diag.checks.InputTypeError` for a value of the
            wrong kind).
    """

    scorer: str = DEFAULT_SCORER
    window: Window = DEFAULT_WINDOW
    rule: Rule = DEFAULT_RULE
    k: int | None = None
    noise_rate: float | None = None
    truth: Path | None = None

    def __post_init__(self) -> None:
        # The one place analysis options are checked; normalised values are written back
        # (a frozen class sets them through object.__setattr__) so equal choices compare equal.
        check_choice(self.scorer, SCORERS, "scorer")
        check_choice(self.window, Window, "window")
        check_rule_options(self.rule, k=self.k, noise_rate=self.noise_rate)
        if self.k is not None:
            object.__setattr__(self, "k", int(self.k))
        if self.noise_rate is not None:
            object.__setattr__(self, "noise_rate", float(self.noise_rate))
        if self.truth is not None:
            if not isinstance(self.truth, (str, os.PathLike)):
                raise InputTypeError(f"truth must be a path to a truth file (CSV, TSV or Parquet), got "
                                     f"{type(self.truth).__name__}; pass truth='FILE' or leave it out")
            object.__setattr__(self, "truth", Path(self.truth))

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in order (the keywords :func:`analyze` takes)."""
        return tuple(f.name for f in fields(cls))

    @classmethod
    def from_call(cls, options: AnalysisOptions | None = None, /, **keywords: Any) -> AnalysisOptions:
        """The options of a call that takes ``options=`` or the loose keywords (None = not
        given; the others take the defaults), never both: with both, which one wins would be
        a guess.

        Raises:
            InputError: both given, or a keyword that is not valid (see the class).
            InputTypeError: ``options`` is not an :class:`AnalysisOptions`.
        """
        given = _given(keywords)
        if options is None:
            return cls(**given)
        if not isinstance(options, AnalysisOptions):
            raise InputTypeError(f"options must be an AnalysisOptions, got {type(options).__name__}; "
                                 "pass options=AnalysisOptions(...) or the keywords")
        if given:
            named = ", ".join(f"{name}=" for name in given)
            raise InputError(f"pass options= or the keywords ({named}), not both: put them into the options, "
                             f"dataclasses.replace(options, {named}...)")
        return options

    def check_agrees(self, options: AnalysisOptions | None = None, /, **keywords: Any) -> None:
        """Refuse options given beside an :class:`~gwa_diag.analysis.pipeline.Analysis`
        made with these (``self``) that disagree with them. An ``options`` object states
        every option, so each must agree; of the keywords, those given (not None) must, a
        default spelled out included (``write_report(analyze(run, scorer="align_mean"),
        scorer="aum")`` is refused). Keywords are checked together with these options'
        other values, so ``k=5`` beside a ``topk`` analysis is a disagreement, not a
        missing rule.

        Raises:
            InputError: the first option that disagrees, by name, with both values and
                what to pass instead; or an invalid option, as the class raises it.
        """
        if options is not None:
            asked, names = self.from_call(options, **keywords), self.names()
        else:
            given = _given(keywords)
            try:
                asked, names = replace(self, **given), tuple(given)
            except InputError:
                # Another rule than the Analysis's leaves its k / noise_rate misfitting: the
                # disagreement is the rule, so that is what to name.
                if "rule" in given and given["rule"] != self.rule:
                    check_choice(given["rule"], Rule, "rule")
                    raise _disagreement("rule", given["rule"], self.rule) from None
                raise
        for name in names:
            value, made = getattr(asked, name), getattr(self, name)
            if value != made:
                raise _disagreement(name, value, made)

    def as_report(self, window_epochs: Sequence[int] | None = None) -> dict[str, Any]:
        """The options as report.json records them: ``window`` (``name``, ``epochs``: the
        first and last epoch averaged, given here since only the run knows them,
        ``description``), ``scorer``, ``scorer_description`` and ``rule`` (``name``, ``k``,
        ``noise_rate``, ``description``). The truth file is recorded as the ground truth's
        ``source`` (the report writes it, since it needs the truth itself);
        :meth:`from_report` reads both back."""
        return {
            "window": {"name": self.window, "epochs": window_epochs, "description": WINDOWS[self.window]},
            "scorer": self.scorer,
            "scorer_description": SCORERS[self.scorer],
            "rule": {"name": self.rule, "k": self.k, "noise_rate": self.noise_rate, "description": RULES[self.rule]},
        }

    @classmethod
    def from_report(cls, report: Mapping[str, Any]) -> AnalysisOptions:
        """The options a report.json was written with (its ``window``, ``scorer``, ``rule``
        and the ground truth's ``source``): ``AnalysisOptions.from_report(report)`` equals the
        options of the analysis that wrote it.

        Raises:
            InputError: the report lacks one of them or holds an invalid value.
        """
        try:
            rule, window, truth = report["rule"], report["window"], report.get("ground_truth") or {}
            source = str(truth.get("source", "")) if truth.get("available") else ""
            file = source.removeprefix("from ") if source and source != f"from {LABELS_SOURCE}" else None
            return cls(scorer=report["scorer"], window=window["name"], rule=rule["name"], k=rule.get("k"),
                       noise_rate=rule.get("noise_rate"), truth=file)
        except (KeyError, TypeError, AttributeError) as exc:
            raise InputError(f"not a report.json of this gwa-diag (its scorer, window or rule is missing or of "
                             f"another form: {exc!r}); pass the report.json that `gwa-diag report` wrote, or "
                             "write the report again") from None


def _disagreement(name: str, value: Any, made: Any) -> InputError:
    return InputError(f"{name}={value!r} disagrees with the Analysis given ({name}={made!r}); "
                      f"pass analyze(..., {name}=...) instead, or leave {name} out here")


def _given(keywords: Mapping[str, Any]) -> dict[str, Any]:
    """The keywords given (not None), checked to be option names (a misspelt one would
    otherwise be dropped without a word)."""
    unknown = sorted(set(keywords) - set(AnalysisOptions.names()))
    if unknown:
        raise InputError(f"unknown analysis option(s) {', '.join(map(repr, unknown))}; valid: "
                         f"{', '.join(map(repr, AnalysisOptions.names()))}")
    return {name: value for name, value in keywords.items() if value is not None}
