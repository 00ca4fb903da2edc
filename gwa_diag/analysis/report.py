"""One-call analysis report of a run: RUN/analysis/report.md, report.json, plots, the
suspects file and the full ranking.

Files written (each atomically, so a reader never sees half a file)::

    analysis/report.md         human summary: training phase, early stopping, detection table,
                               top suspects
    analysis/report.json       the same numbers, machine-readable
    analysis/suspects.csv      flagged samples for relabeling (gwa_diag.analysis.rank.write_suspects)
    analysis/ranking.parquet   every sample's summary, rank and score
    analysis/phase.png         the training phase: per-epoch fit of the given labels and the
                               confidently contradicted share, the fit thresholds, the onset of
                               memorisation and the averaged window
    analysis/gwa_curve.png     GWA per epoch (undefined epochs as gaps), selected epoch marked,
                               eval accuracy on a second axis when recorded
    analysis/alignment_hist.png  alignment histograms at a few epochs (noisy vs clean when known)
    analysis/roc.png, pr.png   ROC and precision-recall curves per scorer (ground truth only)
    analysis/.report.lock      held (fcntl.flock) while a report writes; see below

The files of one report belong together: report.json (written last) records a random
``report_id``, the scorer and rule options and the SHA-256 of every other file it wrote;
ranking.parquet carries the same id in its Parquet metadata (``gwa_diag.report_id``) and
report.md shows it. While a report writes it holds an exclusive lock on ``.report.lock`` in
the output folder, so a second report on the same folder is refused instead of mixing its
files with the first one's. The lock belongs to the open file, so the OS releases it when
the process ends, however it ends: a killed report never blocks the next one.

Scores follow :data:`gwa_diag.analysis.scorers.SCORERS`: higher = more suspicious.
"""

from __future__ import annotations

import json
import math
import os
import time
import uuid
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa

from gwa_diag import __version__
from gwa_diag.analysis.corrected import trained_on
from gwa_diag.analysis.metrics import ESTIMATE_ROW, RULE_ROW, curve_points
from gwa_diag.analysis.estimate import caveat_of
from gwa_diag.analysis.plots import gwa_figure, histogram_figure, phase_figure, png_bytes
from gwa_diag.analysis.options import AnalysisOptions
from gwa_diag.analysis.pipeline import Analysis, analyze
from gwa_diag.analysis.rank import write_suspects
from gwa_diag.analysis.phase import EpochChoices
from gwa_diag.analysis.scorers import SCORERS
from gwa_diag.checks import InputError
from gwa_diag.phase_rule import MEMORISED_AT, MEMORISING_FROM, fit_at_share
from gwa_diag.store import Run, RunDirError, atomic_write_bytes, atomic_write_table, exclusive_lock, file_sha256

__all__ = ["write_report", "markdown_table", "json_ready", "ReportBusyError", "LOCK_NAME", "REPORT_ID_KEY"]

_TOP_SUSPECTS = 20

#: Lock file in the output folder, held while a report writes.
LOCK_NAME = ".report.lock"
#: Parquet metadata key of ranking.parquet holding the report_id of report.json.
REPORT_ID_KEY = b"gwa_diag.report_id"


class ReportBusyError(RunDirError):
    """Another report is writing into the same folder right now."""


