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

import io
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
from gwa_diag.analysis.pipeline import Analysis, analyze, check_options
from gwa_diag.analysis.rank import RULES, write_suspects
from gwa_diag.analysis.phase import WINDOWS, EpochChoices
from gwa_diag.analysis.scorers import SCORERS
from gwa_diag.checks import DEFAULT_RULE, DEFAULT_SCORER, DEFAULT_WINDOW, InputError
from gwa_diag.early_stopping import MEMORISED_AT, MEMORISING_FROM, fit_at_share
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
    scorer: str = DEFAULT_SCORER,
    truth_file: str | os.PathLike | None = None,
    window: str = DEFAULT_WINDOW,
    rule: str = DEFAULT_RULE,
    k: int | None = None,
    noise_rate: float | None = None,
) -> dict[str, Any]:
    """Analyse a run (:func:`gwa_diag.analysis.pipeline.analyze`) and write the report files
    into ``out_dir`` (default RUN/analysis); or write the report of an :class:`Analysis`
    already made, whose options then apply (an option given here must agree with them).

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
            truth file (see :func:`gwa_diag.analysis.truth.ground_truth`), options that
            disagree with the given Analysis, or ``out_dir`` is a file.
        FileNotFoundError: the truth file does not exist.
    """
    asked = check_options(scorer=scorer, window=window, rule=rule, k=k, noise_rate=noise_rate, truth=truth_file)
    if isinstance(run, Analysis):
        _check_same_options(run, asked)
        analysis = run
    else:
        analysis = analyze(run, scorer=scorer, window=window, rule=rule, k=k, noise_rate=noise_rate, truth=truth_file)
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


_DEFAULTS = check_options()


def _check_same_options(analysis: Analysis, asked: Any) -> None:
    # An option passed beside an Analysis must not silently lose to the Analysis's own.
    for name in ("scorer", "window", "rule", "k", "noise_rate", "truth_file"):
        value, made = getattr(asked, name), getattr(analysis.options, name)
        if value != getattr(_DEFAULTS, name) and value != made:
            raise InputError(
                f"{name}={value!r} disagrees with the Analysis given ({name}={made!r}); "
                f"pass analyze(..., {name}=...) instead, or leave {name} out here"
            )


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
    opts = analysis.options
    scorer, window, rule = opts.scorer, opts.window, opts.rule
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
    files["phase"] = str(_plot_phase(out / "phase.png", analysis.epochs))
    files["gwa_curve"] = str(_plot_gwa(out / "gwa_curve.png", epochs, analysis.selection.used_epoch, selection,
                                       labelwave=stop.labelwave.epoch))
    files["alignment_hist"] = str(_plot_histograms(out / "alignment_hist.png", run, summary, truth))
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
        "window": {"name": window, "epochs": summary.attrs.get("window_epochs"), "description": WINDOWS[window]},
        "training_phase": _phase_record(analysis.epochs),
        "early_stopping": selection,
        "stopping": stop.as_dict(),
        "el2n_epoch": summary.attrs.get("el2n_epoch"),
        "scorer": scorer,
        "scorer_description": SCORERS[scorer],
        "rule": {"name": rule, "k": opts.k, "noise_rate": opts.noise_rate, "description": RULES[rule]},
        "n_flagged": int(len(flagged)),
        "estimate": analysis.estimate.as_dict() if analysis.estimate is not None else None,
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
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png")
    return atomic_write_bytes(path, buffer.getvalue())


