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

:func:`load_claims` computes all of them once for a profile's runs (:class:`ClaimOptions`: the
equivalence margin, the paired baseline and the bootstrap seed, from the workflow config's
``report`` block); :func:`with_claims` adds them to a one-row-per-setting table and
:func:`claim_cells` / :func:`claim_heads` write them as Markdown cells. Cell formatting
(:func:`interval_cell`, :func:`speed_cell`, :func:`p_cell`, :func:`seed_cell`) is shared by the
Markdown tables.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field

import pandas as pd

from ..rundir import Run
from .paired import ALL_TASKS, OWN, baseline_of, paired_comparisons
from .speed import RunTiming, Speedup, speedup_interval
from .stats import DEFAULT_MARGIN, accuracy_interval, reproduced, seed_summary

#: paired columns of the accuracy and comparison tables (the paired module's names, prefixed)
PAIRED_COLUMNS = {"baseline": "paired_baseline", "n": "paired_n", "seeds": "paired_seeds", "diff": "paired_diff",
                  "lo": "paired_lo", "hi": "paired_hi", "better": "better", "worse": "worse",
                  "mcnemar_p": "mcnemar_p", "margin": "margin", "tost_p": "tost_p", "mdd": "mdd",
                  "items_needed": "items_needed", "verdict": "verdict"}


# ------------------------------------------------------------------ options and the bundle
@dataclass(frozen=True)
class ClaimOptions:
    """How the report states its claims (the workflow config's ``report`` block)."""

    margin: float = DEFAULT_MARGIN  # points: report.equivalence_margin
    baseline: str = OWN  # the setting every other one is paired with: report.paired_baseline ("own": its mode's)
    seed: int = 0  # of the bootstraps: report.bootstrap_seed


@dataclass
class Claims:
    """Every claim of a profile's runs: paired accuracy over seeds and per seed, and speed."""

    options: ClaimOptions = field(default_factory=ClaimOptions)
    accuracy: pd.DataFrame = field(default_factory=pd.DataFrame)  # accuracy_claims, seeds pooled
    per_seed: pd.DataFrame = field(default_factory=pd.DataFrame)  # accuracy_claims per seed
    speed: pd.DataFrame = field(default_factory=pd.DataFrame)  # speed_claims
    speed_baseline: str = "FP"


def load_claims(runs: list[Run], options: ClaimOptions | None = None, *, pools: dict[str, str] | None = None,
                speed_baseline: str = "FP") -> Claims:
    """The claims of finished runs (:func:`grades.rundir.finished_runs`); ``pools``: task -> the
    pool (protocol) its one-line claims average it in."""
    o = options or ClaimOptions()
    kw = {"baseline": o.baseline, "margin": o.margin, "seed": o.seed, "pools": pools}
    return Claims(options=o, accuracy=accuracy_claims(runs, **kw), per_seed=accuracy_claims(runs, per_seed=True, **kw),
                  speed=speed_claims(runs, baseline=speed_baseline, seed=o.seed) if runs else pd.DataFrame(),
                  speed_baseline=speed_baseline)


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


# ------------------------------------------------------------------ a table's columns
_TEXT = {"paired_baseline", "verdict"}


def speed_columns(baseline: str) -> list[str]:
    """The speed columns :func:`with_claims` adds (:func:`speed_claims`'s, but the interval kind)."""
    t = f"speedup_vs_{baseline}"
    return [t, f"{t}_lo", f"{t}_hi", f"{t}_verdict", "own_baseline", "speedup_vs_own", "speedup_vs_own_lo",
            "speedup_vs_own_hi", "speedup_vs_own_verdict", "same_work", "same_work_lo", "same_work_hi"]


