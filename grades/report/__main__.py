"""The command line of the report: ``python -m grades.report tables|figures|partial|compare|multimodal|record``.

    tables      --runs DIR --out DIR [--baseline FP] [--paper-models ours=paper,... --paper-dir DIR [--planned-tasks T,...]]
                [--expect MODEL/SLUG/seedK[=SETTING] | MODEL/base ...] [claims]
    figures     --runs DIR --out DIR [--layer N]
    compare     --runs DIR --tables DIR [--figures DIR] [--select MODEL/SLUG[/seedK] ...] [--models M ...] [claims]
                [--matched]
    multimodal  --runs DIR --tables DIR --figures DIR
    record      --profile NAME [--root DIR] [--runs DIR --tables DIR --figures DIR --out DIR]
    partial     --runs DIR --tables DIR --figures DIR [tables' options] [--layer N] [--multimodal]
                (tables, figures and, with --multimodal, the VLM table from whatever runs exist)

    claims: [--margin POINTS] [--paired-baseline SETTING] [--bootstrap-seed N] (docs: Reading the results)
"""

from __future__ import annotations

import argparse
import sys


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grades.report")
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("tables", help="accuracy and efficiency tables (CSV + Markdown)")
    t.add_argument("--runs", required=True, help="results/runs/<profile>")
    t.add_argument("--out", required=True, help="results/tables/<profile>")
    p = sub.add_parser("partial", help="tables and figures from whatever runs exist (the workflow's partial target)")
    p.add_argument("--runs", required=True, help="results/runs/<profile>")
    p.add_argument("--tables", required=True, help="results/tables/<profile>")
    p.add_argument("--figures", required=True, help="figures/<profile>")
    p.add_argument("--layer", type=int, default=None, help="layer drawn in fig1_layer_signals")
    p.add_argument("--multimodal", action="store_true", help="also the vision-language table and figure")
    for sp in (t, p):
        _table_options(sp)
    f = sub.add_parser("figures", help="signal, frozen-fraction and freeze-step figures (PNG + PDF)")
    f.add_argument("--runs", required=True, help="results/runs/<profile>")
    f.add_argument("--out", required=True, help="figures/<profile>")
    f.add_argument("--layer", type=int, default=None,
                   help="layer drawn in fig1_layer_signals (default: the middle layer of each model)")
    c = sub.add_parser("compare", help="comparison table of stopping methods and Pareto figures")
    c.add_argument("--runs", required=True, help="results/runs/<profile>")
    c.add_argument("--tables", required=True, help="results/tables/<profile>: comparison.{csv,md}")
    c.add_argument("--figures", default=None, help="figures/<profile>: pareto_<model>.{png,pdf}")
    c.add_argument("--select", nargs="+", default=None, metavar="MODEL/SLUG[/seedK]",
                   help="compare only these runs (default: every finished run under --runs)")
    c.add_argument("--models", nargs="+", default=None, help="draw a Pareto figure for each of these models")
    c.add_argument("--matched", action="store_true",
                   help="also the matched-budget baselines: matched.{csv,md}, matched_<model>.{png,pdf}")
    mm = sub.add_parser("multimodal", help="vision-language runs: multimodal table and VLM convergence figure")
    mm.add_argument("--runs", required=True, help="results/runs/<profile>")
    mm.add_argument("--tables", required=True, help="results/tables/<profile> (multimodal.csv, multimodal.md)")
    mm.add_argument("--figures", required=True, help="figures/<profile> (vlm_convergence.png, .pdf)")
    rc = sub.add_parser("record", help="results/record/<profile>/: a finished profile's tables and figures, and a "
                                       "manifest (commit, date, machine, runs) for the documentation")
    rc.add_argument("--profile", required=True)
    rc.add_argument("--root", default=".", help="the checkout (results/, figures/ under it)")
    rc.add_argument("--runs", default=None, help="default ROOT/results/runs/<profile>")
    rc.add_argument("--tables", default=None, help="default ROOT/results/tables/<profile>")
    rc.add_argument("--figures", default=None, help="default ROOT/figures/<profile>")
    rc.add_argument("--out", default=None, help="default ROOT/results/record/<profile>")
    for sp in (t, p, c):
        claim_options(sp)
    args = ap.parse_args(argv)
    if args.cmd in ("tables", "partial"):
        from .tables import write_tables

        pm = dict(kv.split("=", 1) for kv in args.paper_models.split(",") if kv.strip())
        out = args.out if args.cmd == "tables" else args.tables
        planned = [t for t in args.planned_tasks.split(",") if t.strip()] or None
        written = write_tables(args.runs, out, args.baseline, args.paper_dir, pm, args.expect, planned,
                               options(args))
        if args.cmd == "partial":
            from .figures import write_figures

            written.update(write_figures(args.runs, args.figures, args.layer))
            if args.multimodal:
                from .multimodal import write_multimodal

                written.update(write_multimodal(args.runs, args.tables, args.figures))
        for name, path in written.items():
            print(f"{name}: {path}")
    elif args.cmd == "multimodal":
        from .multimodal import write_multimodal

        for name, path in write_multimodal(args.runs, args.tables, args.figures).items():
            print(f"{name}: {path}")
    elif args.cmd == "figures":
        from .figures import write_figures

        for name, path in write_figures(args.runs, args.out, args.layer).items():
            print(f"{name}: {path}")
    elif args.cmd == "record":
        from .record import write_record

        try:
            paths = write_record(args.profile, root=args.root, runs=args.runs, tables=args.tables,
                                 figures=args.figures, out=args.out)
        except FileNotFoundError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        for name, path in paths.items():
            print(f"{name}: {path}")
    elif args.cmd == "compare":
        from .compare import write_comparison

        for name, path in write_comparison(args.runs, args.tables, args.figures, args.select, args.models,
                                           options(args), args.matched).items():
            print(f"{name}: {path}")
    return 0


