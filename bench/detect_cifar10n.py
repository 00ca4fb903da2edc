"""Real-data detection benchmark: which training signal finds the mislabeled CIFAR-10-N samples?

    python bench/detect_cifar10n.py                           # CPU: tiny CNN on a subset
    python bench/detect_cifar10n.py --mode gpu                # ResNet-18, all images (reference setting)
    python bench/detect_cifar10n.py --reuse                   # re-analyse finished runs, no training
    python bench/detect_cifar10n.py --no-kfold                # skip cleanlab's K-fold row (K more trainings)

Per label set: one training with the recorder, then AUROC, AP and precision / recall at the
true count of every scorer, the flag rules' counts, and cleanlab in-sample and K-fold
(optional: ``pip install -r bench/requirements.txt``). Runs go to ``OUT/runs`` and
``OUT/kfold`` (replaced unless --reuse). The protocol: docs/benchmarks/index.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from gwa_diag.analysis.metrics import ESTIMATE_ROW, RULE_ROW, detection_table
from gwa_diag.analysis.phase import WINDOWS
from gwa_diag.analysis.scorers import SCORERS
from gwa_diag.analysis.summaries import summarize
from gwa_diag.analysis.truth import ground_truth
from gwa_diag.checks import DEFAULT_SCORER, DEFAULT_WINDOW
from gwa_diag.store import open_run
from gwa_diag.training.data import CIFAR10N_LABEL_SETS
from gwa_diag.training.engine import train
from harness import (
    INSTALL_HINT, add_common_args, add_recipe_args, cleanlab_installed, cleanlab_row, decay_config, describe, hardware,
    label_set_names, labelled, load_cifar, markdown_table, mixture_row, new_model, predict_probs, subset, write_page,
)

CLEANLAB_ROW = "cleanlab (in-sample, last-epoch probs)"
KFOLD_ROW = "cleanlab (K-fold, out-of-sample)"

#: Per-mode sizes (the recipe is the harness' ``decay`` on that machine); every entry, and the
#: recipe's batch, lr and warm-up, can be overridden on the command line.
MODES: dict[str, dict[str, Any]] = {"cpu": {"n": 5000, "epochs": 15}, "gpu": {"n": 20000, "epochs": 40}}
#: (key in a detection-table row, printed header). ``n_flagged`` is printed as ``count``: the
#: number of samples a method flags, its estimate of how many labels are wrong.
COLUMNS = [("auroc", "AUROC"), ("ap", "AP"), ("p_at_k", "P@k"), ("r_at_k", "R@k"),
           ("precision", "P"), ("recall", "R"), ("f1", "F1"), ("n_flagged", "count"), ("passes", "passes")]
INTEGER_COLUMNS = {"n_flagged", "passes"}
#: Training passes of a method computed from the one recorded run (every in-run scorer).
IN_RUN_PASSES = 1


# -- data -------------------------------------------------------------------------------------
def _kfold_setting(name: str, args, train_set) -> dict[str, Any]:
    return {"label_set": name, "n": len(train_set), "folds": args.folds, "seed": args.seed, "model": args.model,
            "epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr,
            "warmup_epochs": args.warmup_epochs, "precision": args.precision}


def _clear_kfold_dir(kdir: Path) -> None:
    """Remove a previous K-fold folder of this benchmark; refuse anything else."""
    if not kdir.exists():
        return
    known = {"oof_probs.npy", "folds.npy", "kfold.json"}
    for entry in kdir.iterdir():
        ours = entry.name in known or (
            entry.is_dir() and entry.name.startswith("fold") and entry.name[4:].isdigit()
            and (not any(entry.iterdir()) or (entry / "run.json").exists()))
        if not ours:
            raise SystemExit(f"{kdir} holds {entry.name}, which this benchmark did not write: "
                             "remove it or choose another --out")
    shutil.rmtree(kdir)


def kfold_probs(name: str, args, train_set, device: torch.device) -> dict[str, Any]:
    """Out-of-fold probabilities [N, C] (rows in ``train_set`` order), the fold of every row and
    timings: trained here, or read back from ``OUT/kfold/<name>`` with ``--reuse``."""
    kdir = Path(args.out) / "kfold" / name
    setting = _kfold_setting(name, args, train_set)
    if args.reuse:
        if not (kdir / "kfold.json").is_file():
            raise SystemExit(f"--reuse: {kdir} holds no finished K-fold result; run without --reuse first, "
                             "or pass --no-kfold")
        saved = json.loads((kdir / "kfold.json").read_text())
        if saved.get("n") != len(train_set) or saved.get("folds") != args.folds:
            raise SystemExit(f"--reuse: {kdir} holds {saved.get('folds')} folds over {saved.get('n')} samples, this "
                             f"command asks for --folds {args.folds} over --n {len(train_set)}: pass the same "
                             "--n, --mode and --folds as the training command")
        differ = [f"{k} {saved.get(k)}" for k, v in setting.items() if saved.get(k) != v]
        if differ:
            print(f"warning: {kdir} was made with another setting than this command's (recorded: "
                  f"{', '.join(differ)}); the K-fold row describes the recorded folds")
        probs, folds = np.load(kdir / "oof_probs.npy"), np.load(kdir / "folds.npy")
        if probs.shape != (len(train_set), train_set.num_classes) or folds.shape != (len(train_set),):
            raise SystemExit(f"--reuse: {kdir} holds arrays of the wrong shape; run without --reuse")
        return {"probs": probs, "folds": folds, "k": int(saved["folds"]), "reused": True,
                "t_train": saved.get("train_seconds"), "t_predict": saved.get("predict_seconds")}

    from sklearn.model_selection import StratifiedKFold

    _clear_kfold_dir(kdir)
    n, k = len(train_set), args.folds
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=args.seed)
    probs = np.full((n, train_set.num_classes), np.nan)
    folds = np.full(n, -1, dtype=np.int64)
    cfg = args.config
    t_train, t_predict = [], []
    for i, (fit_pos, held_pos) in enumerate(splitter.split(np.zeros(n), train_set.labels)):
        fold_set = subset(train_set, fit_pos, {"kfold": {"folds": k, "fold": i, "seed": args.seed, "part": "train"}})
        model = new_model(args.model, train_set.num_classes, args.seed)
        t0 = time.perf_counter()
        train(model, fold_set, kdir / f"fold{i}", config=cfg, eval_set=None,
              meta={"benchmark": "bench/detect_cifar10n.py", "label_set": name, "kfold": {"folds": k, "fold": i}})
        t_train.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        probs[held_pos] = predict_probs(kdir / f"fold{i}", args.model, train_set, device, args.precision,
                                        positions=held_pos, trained_on=train_set.images_nchw[torch.as_tensor(fit_pos)])
        folds[held_pos] = i
        t_predict.append(time.perf_counter() - t0)
        print(f"  {name}: fold {i + 1}/{k} trained on {len(fit_pos)} samples in {t_train[-1]:.0f} s, "
              f"predicted {len(held_pos)} held-out samples in {t_predict[-1]:.1f} s", flush=True)
    assert (folds >= 0).all() and np.isfinite(probs).all()
    np.save(kdir / "oof_probs.npy", probs)
    np.save(kdir / "folds.npy", folds)
    # Written last: its presence marks a finished K-fold result for --reuse.
    (kdir / "kfold.json").write_text(json.dumps(
        {**setting, "rows": "sample ids 0..n-1 (the first n CIFAR-10 training images), in order",
         "train_seconds": t_train, "predict_seconds": t_predict}, indent=1))
    return {"probs": probs, "folds": folds, "k": k, "reused": False, "t_train": t_train, "t_predict": t_predict}


def add_rows(table: pd.DataFrame, rows: dict[str, dict[str, Any] | None]) -> pd.DataFrame:
    """``table`` with one more row per method (method -> {COLUMNS key: value}; missing keys
    stay empty, None rows are left out); rows without ``passes`` cost the one recorded run."""
    attrs = dict(table.attrs)
    data = {m: {c: v for c, v in table.loc[m].items() if not pd.isna(v)} for m in table.index}
    data.update({m: row for m, row in rows.items() if row is not None})
    out = pd.DataFrame.from_dict(data, orient="index").reindex(columns=[c for c, _ in COLUMNS])
    out["passes"] = out["passes"].fillna(IN_RUN_PASSES)
    for c in out.columns:
        out[c] = pd.to_numeric(out[c]).astype("Int64" if c in INTEGER_COLUMNS else "float64")
    out.index.name = "method"
    out.attrs = attrs
    return out


# -- one label set ----------------------------------------------------------------------------
def run_label_set(name: str, args, train_base, test_set, label_path: Path, device: torch.device,
                  *, with_cleanlab: bool) -> dict[str, Any]:
    run_dir = Path(args.out) / "runs" / name
    train_set = labelled(name, train_base, label_path)
    noise = float(np.mean(train_set.labels != train_set.clean_labels))
    t_train = None
    if args.reuse:
        meta = open_run(run_dir).meta if (run_dir / "run.json").exists() else {}
        if meta.get("status") != "finished":
            raise SystemExit(f"--reuse: {run_dir} holds no finished run; run without --reuse first")
        if meta.get("num_samples") != len(train_set):
            raise SystemExit(f"--reuse: {run_dir} was trained on {meta.get('num_samples')} samples, this command "
                             f"asks for --n {len(train_set)}: pass the same --n (and --mode) as the training command")
        cfg = meta.get("config", {})
        wanted = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
        differ = {k: (cfg.get(k), v) for k, v in wanted.items() if cfg.get(k) != v}
        if differ or meta.get("model") != type(new_model(args.model, 10, 0)).__name__:
            recorded = [f"model {meta.get('model')}", *(f"{k} {a}" for k, (a, _) in differ.items())]
            print(f"warning: {run_dir} was trained with another setting than this command's (recorded: "
                  f"{', '.join(recorded)}); the tables describe the recorded run")
    else:
        if run_dir.exists():
            if not (run_dir / "run.json").exists():
                raise SystemExit(f"{run_dir} exists and is not a gwa-diag run: remove it or choose another --out")
            shutil.rmtree(run_dir)
        model = new_model(args.model, train_set.num_classes, args.seed)
        t0 = time.perf_counter()
        train(model, train_set, run_dir, config=args.config, eval_set=test_set,
              meta={"benchmark": "bench/detect_cifar10n.py", "label_set": name})
        t_train = time.perf_counter() - t0

    t0 = time.perf_counter()
    summary = summarize(run_dir, window=args.window)
    truth = ground_truth(run_dir)
    table = detection_table(summary, truth)
    t_analysis = time.perf_counter() - t0

    # External peers. In-sample: one extra forward pass of the last checkpoint.
    probs = predict_probs(run_dir, args.model, train_set, device, args.precision)
    pos = train_set.positions(truth.index.to_numpy())
    labels, is_noisy = train_set.labels[pos], truth.to_numpy()
    extra: dict[str, dict[str, Any]] = {}
    for scorer in (DEFAULT_SCORER, "loss_mean"):  # the default ranking's score, and DivideMix's (loss)
        extra[f"mixture count over {scorer} (2-component GMM)"] = mixture_row(
            summary.loc[truth.index, scorer].to_numpy(dtype=np.float64), is_noisy)
    if with_cleanlab:
        extra[CLEANLAB_ROW] = cleanlab_row(labels, probs[pos], is_noisy, passes=IN_RUN_PASSES)
    last_acc = float(np.mean(probs.argmax(1) == train_set.labels))
    # Out-of-sample: K more trainings (cleanlab's recommended workflow).
    kfold = None
    if with_cleanlab and not args.no_kfold:
        kfold = kfold_probs(name, args, train_set, device)
        extra[KFOLD_ROW] = cleanlab_row(labels, kfold["probs"][pos], is_noisy, passes=kfold["k"])
        kfold["fit"] = float(np.mean(kfold["probs"].argmax(1) == train_set.labels))
    table = add_rows(table, extra)

    epochs = open_run(run_dir).epochs()
    sel = summary.attrs["epochs"].selection
    acc = epochs.set_index("epoch")["eval_acc"] if "eval_acc" in epochs else pd.Series(dtype=float)
    best_epoch = int(acc.idxmax()) if len(acc) else None
    last_epoch = int(epochs["epoch"].max())
    return {
        "name": name, "noise": noise, "n": table.attrs["n"], "n_noisy": table.attrs["n_noisy"], "table": table,
        "gwa_epoch": sel.epoch, "selection_reason": sel.reason,
        "selected_epoch": sel.used_epoch, "fallback": sel.fallback,
        "acc": acc, "best_epoch": best_epoch, "last_epoch": last_epoch, "train_fit_last": last_acc,
        "window": summary.attrs["window_epochs"], "t_train": t_train, "t_analysis": t_analysis, "kfold": kfold,
    }


# -- output -----------------------------------------------------------------------------------
def _fmt(v: Any, col: str) -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and np.isnan(v)):
        return "-"
    return str(int(v)) if col in INTEGER_COLUMNS else f"{float(v):.3f}"


def md_table(table: pd.DataFrame) -> str:
    """The detection table of one label set, for the console and the page alike."""
    rows = [[name, *(_fmt(row.get(c), c) for c, _ in COLUMNS)] for name, row in table.iterrows()]
    return "\n".join(markdown_table(["method", *(h for _, h in COLUMNS)], rows, "l" + "r" * len(COLUMNS)))


def accuracy_line(r: dict[str, Any]) -> str:
    acc = r["acc"]
    if not len(acc):
        return "test accuracy: not recorded"
    sel = r["gwa_epoch"]
    sel_txt = f"GWA-selected epoch {sel}: {acc[sel]:.3f}" if sel is not None else f"GWA selected no epoch ({r['selection_reason']})"
    return (f"test accuracy (1,000 test images): {sel_txt} | best epoch {r['best_epoch']}: {acc[r['best_epoch']]:.3f} | "
            f"last epoch {r['last_epoch']}: {acc[r['last_epoch']]:.3f}")


def kfold_line(r: dict[str, Any]) -> str | None:
    """Size and timings of the K-fold part of one label set (None when it did not run)."""
    kf = r["kfold"]
    if kf is None:
        return None
    k, n = kf["k"], len(kf["folds"])
    fit_sizes = sorted({n - int((kf["folds"] == i).sum()) for i in range(k)})
    text = (f"K-fold ({k} stratified folds, each model trained on {'-'.join(str(s) for s in fit_sizes)} of {n} "
            f"samples; out-of-fold prediction = given label on {kf['fit']:.3f}): ")
    if not kf["t_train"]:
        return text + "reused, timings not recorded"
    train_s, pred_s = sum(kf["t_train"]), sum(kf["t_predict"] or [])
    ratio = f" = {train_s / r['t_train']:.1f}x the main run's training" if r["t_train"] else ""
    return (text + ("reused; when made: " if kf["reused"] else "")
            + f"train {train_s:.0f} s (per fold {', '.join(f'{t:.0f}' for t in kf['t_train'])} s){ratio}, "
            f"predict held-out folds {pred_s:.1f} s")


def header(r: dict[str, Any], window: str, *, timed: bool = True) -> str:
    """The line above a label set's table; ``timed=False`` (the page) leaves the seconds out."""
    w0, w1 = r["window"]
    sel = f"epoch {r['selected_epoch']}" + (" (fallback: last epoch)" if r["fallback"] else "")
    timing = "" if not timed else (f"train {r['t_train']:.0f} s, " if r["t_train"] is not None else "reused run, ")
    timing += f"analysis {r['t_analysis']:.1f} s; " if timed else ""
    return (f"label set {r['name']}: {r['n']} samples, {r['n_noisy']} mislabeled ({r['noise']:.1%}): "
            f"true count k = {r['n_noisy']}; window {window} = epochs {w0}..{w1}; rule at {sel}; "
            f"{timing}last-epoch train-set fit (un-augmented) {r['train_fit_last']:.3f}")


