"""Where the files the harness ships beside its code live: task YAMLs, schemas, the
workflow, profiles and the paper's reference numbers.

Every other module asks here instead of building paths from ``__file__``, so the same
code runs from a source checkout and from an installed wheel. Environment variables
override single locations (``GRADES_EVAL_TASKS_DIR``).
"""

from __future__ import annotations

import os
from pathlib import Path

#: the source checkout this package lives in (None when installed from a wheel)
_HERE = Path(__file__).resolve().parent
REPO_ROOT: Path | None = _HERE.parent if (_HERE.parent / "pyproject.toml").exists() else None


def root() -> Path:
    """The directory that holds ``evals/``, ``workflow/``, ``config/`` and ``results/paper``."""
    if REPO_ROOT is None:
        raise FileNotFoundError("grades is not running from a source checkout; its data files are missing")
    return REPO_ROOT


def tasks_dir() -> Path:
    """Local lm-eval task templates (``evals/tasks``; ``$GRADES_EVAL_TASKS_DIR`` overrides)."""
    env = os.environ.get("GRADES_EVAL_TASKS_DIR")
    return Path(env) if env else root() / "evals" / "tasks"


def hub_tasks_dir() -> Path:
    """lm-eval tasks over Hub datasets (``evals/tasks/hub``: GQA, VQAv2, COCO Caption, MMStar)."""
    return tasks_dir() / "hub"


def workflow_schema() -> Path:
    """The workflow config's JSON schema."""
    return root() / "workflow" / "schemas" / "config.schema.yaml"


def paper_dir() -> Path:
    """The paper's own numbers (``results/paper``)."""
    return root() / "results" / "paper"
