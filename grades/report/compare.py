"""Comparison of stopping methods: a ranked table and Pareto figures, from run files only.

    python -m grades.report compare --runs results/runs/<profile> \\
        --tables results/tables/<profile> --figures figures/<profile> [--select MODEL/SLUG/seedK ...]

Writes ``comparison.{csv,md}`` and, per model, ``pareto_<model>.{png,pdf}``.

A run's accuracy is its score averaged over the model's tasks of one protocol (percent;
the protocol of the model's first task, e.g. ``loglikelihood`` with ``acc``: the table's
``protocol`` and ``metric`` columns and each model's heading say which),
with the standard error combined as sqrt(sum se^2) / n_tasks; a setting's row averages
its seeds the same way. Total time is training + validation wall time (early stopping
pays for its validation passes) and FLOPs are training + validation FLOPs, both from
``train.json``. Within each model rows are sorted by accuracy (best first), then by
total time; the best accuracy, the shortest time and the fewest FLOPs are marked, and
so are the settings on the Pareto frontier (no other setting is at least as accurate
and at most as costly, and strictly better in one of the two).

Each setting is also compared with its baseline item by item and its speedup given with
an interval (:mod:`grades.report.claims`); a model without per-item records keeps the
unpaired "Δ best". The Pareto figure has one point per run (seed): accuracy against
total time (left) and against FLOPs (right), error bars the paired 95% interval of the
run against its baseline's run of the same seed (:func:`error_bars`), methods coloured, full
fine-tuning drawn as circles and LoRA as squares, the frontier as a staircase, and
the base model's accuracy (no fine-tuning) as a dotted line when it was evaluated.
"""

from __future__ import annotations

import math
import os
import re
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_write_text
from .claims import (ClaimOptions, Claims, claim_cells, claim_heads, claim_row, has_claims, load_claims,
                     seed_cell, seed_sd, speed_cells, speed_heads, with_claims)
from .plotting import new_figure, save
from .tables import combined_stderr, protocol_pools

# fixed colours for the built-in methods (kept here so the report does not import torch);
# any other method gets the next colour of _EXTRA_COLOURS, in order of first appearance
METHOD_COLOURS = {
    "none": "#7f7f7f", "grades": "#1f77b4", "grades-v1": "#17becf", "grades-weight": "#9467bd",
    "grades-official": "#e377c2", "es": "#d62728", "autofreeze": "#2ca02c", "freezeout": "#ff7f0e",
    "bottom-k": "#8c564b",
}
_EXTRA_COLOURS = ["#bcbd22", "#393b79", "#637939", "#843c39", "#7b4173", "#3182bd", "#e6550d", "#31a354"]
MODE_MARKERS = {"fp": "o", "lora": "s"}

TABLE_COLUMNS = ["model", "rank", "setting", "method", "mode", "acc", "acc_stderr", "acc_gap", "acc_gap_stderr",
                 "tied_best", "total_time_s", "train_time_s", "validation_time_s", "flops_total", "frozen_ratio",
                 "frozen_param_ratio", "steps_run", "steps_planned", "seeds", "tasks", "best_acc", "best_time",
                 "best_flops", "pareto_time", "pareto_flops", "stop_reason", "protocol", "metric"]


def _log(msg: str) -> None:
    print(f"compare: {msg}", file=sys.stderr)


# ======================================================================= data
def _run_key(run_dir: str) -> str:
    """'<model>/<slug>/seed<k>' of a run directory."""
    return "/".join(Path(run_dir).parts[-3:])


