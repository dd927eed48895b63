"""Accuracy and efficiency tables (CSV + Markdown) from run files.

Accuracy is in percent with lm-eval's standard error (over seeds: the mean, the standard
error combined as sqrt(sum se^2)/n, and ``acc_sd_seeds``, the standard deviation over
seeds, which the Markdown shows in place of the error when there are several). Each
fine-tuned setting is compared with its baseline (the run of the same model and mode
without a stopping method: FP+GradES vs FP, LoRA+ES vs LoRA; or ``report.paired_baseline``)
item by item, from the runs' per-item records (:mod:`grades.report.claims`): the paired
difference with its 95% interval, McNemar's p, the equivalence test against the margin,
the verdict and the minimum detectable difference; without records, the unpaired
difference ± both errors. Speedup and FLOPs ratio are relative to the report baseline
(FP by default), as in the paper: speedup = baseline total time / total time, where total
time = training time + validation time (early stopping pays for its validation passes);
each speedup carries a 95% interval and a verdict (:mod:`grades.report.speed`), over the
report baseline and over the setting's own baseline.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write_text
from .claims import (ClaimOptions, Claims, claim_cells, claim_heads, claim_row, has_claims, load_claims, seed_cell,
                     seed_sd, speed_cell, task_claims, with_claims)


def combined_stderr(se: pd.Series) -> float:
    se = se.dropna()
    return float(np.sqrt((se**2).sum()) / len(se)) if len(se) else math.nan


def setting_order(train: pd.DataFrame, evals: pd.DataFrame) -> list[str]:
    order = ["Base"]
    for df in (train, evals):
        if len(df):
            for s in df["setting"]:
                if s not in order:
                    order.append(s)
    return order


def accuracy_table(train: pd.DataFrame, evals: pd.DataFrame, claims: Claims | None = None) -> pd.DataFrame:
    """One row per model x setting x task; with ``claims``, each task's paired claim against
    the setting's baseline (:func:`grades.report.claims.task_claims`)."""
    if evals.empty:
        return pd.DataFrame()
    g = evals.groupby(["model", "setting", "mode", "method", "task"], sort=False)
    acc = g.agg(acc=("acc", "mean"), acc_stderr=("acc_stderr", combined_stderr), n=("n", "first"),
                chance=("chance", "first"), seeds=("seed", "nunique"), acc_sd_seeds=("acc", seed_sd)).reset_index()
    acc["acc"] *= 100
    acc["acc_stderr"] *= 100
    acc["acc_sd_seeds"] *= 100
    acc["chance"] *= 100
    # difference with the setting's own baseline (same model, same mode, no method)
    base = acc[acc["method"].eq("none") & acc["mode"].ne("base")].set_index(["model", "mode", "task"])
    deltas, dses, bnames = [], [], []
    for _, r in acc.iterrows():
        key = (r["model"], r["mode"], r["task"])
        if r["method"] != "none" and key in base.index:
            b = base.loc[key]
            deltas.append(r["acc"] - b["acc"])
            dses.append(math.hypot(r["acc_stderr"], b["acc_stderr"]))
            bnames.append(b["setting"])
        else:
            deltas.append(math.nan)
            dses.append(math.nan)
            bnames.append("")
    acc["delta_vs_baseline"], acc["delta_stderr"], acc["baseline"] = deltas, dses, bnames
    acc["above_chance_2se"] = (acc["acc"] - acc["chance"]) > 2 * acc["acc_stderr"]
    order = {s: i for i, s in enumerate(setting_order(train, evals))}
    acc = acc.sort_values(["model", "setting", "task"], key=lambda c: c.map(order) if c.name == "setting" else c)
    acc = acc.reset_index(drop=True)
    if claims is not None:
        acc = acc.merge(task_claims(claims), on=["model", "setting", "task"], how="left")
    return acc