def _table_options(t: argparse.ArgumentParser) -> None:
    t.add_argument("--baseline", default="FP", help="setting that speedups are relative to")
    t.add_argument("--paper-models", default="",
                   help="our model -> the paper's name, e.g. qwen3-14b=Qwen3-14B,phi-4=Phi4-14B: also write the "
                        "paper-comparison tables (paper_*.csv/md)")
    t.add_argument("--paper-dir", default="results/paper", help="the paper's numbers (accuracy_language.csv, ...)")
    t.add_argument("--expect", nargs="+", default=None, metavar="MODEL/SLUG/seedK[=SETTING]",
                   help="the planned runs (MODEL/base: a base evaluation): runs.{csv,md} says which failed, were not "
                        "run or not evaluated, and the tables mark their cells missing")
    t.add_argument("--planned-tasks", default="",
                   help="with --paper-models: the tasks those models will be scored on (comma-separated), split-"
                        "checked before they are scored")


def claim_options(p: argparse.ArgumentParser) -> None:
    """How the tables state their claims (the workflow config's report.equivalence_margin, ...)."""
    p.add_argument("--margin", type=_positive, default=None, metavar="POINTS",
                   help="equivalence margin of the paired test, in points (default 1)")
    p.add_argument("--paired-baseline", default=None, metavar="SETTING",
                   help="compare every setting with this one item by item (default: each setting's own baseline)")
    p.add_argument("--bootstrap-seed", type=int, default=0, help="seed of the bootstrap intervals")


def _positive(v: str) -> float:
    x = float(v)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number of points, got {v}")
    return x


def options(args):
    from .claims import ClaimOptions
    from .paired import OWN
    from .stats import DEFAULT_MARGIN

    return ClaimOptions(margin=DEFAULT_MARGIN if args.margin is None else args.margin,
                        baseline=args.paired_baseline or OWN, seed=args.bootstrap_seed)


if __name__ == "__main__":
    sys.exit(main())
