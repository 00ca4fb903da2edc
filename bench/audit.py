"""One table: what a verified sample of a few hundred labels says about a run, when the truth
answers for the person. Simulated audits of recorded runs, in memory.

    python bench/audit.py                                  # the two GPU recordings
    python bench/audit.py --runs DIR...                    # plus run directories (regimes.py --keep-runs)
    python bench/audit.py --quick --runs DIR...            # fewer audits per size

Each audit goes through the tool's own design and statistics (:mod:`gwa_diag.analysis.audit`,
:mod:`gwa_diag.analysis.survey`): the count's interval against a plain random sample,
``p_wrong``'s calibration against the fixed map of ``unfitted``, and the review's recall
bound. Each run needs the truth (labels.parquet ``clean_label``); a folder without run.json
is searched one level down. The targets are :func:`check_targets`; the script exits
:data:`MISSED` and names every one missed. The protocol: docs/benchmarks/index.md.
"""

from __future__ import annotations

import os

# One thread per process: the machine this runs on is shared, and the work is many small fits.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ProcessPoolExecutor  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from gwa_diag.analysis.audit import DEFAULT_STRATA, MIN_PER_STRATUM, allocate, stratify  # noqa: E402
from gwa_diag.analysis.metrics import auroc  # noqa: E402
from gwa_diag.analysis.survey import P_WRONG_FEATURES, fit_p_wrong, recall_bound, stratified_total  # noqa: E402
from harness import add_common_args, markdown_table, write_page  # noqa: E402

SIZES = (50, 100, 200, 400)
DEPTHS = (0.10, 0.25, 0.50)
BINS = 10
#: Exit status when a target is missed (a crash exits 1, a bad argument 2).
MISSED = 3


@dataclass
class Cell:
    """One analysed run, reduced to what the simulations read (ranking order throughout)."""

    name: str
    kind: str  # "gpu" (the recordings) or "cpu"
    ids: np.ndarray
    ranking: pd.DataFrame  # rank, label, unfitted: what stratify reads
    features: pd.DataFrame  # the summary columns fit_p_wrong reads
    score: pd.Series
    wrong: np.ndarray  # bool: the given label is wrong (truth)
    unfitted: np.ndarray
    flagged: np.ndarray  # bool: the default rule flags it
    seconds: float

    @property
    def total(self) -> int:
        return int(self.wrong.sum())


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def run_name(path: Path, kind: str) -> str:
    try:
        meta = json.loads((path / "run.json").read_text())
    except (OSError, ValueError):
        meta = {}
    if kind == "gpu":
        return f"gpu {path.name}"
    if meta.get("regime") and meta.get("label_set"):
        seed = int(meta.get("seed", 0) or 0)
        return f"{meta['regime']}/{meta['label_set']}" + (f" s{seed}" if seed else "")
    return path.name


def run_dirs(paths: list[str]) -> list[tuple[Path, bool]]:
    """Run directories: each path with a run.json (named: it must have the truth), else its
    subfolders that have one (found: left out, with a line, when they lack the truth, as the
    pretraining run of ``bench/regimes.py`` does)."""
    out = []
    for p in map(Path, paths):
        if (p / "run.json").is_file():
            out.append((p, True))
        elif p.is_dir():
            found = sorted(q for q in p.iterdir() if (q / "run.json").is_file())
            if not found:
                raise SystemExit(f"{p}: no run.json in it or in its subfolders")
            out.extend((q, False) for q in found)
        else:
            raise SystemExit(f"{p}: not a run directory")
    return out