def efficiency_table(train: pd.DataFrame, baseline: str = "FP", claims: Claims | None = None) -> pd.DataFrame:
    """One row per model x setting (seeds averaged); with ``claims`` every speedup comes with its
    95% interval and verdict, over ``baseline`` and over the setting's own baseline."""
    if train.empty:
        return pd.DataFrame()
    cols = ["train_time_s", "validation_time_s", "total_time_s", "flops_train", "flops_validation", "flops_total",
            "steps_run", "steps_planned", "frozen_ratio", "frozen_param_ratio", "peak_rss_mb", "time_per_step_s"]
    g = train.groupby(["model", "setting", "mode", "method"], sort=False)
    eff = g[cols].mean().reset_index()
    eff["stop_reason"] = g["stop_reason"].agg(lambda s: "; ".join(sorted(set(s)))).values
    eff["seeds"] = g["seed"].nunique().values
    speed, fratio = [], []
    for _, r in eff.iterrows():
        b = eff[(eff["model"] == r["model"]) & (eff["setting"] == baseline)]
        if len(b):
            speed.append(b["total_time_s"].iloc[0] / r["total_time_s"])
            fratio.append(r["flops_total"] / b["flops_total"].iloc[0])
        else:
            speed.append(math.nan)
            fratio.append(math.nan)
    eff[f"speedup_vs_{baseline}"] = speed
    eff[f"flops_ratio_vs_{baseline}"] = fratio
    return with_claims(eff, claims, paired=False) if claims is not None else eff


# ------------------------------------------------------------------ markdown
def _fmt(v, digits=2):
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def markdown(df: pd.DataFrame, columns: list[tuple[str, str]] | None = None) -> str:
    if df.empty:
        return "_no runs found_\n"
    columns = columns or [(c, c) for c in df.columns]
    head = "| " + " | ".join(h for _, h in columns) + " |"
    sep = "|" + "|".join("---" for _ in columns) + "|"
    rows = ["| " + " | ".join(_cell(r, c) for c, _ in columns) + " |" for _, r in df.iterrows()]
    return "\n".join([head, sep, *rows]) + "\n"


def _cell(r, c):
    v = r[c]
    if isinstance(v, str):
        return v or "–"
    if c in ("flops_total", "flops_train", "flops_validation"):
        return f"{v:.3g}"
    if c in ("frozen_ratio", "frozen_param_ratio"):
        return f"{100 * v:.0f}%"
    if c.startswith("speedup") or c.startswith("flops_ratio"):
        return "–" if isinstance(v, float) and math.isnan(v) else f"{v:.2f}x"
    if c in ("steps_run", "steps_planned", "n", "seeds"):
        return str(int(v))
    return _fmt(v, 1 if c.endswith("_s") or c == "peak_rss_mb" else 2)


ACCURACY_INTRO = (
    "Accuracy (%) ± standard error (lm-eval; with several seeds: the mean ± the standard deviation over seeds). "
    "Δ vs baseline: the setting against its baseline (same model and mode, no stopping method) on the same items, "
    "seed k with seed k, tasks weighted equally: the mean per-item difference (points) with its 95% paired "
    "bootstrap interval, McNemar's exact p, the equivalence test's p (TOST) within ± the margin, the verdict "
    "(equivalent / different / undecided (too few items)) and the minimum detectable difference (MDD, points). "
    "accuracy.csv has every task's own. A model without per-item records (samples.jsonl) shows the unpaired "
    "difference ± the combined standard error instead.")


def accuracy_markdown(acc: pd.DataFrame, claims: Claims | None = None) -> str:
    if acc.empty:
        return "_no evaluations found_\n"
    lines = [ACCURACY_INTRO, ""]
    tasks = list(dict.fromkeys(acc["task"]))
    paired = "paired_diff" in acc and has_claims(acc)
    head = (["model", "setting"] + [f"{t}" for t in tasks] + (["avg"] if len(tasks) > 1 else [])
            + (claim_heads(claims) if paired else ["Δ vs baseline"]))
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for (model, setting), grp in acc.groupby(["model", "setting"], sort=False):
        cells = []
        for t in tasks:
            r = grp[grp["task"] == t]
            cells.append("–" if r.empty else seed_cell(r["acc"].iloc[0], r["acc_sd_seeds"].iloc[0],
                                                         r["acc_stderr"].iloc[0], r["seeds"].iloc[0]))
        if len(tasks) > 1:
            cells.append(f"{grp['acc'].mean():.2f}")
        c = claim_row(claims.accuracy, model, setting) if paired and claims is not None else None
        if paired:
            cells += claim_cells({} if c is None else c)
        else:
            d = grp["delta_vs_baseline"].mean()
            ds = combined_stderr(grp["delta_stderr"]) if grp["delta_stderr"].notna().any() else math.nan
            cells.append("–" if math.isnan(d) else f"{d:+.2f} ± {ds:.2f} (vs {grp['baseline'].iloc[0]})")
        lines.append("| " + " | ".join([model, setting, *cells]) + " |")
    chance = acc.groupby("task")["chance"].first()
    lines += ["", "Chance level: " + ", ".join(f"{t} {c:.1f}%" for t, c in chance.items() if not math.isnan(c))]
    return "\n".join(lines) + "\n"


