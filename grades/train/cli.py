"""The command line of one training run: ``python -m grades.train --config RUN.yaml --out RUN_DIR``.

Exit codes: 0 success (a one-line JSON summary on stdout), 1 the run failed (the reason on
stderr, train_failed.json in RUN_DIR), 2 bad input, refused before any training step with
one line on stderr and no traceback: the run config (the file, a field, an override), the
run directory (a file, not writable, held by another run: :mod:`grades.rundir`), or what
setup finds wrong with the data (FILE:LINE) or the model (a LoRA target that matches
nothing); those found during setup also leave train_failed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

from ..config import ConfigError
from ..data import DataError
from ..overrides import apply_overrides
from ..yamlfile import read_yaml
from .config import load_run_config
from .errors import RunFailed
from .runner import run

DESCRIPTION = "One fine-tuning run: ``python -m grades.train --config RUN.yaml --out RUN_DIR``."


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m grades.train", description=DESCRIPTION)
    ap.add_argument("--config", required=True, help="run config YAML (see grades/schemas/run.schema.yaml)")
    ap.add_argument("--out", required=True, help="run directory to write")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field, e.g. --set steps=50 --set optim.lr=1e-4")
    ap.add_argument("--checkpoint-dir", default=None,
                    help="where checkpoints go (every checkpoint_every steps; default OUT/.checkpoints); "
                         "a rerun with the same config resumes from the newest one")
    ap.add_argument("--no-resume", action="store_true", help="start from step 0, deleting existing checkpoints")
    ap.add_argument("--keep-checkpoints", action="store_true", help="keep the checkpoints after success")
    ap.add_argument("--keep-last", type=int, default=2, metavar="N", help="checkpoints kept while training (default 2)")
    ap.add_argument("--no-progress", action="store_true")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if not args.out.strip():
            raise ConfigError("--out is empty; give the run directory to write, e.g. --out results/runs/mine")
        cfg = load_run_config(apply_overrides(read_yaml(args.config, "run config file"), args.set))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        rec = run(cfg, args.out, progress=not args.no_progress, checkpoint_dir=args.checkpoint_dir,
                  resume=not args.no_resume, keep_checkpoints=args.keep_checkpoints, keep_last=args.keep_last)
    except (ConfigError, DataError) as e:  # bad input, found before any step: one line, no traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except RunFailed as e:  # explained in one line; no traceback needed
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception:
        traceback.print_exc()
        return 1
    print(json.dumps({k: rec[k] for k in ("status", "stop_reason", "steps_run", "train_time_s", "frozen_ratio")}))
    return 0
