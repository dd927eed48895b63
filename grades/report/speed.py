"""Speedups with an interval: whether a method's saving of wall time is more than the machine's noise.

A speedup is ``baseline total time / total time`` (total = training + validation, as in the
efficiency table). Two wall times taken at different moments on a shared machine can differ
by 10% for no reason of their own, so every speedup here carries a 95% interval and a
verdict, from the runs' per-step training times (train.json ``step_times_s``):

* **between steps** (fewer than three seed pairs): a block bootstrap of the two runs' step
  times (scipy's BCa over consecutive blocks of about n^(1/3) steps, so that load which
  persists over a few steps stays inside a block). When both runs took the same steps, the
  blocks are paired by position (step k of both runs trained on the same batch); otherwise
  each run is resampled on its own. A resampled training time replaces the recorded one in
  proportion, validation time is kept as recorded;
* **between runs** (three or more seed pairs, seed k with seed k): a t interval of the mean
  log speedup over the pairs (scipy), which includes whatever changed between the runs;
* **identical work** (the *same-work ratio*): the steps both runs took before the method's
  first freeze are the same computation on the same batches, so their time ratio should be
  1; when its interval excludes 1, the machine ran the two runs at different speeds, and a
  speedup measured across them is ``confounded``, whatever its interval.

Verdicts: ``faster`` / ``slower`` (the interval excludes 1), ``indistinguishable from 1``,
``confounded (identical steps differ)``, or ``no interval`` (no step times and too few seeds).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from .stats import CONFIDENCE, N_RESAMPLES

FASTER, SLOWER, SAME, CONFOUNDED, NO_INTERVAL = (
    "faster", "slower", "indistinguishable from 1", "confounded (identical steps differ)", "no interval")
MIN_SEEDS_FOR_T = 3


@dataclass(frozen=True)
class RunTiming:
    """What the speed of one run is computed from (its train.json)."""

    total_s: float  # training + validation
    train_s: float
    step_times: tuple[float, ...] | None = None  # seconds per optimizer step, training only
    first_freeze_step: int | None = None  # the method's first freeze (None: it froze nothing)

    @classmethod
    def from_train(cls, t: dict) -> RunTiming:
        steps = t.get("step_times_s")
        ok = isinstance(steps, list) and steps and all(isinstance(x, (int, float)) for x in steps)
        return cls(total_s=float(t["total_time_s"]), train_s=float(t["train_time_s"]),
                   step_times=tuple(float(x) for x in steps) if ok else None,
                   first_freeze_step=(t.get("grades") or {}).get("first_freeze_step"))


@dataclass(frozen=True)
class Speedup:
    """A speedup of runs over their baseline's, with its interval and verdict."""

    speedup: float
    lo: float
    hi: float
    pairs: int  # seed pairs
    interval: str  # "steps" (block bootstrap), "seeds" (t over seed pairs) or ""
    same_work: float  # time ratio of the identical steps before the first freeze
    same_work_lo: float
    same_work_hi: float
    same_work_steps: int
    verdict: str

    def as_dict(self, prefix: str = "") -> dict:
        return {f"{prefix}{k}": v for k, v in asdict(self).items()}


def block_length(n: int) -> int:
    """About n^(1/3) steps per block (at least 1)."""
    return max(1, round(n ** (1 / 3)))


def blocks(x: Sequence[float], length: int) -> np.ndarray:
    """Sums of consecutive blocks of ``length`` steps (the last one may be shorter)."""
    x = np.asarray(x, dtype=float)
    return np.add.reduceat(x, np.arange(0, len(x), length)) if len(x) else x