def with_claims(tab: pd.DataFrame, claims: Claims | None, *, pool_col: str | None = None,
                speed: bool = True, paired: bool = True) -> pd.DataFrame:
    """``tab`` (one row per model x setting) with, with ``paired``, the paired columns of each
    row's claim (:func:`claim_row`; ``pool_col``: the column naming its pool, any pool where it
    is empty) and, with ``speed``, the speed columns (:func:`speed_columns`, replacing a speedup
    the table computed itself)."""
    out = tab.copy()
    if out.empty or claims is None:
        return out
    cols = list(PAIRED_COLUMNS.values()) if paired else []
    vals: dict[str, list] = {c: [] for c in cols}
    for _, r in out.iterrows():
        pool = r[pool_col] if pool_col else None
        row = claim_row(claims.accuracy, r["model"], r["setting"], pool if isinstance(pool, str) and pool else None)
        for c in cols:
            vals[c].append(row[c] if row is not None else ("" if c in _TEXT else math.nan))
    for c in cols:
        out[c] = vals[c]
    if speed and not claims.speed.empty:
        sc = speed_columns(claims.speed_baseline)
        out = out.drop(columns=[c for c in sc if c in out.columns]).merge(
            claims.speed[["model", "setting", *sc]], on=["model", "setting"], how="left")
    return out


def task_claims(claims: Claims | None) -> pd.DataFrame:
    """The per-task rows of the paired claims (model, setting, task and the paired columns),
    to merge into a table with one row per model x setting x task."""
    if claims is None or claims.accuracy.empty:
        return pd.DataFrame(columns=["model", "setting", "task", *PAIRED_COLUMNS.values()])
    c = claims.accuracy[claims.accuracy["task"] != ALL_TASKS]
    return c[["model", "setting", "task", *PAIRED_COLUMNS.values()]]


def claim_heads(claims: Claims | None) -> list[str]:
    """Heads of :func:`claim_cells`."""
    m = claims.options.margin if claims is not None else DEFAULT_MARGIN
    return ["Δ vs baseline [95% CI]", "McNemar p", f"TOST p (±{m:g})", "verdict", "MDD"]


def claim_cells(r) -> list[str]:
    """The paired claim of a row of :func:`with_claims` as Markdown cells ("–" without one)."""
    base = r.get("paired_baseline")
    if not isinstance(base, str) or not base or not _finite(r.get("paired_diff")):
        return ["–"] * 5
    n = r.get("paired_n")
    seeds = r.get("paired_seeds")
    what = f" vs {base}" + (f" ({int(n)} items" + (f", {int(seeds)} seeds" if _finite(seeds) and seeds > 1 else "")
                            + ")" if _finite(n) else "")
    return [interval_cell(r["paired_diff"], r["paired_lo"], r["paired_hi"]) + what, p_cell(r["mcnemar_p"]),
            p_cell(r["tost_p"]), str(r["verdict"]), f"{r['mdd']:.2f}" if _finite(r.get("mdd")) else "–"]


def has_claims(tab: pd.DataFrame) -> bool:
    """Whether any row of a :func:`with_claims` table has a paired claim."""
    return "paired_diff" in tab and bool(tab["paired_diff"].notna().any())


def speed_heads(which: str = "own") -> list[str]:
    return [f"speedup vs {'baseline' if which == 'own' else which} [95% CI]", "speed"]


def speed_cells(r, which: str = "own") -> list[str]:
    """The speedup of a row of :func:`with_claims` over its own baseline (``which`` "own") or the
    named setting, with its interval and verdict ("–" without)."""
    t = f"speedup_vs_{which}"
    x = r.get(t)
    if not _finite(x):
        return ["–", "–"]
    verdict = r.get(f"{t}_verdict") or "–"
    return [speed_cell(x, r.get(f"{t}_lo", math.nan), r.get(f"{t}_hi", math.nan)), str(verdict)]


# ------------------------------------------------------------------ cells
def _finite(*xs) -> bool:
    return all(isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x) for x in xs)


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


def seed_cell(mean: float, sd: float, se: float, seeds: int) -> str:
    """"63.00 ± 1.41 (sd, 2 seeds)" over several seeds, else "63.00 ± 1.41" (the standard error)."""
    if not _finite(mean):
        return "–"
    if _finite(seeds) and seeds > 1 and _finite(sd):
        return f"{mean:.2f} ± {sd:.2f} (sd, {int(seeds)} seeds)"
    return f"{mean:.2f} ± {se:.2f}" if _finite(se) else f"{mean:.2f}"


def seed_sd(values) -> float:
    """The standard deviation over seeds (NaN for one seed): a pandas aggregation."""
    return seed_summary(list(values))[1]


def p_cell(p: float) -> str:
    if not _finite(p):
        return "–"
    return "<0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"
