"""The report's claims as table columns: paired accuracy, speedups with intervals, the paper's cells reproduced.

The tables (:mod:`.tables`), the comparison of stopping methods (:mod:`.compare`) and the
paper's layout (:mod:`.paper`) take their statistical columns from here, so that every
table states a claim the same way:

* accuracy against the baseline: :func:`accuracy_claims` (per task, and over all tasks of
  a model), from :mod:`.paired` - the paired difference with its 95% interval, McNemar's
  p, the equivalence test's p against the margin, the verdict and the minimum detectable
  difference; :func:`claim_row` picks the row a one-line-per-setting table shows;
* speed: :func:`speed_claims` - the speedup over a named setting (FP) and over the
  setting's own baseline, each with its interval, verdict and same-work check
  (:mod:`.speed`);
* the paper's cells: :func:`paper_cells` adds our 95% interval (Wilson, on our item
  count) and whether the paper's value is inside it; :func:`reproduced_summary` says
  "k of n cells reproduced" per model.

Cell formatting (:func:`interval_cell`, :func:`speed_cell`, :func:`p_cell`) is shared by the
Markdown tables.
"""

from __future__ import annotations

import math

import pandas as pd

from ..rundir import Run
from .paired import ALL_TASKS, OWN, baseline_of, paired_comparisons
from .speed import RunTiming, Speedup, speedup_interval
from .stats import DEFAULT_MARGIN, accuracy_interval, reproduced

#: paired columns of the accuracy and comparison tables (the paired module's names, prefixed)
PAIRED_COLUMNS = {"baseline": "paired_baseline", "n": "paired_n", "seeds": "paired_seeds", "diff": "paired_diff",
                  "lo": "paired_lo", "hi": "paired_hi", "better": "better", "worse": "worse",
                  "mcnemar_p": "mcnemar_p", "margin": "margin", "tost_p": "tost_p", "mdd": "mdd",
                  "items_needed": "items_needed", "verdict": "verdict"}


# ------------------------------------------------------------------ accuracy
def accuracy_claims(runs: list[Run], *, baseline: str | None = OWN, margin: float = DEFAULT_MARGIN,
                    seed: int = 0, per_seed: bool = False, pools: dict[str, str] | None = None) -> pd.DataFrame:
    """model, setting, task, pool (and seed with ``per_seed``) with :data:`PAIRED_COLUMNS`
    (``pools``: task -> the pool its one-line claim averages it in, e.g. its protocol)."""
    p = paired_comparisons(runs, baseline=baseline, margin=margin, seed=seed, per_seed=per_seed, pools=pools)
    keep = ["model", "setting", "task", "pool"] + (["seed"] if per_seed else []) + list(PAIRED_COLUMNS)
    return p[keep].rename(columns=PAIRED_COLUMNS)


def claim_row(claims: pd.DataFrame | None, model: str, setting: str, pool: str | None = None,
              seed: int | None = None) -> pd.Series | None:
    """The claim a one-line-per-setting table shows: over the pool's tasks when it has
    several, else its one task's (``pool`` None: any pool; ``seed``: of a per-seed frame);
    None without per-item records."""
    if claims is None or claims.empty:
        return None
    c = claims[(claims["model"] == model) & (claims["setting"] == setting)]
    if pool is not None:
        c = c[c["pool"] == pool]
    if seed is not None and "seed" in c:
        c = c[c["seed"] == seed]
    if c.empty:
        return None
    pooled = c[c["task"] == ALL_TASKS]
    return (pooled if len(pooled) else c).iloc[0]


# ------------------------------------------------------------------ speed
def _by_setting(runs: list[Run]) -> dict[tuple, dict[int, Run]]:
    out: dict[tuple, dict[int, Run]] = {}
    for r in runs:
        out.setdefault((r.model, r.setting), {})[r.seed] = r
    return out


def speedup_of(runs: dict[int, Run], base: dict[int, Run], *, seed: int = 0) -> Speedup | None:
    """The speedup of a setting's runs over a baseline's, seed k with seed k (None without a common seed)."""
    seeds = sorted(set(runs) & set(base))
    if not seeds:
        return None
    same_mode = runs[seeds[0]].mode == base[seeds[0]].mode
    return speedup_interval([RunTiming.from_train(base[k].train) for k in seeds],
                            [RunTiming.from_train(runs[k].train) for k in seeds], same_mode=same_mode, seed=seed)


