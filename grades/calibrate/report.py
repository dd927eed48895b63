"""The calibration's outputs: the YAML snippet, the printed summary, and calibration.{json,txt,png}."""

from __future__ import annotations

from pathlib import Path

import yaml

from ..io import atomic_write_json, atomic_write_text
from .plot import plot
from .propose import CAVEAT, propose_tau


def _fmt_frac(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def snippet(result: dict, model: str | None, setting: str | None, extra: dict | None = None) -> str:
    """The workflow-config YAML that gives (model, setting) the proposed tau (and ``extra`` method fields)."""
    meth = {**result["method"], **(extra or {})}
    doc = {"models": {model or "<model>": {"settings": {setting or "<GradES setting>": {"method": meth}}}}}
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False)


def summary_text(result: dict, inputs: dict, snip: str) -> str:
    """The printed summary: proposal, prediction, the table of targets, warnings, the snippet and the caveat."""
    r = result
    taus = ", ".join(f"{k} = {v:.4g}" for k, v in r["method"].items())
    lines = [
        f"proposed {taus}   (signal {inputs.get('signal', '?')}, alpha {r['alpha']:g}, "
        f"{r['planned_steps']} planned steps, grace ends at step {r['grace_step']})",
        f"predicted: {r['frozen_at']:.0%} of {r['n_components']} components frozen by step {r['at_step']} "
        f"(at = {r['at']:g}; target {r['target_frozen']:.0%}); first freeze at step {r['first_freeze_step']}"
        + (f"; {r['frozen_end']:.0%} frozen at the end" if r["frozen_end"] is not None else ""),
        "",
        f"  {'target':>6}  {'tau':>24}  {'frozen@' + str(r['at_step']):>10}  {'frozen@end':>10}  first freeze",
    ]
    for row in r["table"]:
        tv = ", ".join(f"{row[k]:.4g}" for k in row if k.endswith("tau"))
        lines.append(f"  {row['target']:>6.0%}  {tv:>24}  {_fmt_frac(row['frozen_at']):>10}  "
                     f"{_fmt_frac(row['frozen_end']):>10}  {row['first_freeze_step']}")
    lines += [""] + [f"warning: {w}" for w in r["warnings"]]
    lines += ["paste into the workflow config:", *("  " + ln for ln in snip.rstrip().splitlines()), "", CAVEAT]
    return "\n".join(lines)


def calibrate(signals, out: str | Path, *, alpha: float, planned_steps: int, target_frozen: float, at: float,
              inputs: dict, model: str | None = None, setting: str | None = None,
              snippet_extra: dict | None = None) -> dict:
    """propose_tau + calibration.json + calibration.png; returns the JSON document."""
    result = propose_tau(signals, alpha=alpha, planned_steps=planned_steps, target_frozen=target_frozen, at=at)
    out = Path(out)
    snip = snippet(result, model, setting, snippet_extra)
    if inputs.get("note"):
        result["warnings"].append(inputs["note"])
    doc = {"proposal": {k: result[k] for k in ("tau", "method", "target_frozen", "at", "at_step", "frozen_at",
                                               "frozen_end", "first_freeze_step")},
           "inputs": inputs, "snippet": snip, **result}
    png = plot(signals, result, out / "calibration.png")
    doc["figure"] = png.name
    atomic_write_json(out / "calibration.json", doc)
    atomic_write_text(out / "calibration.txt", summary_text(result, inputs, snip) + "\n")
    return doc