def write_report(
    run: str | os.PathLike | Run | Analysis,
    *,
    out_dir: str | os.PathLike | None = None,
    options: AnalysisOptions | None = None,
    scorer: str | None = None,
    truth_file: str | os.PathLike | None = None,
    window: str | None = None,
    rule: str | None = None,
    k: int | None = None,
    noise_rate: float | None = None,
) -> dict[str, Any]:
    """Analyse a run (:func:`gwa_diag.analysis.pipeline.analyze`) and write the report files
    into ``out_dir`` (default RUN/analysis); or write the report of an :class:`Analysis`
    already made, whose options then apply.

    The options come as one :class:`~gwa_diag.analysis.options.AnalysisOptions` (``options=``)
    or as the keywords (``truth_file`` is its ``truth``; None takes the default), not both.
    Beside an :class:`Analysis` they must agree with its own options
    (:meth:`~gwa_diag.analysis.options.AnalysisOptions.check_agrees`), a default spelled out
    included: ``write_report(analyze(run, scorer="align_mean"), scorer="aum")`` is refused.

    Detection metrics, per-class breakdown and ROC/PR plots appear when ground truth exists
    (``truth_file``, or clean labels in labels.parquet); without it the report says so.
    Returns the content of report.json (with the paths of every file written, their
    SHA-256 and the ``report_id`` that ties them together).

    Every input is checked before the first file is written: a refused report leaves the
    previous report's files as they were.

    Raises:
        AnalysisError: the run has no complete epoch, or the truth file shares no sample
            with the run.
        ReportBusyError: another report is writing into ``out_dir`` right now.
        ValueError: unknown scorer, window or rule, bad ``k`` / ``noise_rate``, a broken
            truth file (see :func:`gwa_diag.analysis.truth.ground_truth`), ``options`` and
            keywords both, options that disagree with the given Analysis, or ``out_dir``
            is a file.
        FileNotFoundError: the truth file does not exist.
    """
    keywords = {"scorer": scorer, "window": window, "rule": rule, "k": k, "noise_rate": noise_rate,
                "truth": truth_file}
    if isinstance(run, Analysis):
        run.options.check_agrees(options, **keywords)
        analysis = run
    else:
        analysis = analyze(run, options=AnalysisOptions.from_call(options, **keywords))
    out = Path(out_dir) if out_dir is not None else analysis.run.path / "analysis"
    # Every input is checked (the truth file included, by analyze) before the first file is
    # written, so a refused report leaves the previous report's files together and unchanged.
    if out.exists() and not out.is_dir():
        raise InputError(f"the report folder is a file ({out}); pass a folder as out_dir (--out-dir)")
    epochs = analysis.run.epochs()
    # The detection tables are computed on first use: use them now, so that nothing left
    # to compute can fail between the first file written and the last.
    detection, per_class = analysis.detection, analysis.per_class
    out.mkdir(parents=True, exist_ok=True)
    busy = (f"another `gwa-diag report` is writing the report files ({out}); wait for it to "
            "finish and run again, or pass --out-dir another folder")
    # The lock file is left in place, empty: removing it could race a report taking it.
    with exclusive_lock(out / LOCK_NAME, busy, ReportBusyError):
        return _write_files(analysis, out, epochs=epochs, detection=detection, per_class=per_class)


