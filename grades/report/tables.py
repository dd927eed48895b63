"""Accuracy and efficiency tables (CSV + Markdown) from run files, and the status of every planned run.

Accuracy is in percent with lm-eval's standard error (over seeds: the mean, the standard
error combined as sqrt(sum se^2)/n, and ``acc_sd_seeds``, the standard deviation over
seeds, which the Markdown shows in place of the error when there are several): each
task's own metric under its protocol (``acc`` of a log-likelihood task, ``exact_match`` of
a generation task; the CSV's ``protocol`` and ``metric`` columns, one Markdown table per
protocol). Each fine-tuned setting is compared with its baseline (the run of the same
model and mode without a stopping method: FP+GradES vs FP, LoRA+ES vs LoRA; or
``report.paired_baseline``) item by item, from the runs' per-item records
(:mod:`grades.report.claims`; the tasks of one protocol pooled, each weighted equally):
the paired difference with its 95% interval, McNemar's p, the equivalence test against
the margin, the verdict and the minimum detectable difference; without records, the
unpaired difference ± both errors. Speedup and FLOPs ratio are relative to the report
baseline (FP by default), as in the paper: speedup = baseline total time / total time,
where total time = training time + validation time (early stopping pays for its
validation passes); each speedup carries a 95% interval and a verdict
(:mod:`grades.report.speed`), over the report baseline and over the setting's own baseline.

With the planned runs (``expected``, :func:`grades.report.runs.run_status`), a run that
failed, was never run or was not evaluated has its cells marked missing, with the reason
(``runs.{csv,md}``); the tables are made from whatever runs exist.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write_text
from .claims import (ClaimOptions, Claims, claim_cells, claim_heads, claim_row, has_claims, load_claims, seed_cell,
                     seed_sd, speed_cell, task_claims, with_claims)


def _is_matched(setting) -> bool:
    from ..workflow.matched import parse_matched

    return parse_matched(setting) is not None


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


PROTOCOL_NOTES = {
    "loglikelihood": "the answer is the option with the highest log-likelihood after the task's prompt",
    "commonsense-generation": "greedy generation in the prompt the model was fine-tuned on (commonsense-170k); "
                              "the first answer word of the response must be the gold one",
    "generation": "greedy generation, scored by the task's own metric",
}


def accuracy_table(train: pd.DataFrame, evals: pd.DataFrame, claims: Claims | None = None) -> pd.DataFrame:
    """One row per model x setting x task; with ``claims``, each task's paired claim against
    the setting's baseline (:func:`grades.report.claims.task_claims`)."""
    if evals.empty:
        return pd.DataFrame()
    evals = evals.copy()
    for col in ("protocol", "metric", "benchmark", "split"):
        if col not in evals:
            evals[col] = None
    g = evals.groupby(["model", "setting", "mode", "method", "task"], sort=False)
    acc = g.agg(acc=("acc", "mean"), acc_stderr=("acc_stderr", combined_stderr), n=("n", "first"),
                chance=("chance", "first"), seeds=("seed", "nunique"), protocol=("protocol", "first"),
                metric=("metric", "first"), benchmark=("benchmark", "first"), split=("split", "first"),
                acc_sd_seeds=("acc", seed_sd)).reset_index()
    acc["acc"] *= 100
    acc["acc_stderr"] *= 100
    acc["acc_sd_seeds"] *= 100
    acc["chance"] *= 100
    # difference with the setting's own baseline (same model, same mode, no method)
    # (a matched-budget run, FP@matched(FP+GradES), has no method either but is no one's baseline)
    base = acc[acc["method"].eq("none") & acc["mode"].ne("base") & ~acc["setting"].map(_is_matched)]
    base = base.drop_duplicates(["model", "mode", "task"]).set_index(["model", "mode", "task"])
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


def protocol_pools(evals: pd.DataFrame) -> dict[str, str]:
    """task -> its protocol: the pools in which the claims average a setting's tasks."""
    if evals.empty:
        return {}
    proto = evals["protocol"].fillna("loglikelihood") if "protocol" in evals else pd.Series("loglikelihood",
                                                                                            evals.index)
    return dict(zip(evals["task"], proto))


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


def _protocol_key(acc: pd.DataFrame) -> pd.Series:
    return acc["protocol"].fillna("loglikelihood") if "protocol" in acc else pd.Series("loglikelihood", acc.index)


