"""The report's GradES figures (PNG + PDF) from a profile's runs: which runs, which figures, where.

Reads the finished runs under ``<runs_dir>`` through :mod:`grades.rundir` and draws,
for the GradES runs:

    fig1_layer_signals    per-matrix signal of one layer against optimizer step, with
                          tau, the end of the grace period and the freeze steps
                          (the paper's Figure 1); one panel per GradES run
    fig3_frozen_fraction  cumulative fraction of frozen matrices against training
                          progress, one line per GradES run (the paper's Figure 3)
    fig4_signal_by_kind   signal per matrix type, averaged over the layers whose
                          matrix of that type is still training, one panel per model
                          (the paper's Figure 4)
    freeze_heatmap        the step at which each matrix (layer x type) froze

The figures themselves are in :mod:`~grades.report.signal_figures` (fig1, fig4) and
:mod:`~grades.report.freeze_figures` (fig3, heatmap).

Only the lowest seed of each model x setting is drawn. Runs without ``train.json``
or with a status other than ``ok`` are skipped; runs whose ``signals.csv`` is empty
(methods that measure no signal, ``record_signals: false``) are left out of the
figures that need signals. A figure with nothing to draw is skipped, with the reason
on stderr, and a stale file of that name in the output directory is removed.
"""

from __future__ import annotations

from pathlib import Path

from ..rundir import SIGNALS, Run, find_runs
from .freeze_figures import fig3_frozen_fraction, freeze_heatmap
from .plotting import log, remove_stale, save
from .signal_figures import fig1_layer_signals, fig4_signal_by_kind

FIGURES = ("fig1_layer_signals", "fig3_frozen_fraction", "fig4_signal_by_kind", "freeze_heatmap")


def grades_runs(runs: list[Run], need_signals: bool = False) -> list[Run]:
    """The GradES runs; with ``need_signals`` only those that recorded a signal (the others logged)."""
    out = [r for r in runs if r.method == "grades"]
    if need_signals:
        for r in out:
            if not r.has_signals:
                log(f"{r.label}: no signals in {r.dir / SIGNALS}; left out of the signal figures")
        out = [r for r in out if r.has_signals]
    return out


def write_figures(runs_dir: str | Path, out_dir: str | Path, layer: int | None = None) -> dict[str, Path]:
    """Draw every figure that has data; returns {"<figure>.<png|pdf>": path}."""
    out = Path(out_dir)
    runs = find_runs(runs_dir)
    gr = grades_runs(runs)
    gs = grades_runs(runs, need_signals=True)
    if not runs:
        log(f"no finished runs under {runs_dir}")
    elif not gr:
        log(f"no GradES runs under {runs_dir}")
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
            log(f"skipping {name}: {why}")
            remove_stale(out, name)
            continue
        written.update(save(fig, out, name))
    return written
