"""Early stopping without a validation set on CIFAR-10-N: the protocol of Table 1 of
Hölzl et al. (2025) at the scale of a small CPU.

    python bench/early_stopping.py                       # regimes memorise, decay, finetune
    python bench/early_stopping.py --quick               # a smaller pool, memorise only
    python bench/early_stopping.py --held-out            # adds random2 and random3: run it once, at the end

Each rule (GWA, LabelWave, a 10% or 1% validation split with the noisy labels, the last
epoch) picks one epoch of a run; the tables give the clean test accuracy of that epoch
against the best one in hindsight, the trust of the GWA choice, and what the curves do. Every
run goes through :func:`gwa_diag.training.engine.train` in a temporary folder removed at the
end; the per-epoch curves go to a JSON file under --out. The protocol: docs/benchmarks/index.md.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gwa_diag.analysis.stopping import prediction_changes
from gwa_diag.early_stopping import assess_choice, labelwave_epoch, rank_correlation, select_epoch
from gwa_diag.training.config import TrainConfig
from gwa_diag.training.data import ArrayDataset, load_cifar10n, load_npz
from gwa_diag.training.data.cifar10n import CIFAR10N_LABEL_SETS
from gwa_diag.training.engine import train
from harness import (
    HELD_OUT_SETS, REPO, TUNING_SETS, add_common_args, clean_test_set, data_files, describe, earliest_best,
    markdown_table, new_model, normalisation, recipe, run_jobs, write_page,
)

RULES = ("oracle", "last", "val10", "val1", "gwa", "labelwave")
RULE_NAMES = {"oracle": "oracle (best test)", "last": "last epoch", "val10": "val 10%", "val1": "val 1%",
              "gwa": "GWA", "labelwave": "LabelWave"}
#: A memorising recipe must lose at least this much test accuracy (points) from its best
#: epoch to its last on these label sets, or the script says it did not memorise.
MEMORISE_DROP = 3.0
MEMORISE_SETS = ("worst", "random1")
#: Rows 10,000..14,999: the pretraining part of the finetune regime (clean labels).
PRETRAIN_ROWS = (10_000, 15_000)
#: Each regime: its harness recipe and epochs (``quick``: under --quick); ``finetune`` also
#: names the recipe and epochs of its pretraining run.
REGIMES: dict[str, dict[str, Any]] = {
    "memorise": {"recipe": "memorise_lr1e-3", "epochs": 40, "quick": 30},
    "decay": {"recipe": "decay", "epochs": TrainConfig().epochs, "quick": TrainConfig().epochs},
    "finetune": {"recipe": "finetune", "epochs": 30, "quick": 20,
                 "pretrain": "decay", "pretrain_epochs": 15, "pretrain_quick": 10},
}


# ---------------------------------------------------------------------------------------
# one job = one run of the engine, in a worker process
# ---------------------------------------------------------------------------------------

_DATA: dict[str, Any] = {}


def _init_worker(data_dir: str, threads: int | None) -> None:
    if threads is not None:  # in a pool, the parent owns Ctrl-C: it stops the workers, then removes the runs
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        torch.set_num_threads(threads)
    files = data_files(Path(data_dir))
    full = load_npz(files.train)
    _DATA.update(full=full, images=full.images_nchw, clean=np.asarray(full.labels, dtype=np.int64),
                 test=load_npz(files.test))


def _eval_sets(job: dict[str, Any]) -> dict[str, ArrayDataset]:
    """The clean test set (``eval_acc`` per epoch) and, in the split runs, the validation part
    with its noisy labels (``val_acc``)."""
    test = clean_test_set(_DATA["test"], _DATA["full"], job["test_rows"], _DATA["clean"])
    if not len(job["val_rows"]):
        return {"eval": test}
    val = ArrayDataset(_DATA["images"][torch.as_tensor(job["val_rows"])], job["val_labels"], num_classes=10)
    return {"eval": test, "val": val}


@torch.no_grad()
def _fit(model: torch.nn.Module, train_set: ArrayDataset) -> np.ndarray:
    """The model's predictions on the un-augmented training images, normalised as it trained."""
    model.eval()
    mean, std = normalisation(train_set.images_nchw, torch.device("cpu"))
    return torch.cat([model((train_set.images_nchw[s : s + 1000].float().div_(255) - mean) / std).argmax(1)
                      for s in range(0, len(train_set), 1000)]).numpy()