def load_cell(path: Path, kind: str, required: bool = True) -> Cell | None:
    """The analysed run, or None for a run without the truth that was found, not named."""
    from gwa_diag.analysis.pipeline import analyze  # noqa: PLC0415

    start = time.perf_counter()
    analysis = analyze(path)
    if analysis.truth is None:
        if not required:
            log(f"left out {path}: no truth")
            return None
        raise SystemExit(f"{path}: no truth ({analysis.truth_reason})")
    ranking = analysis.ranking
    truth = analysis.truth.reindex(ranking.index)
    if truth.isna().any():
        raise SystemExit(f"{path}: the truth covers {int(truth.notna().sum())} of {len(truth)} samples; all are needed")
    columns = [c for c in P_WRONG_FEATURES if c in analysis.summary.columns]
    unfitted = ranking["unfitted"].to_numpy(float) if "unfitted" in ranking else np.full(len(ranking), np.nan)
    return Cell(
        name=run_name(path, kind), kind=kind, ids=ranking.index.to_numpy(),
        ranking=ranking[[c for c in ("rank", "label", "unfitted") if c in ranking]].copy(),
        features=analysis.summary.loc[ranking.index, columns].copy(),
        score=ranking["score"].astype(float), wrong=truth.to_numpy(bool), unfitted=unfitted,
        flagged=ranking.index.isin(analysis.flagged.index), seconds=time.perf_counter() - start,
    )


def fixed_map(cells: list[Cell]) -> dict[float, float]:
    """The best single map from ``unfitted`` to a probability, in hindsight, over all cells
    pooled with equal weight per cell (per value, the mean over cells of the share truly wrong,
    weighted by how many of the cell's samples hold it). NaN maps from its own key."""
    hits: dict[float, float] = {}
    counts: dict[float, float] = {}
    for cell in cells:
        keys = _keys(cell.unfitted)
        weight = 1.0 / len(keys)
        values, inverse = np.unique(keys, return_inverse=True)
        n = np.bincount(inverse, minlength=len(values))
        h = np.bincount(inverse, weights=cell.wrong.astype(float), minlength=len(values))
        for v, nv, hv in zip(values.tolist(), n.tolist(), h.tolist()):
            counts[v] = counts.get(v, 0.0) + weight * nv
            hits[v] = hits.get(v, 0.0) + weight * hv
    return {v: hits[v] / counts[v] for v in counts}


def _keys(unfitted: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(unfitted), -1.0, np.round(unfitted, 6))


def ece(p: np.ndarray, y: np.ndarray, bins: int = BINS) -> float:
    """Expected calibration error, equal-width bins weighted by their size."""
    idx = np.minimum((p * bins).astype(int), bins - 1)
    gap = np.bincount(idx, weights=p, minlength=bins) - np.bincount(idx, weights=y.astype(float), minlength=bins)
    return float(np.abs(gap).sum() / len(p))


