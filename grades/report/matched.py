"""Matched-budget baselines in the comparison: is the method better than simply training less?

A matched run ``B@matched(S)`` / ``B@matched-flops(S)`` is S's baseline B trained for the
budget S used (its stop step / its share of B's training FLOPs), with the schedule laid
out over that budget (:mod:`grades.workflow.matched` plans them). From the comparison's
run points (:func:`grades.report.compare.run_points`) this module writes

    matched.{csv,md}          one row per method x budget (full, steps, flops) x protocol: the
                              method's and the baseline's accuracy and training FLOPs,
                              Δ = method − baseline (percentage points, per seed, then
                              averaged), and the paired test of the two runs
    matched_<model>.{png,pdf} accuracy against training FLOPs, one line per pair: the
                              baseline at its budgets (the "train less" line) and the
                              method's point in the same colour, a panel per protocol; a
                              method above its line beat training less

The paired test of a method against a baseline run (same seeds, same test items) is made
in one place, :func:`paired_test`, by :mod:`grades.report.paired`: the 95% paired bootstrap
interval of Δ, McNemar's p and the verdict of :mod:`grades.report.stats`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write_text
from ..workflow.matched import FLOPS, STEPS, parse_matched
from .plotting import new_figure, save
from .stats import DEFAULT_MARGIN

FULL = "full"
BUDGET_ORDER = {FLOPS: 0, STEPS: 1, FULL: 2}
COLUMNS = ["model", "method", "baseline", "budget", "against", "seeds", "tasks", "protocol", "steps_method",
           "steps_baseline",
           "flops_train_method", "flops_train_baseline", "flops_ratio", "acc_method", "acc_method_stderr",
           "acc_baseline", "acc_baseline_stderr", "delta", "delta_ci_low", "delta_ci_high", "p_value", "verdict"]
_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]


def paired_test(method_runs: list[str], baseline_runs: list[str], *, tasks: list[str] | None = None,
                margin: float = DEFAULT_MARGIN, seed: int = 0) -> dict:
    """The paired comparison of a method's runs with a baseline's (seed k with seed k, on the test
    items both scored: :func:`grades.report.paired.paired_comparisons`, from their samples.jsonl):
    the 95% paired bootstrap interval of the difference (points), McNemar's p and the verdict;
    NaN where the runs have no per-item records. ``tasks``: the tasks whose accuracy the row
    shows (one protocol's: the comparison's accuracy); the test pools exactly those, never a
    task scored by another protocol. Default: every task the runs scored."""
    from ..rundir import load_run
    from .paired import ALL_TASKS, paired_comparisons

    none = {"delta_ci_low": math.nan, "delta_ci_high": math.nan, "p_value": math.nan,
            "verdict": "no per-item records"}
    runs = [r for r in (load_run(d, quiet=True) for d in [*method_runs, *baseline_runs]) if r is not None]
    methods = {r.setting for r in runs if str(r.dir) in set(map(str, method_runs))}
    bases = {r.setting for r in runs if str(r.dir) in set(map(str, baseline_runs))}
    if len(methods) != 1 or len(bases) != 1:
        return none
    shown = "shown"  # the pool of the row's tasks; any other task scored is pooled apart
    pools = {t: shown for t in tasks} if tasks else None
    rows = paired_comparisons(runs, baseline=bases.pop(), margin=margin, seed=seed, pools=pools)
    rows = rows[rows["setting"].eq(methods.pop())]
    if tasks:
        rows = rows[rows["task"].eq(tasks[0])] if len(tasks) == 1 else \
            rows[rows["task"].eq(ALL_TASKS) & rows["pool"].eq(shown)]
    if rows.empty:
        return none
    row = rows[rows["task"].eq(ALL_TASKS)].iloc[0] if len(rows) > 1 else rows.iloc[0]
    return {"delta_ci_low": row["lo"], "delta_ci_high": row["hi"], "p_value": row["mcnemar_p"],
            "verdict": row["verdict"]}


def unplanned_budgets(runs_dir: str | Path) -> list[dict]:
    """The budget.json files under a profile's runs root whose matched run was not planned
    (the method saved nothing beyond what another budget already matches), with their
    model and seed: the table says so rather than leaving the method out."""
    from ..workflow.matched import read_budget

    out = []
    for f in sorted(Path(runs_dir).glob("*/*/seed*/budget.json")):
        b = read_budget(f)
        if not b.get("planned", True):
            out.append({**b, "model": f.parts[-4], "seed": int(f.parts[-2].removeprefix("seed"))})
    return out


def _not_trained(by: dict, b: dict, rows: list[dict]) -> list[dict]:
    """Rows for a budget that was not trained: the method against the baseline's full run (if
    no matched run added it) and a row naming the budget and why it was not trained."""
    model, seed, method, baseline = b["model"], b["seed"], b["method"], b["baseline"]
    m, full = by.get((model, method, seed)), by.get((model, baseline, seed))
    if m is None:
        return []
    out = []
    if full is not None and not _has(rows, model, method, seed, FULL):
        out.append(_pair(m, full, model, method, baseline, FULL, baseline, seed))
    row = _pair(m, None, model, method, baseline, b["budget"], b["name"], seed)
    row.update(steps_baseline=b["steps"], not_trained=b["reason"])
    return out + [row]


def _has(rows: list[dict], model: str, method: str, seed: int, budget: str) -> bool:
    """Whether ``rows`` already pair this method's run with a baseline run at this budget."""
    return any(x["budget"] == budget and x["method"] == method and x["model"] == model and x["seed"] == seed
               for x in rows)