def train_run(job: dict[str, Any]) -> dict[str, Any]:
    """Train one model with the engine (its recorder scores every sample, its evaluation sets
    are scored after every epoch); return its curves."""
    t_start = time.perf_counter()
    cfg = recipe(job["recipe"], epochs=job["epochs"], seed=job["seed"])
    rows = torch.as_tensor(job["train_rows"])
    train_set = ArrayDataset(_DATA["images"][rows], job["train_labels"], sample_ids=job["train_rows"], num_classes=10)
    model = new_model("tiny", 10, job["seed"])
    if job.get("init"):
        model.load_state_dict(torch.load(job["init"], map_location="cpu", weights_only=True))
    evals = _eval_sets(job)
    result = train(model, train_set, job["run_dir"], config=cfg, eval_set=evals,
                   meta={"benchmark": "bench/early_stopping.py"})
    curves = {key: [row.get(name) for row in result.history] for key, name in (
        ("epoch", "epoch"), ("test_acc", "eval_acc"), ("val_acc", "val_acc"), ("train_loss", "train_loss"),
        ("train_acc", "train_acc"), ("mean", "mean"), ("kurtosis", "kurtosis"), ("gwa", "gwa"), ("lr", "lr"))}
    # Training fit at the end on the un-augmented pool, against the labels it was trained on,
    # and on its mislabeled part only: how much of the noise has been memorised.
    preds = _fit(model, train_set)
    given = np.asarray(job["train_labels"])
    wrong = given != np.asarray(job["clean_labels"])
    out = {"key": job["key"], "curves": curves, "n_train": len(given), "n_test": len(evals["eval"]),
           "n_val": len(evals["val"]) if "val" in evals else 0,
           "fit": float(np.mean(preds == given)),
           "fit_mislabeled": float(np.mean(preds[wrong] == given[wrong])) if wrong.any() else None,
           "noise": float(np.mean(wrong))}
    if job.get("save"):
        torch.save(model.state_dict(), job["save"])
    else:
        # An epoch with nothing to compare with (the first) has no count, not a count of 0.
        frame = prediction_changes(job["run_dir"])
        changes = {int(e): float(c) if n else None for e, c, n in zip(frame["epoch"], frame["changes"], frame["compared"])}
        out["curves"]["changes"] = [changes.get(e) for e in curves["epoch"]]
    out["seconds"] = time.perf_counter() - t_start
    return out


# ---------------------------------------------------------------------------------------
# the jobs and their schedule
# ---------------------------------------------------------------------------------------

