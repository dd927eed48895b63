"""Propose a GradES threshold tau for a model: ``python -m grades.calibrate``.

tau does not transfer across models, sizes, learning rates or signal kinds, so this
command runs a short *probe* — the user's run config, with GradES recording its
signal but never freezing (tau = 0: an L1 norm is never < 0) — and reads off the tau
that would leave a target fraction of the weight matrices frozen at a target point
of training::

    python -m grades.calibrate --config RUN.yaml --out DIR [--target-frozen 0.5] [--at 0.7]
    python -m grades.calibrate --workflow-config config/smoke.yaml --model tiny-qwen3 \\
        --setting FP+GradES --out DIR
    python -m grades.calibrate --from-signals RUN_DIR/signals.csv --out DIR \\
        [--alpha 0.3 --planned-steps 200]

The rule simulated is GradES's own: component c freezes at the first check step
``s >= ceil(alpha * T)`` where ``signal_c(s) < tau`` (NaN never converges). So c is
frozen by step ``floor(at * T)`` iff the minimum of its signal over the checks in
``[ceil(alpha * T), floor(at * T)]`` is below tau, and tau is placed midway in log
space between the k-th and (k+1)-th smallest of those minima,
``k = ceil(target_frozen * n_components)`` (per tower when a model has a vision
tower too).

Caveat: freezing some matrices changes the gradients of the others, so the real run
will not follow the probe exactly once the first matrix is frozen (it does up to
then: same seed, same batches). The proposal is an estimate; validate it with one
run using the proposed tau.

The probe runs by default only up to the target point ``at`` (that is all the
proposal needs), with the schedule and grace period of the full planned length;
``--steps N`` runs N steps instead (N = the planned steps also fills the
"frozen at end" column).

DIR receives ``calibration.json`` (proposal, inputs, table, predicted curve),
``calibration.png``, ``calibration.txt`` (the printed summary, with a YAML snippet for
the workflow config) and, for a probe, the probe's run directory ``probe/``
(signals.csv, train.json, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import sys
import warnings
from pathlib import Path

import numpy as np
import yaml

from .config import ConfigError, GradESConfig, closest
from .io import atomic_path, atomic_write_json, atomic_write_text
from .methods import register
from .overrides import apply_overrides
from .methods.base import Decision
from .methods.grades import GradES

REQUIRED_COLUMNS = ("step", "component", "value")
TABLE_TARGETS = (0.25, 0.5, 0.75, 0.9, 1.0)
PROBE_METHOD = "grades-probe"
CAVEAT = ("Estimate: freezing some matrices changes the gradients of the others, so a real run follows the "
          "probe only up to its first freeze. Validate the proposed tau with one run.")


class CalibrationError(ConfigError):
    """Bad calibration input; the message names the field or file."""


# =========================================================================== probe
class ProbeGradES(GradES):
    """GradES that records its signal, never freezes (tau = 0) and stops after ``probe_steps``.

    The grace period and the schedule still refer to the planned steps, so the probe's
    signals are those of the first ``probe_steps`` steps of the real run."""

    name = PROBE_METHOD

    def __init__(self, probe_steps: int | None = None, **params) -> None:
        if probe_steps is not None and (isinstance(probe_steps, bool) or not isinstance(probe_steps, int)
                                        or probe_steps < 1):
            raise ConfigError(f"method '{self.name}': probe_steps = {probe_steps!r} must be an integer >= 1")
        params = {**params, "tau": 0.0, "language_tau": None, "vision_tau": None, "record_signals": True}
        super().__init__(**params)
        self.probe_steps = probe_steps

    @classmethod
    def config_fields(cls) -> list[str]:
        return [*super().config_fields(), "probe_steps"]

    def after_optimizer_step(self, step: int, loss: float | None = None) -> Decision | None:
        decision = super().after_optimizer_step(step, loss)
        if self.probe_steps is not None and step >= self.probe_steps:
            decision = decision or Decision()
            decision.stop = True
            decision.reason = f"calibration probe: ran {step} of {self.ctx.planned_steps} planned steps"
        return decision

    def summary(self) -> dict:
        return {**super().summary(), "probe_steps": self.probe_steps}


register(PROBE_METHOD, ProbeGradES)


# ======================================================================= proposal
def _check_fraction(name: str, value, allow_zero: bool = False) -> float:
    lo = "[0, 1]" if allow_zero else "(0, 1]"
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not (0 <= value <= 1 if allow_zero else 0 < value <= 1):
        raise CalibrationError(f"{name} = {value!r} is invalid: must be a fraction in {lo}")
    return float(value)


def grace_step(alpha: float, planned_steps: int) -> int:
    """First step at which GradES may freeze (the same formula as GradESConfig)."""
    return GradESConfig(tau=0.0, alpha=alpha).grace_steps(planned_steps)


def target_step(at: float, planned_steps: int) -> int:
    return max(1, math.floor(at * planned_steps + 1e-9))


class _Signals:
    """signals.csv as a matrix: components x check steps (NaN where not measured)."""

    def __init__(self, signals) -> None:
        import pandas as pd

        if isinstance(signals, (str, Path)):
            p = Path(signals)
            if not p.exists():
                raise CalibrationError(f"signals file not found: {p}")
            signals = pd.read_csv(p)
        if not isinstance(signals, pd.DataFrame):
            raise CalibrationError(f"signals: expected a pandas DataFrame or a CSV path, got {type(signals).__name__}")
        missing = [c for c in REQUIRED_COLUMNS if c not in signals.columns]
        if missing:
            raise CalibrationError(f"signals: missing column(s) {missing}; have {list(signals.columns)} "
                                   f"(expected the signals.csv of a GradES run: step, component, ..., value)")
        df = signals.loc[signals["step"].notna() & signals["component"].notna()].copy()
        if df.empty:
            raise CalibrationError("signals: no components (the table has no rows; the run recorded no signals — "
                                   "was its method grades?)")
        df["step"] = df["step"].astype(int)
        df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
        if "tower" not in df.columns:
            df["tower"] = "language"
        df["tower"] = df["tower"].fillna("language").astype(str)
        self.components: list[str] = list(dict.fromkeys(df["component"].astype(str)))
        firsts = df.drop_duplicates("component")
        self.towers = np.array([str(t) for t in firsts.set_index("component").loc[self.components, "tower"]])
        wide = df.pivot_table(index="component", columns="step", values="value", aggfunc="last", dropna=False)
        wide = wide.reindex(index=self.components)
        self.steps = np.array(wide.columns, dtype=int)
        self.values = wide.to_numpy(dtype=float)  # NaN where missing
        diffs = np.diff(self.steps)
        self.interval = int(diffs.min()) if len(diffs) else 1

    def subset(self, mask: np.ndarray) -> "_Signals":
        out = copy.copy(self)
        out.components = [c for c, m in zip(self.components, mask) if m]
        out.towers = self.towers[mask]
        out.values = self.values[mask]
        return out

    def covers(self, step: int) -> bool:
        """Whether the recorded checks reach ``step`` (the last check is within one interval)."""
        return len(self.steps) > 0 and int(self.steps.max()) + self.interval > step


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
    target_frozen = _check_fraction("target_frozen", target_frozen)
    at = _check_fraction("at", at)
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

    sig = _Signals(signals)
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


# =========================================================================== plot
def plot(signals, result: dict, path: str | Path) -> Path:
    """Left: signals vs step with tau, grace and target point; right: frozen fraction vs tau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    sig = _Signals(signals)
    towers = list(result["towers"])
    colors = {"language": "tab:blue", "vision": "tab:green"}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    with np.errstate(invalid="ignore"):
        vals = np.where(np.isfinite(sig.values) & (sig.values > 0), sig.values, np.nan)
    for g in towers:
        mask = sig.towers == g
        col = colors.get(g, "tab:purple")
        for row in vals[mask]:
            ax.plot(sig.steps, row, color=col, lw=0.5, alpha=0.25)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            med = np.nanmedian(vals[mask], axis=0)
        ax.plot(sig.steps, med, color=col, lw=1.8, label=f"median ({g})" if len(towers) > 1 else "median")
        ax.axhline(result["towers"][g]["tau"], color="red", ls=":", lw=1.6,
                   label=f"tau = {result['towers'][g]['tau']:.4g}" + (f" ({g})" if len(towers) > 1 else ""))
    ax.axvline(result["grace_step"], color="grey", ls="--", lw=1, label=f"grace end (step {result['grace_step']})")
    ax.axvline(result["at_step"], color="black", ls="-.", lw=1, label=f"at = {result['at']:g} (step {result['at_step']})")
    if np.isfinite(vals).any():
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("signal per component")
    ax.set_title(f"signals of {result['n_components']} components")
    ax.legend(fontsize=7, loc="best")

    for g in towers:
        sw = result["sweep"].get(g)
        if not sw:
            continue
        col = colors.get(g, "tab:purple")
        suffix = f" ({g})" if len(towers) > 1 else ""
        bx.step(sw["tau"], sw["frozen_at"], where="post", color=col, label=f"frozen at step {result['at_step']}{suffix}")
        if sw["frozen_end"] is not None:
            bx.step(sw["tau"], sw["frozen_end"], where="post", color=col, ls="--", alpha=0.6,
                    label=f"frozen at end{suffix}")
        bx.axvline(result["towers"][g]["tau"], color="red", ls=":", lw=1.6)
    if len(towers) == 1:
        bx.plot([result["tau"]], [result["frozen_at"]], "o", color="red", ms=5,
                label=f"proposed: {result['frozen_at']:.0%} frozen")
    bx.axhline(result["target_frozen"], color="black", lw=0.8, ls="-.", label=f"target {result['target_frozen']:g}")
    bx.set_xscale("log")
    bx.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    bx.set_ylim(-0.03, 1.03)
    bx.set_xlabel("tau")
    bx.set_ylabel("predicted frozen fraction")
    bx.set_title("predicted frozen fraction vs tau")
    bx.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path


