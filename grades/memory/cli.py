"""The command line of the memory estimate: ``python -m grades.memory estimate|measure --config RUN.yaml``.

``estimate`` prints the per-GPU estimate of one run config on ``--gpus`` GPUs against
``--gpu-memory-gib`` (exit 1 when it does not fit, with what would make it fit);
``measure`` takes a few real training steps on this machine's CPU and prints the
measured bytes beside the estimate, as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from ..config import ConfigError
from ..train.config import load_run_config
from .arch import resolve_arch
from .estimate import GIB
from .fit import check_fit, plan_table


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m grades.memory", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("estimate", "measure"):
        p = sub.add_parser(name)
        p.add_argument("--config", required=True, help="run config YAML")
        p.add_argument("--model-dir", default=None, help="the prepared model directory (its config.json)")
    e = sub.choices["estimate"]
    e.add_argument("--gpus", type=int, default=1)
    e.add_argument("--gpu-memory-gib", type=float, default=80.0)
    e.add_argument("--size-b", type=float, default=None, help="size in billions, when no config.json is found")
    sub.choices["measure"].add_argument("--steps", type=int, default=3)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = load_run_config(Path(args.config))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = cfg.get("name", "run")
    if args.cmd == "measure":
        from .measure import compare, measure

        with contextlib.redirect_stdout(sys.stderr):  # the loop's progress lines: stdout is the JSON's
            measured = measure(cfg, args.steps)
        print(json.dumps(compare(cfg, measured, name=name, model_dir=args.model_dir), indent=1))
        return 0
    arch = resolve_arch(name, cfg["model"]["source"], cfg["model"].get("options"), model_dir=args.model_dir,
                        size_b=args.size_b)
    fit = check_fit(arch, cfg, args.gpus, int(args.gpu_memory_gib * GIB), name=name)
    print(plan_table([fit]), end="")
    if not fit.ok:
        print(fit.describe(), file=sys.stderr)
        return 1
    return 0
