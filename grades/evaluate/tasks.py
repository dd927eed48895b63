"""Task names and the local task templates (``evals/tasks``) rendered for a run's data.

Which requested tasks are local templates and which are lm-eval's own.

Local tasks (``world_mc``, ``siqa_local``, ``cs_siqa_local``, ...) read a prepared dataset
directory whose path is only known at run time: their YAML templates carry ``@DATA_DIR@`` /
``@CACHE_DIR@`` placeholders, rendered into a temporary include dir that lm-eval is pointed at
(``TaskManager(include_path=..., include_defaults=False)``). Shipped tasks
(:func:`shipped_tasks`: the commonsense generation tasks of ``evals/tasks/commonsense``) are
included as they are. Standard tasks are looked up by name in lm-eval's registry. Shipped
and standard tasks need their Hugging Face datasets in the local cache.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..resources import commonsense_tasks_dir, tasks_dir
from .errors import EvalConfigError, MissingInputError

#: lm-eval's own tasks this harness knows about (they need the Hub or a warm HF cache).
STANDARD_TASKS: tuple[str, ...] = ("boolq", "piqa", "social_iqa", "hellaswag", "winogrande",
                                   "openbookqa", "arc_easy", "arc_challenge")
PLACEHOLDERS = ("@DATA_DIR@", "@CACHE_DIR@")


def parse_tasks(tasks: str | Sequence[str]) -> list[str]:
    """Requested task names, from ``"a,b"`` or a list (of possibly comma-separated names),
    without duplicates, in order."""
    names = tasks.split(",") if isinstance(tasks, str) else [t for x in tasks for t in str(x).split(",")]
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise EvalConfigError("no tasks given")
    seen: list[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    return seen


def local_tasks(directory: str | Path | None = None) -> dict[str, Path]:
    """``{task name: template yaml}`` for every ``*.yaml`` template in ``directory``."""
    import yaml

    d = Path(directory) if directory else tasks_dir()
    if not d.is_dir():
        raise MissingInputError(f"task template dir not found: {d}")
    out: dict[str, Path] = {}
    for p in sorted(d.glob("*.yaml")):
        with p.open() as f:
            cfg = yaml.load(f, Loader=yaml.BaseLoader) or {}  # no !function resolution
        if isinstance(cfg, dict) and isinstance(cfg.get("task"), str):
            out[cfg["task"]] = p
    return out


def shipped_tasks() -> dict[str, Path]:
    """``{task: yaml}`` of the tasks used as shipped (``evals/tasks/commonsense``: ``cs_boolq``, ...)."""
    d = commonsense_tasks_dir()
    return local_tasks(d) if d.is_dir() else {}


def split_tasks(tasks: str | Sequence[str], directory: str | Path | None = None,
                registry: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """Split requested names into (local, lm-eval); raise on unknown names.

    Non-local names must be shipped (:func:`shipped_tasks`), in :data:`STANDARD_TASKS`, or in
    ``registry`` (the names of lm-eval's task index, ``TaskManager().all_tasks``) when that is given.
    """
    names = parse_tasks(tasks)
    local_names = local_tasks(directory)
    shipped = shipped_tasks()
    known = set(STANDARD_TASKS) | set(shipped) | set(registry or ())
    loc = [n for n in names if n in local_names]
    other = [n for n in names if n not in local_names]
    unknown = [n for n in other if n not in known]
    if unknown:
        raise EvalConfigError(
            f"unknown task(s) {', '.join(map(repr, unknown))}; available: local "
            f"{sorted(local_names)} (need --data), commonsense generation {sorted(shipped)}, "
            f"lm-eval standard {list(STANDARD_TASKS)}"
            + (" or any other task in lm-eval's registry" if registry is not None else ""))
    return loc, other


def render_tasks(data_dirs: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike,
                 templates: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """Render the local task templates for ``data_dirs`` into ``out_dir`` (an include dir).

    Each task gets its own sub-directory holding its YAML plus a copy of every
    non-YAML template (the shared ``include:`` bases and ``*.py`` helpers), with ``@DATA_DIR@`` replaced by
    that task's data dir and ``@CACHE_DIR@`` by ``cache_dir`` (default
    ``out_dir/hf_datasets_cache``).  The result can also be used with the lm-eval CLI:
    ``lm_eval --include_path OUT_DIR --tasks world_mc ...``.
    """
    src = Path(templates) if templates else tasks_dir()
    names = local_tasks(src)
    out = Path(out_dir)
    cache = Path(cache_dir) if cache_dir else out / "hf_datasets_cache"
    for task, ddir in data_dirs.items():
        if task not in names:
            raise EvalConfigError(f"no template for local task {task!r} in {src} (have {sorted(names)})")
        dst = out / task
        dst.mkdir(parents=True, exist_ok=True)
        subs = {"@DATA_DIR@": yaml_escape(Path(ddir).resolve()),
                "@CACHE_DIR@": yaml_escape(cache.resolve())}
        for p in sorted(src.iterdir()):
            # the task's own YAML, shared bases (not *.yaml, so never indexed) and Python
            # helpers that a YAML names with !function (e.g. shapes_images.doc_to_image)
            if p.is_file() and (p == names[task] or p.suffix == ".py" or (p.suffix != ".yaml" and "yaml" in p.name)):
                text = p.read_text(encoding="utf-8")
                for k, v in subs.items():
                    text = text.replace(k, v)
                left = [ph for ph in PLACEHOLDERS if ph in text]
                if left:  # pragma: no cover - a template bug
                    raise EvalConfigError(f"{p}: unrendered placeholder(s) {left}")
                (dst / p.name).write_text(text, encoding="utf-8")
    return out


def yaml_escape(p: Path) -> str:
    """Escape a path for use inside a double-quoted YAML scalar."""
    return json.dumps(str(p), ensure_ascii=False)[1:-1]