ACCURACY_INTRO = (
    "Accuracy (%) ± standard error (lm-eval; with several seeds: the mean ± the standard deviation over seeds), each "
    "task by its protocol and metric (column heads). Δ vs baseline: the setting against its baseline (same model and "
    "mode, no stopping method) on the same items, seed k with seed k, the protocol's tasks weighted equally: the mean "
    "per-item difference (points) with its 95% paired bootstrap interval, McNemar's exact p, the equivalence test's p "
    "(TOST) within ± the margin, the verdict (equivalent / different / undecided (too few items)) and the minimum "
    "detectable difference (MDD, points); accuracy.csv has every task's own. A protocol without per-item records "
    "(samples.jsonl) shows the unpaired difference ± the combined standard error instead. \"missing\" = the run "
    "failed, was not run or was not evaluated (below).")


def accuracy_markdown(acc: pd.DataFrame, status: pd.DataFrame | None = None, claims: Claims | None = None) -> str:
    """One table per protocol (tasks x settings, the metric named in each column's head, the
    paired claims of ``claims`` pooled over the protocol's tasks), then the runs that are
    missing and why."""
    if acc.empty:
        return "_no evaluations found_\n" + missing_markdown(status)
    lines = [ACCURACY_INTRO, ""]
    acc = acc.assign(_protocol=_protocol_key(acc))
    missing = status[status["status"] != "ok"] if status is not None and len(status) else None
    for protocol, part in acc.groupby("_protocol", sort=False):
        lines += [f"**Protocol: {protocol}** — {PROTOCOL_NOTES.get(protocol, protocol)}.", ""]
        lines += _protocol_table(part, missing, claims, protocol)
        chance = part.groupby("task")["chance"].first()
        known = [f"{t} {c:.1f}%" for t, c in chance.items() if not math.isnan(c)]
        lines += ["", "Chance level: " + ", ".join(known), ""] if known else [""]
    return "\n".join(lines) + missing_markdown(status)


def _protocol_table(acc: pd.DataFrame, missing: pd.DataFrame | None, claims: Claims | None = None,
                    protocol: str | None = None) -> list[str]:
    tasks = list(dict.fromkeys(acc["task"]))
    metric = acc.groupby("task", sort=False)["metric"].first()
    heads = [f"{t} ({metric[t] or 'acc'})" for t in tasks]
    same = acc["metric"].nunique(dropna=False) == 1
    paired = has_claims(acc)
    delta = claim_heads(claims) if paired else ["Δ vs baseline"]
    head = ["model", "setting", *heads] + (["avg"] if len(tasks) > 1 and same else []) + delta
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for (model, setting), grp in acc.groupby(["model", "setting"], sort=False):
        cells = []
        for t in tasks:
            r = grp[grp["task"] == t]
            cells.append("–" if r.empty else seed_cell(r["acc"].iloc[0], r["acc_sd_seeds"].iloc[0],
                                                         r["acc_stderr"].iloc[0], r["seeds"].iloc[0]))
        if len(tasks) > 1 and same:
            cells.append(f"{grp['acc'].mean():.2f}")
        if paired:
            c = claim_row(claims.accuracy if claims is not None else None, model, setting, protocol)
            cells += claim_cells({} if c is None else c)
        else:
            d = grp["delta_vs_baseline"].mean()
            ds = combined_stderr(grp["delta_stderr"]) if grp["delta_stderr"].notna().any() else math.nan
            cells.append("–" if math.isnan(d) else f"{d:+.2f} ± {ds:.2f} (vs {grp['baseline'].iloc[0]})")
        lines.append("| " + " | ".join([model, setting, *cells]) + " |")
    if missing is not None:
        have = set(zip(acc["model"], acc["setting"]))
        for (model, setting), grp in missing.groupby(["model", "setting"], sort=False):
            if model in set(acc["model"]) and (model, setting) not in have:
                why = "; ".join(dict.fromkeys(grp["status"]))
                own = set(acc.loc[acc["model"] == model, "task"])  # another model's tasks stay "–"
                cells = [f"missing ({why})" if t in own else "–" for t in tasks]
                cells += [""] if len(tasks) > 1 and same else []
                cells += [""] * len(delta)
                lines.append("| " + " | ".join([model, setting, *cells]) + " |")
    return lines