def run_points(train: pd.DataFrame, evals: pd.DataFrame, select: list[str] | None = None,
               protocol: str | None = None) -> pd.DataFrame:
    """One row per finished run: its train.json numbers and its accuracy over tasks (%).

    ``select``: keep only these runs ('<model>/<slug>/seed<k>'; '<model>/<slug>' keeps
    every seed). ``protocol``: the accuracy over the tasks of this protocol (default: each
    model's first, :func:`primary_protocol`). Runs without an evaluation keep NaN accuracy."""
    if train.empty:
        return pd.DataFrame()
    t = train.copy()
    t["run"] = [_run_key(d) for d in t["run_dir"]]
    if select is not None:
        wanted = set(select)
        keep = [r in wanted or r.rsplit("/", 1)[0] in wanted for r in t["run"]]
        missing = sorted(w for w in wanted if not any(r == w or r.rsplit("/", 1)[0] == w for r in t["run"]))
        if missing:
            _log(f"no finished run for {missing}")
        t = t[keep]
    if evals.empty:
        ev = evals
    elif protocol is None:
        ev = primary_protocol(evals[evals["mode"].ne("base")])
    else:
        ev = evals[evals["mode"].ne("base") & _protocols(evals).eq(protocol)]
    if ev.empty:
        t["acc"], t["acc_stderr"], t["tasks"], t["protocol"], t["metric"] = math.nan, math.nan, "", "", ""
    else:
        g = ev.groupby(["model", "setting", "seed"], sort=False)
        acc = g.agg(acc=("acc", "mean"), acc_stderr=("acc_stderr", combined_stderr),
                    tasks=("task", lambda s: ",".join(dict.fromkeys(s))), protocol=("protocol", "first"),
                    metric=("metric", lambda s: ",".join(dict.fromkeys(map(str, s))))).reset_index()
        acc["acc"] *= 100
        acc["acc_stderr"] *= 100
        t = t.merge(acc, on=["model", "setting", "seed"], how="left")
    return t.reset_index(drop=True)


def _protocols(evals: pd.DataFrame) -> pd.Series:
    """Each eval row's protocol (log-likelihood where an older eval.json names none)."""
    return evals["protocol"].fillna("loglikelihood") if "protocol" in evals else \
        pd.Series("loglikelihood", index=evals.index)


def protocols(evals: pd.DataFrame) -> list[str]:
    """The protocols of the fine-tuned runs' evaluations, each model's first one first."""
    if evals.empty:
        return []
    ev = evals[evals["mode"].ne("base")]
    return list(dict.fromkeys([*_protocols(primary_protocol(ev)), *_protocols(ev)]))


def primary_protocol(evals: pd.DataFrame) -> pd.DataFrame:
    """The eval rows of each model's first protocol (that of its first task row): accuracies of
    different protocols and metrics are not averaged together."""
    if evals.empty or "protocol" not in evals:
        return evals
    proto = _protocols(evals)
    first = proto.groupby(evals["model"], sort=False).first()
    return evals[proto.eq(evals["model"].map(first))]


def base_accuracy(evals: pd.DataFrame) -> dict[str, tuple[float, float]]:
    """{model: (accuracy %, stderr %)} of the un-fine-tuned model, where evaluated (its first protocol)."""
    if evals.empty:
        return {}
    b = primary_protocol(evals[evals["mode"].eq("base")])
    out = {}
    for model, grp in b.groupby("model", sort=False):
        out[model] = (100 * float(grp["acc"].mean()), 100 * combined_stderr(grp["acc_stderr"]))
    return out


def pareto_mask(cost, acc) -> np.ndarray:
    """True where no other point has cost <= and acc >= with one of them strict.

    Points with a non-finite cost or accuracy are never on the frontier."""
    cost, acc = np.asarray(cost, dtype=float), np.asarray(acc, dtype=float)
    ok = np.isfinite(cost) & np.isfinite(acc)
    mask = np.zeros(len(cost), dtype=bool)
    for i in np.flatnonzero(ok):
        others = ok.copy()
        others[i] = False
        dominated = others & (cost <= cost[i]) & (acc >= acc[i]) & ((cost < cost[i]) | (acc > acc[i]))
        mask[i] = not dominated.any()
    return mask