def headline(r: dict[str, Any]) -> dict[str, str]:
    """The default ranking's AUROC against the best other in-run signal on one label set."""
    t = r["table"]
    others = t.loc[[m for m in t.index if m in SCORERS and m != DEFAULT_SCORER], "auroc"].dropna()
    best = others.idxmax() if len(others) else None
    value = f"{t.loc[DEFAULT_SCORER, 'auroc']:.3f} vs " + (f"{others[best]:.3f} ({best})" if best else "-")
    return {"result": f"{r['name']} ({r['noise']:.1%} wrong): AUROC of the default ({DEFAULT_SCORER}) vs the best "
                      "other signal", "value": value}


def skipped_lines(args, with_cleanlab: bool) -> list[str]:
    if not with_cleanlab:
        return [f"cleanlab is not installed: rows '{CLEANLAB_ROW}' and '{KFOLD_ROW}' skipped, and no K-fold "
                f"training done ({INSTALL_HINT})"]
    if args.no_kfold:
        return [f"--no-kfold: row '{KFOLD_ROW}' skipped"]
    return []


def summary_tables(results: list[dict[str, Any]], scorer_cols: list[str]) -> tuple[list[str], list[str]]:
    """(AUROC / AP per label set and method, count per label set and flagging method), as
    markdown lines. The first holds the given scorers plus every other ranking row that is not
    a gwa-diag scorer (the external peers); the second every row that flags samples."""
    extra_cols: list[str] = []
    for r in results:
        t = r["table"]
        extra_cols += [m for m in t.index if m not in SCORERS and pd.notna(t.loc[m, "auroc"]) and m not in extra_cols]
    cols = [c for c in scorer_cols if any(c in r["table"].index for r in results)] + extra_cols
    flaggers: list[str] = []
    for r in results:
        flaggers += [m for m in r["table"].index if pd.notna(r["table"].loc[m, "n_flagged"]) and m not in flaggers]
    rank, count = [], []
    for r in results:
        t = r["table"]
        rank.append([f"{r['name']} ({r['noise']:.1%}) AUROC / AP", r["n_noisy"], *(
            f"{_fmt(t.loc[c, 'auroc'], 'auroc')} / {_fmt(t.loc[c, 'ap'], 'ap')}" if c in t.index else "-" for c in cols)])
        count.append([f"{r['name']} ({r['noise']:.1%})", r["n_noisy"],
                      *(_fmt(t.loc[m, "n_flagged"], "n_flagged") if m in t.index else "-" for m in flaggers)])
    head = ["label set (noise)", "true count"]
    return (markdown_table([*head, *cols], rank, "lr"),
            markdown_table([*head, *flaggers], count, "l" + "r" * (len(flaggers) + 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="cpu",
                    help="cpu: tiny CNN on a subset (minutes on 2 cores); gpu: CIFAR ResNet-18 on all 20,000 images, bf16")
    ap.add_argument("--label-sets", default="worst,aggre,random1",
                    help=f"comma-separated CIFAR-10-N label sets (of {', '.join(k for k in CIFAR10N_LABEL_SETS if k != 'clean')}), "
                         "or pairNN: NN%% synthetic pair noise (class c -> c+1) on the clean labels, e.g. pair30")
    ap.add_argument("--n", type=int, help="train on the first N of the 20,000 images (default: cpu 5000, gpu 20000)")
    ap.add_argument("--epochs", type=int, help="epochs per run (default: cpu 15, gpu 40)")
    add_recipe_args(ap, "seed of the initialisation, data order, augmentation and K-fold split (default 0)")
    ap.add_argument("--window", choices=list(WINDOWS), default=DEFAULT_WINDOW,
                    help="epochs the mean-over-epochs scorers average (default: the analysis' own, %(default)s): "
                    + "; ".join(f"{k}: {v}" for k, v in WINDOWS.items()).replace("%", "%%"))
    ap.add_argument("--folds", type=int, default=5,
                    help="K of cleanlab's K-fold row: K stratified folds, K trainings (default 5, cleanlab's default)")
    ap.add_argument("--no-kfold", action="store_true",
                    help="skip cleanlab's K-fold row (it costs K more trainings per label set)")
    ap.add_argument("--out", default="bench_out/detect", help="output folder: runs/<label set>/ and kfold/<label set>/")
    add_common_args(ap)
    ap.add_argument("--reuse", action="store_true",
                    help="analyse the finished runs and K-fold results already in OUT instead of training")
    args = ap.parse_args()
    args.config = decay_config(args, MODES[args.mode])
    names = label_set_names(args.label_sets)
    if not args.no_kfold and not 2 <= args.folds <= args.n:
        raise SystemExit(f"--folds must be between 2 and --n ({args.n}), got {args.folds}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--mode gpu needs a CUDA device; none is available here (use --mode cpu)")
    device = torch.device(args.device)
    with_cleanlab = cleanlab_installed()

    hw = hardware(device)
    setting = (f"mode {args.mode}: {args.model}, {args.precision}, first {args.n} training images, "
               f"{describe(args.config)}, seed {args.seed}; eval set: 1,000 test images")
    if with_cleanlab and not args.no_kfold:
        setting += f"; cleanlab K-fold: {args.folds} stratified folds, same recipe"
    print(hw)
    print(setting)
    skipped = skipped_lines(args, with_cleanlab)
    for line in skipped:
        print(line)
    cifar = load_cifar(args.data, args.n)
    train_base, test_set, label_path = cifar.pool, cifar.test, cifar.labels

    results = []
    t_all = time.perf_counter()
    for name in names:
        results.append(run_label_set(name, args, train_base, test_set, label_path, device, with_cleanlab=with_cleanlab))
        print(header(results[-1], args.window), flush=True)  # progress, with the timings
    t_all = time.perf_counter() - t_all

    notes = [
        "Every score is oriented higher = more suspicious; k = true count of mislabeled samples (P@k = R@k then).",
        (f"Scorer rows: gwa_diag.analysis.scorers.SCORERS, means over the '{args.window}' window. "
         f"P/R/F1 of '{RULE_ROW}': the samples with raw alignment < 0 at the GWA-selected epoch. "
         f"'{ESTIMATE_ROW}': gwa-diag's default flags, the top of the default ranking ({DEFAULT_SCORER}) down to the "
         "estimated number of wrong labels (Analysis.estimate, which follows the training phase: "
         "docs/how-it-works/phase.md); its count is that estimate."),
        ("count: how many samples the method flags, i.e. its estimate of how many labels are wrong (compare with "
         "the true count k); '-' for scorers that rank but do not flag. passes: full training runs the method "
         f"costs; {IN_RUN_PASSES} for every in-run scorer (one recorded run)."),
        (f"'{CLEANLAB_ROW}' (passes = 1): the one training plus one extra forward pass of the last-epoch checkpoint over the "
         "un-augmented training images; AUROC/AP/P@k/R@k rank by cleanlab's self-confidence label-quality "
         "score (= p(given label), the default method of cleanlab.rank.get_label_quality_scores), P/R/F1/count "
         "are of the set cleanlab.filter.find_label_issues flags (default settings: prune_by_noise_rate). "
         "In-sample probabilities, not the cross-validated ones cleanlab recommends."),
    ]
    if with_cleanlab and not args.no_kfold:
        notes.append(
            f"'{KFOLD_ROW}': cleanlab's recommended workflow, scored the same way on out-of-sample probabilities: "
            f"K = {args.folds} stratified folds (by given label, seed {args.seed}); each fold's model is trained "
            "with the same recipe, epochs and seed on the other K - 1 folds ((K - 1)/K of the data, no evaluation "
            "set) and predicts its held-out fold on un-augmented images. Costs K trainings (passes = K), about "
            "K - 1 times one full-data training.")
    scorer_cols = ["align_mean", "aum", "loss_mean", "confidence", "forgetting", "el2n"]
    rank_lines, count_lines = summary_tables(results, scorer_cols)
    timing_lines = []
    for r in results:
        parts = [f"train {r['t_train']:.0f} s" if r["t_train"] is not None else "reused run"]
        kf = r["kfold"]
        if kf is not None:
            parts.append(f"K-fold train {sum(kf['t_train']):.0f} s" + (" (reused; when made)" if kf["reused"] else "")
                         if kf["t_train"] else "K-fold reused")
        timing_lines.append(f"{r['name']}: " + ", ".join(parts))

    md = ["# CIFAR-10-N detection benchmark", "", f"Setting: {setting}; window: {args.window}", ""]
    for r in results:
        md += [f"## {r['name']}", "", header(r, args.window, timed=False), "", md_table(r["table"]), ""]
        md += [*(line for s in skipped for line in (s, "")), accuracy_line(r), ""]
        if kfold_line(r):
            md += [kfold_line(r), ""]
    md += ["## Summary (AUROC / AP)", "", *rank_lines, "", "## Summary (count against the true count)", "",
           *count_lines, "", *(f"* {n}" for n in notes), ""]
    numbers = {"setting": setting, "window": args.window, "headline": [headline(r) for r in results],
               "label_sets": {r["name"]: {"noise": r["noise"], "n": r["n"], "n_noisy": r["n_noisy"],
                                          "gwa_epoch": r["gwa_epoch"], "train_fit_last": r["train_fit_last"],
                                          "table": json.loads(r["table"].to_json(orient="index"))} for r in results}}
    print("\n".join(md))
    print(f"timings (total {t_all:.0f} s): " + "; ".join(timing_lines))
    pages = write_page(__file__, "\n".join(md), numbers, pages_dir=args.pages_dir, wall_s=t_all, device=device,
                       timings={"timings": "; ".join(timing_lines)})
    print(f"page: {pages[0]}")


if __name__ == "__main__":
    main()