def _speed_text(eff: pd.DataFrame, tag: str) -> pd.Series:
    """"1.05x [0.98, 1.12] indistinguishable from 1" per row of ``speedup_vs_<tag>``."""
    out = []
    for _, r in eff.iterrows():
        cell = speed_cell(r[tag], r.get(f"{tag}_lo", math.nan), r.get(f"{tag}_hi", math.nan))
        v = r.get(f"{tag}_verdict")
        out.append(cell + (f" {v}" if cell != "–" and isinstance(v, str) and v else ""))
    return pd.Series(out, index=eff.index, dtype=object)


def efficiency_markdown(eff: pd.DataFrame, baseline: str) -> str:
    tag = f"speedup_vs_{baseline}"
    intervals = f"{tag}_verdict" in eff
    if intervals:
        eff = eff.assign(**{tag: _speed_text(eff, tag), "speedup_vs_own": _speed_text(eff, "speedup_vs_own")})
    cols = [("model", "model"), ("setting", "setting"), ("train_time_s", "train s"),
            ("validation_time_s", "validation s"), ("total_time_s", "total s"),
            (tag, f"speedup vs {baseline}" + (" [95% CI]" if intervals else ""))]
    cols += [("own_baseline", "own baseline"), ("speedup_vs_own", "speedup vs own [95% CI]")] if intervals else []
    cols += [("flops_total", "FLOPs"),
            (f"flops_ratio_vs_{baseline}", f"FLOPs vs {baseline}"), ("steps_run", "steps"),
            ("steps_planned", "planned"), ("frozen_ratio", "frozen (matrices)"),
            ("frozen_param_ratio", "frozen (params)"), ("peak_rss_mb", "peak RSS MB"), ("stop_reason", "stop")]
    intro = (f"Times are wall-clock seconds on this machine; total = training + validation (early stopping's "
             f"validation passes). FLOPs are analytic matmul FLOPs of training plus validation. Speedup and FLOPs "
             f"ratios are relative to {baseline} of the same model.")
    if intervals:
        intro += (" Each speedup carries a 95% interval (from the runs' per-step times, or over seed pairs with three "
                  "or more) and a verdict: faster / slower (the interval excludes 1), indistinguishable from 1, "
                  "confounded (identical steps differ: the steps both runs took before the first freeze, the same "
                  "work, ran at different speeds) or no interval (no step times). Own baseline: the same mode "
                  "without a stopping method.")
    return intro + "\n\n" + markdown(eff, cols)


def write_tables(runs_dir: str | Path, out_dir: str | Path, baseline: str = "FP", paper_dir: str | Path | None = None,
                 paper_models: dict[str, str] | None = None, options: ClaimOptions | None = None) -> dict[str, Path]:
    """accuracy/efficiency tables; with ``paper_models`` (our model -> the paper's name) also the
    paper-comparison tables of :mod:`grades.report.paper` (``paper_dir``: results/paper).
    ``options``: the margin, paired baseline and bootstrap seed of the claims."""
    from ..rundir import finished_runs
    from .runs import collect

    train, evals = collect(runs_dir)
    out = Path(out_dir)
    claims = load_claims(finished_runs(runs_dir, quiet=True), options, speed_baseline=baseline)
    acc = accuracy_table(train, evals, claims)
    eff = efficiency_table(train, baseline, claims)
    extra = {}
    if paper_models:
        from .paper import write_paper_tables

        extra = write_paper_tables(train, evals, eff, out, paper_dir or "results/paper", paper_models, baseline)
    return {
        **extra,
        "accuracy": atomic_write_text(out / "accuracy.csv", acc.to_csv(index=False, float_format="%.6g")),
        "accuracy_md": atomic_write_text(out / "accuracy.md", accuracy_markdown(acc, claims)),
        "efficiency": atomic_write_text(out / "efficiency.csv", eff.to_csv(index=False, float_format="%.6g")),
        "efficiency_md": atomic_write_text(out / "efficiency.md", efficiency_markdown(eff, baseline)),
    }