# ======================================================================== configs
def grades_params(cfg: dict) -> tuple[dict, str | None]:
    """GradES parameters of a run config's method (defaults if it is not GradES), and a note.

    GradES variants (``grades-v1``, ``grades-weight``, ...) keep their default signal;
    ``grades-official`` (the released package) is probed with the equivalent
    ``weight_delta_l1`` signal."""
    from .methods import get_method_class

    m = cfg.get("method", "none")
    m = {"name": m} if isinstance(m, str) else dict(m)
    name = m.pop("name", "none")
    m.pop("probe_steps", None)
    if name == PROBE_METHOD:
        return m, None
    try:
        cls = get_method_class(name)
    except ConfigError:
        cls = None
    if isinstance(cls, type) and issubclass(cls, GradES):
        default_signal = getattr(cls, "default_signal", None)
        if default_signal and "signal" not in m:
            m["signal"] = default_signal
        return m, None
    if name == "grades-official":
        p = {"signal": "weight_delta_l1", "alpha": m.get("alpha", 0.3), "check_interval": m.get("compute_interval", 1)}
        return p, ("the run's method is grades-official (the released package): probed with our equivalent "
                   "weight_delta_l1 signal; the released code's grace period is floor(alpha * T), not ceil, and its "
                   "first measurement of a matrix is 0.0")
    return {}, f"the run's method is '{name}'; the probe uses GradES with default parameters"


