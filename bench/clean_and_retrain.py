"""Does acting on the flagged list improve the model? Clean the labels, retrain, measure.

    python bench/clean_and_retrain.py                 # CPU: tiny CNN, worst/aggre/random1
    python bench/clean_and_retrain.py --quick         # worst + random1, fewer images and epochs
    python bench/clean_and_retrain.py --mode gpu      # CIFAR ResNet-18, bf16 (needs CUDA)
    python bench/clean_and_retrain.py --label-sets worst --policies gwa_drop,gwa_relabel

Per label set: one training on the noisy labels, then one retraining per policy
(:data:`POLICIES`: gwa-diag's corrected labels, cleanlab's flags, the true labels) through
``with_label_file`` and ``without_samples``, compared on clean test images never trained on.
Runs and label files go under --out (a folder there this benchmark did not write is
refused). cleanlab is optional (``pip install -r bench/requirements.txt``). The protocol: docs/benchmarks/index.md.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from gwa_diag.analysis.corrected import corrected_labels, corrected_paths, write_corrected_labels
from gwa_diag.store import open_run
from gwa_diag.training.data import ArrayDataset, with_cifar10n, with_label_file, without_samples
from gwa_diag.training.engine import train
from harness import (
    INSTALL_HINT, add_common_args, add_recipe_args, clean_test_set, cleanlab_flags, cleanlab_installed, decay_config,
    describe, fmt, hardware, label_set_names, load_cifar, markdown_table, new_model, predict_probs, write_page,
)

#: Training images 15,000..19,999 are test images here (clean labels): the pool stays below.
TEST_BLOCK = (15_000, 20_000)
DEFAULT_SETS = "worst,aggre,random1"
QUICK_SETS = "worst,random1"

# The GPU mode trains on at most 15,000 images: rows 15,000-19,999 are test images here.
MODES: dict[str, dict[str, Any]] = {"cpu": {"n": 5000, "epochs": 15}, "gpu": {"n": 15000, "epochs": 40}}
#: What --quick changes in cpu mode (sized to finish in under 10 minutes on a quiet 2-core CPU).
QUICK = {"n": 3000, "epochs": 12}


@dataclass(frozen=True)
class Policy:
    key: str      # file and run name
    row: str      # table row
    source: str   # none | gwa | cleanlab | oracle
    action: str | None = None  # drop | relabel
    thresholded: bool = False  # relabel only with suggested_prob >= --min-prob


POLICIES = [
    Policy("none", "no cleaning", "none"),
    Policy("gwa_drop", "drop flagged (gwa-diag)", "gwa", "drop"),
    Policy("gwa_relabel", "relabel flagged (gwa-diag)", "gwa", "relabel"),
    Policy("gwa_relabel_p50", "relabel flagged, p >= {p} (gwa-diag)", "gwa", "relabel", thresholded=True),
    Policy("cleanlab_drop", "drop flagged (cleanlab)", "cleanlab", "drop"),
    Policy("cleanlab_relabel", "relabel flagged (cleanlab)", "cleanlab", "relabel"),
    Policy("oracle", "oracle (true labels)", "oracle"),
]
BY_KEY = {p.key: p for p in POLICIES}
QUICK_SKIP = {"gwa_relabel_p50"}

#: (key of a result row, column header)
COLUMNS = [
    ("acc_last", "test acc (last epoch)"), ("delta", "vs no cleaning"), ("acc_gwa", "test acc at GWA epoch"),
    ("gwa_epoch", "GWA epoch"), ("changed", "labels changed"), ("dropped", "labels dropped"),
    ("precision", "precision (acted on)"), ("recall", "recall (acted on)"),
    ("wrong_left", "wrong labels left (share of kept)"),
]


# -- data ----------------------------------------------------------------------------------------
def load_data(data: Path, n: int) -> tuple[ArrayDataset, ArrayDataset, Path]:
    """(training pool = first n images, clean test set, CIFAR-10-N label file). Test: the 1,000
    test images plus training rows 15,000..19,999 with their CLEAN labels, never trained on."""
    cifar = load_cifar(data, n)
    return cifar.pool, clean_test_set(cifar.test, cifar.full, np.arange(*TEST_BLOCK), cifar.clean), cifar.labels


# -- output folders -------------------------------------------------------------------------------
def _label_file_names() -> set[str]:
    names = set()
    for p in POLICIES:
        paths = corrected_paths(f"{p.key}.csv")
        names |= {paths.labels.name, paths.excluded.name, paths.provenance.name}
    return names


def check_out(out: Path, names: list[str]) -> None:
    """Refuse, before any training, to replace a folder this benchmark did not write."""
    known = _label_file_names()
    for name in names:
        runs, labels = out / "runs" / name, out / "labels" / name
        if runs.exists():
            for entry in runs.iterdir():
                if not (entry.is_dir() and ((entry / "run.json").is_file() or not any(entry.iterdir()))):
                    raise SystemExit(f"{entry} exists and is not a gwa-diag run: remove it or choose another --out")
        if labels.exists():
            for entry in labels.iterdir():
                if entry.name not in known:
                    raise SystemExit(f"{labels} holds {entry.name}, which this benchmark did not write: "
                                     "remove it or choose another --out")


def clear_out(out: Path, name: str) -> None:
    for folder in (out / "runs" / name, out / "labels" / name):
        if folder.exists():
            shutil.rmtree(folder)


def write_label_files(out_csv: Path, ids: np.ndarray, given: np.ndarray, new: np.ndarray, dropped: np.ndarray,
                      how: str) -> tuple[Path, Path]:
    """A label file and exclusion file in the format ``gwa-diag labels`` writes (no provenance)."""
    paths = corrected_paths(out_csv)
    changed = new != given
    changed_by = np.where(dropped, f"{how}:drop", np.where(changed, f"{how}:relabel", ""))
    pd.DataFrame({"sample_id": ids, "label": new, "given_label": given, "changed_by": changed_by}).to_csv(
        paths.labels, index=False)
    pd.DataFrame({"sample_id": ids[dropped], "reason": f"{how}: find_label_issues"}).to_csv(paths.excluded, index=False)
    return paths.labels, paths.excluded


# -- one label set -----------------------------------------------------------------------------------
def _digest(ds) -> str:
    """Identity of a training set: ids and labels (two policies with the same set train once)."""
    h = hashlib.sha256(np.asarray(ds.sample_ids, dtype=np.int64).tobytes())
    h.update(np.asarray(ds.labels, dtype=np.int64).tobytes())
    return h.hexdigest()


def test_accuracy(run_dir: Path, checkpoint: str, args: argparse.Namespace, ds: ArrayDataset, test_set: ArrayDataset,
                  device: torch.device) -> tuple[float, int]:
    """(accuracy on the test set, epoch) of a checkpoint of a run trained on ``ds``, in eval
    mode, with the images normalised as the engine normalised them (channel statistics of
    the training images), as the engine's per-epoch evaluation does."""
    probs = predict_probs(run_dir, args.model, test_set, device, args.precision, trained_on=ds.images_nchw,
                          checkpoint=checkpoint)
    epoch = torch.load(run_dir / "checkpoints" / checkpoint, map_location="cpu", weights_only=True)["epoch"]
    return float(np.mean(probs.argmax(1) == np.asarray(test_set.labels))), int(epoch)


