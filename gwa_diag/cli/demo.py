"""``gwa-diag demo``: the whole pipeline offline on the bundled real CIFAR-10-N subset.

Trains the tiny CNN on 2,500 CIFAR-10 images with their CIFAR-10-N human labels (the
"worst" set: 42% of them wrong), records alignment, ranks the suspects, scores every signal
against the clean labels and writes the report.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import Any
from gwa_diag.checks import InputError

__all__ = ["run_demo", "register"]

# Sized to finish in about a minute on a laptop CPU (bench/getting_started.py times it).
DEMO_EPOCHS = 30
DEMO_BATCH = 128
DEMO_LR = 0.05
#: The run directory the demo creates when --out is not given.
DEMO_OUT = "runs/demo"


def run_demo(
    out: str | Path = DEMO_OUT,
    *,
    label_set: str = "worst",
    epochs: int = DEMO_EPOCHS,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Train, record, rank, score and report; returns the report summary (a dict), with
    the :class:`~gwa_diag.analysis.pipeline.Analysis` it was written from under
    ``"analysis"``."""
    from gwa_diag.analysis.pipeline import analyze
    from gwa_diag.analysis.report import write_report
    from gwa_diag.training.data import sample_data
    from gwa_diag.training.engine import TrainConfig, train
    from gwa_diag.training.models import tiny_cnn

    out = Path(out)
    if (out / "run.json").exists():
        raise InputError(f"{out} already holds a run; pass --out NEW_DIR (or delete {out})")
    train_set, test_set = sample_data(label_set=label_set)
    t0 = time.perf_counter()
    config = TrainConfig(
        epochs=epochs, batch_size=DEMO_BATCH, lr=DEMO_LR, warmup_epochs=1.0, device=device, progress=progress
    )
    import torch

    torch.manual_seed(0)
    result = train(tiny_cnn(train_set.num_classes), train_set, out, config=config, eval_set=test_set,
                   meta={"model_name": "tiny", "label_set": label_set})
    train_s = time.perf_counter() - t0
    analysis = analyze(out)
    report = write_report(analysis)
    report["analysis"] = analysis
    report["train_seconds"] = train_s
    report["total_seconds"] = time.perf_counter() - t0
    report["selected"] = result.selected
    report["history"] = result.history
    return report


def _print_summary(out: Path, label_set: str, report: dict[str, Any]) -> None:
    from gwa_diag.analysis.metrics import ESTIMATE_ROW, RULE_ROW
    from gwa_diag.cli.summary import DETAILS_HEADING, first_screen

    # The numbers of the report just written, not a second computation of them.
    analysis = report["analysis"]
    files = report.get("files", {})
    # What a newcomer needs first; the full output follows under the heading.
    print()
    print(first_screen(analysis, out, suspects=files.get("suspects")))
    print(f"\n{DETAILS_HEADING}")
    table = analysis.detection
    if table is None:
        print(f"No detection scores: {analysis.truth_reason}")
    else:
        n, n_noisy = table.attrs["n"], table.attrs["n_noisy"]
        print(f"Detection of the {n_noisy} wrong CIFAR-10-N '{label_set}' labels among {n} images "
              "(higher AUROC/AP is better; chance AUROC = 0.5, chance AP = "
              f"{n_noisy / n:.2f}):")
        cols = ["auroc", "ap", "p_at_k", "r_at_k"]
        print(table.drop(index=[ESTIMATE_ROW, RULE_ROW], errors="ignore")[cols].dropna(how="all").round(3).to_string())
        if analysis.estimate is not None:
            print(f"estimated wrong labels: {analysis.estimate.total} (true: {n_noisy})")
        for row, name in ((ESTIMATE_ROW, f"default rule (top of {analysis.options.scorer} down to the estimate)"),
                          (RULE_ROW, "rule 'alignment < 0 at the selected epoch'")):
            if row in table.index:
                r = table.loc[row]
                print(f"{name}: precision {r['precision']:.3f}, recall {r['recall']:.3f}, F1 {r['f1']:.3f}, "
                      f"flagged {int(r['n_flagged'])}")
    hist = report["history"]
    sel = report["selected"]
    accs = {int(h["epoch"]): h.get("eval_acc") for h in hist}
    if sel.epoch is not None and accs.get(sel.epoch) is not None:
        best = max(accs, key=lambda e: accs[e] or 0)
        print(f"\nGWA-selected epoch {sel.epoch}: test accuracy {accs[sel.epoch]:.3f} "
              f"(best epoch {best}: {accs[best]:.3f}; last: {accs[max(accs)]:.3f})")
    trust, labelwave = analysis.stopping.lines()[:2]
    print(f"{trust}\n{labelwave}")
    # The phase the report's scores followed (read from the same recording as `gwa-diag train` prints it).
    print(f"training phase: {analysis.epoch_choices.phase.reason}")
    print(analysis.epoch_choices.note)
    print(f"\ntraining {report['train_seconds']:.0f} s, total {report['total_seconds']:.0f} s")
    print(f"run directory: {out}")
    if files:
        print(f"report: {files.get('report_md', out / 'analysis' / 'report.md')}")
        print(f"suspects (relabeling list): {files.get('suspects', out / 'analysis' / 'suspects.csv')}")
    print(f"browse the images: gwa-diag app {shlex.quote(str(out))}")


def _cmd_demo(args: argparse.Namespace) -> int:
    out = Path(args.out)
    report = run_demo(out, label_set=args.label_set, epochs=args.epochs, device=args.device, progress=not args.quiet)
    _print_summary(out, args.label_set, report)
    return 0


def register(subparsers: Any) -> None:
    p = subparsers.add_parser("demo", help="offline end-to-end demo on the bundled CIFAR-10-N subset")
    p.add_argument("--out", default=DEMO_OUT, help=f"run directory to create (default {DEMO_OUT})")
    p.add_argument("--label-set", default="worst", help="CIFAR-10-N label set: worst, aggre, random1, ...")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS, help=f"epochs to train (default {DEMO_EPOCHS})")
    p.add_argument("--device", default="auto", help="auto (default: CUDA when available, else the CPU), cpu, cuda, cuda:N or mps")
    p.add_argument("--quiet", action="store_true", help="no progress bar (the summary is still printed)")
    p.set_defaults(func=_cmd_demo)
