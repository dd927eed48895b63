"""Figures of the report (PNG + PDF) from run directories.

Reads ``<runs_dir>/<model>/<setting-slug>/seed<k>/`` (``train.json``, ``run.yaml``,
``signals.csv``, ``freeze_events.csv``) and draws, for the GradES runs:

    fig1_layer_signals    per-matrix signal of one layer against optimizer step, with
                          tau, the end of the grace period and the freeze steps
                          (the paper's Figure 1); one panel per GradES run
    fig3_frozen_fraction  cumulative fraction of frozen matrices against training
                          progress, one line per GradES run (the paper's Figure 3)
    fig4_signal_by_kind   signal per matrix type, averaged over the layers whose
                          matrix of that type is still training, one panel per model
                          (the paper's Figure 4)
    freeze_heatmap        the step at which each matrix (layer x type) froze

Only the lowest seed of each model x setting is drawn. Runs without ``train.json``
or with a status other than ``ok`` are skipped; runs whose ``signals.csv`` is empty
(methods that measure no signal, ``record_signals: false``) are left out of the
figures that need signals. A figure with nothing to draw is skipped, with the reason
on stderr, and a stale file of that name in the output directory is removed.
"""

from __future__ import annotations

import contextlib
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import Formatter

from ..io import atomic_path

FIGURES = ("fig1_layer_signals", "fig3_frozen_fraction", "fig4_signal_by_kind", "freeze_heatmap")
FORMATS = ("png", "pdf")
DPI = 150

# canonical order of matrix types (same as grades.components.TYPE_ORDER, kept here so
# the report does not need torch)
TYPE_ORDER = ["q", "k", "v", "qkv", "o", "gate", "up", "gate_up", "down"]
_TYPE_COLOURS = dict(zip(TYPE_ORDER, ["#1f77b4", "#ff7f0e", "#2ca02c", "#17becf", "#d62728",
                                      "#9467bd", "#8c564b", "#bcbd22", "#e377c2"]))
_SIGNAL_TEX = {"grad_delta_l1": r"$\|G_t - G_{t-1}\|_1$", "grad_l1": r"$\|G_t\|_1$",
               "weight_delta_l1": r"$\|W_t - W_{t-k}\|_1$"}
_GRADES_DEFAULTS = {"alpha": 0.3, "signal": "grad_delta_l1", "normalize": False}
SIGNAL_COLUMNS = ["step", "component", "layer", "kind", "type", "tower", "value"]
EVENT_COLUMNS = ["step", "component", "layer", "kind", "type", "tower", "params", "signal", "tau", "reason"]


def _log(msg: str) -> None:
    print(f"figures: {msg}", file=sys.stderr)


# ====================================================================== runs
def _read_csv(path: Path, columns: list[str]) -> pd.DataFrame:
    empty = pd.DataFrame({c: pd.Series(dtype="object") for c in columns})
    if not path.exists():
        return empty
    try:
        # categories keep long signal files (steps x matrices rows) small in memory
        df = pd.read_csv(path, dtype={"component": "category", "kind": "category", "type": "category",
                                      "tower": "category", "reason": "category"})
    except pd.errors.EmptyDataError:
        return empty
    except (pd.errors.ParserError, UnicodeDecodeError) as e:
        _log(f"cannot read {path}: {e}; treating it as empty")
        return empty
    missing = [c for c in columns if c not in df.columns]
    if missing:
        _log(f"{path} lacks columns {missing}; treating it as empty")
        return empty
    if df.empty:
        return empty
    for c in ("step", "layer"):
        df[c] = pd.to_numeric(df[c], errors="coerce")
    for c in ("value", "signal", "tau"):
        if c in df.columns:
            df[c] = pd.to_numeric(df[c], errors="coerce")
    df = df.dropna(subset=["step", "layer"])
    df["step"] = df["step"].astype(int)
    df["layer"] = df["layer"].astype(int)
    return df.reset_index(drop=True)


def _method_name(m) -> str:
    if isinstance(m, dict):
        return str(m.get("name", "none"))
    return str(m) if m is not None else "none"