def comparison_table(points: pd.DataFrame, claims: Claims | None = None) -> pd.DataFrame:
    """One row per model x setting (seeds averaged, ``acc_sd_seeds`` their spread), ranked within
    each model; with ``claims`` also each setting's paired claim against its baseline and its
    speedups with their intervals (:func:`grades.report.claims.with_claims`)."""
    if points.empty:
        return pd.DataFrame(columns=TABLE_COLUMNS)
    g = points.groupby(["model", "setting", "mode", "method"], sort=False)
    means = ["total_time_s", "train_time_s", "validation_time_s", "flops_total", "frozen_ratio",
             "frozen_param_ratio", "steps_run"]
    tab = g[means].mean().reset_index()
    tab["acc"] = g["acc"].mean().values
    tab["acc_stderr"] = g["acc_stderr"].agg(combined_stderr).values
    tab["acc_sd_seeds"] = g["acc"].agg(seed_sd).values
    tab["steps_planned"] = g["steps_planned"].max().values
    tab["seeds"] = g["seed"].nunique().values
    tab["tasks"] = g["tasks"].first().values
    tab["protocol"] = g["protocol"].first().values if "protocol" in points else ""
    tab["metric"] = g["metric"].first().values if "metric" in points else ""
    tab["stop_reason"] = g["stop_reason"].agg(lambda s: "; ".join(sorted(set(map(str, s))))).values
    parts = []
    for _, grp in tab.groupby("model", sort=False):
        grp = grp.copy()
        acc = grp["acc"]
        best = acc.max() if acc.notna().any() else math.nan
        best_se = grp.loc[acc.idxmax(), "acc_stderr"] if acc.notna().any() else math.nan
        grp["best_acc"] = acc.eq(best)
        grp["best_time"] = grp["total_time_s"].eq(grp["total_time_s"].min())
        grp["best_flops"] = grp["flops_total"].eq(grp["flops_total"].min())
        grp["acc_gap"] = acc - best
        grp["acc_gap_stderr"] = [0.0 if b else math.hypot(se, best_se)
                                 for b, se in zip(grp["best_acc"], grp["acc_stderr"])]
        grp["tied_best"] = grp["best_acc"] | (grp["acc_gap"].abs() <= 2 * grp["acc_gap_stderr"])
        grp["pareto_time"] = pareto_mask(grp["total_time_s"], acc)
        grp["pareto_flops"] = pareto_mask(grp["flops_total"], acc)
        grp["_acc"] = acc.fillna(-math.inf)
        grp = grp.sort_values(["_acc", "total_time_s", "setting"], ascending=[False, True, True], kind="stable")
        grp["rank"] = range(1, len(grp) + 1)
        parts.append(grp.drop(columns="_acc"))
    tab = pd.concat(parts, ignore_index=True)[TABLE_COLUMNS + ["acc_sd_seeds"]]
    # each row's claim is over the tasks of the protocol the row averages
    return with_claims(tab, claims, pool_col="protocol" if "protocol" in tab else None) if claims is not None else tab


# =================================================================== markdown
def _short_reason(s: str) -> str:
    return "; ".join(dict.fromkeys(re.sub(r"\s*\(.*?\)", "", p).strip() for p in str(s).split("; ")))


def _bold(text: str, on: bool) -> str:
    return f"**{text}**" if on else text