def _pair(m, b, model, method, baseline, budget, against, seed) -> dict:
    nan = math.nan
    return {"model": model, "method": method, "baseline": baseline, "budget": budget, "against": against,
            "seed": seed, "tasks": m.get("tasks", ""), "protocol": m.get("protocol", ""),
            "steps_method": m["steps_run"], "steps_baseline": nan if b is None else b["steps_run"],
            "flops_train_method": m["flops_train"], "flops_train_baseline": nan if b is None else b["flops_train"],
            "acc_method": m["acc"], "acc_method_stderr": m["acc_stderr"],
            "acc_baseline": nan if b is None else b["acc"], "acc_baseline_stderr": nan if b is None else b["acc_stderr"],
            "delta": nan if b is None else m["acc"] - b["acc"], "run_method": m["run_dir"],
            "run_baseline": "" if b is None else b["run_dir"], "not_trained": ""}


def matched_pairs(points: pd.DataFrame | list[pd.DataFrame], unplanned: list[dict] | None = None) -> pd.DataFrame:
    """One row per model x method x budget x seed (x protocol, given the run points of each
    protocol as a list): the method's run against its baseline's run at that budget
    (``full``: the baseline's own run; ``steps``, ``flops``: the matched runs).
    ``unplanned``: budgets whose run was not trained (:func:`unplanned_budgets`): a row each,
    with the reason."""
    if isinstance(points, list):  # beyond the first protocol, only pairs scored by that protocol
        frames = [f if i == 0 or f.empty else f[f["acc_method"].notna() | f["acc_baseline"].notna()]
                  for i, f in enumerate(matched_pairs(p, unplanned) for p in points)]
        frames = [f for f in frames if not f.empty]
        return pd.concat(frames, ignore_index=True) if frames else matched_pairs(pd.DataFrame())
    if points.empty:
        return pd.DataFrame(columns=["model", "method", "baseline", "budget", "against", "seed", "protocol"])
    rows: list[dict] = []
    by = {(r["model"], r["setting"], r["seed"]): r for _, r in points.iterrows()}
    for (model, setting, seed), r in by.items():
        parsed = parse_matched(setting)
        if parsed is None:
            continue
        baseline, method, budget = parsed
        m = by.get((model, method, seed))
        if m is None:
            continue
        for against, b, bud in ((setting, r, budget), (baseline, by.get((model, baseline, seed)), FULL)):
            if b is None or _has(rows, model, method, seed, bud):
                continue
            rows.append(_pair(m, b, model, method, baseline, bud, against, seed))
    for b in unplanned or []:
        rows += _not_trained(by, b, rows)
    return pd.DataFrame(rows)


