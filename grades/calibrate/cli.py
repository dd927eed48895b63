"""Propose a GradES threshold tau for a model: ``python -m grades.calibrate``.

tau does not transfer across models, sizes, learning rates or signal kinds, so this
command runs a short *probe* — the user's run config, with GradES recording its
signal but never freezing (tau = 0: an L1 norm is never < 0) — and reads off the tau
that would leave a target fraction of the weight matrices frozen at a target point
of training::

    python -m grades.calibrate --config RUN.yaml --out DIR [--target-frozen 0.5] [--at 0.7]
    python -m grades.calibrate --workflow-config config/smoke.yaml --model tiny-qwen3 \\
        --setting FP+GradES --out DIR
    python -m grades.calibrate --from-signals RUN_DIR/signals.csv --out DIR \\
        [--alpha 0.3 --planned-steps 200]

The rule simulated and how tau is placed: :mod:`grades.calibrate.propose`.

Caveat: freezing some matrices changes the gradients of the others, so the real run
will not follow the probe exactly once the first matrix is frozen (it does up to
then: same seed, same batches). The proposal is an estimate; validate it with one
run using the proposed tau.

The probe runs by default only up to the target point ``at`` (that is all the
proposal needs), with the schedule and grace period of the full planned length;
``--steps N`` runs N steps instead (N = the planned steps also fills the
"frozen at end" column).

DIR receives ``calibration.json`` (proposal, inputs, table, predicted curve),
``calibration.png``, ``calibration.txt`` (the printed summary, with a YAML snippet for
the workflow config) and, for a probe, the probe's run directory ``probe/``
(signals.csv, train.json, ...).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path

from ..yamlfile import read_yaml

from ..config import ConfigError, GradESConfig
from ..overrides import apply_overrides
from ..rundir import SIGNALS
from .errors import CalibrationError
from .probe import grades_params, probe_config, workflow_run_config
from .propose import check_fraction, grace_step, target_step
from .report import calibrate, summary_text
from .signals import run_info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grades.calibrate", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n\n".join(__doc__.split("\n\n")[1:3]))
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", help="run config YAML: probe this run")
    src.add_argument("--workflow-config", help="workflow config YAML: probe one (model, setting) of it")
    src.add_argument("--from-signals", help="signals.csv of an existing run: no training")
    ap.add_argument("--out", required=True, help="directory for calibration.json / .png (and probe/)")
    ap.add_argument("--target-frozen", type=float, default=0.5, help="fraction of components frozen at --at (0.5)")
    ap.add_argument("--at", type=float, default=0.7, help="point of training, fraction of planned steps (0.7)")
    ap.add_argument("--steps", type=int, default=None,
                    help="steps the probe runs (default: up to --at). Planned steps, schedule and grace stay "
                         "those of the config; change the planned length with --set steps=N")
    ap.add_argument("--alpha", type=float, default=None, help="grace fraction (default: the method's alpha)")
    ap.add_argument("--planned-steps", type=int, default=None, help="with --from-signals: the run's planned steps")
    ap.add_argument("--model", help="with --workflow-config: model key (default: the only one)")
    ap.add_argument("--setting", help="with --workflow-config: setting name (default: the first GradES setting)")
    ap.add_argument("--cache", help="with --workflow-config: prepared cache dir (default cache/<profile>)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a run-config field, e.g. --set optim.lr=1e-4 --set method.signal=grad_l1")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out = Path(args.out)
    model = setting = None
    snippet_extra = {"alpha": args.alpha} if args.alpha is not None else None
    try:
        target = check_fraction("--target-frozen (target_frozen)", args.target_frozen)
        at = check_fraction("--at (at)", args.at)
        if args.steps is not None and args.steps < 1:
            raise CalibrationError(f"--steps = {args.steps} is invalid: must be >= 1")
        if args.from_signals:
            sp = Path(args.from_signals)
            if sp.is_dir():
                sp = sp / SIGNALS
            if not sp.exists():
                raise CalibrationError(f"--from-signals: file not found: {sp}")
            info = run_info(sp)
            alpha = args.alpha if args.alpha is not None else info.get("alpha")
            planned = args.planned_steps if args.planned_steps is not None else info.get("planned_steps")
            if alpha is None:
                raise CalibrationError(f"--alpha is required: no train.json next to {sp} to read it from")
            if planned is None:
                raise CalibrationError(f"--planned-steps is required: no train.json next to {sp} to read it from")
            inputs = {"source": "signals", "signals": str(sp), **info.get("grades", {}), "alpha": alpha,
                      "planned_steps": planned, "steps_run": info.get("steps_run"),
                      "note": "; ".join(n for n in (info.get("method_note"), info.get("note")) if n) or None}
            doc = calibrate(sp, out, alpha=alpha, planned_steps=planned, target_frozen=target, at=at,
                            inputs=inputs, model=info.get("model"), setting=info.get("setting"),
                            snippet_extra=snippet_extra)
            print(summary_text(doc, inputs, doc["snippet"]))
            print(f"\nwrote {out / 'calibration.json'} and {out / 'calibration.png'}")
            return 0

        from ..train import load_run_config

        if args.config:
            raw = read_yaml(args.config, "--config: run config file")
        else:
            raw, model, setting = workflow_run_config(args.workflow_config, args.model, args.setting, args.cache)
        cfg = load_run_config(apply_overrides(raw, args.set))
        params, note = grades_params(cfg)
        gc = GradESConfig(**{**params, "tau": 0.0, "language_tau": None, "vision_tau": None})
        alpha = args.alpha if args.alpha is not None else gc.alpha
        planned = cfg["steps"]
        # validate the fractions against the grace period before spending time on a probe
        if at < alpha or target_step(at, planned) < grace_step(alpha, planned):
            raise CalibrationError(
                f"at = {at} (step {target_step(at, planned)} of {planned}) is inside the grace period alpha = "
                f"{alpha}: GradES freezes nothing before step {grace_step(alpha, planned)}; choose at >= alpha")
        probe_steps = min(planned, args.steps if args.steps is not None else target_step(at, planned))
        pcfg = probe_config(cfg, probe_steps)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    from ..train import run

    probe_dir = out / "probe"
    print(f"[calibrate] probe: {probe_steps} of {planned} planned steps, signal {gc.signal}, alpha {alpha:g} "
          f"-> {probe_dir}", file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # the run's progress lines; stdout keeps the summary
        rec = run(pcfg, probe_dir, progress=not args.no_progress)
    inputs = {"source": "probe", "config": args.config, "workflow_config": args.workflow_config,
              "model": model, "setting": setting, "run_name": cfg["name"], "mode": cfg["mode"],
              "model_source": cfg["model"]["source"], "lr": cfg["optim"]["lr"], "batch_size": cfg["batch_size"],
              "seed": cfg["seed"], "signal": gc.signal, "normalize": gc.normalize,
              "check_interval": gc.check_interval, "alpha": alpha, "planned_steps": planned,
              "probe_steps": probe_steps, "steps_run": rec["steps_run"], "probe_dir": str(probe_dir),
              "probe_time_s": rec["train_time_s"], "note": note, "overrides": list(args.set)}
    try:
        doc = calibrate(probe_dir / SIGNALS, out, alpha=alpha, planned_steps=planned, target_frozen=target,
                        at=at, inputs=inputs, model=model, setting=setting or cfg["name"],
                        snippet_extra=snippet_extra)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary_text(doc, inputs, doc["snippet"]))
    print(f"\nwrote {out / 'calibration.json'} and {out / 'calibration.png'}")
    return 0