def _ratio_interval(b: np.ndarray, m: np.ndarray, stat, *, paired: bool, seed: int, confidence: float,
                    n_resamples: int) -> tuple[float, float]:
    from scipy import stats

    if len(b) < 2 or len(m) < 2:
        return math.nan, math.nan
    for method in ("BCa", "percentile"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.bootstrap((b, m), stat, paired=paired, vectorized=True, n_resamples=n_resamples,
                                  confidence_level=confidence, method=method, rng=np.random.default_rng(seed))
        lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(lo) and math.isfinite(hi):
            return lo, hi
    return math.nan, math.nan


def step_interval(base: Sequence[RunTiming], runs: Sequence[RunTiming], *, seed: int = 0,
                  confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES) -> tuple[float, float]:
    """Block bootstrap interval of sum(base totals) / sum(run totals) from the step times."""
    if any(r.step_times is None for r in [*base, *runs]):
        return math.nan, math.nan
    b_steps = np.concatenate([r.step_times for r in base])
    m_steps = np.concatenate([r.step_times for r in runs])
    paired = all(len(x.step_times) == len(y.step_times) for x, y in zip(base, runs)) and len(base) == len(runs)
    length = block_length(min(len(b_steps), len(m_steps)))
    # paired: block j of seed pair k in both runs covers the same steps (the same batches)
    bb = np.concatenate([blocks(r.step_times, length) for r in base])
    mb = np.concatenate([blocks(r.step_times, length) for r in runs])
    b_train, b_val = sum(r.train_s for r in base), sum(r.total_s - r.train_s for r in base)
    m_train, m_val = sum(r.train_s for r in runs), sum(r.total_s - r.train_s for r in runs)
    b_sum, m_sum = float(bb.sum()), float(mb.sum())
    nb, nm = len(bb), len(mb)

    def stat(x, y, axis=-1):  # resampled block sums scaled to the recorded training time (sizes kept)
        tb = b_train * (x.sum(axis=axis) * (nb / x.shape[axis])) / b_sum + b_val
        tm = m_train * (y.sum(axis=axis) * (nm / y.shape[axis])) / m_sum + m_val
        return tb / tm

    return _ratio_interval(bb, mb, stat, paired=paired, seed=seed, confidence=confidence, n_resamples=n_resamples)


def seed_interval(base: Sequence[RunTiming], runs: Sequence[RunTiming],
                  confidence: float = CONFIDENCE) -> tuple[float, float]:
    """t interval of the mean log speedup over seed pairs, exponentiated."""
    from scipy import stats

    logs = np.log([b.total_s / r.total_s for b, r in zip(base, runs)])
    if len(logs) < 2:
        return math.nan, math.nan
    if np.all(logs == logs[0]):
        return float(np.exp(logs[0])), float(np.exp(logs[0]))
    ci = stats.ttest_1samp(logs, 0.0).confidence_interval(confidence_level=confidence)
    return float(np.exp(ci.low)), float(np.exp(ci.high))


def same_work(base: Sequence[RunTiming], runs: Sequence[RunTiming], *, seed: int = 0,
              confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES) -> tuple[float, float, float, int]:
    """(ratio, low, high, steps): baseline / method time of the steps both runs took before the
    method's first freeze, blocks paired by position. NaN without step times or such steps."""
    bs, ms = [], []
    for b, r in zip(base, runs):
        if b.step_times is None or r.step_times is None:
            return math.nan, math.nan, math.nan, 0
        k = min(len(b.step_times), len(r.step_times))
        if r.first_freeze_step is not None:
            k = min(k, int(r.first_freeze_step) - 1)
        bs.append(b.step_times[:max(k, 0)])
        ms.append(r.step_times[:max(k, 0)])
    n = sum(len(x) for x in bs)
    if n == 0:
        return math.nan, math.nan, math.nan, 0
    length = block_length(n)
    bb = np.concatenate([blocks(x, length) for x in bs])
    mb = np.concatenate([blocks(x, length) for x in ms])
    ratio = float(bb.sum() / mb.sum())
    lo, hi = _ratio_interval(bb, mb, lambda x, y, axis=-1: x.sum(axis=axis) / y.sum(axis=axis), paired=True,
                             seed=seed, confidence=confidence, n_resamples=n_resamples)
    return ratio, lo, hi, n


def speed_verdict(lo: float, hi: float, sw_lo: float = math.nan, sw_hi: float = math.nan) -> str:
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return NO_INTERVAL
    if math.isfinite(sw_lo) and math.isfinite(sw_hi) and not sw_lo <= 1 <= sw_hi and not lo <= 1 <= hi:
        return CONFOUNDED
    if lo > 1:
        return FASTER
    if hi < 1:
        return SLOWER
    return SAME


def speedup_interval(base: Sequence[RunTiming], runs: Sequence[RunTiming], *, same_mode: bool = True,
                     seed: int = 0, confidence: float = CONFIDENCE, n_resamples: int = N_RESAMPLES) -> Speedup:
    """The speedup of ``runs`` over ``base`` (seed pairs: element k with element k).

    ``same_mode``: the two settings train the same parameters, so their steps before the
    method's first freeze are identical work (not so for LoRA against full fine-tuning)."""
    if len(base) != len(runs) or not base:
        raise ValueError(f"speedup_interval needs seed pairs, got {len(base)} and {len(runs)} runs")
    speedup = sum(b.total_s for b in base) / sum(r.total_s for r in runs)
    if len(base) >= MIN_SEEDS_FOR_T:
        (lo, hi), how = seed_interval(base, runs, confidence), "seeds"
    else:
        (lo, hi), how = step_interval(base, runs, seed=seed, confidence=confidence, n_resamples=n_resamples), "steps"
    if not math.isfinite(lo):
        how = ""
    sw = same_work(base, runs, seed=seed, confidence=confidence, n_resamples=n_resamples) if same_mode else (
        math.nan, math.nan, math.nan, 0)
    return Speedup(speedup=speedup, lo=lo, hi=hi, pairs=len(base), interval=how, same_work=sw[0],
                   same_work_lo=sw[1], same_work_hi=sw[2], same_work_steps=sw[3],
                   verdict=speed_verdict(lo, hi, sw[1], sw[2]))