def _write_files(
    analysis: Analysis,
    out: Path,
    *,
    epochs: pd.DataFrame,
    detection: pd.DataFrame | None,
    per_class: pd.DataFrame | None,
) -> dict[str, Any]:
    """Write every report file (the caller holds the report lock); report.json goes last,
    so once it names a report_id, every file it lists with a checksum is that report's."""
    run, summary, ranked, flagged = analysis.run, analysis.summary, analysis.ranking, analysis.flagged
    names, truth = analysis.class_names, analysis.truth
    # The options describe themselves (report.json's window, scorer and rule); the report
    # places them where they have always been.
    described = analysis.options.as_report(summary.attrs.get("window_epochs"))
    selection = analysis.selection.as_dict()
    truth_note = f"from {analysis.truth_source}" if truth is not None else str(analysis.truth_reason)
    report_id = uuid.uuid4().hex
    files: dict[str, str] = {}
    files["suspects"] = str(write_suspects(out / "suspects.csv", flagged, class_names=names))
    # pandas stores attrs in the Parquet metadata as JSON: the epoch choices go in as the
    # selection's plain form (report.json's early_stopping object).
    plain = ranked.reset_index()
    plain.attrs = {**{k: v for k, v in ranked.attrs.items() if k != "epochs"},
                   "selection": {k: v for k, v in selection.items() if k != "used_epoch"}}
    table = pa.Table.from_pandas(plain, preserve_index=False)
    # The id in the Parquet metadata ties the ranking to its report.json without a new column.
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), REPORT_ID_KEY: report_id.encode()})
    files["ranking"] = str(atomic_write_table(out / "ranking.parquet", table))

    stop = analysis.stopping
    choices = analysis.epoch_choices
    phase = choices.phase
    files["phase"] = str(_save(phase_figure(choices.phase.curve, window=list(choices.window), plateau=phase.plateau,
                                            onset=phase.onset if phase.memorising else None,
                                            memorised=phase.memorised, weight=phase.weight), out / "phase.png"))
    files["gwa_curve"] = str(_save(gwa_figure(epochs, analysis.selection.used_epoch, fallback=bool(selection.get("fallback")),
                                              labelwave=stop.labelwave.epoch), out / "gwa_curve.png"))
    files["alignment_hist"] = str(_save(_histograms(run, summary, truth), out / "alignment_hist.png"))
    if truth is not None:
        roc, pr = _plot_curves(out, summary, truth, detection)  # type: ignore[arg-type]
        files["roc"], files["pr"] = str(roc), str(pr)
    # Under the lock nobody else replaces these files, so the checksums are of this report's.
    checksums = {key: file_sha256(p) for key, p in files.items()}

    report: dict[str, Any] = {
        "gwa_diag_version": __version__,
        "report_id": report_id,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "run": str(run.path),
        "run_id": run.meta.get("run_id"),
        # Where the labels came from when the run trained on a `gwa-diag labels` export; else None.
        "label_provenance": trained_on(run.meta),
        "n_samples": int(len(summary)),
        "n_epochs": int(summary.attrs.get("n_epochs", len(epochs))),
        "num_classes": summary.attrs.get("num_classes"),
        "window": described["window"],
        "training_phase": _phase_record(analysis.epoch_choices),
        "early_stopping": selection,
        "stopping": stop.as_dict(),
        "el2n_epoch": summary.attrs.get("el2n_epoch"),
        "scorer": described["scorer"],
        "scorer_description": described["scorer_description"],
        "rule": described["rule"],
        "n_flagged": int(len(flagged)),
        "estimate": analysis.estimate.as_dict() if analysis.estimate is not None else None,
        "audit": analysis.audit.as_dict() if analysis.audit is not None else None,
        "n_alignment_negative": int((summary["alignment_selected"] < 0).sum()),
        "ground_truth": (
            {"available": True, "source": truth_note, "n": int(len(truth)), "n_noisy": int(truth.sum()),
             "noise_rate": float(truth.mean()), "coverage": analysis.truth_coverage}
            if truth is not None
            else {"available": False, "reason": truth_note}
        ),
        "detection": _records(detection, "method"),
        "per_class": _records(per_class, "label"),
        "top_suspects": _records(_suspect_preview(flagged, names), None),
        "scorers": SCORERS,
        "files": files,
        "sha256": checksums,
    }
    files["report_md"] = str(out / "report.md")
    files["report_json"] = str(out / "report.json")
    markdown = _markdown({**report, "stopping_lines": stop.lines()}, detection, per_class, flagged, names)
    atomic_write_bytes(out / "report.md", markdown.encode("utf-8"))
    atomic_write_bytes(out / "report.json", (json.dumps(json_ready(report), indent=2) + "\n").encode("utf-8"))
    return report


# --------------------------------------------------------------------------------------
# tables and text
# --------------------------------------------------------------------------------------


