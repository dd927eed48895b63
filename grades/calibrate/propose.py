"""The tau search: simulate GradES's freezing rule on recorded signals and pick the tau that meets a target.

The rule simulated is GradES's own: component c freezes at the first check step
``s >= ceil(alpha * T)`` where ``signal_c(s) < tau`` (NaN never converges). So c is
frozen by step ``floor(at * T)`` iff the minimum of its signal over the checks in
``[ceil(alpha * T), floor(at * T)]`` is below tau, and tau is placed midway in log
space between the k-th and (k+1)-th smallest of those minima,
``k = ceil(target_frozen * n_components)`` (per tower when a model has a vision
tower too).
"""

from __future__ import annotations

import math

import numpy as np

from ..config import GradESConfig, closest
from .errors import CalibrationError
from .signals import SignalMatrix

TABLE_TARGETS = (0.25, 0.5, 0.75, 0.9, 1.0)
CAVEAT = ("Estimate: freezing some matrices changes the gradients of the others, so a real run follows the "
          "probe only up to its first freeze. Validate the proposed tau with one run.")


def check_fraction(name: str, value, allow_zero: bool = False) -> float:
    """``value`` as a float in (0, 1] ([0, 1] with ``allow_zero``), else a CalibrationError naming ``name``."""
    lo = "[0, 1]" if allow_zero else "(0, 1]"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (0 <= value <= 1 if allow_zero else 0 < value <= 1):
        raise CalibrationError(f"{name} = {value!r} is invalid: must be a fraction in {lo}")
    return float(value)


def grace_step(alpha: float, planned_steps: int) -> int:
    """First step at which GradES may freeze (the same formula as GradESConfig)."""
    return GradESConfig(tau=0.0, alpha=alpha).grace_steps(planned_steps)


def target_step(at: float, planned_steps: int) -> int:
    """The step at fraction ``at`` of the planned steps (at least 1)."""
    return max(1, math.floor(at * planned_steps + 1e-9))


def freeze_steps(values: np.ndarray, steps: np.ndarray, taus: np.ndarray, grace: int) -> np.ndarray:
    """Simulated GradES freeze step per component (inf: never), for per-component taus."""
    taus = np.broadcast_to(np.asarray(taus, dtype=float), (values.shape[0],))
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(values) & (values < taus[:, None]) & (steps[None, :] >= grace)
    first = ok.argmax(axis=1)
    return np.where(ok.any(axis=1), steps[first].astype(float), np.inf)


