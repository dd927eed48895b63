"""grades.report.stats and grades.report.speed: the statistics of the report's claims, against known values."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from grades.report import speed as SP
from grades.report import stats as S


def flipped(n=400, flips=60, p=0.43, seed=0):
    """A baseline's 0/1 scores and a setting's that differ on ``flips`` items."""
    rng = np.random.default_rng(seed)
    b = (rng.random(n) < p).astype(float)
    a = b.copy()
    idx = rng.choice(n, flips, replace=False)
    a[idx] = 1 - a[idx]
    return a, b


# ------------------------------------------------------------------ McNemar
def test_mcnemar_exact_known_values():
    # 3 against 12 discordant items: 2 * P(X <= 3), X ~ Bin(15, 1/2) = 2 * 576 / 32768
    assert S.mcnemar_p(3, 12) == pytest.approx(2 * 576 / 2**15)
    assert S.mcnemar_p(12, 3) == pytest.approx(0.03515625)
    assert S.mcnemar_p(0, 0) == 1.0
    assert S.mcnemar_p(5, 5) == pytest.approx(1.0)
    assert S.mcnemar_p(0, 6) == pytest.approx(2 / 64)


def test_discordant_counts_are_the_mcnemar_table():
    a = np.array([1, 1, 0, 0, 1, 0])
    b = np.array([1, 0, 1, 0, 0, 1])
    assert S.discordant(S.item_differences(a, b)) == (2, 2)
    # several seeds: the sign of the seed-averaged difference
    a2 = np.array([[1, 1], [1, 0], [0, 0]])
    b2 = np.array([[0, 0], [0, 1], [1, 0]])
    assert S.item_differences(a2, b2).tolist() == [1.0, 0.0, -0.5]
    assert S.discordant(S.item_differences(a2, b2)) == (1, 1)


# ------------------------------------------------------------------ paired bootstrap
def test_paired_interval_matches_the_normal_interval_and_is_seeded():
    a, b = flipped()
    d = a - b
    mean, lo, hi = S.paired_interval(d, seed=3)
    assert mean == pytest.approx(100 * d.mean())
    half = 1.96 * 100 * d.std(ddof=1) / math.sqrt(len(d))
    assert lo < mean < hi
    assert (hi - lo) / 2 == pytest.approx(half, rel=0.1)
    assert S.paired_interval(d, seed=3) == (mean, lo, hi)  # same seed, same interval


def test_paired_interval_degenerate():
    assert S.paired_interval(np.zeros(50)) == (0.0, 0.0, 0.0)
    assert all(math.isnan(x) for x in S.paired_interval([]))


def test_pairing_is_tighter_than_unpaired_errors():
    """The point of pairing: 60 disagreements in 400 items give an interval far narrower
    than the combined standard errors of two independent accuracies."""
    a, b = flipped()
    _, lo, hi = S.paired_interval(a - b)
    unpaired = 1.96 * 100 * math.hypot(a.std() / 20, b.std() / 20)
    assert (hi - lo) / 2 < 0.6 * unpaired


# ------------------------------------------------------------------ equivalence
def test_tost_equals_the_larger_one_sided_t_test():
    a, b = flipped()
    d, m = a - b, 0.05
    p_low = sps.ttest_1samp(d, -m, alternative="greater").pvalue
    p_high = sps.ttest_1samp(d, m, alternative="less").pvalue
    assert S.tost_p(a, b, margin=5.0) == pytest.approx(max(p_low, p_high))


def test_tost_without_disagreement_is_an_exact_binomial_bound():
    x = np.ones(400)
    assert S.tost_p(x, x, 1.0) == pytest.approx(0.99**400)  # 0.018: 400 identical answers show it
    assert S.tost_p(x[:50], x[:50], 1.0) == pytest.approx(0.99**50)  # 0.61: 50 do not


def test_minimum_detectable_difference_and_items_needed():
    a, b = flipped()
    d = a - b
    sd, n = d.std(ddof=1), len(d)
    # (z_0.975 + z_0.8) sd / sqrt(n), up to the t distribution's heavier tails
    assert S.min_detectable_difference(d) == pytest.approx(100 * (1.959964 + 0.841621) * sd / math.sqrt(n), rel=0.01)
    # equivalence at +-1 point with power 0.8 when the truth is 0: (z_0.95 + z_0.9)^2 sd^2 / m^2
    assert S.items_needed(d, 1.0) == pytest.approx((1.644854 + 1.281552) ** 2 * sd**2 / 0.01**2, rel=0.01)
    assert S.min_detectable_difference(np.zeros(10)) == pytest.approx(10.0)  # one item's worth
    assert math.isnan(S.items_needed(np.zeros(10)))


def test_verdicts():
    assert S.verdict(0.01, 0.5) == S.EQUIVALENT
    assert S.verdict(0.01, 0.001) == S.EQUIVALENT  # within the margin, even if detectably different
    assert S.verdict(0.4, 0.01) == S.DIFFERENT
    assert S.verdict(0.4, 0.3) == S.UNDECIDED
    assert S.verdict(math.nan, math.nan) == S.UNDECIDED


def test_compare_paired_on_400_items_is_undecided():
    """The default profile's situation: 400 items, 60 disagreements, 1-point margin."""
    a, b = flipped()
    c = S.compare_paired(a, b)
    assert c.n == 400 and c.seeds == 1
    assert c.verdict == S.UNDECIDED
    assert c.mdd > 4 and c.items_needed > 5000
    assert c.better + c.worse == 60
    assert c.lo < c.diff < c.hi


