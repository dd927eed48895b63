"""Statistics of accuracy claims: paired differences, McNemar, equivalence, power, seeds and paper intervals.

Pure functions over per-item scores (1/0 correctness, or any per-item metric in [0, 1]),
built on scipy and statsmodels; no file is read here. The reference for the approach is
Miller, "Adding Error Bars to Evals" (arXiv 2411.00640): when two settings answer the same
items, compare them item by item, which removes the items' own difficulty from the error.

Scores are arrays of shape (items, seeds): column k of a setting is paired with column k of
its baseline (the same training seed), row i of both is the same test item. A per-item
difference ``d_i`` is the mean over the paired seeds of ``a_ik - b_ik``; everything below
is a statistic of ``d``:

* :func:`paired_interval` - the mean difference with a 95% interval from a seeded paired
  bootstrap over items (scipy; percentile interval);
* :func:`mcnemar_p` - the exact McNemar test (statsmodels) on the items where the two
  settings disagree: ``better`` items (d > 0) against ``worse`` ones (d < 0); with one
  seed this is McNemar's test itself, with several the exact sign test of the seed-averaged
  differences;
* :func:`tost_p` - the two one-sided tests of equivalence within +-``margin`` points
  (statsmodels' paired TOST; when every item agrees, the exact binomial bound of the
  share of disagreeing items, so that a handful of identical answers proves nothing);
* :func:`min_detectable_difference` - the smallest true difference that the paired test
  finds with 80% power at the 5% level on these items (statsmodels' t-test power);
  :func:`items_needed` - how many items the equivalence test would need;
* :func:`verdict` - ``equivalent`` (TOST p < 0.05: the difference lies within the
  margin), else ``different`` (McNemar p < 0.05), else ``undecided (too few items)``;
* :func:`seed_summary` - mean and standard deviation over seeds;
* :func:`accuracy_interval` / :func:`reproduced` - the 95% Wilson interval of an accuracy
  on n items, and whether a published value lies inside it.

Differences and intervals are in percentage points.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass

import numpy as np

ALPHA = 0.05
CONFIDENCE = 0.95
POWER = 0.8
N_RESAMPLES = 10_000
BOOTSTRAP_CELLS = 4_000_000  # resampled values held at once (32 MB)
DEFAULT_MARGIN = 1.0  # points: "keeps accuracy" means within one point of the baseline
EQUIVALENT, DIFFERENT, UNDECIDED = "equivalent", "different", "undecided (too few items)"
VERDICTS = (EQUIVALENT, DIFFERENT, UNDECIDED)


@dataclass(frozen=True)
class PairedComparison:
    """A setting against its baseline on the same items (accuracies and differences in points)."""

    n: int  # items paired
    seeds: int  # seeds paired (column k with column k)
    acc: float  # the setting's accuracy on the paired items, mean over seeds
    baseline_acc: float
    diff: float  # acc - baseline_acc
    lo: float  # the 95% paired bootstrap interval of diff
    hi: float
    better: int  # items the setting gets right more often than the baseline (d > 0)
    worse: int  # ... less often (d < 0)
    mcnemar_p: float
    margin: float  # the equivalence margin, points
    tost_p: float
    mdd: float  # minimum detectable difference (80% power, 5% level), points
    items_needed: float  # items for the equivalence test to succeed with 80% power if the truth is 0
    verdict: str

    def as_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def as_matrix(scores) -> np.ndarray:
    """(items, seeds) float array from a vector (one seed) or a matrix."""
    x = np.asarray(scores, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"scores must be (items,) or (items, seeds), got shape {x.shape}")
    return x


def item_differences(a, b) -> np.ndarray:
    """Per-item difference of two settings, averaged over the paired seeds (columns)."""
    a, b = as_matrix(a), as_matrix(b)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need the same shape, got {a.shape} and {b.shape}")
    return (a - b).mean(axis=1)


def paired_interval(d, *, seed: int = 0, confidence: float = CONFIDENCE,
                    n_resamples: int = N_RESAMPLES) -> tuple[float, float, float]:
    """(mean, low, high) of per-item differences ``d`` (fractions), in points: the percentile
    interval of a paired bootstrap over items (resampling an item resamples both settings'
    answers to it). Resamples are drawn in batches, so a 10,000-item benchmark stays small in memory."""
    from scipy import stats

    d = np.asarray(d, dtype=float)
    if len(d) == 0:
        return math.nan, math.nan, math.nan
    mean = float(d.mean())
    if len(d) < 2 or np.all(d == d[0]):
        return 100 * mean, 100 * mean, 100 * mean
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy's DegenerateDataWarning on near-constant data
        res = stats.bootstrap((d,), np.mean, n_resamples=n_resamples, confidence_level=confidence,
                              method="percentile", rng=np.random.default_rng(seed), vectorized=True,
                              batch=max(1, BOOTSTRAP_CELLS // len(d)))
    ci = res.confidence_interval
    return 100 * mean, 100 * float(ci.low), 100 * float(ci.high)


def discordant(d) -> tuple[int, int]:
    """(better, worse): items where the setting scores above / below its baseline."""
    d = np.asarray(d, dtype=float)
    return int((d > 0).sum()), int((d < 0).sum())


def mcnemar_p(better: int, worse: int) -> float:
    """Exact McNemar test on the discordant items (the concordant ones do not enter it)."""
    from statsmodels.stats.contingency_tables import mcnemar

    if better + worse == 0:
        return 1.0
    return float(mcnemar([[0, better], [worse, 0]], exact=True).pvalue)


def tost_p(a, b, margin: float = DEFAULT_MARGIN) -> float:
    """p-value of equivalence within +-``margin`` points: the larger of the two one-sided
    paired t-tests (statsmodels ``ttost_paired``) on the seed-averaged per-item scores.

    When no item differs, the t-tests have no variance to work with; the difference is then
    bounded by the share of items that disagree, and the p-value is the exact binomial
    probability of seeing no disagreement among n items if that share were the margin."""
    from statsmodels.stats.weightstats import ttost_paired

    x, y = as_matrix(a).mean(axis=1), as_matrix(b).mean(axis=1)
    n, m = len(x), margin / 100
    if n == 0:
        return math.nan
    d = x - y
    if np.all(d == d[0]):
        if d[0] != 0:
            return 0.0 if abs(d[0]) < m else 1.0
        return float((1 - m) ** n) if m < 1 else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = ttost_paired(x, y, -m, m)[0]
    return float(p)


def _sd(d) -> float:
    d = np.asarray(d, dtype=float)
    return float(d.std(ddof=1)) if len(d) > 1 else math.nan


def min_detectable_difference(d, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """Smallest true difference (points) that a two-sided paired test at level ``alpha`` detects
    with probability ``power`` on these items, given the spread of their differences
    (statsmodels' t-test power). Never below one item's worth (100 / n)."""
    from statsmodels.stats.power import TTestPower

    d = np.asarray(d, dtype=float)
    n = len(d)
    if n < 2:
        return math.nan
    floor = 100 / n
    sd = _sd(d)
    if not sd > 0:
        return floor
    effect = TTestPower().solve_power(nobs=n, alpha=alpha, power=power, alternative="two-sided")
    return max(floor, 100 * float(effect) * sd)


def items_needed(d, margin: float = DEFAULT_MARGIN, *, alpha: float = ALPHA, power: float = POWER) -> float:
    """Items the equivalence test needs to succeed with probability ``power`` if the true
    difference were 0, at the spread of these differences (each one-sided test then needs
    power 1 - (1 - power) / 2). NaN when the differences have no spread."""
    from statsmodels.stats.power import TTestPower

    sd = _sd(d)
    if not sd > 0 or not margin > 0:
        return math.nan
    n = TTestPower().solve_power(effect_size=(margin / 100) / sd, alpha=alpha, power=1 - (1 - power) / 2,
                                 alternative="larger")
    return float(math.ceil(n))


def verdict(tost: float, mcnemar: float, alpha: float = ALPHA) -> str:
    """``equivalent`` when the equivalence test succeeds, else ``different`` when McNemar's
    does, else ``undecided (too few items)``."""
    if math.isfinite(tost) and tost < alpha:
        return EQUIVALENT
    if math.isfinite(mcnemar) and mcnemar < alpha:
        return DIFFERENT
    return UNDECIDED


def compare_paired(a, b, *, margin: float = DEFAULT_MARGIN, seed: int = 0, confidence: float = CONFIDENCE,
                   n_resamples: int = N_RESAMPLES) -> PairedComparison:
    """Setting scores ``a`` against baseline scores ``b`` (same items in the same order, seeds
    as paired columns): every statistic of this module."""
    a, b = as_matrix(a), as_matrix(b)
    d = item_differences(a, b)
    diff, lo, hi = paired_interval(d, seed=seed, confidence=confidence, n_resamples=n_resamples)
    better, worse = discordant(d)
    mc = mcnemar_p(better, worse)
    tp = tost_p(a, b, margin)
    return PairedComparison(
        n=len(d), seeds=a.shape[1], acc=100 * float(a.mean()) if a.size else math.nan,
        baseline_acc=100 * float(b.mean()) if b.size else math.nan, diff=diff, lo=lo, hi=hi, better=better,
        worse=worse, mcnemar_p=mc, margin=margin, tost_p=tp, mdd=min_detectable_difference(d),
        items_needed=items_needed(d, margin), verdict=verdict(tp, mc) if len(d) else "no paired items")


# ------------------------------------------------------------------ seeds
def seed_summary(values) -> tuple[float, float, int]:
    """(mean, standard deviation with ddof 1, count) over seeds; the deviation is NaN for one seed."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else math.nan, len(v)


# ------------------------------------------------------------------ the paper's cells
def accuracy_interval(acc: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The Wilson interval (points) of an accuracy ``acc`` (points) measured on ``n`` items."""
    from statsmodels.stats.proportion import proportion_confint

    if not n or not math.isfinite(acc):
        return math.nan, math.nan
    lo, hi = proportion_confint(acc / 100 * n, n, alpha=1 - confidence, method="wilson")
    return 100 * float(lo), 100 * float(hi)


def reproduced(paper: float, lo: float, hi: float) -> bool | None:
    """Whether a published value lies inside our interval; None when either is missing."""
    if not (math.isfinite(paper) and math.isfinite(lo) and math.isfinite(hi)):
        return None
    return bool(lo <= paper <= hi)
