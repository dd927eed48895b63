"""One call of ``lm_eval.simple_evaluate``, from the task names to lm-eval's results.

The local templates are rendered for their data, lm-eval's task manager loads every task
first (a preflight: task errors before any model), then the scoring runs under a torch
thread limit."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .backend import EvalOptions
from .environment import hub_offline, package_version, torch_threads
from .errors import TaskLoadError
from ..resources import commonsense_tasks_dir
from .tasks import render_tasks, split_tasks

log = logging.getLogger("grades.evaluate")


def task_manager(include: Path | Sequence[Path] | None, include_defaults: bool):
    """lm-eval's ``TaskManager`` over the include dir(s) ``include`` (and, if ``include_defaults``,
    lm-eval's own tasks)."""
    from lm_eval.tasks import TaskManager

    if isinstance(include, (str, Path)) or include is None:
        paths = str(include) if include else None
    else:
        paths = [str(p) for p in include] or None
    return TaskManager(include_path=paths, include_defaults=include_defaults)


def preflight(tm, names: Sequence[str], std: Sequence[str]) -> None:
    """Load the tasks (and their datasets) before any model: a failure is a :class:`TaskLoadError`,
    with a hint when tasks over Hub data ``std`` needed the Hub and it was offline."""
    try:
        tm.load(list(names))
    except Exception as e:
        hint = ""
        if std and hub_offline():
            hint = (f"; tasks {list(std)} read their datasets from the "
                    "Hugging Face Hub, which is disabled (HF_HUB_OFFLINE=1) - pre-fetch them "
                    "into the HF datasets cache where the Hub is reachable "
                    "(HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0)")
        raise TaskLoadError(f"could not load task(s) {list(names)}: "
                            f"{type(e).__name__}: {e}{hint}") from e


def run_lm_eval(model_dir: Path, adapter_dir: Path | None, names: Sequence[str], std: Sequence[str],
                data_dirs: Mapping[str, Path], opts: EvalOptions, tokenizer: Path | None = None,
                shipped: Sequence[str] = ()) -> tuple[dict[str, Any] | None, float]:
    """Score ``names`` (``std``: those from lm-eval's registry; ``shipped``: those of
    ``evals/tasks/commonsense``, used as they are; the others are local tasks reading
    ``data_dirs``) -> (lm-eval's results, seconds spent in simple_evaluate).
    The results are None on a non-zero rank of a distributed run."""
    import lm_eval

    with tempfile.TemporaryDirectory(prefix="grades_eval_") as tmp:
        include = [render_tasks(data_dirs, Path(tmp) / "tasks", cache_dir=Path(tmp) / "datasets_cache")
                   ] if data_dirs else []
        if shipped:
            include.append(commonsense_tasks_dir())
        tm = task_manager(include, include_defaults=bool(std))
        split_tasks(names, registry=tm.all_tasks)
        preflight(tm, names, [*shipped, *std])  # task/dataset errors before the model is loaded
        kwargs = opts.lm_eval_args(model_dir, names, adapter=adapter_dir, task_manager=tm, tokenizer=tokenizer)
        log.info("lm-eval %s: backend=%s model=%s adapter=%s tasks=%s limit=%s",
                 package_version("lm_eval"), opts.backend, model_dir, adapter_dir, list(names), opts.limit)
        with torch_threads(opts.threads):
            t0 = time.perf_counter()
            res = lm_eval.simple_evaluate(**kwargs)
        lm_time = time.perf_counter() - t0
    return res, lm_time
