"""What a proposal is made from: a signals table as a components x check-steps matrix, and what its run says.

A signals table is a run's ``signals.csv`` (or any frame with step, component, value
and optionally tower). :func:`run_info` reads the run directory beside a signals.csv
(train.json, freeze_events.csv) through :mod:`grades.rundir` for the GradES parameters
the proposal needs when they are not given.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from ..config import GradESConfig
from ..rundir import EVENTS, TRAIN, RunDir, read_table
from .errors import CalibrationError
from .probe import grades_params

REQUIRED_COLUMNS = ("step", "component", "value")


class SignalMatrix:
    """signals.csv as a matrix: components x check steps (NaN where not measured).

    ``signals``: a DataFrame, or the path of a CSV, with columns step, component, value
    (and optionally tower); a run's ``signals.csv`` has them."""

    def __init__(self, signals) -> None:
        import pandas as pd

        if isinstance(signals, (str, Path)):
            p = Path(signals)
            if not p.exists():
                raise CalibrationError(f"signals file not found: {p}")
            signals = read_table(p)
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

    def subset(self, mask: np.ndarray) -> "SignalMatrix":
        """The components where ``mask`` is true (one tower)."""
        out = copy.copy(self)
        out.components = [c for c, m in zip(self.components, mask) if m]
        out.towers = self.towers[mask]
        out.values = self.values[mask]
        return out

    def covers(self, step: int) -> bool:
        """Whether the recorded checks reach ``step`` (the last check is within one interval)."""
        return len(self.steps) > 0 and int(self.steps.max()) + self.interval > step



def run_info(signals_path: Path) -> dict:
    """alpha, planned steps and notes from the train.json / freeze_events.csv next to a signals.csv."""
    info: dict = {}
    rd = RunDir(signals_path.parent)
    rec = rd.train() if (rd / TRAIN).exists() else rd.failed()
    if rec is not None:
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
        parts = rd.path.resolve().parts  # results/runs/<profile>/<model>/<setting slug>/seed<k>
        if len(parts) >= 5 and parts[-1].startswith("seed") and parts[-5] == "runs":
            info["model"] = parts[-3]
    n = len(rd.freeze_steps())
    if n:
        info["note"] = (f"{rd / EVENTS} records {n} freeze(s): frozen components stop being measured and the others' "
                        f"trajectories changed; calibrate from a probe (or a run without freezing) for a "
                        f"cleaner estimate")
    return info