@dataclass
class Run:
    """One finished run directory and its files (read lazily)."""

    dir: Path
    model: str
    setting: str
    mode: str
    method: str
    seed: int
    train: dict
    run_config: dict = field(default_factory=dict)
    _signals: pd.DataFrame | None = field(default=None, repr=False)
    _events: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return f"{self.model} / {self.setting}"

    @property
    def steps_planned(self) -> int:
        return int(self.train.get("steps_planned") or self.run_config.get("steps") or 0)

    @property
    def steps_run(self) -> int:
        return int(self.train.get("steps_run") or self.steps_planned)

    @property
    def signals(self) -> pd.DataFrame:
        if self._signals is None:
            self._signals = _read_csv(self.dir / "signals.csv", SIGNAL_COLUMNS)
        return self._signals

    @property
    def events(self) -> pd.DataFrame:
        if self._events is None:
            self._events = _read_csv(self.dir / "freeze_events.csv", EVENT_COLUMNS)
        return self._events

    @property
    def has_signals(self) -> bool:
        return bool(self.signals["value"].notna().any()) if len(self.signals) else False

    # ------------------------------------------------------- GradES parameters
    @property
    def method_params(self) -> dict:
        """GradES parameters: run.yaml's method block, else train.json's summary/config."""
        m = self.run_config.get("method")
        if isinstance(m, dict) and _method_name(m) == "grades":
            params = {k: v for k, v in m.items() if k != "name"}
        else:
            params = dict((self.train.get("grades") or {}).get("config") or {})
            if not params:
                tm = (self.train.get("config") or {}).get("method")
                params = {k: v for k, v in tm.items() if k != "name"} if isinstance(tm, dict) else {}
        return {**_GRADES_DEFAULTS, **{k: v for k, v in params.items() if v is not None}}

    def tau_for(self, tower: str) -> float:
        p = self.method_params
        v = p.get("vision_tau" if tower == "vision" else "language_tau", p.get("tau"))
        return float(v) if v is not None else math.nan

    @property
    def alpha(self) -> float:
        return float(self.method_params.get("alpha", _GRADES_DEFAULTS["alpha"]))

    @property
    def grace_step(self) -> int:
        """First optimizer step at which a freeze may happen (ceil(alpha * planned steps))."""
        g = (self.train.get("grades") or {}).get("grace_steps")
        if g is not None:
            return int(g)
        return max(1, math.ceil(self.alpha * self.steps_planned))

    @property
    def n_components(self) -> int | None:
        n = (self.train.get("grades") or {}).get("components")
        if n:
            return int(n)
        if len(self.signals):
            return int(self.signals["component"].nunique())
        return None

    @property
    def signal_tex(self) -> str:
        p = self.method_params
        s = _SIGNAL_TEX.get(p.get("signal"), str(p.get("signal")))
        return s + (" / #elements" if p.get("normalize") else "")


def load_run(run_dir: str | Path, quiet: bool = False) -> Run | None:
    """The run in ``<model>/<setting>/seed<k>``, or None (logged) if it did not finish ok."""
    d = Path(run_dir)
    tj = d / "train.json"
    try:
        t = json.loads(tj.read_text())
    except FileNotFoundError:
        if not quiet:
            _log(f"skipping {d}: no train.json (failed or unfinished run)")
        return None
    except (json.JSONDecodeError, OSError) as e:
        _log(f"skipping {d}: unreadable train.json ({e})")
        return None
    if t.get("status") != "ok":
        _log(f"skipping {d}: status {t.get('status')!r}")
        return None
    cfg: dict = {}
    with contextlib.suppress(FileNotFoundError):
        try:
            cfg = yaml.safe_load((d / "run.yaml").read_text()) or {}
        except yaml.YAMLError as e:
            _log(f"{d}/run.yaml unreadable ({e}); using train.json only")
    if not cfg and isinstance(t.get("config"), dict):
        cfg = t["config"]
    try:
        seed = int(d.name.removeprefix("seed"))
    except ValueError:
        seed = int(t.get("seed", 0))
    return Run(dir=d, model=d.parent.parent.name, setting=str(t.get("name", d.parent.name)),
               mode=str(t.get("mode", cfg.get("mode", ""))), method=_method_name(t.get("method", cfg.get("method"))),
               seed=seed, train=t, run_config=cfg)


def find_runs(runs_dir: str | Path) -> list[Run]:
    """Finished runs under ``runs_dir`` (one profile), lowest seed per model x setting."""
    best: dict[tuple[str, str], Run] = {}
    for d in sorted(Path(runs_dir).glob("*/*/seed*")):
        if not d.is_dir():
            continue
        r = load_run(d)
        if r is None:
            continue
        key = (r.model, r.setting)
        if key not in best or r.seed < best[key].seed:
            best[key] = r
    return sorted(best.values(), key=lambda r: (r.model, _setting_rank(r), r.setting))


def _setting_rank(r: Run) -> int:
    return {"fp": 0, "lora": 1}.get(r.mode, 2)