def build_jobs(args: argparse.Namespace, plan: dict[str, dict[str, Any]], label_arrays: dict[str, np.ndarray],
               tmp: Path) -> tuple[list[dict], list[dict], list[dict]]:
    """(pretraining jobs, jobs that need them, the rest)."""
    clean = label_arrays["clean_label"]
    n_rows = 20_000
    test_rows = np.arange(n_rows - args.test_block, n_rows)
    pool_rows = np.arange(args.pool)
    pre, after, free = [], [], []
    for regime in args.regime:
        spec = plan[regime]
        init = None
        if "pretrain" in spec:
            rows = np.arange(*PRETRAIN_ROWS)
            init = str(tmp / f"pretrained-{regime}.pt")
            pre.append({"key": (regime, "clean", args.seeds[0], "pretrain"), "recipe": spec["pretrain"],
                        "epochs": spec["pretrain_epochs"],
                        "seed": args.seeds[0], "train_rows": rows, "train_labels": clean[rows],
                        "clean_labels": clean[rows], "val_rows": [], "val_labels": [], "test_rows": test_rows,
                        "run_dir": str(tmp / f"run-{regime}-pretrain"), "save": init})
        for name in args.label_sets:
            noisy = label_arrays[CIFAR10N_LABEL_SETS[name]]
            for seed in args.seeds:
                perm = np.random.default_rng(seed).permutation(pool_rows)
                for kind, frac in (("full", 0.0), ("val10", 0.10), ("val1", 0.01)):
                    n_val = int(round(frac * len(perm)))
                    val, train = np.sort(perm[:n_val]), np.sort(perm[n_val:])
                    job = {"key": (regime, name, seed, kind), "recipe": spec["recipe"], "epochs": spec["epochs"],
                           "seed": seed,
                           "train_rows": train, "train_labels": noisy[train], "clean_labels": clean[train],
                           "val_rows": val, "val_labels": noisy[val], "test_rows": test_rows,
                           "run_dir": str(tmp / f"run-{regime}-{name}-{seed}-{kind}"), "init": init}
                    (after if init else free).append(job)
    return pre, after, free


# ---------------------------------------------------------------------------------------
# the rules and the tables
# ---------------------------------------------------------------------------------------

def _argmax(values: list[float | None]) -> int | None:
    """Index of the highest value (the earliest on ties), None if there is none."""
    return earliest_best(dict(enumerate(values)))


def choices(full: dict, val10: dict, val1: dict, mode: str) -> dict[str, Any]:
    """The epoch each rule picks for one seed, and the test accuracy it gets."""
    c = full["curves"]
    epochs, test = c["epoch"], c["test_acc"]
    last = len(epochs) - 1
    out: dict[str, Any] = {"epoch": {}, "acc": {}, "fallback": {}}

    def put(rule: str, index: int | None, acc_curve: list[float] = test) -> None:
        out["fallback"][rule] = index is None
        index = last if index is None else index  # no choice: the user keeps the last model
        out["epoch"][rule], out["acc"][rule] = epochs[index], acc_curve[index]

    put("oracle", _argmax(test))
    put("last", last)
    for rule, run in (("val10", val10), ("val1", val1)):
        put(rule, _argmax(run["curves"]["val_acc"]), run["curves"]["test_acc"])
    gwa = select_epoch(epochs, c["gwa"], mode=mode, total_epochs=len(epochs))
    put("gwa", None if gwa.epoch is None else epochs.index(gwa.epoch))
    wave = labelwave_epoch(epochs, c["changes"])
    put("labelwave", None if wave.epoch is None else epochs.index(wave.epoch))
    out["trust"] = assess_choice(epochs, c["gwa"], gwa).level
    defined = [(g, t) for g, t in zip(c["gwa"], test) if g is not None]
    out["spearman"] = rank_correlation([g for g, _ in defined], [t for _, t in defined])
    out["reasons"] = {"gwa": gwa.reason, "labelwave": wave.reason}
    # What the curves do: where mean alignment and GWA peak, with and without the warm-up.
    cut = max(0, math.ceil(0.1 * len(epochs) - 1e-9))
    means = c["mean"]
    mean_peak = _argmax([None if i < cut else m for i, m in enumerate(means)])
    gwa_all = _argmax(c["gwa"])
    best = _argmax(test)
    out["why"] = {
        "best": epochs[best],
        "mean_peak": None if mean_peak is None else epochs[mean_peak],
        "gwa_peak_all": None if gwa_all is None else epochs[gwa_all],
        "gwa_peak_all_acc": None if gwa_all is None else test[gwa_all],
        "mean_rise": None if means[best] is None or means[last] is None else means[last] - means[best],
        "test_fall": test[last] - test[best],
        "spearman_mean": rank_correlation([m for m in means if m is not None],
                                          [t for m, t in zip(means, test) if m is not None]),
        "fit": full["fit"], "fit_mislabeled": full["fit_mislabeled"],
    }
    return out