def matched_table(pairs: pd.DataFrame, *, margin: float = DEFAULT_MARGIN, seed: int = 0) -> pd.DataFrame:
    """Seeds averaged: one row per model x method x budget, with the paired test (``margin``:
    the equivalence margin, points; ``seed``: the bootstrap's)."""
    if pairs.empty:
        return pd.DataFrame(columns=COLUMNS)
    out = []
    pairs = pairs.assign(protocol=pairs["protocol"].map(_text), _p=pairs["protocol"].map(_text).factorize()[0])
    for (model, method, budget, _), g in pairs.groupby(["model", "method", "budget", "_p"], sort=False):
        row = {"model": model, "method": method, "baseline": g["baseline"].iloc[0], "budget": budget,
               "against": g["against"].iloc[0], "seeds": g["seed"].nunique(),
               "tasks": _text(g["tasks"].iloc[0]), "protocol": _text(g["protocol"].iloc[0])}
        for c in ("steps_method", "steps_baseline", "flops_train_method", "flops_train_baseline", "acc_method",
                  "acc_baseline", "delta"):
            row[c] = float(g[c].mean())
        for c in ("acc_method_stderr", "acc_baseline_stderr"):  # seeds' standard errors, as in the comparison
            se = g[c].dropna()
            row[c] = float(np.sqrt((se ** 2).sum()) / len(se)) if len(se) else math.nan
        row["flops_ratio"] = row["flops_train_method"] / row["flops_train_baseline"]
        why = _text(g["not_trained"].iloc[0]) if "not_trained" in g else ""
        if why:  # no run to pair with
            row.update(delta_ci_low=math.nan, delta_ci_high=math.nan, p_value=math.nan,
                       verdict=f"not trained: {why}")
        else:
            row.update(paired_test(list(g["run_method"]), list(g["run_baseline"]),
                                   tasks=[t for t in row["tasks"].split(",") if t] or None, margin=margin,
                                   seed=seed))
        out.append(row)
    tab = pd.DataFrame(out)
    tab["_order"] = tab["budget"].map(BUDGET_ORDER)
    tab["_p"] = tab["protocol"].factorize()[0]  # the first protocol (the comparison's) first
    tab = tab.sort_values(["model", "_p", "method", "_order"], kind="stable").drop(columns=["_order", "_p"])
    return tab[COLUMNS].reset_index(drop=True)


def _text(v) -> str:
    """A tasks / protocol cell of the run points ('' where the run has no evaluation)."""
    return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


def _num(v, fmt: str, missing: str = "–") -> str:
    return missing if v is None or not np.isfinite(v) else fmt.format(v)


def _budget_text(budget: str) -> str:
    return {FULL: "full run", STEPS: "stop step", FLOPS: "training FLOPs"}[budget]


def matched_markdown(tab: pd.DataFrame) -> str:
    """The matched-budget section of comparison.md (and matched.md)."""
    lines = ["## Matched budgets", "",
             "Each method against its baseline trained for the same budget from the start: `B@matched(S)` runs "
             "as many steps as S ran (its stop step), `B@matched-flops(S)` spends S's share of B's training "
             "FLOPs; both with the warm-up and cosine schedule laid out over those steps. Δ = accuracy of the "
             "method − accuracy of the baseline run (percentage points, same seed and test items); FLOPs = "
             "training FLOPs, method / baseline. A positive Δ against a matched run means the method beat "
             "simply training less. Paired: the 95% paired bootstrap interval of Δ over the items both "
             "runs scored, McNemar's p, and the verdict (docs: Reading the results). Accuracy and test are "
             "those of the tasks named, one block of rows per protocol (never averaged across protocols).", ""]
    if tab.empty:
        return "\n".join(lines + ["_no matched runs finished (a method that saved nothing has none)_", ""])
    head = ["model", "method", "against", "budget", "scored on", "steps", "FLOPs", "method acc", "baseline acc",
            "Δ", "paired"]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, r in tab.iterrows():
        ci = (r["verdict"] if math.isnan(r["delta_ci_low"])
              else f"[{r['delta_ci_low']:+.2f}, {r['delta_ci_high']:+.2f}]"
              + ("" if math.isnan(r["p_value"]) else f", p = {r['p_value']:.3g}") + f", {r['verdict']}")
        scored = r["tasks"] + (f" ({r['protocol']})" if r["protocol"] else "") if r["tasks"] else "–"
        cells = [r["model"], r["method"], r["against"], _budget_text(r["budget"]), scored,
                 f"{r['steps_method']:.0f} vs {r['steps_baseline']:.0f}", _num(r["flops_ratio"], "{:.2f}x"),
                 _num(r["acc_method"], "{:.2f}") + _num(r["acc_method_stderr"], " ± {:.2f}", ""),
                 _num(r["acc_baseline"], "{:.2f}") + _num(r["acc_baseline_stderr"], " ± {:.2f}", ""),
                 _num(r["delta"], "{:+.2f}"), ci]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines + [""])


