"""The report's figure kit: blank figures, atomic PNG + PDF output, log axes, reference lines, colours.

Every figure of :mod:`grades.report` (the GradES figures, the VLM convergence figure,
the Pareto figures) is drawn on a :func:`new_figure` and written by :func:`save`, so
they share one size policy, one resolution and one way of replacing files. Matplotlib's
object API only (no pyplot state), so drawing is safe in any process.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter

from ..io import atomic_path
from ..rundir import Run, setting_rank

FORMATS = ("png", "pdf")
DPI = 150

# canonical order of matrix types: grades.components.TYPE_ORDER (a test keeps them equal), repeated
# here so that the report does not import torch
TYPE_ORDER = ["q", "k", "v", "qkv", "o", "gate", "up", "gate_up", "down", "router", "expert_gate_up", "expert_up",
              "expert_down", "shared_gate", "shared_up", "shared_gate_up", "shared_down", "shared_expert_gate"]
TYPE_COLOURS = dict(zip(TYPE_ORDER, ["#1f77b4", "#ff7f0e", "#2ca02c", "#17becf", "#d62728",
                                     "#9467bd", "#8c564b", "#bcbd22", "#e377c2",
                                     "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd",
                                     "#e6550d", "#31a354", "#756bb1"]))
SIGNAL_TEX = {"grad_delta_l1": r"$\|G_t - G_{t-1}\|_1$", "grad_l1": r"$\|G_t\|_1$",
              "weight_delta_l1": r"$\|W_t - W_{t-k}\|_1$"}


def log(msg: str) -> None:
    print(f"figures: {msg}", file=sys.stderr)


# ================================================================ files
def new_figure(width: float, height: float) -> Figure:
    """A blank figure (inches) with constrained layout, drawn by the Agg canvas."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig: Figure, out: Path, name: str) -> dict[str, Path]:
    """``<out>/<name>.png`` and ``.pdf``, each replaced atomically; returns {"<name>.<fmt>": path}.

    The PDF carries no creation date, so the same figure gives the same bytes."""
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in FORMATS:
        path = out / f"{name}.{fmt}"
        meta = {"CreationDate": None} if fmt == "pdf" else {}
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=meta)
        paths[f"{name}.{fmt}"] = path
    return paths


def remove_stale(out: Path, name: str) -> None:
    """Remove ``<name>.png`` / ``.pdf`` left by an earlier report (the figure has nothing to draw now)."""
    for fmt in FORMATS:
        p = out / f"{name}.{fmt}"
        if p.exists():
            p.unlink()
            log(f"removed stale {p}")


# ================================================================ axes
class LogLabels(Formatter):
    """Plain-number labels for a log axis ("0.6", "20"), cheaper to draw than mathtext.

    Minor ticks are labelled only when the axis spans few decades (2, 5 up to 2.5
    decades; 2-8 up to 1.2 decades), like matplotlib's default.
    """

    def __init__(self, minor: bool) -> None:
        self.minor = minor

    def __call__(self, x, pos=None) -> str:
        if not (x > 0 and math.isfinite(x)):
            return ""
        if not self.minor:
            return f"{x:g}"
        lo, hi = self.axis.get_view_interval()
        decades = math.log10(hi / lo) if lo > 0 and hi > lo else math.inf
        mant = round(x / 10 ** math.floor(math.log10(x)), 6)
        keep = (2, 3, 4, 5, 6, 8) if decades <= 1.2 else (2, 5) if decades <= 2.5 else ()
        return f"{x:g}" if mant in keep else ""


def log_y(ax) -> None:
    """A log-scale y axis with plain-number labels."""
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(LogLabels(minor=False))
    ax.yaxis.set_minor_formatter(LogLabels(minor=True))
    ax.tick_params(axis="y", which="minor", labelsize=7)


def tau_line(ax, tau: float, label: bool = True) -> None:
    """The threshold tau as a dotted red line, labelled on the right (nothing when tau is not positive)."""
    if not (math.isfinite(tau) and tau > 0):
        return
    ax.axhline(tau, color="red", ls=":", lw=1.6, label=f"τ = {tau:.4g}" if label else None, zorder=3)
    ax.text(0.99, tau, f"τ = {tau:.4g}", transform=ax.get_yaxis_transform(), color="red", fontsize=8,
            ha="right", va="bottom", bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1})


def grace_line(ax, x: float, text: str) -> None:
    """The end of the grace period as a grey vertical line."""
    ax.axvline(x, color="grey", ls="-", lw=1.2, alpha=0.8, label=text, zorder=1)


# ================================================================ names and colours
def type_order(types) -> list[str]:
    """Matrix types in canonical order (q, k, v, ..., down), unknown ones after, sorted."""
    types = list(dict.fromkeys(types))
    return [t for t in TYPE_ORDER if t in types] + sorted(t for t in types if t not in TYPE_ORDER)


def type_label(t: str) -> str:
    """``$W_{q}$``: the legend label of a matrix type."""
    return "$W_{%s}$" % t.replace("_", r"\_")


def type_colour(t: str) -> str:
    return TYPE_COLOURS.get(t, "#7f7f7f")


def signal_tex(run: Run) -> str:
    """The run's GradES signal as a formula, e.g. ``$\\|G_t - G_{t-1}\\|_1$ / #elements``."""
    p = run.method_params
    s = SIGNAL_TEX.get(p.get("signal"), str(p.get("signal")))
    return s + (" / #elements" if p.get("normalize") else "")


def panel_grid(runs: list[Run]) -> tuple[list[str], list[str]]:
    """Rows = models, columns = settings, both in run order (full fine-tuning before LoRA)."""
    models = list(dict.fromkeys(r.model for r in runs))
    settings = list(dict.fromkeys(r.setting for r in sorted(runs, key=lambda r: (setting_rank(r), r.setting))))
    return models, settings
