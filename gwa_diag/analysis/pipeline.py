"""One analysis of a run, assembled in one place: :func:`analyze` -> :class:`Analysis`.

The steps, each a public function of its own module::

    choose_epochs (phase)  -> which epochs each score reads, the early-stopping selection
    summarize (summaries)  -> per-sample sums, scored by the functions of scorers
    rank, flag (rank)      -> every sample most suspicious first, the flagged ones
    ground_truth (truth)   -> which samples are truly mislabeled, when known
    detection_table, per_class_table (metrics) -> how well the scores find them

The report, the ``rank`` / ``score`` / ``report`` / ``demo`` commands and the app all read
their numbers from an :class:`Analysis`, so they cannot disagree with each other.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import pandas as pd

from gwa_diag.analysis.audit import AuditResult, audit_result, has_audit
from gwa_diag.analysis.metrics import detection_table, per_class_table
from gwa_diag.analysis.options import LABELS_SOURCE, AnalysisOptions
from gwa_diag.analysis.rank import flag_ranking, rank
from gwa_diag.analysis.stopping import Stopping, stopping
from gwa_diag.analysis.phase import EpochChoices, EpochSelection
from gwa_diag.analysis.summaries import summarize
from gwa_diag.store import AnalysisError
from gwa_diag.analysis.truth import ground_truth
from gwa_diag.analysis.estimate import ESTIMATE_COLUMN, NoiseEstimate, estimate_wrong_labels
from gwa_diag.checks import InputError
from gwa_diag.store import Run, open_run

__all__ = ["Analysis", "AnalysisOptions", "EpochSelection", "analyze"]


@dataclass(frozen=True, eq=False)  # eq=False: frames have no single truth value to compare
class Analysis:
    """Everything one analysis of a run found, from :func:`analyze`. The reference for
    what each part means and which direction is suspicious.

    Direction: every **score** (the scorer columns of ``summary``, ``ranking["score"]``)
    is oriented **higher = more suspicious**; **raw alignment** (``alignment_selected``)
    is the other way round, **lower = more suspicious**, and < 0 (the sample pulls the
    classifier head against its direction) is what the ``negative`` rule flags.

    Attributes:
        run: the run directory read (complete epochs only).
        options: the options it was made with (:class:`gwa_diag.analysis.options.AnalysisOptions`:
            scorer, window, rule, k, noise_rate and truth file, checked); whatever takes this
            Analysis reads them from here and refuses others given beside it.
        summary: one row per sample (index ``sample_id``): every scorer of
            :data:`gwa_diag.analysis.scorers.SCORERS`, ``label`` (given),
            ``suggested_label`` / ``suggested_prob``, ``alignment_selected``, ``n_epochs``,
            ``n_window``, ``clean_label`` and ``path`` (the sample's file) when labels.parquet
            has them (:func:`gwa_diag.analysis.summaries.summarize`).
        epoch_choices: which epochs each score read, and why
            (:class:`gwa_diag.analysis.phase.EpochChoices`, from
            :func:`gwa_diag.analysis.phase.choose_epochs`): ``phase``, the training phase
            (whether and from which epoch the model memorised its labels, and the per-epoch
            curve it was read from); ``window``, the epochs the mean scores average (with the
            default ``phase`` window: those before memorisation); ``note``, one sentence for
            people ("the model memorised its labels from epoch 7: scores are read from
            epochs 1-6"); the GWA selection (also as ``selection``: the early-stopping choice
            and the epoch the flags use); the EL2N and disagreement epochs.
        ranking: ``summary`` sorted most suspicious first by ``options.scorer`` (ties by
            ascending sample_id, NaN scores last), with ``rank`` (1 = most suspicious),
            ``score`` and ``scorer`` in front (:func:`gwa_diag.analysis.rank.rank`).
        flagged: the rows of ``ranking`` the rule flags, in ranking order, plus a ``reason``
            for people (:func:`gwa_diag.analysis.rank.flag`); what suspects.csv holds.
        class_names: from run.json, or None (labels are then class indices only).
        truth: which samples are truly mislabeled (bool Series by sample_id, True = given
            label != clean label), over the samples the truth covers; None without truth.
        truth_source: where ``truth`` came from (the truth file, or
            ``"labels.parquet clean_label"``); None without truth.
        truth_coverage: ``{"matched", "samples", "truth_rows"}``: samples scored against the
            truth, samples in the run, truth rows with a label; None without truth.
        truth_reason: why there is no truth (and how to give one); None with truth.
        audit: what the run's verified sample says (:class:`gwa_diag.analysis.audit.AuditResult`:
            the number of wrong labels with its interval, per class, the precision of the
            flagged set, the recall of a top-down review); None when the run has no answered
            audit (``gwa-diag audit RUN --n 200`` draws one). With one, ``ranking`` and
            ``flagged`` gain ``p_wrong``, the calibrated probability that the label is wrong.
        detection: (computed on first use) one row per scorer (AUROC, AP, precision and
            recall at k = number of mislabeled samples) and one each for the default rule
            and for "alignment < 0 at the selected epoch" (precision, recall, F1, flagged);
            None without truth
            (:func:`gwa_diag.analysis.metrics.detection_table`).
        per_class: (computed on first use) the same per given label for ``options.scorer``;
            None without truth (:func:`gwa_diag.analysis.metrics.per_class_table`).
        estimate: (computed on first use) the estimated number of wrong labels, in total
            and per given class (:func:`gwa_diag.analysis.estimate.estimate_wrong_labels`);
            the ``estimate`` rule flags that many from the top of the ranking.
        stopping: (computed on first use) how far to trust the GWA choice, LabelWave's
            choice from the recorded predictions and, with an evaluation set, evaluation
            accuracy at each choice and its rank correlation with GWA
            (:func:`gwa_diag.analysis.stopping.stopping`).
    """

    run: Run
    options: AnalysisOptions
    summary: pd.DataFrame
    epoch_choices: EpochChoices
    ranking: pd.DataFrame
    flagged: pd.DataFrame
    class_names: tuple[str, ...] | None
    truth: pd.Series | None
    truth_source: str | None
    truth_coverage: dict[str, int] | None
    truth_reason: str | None
    audit: AuditResult | None = None

    # Lazy: the rank command and the app's pages that need no detection never pay for it.
    # (cached_property writes the instance __dict__ directly, so it works on a frozen class.)
    @cached_property
    def detection(self) -> pd.DataFrame | None:
        return None if self.truth is None else detection_table(self.summary, self.truth)

    @cached_property
    def estimate(self) -> NoiseEstimate | None:
        return estimate_wrong_labels(self.summary) if ESTIMATE_COLUMN in self.summary.columns else None

    @cached_property
    def per_class(self) -> pd.DataFrame | None:
        return None if self.truth is None else per_class_table(self.summary, self.truth, scorer=self.options.scorer)

    @cached_property
    def stopping(self) -> Stopping:
        return stopping(self.run)

    @property
    def selection(self) -> EpochSelection:
        """The early-stopping choice and the epoch the flags use (``epoch_choices.selection``)."""
        return self.epoch_choices.selection

    @property
    def has_truth(self) -> bool:
        return self.truth is not None


def analyze(
    run: Run | str | os.PathLike,
    *,
    options: AnalysisOptions | None = None,
    scorer: str | None = None,
    window: str | None = None,
    rule: str | None = None,
    k: int | None = None,
    noise_rate: float | None = None,
    truth: str | os.PathLike | None = None,
    summary: pd.DataFrame | None = None,
) -> Analysis:
    """Analyse a run: summaries, early-stopping selection, ranking, flags, ground truth and
    (on first use) detection tables. See :class:`Analysis` for what each part means; every
    score is higher = more suspicious, raw alignment lower = more suspicious.

    The options come as one :class:`~gwa_diag.analysis.options.AnalysisOptions`
    (``options=``, what the CLI, the app and the label export pass) or as the keywords below
    (None takes the default of :class:`~gwa_diag.analysis.options.AnalysisOptions`: scorer
    ``aum``, window ``phase``, rule ``estimate``), not both. Either way the Analysis carries
    them as ``options``.

    Args:
        run: a run directory, or an open :class:`gwa_diag.store.Run`.
        options: every option at once; leave the keywords out with it.
        scorer: what to rank by (:data:`gwa_diag.analysis.scorers.SCORERS`).
        window: epochs the mean scores average (:data:`gwa_diag.checks.Window`).
        rule: what to flag (:data:`gwa_diag.analysis.rank.RULES`): ``estimate`` (the
            top of the ranking down to the estimated number of wrong labels; the default),
            ``negative`` (alignment < 0 at the selected epoch), ``topk`` (needs ``k``),
            ``noise_rate`` (needs ``noise_rate`` in [0, 1]) or ``p_wrong`` (p_wrong >= 0.5;
            needs an answered audit).
        truth: a truth file (CSV, TSV or Parquet; columns sample_id, clean_label); None uses
            labels.parquet's clean_label when there is one, and no truth is not an error.
        summary: a :func:`gwa_diag.analysis.summaries.summarize` frame of this run and
            window to reuse instead of reading the run again (the app shares one).

    Raises:
        InputError: an unknown option or one that does not fit the rule, or ``options`` and
            keywords both (checked before any data is read), a broken truth file, or a
            ``summary`` of another run or window.
        MissingFileError: the truth file does not exist.
        AnalysisError: the run has no complete epoch, or the truth file shares no sample
            with the run.
        RunDirError: not a run directory.
    """
    options = AnalysisOptions.from_call(options, scorer=scorer, window=window, rule=rule, k=k,
                                        noise_rate=noise_rate, truth=truth)
    the_run = open_run(run)
    if summary is None:
        summary = summarize(the_run, window=options.window)
    else:
        _check_summary(summary, the_run, options.window)
    ranking = rank(summary, scorer=options.scorer)
    audit = None
    if has_audit(the_run):
        # A verified sample: with answers, the calibrated p_wrong joins the ranking (before the
        # flags, which the p_wrong rule reads), then the precision of the flagged set.
        audit = audit_result(the_run, summary=summary, score=ranking["score"], ranking_ids=ranking.index)
        if audit is not None and audit.p_wrong is not None:
            ranking.insert(ranking.columns.get_loc("score"), "p_wrong", audit.p_wrong.reindex(ranking.index))
    flagged = flag_ranking(ranking, rule=options.rule, k=options.k, noise_rate=options.noise_rate)
    if audit is not None:
        audit = replace(audit, flagged=audit.precision_of(flagged.index))
    is_noisy: pd.Series | None = None
    source = reason = None
    try:
        is_noisy = ground_truth(the_run, truth_file=options.truth, given=summary["label"])
        source = str(options.truth) if options.truth is not None else LABELS_SOURCE
    except AnalysisError as err:
        # A truth that was asked for must be there; one that was not is simply absent.
        if options.truth is not None:
            raise
        reason = str(err)
    return Analysis(
        run=the_run,
        options=options,
        summary=summary,
        epoch_choices=summary.attrs["epochs"],
        ranking=ranking,
        flagged=flagged,
        class_names=the_run.class_names,
        truth=is_noisy,
        truth_source=source,
        truth_coverage=dict(is_noisy.attrs["coverage"]) if is_noisy is not None else None,
        truth_reason=reason,
        audit=audit,
    )


def _check_summary(summary: pd.DataFrame, run: Run, window: str) -> None:
    # A summary of another run or window would pair one run's scores with another's truth.
    made_for = summary.attrs.get("window")
    if made_for != window:
        raise InputError(f"the summary averages the window {made_for!r}, not {window!r}; pass window={made_for!r}")
    source = summary.attrs.get("run")
    if source is not None and Path(source).resolve() != run.path.resolve():
        raise InputError(f"the summary is of the run {source}, not of {run.path}")