def probe_config(cfg: dict, probe_steps: int) -> dict:
    """The run config of the probe: same run, method GradES that never freezes, stopped early."""
    from .train import load_run_config

    params, _ = grades_params(cfg)
    params = {k: v for k, v in params.items() if k not in ("tau", "language_tau", "vision_tau", "max_frozen_ratio")}
    rc = copy.deepcopy(cfg)
    rc["method"] = {"name": PROBE_METHOD, **params, "probe_steps": int(probe_steps)}
    rc["save_model"] = False
    rc["checkpoint_every"] = None
    rc["name"] = f"{cfg.get('name', 'run')} (calibration probe)"
    return load_run_config(rc)


def workflow_run_config(path: str | Path, model: str | None, setting: str | None,
                        cache: str | Path | None = None) -> tuple[dict, str, str]:
    """(run config, model, setting) for one (model, setting) of a workflow config, first seed."""
    from . import workflow as gw

    p = Path(path)
    if not p.exists():
        raise CalibrationError(f"--workflow-config: file not found: {p}")
    W = gw.load(yaml.safe_load(p.read_text()) or {})
    models = list(W["models"])
    if model is None:
        if len(models) != 1:
            raise CalibrationError(f"--model: the workflow config has several models; choose one of {models}")
        model = models[0]
    if model not in W["models"]:
        raise CalibrationError(f"--model = '{model}' is not a model of {p}{closest(model, models)}; known: {models}")
    allowed = [r.setting for r in gw.runs(W) + gw.compare_runs(W) if r.model == model]
    allowed = list(dict.fromkeys(allowed))
    if setting is None:
        def is_grades(s):
            meth = W["settings"][s]["method"]
            return (meth if isinstance(meth, str) else meth.get("name")) == "grades"

        cands = [s for s in allowed if is_grades(s)]
        if not cands:
            raise CalibrationError(f"--setting: model '{model}' runs no GradES setting; choose one of {allowed}")
        setting = cands[0]
    if setting not in allowed:
        raise CalibrationError(f"--setting = '{setting}' is not a setting model '{model}' runs"
                               f"{closest(setting, allowed)}; known: {allowed}")
    root = Path(cache) if cache is not None else Path("cache") / W["profile"]
    model_dir = root / "models" / model
    data_dir = root / "data" / W["models"][model]["dataset"]
    for what, d, probe in (("model", model_dir, "config.json"), ("dataset", data_dir, "train.jsonl")):
        if not (d / probe).exists():
            raise CalibrationError(
                f"prepared {what} not found: {d} (no {probe}); prepare it first, e.g.\n"
                f"  snakemake --cores all --configfile {path} {d}")
    rc = gw.run_config(W, gw.PlannedRun(model, setting, W["seeds"][0]), str(model_dir), str(data_dir))
    return rc, model, setting


