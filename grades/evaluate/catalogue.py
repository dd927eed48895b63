"""What a task scores: its benchmark, protocol, output type, split, metric and item count.

Read from the task's YAML before anything runs (:func:`describe`, behind ``python -m
grades.evaluate tasks``), and from lm-eval's copy of the same config after a run
(:func:`facts`, written into eval.json by :mod:`.summary`), so the tables can say which
protocol and metric each number comes from.

Protocols:

``loglikelihood``
    ``output_type: multiple_choice``: the option with the highest log-likelihood after
    the task's prompt is the answer (lm-eval's standard tasks, ``siqa_local``,
    ``world_mc``); metric ``acc``.
``commonsense-generation``
    LLM-Adapters' protocol (``cs_*`` tasks): the prompt the model was fine-tuned on,
    greedy generation, the first answer word in the response must be the gold one;
    metric ``exact_match``.
``generation``
    any other ``generate_until`` task, scored by its own metric.

The split is the one lm-eval scores: ``test_split`` when the task has one, else
``validation_split``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..data.benchmarks import LM_EVAL_TASKS, benchmark_of, split_size
from .errors import EvalConfigError
from .tasks import STANDARD_TASKS, local_tasks, parse_tasks, shipped_tasks

PROTOCOLS = {
    "loglikelihood": "the option with the highest log-likelihood is the answer",
    "commonsense-generation": "greedy generation in the fine-tuning prompt, the first answer word parsed, exact match",
    "generation": "greedy generation, scored by the task's metric",
}
#: lm-eval's own task -> benchmark (the paper's names)
STANDARD_BENCHMARKS = {task: b for b, task in LM_EVAL_TASKS.items()}
#: the folders of lm-eval's own task index that hold STANDARD_TASKS (indexing them alone takes a second)
STANDARD_DIRS = ("super_glue/boolq", "piqa", "siqa", "hellaswag", "winogrande", "openbookqa", "arc")


def protocol_of(output_type: str | None, metadata: Mapping[str, Any] | None = None) -> str:
    """The protocol a task config declares (``metadata.protocol``), else the one its output type implies."""
    declared = (metadata or {}).get("protocol")
    if declared:
        return str(declared)
    return "generation" if output_type == "generate_until" else "loglikelihood"


def facts(task: str, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """benchmark, protocol, output_type, split, metric, dataset and split_size of a task config
    (the YAML, or lm-eval's ``results["configs"][task]``)."""
    meta = cfg.get("metadata") or {}
    out_type = cfg.get("output_type") or "multiple_choice"
    split = cfg.get("test_split") or cfg.get("validation_split")
    metrics = [m["metric"] for m in cfg.get("metric_list") or [] if isinstance(m, Mapping)
               and isinstance(m.get("metric"), str)]
    path, name = cfg.get("dataset_path"), cfg.get("dataset_name")
    local = path == "json" and isinstance(cfg.get("dataset_kwargs"), Mapping)
    benchmark = meta.get("benchmark") or STANDARD_BENCHMARKS.get(task) or (None if local else benchmark_of(path, name))
    return {
        "task": task, "benchmark": benchmark, "protocol": protocol_of(out_type, meta), "output_type": out_type,
        "split": split, "metric": metrics[0] if metrics else None,
        "dataset": "local" if local else (f"{path}:{name}" if name else path),
        "split_size": None if local else (meta.get("split_size") or split_size(benchmark, split)),
    }


# ------------------------------------------------------------------ before a run
def yaml_paths(names: Sequence[str]) -> dict[str, Path]:
    """The YAML of each task: a local template, a shipped task, a benchmark of evals/tasks/hub, or
    lm-eval's own (its task index; only the folders of :data:`STANDARD_DIRS` when that is enough)."""
    from ..resources import hub_tasks_dir

    known = {**local_tasks(), **shipped_tasks()}
    if hub_tasks_dir().is_dir():
        known.update(local_tasks(hub_tasks_dir()))
    out = {n: known[n] for n in names if n in known}
    rest = [n for n in names if n not in out]
    if rest:
        import lm_eval
        from lm_eval.tasks import TaskManager

        root = Path(lm_eval.__file__).parent / "tasks"
        tm = (TaskManager(include_path=[str(root / d) for d in STANDARD_DIRS], include_defaults=False)
              if all(n in STANDARD_TASKS for n in rest) else TaskManager())
        for n in rest:
            entry = tm.task_index.get(n)
            if entry is None or entry.yaml_path is None:
                raise EvalConfigError(f"unknown task {n!r}: not in evals/tasks and not in lm-eval's task index")
            out[n] = Path(entry.yaml_path)
    return out


def load_config(path: Path) -> dict[str, Any]:
    """A task YAML with its ``include:`` bases merged (``!function`` tags left unresolved)."""
    from lm_eval.tasks._yaml_loader import load_yaml

    return dict(load_yaml(str(path), resolve_func=False, recursive=True))


def count_local(data_dir: Path | None, split: str | None) -> int | None:
    """Rows of ``<data_dir>/<split>.jsonl``, or None when it is not there."""
    if data_dir is None or not split:
        return None
    p = Path(data_dir) / f"{split}.jsonl"
    if not p.is_file():
        return None
    with p.open(encoding="utf-8") as f:
        return sum(1 for line in f if line.strip())


def count_hub(cfg: Mapping[str, Any], split: str | None) -> int | None:
    """Rows of the task's Hub split in the local HF datasets cache (offline), or None."""
    if not split or not cfg.get("dataset_path"):
        return None
    from .environment import set_offline

    set_offline()
    try:
        import datasets

        kw = dict(cfg.get("dataset_kwargs") or {})
        if cfg.get("dataset_name"):
            kw["name"] = cfg["dataset_name"]
        return len(datasets.load_dataset(cfg["dataset_path"], split=split, **kw))
    except Exception:  # not in the cache, offline, gated, ...: not at hand
        return None


def describe(tasks: str | Sequence[str], data_dirs: Mapping[str, str | Path] | None = None,
             count: bool = True) -> list[dict[str, Any]]:
    """One record per task (:func:`facts`) plus ``n_docs``: the items at hand (a local task's
    prepared split in ``data_dirs[task]``, a Hub split in the HF cache), None when not at hand
    or when ``count`` is off."""
    names = parse_tasks(tasks)
    paths = yaml_paths(names)
    local = local_tasks()
    out = []
    for n in names:
        cfg = load_config(paths[n])
        rec = facts(n, cfg)
        ddir = (data_dirs or {}).get(n)
        if n in local:
            rec["dataset"] = f"local:{Path(ddir) / (rec['split'] or '')}.jsonl" if ddir else "local (prepared data)"
            rec["n_docs"] = count_local(Path(ddir), rec["split"]) if ddir and count else None
        else:
            rec["n_docs"] = count_hub(cfg, rec["split"]) if count else None
        out.append(rec)
    return out


def table(records: Sequence[Mapping[str, Any]]) -> str:
    """The records as an aligned text table (``tasks`` without ``--json``)."""
    cols = ["task", "benchmark", "protocol", "output_type", "split", "metric", "n_docs", "split_size", "dataset"]
    rows = [[("–" if r.get(c) is None else str(r.get(c))) for c in cols] for r in records]
    width = [max(len(c), *(len(row[i]) for row in rows)) if rows else len(c) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, width))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, width)) for row in rows]
    return "\n".join(lines) + "\n"


def dumps(records: Sequence[Mapping[str, Any]]) -> str:
    return json.dumps(list(records), indent=2) + "\n"