def test_compare_paired_finds_a_real_difference_and_an_equivalence():
    b = np.r_[np.ones(200), np.zeros(800)]
    a = b.copy()
    a[200:300] = 1  # 100 more right, none less
    c = S.compare_paired(a, b)
    assert c.verdict == S.DIFFERENT and c.diff == pytest.approx(10.0) and c.mcnemar_p < 1e-20
    # 20000 items, 200 disagreements split evenly: equivalent within a point
    rng = np.random.default_rng(1)
    b = (rng.random(20000) < 0.5).astype(float)
    a = b.copy()
    a[:200] = 1 - a[:200]
    assert S.compare_paired(a, b, n_resamples=2000).verdict == S.EQUIVALENT


def test_compare_paired_with_seeds():
    a, b = flipped()
    a2, b2 = flipped(seed=5)
    c = S.compare_paired(np.c_[a, a2], np.c_[b, b2])
    assert c.seeds == 2
    assert c.diff == pytest.approx(100 * ((a - b).mean() + (a2 - b2).mean()) / 2)
    with pytest.raises(ValueError):
        S.compare_paired(np.c_[a, a2], b)


def test_seed_summary():
    assert S.seed_summary([0.4, 0.5, 0.6]) == (pytest.approx(0.5), pytest.approx(0.1), 3)
    m, sd, n = S.seed_summary([0.4])
    assert (m, n) == (0.4, 1) and math.isnan(sd)
    assert S.seed_summary([None, math.nan])[2] == 0


def test_wilson_interval_and_reproduced():
    lo, hi = S.accuracy_interval(42.75, 400)
    # Wilson's score interval, by its formula
    p, n, z = 0.4275, 400, 1.959964
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == (pytest.approx(100 * (centre - half)), pytest.approx(100 * (centre + half)))
    assert S.reproduced(45.0, lo, hi) is True
    assert S.reproduced(50.0, lo, hi) is False
    assert S.reproduced(math.nan, lo, hi) is None


# ------------------------------------------------------------------ speed
def noisy(n, level, rng, rel=0.05):
    return tuple(level * (1 + rel * rng.standard_normal(n)))


def timing(steps, first_freeze=None, validation=0.0):
    t = float(sum(steps))
    return SP.RunTiming(total_s=t + validation, train_s=t, step_times=tuple(steps), first_freeze_step=first_freeze)


def test_speedup_with_an_interval_from_the_steps():
    rng = np.random.default_rng(1)
    base = timing(noisy(80, 3.0, rng))
    fast = timing(noisy(23, 3.0, rng) + noisy(57, 2.5, rng), first_freeze=24)
    s = SP.speedup_interval([base], [fast])
    assert s.interval == "steps" and s.lo < s.speedup < s.hi
    assert s.verdict == SP.FASTER and s.lo > 1.05
    assert s.same_work_steps == 23 and s.same_work_lo <= 1 <= s.same_work_hi
    # the same work at the same speed: indistinguishable from 1
    same = timing(noisy(80, 3.0, rng))
    assert SP.speedup_interval([base], [same]).verdict == SP.SAME


def test_speedup_confounded_when_identical_steps_differ():
    """The baseline ran on a machine 15% slower: its steps before the first freeze, which
    are the same work, already differ, so the speedup cannot be credited to the method."""
    rng = np.random.default_rng(2)
    base = timing(tuple(1.15 * x for x in noisy(80, 3.0, rng)))
    fast = timing(noisy(23, 3.0, rng) + noisy(57, 2.5, rng), first_freeze=24)
    s = SP.speedup_interval([base], [fast])
    assert s.lo > 1 and s.same_work_lo > 1.05
    assert s.verdict == SP.CONFOUNDED
    # LoRA against full fine-tuning: no identical work to check
    assert SP.speedup_interval([base], [fast], same_mode=False).verdict == SP.FASTER


def test_speedup_counts_validation_and_unequal_lengths():
    rng = np.random.default_rng(3)
    base = timing(noisy(80, 3.0, rng))
    es = timing(noisy(50, 3.0, rng), validation=60.0)  # stopped at 50 steps, paid 60 s of validation
    s = SP.speedup_interval([base], [es])
    assert s.speedup == pytest.approx(base.total_s / es.total_s)
    assert s.lo < s.speedup < s.hi and s.same_work_steps == 50


def test_speedup_between_seeds_and_without_step_times():
    rng = np.random.default_rng(4)
    base = [SP.RunTiming(total_s=t, train_s=t) for t in (100.0, 104.0, 98.0)]
    runs = [SP.RunTiming(total_s=t, train_s=t) for t in (80.0, 85.0, 79.0)]
    s = SP.speedup_interval(base, runs)
    logs = np.log([b.total_s / r.total_s for b, r in zip(base, runs)])
    ci = sps.ttest_1samp(logs, 0).confidence_interval()
    assert s.interval == "seeds" and (s.lo, s.hi) == (pytest.approx(math.exp(ci.low)), pytest.approx(math.exp(ci.high)))
    assert s.verdict == SP.FASTER
    one = SP.speedup_interval(base[:1], runs[:1])
    assert one.verdict == SP.NO_INTERVAL and one.speedup == pytest.approx(1.25)
    with pytest.raises(ValueError):
        SP.speedup_interval(base, runs[:1])
    del rng


def test_run_timing_from_train_json():
    t = {"total_time_s": 12.0, "train_time_s": 10.0, "step_times_s": [1.0, 2.0], "grades": {"first_freeze_step": 2}}
    r = SP.RunTiming.from_train(t)
    assert r.step_times == (1.0, 2.0) and r.first_freeze_step == 2 and r.total_s == 12.0
    assert SP.RunTiming.from_train({"total_time_s": 1, "train_time_s": 1, "grades": None}).step_times is None


def test_blocks():
    assert SP.block_length(80) == 4 and SP.block_length(1) == 1
    assert SP.blocks([1, 2, 3, 4, 5], 2).tolist() == [3, 7, 5]