def matched_figure(pairs: pd.DataFrame, model: str):
    """Accuracy against training FLOPs for one model, one panel per protocol: per method, its
    baseline at the matched budgets and in full (a dashed line, open markers) and the method
    (a filled star)."""
    from matplotlib.lines import Line2D

    p = pairs[pairs["model"].eq(model) & pairs["acc_method"].notna() & pairs["acc_baseline"].notna()] \
        if not pairs.empty else pairs
    if p.empty:
        fig = new_figure(8, 5.2)
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no matched runs with an accuracy", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        fig.suptitle(f"{model}: methods against training less")
        return fig
    proto = p["protocol"].map(_text) if "protocol" in p else pd.Series("", index=p.index)
    panels = list(dict.fromkeys(proto))
    fig = new_figure(8 if len(panels) == 1 else 5.5 * len(panels), 5.2)
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharex=True))
    handles = []
    for ax, panel in zip(axes, panels):
        q = p[proto.eq(panel)]
        for i, (method, g) in enumerate(q.groupby("method", sort=False)):
            colour = _COLOURS[i % len(_COLOURS)]
            base = g.groupby("budget").agg(x=("flops_train_baseline", "mean"), y=("acc_baseline", "mean"),
                                           se=("acc_baseline_stderr", "mean")).reset_index()
            base = base.sort_values("x")
            ax.plot(base["x"], base["y"], ls="--", color=colour, lw=1.3, zorder=2)
            ax.errorbar(base["x"], base["y"], yerr=base["se"], fmt="o", mfc="white", mec=colour, color=colour,
                        ms=7, capsize=2.5, elinewidth=1, zorder=3)
            for _, r in base.iterrows():
                ax.annotate(_budget_text(r["budget"]), (r["x"], r["y"]), xytext=(5, -11),
                            textcoords="offset points", fontsize=7, color=colour)
            mx, my, mse = g["flops_train_method"].mean(), g["acc_method"].mean(), g["acc_method_stderr"].mean()
            ax.errorbar([mx], [my], yerr=[mse] if np.isfinite(mse) else None, fmt="*", color=colour, ms=13,
                        mec="white", mew=0.6, capsize=2.5, elinewidth=1, zorder=4)
            if ax is axes[0]:
                handles.append(Line2D([], [], ls="--", color=colour, marker="o", mfc="white",
                                      label=f"{g['baseline'].iloc[0]}, trained less"))
                handles.append(Line2D([], [], ls="", color=colour, marker="*", ms=12, label=method))
        x = pd.concat([q["flops_train_method"], q["flops_train_baseline"]]).to_numpy(dtype=float)
        x = x[np.isfinite(x) & (x > 0)]
        if len(x) and x.max() / x.min() > 20:
            ax.set_xscale("log")
        ax.margins(x=0.12)  # room for the budget labels
        ax.set_xlabel("training FLOPs")
        tasks = sorted({_text(t) for t in q.get("tasks", pd.Series(dtype=str))} - {""})
        ax.set_ylabel(f"accuracy (%) on {', '.join(tasks)}, ± 1 s.e." if tasks else "accuracy (%), ± 1 s.e.")
        ax.grid(True, alpha=0.3)
        which = f"{panel or 'log-likelihood'}: " if len(panels) > 1 else ""
        ax.set_title(f"{which}a star above its line beat training less", fontsize=8, color="#555555")
    fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=8)
    fig.suptitle(f"{model}: each method against its baseline trained less", fontsize=11)
    return fig


def figure_name(model: str) -> str:
    return f"matched_{model}"


def write_matched(points: pd.DataFrame | list[pd.DataFrame], tables_dir: str | Path,
                  figures_dir: str | Path | None, models: list[str], *, margin: float = DEFAULT_MARGIN,
                  seed: int = 0, unplanned: list[dict] | None = None) -> dict[str, Path]:
    """matched.{csv,md} in ``tables_dir`` and matched_<model>.{png,pdf} in ``figures_dir``;
    ``points``: the run points (:func:`grades.report.compare.run_points`), or one frame per
    protocol; ``unplanned``: the budgets not trained (:func:`unplanned_budgets`)."""
    pairs = matched_pairs(points, unplanned)
    tab = matched_table(pairs, margin=margin, seed=seed)
    out = Path(tables_dir)
    paths = {"matched.csv": atomic_write_text(out / "matched.csv", tab.to_csv(index=False, float_format="%.6g")),
             "matched.md": atomic_write_text(out / "matched.md", matched_markdown(tab))}
    if figures_dir is not None:
        for model in models:
            paths.update(save(matched_figure(pairs, model), Path(figures_dir), figure_name(model)))
    return paths