def grades_runs(runs: list[Run], need_signals: bool = False) -> list[Run]:
    out = [r for r in runs if r.method == "grades"]
    if need_signals:
        for r in out:
            if not r.has_signals:
                _log(f"{r.label}: no signals in {r.dir / 'signals.csv'}; left out of the signal figures")
        out = [r for r in out if r.has_signals]
    return out


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


def type_order(types) -> list[str]:
    types = list(dict.fromkeys(types))
    return [t for t in TYPE_ORDER if t in types] + sorted(t for t in types if t not in TYPE_ORDER)


def _wlabel(t: str) -> str:
    return "$W_{%s}$" % t.replace("_", r"\_")


def _colour(t: str) -> str:
    return _TYPE_COLOURS.get(t, "#7f7f7f")


# ============================================================ data helpers
def main_tower(signals: pd.DataFrame) -> str:
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
        _log(f"{run.label}: no layer {layer} in the {tower} tower (layers {layers[0]}..{layers[-1]})")
        return None
    rows = sig[sig["layer"] == layer][["step", "layer", "type", "value"]].sort_values(["type", "step"])
    ev = run.events
    ev = ev[(ev["layer"] == layer) & (ev["tower"] == tower)][["step", "type", "signal"]]
    return {"signals": rows.reset_index(drop=True), "events": ev.reset_index(drop=True), "layer": int(layer),
            "tower": tower, "tau": run.tau_for(tower), "alpha": run.alpha, "grace_step": run.grace_step,
            "steps_planned": run.steps_planned, "types": type_order(rows["type"])}


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
def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, out: Path, name: str) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for fmt in FORMATS:
        path = out / f"{name}.{fmt}"
        meta = {"CreationDate": None} if fmt == "pdf" else {}
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=fmt, dpi=DPI, metadata=meta)
        paths[f"{name}.{fmt}"] = path
    return paths


def _remove_stale(out: Path, name: str) -> None:
    for fmt in FORMATS:
        p = out / f"{name}.{fmt}"
        if p.exists():
            p.unlink()
            _log(f"removed stale {p}")


def _grid(runs: list[Run]) -> tuple[list[str], list[str]]:
    """Rows = models, columns = settings, both in run order."""
    models = list(dict.fromkeys(r.model for r in runs))
    settings = list(dict.fromkeys(r.setting for r in sorted(runs, key=lambda r: (_setting_rank(r), r.setting))))
    return models, settings


def _tau_line(ax, tau: float, label: bool = True) -> None:
    if not (math.isfinite(tau) and tau > 0):
        return
    ax.axhline(tau, color="red", ls=":", lw=1.6, label=f"τ = {tau:.4g}" if label else None, zorder=3)
    ax.text(0.99, tau, f"τ = {tau:.4g}", transform=ax.get_yaxis_transform(), color="red", fontsize=8,
            ha="right", va="bottom", bbox={"facecolor": "white", "alpha": 0.75, "edgecolor": "none", "pad": 1})


class _LogLabels(Formatter):
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


def _log_y(ax) -> None:
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(_LogLabels(minor=False))
    ax.yaxis.set_minor_formatter(_LogLabels(minor=True))
    ax.tick_params(axis="y", which="minor", labelsize=7)


def _grace_line(ax, x: float, text: str) -> None:
    ax.axvline(x, color="grey", ls="-", lw=1.2, alpha=0.8, label=text, zorder=1)


def fig1_layer_signals(runs: list[Run], layer: int | None = None) -> Figure | None:
    data = []
    for r in runs:
        d = layer_signal_data(r, layer)
        if d is not None:
            data.append((r, d))
    if not data:
        return None
    models, settings = _grid([r for r, _ in data])
    fig = _new_figure(7.2 * len(settings), 3.9 * len(models))
    axes = fig.subplots(len(models), len(settings), squeeze=False)
    used = set()
    for r, d in data:
        i, j = models.index(r.model), settings.index(r.setting)
        used.add((i, j))
        ax = axes[i][j]
        sig = d["signals"]
        for t in d["types"]:
            s = sig[(sig["type"] == t) & np.isfinite(sig["value"]) & (sig["value"] > 0)]
            ax.plot(s["step"], s["value"], color=_colour(t), lw=1.1, label=_wlabel(t))
        ev = d["events"]
        ev = ev[np.isfinite(ev["signal"]) & (ev["signal"] > 0)]
        for t in d["types"]:
            e = ev[ev["type"] == t]
            ax.scatter(e["step"], e["signal"], marker="v", s=42, color=_colour(t), edgecolors="black",
                       linewidths=0.7, zorder=4)
        _tau_line(ax, d["tau"])
        _grace_line(ax, d["grace_step"], f"grace end (α = {d['alpha']:g}, step {d['grace_step']})")
        _log_y(ax)
        ax.set_xlim(0, max(d["steps_planned"], int(sig["step"].max()) if len(sig) else 0))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("signal (L1, log scale)")
        tower = "" if d["tower"] == "language" else f" ({d['tower']} tower)"
        ax.set_title(f"{r.label}: layer {d['layer']}{tower}\nsignal {r.signal_tex}", fontsize=10)
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