def _from_run_dir(signals_path: Path) -> dict:
    """alpha, planned steps and notes from the train.json / freeze_events.csv next to a signals.csv."""
    info: dict = {}
    d = signals_path.parent
    tj = next((d / n for n in ("train.json", "train_failed.json") if (d / n).exists()), None)
    if tj is not None:
        rec = json.loads(tj.read_text())
        info["planned_steps"] = rec.get("steps_planned")
        info["steps_run"] = rec.get("steps_run")
        cfg = rec.get("config") or {}
        params, method_note = grades_params(cfg)
        if method_note:
            info["method_note"] = method_note
        with_defaults = {f: v for f, v in params.items() if f in GradESConfig.__dataclass_fields__}
        gc = GradESConfig(**{**with_defaults, "tau": 0.0, "language_tau": None, "vision_tau": None})
        info["alpha"] = gc.alpha
        info["grades"] = {"signal": gc.signal, "normalize": gc.normalize, "check_interval": gc.check_interval,
                          "alpha": gc.alpha}
        info["setting"] = cfg.get("name")
        parts = d.resolve().parts  # results/runs/<profile>/<model>/<setting slug>/seed<k>
        if len(parts) >= 5 and parts[-1].startswith("seed") and parts[-5] == "runs":
            info["model"] = parts[-3]
    ev = d / "freeze_events.csv"
    if ev.exists():
        n = max(0, len([ln for ln in ev.read_text().splitlines() if ln.strip()]) - 1)
        if n:
            info["note"] = (f"{ev} records {n} freeze(s): frozen components stop being measured and the others' "
                            f"trajectories changed; calibrate from a probe (or a run without freezing) for a "
                            f"cleaner estimate")
    return info


