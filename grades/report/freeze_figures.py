"""The GradES freeze figures: the frozen fraction against training (fig3), each matrix's freeze step (heatmap).

    fig3_frozen_fraction  cumulative fraction of frozen matrices against training
                          progress, one line per GradES run (the paper's Figure 3)
    freeze_heatmap        the step at which each matrix (layer x type) froze

The data helpers (:func:`frozen_fraction_curve`, :func:`freeze_step_grid`) return
plain frames, so the numbers behind a figure can be checked without drawing it.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..rundir import Run
from .plotting import grace_line, log, new_figure, panel_grid, type_order


# ============================================================ data helpers
def frozen_fraction_curve(events: pd.DataFrame, n_components: int, last_step: int) -> pd.DataFrame:
    """Cumulative fraction of frozen components after each step (a step function).

    Rows (step, frozen, fraction): step 0 with nothing frozen, one row per step with
    freeze events, and a last row at ``last_step`` (the end of training).
    """
    if n_components <= 0:
        raise ValueError("n_components must be positive")
    counts = events.groupby("step").size().sort_index() if len(events) else pd.Series(dtype=int)
    steps = [0] + [int(s) for s in counts.index]
    frozen = [0] + [int(c) for c in counts.cumsum()]
    end = max(int(last_step), steps[-1])
    if steps[-1] != end:
        steps.append(end)
        frozen.append(frozen[-1])
    df = pd.DataFrame({"step": steps, "frozen": frozen})
    df["fraction"] = df["frozen"] / n_components
    return df


def freeze_step_grid(signals: pd.DataFrame, events: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(step, tracked): layer x column grids; step = freeze step (NaN: never froze),
    tracked = whether that matrix exists. Columns are types, prefixed by the tower
    ("L.q", "V.qkv") when there is more than one tower."""
    comps = signals[["layer", "type", "tower"]].drop_duplicates()
    multi = comps["tower"].nunique() > 1

    def col(t, tower):
        return f"{'V' if tower == 'vision' else 'L'}.{t}" if multi else t

    cols = []
    for tower in sorted(comps["tower"].unique(), key=lambda x: x != "language"):
        cols += [col(t, tower) for t in type_order(comps.loc[comps["tower"] == tower, "type"])]
    layers = sorted(comps["layer"].unique())
    step = pd.DataFrame(np.nan, index=layers, columns=cols)
    tracked = pd.DataFrame(False, index=layers, columns=cols)
    for r in comps.itertuples():
        tracked.loc[r.layer, col(r.type, r.tower)] = True
    for r in events.itertuples():
        c = col(r.type, r.tower)
        if c in step.columns and r.layer in step.index:
            prev = step.loc[r.layer, c]
            step.loc[r.layer, c] = r.step if math.isnan(prev) else min(prev, r.step)
    step.index.name = tracked.index.name = "layer"
    return step, tracked