def fig3_frozen_fraction(runs: list[Run]) -> Figure | None:
    usable = []
    for r in runs:
        n = r.n_components
        if not n:
            _log(f"{r.label}: number of tracked matrices unknown; left out of fig3")
            continue
        usable.append((r, frozen_fraction_curve(r.events, n, r.steps_run), n))
    if not usable:
        return None
    planned = {r.steps_planned for r, _, _ in usable}
    normalise = len(planned) > 1
    fig = _new_figure(7.5, 4.6)
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
        _grace_line(ax, g, f"grace end ({a}{'step ' if not normalise else ''}{g:.3g})")
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


def fig4_signal_by_kind(runs: list[Run]) -> Figure | None:
    chosen = preferred_run_per_model(runs)
    if not chosen:
        return None
    n = len(chosen)
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    fig = _new_figure(7.2 * ncols, 3.9 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, r in zip(axes, chosen):
        tower = main_tower(r.signals)
        table = mean_signal_by_type(r.signals, tower)
        n_layers = r.signals.loc[r.signals["tower"] == tower, "layer"].nunique()
        for t in table.columns:
            s = table[t]
            s = s[np.isfinite(s) & (s > 0)]
            ax.plot(s.index, s.values, color=_colour(t), lw=1.2, label=_wlabel(t))
        _tau_line(ax, r.tau_for(tower))
        _grace_line(ax, r.grace_step, f"grace end (step {r.grace_step})")
        _log_y(ax)
        ax.set_xlim(0, max(r.steps_planned, int(table.index.max()) if len(table) else 0))
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("signal (L1, log scale)")
        ax.set_title(f"{r.label} ({n_layers} layers)\nsignal {r.signal_tex}", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
        ax.grid(True, which="major", alpha=0.3)
    for ax in axes[n:]:
        ax.set_axis_off()
    fig.suptitle("GradES signal by matrix type\n(mean over the layers whose matrix is not yet frozen)", fontsize=11)
    return fig


def freeze_heatmap(runs: list[Run]) -> Figure | None:
    if not runs:
        return None
    grids = [(r, *freeze_step_grid(r.signals, r.events)) for r in runs]
    models, settings = _grid(runs)
    max_layers = max(len(s.index) for _, s, _ in grids)
    max_cols = max(len(s.columns) for _, s, _ in grids)
    w = 1.6 + 0.62 * max_cols
    h = 1.3 + 0.24 * max_layers
    fig = _new_figure(w * len(settings), h * len(models))
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


# ================================================================ entry point
def write_figures(runs_dir: str | Path, out_dir: str | Path, layer: int | None = None) -> dict[str, Path]:
    """Draw every figure that has data; returns {"<figure>.<png|pdf>": path}."""
    out = Path(out_dir)
    runs = find_runs(runs_dir)
    gr = grades_runs(runs)
    gs = grades_runs(runs, need_signals=True)
    if not runs:
        _log(f"no finished runs under {runs_dir}")
    elif not gr:
        _log(f"no GradES runs under {runs_dir}")
    builders = {
        "fig1_layer_signals": (lambda: fig1_layer_signals(gs, layer), "no GradES run with signals"
                               + (f" has layer {layer}" if layer is not None else "")),
        "fig3_frozen_fraction": (lambda: fig3_frozen_fraction(gr), "no GradES run with a known number of matrices"),
        "fig4_signal_by_kind": (lambda: fig4_signal_by_kind(gs), "no GradES run with signals"),
        "freeze_heatmap": (lambda: freeze_heatmap(gs), "no GradES run with signals"),
    }
    written: dict[str, Path] = {}
    for name, (build, why) in builders.items():
        fig = build()
        if fig is None:
            _log(f"skipping {name}: {why}")
            _remove_stale(out, name)
            continue
        written.update(_save(fig, out, name))
    return written