def comparison_markdown(tab: pd.DataFrame, base: dict[str, tuple[float, float]] | None = None,
                        claims: Claims | None = None) -> str:
    """One block per model; with paired claims (:func:`comparison_table` with ``claims``) each
    setting against its baseline item by item, else Δ best with unpaired standard errors."""
    if tab.empty:
        return "_no finished runs to compare_\n"
    base = base or {}
    margin = claims.options.margin if claims is not None else None
    lines = [
        "Stopping methods compared on the same model, data, steps and accounting. Accuracy (%) is "
        "lm-eval's, averaged over tasks, ± one standard error (one seed) or ± the standard deviation over "
        "seeds (several). Total time = training + validation wall time on this machine; FLOPs = "
        "training + validation matmul FLOPs. Frozen = share of weight matrices frozen at the end. "
        "**Bold**: best value of the column for the model (highest accuracy, least time, fewest FLOPs). "
        "Pareto: no other setting is at least as accurate and at most as costly in time (t) or FLOPs (F).",
        "",
        "Δ vs baseline: the setting against its baseline (same mode, no stopping method) on the same "
        "items, seed k with seed k: the mean per-item difference (points) with its 95% paired bootstrap "
        "interval, McNemar's exact p, the equivalence test's p (TOST) within ± the margin"
        + (f" ({margin:g} point{'s' if margin != 1 else ''})" if margin is not None else "")
        + ", the verdict (equivalent / different / undecided (too few items)) and the minimum detectable "
        "difference (MDD, points: 80% power at the 5% level). Speedup vs baseline: its total time over the "
        "setting's, with a 95% interval (docs: Reading the results). Without per-item records (samples.jsonl) "
        "a model's block shows Δ best instead: the difference with its most accurate setting, ± the "
        "combined standard error, ≈ within two standard errors.",
        ""]
    for model, grp in tab.groupby("model", sort=False):
        tasks = grp["tasks"].dropna()
        what = tasks.iloc[0] if len(tasks) and tasks.iloc[0] else ""
        proto = grp["protocol"].dropna()
        if what and len(proto) and proto.iloc[0]:
            what += f"; protocol {proto.iloc[0]}, metric {grp['metric'].dropna().iloc[0]}"
        lines.append(f"## {model}" + (f" ({what})" if what else ""))
        lines.append("")
        paired = has_claims(grp)
        speed = "speedup_vs_own" in grp and bool(grp["speedup_vs_own"].notna().any())
        head = ["#", "setting", "method", "accuracy", *(claim_heads(claims) if paired else ["Δ best"]), "total s",
                *(speed_heads() if speed else []), "FLOPs", "frozen", "steps", "Pareto", "stop"]
        lines += ["| " + " | ".join(head) + " |", "|" + "|".join("---:" if h in ("#",) else "---" for h in head) + "|"]
        for _, r in grp.iterrows():
            if math.isnan(r["acc"]):
                acc, gap = "–", ["–"]
            else:
                acc = _bold(seed_cell(r["acc"], r.get("acc_sd_seeds", math.nan), r["acc_stderr"], r["seeds"]),
                            r["best_acc"])
                gap = ["–" if r["best_acc"] else f"{r['acc_gap']:+.2f} ± {r['acc_gap_stderr']:.2f}" +
                       (" ≈" if r["tied_best"] else "")]
            if paired:
                gap = claim_cells(r)
            pareto = ", ".join(x for x, on in (("t", r["pareto_time"]), ("F", r["pareto_flops"])) if on)
            steps = f"{r['steps_run']:.0f}/{r['steps_planned']:.0f}"
            cells = [str(r["rank"]), r["setting"], r["method"], acc, *gap,
                     _bold(f"{r['total_time_s']:.1f}", r["best_time"]), *(speed_cells(r) if speed else []),
                     _bold(f"{r['flops_total']:.3g}", r["best_flops"]),
                     f"{100 * r['frozen_ratio']:.0f}%", steps, pareto, _short_reason(r["stop_reason"])]
            lines.append("| " + " | ".join(cells) + " |")
        if model in base:
            a, se = base[model]
            lines += ["", f"Base model without fine-tuning: {a:.2f} ± {se:.2f}."]
        lines.append("")
    return "\n".join(lines)


# ===================================================================== figure
def method_colours(methods) -> dict[str, str]:
    """{method: colour}, built-in methods first (in the palette's order), then the others as they come."""
    methods = list(dict.fromkeys(methods))
    known = [m for m in METHOD_COLOURS if m in methods]
    out, extra = {m: METHOD_COLOURS[m] for m in known}, iter(_EXTRA_COLOURS * 4)
    for m in methods:
        if m not in out:
            out[m] = next(extra, "#000000")
    return out