def speed_claims(runs: list[Run], *, baseline: str = "FP", seed: int = 0) -> pd.DataFrame:
    """One row per model x setting: ``speedup_vs_<baseline>`` with ``_lo``, ``_hi``,
    ``_verdict``, ``_interval``, and the same over the setting's own baseline (``own_baseline``,
    ``speedup_vs_own*``), with the same-work check (``same_work``, ``_lo``, ``_hi``, ``_steps``)."""
    by = _by_setting(runs)
    settings = {k: (next(iter(v.values())).mode, next(iter(v.values())).method) for k, v in by.items()}
    rows = []
    for (model, setting), rs in by.items():
        row: dict = {"model": model, "setting": setting}
        b = by.get((model, baseline))
        s = speedup_of(rs, b, seed=seed) if b is not None else None
        tag = f"speedup_vs_{baseline}"
        row.update({tag: math.nan, f"{tag}_lo": math.nan, f"{tag}_hi": math.nan, f"{tag}_verdict": "",
                    f"{tag}_interval": ""})
        if s is not None:
            row.update({tag: s.speedup, f"{tag}_lo": s.lo, f"{tag}_hi": s.hi, f"{tag}_verdict": s.verdict,
                        f"{tag}_interval": s.interval})
        mode, method = settings[(model, setting)]
        own = baseline_of(model, setting, mode, method, settings)
        o = speedup_of(rs, by[(model, own)], seed=seed) if own else None
        row["own_baseline"] = own or ""
        row.update({"speedup_vs_own": math.nan, "speedup_vs_own_lo": math.nan, "speedup_vs_own_hi": math.nan,
                    "speedup_vs_own_verdict": "", "same_work": math.nan, "same_work_lo": math.nan,
                    "same_work_hi": math.nan, "same_work_steps": 0})
        if o is not None:
            row.update({"speedup_vs_own": o.speedup, "speedup_vs_own_lo": o.lo, "speedup_vs_own_hi": o.hi,
                        "speedup_vs_own_verdict": o.verdict, "same_work": o.same_work,
                        "same_work_lo": o.same_work_lo, "same_work_hi": o.same_work_hi,
                        "same_work_steps": o.same_work_steps})
        rows.append(row)
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ the paper's cells
def paper_cells(cmp: pd.DataFrame) -> pd.DataFrame:
    """Comparison rows (model, method, benchmark, ours, paper, and ``n``: our item count) with
    our 95% interval ``lo`` / ``hi`` and ``reproduced``: the paper's value inside it (None
    where either is missing, and for averages, which are not one benchmark)."""
    out = cmp.copy()
    if "n" not in out.columns:
        out["n"] = math.nan
    los, his, rep = [], [], []
    for _, r in out.iterrows():
        k = r["n"]
        ok = r.get("benchmark") != "avg" and isinstance(k, (int, float)) and math.isfinite(k) and k > 0
        lo, hi = accuracy_interval(float(r["ours"]), int(k)) if ok else (math.nan, math.nan)
        los.append(lo)
        his.append(hi)
        rep.append(reproduced(float(r["paper"]), lo, hi) if ok else None)
    out["lo"], out["hi"], out["reproduced"] = los, his, rep
    return out


def reproduced_summary(cells: pd.DataFrame) -> list[str]:
    """One line per model: "k of n cells reproduced" over the cells with a verdict."""
    lines = []
    judged = cells[cells["reproduced"].notna()] if len(cells) else cells
    for model, g in judged.groupby("model", sort=False):
        k, n = int(g["reproduced"].astype(bool).sum()), len(g)
        lines.append(f"{model}: {k} of {n} cells reproduced (the paper's value inside our 95% interval).")
    return lines


# ------------------------------------------------------------------ cells
def _finite(*xs) -> bool:
    return all(isinstance(x, (int, float)) and math.isfinite(x) for x in xs)


def interval_cell(x: float, lo: float, hi: float, digits: int = 2, signed: bool = True) -> str:
    """"+0.50 [-2.25, +3.25]"; "–" when missing."""
    if not _finite(x):
        return "–"
    f = f"{{:{'+' if signed else ''}.{digits}f}}"
    out = f.format(round(x, digits) + 0.0)
    return out + (f" [{f.format(round(lo, digits) + 0.0)}, {f.format(round(hi, digits) + 0.0)}]"
                  if _finite(lo, hi) else "")


def speed_cell(x: float, lo: float, hi: float) -> str:
    """"1.05x [0.98, 1.12]"; "–" when missing."""
    if not _finite(x):
        return "–"
    return f"{x:.2f}x" + (f" [{lo:.2f}, {hi:.2f}]" if _finite(lo, hi) else "")


def p_cell(p: float) -> str:
    if not _finite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"