def missing_markdown(status: pd.DataFrame | None) -> str:
    """The planned runs without results, and why; "" when there are none (or no plan was given)."""
    if status is None or status.empty or (status["status"] == "ok").all():
        return ""
    miss = status[status["status"] != "ok"]
    lines = ["", f"**Missing: {len(miss)} of {len(status)} planned runs have no results here** (failed: "
             "train_failed.json; not run: nothing in the run directory; not evaluated: no eval.json).", "",
             "| run | setting | status | reason |", "|---|---|---|---|"]
    lines += [f"| {r.run} | {r.setting} | {r.status} | {r.reason or '–'} |" for r in miss.itertuples()]
    return "\n".join(lines) + "\n"


def _speed_text(eff: pd.DataFrame, tag: str) -> pd.Series:
    """"1.05x [0.98, 1.12] indistinguishable from 1" per row of ``speedup_vs_<tag>``."""
    out = []
    for _, r in eff.iterrows():
        cell = speed_cell(r[tag], r.get(f"{tag}_lo", math.nan), r.get(f"{tag}_hi", math.nan))
        v = r.get(f"{tag}_verdict")
        out.append(cell + (f" {v}" if cell != "–" and isinstance(v, str) and v else ""))
    return pd.Series(out, index=eff.index, dtype=object)


def efficiency_markdown(eff: pd.DataFrame, baseline: str, status: pd.DataFrame | None = None) -> str:
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
    return intro + "\n\n" + markdown(eff, cols) + missing_markdown(status)


def with_missing(acc: pd.DataFrame, status: pd.DataFrame | None) -> pd.DataFrame:
    """The accuracy table plus one row (status, no score) per planned run that has none."""
    acc = acc.assign(status="ok") if not acc.empty else acc
    if status is None or status.empty:
        return acc
    miss = status[status["status"] != "ok"][["model", "setting", "seed", "status", "reason"]]
    return pd.concat([acc, miss.rename(columns={"seed": "seeds"})], ignore_index=True) if len(miss) else acc


def write_tables(runs_dir: str | Path, out_dir: str | Path, baseline: str = "FP", paper_dir: str | Path | None = None,
                 paper_models: dict[str, str] | None = None, expected: list[str] | None = None,
                 planned_tasks: list[str] | None = None, options: ClaimOptions | None = None) -> dict[str, Path]:
    """accuracy/efficiency tables; with ``paper_models`` (our model -> the paper's name) also the
    paper-comparison tables of :mod:`grades.report.paper` (``paper_dir``: results/paper); with
    ``expected`` (the planned runs, :func:`grades.report.runs.run_status`) also ``runs.{csv,md}``
    and the missing runs marked in the tables; ``planned_tasks`` (the tasks of the paper models)
    go into the paper's split check before they are scored. ``options``: the margin, paired
    baseline and bootstrap seed of the claims (:mod:`grades.report.claims`)."""
    from ..rundir import finished_runs
    from .runs import collect, run_status

    train, evals = collect(runs_dir)
    out = Path(out_dir)
    claims = load_claims(finished_runs(runs_dir), options, pools=protocol_pools(evals), speed_baseline=baseline)
    acc = accuracy_table(train, evals, claims)
    eff = efficiency_table(train, baseline, claims)
    status = run_status(runs_dir, expected) if expected else None
    extra = {}
    if paper_models:
        from .paper import write_paper_tables

        extra = write_paper_tables(train, evals, eff, out, paper_dir or "results/paper", paper_models, baseline,
                                   planned_tasks)
    if status is not None:
        extra["runs"] = atomic_write_text(out / "runs.csv", status.to_csv(index=False))
        extra["runs_md"] = atomic_write_text(out / "runs.md", runs_markdown(status))
    return {
        **extra,
        "accuracy": atomic_write_text(out / "accuracy.csv", with_missing(acc, status).to_csv(
            index=False, float_format="%.6g")),
        "accuracy_md": atomic_write_text(out / "accuracy.md", accuracy_markdown(acc, status, claims)),
        "efficiency": atomic_write_text(out / "efficiency.csv", eff.to_csv(index=False, float_format="%.6g")),
        "efficiency_md": atomic_write_text(out / "efficiency.md", efficiency_markdown(eff, baseline, status)),
    }


def runs_markdown(status: pd.DataFrame) -> str:
    """Every planned run and its status."""
    counts = status["status"].value_counts()
    lines = ["Planned runs: " + ", ".join(f"{counts[s]} {s}" for s in counts.index) + ".", "",
             "| run | setting | status | reason |", "|---|---|---|---|"]
    lines += [f"| {r.run} | {r.setting} | {r.status} | {r.reason or '–'} |" for r in status.itertuples()]
    return "\n".join(lines) + "\n"
