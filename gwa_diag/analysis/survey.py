"""Statistics of a verified sample: how many labels are wrong, with an interval, from a
stratified random sample whose labels a person checked.

The design (:mod:`gwa_diag.analysis.audit`) splits the samples into strata along the
ranking and draws a simple random sample without replacement in each. Here:

* :func:`stratified_total` estimates the population total of a 0/1 property (a wrong label;
  a wrong label in class c; a wrong label among the flagged samples) from the per-stratum
  sizes and the verified counts. The point estimate is the stratified (Horvitz-Thompson)
  estimator ``sum_h N_h x_h / n_h``. The interval is the central interval of the posterior
  predictive of the total under a Jeffreys prior per stratum: the verified units count as
  they are, and the ``N_h - n_h`` unverified ones follow a beta-binomial. Why not Wald: a
  stratum whose sample holds no wrong label (the bottom of a good ranking) has an estimated
  variance of zero, and small strata under-cover; the Jeffreys posterior is the interval
  with near-nominal frequentist coverage for a binomial proportion (Brown, Cai and DasGupta,
  Statistical Science 2001), and the beta-binomial carries the finite-population
  correction, so a stratum verified in full contributes no uncertainty at all.
  The low end is read under the prior Beta(1/4, 1/2) instead: Jeffreys' prior lends each
  stratum half a wrong label among its verified ones, scaled up by ``N_h / n_h``, so where
  several strata hold few wrong labels (a run with few wrong labels) the low end sat above
  the true count, and the interval under-covered, all of its misses on that side; Beta(0, 1/2)
  over-covers at a wider interval.
  ``bench/audit.py`` measures the coverage.
* :func:`fit_p_wrong` calibrates a probability that each label is wrong, fitted on the
  verified sample with its design weights (``N_h / n_h``).
* :func:`recall_bound` says, for a review that went down the ranking to some depth, how many
  wrong labels remain below it and the lowest recall consistent with the sample.

Everything here is numpy, scipy and pandas on small arrays, and exact: the same answers
always give the same interval.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from gwa_diag.checks import InputError

__all__ = ["Interval", "stratified_total", "fit_p_wrong", "recall_bound", "RecallBound", "CONFIDENCE",
           "P_WRONG_FEATURES"]

#: Two-sided confidence of every interval reported.
CONFIDENCE = 0.95
#: Jeffreys prior Beta(1/2, 1/2) per stratum: the interval's high end.
_PRIOR = 0.5
#: The prior the interval's low end is read under, per stratum: Beta(1/4, 1/2) (module
#: docstring: why).
_LOW_PRIOR = (0.25, 0.5)
#: Standard deviations either side of a stratum's mean kept in the convolution: the mass
#: beyond is orders of magnitude below the interval's tails, even for the skewed posterior of
#: a stratum with no wrong label verified.
_SPREAD = 25.0
#: The summary columns the calibrated probability is fitted on (besides the ranking's
#: percentile), when present: higher = more suspicious for each.
P_WRONG_FEATURES = ("unfitted", "disagreement")


@dataclass(frozen=True)
class Interval:
    """A point estimate of a count with its central ``confidence`` interval."""

    estimate: float
    low: float
    high: float
    confidence: float = CONFIDENCE
    method: str = ("stratified estimator; beta-binomial posterior interval per stratum (low end: Beta(1/4, 1/2) "
                   "prior; high end: Jeffreys)")

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def share_of(self, total: float) -> "Interval":
        """The same interval as a share of ``total`` (e.g. a count of flagged samples)."""
        if total <= 0:
            return Interval(float("nan"), float("nan"), float("nan"), self.confidence, self.method)
        return Interval(self.estimate / total, self.low / total, self.high / total, self.confidence, self.method)


def stratified_total(
    population: Sequence[int] | np.ndarray,
    sampled: Sequence[int] | np.ndarray,
    hits: Sequence[int] | np.ndarray,
    *,
    confidence: float = CONFIDENCE,
) -> Interval:
    """The population total of a 0/1 property from a stratified sample.

    Args:
        population: per stratum, the number of units ``N_h``.
        sampled: per stratum, the number of verified units ``n_h`` (a simple random sample
            of the stratum, without replacement).
        hits: per stratum, how many of the verified units have the property ``x_h``.
        confidence: two-sided level of the interval.

    Returns:
        :class:`Interval`: ``estimate = sum_h N_h x_h / n_h``; a stratum with units but no
        verified unit makes the estimate impossible and raises. The interval holds the known
        hits exactly and adds the exact distribution of the unverified units' count (a sum of
        beta-binomials, convolved).

    Raises:
        InputError: arrays of different lengths, negative counts, ``x_h > n_h``,
            ``n_h > N_h``, or a stratum with units but nothing verified in it.
    """
    n_pop, n_smp, x = (np.asarray(v, dtype=np.int64).reshape(-1) for v in (population, sampled, hits))
    if not len(n_pop) == len(n_smp) == len(x):
        raise InputError(f"{len(n_pop)} strata sizes, {len(n_smp)} sample sizes and {len(x)} counts")
    if (n_pop < 0).any() or (n_smp < 0).any() or (x < 0).any():
        raise InputError("stratum sizes, sample sizes and counts must be >= 0")
    if (x > n_smp).any() or (n_smp > n_pop).any():
        raise InputError("each stratum needs hits <= sampled <= population")
    empty = np.flatnonzero((n_pop > 0) & (n_smp == 0))
    if len(empty):
        raise InputError(f"stratum {int(empty[0])} has {int(n_pop[empty[0]])} units and none verified: "
                         "verify at least one sample in every stratum")
    live = n_pop > 0
    n_pop, n_smp, x = n_pop[live], n_smp[live], x[live]
    estimate = float(np.sum(n_pop * x / n_smp))
    # The unverified units' count: per stratum a beta-binomial (the posterior of the stratum's
    # share, then the units not verified), summed by convolving their pmfs. The low end is
    # read under the prior Beta(1/4, 1/2), the high end under Jeffreys' (module docstring).
    tail = (1.0 - confidence) / 2.0
    low = _quantile(n_pop - n_smp, x, n_smp, _LOW_PRIOR, tail)
    high = _quantile(n_pop - n_smp, x, n_smp, (_PRIOR, _PRIOR), 1.0 - tail)
    # The Jeffreys posterior leans off zero: with no hit verified its lower end can pass the
    # estimate. Widened to hold it (Brown, Cai and DasGupta set the lower end to 0 when x = 0).
    return Interval(estimate, min(low, estimate), max(high, estimate), confidence)


def _quantile(rest: np.ndarray, hits: np.ndarray, sampled: np.ndarray, prior: tuple[float, float],
              level: float) -> float:
    """The ``level`` quantile of the total: the verified hits plus the sum over strata of
    beta-binomials (``rest_h`` unverified units, posterior ``Beta(x_h + a, n_h - x_h + b)``
    for the prior ``(a, b)``), convolved exactly."""
    pmf, offset = np.ones(1), int(hits.sum())
    # Here, not at the top: scipy takes a while to import, and every analysis imports this
    # module; only a run with an audit needs it.
    from scipy import signal, stats  # noqa: PLC0415

    for r, k, m in zip(rest.tolist(), hits.tolist(), sampled.tolist()):
        if r:
            a, b = k + prior[0], m - k + prior[1]
            # Only where the mass is (the mean +- _SPREAD standard deviations): large strata
            # convolve thousands of values, not millions.
            mean = r * a / (a + b)
            sd = math.sqrt(r * a * b * (a + b + r) / ((a + b) ** 2 * (a + b + 1)))
            first, last = max(0, int(mean - _SPREAD * sd)), min(r, int(math.ceil(mean + _SPREAD * sd)))
            pmf = signal.fftconvolve(pmf, stats.betabinom.pmf(np.arange(first, last + 1), r, a, b))
            offset += first
    cdf = np.cumsum(np.clip(pmf, 0.0, None))
    cdf /= cdf[-1]
    return float(offset + np.searchsorted(cdf, level))


def _percentile(score: pd.Series) -> np.ndarray:
    """Each sample's position in the ranking as a fraction in (0, 1]: 1 = most suspicious
    (ties share their mean position; NaN scores rank least suspicious)."""
    filled = score.astype(float).fillna(-np.inf)
    return filled.rank(method="average").to_numpy() / max(len(filled), 1)


def _features(summary: pd.DataFrame, score: pd.Series) -> np.ndarray:
    # The percentile enters as its logit, log(q / (1 - q)) at the middle of the sample's place:
    # the share of wrong labels climbs steeply at the top of a good ranking, and a logistic
    # model is linear in its features (bench/audit.py compares it with the plain percentile).
    size = max(len(score), 1)
    middle = np.clip(_percentile(score) - 0.5 / size, 0.5 / size, 1 - 0.5 / size)
    columns = [np.log(middle / (1 - middle))]
    for name in P_WRONG_FEATURES:
        if name in summary.columns:
            values = summary[name].astype(float)
            columns.append(values.fillna(values.mean() if values.notna().any() else 0.0).to_numpy())
    return np.column_stack(columns)


def fit_p_wrong(summary: pd.DataFrame, score: pd.Series, verified: pd.Series, weights: pd.Series) -> pd.Series:
    """A calibrated probability that each sample's label is wrong.

    A logistic regression on the logit of the sample's percentile in the ranking (``score``:
    higher = more suspicious) and the summary's ``unfitted`` and ``disagreement`` shares, fitted on the
    verified samples (``verified``: True = the label is wrong, by sample_id) with the design
    weights (``weights``: ``N_h / n_h`` by sample_id), so the fit describes the whole run and
    not the sample's over-represented strata. Why logistic and not a map of the score alone:
    which share of the samples a run leaves unfitted is wrong varies between runs, and a fit
    per run learns it (``bench/audit.py`` compares).

    Returns:
        Series by ``summary``'s index, in [0, 1]; higher = more likely wrong.

    Raises:
        InputError: fewer than 2 verified samples, or verified ids the summary lacks.
    """
    from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 (only when answers exist)

    if len(verified) < 2:
        raise InputError(f"{len(verified)} verified sample(s): at least 2 are needed to calibrate p_wrong")
    missing = verified.index.difference(summary.index)
    if len(missing):
        raise InputError(f"verified sample ids {list(missing[:5])} are not in the run")
    x = _features(summary, score.reindex(summary.index))
    position = summary.index.get_indexer(verified.index)
    y = verified.to_numpy(dtype=bool)
    if y.all() or not y.any():
        # One class only: nothing to separate; the weighted share is the calibrated answer.
        share = float(np.average(y, weights=weights.reindex(verified.index).to_numpy(float)))
        return pd.Series(share, index=summary.index, name="p_wrong")
    model = LogisticRegression(C=1.0, max_iter=1000)
    model.fit(x[position], y, sample_weight=weights.reindex(verified.index).to_numpy(float))
    return pd.Series(model.predict_proba(x)[:, 1], index=summary.index, name="p_wrong")


@dataclass(frozen=True)
class RecallBound:
    """How far a top-down review of the ranking has got (:func:`recall_bound`).

    Attributes:
        reviewed: samples reviewed from the top of the ranking without a gap.
        found: wrong labels among them.
        remaining: wrong labels estimated below the reviewed depth, with its interval.
        recall: ``found / (found + remaining.estimate)``.
        recall_low: ``found / (found + remaining.high)``, the lowest recall the sample allows
            at the interval's confidence.
        target: the recall a user asked to reach; ``reached`` when ``recall_low >= target``.
    """

    reviewed: int
    found: int
    remaining: Interval
    recall: float
    recall_low: float
    target: float
    reached: bool

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["remaining"] = self.remaining.as_dict()
        return out

    def line(self) -> str:
        """One sentence for people."""
        verdict = (f"the lower bound has passed the {self.target:.0%} target: the review can stop"
                   if self.reached else f"keep reviewing to pass the {self.target:.0%} target")
        return (f"reviewed the top {self.reviewed}: {self.found} wrong labels found, "
                f"{self.remaining.estimate:.0f} estimated to remain ({self.remaining.low:.0f}-"
                f"{self.remaining.high:.0f}); recall {self.recall:.0%}, at least {self.recall_low:.0%}; {verdict}")


def recall_bound(found: int, reviewed: int, population: Sequence[int], sampled: Sequence[int],
                 hits: Sequence[int], *, target: float = 0.9) -> RecallBound:
    """The recall of a review that checked the top ``reviewed`` samples of the ranking and
    found ``found`` wrong labels there, with the wrong labels below it estimated from the
    verified sample of the rest (``population`` / ``sampled`` / ``hits``: per stratum, the
    units below the reviewed depth, the verified ones among them and how many were wrong).

    The recall's lower bound uses the upper end of the remaining count's two-sided interval,
    so it holds with at least the interval's one-sided confidence."""
    if not 0.0 < target <= 1.0:
        raise InputError(f"target recall must be in (0, 1], got {target}")
    remaining = stratified_total(population, sampled, hits)
    denominator = found + remaining.estimate
    recall = found / denominator if denominator > 0 else 1.0
    low_denominator = found + remaining.high
    recall_low = found / low_denominator if low_denominator > 0 else 1.0
    return RecallBound(int(reviewed), int(found), remaining, float(recall), float(recall_low), float(target),
                       bool(recall_low >= target))