def point_labels(settings: list[str]) -> dict[str, str]:
    """Short point labels: a prefix shared by every setting ('LoRA+') is dropped, and a
    sweep point '<base>[k=v]' keeps only '[k=v]' when its base is drawn too."""
    prefix = ""
    if len(settings) > 1:  # 'LoRA', 'LoRA+ES', 'LoRA+GradES' -> 'LoRA', 'ES', 'GradES'
        common = os.path.commonprefix([s + "+" for s in settings])
        prefix = common[:common.rfind("+") + 1]
    out = {}
    for s in settings:
        m = re.fullmatch(r"(.*)(\[.*\])", s)
        if m and m.group(1) in settings:
            out[s] = m.group(2)
        else:
            out[s] = s[len(prefix):] if prefix and len(s) > len(prefix) else s
    return out


# label positions tried in turn (offset in points from the marker, horizontal alignment)
_LABEL_SLOTS = [(6, 3, "left"), (6, -10, "left"), (-6, 3, "right"), (-6, -10, "right"), (6, 12, "left"),
                (-6, 12, "right"), (6, -19, "left"), (-6, -19, "right"), (6, 21, "left"), (-6, 21, "right")]


def _overlap(a, b) -> float:
    w = min(a.x1, b.x1) - max(a.x0, b.x0)
    h = min(a.y1, b.y1) - max(a.y0, b.y0)
    return w * h if w > 0 and h > 0 else 0.0


