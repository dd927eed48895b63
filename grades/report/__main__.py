"""CLI: python -m grades.report {tables,figures} --runs DIR --out DIR,
python -m grades.report multimodal --runs DIR --tables DIR --figures DIR."""

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
    f = sub.add_parser("figures", help="signal, frozen-fraction and freeze-step figures (PNG + PDF)")
    f.add_argument("--runs", required=True, help="results/runs/<profile>")
    f.add_argument("--out", required=True, help="figures/<profile>")
    f.add_argument("--layer", type=int, default=None,
                   help="layer drawn in fig1_layer_signals (default: the middle layer of each model)")
    mm = sub.add_parser("multimodal", help="vision-language runs: multimodal table and VLM convergence figure")
    mm.add_argument("--runs", required=True, help="results/runs/<profile>")
    mm.add_argument("--tables", required=True, help="results/tables/<profile> (multimodal.csv, multimodal.md)")
    mm.add_argument("--figures", required=True, help="figures/<profile> (vlm_convergence.png, .pdf)")
    args = ap.parse_args(argv)
    if args.cmd == "tables":
        from .tables import write_tables

        for name, path in write_tables(args.runs, args.out, args.baseline).items():
            print(f"{name}: {path}")
    elif args.cmd == "multimodal":
        from .multimodal import write_multimodal

        for name, path in write_multimodal(args.runs, args.tables, args.figures).items():
            print(f"{name}: {path}")
    elif args.cmd == "figures":
        from .figures import write_figures

        for name, path in write_figures(args.runs, args.out, args.layer).items():
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
