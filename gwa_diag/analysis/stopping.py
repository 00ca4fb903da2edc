"""The early-stopping picture of a recorded run: the GWA choice, how far to trust it,
LabelWave's choice from the same recording, and, with an evaluation set, how the GWA curve
relates to evaluation accuracy.

Reads ``epochs.parquet`` (GWA, eval accuracy) and the recorded predictions of the complete
epochs' parts (LabelWave's prediction changes); no torch. The rules themselves live in
:mod:`gwa_diag.early_stopping`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import pandas as pd

from gwa_diag.analysis.parts import query_parts
from gwa_diag.analysis.phase import number_or_none, selected_epoch, training_phase
from gwa_diag.early_stopping import EarlyStopResult, StopTrust, assess_choice, labelwave_epoch, rank_correlation
from gwa_diag.store import Run, open_run

__all__ = ["Stopping", "prediction_changes", "stopping"]

# Which file to use after a run that memorised, when nothing held out can tell: a model's
# test accuracy often keeps rising while it fits its wrong labels, so the earlier weights are
# not the safer default (how often each was better: docs/benchmarks/regimes.md, `kept`).
LAST_WAS_BETTER = ("test accuracy often keeps rising while a model fits its wrong labels "
                   "(docs/benchmarks/regimes.md compares both)")


def prediction_changes(run: Run | str | os.PathLike) -> pd.DataFrame:
    """Per complete epoch: ``changes``, the number of training samples whose recorded
    prediction differs from their prediction at their previous presented epoch, and
    ``compared``, how many samples had one (0 in the first epoch). A sample presented
    several times in an epoch counts with its last presentation (highest step).

    These are predictions on the training batches as trained (augmented), as recorded:
    what LabelWave counts. Fewer changes = the model has settled; a later rise is the wrong
    labels being fitted.
    """
    run = open_run(run)

    def query(source: str) -> str:
        return f"""
            WITH last AS (
                SELECT sample_id, CAST(epoch AS BIGINT) AS epoch, arg_max(pred, step) AS pred
                FROM {source}
                GROUP BY sample_id, epoch
            ), paired AS (
                SELECT epoch, pred, lag(pred) OVER (PARTITION BY sample_id ORDER BY epoch) AS previous
                FROM last
            )
            SELECT epoch,
                   CAST(count_if(previous IS NOT NULL AND pred <> previous) AS BIGINT) AS changes,
                   CAST(count(previous) AS BIGINT) AS compared
            FROM paired GROUP BY epoch ORDER BY epoch
        """

    def empty() -> pd.DataFrame:
        return pd.DataFrame({"epoch": pd.Series(dtype="int64"), "changes": pd.Series(dtype="int64"),
                             "compared": pd.Series(dtype="int64")})

    return query_parts(run, query, lambda relation: relation.df(), empty)


@dataclass(frozen=True)
class Stopping:
    """The early-stopping picture of one run.

    Attributes:
        gwa: the GWA rule's choice (:func:`gwa_diag.early_stopping.select_epoch`).
        trust: how far to trust it (:func:`gwa_diag.early_stopping.assess_choice`).
        labelwave: LabelWave's choice from the recorded prediction changes.
        changes: :func:`prediction_changes` of the run.
        eval_correlation: Spearman rank correlation between GWA and evaluation accuracy over
            the epochs where both are defined (None without an evaluation set). Near 1: the
            GWA curve orders epochs as the evaluation set does; near 0 or negative: it does not.
        eval_acc: evaluation accuracy at the GWA choice (``gwa``), at LabelWave's
            (``labelwave``), at the best epoch (``best``, with ``best_epoch``), at the last
            epoch (``last``) and, when the model memorised, at the plateau whose weights the
            engine keeps (``kept``, with ``kept_epoch``); empty without an evaluation set.
        kept_epoch: the epoch whose weights the engine kept as
            ``checkpoints/before_memorisation.pt`` (``run.json``'s ``memorisation``), when
            that file exists; None otherwise.
    """

    gwa: EarlyStopResult
    trust: StopTrust
    labelwave: EarlyStopResult
    changes: pd.DataFrame
    eval_correlation: float | None
    eval_acc: dict[str, Any]
    kept_epoch: int | None = None

    def lines(self) -> list[str]:
        """The picture in a few plain sentences (for the CLI, the report and the app)."""
        out = [self.trust.note()]
        lw = self.labelwave
        out.append(f"LabelWave (same recording) chose epoch {lw.epoch}: {lw.reason}" if lw.epoch is not None
                   else f"LabelWave chose no epoch: {lw.reason}")
        if self.eval_acc:
            acc = self.eval_acc

            def at(key: str) -> str:
                return "-" if acc.get(key) is None else f"{acc[key]:.3f}"

            corr = "undefined" if self.eval_correlation is None else f"{self.eval_correlation:.2f}"
            kept = f"before memorisation {at('kept')} (epoch {acc['kept_epoch']}), " if "kept_epoch" in acc else ""
            out.append(f"evaluation accuracy at the GWA choice {at('gwa')}, at LabelWave's {at('labelwave')}, "
                       f"{kept}best {at('best')} (epoch {acc.get('best_epoch')}), last {at('last')}; rank correlation "
                       f"of GWA with evaluation accuracy over epochs: {corr}")
        if self.kept_epoch is None:
            return out  # no weights kept from before memorisation: no file to choose between
        kept_acc, last_acc = self.eval_acc.get("kept"), self.eval_acc.get("last")
        if kept_acc is None or last_acc is None:
            # Nothing recorded tells whether memorising cost accuracy, so the advice follows
            # what the benchmarks measured (LAST_WAS_BETTER).
            out.append(f"the weights from before memorisation (epoch {self.kept_epoch}) are in "
                       f"checkpoints/before_memorisation.pt; {LAST_WAS_BETTER}: without held-out data to "
                       "compare them on, use checkpoints/last.pt")
        elif kept_acc != last_acc:
            better = "checkpoints/before_memorisation.pt" if kept_acc > last_acc else "checkpoints/last.pt"
            out.append(f"on the evaluation set the weights from before memorisation scored "
                       f"{'above' if kept_acc > last_acc else 'below'} the last epoch's: {better} is the better model there")
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "trust": self.trust.as_dict(),
            "labelwave": self.labelwave.as_dict(),
            "prediction_changes": self.changes.to_dict(orient="list"),
            "eval_correlation": self.eval_correlation,
            "eval_acc": self.eval_acc,
            "kept_epoch": self.kept_epoch,
        }


def stopping(run: Run | str | os.PathLike, *, selection: EarlyStopResult | None = None) -> Stopping:
    """The early-stopping picture of ``run``; ``selection`` defaults to the run's GWA choice
    (:func:`gwa_diag.analysis.phase.selected_epoch`)."""
    run = open_run(run)
    chosen = selection if selection is not None else selected_epoch(run)
    epochs = run.epochs()
    ep = [int(e) for e in epochs["epoch"]] if len(epochs) else []
    gwa = [number_or_none(g) for g in epochs["gwa"]] if "gwa" in epochs else [None] * len(ep)
    phase = training_phase(run).phase
    trust = assess_choice(ep, gwa, chosen, phase)
    changes = prediction_changes(run)
    # The first recorded epoch has nothing to compare with: unknown, not zero changes.
    counts = [int(c) if int(n) > 0 else None for c, n in zip(changes["changes"], changes["compared"])]
    labelwave = labelwave_epoch([int(e) for e in changes["epoch"]], counts)
    correlation, acc = None, {}
    if "eval_acc" in epochs:
        by_epoch = {e: number_or_none(a) for e, a in zip(ep, epochs["eval_acc"])}
        pairs = [(g, by_epoch[e]) for e, g in zip(ep, gwa) if g is not None and by_epoch.get(e) is not None]
        correlation = rank_correlation([g for g, _ in pairs], [a for _, a in pairs]) if pairs else None
        known = {e: a for e, a in by_epoch.items() if a is not None}
        if known:
            best = max(known, key=lambda e: (known[e], -e))
            acc = {"gwa": known.get(chosen.epoch), "labelwave": known.get(labelwave.epoch), "best": known[best],
                   "best_epoch": best, "last": known[max(known)]}
            if phase.memorising and phase.plateau is not None:
                # The weights the engine keeps from before memorisation (the plateau's).
                acc.update({"kept": known.get(phase.plateau), "kept_epoch": phase.plateau})
    # The engine's record of the weights it kept (none from a recorder in the user's own loop).
    record = run.meta.get("memorisation")
    record = record if isinstance(record, dict) else {}
    file = record.get("checkpoint")
    kept = record.get("kept_epoch") if isinstance(file, str) and file and (run.path / file).is_file() else None
    return Stopping(chosen, trust, labelwave, changes, correlation, acc, kept)