# ====================================================================== reporting
def _fmt_frac(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def snippet(result: dict, model: str | None, setting: str | None, extra: dict | None = None) -> str:
    meth = {**result["method"], **(extra or {})}
    doc = {"models": {model or "<model>": {"settings": {setting or "<GradES setting>": {"method": meth}}}}}
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def summary_text(result: dict, inputs: dict, snip: str) -> str:
    r = result
    taus = ", ".join(f"{k} = {v:.4g}" for k, v in r["method"].items())
    lines = [
        f"proposed {taus}   (signal {inputs.get('signal', '?')}, alpha {r['alpha']:g}, "
        f"{r['planned_steps']} planned steps, grace ends at step {r['grace_step']})",
        f"predicted: {r['frozen_at']:.0%} of {r['n_components']} components frozen by step {r['at_step']} "
        f"(at = {r['at']:g}; target {r['target_frozen']:.0%}); first freeze at step {r['first_freeze_step']}"
        + (f"; {r['frozen_end']:.0%} frozen at the end" if r["frozen_end"] is not None else ""),
        "",
        f"  {'target':>6}  {'tau':>24}  {'frozen@' + str(r['at_step']):>10}  {'frozen@end':>10}  first freeze",
    ]
    for row in r["table"]:
        tv = ", ".join(f"{row[k]:.4g}" for k in row if k.endswith("tau"))
        lines.append(f"  {row['target']:>6.0%}  {tv:>24}  {_fmt_frac(row['frozen_at']):>10}  "
                     f"{_fmt_frac(row['frozen_end']):>10}  {row['first_freeze_step']}")
    lines += [""] + [f"warning: {w}" for w in r["warnings"]]
    lines += ["paste into the workflow config:", *("  " + ln for ln in snip.rstrip().splitlines()), "", CAVEAT]
    return "\n".join(lines)


def calibrate(signals, out: str | Path, *, alpha: float, planned_steps: int, target_frozen: float, at: float,
              inputs: dict, model: str | None = None, setting: str | None = None,
              snippet_extra: dict | None = None) -> dict:
    """propose_tau + calibration.json + calibration.png; returns the JSON document."""
    result = propose_tau(signals, alpha=alpha, planned_steps=planned_steps, target_frozen=target_frozen, at=at)
    out = Path(out)
    snip = snippet(result, model, setting, snippet_extra)
    if inputs.get("note"):
        result["warnings"].append(inputs["note"])
    doc = {"proposal": {k: result[k] for k in ("tau", "method", "target_frozen", "at", "at_step", "frozen_at",
                                               "frozen_end", "first_freeze_step")},
           "inputs": inputs, "snippet": snip, **result}
    png = plot(signals, result, out / "calibration.png")
    doc["figure"] = png.name
    atomic_write_json(out / "calibration.json", doc)
    atomic_write_text(out / "calibration.txt", summary_text(result, inputs, snip) + "\n")
    return doc


# ============================================================================ CLI
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grades.calibrate", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:3]))
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="run config YAML: probe this run")
    src.add_argument("--workflow-config", help="workflow config YAML: probe one (model, setting) of it")
    src.add_argument("--from-signals", help="signals.csv of an existing run: no training")
    ap.add_argument("--out", required=True, help="directory for calibration.json / .png (and probe/)")
    ap.add_argument("--target-frozen", type=float, default=0.5, help="fraction of components frozen at --at (0.5)")
    ap.add_argument("--at", type=float, default=0.7, help="point of training, fraction of planned steps (0.7)")
    ap.add_argument("--steps", type=int, default=None,
                    help="steps the probe runs (default: up to --at). Planned steps, schedule and grace stay "
                         "those of the config; change the planned length with --set steps=N")
    ap.add_argument("--alpha", type=float, default=None, help="grace fraction (default: the method's alpha)")
    ap.add_argument("--planned-steps", type=int, default=None, help="with --from-signals: the run's planned steps")
    ap.add_argument("--model", help="with --workflow-config: model key (default: the only one)")
    ap.add_argument("--setting", help="with --workflow-config: setting name (default: the first GradES setting)")
    ap.add_argument("--cache", help="with --workflow-config: prepared cache dir (default cache/<profile>)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a run-config field, e.g. --set optim.lr=1e-4 --set method.signal=grad_l1")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.out)
    model = setting = None
    snippet_extra = {"alpha": args.alpha} if args.alpha is not None else None
    try:
        target = _check_fraction("--target-frozen (target_frozen)", args.target_frozen)
        at = _check_fraction("--at (at)", args.at)
        if args.steps is not None and args.steps < 1:
            raise CalibrationError(f"--steps = {args.steps} is invalid: must be >= 1")
        if args.from_signals:
            sp = Path(args.from_signals)
            if sp.is_dir():
                sp = sp / "signals.csv"
            if not sp.exists():
                raise CalibrationError(f"--from-signals: file not found: {sp}")
            info = _from_run_dir(sp)
            alpha = args.alpha if args.alpha is not None else info.get("alpha")
            planned = args.planned_steps if args.planned_steps is not None else info.get("planned_steps")
            if alpha is None:
                raise CalibrationError(f"--alpha is required: no train.json next to {sp} to read it from")
            if planned is None:
                raise CalibrationError(f"--planned-steps is required: no train.json next to {sp} to read it from")
            inputs = {"source": "signals", "signals": str(sp), **info.get("grades", {}), "alpha": alpha,
                      "planned_steps": planned, "steps_run": info.get("steps_run"),
                      "note": "; ".join(n for n in (info.get("method_note"), info.get("note")) if n) or None}
            doc = calibrate(sp, out, alpha=alpha, planned_steps=planned, target_frozen=target, at=at,
                            inputs=inputs, model=info.get("model"), setting=info.get("setting"),
                            snippet_extra=snippet_extra)
            print(summary_text(doc, inputs, doc["snippet"]))
            print(f"\nwrote {out / 'calibration.json'} and {out / 'calibration.png'}")
            return 0

        from .train import load_run_config

        if args.config:
            p = Path(args.config)
            raw = yaml.safe_load(p.read_text()) if p.exists() else None
            if raw is None:
                raise CalibrationError(f"--config: run config file not found or empty: {p}")
        else:
            raw, model, setting = workflow_run_config(args.workflow_config, args.model, args.setting, args.cache)
        cfg = load_run_config(apply_overrides(raw, args.set))
        params, note = grades_params(cfg)
        gc = GradESConfig(**{**params, "tau": 0.0, "language_tau": None, "vision_tau": None})
        alpha = args.alpha if args.alpha is not None else gc.alpha
        planned = cfg["steps"]
        # validate the fractions against the grace period before spending time on a probe
        if at < alpha or target_step(at, planned) < grace_step(alpha, planned):
            raise CalibrationError(
                f"at = {at} (step {target_step(at, planned)} of {planned}) is inside the grace period alpha = "
                f"{alpha}: GradES freezes nothing before step {grace_step(alpha, planned)}; choose at >= alpha")
        probe_steps = min(planned, args.steps if args.steps is not None else target_step(at, planned))
        pcfg = probe_config(cfg, probe_steps)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from .train import run

    probe_dir = out / "probe"
    print(f"[calibrate] probe: {probe_steps} of {planned} planned steps, signal {gc.signal}, alpha {alpha:g} "
          f"-> {probe_dir}", file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # the run's progress lines; stdout keeps the summary
        rec = run(pcfg, probe_dir, progress=not args.no_progress)
    inputs = {"source": "probe", "config": args.config, "workflow_config": args.workflow_config,
              "model": model, "setting": setting, "run_name": cfg["name"], "mode": cfg["mode"],
              "model_source": cfg["model"]["source"], "lr": cfg["optim"]["lr"], "batch_size": cfg["batch_size"],
              "seed": cfg["seed"], "signal": gc.signal, "normalize": gc.normalize,
              "check_interval": gc.check_interval, "alpha": alpha, "planned_steps": planned,
              "probe_steps": probe_steps, "steps_run": rec["steps_run"], "probe_dir": str(probe_dir),
              "probe_time_s": rec["train_time_s"], "note": note, "overrides": list(args.set)}
    try:
        doc = calibrate(probe_dir / "signals.csv", out, alpha=alpha, planned_steps=planned, target_frozen=target,
                        at=at, inputs=inputs, model=model, setting=setting or cfg["name"],
                        snippet_extra=snippet_extra)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_text(doc, inputs, doc["snippet"]))
    print(f"\nwrote {out / 'calibration.json'} and {out / 'calibration.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