def _ms(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    vals = [v * scale for v in values if v is not None and not math.isnan(v)]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{vals[0]:.{digits}f}"
    return f"{np.mean(vals):.{digits}f} ± {np.std(vals, ddof=1):.{digits}f}"


def regime_tables(regime: str, spec: dict, args, results: dict, noise: dict[str, float]) -> tuple[list[str], dict]:
    lines: list[str] = []
    summary: dict[str, Any] = {}
    head = ["label set (noise)", *(RULE_NAMES[r] for r in RULES), "GWA trust clear/weak/none",
            "Spearman(GWA, test)"]
    t1, t2, t3 = [], [], []
    why_head = ["label set", "train fit at end (all / mislabeled)", "best test epoch",
                "max mean alignment epoch (after the first 10%)",
                "max GWA epoch (rule)", "max GWA epoch incl. warm-up (test %)", "mean alignment change best->last",
                "test change best->last (points)", "Spearman(mean alignment, test)"]
    for name in args.label_sets:
        per_seed = []
        for seed in args.seeds:
            key = (regime, name, seed)
            per_seed.append(choices(results[key + ("full",)], results[key + ("val10",)], results[key + ("val1",)],
                                    spec["mode"]))
        summary[name] = per_seed
        cells = []
        for rule in RULES:
            cell = _ms([s["acc"][rule] for s in per_seed])
            n_fb = sum(s["fallback"][rule] for s in per_seed)
            if n_fb and rule in ("gwa", "labelwave"):
                cell += f" ({n_fb} no choice)"
            cells.append(cell)
        trust = [s["trust"] for s in per_seed]
        cells.append("/".join(str(trust.count(level)) for level in ("clear", "weak", "none")))
        cells.append(_ms([s["spearman"] for s in per_seed], scale=1.0, digits=2))
        t1.append([f"{name} ({noise[name]:.1%})", *cells])
        t2.append([name, *(", ".join(str(s["epoch"][r]) for s in per_seed) for r in RULES if r != "last")])
        w = [s["why"] for s in per_seed]

        def eps(k: str) -> str:
            return ", ".join("-" if x[k] is None else str(x[k]) for x in w)

        t3.append([
            name,
            f"{_ms([x['fit'] for x in w])} / {_ms([x['fit_mislabeled'] for x in w])}",
            eps("best"), eps("mean_peak"), ", ".join(str(s["epoch"]["gwa"]) for s in per_seed),
            f"{eps('gwa_peak_all')} ({_ms([x['gwa_peak_all_acc'] for x in w])})",
            _ms([x["mean_rise"] for x in w], scale=1.0, digits=3),
            _ms([x["test_fall"] for x in w]),
            _ms([x["spearman_mean"] for x in w], scale=1.0, digits=2),
        ])
    lines += ["Test accuracy (%) of the chosen epoch, mean ± std over seeds:", "",
              *markdown_table(head, t1, "l" + "r" * (len(head) - 1)), "",
              "Chosen epoch per seed (0-based; val columns: epochs of the split runs):", "",
              *markdown_table(["label set", *(RULE_NAMES[r] for r in RULES if r != "last")], t2), "",
              "What the curves do (per seed unless mean ± std):", "",
              *markdown_table(why_head, t3, "l" + "r" * (len(why_head) - 1)), ""]
    # Did the regime do what it is named for? Said in the output, never hidden.
    drops = {n: float(np.mean([-s["why"]["test_fall"] for s in summary[n]])) * 100 for n in args.label_sets}
    drop_txt = ", ".join(f"{n} {d:.1f}" for n, d in drops.items())
    lines.append(f"Mean fall of test accuracy from the best epoch to the last (points): {drop_txt}.")
    if regime == "memorise":
        checked = [n for n in MEMORISE_SETS if n in drops]
        failed = [n for n in checked if drops[n] < MEMORISE_DROP]
        if not checked:
            lines.append("Memorisation not checked: neither worst nor random1 was run.")
        elif failed:
            lines.append(f"WARNING: this regime did NOT memorise enough: the last epoch is less than "
                         f"{MEMORISE_DROP:g} points below the best on {', '.join(failed)}; the comparison of the "
                         "rules is then not the one the paper's Table 1 makes.")
        else:
            lines.append(f"Memorisation confirmed: the last epoch is at least {MEMORISE_DROP:g} points below the best "
                         f"on {', '.join(checked)}.")
    return lines, summary


def plan_of(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Per regime run: its recipe name, epochs and GWA rule mode (and its pretraining's)."""
    out = {}
    for regime in args.regime:
        spec = REGIMES[regime]
        epochs = args.epochs or spec["quick" if args.quick else "epochs"]
        out[regime] = {"recipe": spec["recipe"], "epochs": epochs, "mode": recipe(spec["recipe"], epochs=1).mode}
        if "pretrain" in spec:
            out[regime].update(pretrain=spec["pretrain"], pretrain_epochs=args.pretrain_epochs
                               or spec["pretrain_quick" if args.quick else "pretrain_epochs"])
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regime", nargs="+", choices=tuple(REGIMES),
                    help="regimes to run (default: all three; with --quick: memorise)")
    ap.add_argument("--seeds", type=int, nargs="+", help="seeds (default 0 1 2; with --quick 0 1)")
    ap.add_argument("--held-out", action="store_true",
                    help="add the held-out label sets random2 and random3 (run once, after tuning)")
    ap.add_argument("--label-sets", nargs="+", choices=(*TUNING_SETS, *HELD_OUT_SETS), help=argparse.SUPPRESS)
    ap.add_argument("--pool", type=int, help="training pool: the first N rows (default 3000; --quick 2000)")
    ap.add_argument("--epochs", type=int, help="override the epochs of every regime (not of pretraining)")
    ap.add_argument("--pretrain-epochs", type=int, help="override the epochs of the finetune regime's pretraining")
    ap.add_argument("--test-block", type=int, default=5000,
                    help="last rows of the 20,000 held out with their clean labels as test images (default 5000)")
    ap.add_argument("--out", default=str(REPO / "bench_out" / "early_stopping"),
                    help="folder for the JSON file of every per-epoch curve")
    add_common_args(ap, quick="pool 2000, fewer epochs and seeds, memorise regime only unless --regime", workers=True)
    args = ap.parse_args()
    args.regime = args.regime or (["memorise"] if args.quick else list(REGIMES))
    args.seeds = args.seeds if args.seeds is not None else ([0, 1] if args.quick else [0, 1, 2])
    args.pool = args.pool or (2000 if args.quick else 3000)
    args.label_sets = args.label_sets or [*TUNING_SETS, *(HELD_OUT_SETS if args.held_out else ())]
    if not 1000 <= args.test_block <= 20_000 - PRETRAIN_ROWS[1] or args.pool > PRETRAIN_ROWS[0] or args.pool < 200:
        raise SystemExit(f"--pool must lie in [200, {PRETRAIN_ROWS[0]}] and --test-block in [1000, "
                         f"{20_000 - PRETRAIN_ROWS[1]}]: the pool, the pretraining part and the test block "
                         "never overlap")
    return args


def main() -> None:
    t0 = time.perf_counter()
    args = parse_args()
    label_arrays = load_cifar10n(data_files(args.data).labels)
    clean = label_arrays["clean_label"]
    noise = {n: float(np.mean(label_arrays[CIFAR10N_LABEL_SETS[n]][: args.pool] != clean[: args.pool]))
             for n in args.label_sets}
    plan = plan_of(args)
    n_test = 1000 + args.test_block
    header = [
        "# Early stopping without a validation set on CIFAR-10-N (protocol of Hölzl et al. 2025, Table 1)",
        "",
        f"{args.workers} worker process(es) of 1 thread each.",
        "",
        (f"Data: training pool = the first {args.pool:,} CIFAR-10 training images with the noisy label set of the row "
         f"(10% / 1% of it held out, with their noisy labels, in the split runs, drawn per seed); test set = "
         f"{n_test:,} clean images: the 1,000 CIFAR-10 test images PLUS training images "
         f"{20_000 - args.test_block:,}..19,999 held out with their CLEAN labels, never trained on. "
         f"Seeds: {' '.join(map(str, args.seeds))}."),
        "",
    ]
    for regime, spec in plan.items():
        text = (f"Regime {regime}: tiny CNN, recipe {spec['recipe']}: "
                f"{describe(recipe(spec['recipe'], epochs=spec['epochs']))}; GWA rule mode '{spec['mode']}'")
        if "pretrain" in spec:
            text += (f"; pretrained once (seed {args.seeds[0]}) on the CLEAN labels of training images "
                     f"{PRETRAIN_ROWS[0]:,}..{PRETRAIN_ROWS[1] - 1:,} with recipe {spec['pretrain']}: "
                     f"{describe(recipe(spec['pretrain'], epochs=spec['pretrain_epochs']))}, then fine-tuned with all "
                     "layers and the pretrained head")
        header += [text + ".", ""]
    print("\n".join(header), flush=True)

    with tempfile.TemporaryDirectory(prefix="gwa-early-stopping-") as tmp:
        pre, after, free = build_jobs(args, plan, label_arrays, Path(tmp))
        results: dict[tuple, dict[str, Any]] = {}

        def done(res: dict[str, Any]) -> None:
            results[res["key"]] = res
            print(f"[{len(results)}/{len(pre) + len(after) + len(free)}] {' '.join(map(str, res['key']))}: "
                  f"{res['seconds']:.0f} s (elapsed {time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)

        run_jobs(args.workers, _init_worker, (str(args.data), 1), train_run, (pre, after, free), done)

    body: list[str] = []
    summaries: dict[str, Any] = {}
    for regime, spec in plan.items():
        body += [f"## Regime {regime}", ""]
        if "pretrain" in spec:
            pre_res = results[(regime, "clean", args.seeds[0], "pretrain")]
            body += [f"Pretrained model: test accuracy {pre_res['curves']['test_acc'][-1]:.1%} before fine-tuning.", ""]
        lines, summaries[regime] = regime_tables(regime, spec, args, results, noise)
        body += lines + [""]
    body += ["A rule that picks no epoch keeps the last one ('no choice' counts those seeds). GWA trust: "
             "assess_choice levels over the seeds. Spearman: over all epochs with a defined GWA."]
    print("\n".join(body))
    seconds = {k: v.pop("seconds") for k, v in results.items()}
    dump = {"pool": args.pool, "test_images": n_test, "seeds": args.seeds, "noise": noise, "regimes": plan,
            "runs": [{"regime": k[0], "label_set": k[1], "seed": k[2], "run": k[3],
                      **{kk: vv for kk, vv in v.items() if kk != "key"}} for k, v in sorted(results.items())],
            "choices": summaries}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = ("quick" if args.quick else "full") + "-" + "-".join(args.regime) + ("-heldout" if args.held_out else "")
    (out / f"curves-{tag}.json").write_text(json.dumps(dump, indent=1, default=float))
    pages = write_page(__file__, "\n".join(header + body), {k: v for k, v in dump.items() if k != "runs"},
                       pages_dir=args.pages_dir, wall_s=time.perf_counter() - t0,
                       timings={"training": f"{len(results)} runs, {sum(seconds.values()) / 60:.1f} worker-minutes"})
    print(f"\nCurves: {out / f'curves-{tag}.json'}; page: {pages[0]}")


if __name__ == "__main__":
    main()
