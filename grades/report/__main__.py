"""The command line of the report: ``python -m grades.report tables|figures|compare|multimodal|record``.

    tables      --runs DIR --out DIR [--baseline FP] [--paper-models ours=paper,... --paper-dir DIR] [claims]
    figures     --runs DIR --out DIR [--layer N]
    compare     --runs DIR --tables DIR [--figures DIR] [--select MODEL/SLUG[/seedK] ...] [--models M ...] [claims]
    multimodal  --runs DIR --tables DIR --figures DIR
    record      --profile NAME [--root DIR] [--runs DIR --tables DIR --figures DIR --out DIR]

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
    t.add_argument("--baseline", default="FP", help="setting that speedups are relative to")
    t.add_argument("--paper-models", default="",
                   help="our model -> the paper's name, e.g. qwen3-14b=Qwen3-14B,phi-4=Phi4-14B: also write the "
                        "paper-comparison tables (paper_*.csv/md)")
    t.add_argument("--paper-dir", default="results/paper", help="the paper's numbers (accuracy_language.csv, ...)")
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
    for sp in (t, c):
        claim_options(sp)
    args = ap.parse_args(argv)
    if args.cmd == "tables":
        from .tables import write_tables

        pm = dict(kv.split("=", 1) for kv in args.paper_models.split(",") if kv.strip())
        for name, path in write_tables(args.runs, args.out, args.baseline, args.paper_dir, pm,
                                              options=options(args)).items():
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
                                           options(args)).items():
            print(f"{name}: {path}")
    return 0


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