def place_labels(ax, xs, ys, labels, fontsize: float = 7) -> list:
    """Annotate each point with its label at the first slot that overlaps no label, no other
    marker and stays inside the axes (else the slot with the least overlap)."""
    from matplotlib.transforms import Bbox

    fig = ax.figure
    fig.canvas.draw()  # settle the layout and the limits, so display coordinates are final
    renderer = fig.canvas.get_renderer()
    disp = ax.transData.transform(np.column_stack([xs, ys]))
    r = 5 * fig.dpi / 72  # half a marker, in pixels
    markers = [Bbox.from_extents(px - r, py - r, px + r, py + r) for px, py in disp]
    frame = ax.get_window_extent(renderer)
    placed, texts = [], []
    for i in np.argsort(-np.asarray(ys, dtype=float), kind="stable"):
        best = None
        for dx, dy, ha in _LABEL_SLOTS:
            t = ax.annotate(labels[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points", ha=ha,
                            fontsize=fontsize, color="#333333", zorder=4)
            bb = t.get_window_extent(renderer)
            cost = sum(_overlap(bb, o) for o in placed) + sum(_overlap(bb, m) for j, m in enumerate(markers)
                                                              if j != i)
            outside = bb.width * bb.height - _overlap(bb, frame)
            cost += 10 * outside
            if best is None or cost < best[0]:
                if best is not None:
                    best[1].remove()
                best = (cost, t, bb)
            else:
                t.remove()
            if cost == 0:
                break
        placed.append(best[2])
        texts.append(best[1])
    return texts


def error_bars(pts: pd.DataFrame, claims: Claims | None) -> tuple[list, list[str]]:
    """Per point (run): its error bar as (below, above) and what it is: ``paired`` (the 95%
    interval of its difference with the baseline's run of the same seed, around the point),
    ``baseline`` (no bar: the reference of the others) or ``se`` (± 1 standard error: no
    per-item records)."""
    bars, kinds = [], []
    bases = set(claims.per_seed["paired_baseline"]) if claims is not None and len(claims.per_seed) else set()
    for _, r in pts.iterrows():
        c = None
        if claims is not None:
            pool = r["protocol"] if "protocol" in pts and isinstance(r["protocol"], str) else None
            c = claim_row(claims.per_seed, r["model"], r["setting"], pool, seed=r["seed"])
        if c is not None and np.isfinite([c["paired_diff"], c["paired_lo"], c["paired_hi"]]).all():
            bars.append((max(0.0, c["paired_diff"] - c["paired_lo"]), max(0.0, c["paired_hi"] - c["paired_diff"])))
            kinds.append("paired")
        elif r["setting"] in bases:
            bars.append(None)
            kinds.append("baseline")
        else:
            se = r["acc_stderr"]
            bars.append((se, se) if np.isfinite(se) else None)
            kinds.append("se")
    return bars, kinds


def pareto_figure(points: pd.DataFrame, model: str, base: tuple[float, float] | None = None,
                  claims: Claims | None = None):
    """Two panels (accuracy vs total time, vs FLOPs) for one model; returns a Figure. Error bars:
    :func:`error_bars` (the paired intervals against the baseline where there are per-item records)."""
    from matplotlib.lines import Line2D

    pts = points[points["model"].eq(model)] if not points.empty else points
    fig = new_figure(12, 5.2)
    axes = fig.subplots(1, 2, sharey=True)
    if pts.empty or not pts["acc"].notna().any():
        for ax in axes:
            ax.text(0.5, 0.5, "no evaluated runs", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
        fig.suptitle(f"{model}: accuracy against cost")
        return fig
    pts = pts[pts["acc"].notna()].copy()
    colours = method_colours(pts["method"])
    short = point_labels(list(dict.fromkeys(pts["setting"])))
    n_seeds = pts.groupby("setting")["seed"].nunique()
    labels = [short[s] + (f" s{k}" if n_seeds[s] > 1 else "") for s, k in zip(pts["setting"], pts["seed"])]
    bars, kinds = error_bars(pts, claims)
    below = np.array([b[0] if b else 0.0 for b in bars])
    above = np.array([b[1] if b else 0.0 for b in bars])
    # the base model's line is drawn when it does not squash the runs into a band of the panel
    lo = float((pts["acc"] - below).min())
    hi = float((pts["acc"] + above).max())
    show_base = base is not None and np.isfinite(base[0])
    base_in_view = show_base and base[0] >= lo - (hi - lo) - 1
    for ax, col, xlabel in ((axes[0], "total_time_s", "total time (s): training + validation"),
                            (axes[1], "flops_total", "FLOPs: training + validation")):
        for (_, r), bar in zip(pts.iterrows(), bars):
            ax.errorbar(r[col], r["acc"], yerr=None if bar is None else [[bar[0]], [bar[1]]],
                        fmt=MODE_MARKERS.get(r["mode"], "D"), color=colours[r["method"]], ms=7, mec="white",
                        mew=0.6, elinewidth=1, capsize=2.5, alpha=0.9, zorder=3)
        mask = pareto_mask(pts[col], pts["acc"])
        front = pts[mask].sort_values([col, "acc"])
        if len(front):
            ax.plot(front[col], front["acc"], drawstyle="steps-post", color="black", lw=1.2, ls="--", zorder=2)
            ax.scatter(front[col], front["acc"], s=150, facecolors="none", edgecolors="black", lw=1.2, zorder=5)
        if base_in_view:
            ax.axhline(base[0], color="#555555", ls=":", lw=1.2, zorder=1)
        x = pts[col].to_numpy(dtype=float)
        x = x[np.isfinite(x) & (x > 0)]
        if len(x) and x.max() / x.min() > 20:
            ax.set_xscale("log")
        else:
            xlo, xhi = (x.min(), x.max()) if len(x) else (0, 1)
            pad = 0.08 * (xhi - xlo) if xhi > xlo else 0.1 * max(xhi, 1)
            ax.set_xlim(max(0, xlo - pad), xhi + 2.5 * pad)  # room for the labels on the right
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3)
    tasks = pts["tasks"].dropna()
    task = tasks.iloc[0] if len(tasks) and tasks.iloc[0] else "accuracy"
    bar_text = {"paired": "95% paired interval of the difference\nwith the baseline's run (same seed)",
                "baseline": "baselines: no bar (the reference)", "se": "± 1 s.e. (no per-item records)"}
    axes[0].set_ylabel(f"accuracy (%) on {task}" + (", ± 1 s.e." if set(kinds) <= {"se"} else ""))
    for ax, col in ((axes[0], "total_time_s"), (axes[1], "flops_total")):
        place_labels(ax, pts[col].to_numpy(dtype=float), pts["acc"].to_numpy(dtype=float), labels)
    handles = [Line2D([], [], ls="", marker="o", color=c, ms=8, label=m) for m, c in colours.items()]
    handles += [Line2D([], [], ls="", marker=mk, color="#444444", mfc="white", ms=7, label=f"mode {md}")
                for md, mk in MODE_MARKERS.items() if md in set(pts["mode"])]
    handles.append(Line2D([], [], ls="--", color="black", marker="o", mfc="none", ms=9, label="Pareto frontier"))
    if "paired" in kinds:
        handles += [Line2D([], [], ls="", marker="|", color="#444444", ms=10, label="error bars: " + bar_text[k])
                    if k == "paired" else Line2D([], [], ls="", label=bar_text[k])
                    for k in ("paired", "baseline", "se") if k in kinds]
    if show_base:
        where = "" if base_in_view else ", below the axis"
        handles.append(Line2D([], [], ls=":" if base_in_view else "", color="#555555",
                              label=f"base model (no fine-tuning):\n{base[0]:.1f} ± {base[1]:.1f}%{where}"))
    fig.legend(handles=handles, loc="outside right upper", title="method", fontsize=8, title_fontsize=9)
    fig.suptitle(f"{model}: accuracy against cost, one point per run (frontier: not beaten on both axes)")
    return fig


def figure_name(model: str) -> str:
    return f"pareto_{model}"


# ====================================================================== entry
def write_comparison(runs_dir: str | Path, tables_dir: str | Path, figures_dir: str | Path | None = None,
                     select: list[str] | None = None, models: list[str] | None = None,
                     options: ClaimOptions | None = None, matched: bool = False) -> dict[str, Path]:
    """comparison.{csv,md} in ``tables_dir``; pareto_<model>.{png,pdf} in ``figures_dir``.

    ``models``: draw a figure for each of these (an empty one if a model has no
    evaluated run), default every model with a selected run. ``options``: the margin,
    paired baseline and bootstrap seed of the claims (:mod:`grades.report.claims`).
    ``matched``: also the matched-budget table and figures (:mod:`grades.report.matched`),
    the table appended to comparison.md."""
    from ..rundir import finished_runs
    from .runs import collect

    train, evals = collect(runs_dir)
    points = run_points(train, evals, select)
    claims = load_claims(finished_runs(runs_dir), options, pools=protocol_pools(evals))
    tab = comparison_table(points, claims)
    base = base_accuracy(evals)
    out = Path(tables_dir)
    if models is None:
        models = list(dict.fromkeys(points["model"])) if not points.empty else []
    paths, md = {}, comparison_markdown(tab, base, claims)
    if matched:
        from .matched import unplanned_budgets, write_matched

        o = claims.options
        by_protocol = [run_points(train, evals, select, protocol=p) for p in protocols(evals)] or [points]
        paths.update(write_matched(by_protocol, out, figures_dir, models, margin=o.margin, seed=o.seed,
                                   unplanned=unplanned_budgets(runs_dir)))
        md += "\n" + paths["matched.md"].read_text()
    paths.update({
        "comparison.csv": atomic_write_text(out / "comparison.csv", tab.to_csv(index=False, float_format="%.6g")),
        "comparison.md": atomic_write_text(out / "comparison.md", md),
    })
    if figures_dir is not None:
        for model in models:
            fig = pareto_figure(points, model, base.get(model), claims)
            paths.update(save(fig, Path(figures_dir), figure_name(model)))
    return paths