def train_one(args, ds, test_set, run_dir: Path, meta: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Train one run (no per-epoch evaluation), then evaluate its last-epoch weights and the
    GWA-selected weights it kept (``checkpoints/selected.pt``) on the test set."""
    model = new_model(args.model, ds.num_classes, args.seed)
    t0 = time.perf_counter()
    train(model, ds, run_dir, config=args.config, meta={"benchmark": "bench/clean_and_retrain.py", **meta})
    seconds = time.perf_counter() - t0
    acc_last, last_epoch = test_accuracy(run_dir, "last.pt", args, ds, test_set, device)
    if last_epoch != args.epochs - 1:
        raise SystemExit(f"{run_dir}: checkpoints/last.pt holds epoch {last_epoch}, not the last one")
    sel = open_run(run_dir).meta.get("selected_epoch")
    acc_gwa = None
    if sel is not None:
        acc_gwa, epoch = test_accuracy(run_dir, "selected.pt", args, ds, test_set, device)
        if epoch != sel:
            raise SystemExit(f"{run_dir}: checkpoints/selected.pt holds epoch {epoch}, run.json selected {sel}")
    return {"acc_last": acc_last, "gwa_epoch": None if sel is None else int(sel), "acc_gwa": acc_gwa,
            "seconds": seconds}


def label_counts(noisy, ds) -> dict[str, Any]:
    """What a policy did, from the dataset the run trained on: against the given (noisy) labels
    and the true labels of the pool."""
    ids, given, clean = noisy.sample_ids, np.asarray(noisy.labels), np.asarray(noisy.clean_labels)
    wrong = given != clean
    kept = np.isin(ids, ds.sample_ids)
    pos = noisy.positions(ds.sample_ids)
    changed = np.zeros(len(ids), dtype=bool)
    changed[pos] = np.asarray(ds.labels) != given[pos]
    acted = changed | ~kept
    n_wrong_left = int(np.sum(np.asarray(ds.labels) != clean[pos]))
    return {
        "changed": int(changed.sum()), "dropped": int((~kept).sum()), "acted": int(acted.sum()),
        "precision": float(wrong[acted].mean()) if acted.any() else None,
        "recall": float(acted[wrong].mean()) if wrong.any() else None,
        "wrong_left": n_wrong_left, "kept": int(kept.sum()),
    }


def run_label_set(name: str, args, pool, test_set, label_path: Path, device: torch.device, policies: list[Policy],
                  with_cleanlab: bool) -> dict[str, Any]:
    out = Path(args.out)
    clear_out(out, name)
    runs, labels_dir = out / "runs" / name, out / "labels" / name
    labels_dir.mkdir(parents=True)
    noisy = with_cifar10n(pool, label_path, label_set=name)
    wrong = np.asarray(noisy.labels) != np.asarray(noisy.clean_labels)
    rows: dict[str, dict[str, Any]] = {}
    trained: dict[str, str] = {}  # digest of the training set -> policy key that trained on it
    info: dict[str, Any] = {"name": name, "n": len(noisy), "n_wrong": int(wrong.sum()), "noise": float(wrong.mean())}

    def fit(policy: Policy, ds) -> None:
        counts = label_counts(noisy, ds)
        same = trained.get(_digest(ds))
        if same is not None:  # e.g. a policy that acted on nothing: the run would repeat
            rows[policy.key] = {**rows[same], **counts, "same_as": same, "seconds": 0.0}
            print(f"  {name}: {row_name(policy, args)}: same training set as '{row_name(BY_KEY[same], args)}', "
                  "not trained again", flush=True)
            return
        res = train_one(args, ds, test_set, runs / policy.key, {"label_set": name, "policy": policy.key}, device)
        trained[_digest(ds)] = policy.key
        rows[policy.key] = {**res, **counts}
        sel = "-" if res["acc_gwa"] is None else f"{res['acc_gwa']:.3f} (epoch {res['gwa_epoch']})"
        print(f"  {name}: {row_name(policy, args)}: trained on {len(ds)} samples in {res['seconds']:.0f} s; "
              f"test acc last {res['acc_last']:.3f}, at the GWA epoch {sel}", flush=True)

    # 1. No cleaning (also the run every policy reads).
    base_dir = runs / "none"
    fit(BY_KEY["none"], noisy)
    # 2.-3. Policies.
    for policy in policies:
        if policy.source == "gwa":
            min_prob = args.min_prob if policy.thresholded else None
            result = corrected_labels(base_dir, auto=policy.action, min_prob=min_prob)
            paths = write_corrected_labels(result, labels_dir / f"{policy.key}.csv")
            info["gwa"] = {**result.provenance["analysis"], "flagged": result.provenance["counts"]["flagged"]}
            ds = without_samples(with_label_file(noisy, paths.labels), paths.excluded)
            fit(policy, ds)
        elif policy.source == "cleanlab":
            if not with_cleanlab:
                continue
            if "cleanlab_flags" not in info:
                probs = predict_probs(base_dir, args.model, noisy, device, args.precision)
                info["cleanlab_flags"] = cleanlab_flags(np.asarray(noisy.labels), probs)
                info["cleanlab_pred"] = probs.argmax(1)
                info["cleanlab"] = int(info["cleanlab_flags"].sum())
            flags, given = info["cleanlab_flags"], np.asarray(noisy.labels, dtype=np.int64)
            new = np.where(flags, info["cleanlab_pred"], given) if policy.action == "relabel" else given
            dropped = flags if policy.action == "drop" else np.zeros(len(given), dtype=bool)
            lab, exc = write_label_files(labels_dir / f"{policy.key}.csv", noisy.sample_ids, given, new, dropped,
                                         "cleanlab")
            fit(policy, without_samples(with_label_file(noisy, lab), exc))
        elif policy.source == "oracle":
            fit(policy, with_cifar10n(pool, label_path, label_set="clean"))
    info["rows"] = rows
    return info


# -- tables -------------------------------------------------------------------------------------------
def row_name(policy: Policy, args) -> str:
    return policy.row.format(p=f"{args.min_prob:g}")


def cells(r: dict[str, Any], base: dict[str, Any]) -> dict[str, str]:
    left = f"{r['wrong_left']} ({r['wrong_left'] / r['kept']:.1%})" if r["kept"] else "-"
    return {
        "acc_last": fmt(r["acc_last"]),
        "delta": "" if r is base else f"{r['acc_last'] - base['acc_last']:+.3f}",
        "acc_gwa": fmt(r["acc_gwa"]),
        "gwa_epoch": "-" if r["gwa_epoch"] is None else str(r["gwa_epoch"]),
        "changed": str(r["changed"]), "dropped": str(r["dropped"]),
        "precision": fmt(r["precision"]), "recall": fmt(r["recall"]),
        "wrong_left": left,
    }


def table_rows(info: dict[str, Any], policies: list[Policy], args) -> list[tuple[str, dict[str, str]]]:
    base = info["rows"]["none"]
    out = []
    for p in [BY_KEY["none"], *policies]:
        if p.key in info["rows"]:
            name = row_name(p, args) + (f" [= {row_name(BY_KEY[info['rows'][p.key]['same_as']], args)}]"
                                        if info["rows"][p.key].get("same_as") else "")
            out.append((name, cells(info["rows"][p.key], base)))
    return out


def md_table(rows: list[tuple[str, dict[str, str]]]) -> str:
    """One label set's table, for the console and the page alike."""
    cells = [[name, *(c[k] for k, _ in COLUMNS)] for name, c in rows]
    return "\n".join(markdown_table(["policy", *(h for _, h in COLUMNS)], cells, "l" + "r" * len(COLUMNS)))


def header(info: dict[str, Any], with_cleanlab: bool) -> str:
    text = (f"label set {info['name']}: {info['n']} training images, {info['n_wrong']} wrong labels "
            f"({info['noise']:.1%})")
    g = info.get("gwa")
    if g:
        read = "" if g.get("selected_epoch") is None else f", read at epoch {g['selected_epoch']}"
        text += (f"; gwa-diag flagged {g['flagged']} (default analysis: ranking {g['scorer']}, rule {g['rule']}, "
                 f"window {g['window']}{read})")
    if "cleanlab" in info:
        text += f"; cleanlab flagged {info['cleanlab']} (find_label_issues, last-epoch in-sample probabilities)"
    elif not with_cleanlab:
        text += "; cleanlab rows skipped (not installed)"
    return text


NOTES = [
    "acc: accuracy on 6,000 clean test images never trained on (the 1,000 CIFAR-10 test images and training "
    "images 15,000..19,999 with their clean labels), at the last epoch and at the epoch the run's own GWA rule "
    "selected ('-' when it selected none). 'vs no cleaning': last-epoch accuracy minus that of the no-cleaning row.",
    "changed / dropped: labels changed, samples left out of the retraining. Acted on = changed or dropped; "
    "precision = share of acted-on samples whose given label was wrong; recall = share of the wrong labels "
    "acted on. wrong labels left: samples kept whose training label differs from the true one (a relabel to "
    "another wrong class counts), and their share of the samples kept.",
    "gwa-diag rows: gwa_diag.analysis.corrected.corrected_labels(run, auto='drop' | 'relabel' [, min_prob]) with "
    "the default analysis options on the no-cleaning run, written with write_corrected_labels and trained "
    "through with_label_file + without_samples (train --labels/--exclude). cleanlab rows: "
    "cleanlab.filter.find_label_issues (default settings) on the no-cleaning run's last-epoch softmax over the "
    "un-augmented training images (in-sample); relabel = argmax of those probabilities.",
    "Every run: same recipe, same seed, trained from scratch. One seed on one subset: the accuracies vary by a "
    "point or more from run to run and machine to machine; read differences of a point or less as noise.",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", choices=sorted(MODES), default="cpu",
                    help="cpu: tiny CNN on a subset; gpu: CIFAR ResNet-18, bf16 (needs CUDA)")
    ap.add_argument("--quick", action="store_true",
                    help=f"cpu: label sets {QUICK_SETS}, first {QUICK['n']} images, {QUICK['epochs']} epochs, "
                    "no thresholded relabel (under 10 minutes on 2 CPU cores)")
    ap.add_argument("--label-sets", help=f"comma-separated CIFAR-10-N label sets (default {DEFAULT_SETS}; "
                    f"--quick {QUICK_SETS}; random2/random3 are held out for a final report)")
    ap.add_argument("--policies", help="comma-separated policies besides 'none' (default: all; --quick: all but "
                    f"{', '.join(sorted(QUICK_SKIP))}); of " + ", ".join(p.key for p in POLICIES[1:]))
    ap.add_argument("--min-prob", type=float, default=0.5,
                    help="min_prob of the thresholded relabel policy gwa_relabel_p50 (default 0.5)")
    ap.add_argument("--n", type=int, help=f"train on the first N images, at most {TEST_BLOCK[0]} "
                    "(default: cpu 5000, --quick 3000, gpu 15000)")
    ap.add_argument("--epochs", type=int, help="epochs per run (default: cpu 15, --quick 12, gpu 40)")
    add_recipe_args(ap, "seed of every run (default 0)")
    ap.add_argument("--out", default="bench_out/clean_and_retrain",
                    help="output folder: runs/<label set>/<policy> and labels/<label set>/")
    add_common_args(ap)
    args = ap.parse_args()
    t_start = time.perf_counter()
    if args.quick and args.mode != "cpu":
        raise SystemExit("--quick is a cpu-mode setting; drop it with --mode gpu")
    args.config = decay_config(args, {**MODES[args.mode], **(QUICK if args.quick else {})})
    names = label_set_names(args.label_sets or (QUICK_SETS if args.quick else DEFAULT_SETS), pairs=False)
    if args.policies is None:
        policies = [p for p in POLICIES[1:] if not (args.quick and p.key in QUICK_SKIP)]
    else:
        keys = [s.strip() for s in args.policies.split(",") if s.strip()]
        unknown = [k for k in keys if k not in BY_KEY or k == "none"]
        if unknown:
            raise SystemExit(f"unknown policy(ies) {unknown}: choose from {', '.join(p.key for p in POLICIES[1:])}")
        policies = [p for p in POLICIES[1:] if p.key in keys]
    if not 0.0 <= args.min_prob <= 1.0:
        raise SystemExit(f"--min-prob must lie in [0, 1], got {args.min_prob}")
    if not 2 <= args.n <= TEST_BLOCK[0]:
        raise SystemExit(f"--n must be between 2 and {TEST_BLOCK[0]} (training images {TEST_BLOCK[0]:,}..19,999 are "
                         f"test images here), got {args.n}")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--mode gpu needs a CUDA device and none is available here: run the default cpu mode "
                         "(or --quick) instead")
    device = torch.device(args.device)
    with_cleanlab = cleanlab_installed()
    out = Path(args.out)
    check_out(out, names)

    hw = hardware(device)
    setting = (f"mode {args.mode}{' --quick' if args.quick else ''}: {args.model}, {args.precision}, first {args.n} "
               f"training images, {describe(args.config)}, seed {args.seed}; test: 6,000 clean images never trained on")
    print(hw)
    print(setting)
    skipped = []
    if not with_cleanlab and any(p.source == "cleanlab" for p in policies):
        skipped.append(f"cleanlab is not installed: the cleanlab rows are skipped ({INSTALL_HINT})")
    for line in skipped:
        print(line)
    pool, test_set, label_path = load_data(Path(args.data), args.n)

    results = []
    for name in names:
        results.append(run_label_set(name, args, pool, test_set, label_path, device, policies, with_cleanlab))
    wall = time.perf_counter() - t_start
    n_trained = sum(1 for r in results for row in r["rows"].values() if not row.get("same_as"))
    train_s = sum(row["seconds"] for r in results for row in r["rows"].values())
    timing = (f"total wall time {wall / 60:.1f} min ({wall:.0f} s): {n_trained} trainings, {train_s:.0f} s of "
              "training; on a shared machine timings vary with its load")

    md = ["# Clean and retrain on CIFAR-10-N", "", f"Setting: {setting}", "", *(line for s in skipped for line in (s, ""))]
    for info in results:
        md += [f"## {info['name']}", "", header(info, with_cleanlab), "",
               md_table(table_rows(info, policies, args)), ""]
    md += [*(f"* {n}" for n in NOTES), ""]
    numbers = {"setting": setting, "label_sets": [
        {"name": i["name"], "n": i["n"], "n_wrong": i["n_wrong"], "noise": i["noise"],
         "rows": {k: {c: v for c, v in row.items() if c != "seconds"} for k, row in i["rows"].items()}} for i in results]}
    print("\n".join(md))
    pages = write_page(__file__, "\n".join(md), numbers, pages_dir=args.pages_dir, wall_s=wall, device=device,
                       timings={"training": f"{train_s:.0f} s in {n_trained} trainings"})
    print(f"page: {pages[0]}")
    print(timing)


if __name__ == "__main__":
    main()