# ================================================================= drawing
def fig3_frozen_fraction(runs: list[Run]) -> Figure | None:
    usable = []
    for r in runs:
        n = r.n_components
        if not n:
            log(f"{r.label}: number of tracked matrices unknown; left out of fig3")
            continue
        usable.append((r, frozen_fraction_curve(r.events, n, r.steps_run), n))
    if not usable:
        return None
    planned = {r.steps_planned for r, _, _ in usable}
    normalise = len(planned) > 1
    fig = new_figure(7.5, 4.6)
    ax = fig.subplots()
    colours = [f"C{i % 10}" for i in range(len(usable))]
    graces = {(r.grace_step / r.steps_planned) if normalise else r.grace_step for r, _, _ in usable}
    for (r, curve, n), c in zip(usable, colours):
        x = curve["step"] / r.steps_planned if normalise else curve["step"]
        ls = "--" if r.mode == "lora" else "-"
        ax.step(x, curve["fraction"], where="post", color=c, ls=ls, lw=1.6,
                label=f"{r.label} ({int(curve['frozen'].iloc[-1])}/{n} frozen)")
        if r.steps_run < r.steps_planned:
            ax.plot(x.iloc[-1], curve["fraction"].iloc[-1], "o", color=c, ms=5)
        if len(graces) > 1:
            g = r.grace_step / r.steps_planned if normalise else r.grace_step
            ax.axvline(g, color=c, ls=":", lw=1, alpha=0.8)
    if len(graces) == 1:
        g = graces.pop()
        alphas = {r.alpha for r, _, _ in usable}
        a = f"α = {alphas.pop():g}, " if len(alphas) == 1 else ""
        grace_line(ax, g, f"grace end ({a}{'step ' if not normalise else ''}{g:.3g})")
    else:
        ax.plot([], [], color="grey", ls=":", label="grace end (per run, dotted)")
    if any(r.steps_run < r.steps_planned for r, _, _ in usable):
        ax.plot([], [], "o", color="grey", label="training stopped early")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlim(0, 1.0 if normalise else max(planned))
    ax.set_xlabel("fraction of planned training (optimizer step / planned steps)" if normalise
                  else "optimizer step")
    ax.set_ylabel("fraction of weight matrices frozen")
    ax.set_title("Cumulative fraction of frozen weight matrices")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="upper left")
    return fig


def freeze_heatmap(runs: list[Run]) -> Figure | None:
    if not runs:
        return None
    grids = [(r, *freeze_step_grid(r.signals, r.events)) for r in runs]
    models, settings = panel_grid(runs)
    max_layers = max(len(s.index) for _, s, _ in grids)
    max_cols = max(len(s.columns) for _, s, _ in grids)
    w = 1.6 + 0.62 * max_cols
    h = 1.3 + 0.24 * max_layers
    fig = new_figure(w * len(settings), h * len(models))
    axes = fig.subplots(len(models), len(settings), squeeze=False)
    used = set()
    for r, step, tracked in grids:
        i, j = models.index(r.model), settings.index(r.setting)
        used.add((i, j))
        ax = axes[i][j]
        vals = step.to_numpy(dtype=float)
        lo, hi = r.grace_step, max(r.steps_planned, r.grace_step + 1)
        im = ax.imshow(np.ma.masked_invalid(vals), cmap="viridis", vmin=lo, vmax=hi, aspect="auto",
                       interpolation="nearest")
        cmap, norm = im.get_cmap(), im.norm
        nrow, ncol = vals.shape
        small = nrow * ncol <= 400
        fs = 7 if nrow <= 16 else 5
        for a in range(nrow):
            for b in range(ncol):
                if not tracked.iat[a, b]:
                    continue
                v = vals[a, b]
                if math.isnan(v):
                    ax.add_patch(Rectangle((b - 0.5, a - 0.5), 1, 1, facecolor="#c8c8c8", edgecolor="white", lw=0.5))
                    if small:
                        ax.text(b, a, "never", ha="center", va="center", fontsize=fs, color="#404040")
                elif small:
                    rgb = cmap(norm(v))[:3]
                    lum = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
                    ax.text(b, a, f"{int(v)}", ha="center", va="center", fontsize=fs,
                            color="black" if lum > 0.5 else "white")
        ax.set_xticks(range(ncol), list(step.columns))
        every = max(1, math.ceil(nrow / 30))
        ax.set_yticks(range(0, nrow, every), [str(x) for x in step.index[::every]])
        ax.set_xlabel("matrix type")
        ax.set_ylabel("layer")
        n_frozen = int(np.isfinite(vals).sum())
        ax.set_title(f"{r.label}\n{n_frozen}/{int(tracked.to_numpy().sum())} frozen (grey: never), "
                     f"grace end step {r.grace_step}", fontsize=10)
        cb = fig.colorbar(im, ax=ax, shrink=0.9)
        cb.set_label("freeze step")
    for i in range(len(models)):
        for j in range(len(settings)):
            if (i, j) not in used:
                axes[i][j].set_axis_off()
    fig.suptitle("Optimizer step at which each weight matrix froze", fontsize=11)
    return fig
