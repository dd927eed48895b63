"""``python -m grades.evaluate tasks``: what a model will be scored on, before any GPU hour is spent.

    python -m grades.evaluate tasks --workflow-config config/paper.yaml --model qwen3-14b [--json]
    python -m grades.evaluate tasks --tasks cs_siqa_local,siqa_local --data cache/default/data/siqa [--json]

One record per task (:func:`grades.evaluate.catalogue.describe`): ``task``, ``benchmark``,
``protocol``, ``output_type``, ``split``, ``metric``, ``dataset``, ``split_size`` (the
items of that split, when known) and ``n_docs`` (the items at hand: a local task's
prepared split under ``cache/<profile>/data/<dataset>``, a Hub split in the HF cache;
null when not at hand). ``--json`` prints them as a JSON list, otherwise a text table.
Exit code 2 with a one-line error for a bad config, model or task.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from ..config import ConfigError, closest
from .catalogue import describe, dumps, table
from .data import parse_data
from .errors import EvalConfigError
from .tasks import local_tasks, parse_tasks


def workflow_tasks(config: str | Path, model: str | None, cache: str | Path | None = None) -> tuple[list[str], dict]:
    """(tasks, {local task: prepared data dir}) of ``model`` in a workflow config (its dataset's
    ``eval_tasks`` + ``lm_eval_tasks``; data under ``cache`` or ``cache/<profile>``)."""
    from .. import workflow as gw

    cfg = gw.load(gw.read_config(config))  # the strict reader: duplicate keys refused, errors at FILE:LINE
    models = gw.enabled_models(cfg)
    if model is None:
        if len(models) != 1:
            raise ConfigError(f"--model: the workflow config has several models; choose one of {models}")
        model = models[0]
    if model not in cfg["models"]:
        raise ConfigError(f"--model {model!r} is not a model of {config}{closest(model, list(cfg['models']))}; "
                          f"known: {list(cfg['models'])}")
    tasks = gw.eval_tasks(cfg, model)
    ddir = Path(cache or f"cache/{cfg['profile']}") / "data" / cfg["models"][model]["dataset"]
    local = local_tasks()
    return tasks, {t: ddir for t in tasks if t in local}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m grades.evaluate tasks",
                                description="What a model will be scored on: task, benchmark, protocol, split, "
                                            "metric and item count of every task.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--workflow-config", help="workflow config YAML (e.g. config/paper.yaml)")
    src.add_argument("--tasks", help="comma-separated task names")
    p.add_argument("--model", help="with --workflow-config: model key (default: the only one)")
    p.add_argument("--cache", help="with --workflow-config: prepared cache dir (default cache/<profile>)")
    p.add_argument("--data", help="with --tasks: prepared dataset dir of the local tasks, or task=DIR[,task=DIR]")
    p.add_argument("--json", action="store_true", help="print a JSON list instead of a table")
    p.add_argument("--no-count", action="store_true", help="do not look for the data (n_docs null)")
    args = p.parse_args(argv)
    try:
        if args.workflow_config:
            tasks, dirs = workflow_tasks(args.workflow_config, args.model, args.cache)
        else:
            tasks = parse_tasks(args.tasks)
            loc = [t for t in tasks if t in local_tasks()]
            dirs = parse_data(args.data, loc) if args.data else {}
        records = describe(tasks, dirs, count=not args.no_count)
    except (ConfigError, EvalConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    sys.stdout.write(dumps(records) if args.json else table(records))
    return 0
