"""The workflow's command line: check a config, or run the shipped workflow from any directory.

    python -m grades.workflow check CONFIG.yaml     validate a workflow config and list its runs
                                                   (refused when a GPU run cannot fit its GPUs' memory)
    python -m grades.workflow plan CONFIG.yaml      every GPU run's per-GPU memory estimate against
                                                   jobs.gpu_memory_gib (exit 1 when one cannot fit)
    python -m grades.workflow run [SNAKEMAKE ARGS]  Snakemake on the shipped workflow, outputs here
    python -m grades.workflow snakefile             the path of the shipped Snakefile

``run`` needs no checkout: after ``pip install 'grades-harness[workflow]'``,
``python -m grades.workflow run --cores all --configfile config/smoke.yaml`` in an empty
directory runs the smoke profile (:mod:`grades.workflow.launch`).
"""

from __future__ import annotations

import argparse
import os
import sys

from .. import resources
from ..config import ConfigError
from .config import check_configfiles, load, read_config
from .launch import configfiles, snakemake_command
from .memory import check_memory, plan_text
from .plan import compare_runs, runs


def check(path: str) -> int:
    try:
        cfg = load(read_config(path))
        check_memory(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    main = runs(cfg)
    for r in main:
        print(f"{cfg['profile']}/{r.model}/{r.slug}/seed{r.seed}")
    for r in compare_runs(cfg):
        print(f"{cfg['profile']}/{r.model}/{r.slug}/seed{r.seed}\t(compare{', shared' if r in main else ''})")
    return 0


def plan(path: str) -> int:
    try:
        cfg = load(read_config(path))
        text, ok = plan_text(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(text, end="")
    return 0 if ok else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grades.workflow", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a workflow config and list the runs it implies")
    c.add_argument("config")
    p = sub.add_parser("plan", help="print every GPU run's per-GPU memory estimate against the GPU memory the "
                                    "config declares (jobs.gpu_memory_gib); exit 1 when a run cannot fit")
    p.add_argument("config")
    sub.add_parser("run", help="run Snakemake on the shipped workflow in the working directory; every "
                               "argument after `run` goes to Snakemake (e.g. --cores all --configfile "
                               "config/smoke.yaml)")
    sub.add_parser("snakefile", help="print the path of the shipped Snakefile")
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["run"]:  # every argument after it, options included, is Snakemake's
        cmd = snakemake_command(argv[1:])
        try:  # Snakemake reads them first, and reports a YAML error without its line
            check_configfiles(configfiles(cmd))
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        sys.stdout.flush()
        os.execv(cmd[0], cmd)  # Snakemake's own output, exit code and signal handling
    args = ap.parse_args(argv)
    if args.cmd == "check":
        return check(args.config)
    if args.cmd == "plan":
        return plan(args.config)
    print(resources.snakefile())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
