"""The GradES signal figures: one layer's signals against the step (fig1), the signal per matrix type (fig4).

    fig1_layer_signals    per-matrix signal of one layer against optimizer step, with
                          tau, the end of the grace period and the freeze steps
                          (the paper's Figure 1); one panel per GradES run
    fig4_signal_by_kind   signal per matrix type, averaged over the layers whose
                          matrix of that type is still training, one panel per model
                          (the paper's Figure 4)

The data helpers (:func:`layer_signal_data`, :func:`mean_signal_by_type`) return
plain frames, so the numbers behind a figure can be checked without drawing it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from ..rundir import Run, load_run
from .plotting import (grace_line, log, log_y, new_figure, panel_grid, signal_tex, tau_line, type_colour,
                       type_label, type_order)


# ============================================================ data helpers
def main_tower(signals: pd.DataFrame) -> str:
    """The tower the figures show: the language model's when there is one."""
    towers = sorted(set(signals["tower"].dropna()))
    return "language" if "language" in towers or not towers else towers[0]


def layer_signal_data(run: Run | str | Path, layer: int | None = None, tower: str | None = None) -> dict | None:
    """Fig. 1 data: signals and freeze events of one layer (default: the middle one) of one tower.

    Returns None if the run has no signals or lacks that layer. Keys: signals
    (step, layer, type, value), events (step, type, signal), layer, tower, tau, alpha,
    grace_step, steps_planned, types.
    """
    if not isinstance(run, Run):
        loaded = load_run(run)
        if loaded is None:
            return None
        run = loaded
    sig = run.signals
    if sig.empty:
        return None
    tower = tower or main_tower(sig)
    sig = sig[sig["tower"] == tower]
    layers = sorted(sig["layer"].unique())
    if not layers:
        return None
    if layer is None:
        layer = int(layers[len(layers) // 2])
    elif layer not in layers:
        log(f"{run.label}: no layer {layer} in the {tower} tower (layers {layers[0]}..{layers[-1]})")
        return None
    rows = sig[sig["layer"] == layer][["step", "layer", "type", "value"]].sort_values(["type", "step"])
    ev = run.events
    ev = ev[(ev["layer"] == layer) & (ev["tower"] == tower)][["step", "type", "signal"]]
    return {"signals": rows.reset_index(drop=True), "events": ev.reset_index(drop=True), "layer": int(layer),
            "tower": tower, "tau": run.tau_for(tower), "alpha": run.alpha, "grace_step": run.grace_step,
            "steps_planned": run.steps_planned, "types": type_order(rows["type"])}


def mean_signal_by_type(signals: pd.DataFrame, tower: str | None = None) -> pd.DataFrame:
    """Per step (index) and matrix type (columns): the mean signal over the layers.

    Frozen matrices have no signal (NaN), so the mean is over the layers whose matrix
    of that type is still training; a type whose matrices have all frozen ends.
    """
    if signals.empty:
        return pd.DataFrame()
    tower = tower or main_tower(signals)
    s = signals[(signals["tower"] == tower) & np.isfinite(signals["value"])]
    table = s.pivot_table(index="step", columns="type", values="value", aggfunc="mean", observed=True)
    table.columns = [str(c) for c in table.columns]
    return table[type_order(table.columns)]


def preferred_run_per_model(runs: list[Run]) -> list[Run]:
    """One GradES run per model: FP+GradES, else any full-parameter one, else the first."""
    by_model: dict[str, list[Run]] = {}
    for r in runs:
        by_model.setdefault(r.model, []).append(r)
    out = []
    for model in sorted(by_model):
        rs = by_model[model]
        rs = sorted(rs, key=lambda r: (r.setting != "FP+GradES", r.mode != "fp", r.setting))
        out.append(rs[0])
    return out


# ================================================================= drawing
def fig1_layer_signals(runs: list[Run], layer: int | None = None) -> Figure | None:
    data = []
    for r in runs:
        d = layer_signal_data(r, layer)
        if d is not None:
            data.append((r, d))
    if not data:
        return None
    models, settings = panel_grid([r for r, _ in data])
    fig = new_figure(7.2 * len(settings), 3.9 * len(models))
    axes = fig.subplots(len(models), len(settings), squeeze=False)
    used = set()
    for r, d in data:
        i, j = models.index(r.model), settings.index(r.setting)
        used.add((i, j))
        ax = axes[i][j]
        sig = d["signals"]
        for t in d["types"]:
            s = sig[(sig["type"] == t) & np.isfinite(sig["value"]) & (sig["value"] > 0)]
            ax.plot(s["step"], s["value"], color=type_colour(t), lw=1.1, label=type_label(t))
        ev = d["events"]
        ev = ev[np.isfinite(ev["signal"]) & (ev["signal"] > 0)]
        for t in d["types"]:
            e = ev[ev["type"] == t]
            ax.scatter(e["step"], e["signal"], marker="v", s=42, color=type_colour(t), edgecolors="black",
                       linewidths=0.7, zorder=4)
        tau_line(ax, d["tau"])
        grace_line(ax, d["grace_step"], f"grace end (α = {d['alpha']:g}, step {d['grace_step']})")
        log_y(ax)
        ax.set_xlim(0, max(d["steps_planned"], int(sig["step"].max()) if len(sig) else 0))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("signal (L1, log scale)")
        tower = "" if d["tower"] == "language" else f" ({d['tower']} tower)"
        ax.set_title(f"{r.label}: layer {d['layer']}{tower}\nsignal {signal_tex(r)}", fontsize=10)
        handles, labels = ax.get_legend_handles_labels()
        handles.append(Line2D([], [], ls="", marker="v", color="white", markeredgecolor="black", markersize=7))
        labels.append(f"frozen ({len(d['events'])} of {len(d['types'])})")
        ax.legend(handles, labels, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(True, which="major", alpha=0.3)
    for i in range(len(models)):
        for j in range(len(settings)):
            if (i, j) not in used:
                axes[i][j].set_axis_off()
    which = "middle layer" if layer is None else f"layer {layer}"
    fig.suptitle(f"GradES signal per weight matrix, {which} (▼ = freeze)", fontsize=11)
    return fig


def fig4_signal_by_kind(runs: list[Run]) -> Figure | None:
    chosen = preferred_run_per_model(runs)
    if not chosen:
        return None
    n = len(chosen)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = new_figure(7.2 * ncols, 3.9 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, r in zip(axes, chosen):
        tower = main_tower(r.signals)
        table = mean_signal_by_type(r.signals, tower)
        n_layers = r.signals.loc[r.signals["tower"] == tower, "layer"].nunique()
        for t in table.columns:
            s = table[t]
            s = s[np.isfinite(s) & (s > 0)]
            ax.plot(s.index, s.values, color=type_colour(t), lw=1.2, label=type_label(t))
        tau_line(ax, r.tau_for(tower))
        grace_line(ax, r.grace_step, f"grace end (step {r.grace_step})")
        log_y(ax)
        ax.set_xlim(0, max(r.steps_planned, int(table.index.max()) if len(table) else 0))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("signal (L1, log scale)")
        ax.set_title(f"{r.label} ({n_layers} layers)\nsignal {signal_tex(r)}", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.suptitle("GradES signal by matrix type\n(mean over the layers whose matrix is not yet frozen)", fontsize=11)
    return fig