def json_ready(value: Any) -> Any:
    """``value`` with numpy scalars made plain and NaN/inf/NA made None (strict JSON)."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(float(value)) else float(value)
    if value is pd.NA or value is None:
        return None
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value


def _records(frame: pd.DataFrame | None, index_name: str | None) -> list[dict[str, Any]] | None:
    if frame is None:
        return None
    data = frame.reset_index() if index_name is not None else frame
    return [json_ready(r) for r in data.to_dict(orient="records")]


def _suspect_preview(flagged: pd.DataFrame, names: Sequence[str] | None) -> pd.DataFrame:
    top = flagged.head(_TOP_SUSPECTS).reset_index()
    cols = ["rank", "sample_id", "label", "suggested_label", "suggested_prob", "score", "alignment_selected", "reason"]
    top = top[cols].rename(columns={"label": "given_label"})
    if names is not None:
        def name(v: Any) -> Any:
            return names[int(v)] if v is not pd.NA and 0 <= int(v) < len(names) else ""
        top.insert(3, "given_name", [name(v) for v in top["given_label"]])
        top.insert(5, "suggested_name", [name(v) if not pd.isna(v) else "" for v in top["suggested_label"]])
    return top


def markdown_table(frame: pd.DataFrame, *, digits: int = 3, index: bool = True) -> str:
    """A GitHub-flavoured markdown table (floats rounded to ``digits``; NaN as '-')."""
    data = frame.reset_index() if index else frame

    def cell(v: Any) -> str:
        if v is None or v is pd.NA or (isinstance(v, (float, np.floating)) and math.isnan(v)):
            return "-"
        if isinstance(v, (float, np.floating)):
            return f"{v:.{digits}f}"
        return str(v).replace("|", "\\|")

    header = "| " + " | ".join(str(c) for c in data.columns) + " |"
    rule = "|" + "|".join("---" for _ in data.columns) + "|"
    rows = ["| " + " | ".join(cell(v) for v in row) + " |" for row in data.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def _phase_record(choices: EpochChoices) -> dict[str, Any]:
    """report.json's ``training_phase``: the phase and the per-epoch curve it was read from
    (:meth:`~gwa_diag.analysis.phase.TrainingPhase.as_dict`), the sentence saying which
    epochs the scores read (``note``) and those epochs (``window_epochs``, every one)."""
    return {**choices.phase.as_dict(), "note": choices.note, "window_epochs": [int(e) for e in choices.window]}


def _phase_lines(phase: dict[str, Any]) -> list[str]:
    """report.md's "Training phase" section (from report.json's ``training_phase``)."""
    note, reason = phase["note"], phase["reason"]
    lines = ["## Training phase", "", f"- **{note[0].upper()}{note[1:]}.**"]
    head = note.split(": ", 1)[0] + ": "
    if reason.startswith(head):  # "the model memorised its labels from epoch 7: <why>"
        lines.append(f"- Why: {reason[len(head):]}.")
    elif reason not in note:  # a window other than `phase` already says why in its note
        lines.append(f"- {reason[0].upper()}{reason[1:]}.")
    if phase.get("noise") is not None:
        noise = float(phase["noise"])
        lines.append(
            f"- At the plateau (epoch {phase['plateau']}) the model confidently contradicted {noise:.1%} of the "
            f"labels: fitting more than {1 - noise:.1%} of them means fitting labels it contradicted (the onset); "
            f"the window moves from the second half towards the epochs before the onset as the fit goes from "
            f"{fit_at_share(noise, MEMORISING_FROM):.1%} to {fit_at_share(noise, MEMORISED_AT):.1%}, where it "
            f"memorised them (dashed lines)."
        )
    else:
        lines.append("- No fit thresholds (they need the confidently contradicted share where the fit levels off): "
                     "the plot shows the curves only.")
    lines += [
        "",
        "![training phase](phase.png)",
        "",
        "Fit: the share of training samples predicted as labelled; contradicted: the share predicted as another "
        "class with at least that class's mean confidence. Shaded: the epochs the scores average.",
        "",
    ]
    return lines


def _rule_options(rule: dict[str, Any]) -> str:
    if rule.get("k") is not None:
        return f" (k = {rule['k']})"
    if rule.get("noise_rate") is not None:
        return f" (noise rate = {rule['noise_rate']})"
    return ""


def _markdown(
    report: dict[str, Any],
    detection: pd.DataFrame | None,
    per_class: pd.DataFrame | None,
    flagged: pd.DataFrame,
    names: Sequence[str] | None,
) -> str:
    sel = report["early_stopping"]
    win = report["window"]
    trained = report.get("label_provenance")
    lines = [
        "# gwa-diag report",
        "",
        f"Run `{report['run']}` (id {report['run_id']}): {report['n_samples']} samples, "
        f"{report['n_epochs']} complete epochs, {report['num_classes']} classes. Written {report['created']} "
        f"(report id `{report['report_id']}`, also in report.json and ranking.parquet).",
        *([] if trained is None else ["", f"T{trained['line'][1:]}."]),  # "trained on corrected labels ..."
        "",
        *_phase_lines(report["training_phase"]),
        "## Early stopping (GWA, no validation set)",
        "",
        f"- Mode: {sel.get('mode')}. {sel.get('note', '')}.",
        f"- Epoch used for the alignment rule and `align_selected`: **{sel.get('used_epoch')}**.",
        *(f"- {line[0].upper()}{line[1:]}." for line in report.get("stopping_lines", [])),
        "",
        "![GWA curve](gwa_curve.png)",
        "",
        "## Flagged samples",
        "",
        f"- Rule: `{report['rule']['name']}`{_rule_options(report['rule'])} - {report['rule']['description']}.",
        f"- Ranked by `{report['scorer']}`: {report['scorer_description']}",
        f"- Means average over the window `{win['name']}` (epochs {win['epochs'][0]}-{win['epochs'][1]}): {win['description']}.",
        *_estimate_lines(report, names),
        *_audit_lines(report, names),
        f"- **{report['n_flagged']}** samples flagged; of all samples, {report['n_alignment_negative']} "
        f"{'has' if report['n_alignment_negative'] == 1 else 'have'} alignment < 0 at epoch {sel.get('used_epoch')}.",
        "- Files: `suspects.csv` (for relabeling), `ranking.parquet` (every sample).",
        "",
    ]
    if report["top_suspects"]:
        lines += [f"Top {min(_TOP_SUSPECTS, len(flagged))} suspects:", "", markdown_table(_suspect_preview(flagged, names), index=False), ""]
    lines += ["![alignment histograms](alignment_hist.png)", "", "## Detection against ground truth", ""]
    truth = report["ground_truth"]
    if detection is None or per_class is None:
        lines += [f"No ground truth: {truth['reason']}", ""]
    else:
        cover = truth.get("coverage") or {}
        if cover and cover["matched"] < cover["samples"]:
            lines += [f"**The ground truth covers {cover['matched']} of the run's {cover['samples']} samples**; "
                      "the scores below are over those only.", ""]
        lines += [
            f"Ground truth {truth['source']}: {truth['n_noisy']} of {truth['n']} samples mislabeled "
            f"({truth['noise_rate']:.1%}). Higher scores = more suspicious; P@k and R@k at "
            f"k = {truth['n_noisy']} (the number of mislabeled samples). The last rows are the flag "
            "rules (precision / recall / F1): the default, the top of the default ranking down to the "
            "estimated number of wrong labels, and alignment < 0 at the selected epoch.",
            "",
            markdown_table(detection),
            "",
            f"Per given label (`{report['scorer']}` AUROC/AP; rule precision/recall):",
            "",
            markdown_table(per_class),
            "",
            "![ROC curves](roc.png) ![precision-recall curves](pr.png)",
            "",
        ]
    lines += ["## Scorers (higher = more suspicious)", ""]
    lines += [f"- `{name}`: {text}" for name, text in SCORERS.items()]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# plots (matplotlib's Agg canvas directly: no pyplot state, no global backend switch)
# --------------------------------------------------------------------------------------


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    if not fig.get_layout_engine():
        fig.tight_layout()
    return atomic_write_bytes(path, png_bytes(fig))


def _estimate_lines(report: dict[str, Any], names: Sequence[str] | None) -> list[str]:
    est = report.get("estimate")
    if not est:
        return []
    truth = report["ground_truth"]
    true = f" (true: {truth['n_noisy']})" if truth.get("available") else ""
    per = ", ".join(f"{names[int(c)] if names and 0 <= int(c) < len(names) else c} {v}"
                    for c, v in est["per_class"].items())
    caveat = est.get("caveat") or caveat_of(est.get("column"))  # older report.json files have neither
    return [f"- Estimated wrong labels: **{est['total']}** of {est['n']} ({est['rate']:.1%}){true}: "
            f"{est['method']} ({caveat}). Per given class: {per}."]


def _audit_lines(report: dict[str, Any], names: Sequence[str] | None) -> list[str]:
    """The verified sample's answer (or how to get one): the count with its interval, per
    class, the flagged set's precision and the review's recall."""
    audit = report.get("audit")
    if not audit:
        return [f"- For a count with a 95% interval, verify a sample of labels: `gwa-diag audit {report['run']} "
                "--n 200` (the Audit page of the app shows them one at a time)."]
    if not audit["complete"]:
        return [f"- Verified sample: {audit['answered']} of {audit['drawn']} answered; {audit['needed']}."]
    c = audit["count"]
    per = ", ".join(f"{names[int(k)] if names and 0 <= int(k) < len(names) else k} {v['estimate']:.0f} "
                    f"({v['low']:.0f}-{v['high']:.0f})" for k, v in audit["per_class"].items())
    lines = [f"- **Wrong labels, from {audit['answered']} verified samples: {c['estimate']:.0f} "
             f"(95% interval {c['low']:.0f}-{c['high']:.0f})**; {c['method']}. Per given class: {per}."]
    if audit["flagged_precision"]:
        f = audit["flagged_precision"]
        lines.append(f"- Precision of the flagged set: {f['estimate']:.1%} ({f['low']:.1%}-{f['high']:.1%}).")
    if audit["review"]:
        r = audit["review"]
        lines.append(f"- Review in the relabel queue: top {r['reviewed']} reviewed, {r['found']} wrong labels found, "
                     f"{r['remaining']['estimate']:.0f} estimated to remain; recall {r['recall']:.1%}, at least "
                     f"{r['recall_low']:.1%} (target {r['target']:.0%}{': reached' if r['reached'] else ''}).")
    return lines


def _hist_epochs(summary: pd.DataFrame) -> list[int]:
    attrs = summary.attrs
    first = attrs.get("window_epochs", [None])[0]
    wanted = [attrs.get("el2n_epoch"), first, attrs.get("selected_epoch"), attrs.get("last_epoch")]
    return sorted({int(e) for e in wanted if e is not None})


def _histograms(run: Run, summary: pd.DataFrame, truth: pd.Series | None) -> Any:
    """One panel per epoch worth comparing (:func:`_hist_epochs`), clean and mislabeled
    overlaid when the truth is known."""
    epochs = _hist_epochs(summary)
    rows = run.samples(epochs=epochs, columns=["sample_id", "alignment"])
    panels = {}
    for epoch in epochs:
        part = rows[rows["epoch"] == epoch]
        noisy = (truth.reindex(part["sample_id"].to_numpy()).fillna(False).to_numpy(dtype=bool)
                 if truth is not None else None)
        panels[f"epoch {epoch}"] = (part["alignment"].to_numpy(dtype=np.float64), noisy)
    return histogram_figure(panels)


def _plot_curves(out: Path, summary: pd.DataFrame, truth: pd.Series, detection: pd.DataFrame) -> tuple[Path, Path]:
    common = summary.index.intersection(truth.index)
    y = truth.loc[common].to_numpy(dtype=bool)
    roc_fig, pr_fig = _figure(6, 5), _figure(6, 5)
    roc_ax, pr_ax = roc_fig.add_subplot(1, 1, 1), pr_fig.add_subplot(1, 1, 1)
    for name in SCORERS:
        if name not in summary.columns or name not in detection.index:
            continue
        scores = summary.loc[common, name].to_numpy(dtype=np.float64, na_value=np.nan)
        row = detection.loc[name]
        if y.any() and not y.all():
            fpr, tpr = curve_points(scores, y, kind="roc")
            roc_ax.plot(fpr, tpr, label=f"{name} ({row['auroc']:.3f})", linewidth=1)
        if y.any():
            recall, precision = curve_points(scores, y, kind="pr")
            # Steps, not lines: average precision is the area under this step function.
            pr_ax.plot(recall, precision, label=f"{name} ({row['ap']:.3f})", linewidth=1, drawstyle="steps-pre")
    roc_ax.plot([0, 1], [0, 1], color="0.6", linestyle=":", linewidth=1)
    roc_ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC: finding mislabeled samples (AUROC)")
    pr_ax.axhline(float(y.mean()), color="0.6", linestyle=":", linewidth=1)
    pr_ax.set(xlabel="recall", ylabel="precision", title="Precision-recall (AP)")
    for row_name, marker, text in ((ESTIMATE_ROW, "ks", "default rule (estimated count)"),
                                   (RULE_ROW, "k*", "alignment < 0 rule")):
        if row_name not in detection.index:
            continue
        rule = detection.loc[row_name]
        # precision is NA when the rule flags nothing: nothing to mark then.
        precision, recall = pd.to_numeric(rule[["precision", "recall"]], errors="coerce").astype(float)
        if np.isfinite(precision) and np.isfinite(recall):
            pr_ax.plot([recall], [precision], marker, markersize=8, label=text)
    roc_ax.legend(fontsize=7, loc="lower right")
    pr_ax.legend(fontsize=7, loc="lower left")
    return _save(roc_fig, out / "roc.png"), _save(pr_fig, out / "pr.png")