def _plot_gwa(
    path: Path, epochs: pd.DataFrame, selected: int | None, selection: dict[str, Any], *, labelwave: int | None = None
) -> Path:
    fig = _figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    x = epochs["epoch"].to_numpy()
    # Undefined epochs are NaN: matplotlib breaks the line there (a gap, never a fake value).
    gwa = pd.to_numeric(epochs["gwa"], errors="coerce").to_numpy(dtype=np.float64) if "gwa" in epochs else np.full(len(x), np.nan)
    ax.plot(x, gwa, marker="o", markersize=3, color="tab:blue", label="GWA")
    undefined = np.isnan(gwa)
    if undefined.any():
        for e in x[undefined]:
            ax.axvspan(e - 0.5, e + 0.5, color="0.9", zorder=0)
    if selected is not None:
        label = "last epoch (GWA selected none)" if selection.get("fallback") else f"GWA-selected epoch {selected}"
        ax.axvline(selected, color="tab:red", linestyle="--", label=label)
    if labelwave is not None:
        ax.axvline(labelwave, color="tab:purple", linestyle=":", label=f"LabelWave epoch {labelwave}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("GWA = mean / (kurtosis + 1.2)")
    handles, labels = ax.get_legend_handles_labels()
    if "eval_acc" in epochs and pd.to_numeric(epochs["eval_acc"], errors="coerce").notna().any():
        twin = ax.twinx()
        twin.plot(x, pd.to_numeric(epochs["eval_acc"], errors="coerce"), color="tab:green", alpha=0.8, label="eval accuracy")
        twin.set_ylabel("eval accuracy")
        h2, l2 = twin.get_legend_handles_labels()
        handles, labels = handles + h2, labels + l2
    if undefined.any():
        from matplotlib.patches import Patch

        handles.append(Patch(color="0.9"))
        labels.append("GWA undefined")
    ax.legend(handles, labels, loc="best", fontsize=8)
    ax.set_title("Gradient-weight alignment per epoch")
    return _save(fig, path)


def _plot_phase(path: Path, choices: EpochChoices) -> Path:
    """The training phase: per-epoch fit of the given labels and the confidently contradicted
    share, the onset, memorising and memorised fits (:func:`gwa_diag.early_stopping.fit_at_share`)
    as dashed lines when a plateau was found, the plateau and the onset marked, the averaged window
    shaded."""
    phase, curve = choices.phase.phase, choices.phase.curve
    fig = _figure(7, 4)
    ax = fig.add_subplot(1, 1, 1)
    x = curve["epoch"].to_numpy()
    window = choices.window
    if window:
        span = f"epochs {window[0]}-{window[-1]}" if len(window) > 1 else f"epoch {window[0]}"
        ax.axvspan(window[0] - 0.5, window[-1] + 0.5, color="tab:green", alpha=0.12, zorder=0,
                   label=f"scores averaged ({span})")
    for col, colour, label in (("fit", "tab:blue", "fit of the given labels"),
                               ("contradicted", "tab:red", "confidently contradicted")):
        values = pd.to_numeric(curve[col], errors="coerce").to_numpy(dtype=np.float64)
        ax.plot(x, values, marker="o", markersize=3, color=colour, label=label)
    if "onset_fit" in curve and len(curve):
        for col, colour, text in (("onset_fit", "tab:orange", "onset fit 1 - noise"),
                                  ("memorising_fit", "tab:pink", "window starts moving"),
                                  ("memorised_fit", "tab:purple", "memorised fit")):
            if col in curve:
                level = float(curve[col].iloc[0])
                ax.axhline(level, color=colour, linestyle="--", linewidth=1, label=f"{text} = {level:.3f}")
    else:
        ax.text(0.02, 0.97, "no plateau: no fit thresholds", transform=ax.transAxes, fontsize=8, va="top")
    if phase.plateau is not None:
        ax.axvline(phase.plateau, color="0.5", linestyle=":", label=f"plateau epoch {phase.plateau}")
    if phase.memorising and phase.onset is not None:
        what = "memorised" if phase.memorised else "memorising"
        ax.axvline(phase.onset, color="black", linewidth=1.5, label=f"{what} from epoch {phase.onset}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("epoch")
    ax.set_ylabel("share of the training samples")
    ax.legend(loc="best", fontsize=8)
    status = (f"memorised from epoch {phase.onset}" if phase.memorised
              else f"began memorising at epoch {phase.onset} (weight {phase.weight:.2f})" if phase.memorising
              else "no memorisation found")
    ax.set_title(f"Training phase: {status}")
    return _save(fig, path)


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


def _hist_epochs(summary: pd.DataFrame) -> list[int]:
    attrs = summary.attrs
    first = attrs.get("window_epochs", [None])[0]
    wanted = [attrs.get("el2n_epoch"), first, attrs.get("selected_epoch"), attrs.get("last_epoch")]
    return sorted({int(e) for e in wanted if e is not None})


def _plot_histograms(path: Path, run: Run, summary: pd.DataFrame, truth: pd.Series | None) -> Path:
    epochs = _hist_epochs(summary)
    rows = run.samples(epochs=epochs, columns=["sample_id", "alignment"])
    fig = _figure(3.2 * max(len(epochs), 1), 3.2)
    bins = _hist_bins(rows["alignment"].to_numpy(dtype=np.float64))
    for i, epoch in enumerate(epochs):
        ax = fig.add_subplot(1, len(epochs), i + 1)
        part = rows[rows["epoch"] == epoch]
        a = part["alignment"].to_numpy(dtype=np.float64)
        if truth is not None:
            noisy = truth.reindex(part["sample_id"].to_numpy()).fillna(False).to_numpy(dtype=bool)
            ax.hist(a[~noisy], bins=bins, alpha=0.6, density=True, label="clean", color="tab:blue")
            if noisy.any():
                ax.hist(a[noisy], bins=bins, alpha=0.6, density=True, label="mislabeled", color="tab:red")
            ax.legend(fontsize=7)
        else:
            ax.hist(a[np.isfinite(a)], bins=bins, color="tab:blue")
        ax.axvline(0, color="k", linewidth=0.8)
        ax.set_title(f"epoch {epoch}", fontsize=9)
        ax.set_xlabel("alignment")
    return _save(fig, path)


def _hist_bins(values: np.ndarray, count: int = 50) -> np.ndarray:
    """Bin edges over the data's range (shared by every panel, so they compare), with 0 in
    view: alignments often lie within +-0.2, which a fixed [-1, 1] axis squeezes into a few
    bars. The 0.1% tails on each side are left out of the range (clipped into the end bins
    would misstate them, so they are simply not drawn)."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return np.linspace(-1.0, 1.0, count + 1)
    lo, hi = np.quantile(finite, [0.001, 0.999])
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    pad = 0.03 * (hi - lo) if hi > lo else 0.05
    return np.linspace(max(lo - pad, -1.0), min(hi + pad, 1.0), count + 1)


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