def window_minima(values: np.ndarray, steps: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Per component: smallest finite signal over checks in [lo, hi] (inf if none)."""
    sel = (steps >= lo) & (steps <= hi)
    w = np.where(np.isfinite(values[:, sel]), values[:, sel], np.inf)
    return w.min(axis=1) if w.shape[1] else np.full(values.shape[0], np.inf)


def _short_between(x: float, lo: float, hi: float | None) -> float:
    """The number with fewest significant digits near x with lo < t <= hi (readable tau)."""
    for digits in range(1, 18):
        t = float(f"{x:.{digits - 1}e}")
        if t > lo and (hi is None or t <= hi):
            return t
    return x


def tau_for_count(minima: np.ndarray, k: int) -> dict:
    """A tau with (at least, as close as ties allow) k of ``minima`` strictly below it."""
    m = np.sort(np.asarray(minima, dtype=float))
    n = len(m)
    finite = int(np.isfinite(m).sum())
    if finite == 0:
        raise CalibrationError("signals: no component has a finite signal in the window; nothing can freeze")
    j = min(max(1, k), finite)
    while j < finite and m[j] <= m[j - 1]:  # ties: k-th and (k+1)-th equal -> take them all
        j += 1
    lo = float(m[j - 1])
    hi = float(m[j]) if j < n and np.isfinite(m[j]) else None
    if hi is None:
        mid = 2.0 * lo if lo > 0 else (float(np.min(m[m > 0])) / 2 if (m[np.isfinite(m)] > 0).any() else 1e-30)
        if mid <= lo:
            mid = lo + 1e-30
    elif lo > 0:
        mid = math.sqrt(lo * hi)
    else:
        mid = hi / 2 if hi > 0 else (lo + hi) / 2
    tau = _short_between(mid, lo, hi)
    return {"tau": tau, "count": j, "lower": lo, "upper": hi,
            "margin": (hi / lo) if (hi is not None and lo > 0) else None}


def propose_tau(signals, *, alpha: float, planned_steps: int, target_frozen: float = 0.5, at: float = 0.7,
                tower: str | None = None, table_targets=TABLE_TARGETS) -> dict:
    """Propose tau so that ``target_frozen`` of the components are frozen at ``at`` of training.

    ``signals``: a DataFrame (or CSV path) with columns step, component, value (and
    optionally tower), as written by a GradES run that did not freeze. ``alpha`` and
    ``planned_steps`` are those of the run the tau is meant for. With both towers
    present and ``tower=None``, each tower gets its own tau (language_tau, vision_tau).
    """
    target_frozen = check_fraction("target_frozen", target_frozen)
    at = check_fraction("at", at)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha < 1:
        raise CalibrationError(f"alpha = {alpha!r} is invalid: must be in [0, 1) (the grace period as a fraction "
                               f"of planned steps)")
    if isinstance(planned_steps, bool) or not isinstance(planned_steps, (int, np.integer)) or planned_steps < 1:
        raise CalibrationError(f"planned_steps = {planned_steps!r} is invalid: must be an integer >= 1")
    planned_steps = int(planned_steps)
    grace = grace_step(alpha, planned_steps)
    at_step = target_step(at, planned_steps)
    if at < alpha or at_step < grace:
        raise CalibrationError(
            f"at = {at} (step {at_step} of {planned_steps}) is inside the grace period alpha = {alpha}: GradES "
            f"freezes nothing before step {grace}, so nothing can be frozen by then; choose at >= alpha "
            f"(at >= {grace / planned_steps:.3g})")

    sig = SignalMatrix(signals)
    if tower is not None:
        present = sorted(set(sig.towers))
        if tower not in present:
            raise CalibrationError(f"tower = {tower!r}: not in the signals{closest(tower, present)}; towers: {present}")
        sig = sig.subset(sig.towers == tower)
    if not sig.components:
        raise CalibrationError("signals: no components")
    checks = sig.steps[(sig.steps >= grace) & (sig.steps <= at_step)]
    if len(checks) == 0:
        last = int(sig.steps.max()) if len(sig.steps) else None
        raise CalibrationError(
            f"signals: no check between the end of the grace period (step {grace}) and the target point "
            f"at = {at} (step {at_step}); recorded checks end at step {last} — probe at least {at_step} steps "
            f"or use a smaller check_interval")
    if not sig.covers(at_step):
        raise CalibrationError(
            f"signals: recorded checks end at step {int(sig.steps.max())}, before the target point at = {at} "
            f"(step {at_step}); probe at least {at_step} steps")
    end_covered = sig.covers(planned_steps)

    groups = sorted(set(sig.towers), key=lambda t: (t != "language", t))
    n = len(sig.components)
    minima_at = window_minima(sig.values, sig.steps, grace, at_step)
    minima_end = window_minima(sig.values, sig.steps, grace, planned_steps)

    def solve(target: float) -> tuple[dict, np.ndarray]:
        per, taus = {}, np.zeros(n)
        for g in groups:
            mask = sig.towers == g
            k = math.ceil(target * int(mask.sum()) - 1e-9)
            per[g] = tau_for_count(minima_at[mask], k)
            taus[mask] = per[g]["tau"]
        return per, taus

    def outcome(taus: np.ndarray) -> dict:
        fs = freeze_steps(sig.values, sig.steps, taus, grace)
        first = float(fs.min())
        return {"frozen_at": float(np.mean(fs <= at_step)),
                "frozen_end": float(np.mean(fs <= planned_steps)) if end_covered else None,
                "first_freeze_step": int(first) if math.isfinite(first) else None, "_fs": fs}

    per, taus = solve(target_frozen)
    res = outcome(taus)
    fs = res.pop("_fs")
    method = {"tau": per[groups[0]]["tau"]} if len(groups) == 1 else {f"{g}_tau": per[g]["tau"] for g in groups}
    curve_steps = [int(s) for s in sig.steps if s >= grace]
    curve = [[s, float(np.mean(fs <= s))] for s in curve_steps]

    table = []
    for t in sorted({*table_targets, target_frozen}):
        p, tv = solve(t)
        o = outcome(tv)
        o.pop("_fs")
        table.append({"target": t, **({"tau": p[groups[0]]["tau"]} if len(groups) == 1 else
                                       {f"{g}_tau": p[g]["tau"] for g in groups}), **o})

    sweep = {}
    for g in groups:
        mask = sig.towers == g
        pos = np.concatenate([minima_at[mask], minima_end[mask]])
        pos = pos[np.isfinite(pos) & (pos > 0)]
        if len(pos) == 0:
            continue
        grid = np.logspace(math.log10(pos.min()) - 0.3, math.log10(pos.max()) + 0.3, 81)
        sweep[g] = {"tau": grid.tolist(),
                    "frozen_at": [float(np.mean(minima_at[mask] < t)) for t in grid],
                    "frozen_end": [float(np.mean(minima_end[mask] < t)) for t in grid] if end_covered else None}

    notes = []
    for g in groups:
        mask = sig.towers == g
        nf = int(np.isfinite(minima_at[mask]).sum())
        if nf < math.ceil(target_frozen * int(mask.sum()) - 1e-9):
            notes.append(f"{g}: only {nf} of {int(mask.sum())} components have a finite signal between steps "
                            f"{grace} and {at_step}; the target fraction cannot be reached")
        mg = per[g]["margin"]
        if mg is not None and mg < 1.01:
            notes.append(f"{g}: the components on either side of the target differ by only {100 * (mg - 1):.2g}% "
                            f"in their minimum signal; the frozen fraction will be sensitive to tau")
    return {
        "tau": per[groups[0]]["tau"] if len(groups) == 1 else None,
        "method": method,
        "target_frozen": target_frozen, "at": at, "at_step": at_step,
        "alpha": float(alpha), "planned_steps": planned_steps, "grace_step": grace,
        "n_components": n, "towers": {g: {"n_components": int((sig.towers == g).sum()), **per[g]} for g in groups},
        "frozen_at": res["frozen_at"], "frozen_end": res["frozen_end"],
        "first_freeze_step": res["first_freeze_step"],
        "freeze_step": {c: (int(s) if math.isfinite(s) else None) for c, s in zip(sig.components, fs)},
        "curve": curve, "table": table, "sweep": sweep,
        "signal_steps": [int(sig.steps.min()), int(sig.steps.max())], "check_interval": sig.interval,
        "end_covered": end_covered, "warnings": notes, "caveat": CAVEAT,
    }
