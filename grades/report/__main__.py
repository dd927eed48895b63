"""CLI: python -m grades.report {tables,figures} --runs DIR --out DIR."""

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
    args = ap.parse_args(argv)
    if args.cmd == "tables":
        from .tables import write_tables

        for name, path in write_tables(args.runs, args.out, args.baseline).items():
            print(f"{name}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
