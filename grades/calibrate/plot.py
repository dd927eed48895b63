"""The calibration figure: the signals with the proposed tau, and the predicted frozen fraction against tau."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from ..io import atomic_path
from .signals import SignalMatrix


def plot(signals, result: dict, path: str | Path) -> Path:
    """Left: signals vs step with tau, grace and target point; right: frozen fraction vs tau."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker  # noqa: F401

    sig = SignalMatrix(signals)
    towers = list(result["towers"])
    colors = {"language": "tab:blue", "vision": "tab:green"}
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(11, 4.2))
    with np.errstate(invalid="ignore"):
        vals = np.where(np.isfinite(sig.values) & (sig.values > 0), sig.values, np.nan)
    for g in towers:
        mask = sig.towers == g
        col = colors.get(g, "tab:purple")
        for row in vals[mask]:
            ax.plot(sig.steps, row, color=col, lw=0.5, alpha=0.25)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns
            med = np.nanmedian(vals[mask], axis=0)
        ax.plot(sig.steps, med, color=col, lw=1.8, label=f"median ({g})" if len(towers) > 1 else "median")
        ax.axhline(result["towers"][g]["tau"], color="red", ls=":", lw=1.6,
                   label=f"tau = {result['towers'][g]['tau']:.4g}" + (f" ({g})" if len(towers) > 1 else ""))
    ax.axvline(result["grace_step"], color="grey", ls="--", lw=1, label=f"grace end (step {result['grace_step']})")
    ax.axvline(result["at_step"], color="black", ls="-.", lw=1, label=f"at = {result['at']:g} (step {result['at_step']})")
    if np.isfinite(vals).any():
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("signal per component")
    ax.set_title(f"signals of {result['n_components']} components")
    ax.legend(fontsize=7, loc="best")

    for g in towers:
        sw = result["sweep"].get(g)
        if not sw:
            continue
        col = colors.get(g, "tab:purple")
        suffix = f" ({g})" if len(towers) > 1 else ""
        bx.step(sw["tau"], sw["frozen_at"], where="post", color=col, label=f"frozen at step {result['at_step']}{suffix}")
        if sw["frozen_end"] is not None:
            bx.step(sw["tau"], sw["frozen_end"], where="post", color=col, ls="--", alpha=0.6,
                    label=f"frozen at end{suffix}")
        bx.axvline(result["towers"][g]["tau"], color="red", ls=":", lw=1.6)
    if len(towers) == 1:
        bx.plot([result["tau"]], [result["frozen_at"]], "o", color="red", ms=5,
                label=f"proposed: {result['frozen_at']:.0%} frozen")
    bx.axhline(result["target_frozen"], color="black", lw=0.8, ls="-.", label=f"target {result['target_frozen']:g}")
    bx.set_xscale("log")
    bx.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    bx.set_ylim(-0.03, 1.03)
    bx.set_xlabel("tau")
    bx.set_ylabel("predicted frozen fraction")
    bx.set_title("predicted frozen fraction vs tau")
    bx.legend(fontsize=7, loc="best")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=120)
    finally:
        plt.close(fig)
    return path