def prf(flag: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    tp = float((flag & y).sum())
    precision = tp / flag.sum() if flag.sum() else 0.0
    recall = tp / y.sum() if y.sum() else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def review_check(cell: Cell, stratum: np.ndarray, drawn: np.ndarray, depth: int, seed: int) -> tuple[bool, float, float]:
    """A top-down review to ``depth`` (the truth decides) plus the verified samples below it,
    pooled as :func:`gwa_diag.analysis.audit._domain_counts` pools them for the review. Returns (the bound holds,
    true recall, reported lower bound)."""
    found = int(cell.wrong[:depth].sum())
    below = np.zeros(len(stratum), dtype=bool)
    below[depth:] = True
    strata = np.unique(stratum[below])
    pop, smp, hit = [], [], []
    carry = [0, 0, 0]
    for h in strata:
        inside = below & (stratum == h)
        carry = [carry[0] + int(inside.sum()), carry[1] + int((inside & drawn).sum()),
                 carry[2] + int((inside & drawn & cell.wrong).sum())]
        if carry[1] > 0:
            pop.append(carry[0]), smp.append(carry[1]), hit.append(carry[2])
            carry = [0, 0, 0]
    if carry[0]:
        if not pop:
            return False, float("nan"), float("nan")
        pop[-1] += carry[0]
    bound = recall_bound(found, depth, pop, smp, hit)
    true = found / cell.total if cell.total else 1.0
    return true >= bound.recall_low - 1e-12, true, bound.recall_low


def simulate(cell: Cell, sims: int, sizes: tuple[int, ...], mapping: dict[float, float], strata: int,
             first_seed: int) -> pd.DataFrame:
    """One row per simulated audit and size: the count's interval, stratified and plain;
    ``p_wrong`` fitted on the verified samples and scored on the rest; the review check."""
    total, size = cell.total, len(cell.ids)
    fixed = np.vectorize(lambda k: mapping.get(k, np.nan))(_keys(cell.unfitted)) if mapping else None
    score = cell.score.fillna(-np.inf).to_numpy()
    rows = []
    for s in range(sims):
        seed = first_seed + s
        frame, guess = stratify(cell.ranking, strata, seed)
        stratum = frame["stratum"].to_numpy()
        order = frame["order"].to_numpy()
        sizes_h = np.bincount(stratum, minlength=strata)
        rng = np.random.default_rng([seed, 1])
        plain_order = rng.permutation(size)
        for n in sizes:
            if n >= size:
                continue  # nothing left unverified: the sizes table says which were skipped
            n_h = allocate(n, sizes_h, guess, np.minimum(sizes_h, MIN_PER_STRATUM))
            drawn = order < n_h[stratum]
            hits = np.bincount(stratum[drawn & cell.wrong], minlength=strata)
            iv = stratified_total(sizes_h, n_h, hits)
            pick = plain_order[:n]
            ivp = stratified_total([size], [n], [int(cell.wrong[pick].sum())])
            row: dict[str, Any] = {
                "seed": seed, "n": n, "covered": iv.low <= total <= iv.high,
                "half": (iv.high - iv.low) / 2 / total, "error": abs(iv.estimate - total) / total,
                "plain_covered": ivp.low <= total <= ivp.high, "plain_half": (ivp.high - ivp.low) / 2 / total,
                "plain_error": abs(ivp.estimate - total) / total,
            }
            # p_wrong, fitted on the verified samples with the design weights, scored on the rest.
            verified = pd.Series(cell.wrong[drawn], index=cell.ids[drawn])
            weights = pd.Series((sizes_h / np.maximum(n_h, 1))[stratum[drawn]], index=cell.ids[drawn])
            p = fit_p_wrong(cell.features, cell.score, verified, weights).reindex(cell.ids).to_numpy(float)
            rest = ~drawn
            y = cell.wrong[rest]
            pr = p[rest]
            row.update(ece=ece(pr, y), brier=float(np.mean((pr - y) ** 2)),
                       auroc_p=auroc(pr, y), auroc_score=auroc(score[rest], y))
            if fixed is not None:
                fr = fixed[rest]
                row.update(fixed_ece=ece(fr, y), fixed_brier=float(np.mean((fr - y) ** 2)))
            row["prec_p"], row["rec_p"], row["f1_p"] = prf(pr >= 0.5, y)
            row["prec_est"], row["rec_est"], row["f1_est"] = prf(cell.flagged[rest], y)
            for k in DEPTHS:
                holds, true, low = review_check(cell, stratum, drawn, int(round(k * size)), seed)
                row[f"holds_{k:.2f}"] = holds
                row[f"recall_{k:.2f}"] = true
                row[f"low_{k:.2f}"] = low
            rows.append(row)
    return pd.DataFrame(rows)


def _load(job: tuple[str, str, bool]) -> Cell | None:
    return load_cell(Path(job[0]), job[1], job[2])


def _simulate(job: tuple[Cell, int, tuple[int, ...], dict[float, float], int, int]) -> tuple[str, pd.DataFrame, float]:
    start = time.perf_counter()
    frame = simulate(*job)
    return job[0].name, frame, time.perf_counter() - start


def labels_needed(per_n: pd.Series, target: float) -> str:
    """The smallest n whose mean half-width is within ``target``: interpolated between grid
    sizes on log-log axes (``~``), or extrapolated past the grid as 1/sqrt(n) (``>``)."""
    ns = np.array(per_n.index, dtype=float)
    hw = per_n.to_numpy(float)
    if hw[0] <= target:
        return f"{int(ns[0])}" if ns[0] == min(SIZES) else f"<={int(ns[0])}"
    for i in range(1, len(ns)):
        if hw[i] <= target:
            if hw[i] == target:
                return f"{int(ns[i])}"
            # log-log interpolation between the grid sizes around it
            slope = (np.log(hw[i]) - np.log(hw[i - 1])) / (np.log(ns[i]) - np.log(ns[i - 1]))
            n = np.exp(np.log(ns[i - 1]) + (np.log(target) - np.log(hw[i - 1])) / slope)
            return f"~{int(round(n))}"
    return f">{int(ns[-1])} (~{int(round(ns[-1] * (hw[-1] / target) ** 2))})"


def summarise(cells: list[Cell], results: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for cell in cells:
        frame = results[cell.name]
        g = frame.groupby("n")
        mean = g.mean(numeric_only=True)
        for n in mean.index:
            m = mean.loc[n]
            holds = [m[f"holds_{k:.2f}"] for k in DEPTHS]
            rows.append({
                "cell": cell.name, "kind": cell.kind, "N": len(cell.ids), "wrong": cell.total, "n": int(n),
                "sims": int(g.size().loc[n]), "coverage": m["covered"], "half": m["half"],
                "plain_half": m["plain_half"], "ratio": m["half"] / m["plain_half"], "plain_coverage": m["plain_covered"],
                "error": m["error"], "plain_error": m["plain_error"], "ece": m["ece"], "brier": m["brier"],
                "fixed_ece": m.get("fixed_ece", np.nan), "fixed_brier": m.get("fixed_brier", np.nan),
                "auroc_p": m["auroc_p"], "auroc_score": m["auroc_score"], "f1_p": m["f1_p"], "f1_est": m["f1_est"],
                "prec_p": m["prec_p"], "rec_p": m["rec_p"], "prec_est": m["prec_est"], "rec_est": m["rec_est"],
                **{f"holds_{k:.2f}": h for k, h in zip(DEPTHS, holds)},
                **{f"recall_{k:.2f}": m[f"recall_{k:.2f}"] for k in DEPTHS},
                **{f"low_{k:.2f}": m[f"low_{k:.2f}"] for k in DEPTHS},
            })
        # The labels needed for +-10% / +-20%: one value per cell, on its first row.
        of_cell = [r for r in rows if r["cell"] == cell.name]
        table = pd.DataFrame(of_cell).set_index("n")
        for target in (10, 20):
            of_cell[0][f"need_{target}"] = labels_needed(table["half"], target / 100)
            of_cell[0][f"plain_need_{target}"] = labels_needed(table["plain_half"], target / 100)
    return pd.DataFrame(rows)


def markdown(summary: pd.DataFrame) -> str:
    head = ["cell", "wrong / N", "n", "coverage", "half-width", "plain", "x plain", "abs. error",
            "+-10% / +-20% (plain)", "ECE", "Brier", "fixed Brier", "AUROC p_wrong / score",
            "F1 p>=0.5 / estimate", "review holds 10/25/50%"]
    rows, last = [], None
    for r in summary.to_dict("records"):
        first = r["cell"] != last
        last = r["cell"]
        need = (f"{r['need_10']} / {r['need_20']} ({r['plain_need_10']} / {r['plain_need_20']})"
                if first and "need_10" in r and isinstance(r.get("need_10"), str) else "")
        rows.append([
            r["cell"] if first else "", f"{r['wrong']:,} / {r['N']:,}" if first else "", str(r["n"]),
            f"{r['coverage']:.3f}", f"{r['half']:.1%}", f"{r['plain_half']:.1%}", f"{r['ratio']:.2f}",
            f"{r['error']:.1%}", need, f"{r['ece']:.3f}", f"{r['brier']:.4f}", f"{r['fixed_brier']:.4f}",
            f"{r['auroc_p']:.3f} / {r['auroc_score']:.3f}", f"{r['f1_p']:.3f} / {r['f1_est']:.3f}",
            " / ".join(f"{r[f'holds_{k:.2f}']:.3f}" for k in DEPTHS),
        ])
    return "\n".join(markdown_table(head, rows))


def check_targets(summary: pd.DataFrame) -> list[str]:
    missed = []
    for r in summary.to_dict("records"):
        if r["n"] >= 100 and r["coverage"] < 0.93:
            missed.append(f"coverage {r['coverage']:.3f} < 0.93: {r['cell']} at n={r['n']}")
        if r["n"] >= 100:
            for k in DEPTHS:
                if r[f"holds_{k:.2f}"] < 0.95:
                    missed.append(f"recall bound holds in {r[f'holds_{k:.2f}']:.3f} < 0.95 of reviews: {r['cell']} "
                                  f"at n={r['n']}, review to {k:.0%}")
    at200 = summary[summary["n"] == 200]
    if at200.empty:
        missed.append("no n=200 in the sizes: the width and p_wrong targets were not checked")
        return missed
    for r in at200.to_dict("records"):
        if r["kind"] == "gpu":
            if r["ratio"] > 0.75:
                missed.append(f"half-width {r['ratio']:.2f}x plain > 0.75x: {r['cell']} at n=200")
            if r["half"] > 0.12:
                missed.append(f"half-width +-{r['half']:.1%} > +-12%: {r['cell']} at n=200")
        if r["ratio"] > 1.0:
            missed.append(f"half-width {r['ratio']:.2f}x plain, wider than plain: {r['cell']} at n=200")
        if r["ece"] > 0.05:
            missed.append(f"p_wrong ECE {r['ece']:.3f} > 0.05: {r['cell']} at n=200")
        if not r["brier"] < r["fixed_brier"]:
            missed.append(f"p_wrong Brier {r['brier']:.4f} not below the fixed map's {r['fixed_brier']:.4f}: "
                          f"{r['cell']} at n=200")
    cpu = at200[at200["kind"] != "gpu"]
    if len(cpu) and cpu["ratio"].mean() > 0.95:
        missed.append(f"half-width {cpu['ratio'].mean():.2f}x plain on average over the {len(cpu)} other cells > 0.95x")
    return missed


def best_ratio(cell: Cell, n: int, strata: int = 20) -> tuple[float, float]:
    """What no allocation along this ranking can beat, in hindsight: Neyman allocation on each
    stratum's TRUE share of wrong labels over ``strata`` equal strata by rank (normal
    approximation, finite-population corrected). Returns (its standard error over a plain
    sample's, its 95% half-width as a share of the count)."""
    size, y = len(cell.wrong), cell.wrong.astype(float)
    if n >= size or size < strata:
        return float("nan"), float("nan")
    stratum = (np.arange(size) * strata) // size
    sizes = np.bincount(stratum)
    share = np.bincount(stratum, weights=y) / sizes
    n_h = allocate(n, sizes, np.clip(share, 0.05, 0.95), np.minimum(sizes, MIN_PER_STRATUM))
    var = np.sum(sizes**2 * share * (1 - share) / n_h * (1 - n_h / sizes))
    p = y.mean()
    plain = size**2 * p * (1 - p) / n * (1 - n / size)
    return float(np.sqrt(var / plain)), float(1.96 * np.sqrt(var) / y.sum())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--runs", nargs="+", default=[], metavar="DIR",
                    help="run directories (or folders of them, e.g. bench/regimes.py --keep-runs output)")
    ap.add_argument("--gpu-runs", nargs="*", default=None, metavar="DIR",
                    help="the GPU recordings (default DATA/gpu_runs/dec_worst and mem_worst; none: leave them out)")
    ap.add_argument("--sims", type=int, default=None, help="simulated audits per cell and size (default 500; --quick 200)")
    ap.add_argument("--sizes", default=",".join(map(str, SIZES)), help="verified sample sizes (default 50,100,200,400)")
    ap.add_argument("--strata", type=int, default=DEFAULT_STRATA, help=f"strata (default {DEFAULT_STRATA}, the tool's)")
    ap.add_argument("--seed", type=int, default=0, help="first audit seed (default 0)")
    add_common_args(ap, quick="200 audits per size instead of 500", workers=True)
    args = ap.parse_args(argv)
    start = time.perf_counter()
    sims = args.sims if args.sims is not None else (200 if args.quick else 500)
    sizes = tuple(int(s) for s in args.sizes.split(",") if s.strip())
    gpu = args.gpu_runs if args.gpu_runs is not None else [
        str(p) for p in (Path(args.data) / "gpu_runs" / "dec_worst", Path(args.data) / "gpu_runs" / "mem_worst")
        if (p / "run.json").is_file()]
    jobs = [(str(p), "gpu", named) for p, named in run_dirs(gpu)] if gpu else []
    jobs += [(str(p), "cpu", named) for p, named in run_dirs(args.runs)] if args.runs else []
    if not jobs:
        raise SystemExit("no runs: pass --runs DIR..., or keep the GPU recordings under --data")
    workers = max(1, min(args.workers, 2, len(jobs)))
    log(f"analysing {len(jobs)} run(s) in {workers} process(es)")
    pool = ProcessPoolExecutor(workers) if workers > 1 else None
    try:
        mapper = pool.map if pool else map
        cells = []
        for cell in mapper(_load, jobs):
            if cell is None:
                continue
            if cell.total == 0:  # e.g. regimes' pretraining on clean labels: nothing to count
                log(f"left out {cell.name}: no wrong label in it")
            else:
                cells.append(cell)
        names = [c.name for c in cells]
        if len(set(names)) != len(names):
            for i, c in enumerate(cells):
                c.name = f"{c.name} #{i + 1}" if names.count(c.name) > 1 else c.name
        log("analysed: " + ", ".join(f"{c.name} {c.seconds:.0f}s" for c in cells))
        mapping = fixed_map(cells)
        # The big cells first, so the two processes end together.
        order = sorted(cells, key=lambda c: -len(c.ids))
        results: dict[str, pd.DataFrame] = {}
        for name, frame, seconds in mapper(_simulate, [(c, sims, sizes, mapping, args.strata, args.seed) for c in order]):
            results[name] = frame
            log(f"{name}: {sims} audits x {len(sizes)} sizes in {seconds:.0f}s")
    finally:
        if pool:
            pool.shutdown()
    summary = summarise(cells, results)
    missed = check_targets(summary)
    wall = time.perf_counter() - start
    text = [
        f"# Verified samples: simulated audits ({sims} per cell and size{', --quick' if args.quick else ''}; "
        f"{args.strata} strata; the truth answers)", "",
        markdown(summary), "",
        "Columns: coverage of the 95% interval of the wrong-label count; mean half-width as a share of the true "
        "count, stratified and plain (a simple random sample of the same n, one stratum); mean absolute relative "
        "error of the point estimate; labels needed for +-10% / +-20% (mean half-width; ~ interpolated, > "
        "extrapolated); p_wrong's ECE (10 equal-width bins) and Brier on the samples not verified, beside the "
        "best fixed map of `unfitted` (in hindsight, all cells pooled, equal weight per cell: " +
        ", ".join(f"{k:g}->{v:.2f}" for k, v in sorted(mapping.items()) if k >= 0)[:400] + "); AUROC of p_wrong and "
        "of the default score on the unverified samples; F1 of p_wrong >= 0.5 and of the default estimate flags "
        "there; review: share of simulated top-down reviews to 10/25/50% of the run whose true recall is at or "
        "above the reported lower bound.", "",
        "Targets: " + ("all met." if not missed else f"{len(missed)} missed:") + (
            f" ({sims} audits per size: a share of 0.95 reads within +-{1.96 * np.sqrt(0.95 * 0.05 / sims):.3f}; "
            "the targets are decided at the default 500)" if sims < 500 else ""),
        *[f"- MISSED: {m}" for m in missed], "",
        "The floor along each ranking at n=200 (Neyman on the TRUE share per stratum, 20 strata, in hindsight; "
        "normal approximation): " + "; ".join(
            f"{c.name} {r:.2f}x plain, +-{h:.1%}" for c in cells for r, h in [best_ratio(c, 200)]) + ".", "",
    ]
    print("\n".join(text))
    at200 = summary[summary["n"] == 200]
    # The headline: each GPU recording, and the mean over the other cells.
    headline = [{"result": f"count interval half-width at 200 verified labels, {r['cell']}",
                 "value": f"+-{r['half']:.1%} ({r['ratio']:.2f}x a plain sample)"}
                for r in at200[at200["kind"] == "gpu"].to_dict("records")]
    other = at200[at200["kind"] != "gpu"]
    if len(other):
        headline.append({"result": f"count interval half-width at 200 verified labels, mean of {len(other)} CPU cells",
                         "value": f"+-{other['half'].mean():.1%} ({other['ratio'].mean():.2f}x a plain sample)"})
    numbers = {"sims": sims, "strata": args.strata, "missed": missed, "headline": headline,
               "summary": json.loads(summary.to_json(orient="records"))}
    page, _ = write_page(__file__, "\n".join(text), numbers, pages_dir=args.pages_dir, wall_s=wall,
                         argv=argv, timings={"processes": f"{workers} of one thread"})
    print(f"page: {page}")
    return MISSED if missed else 0


if __name__ == "__main__":
    sys.exit(main())
