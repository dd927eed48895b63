"""Where the files shipped beside the code live, in a source checkout and in an installed wheel.

Those files are the workflow (``Snakefile`` and ``workflow/``: rules, profiles, schemas,
report captions), the workflow profiles (``config/*.yaml``), the lm-eval task YAMLs
(``evals/tasks``, ``evals/tasks/hub`` and ``evals/tasks/commonsense`` with their Python helpers) and the paper's reference
numbers (``results/paper``). In the repository they stay at the top level; a wheel
carries the same tree as ``grades/_shipped/`` (``setup.py`` maps it), so :func:`root` is
the checkout in one case and ``grades/_shipped`` in the other, and every path below it
is the same. Every other module asks here instead of building paths from
``__file__``. Environment variables override single locations (``GRADES_EVAL_TASKS_DIR``).
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from pathlib import Path

_HERE = Path(__file__).resolve().parent
#: the data files inside an installed wheel (absent from a source checkout)
SHIPPED = _HERE / "_shipped"
#: the source checkout this package lives in (None when installed from a wheel)
REPO_ROOT: Path | None = _HERE.parent if (_HERE.parent / "pyproject.toml").exists() else None
#: the workflow profiles shipped in config/ (``config.yaml`` is the default)
PROFILES = ("config", "smoke", "paper")


def installed() -> bool:
    """True when running from an installed wheel (its data files under ``grades/_shipped``)."""
    return SHIPPED.is_dir()


def root() -> Path:
    """The directory that holds ``evals/``, ``workflow/``, ``config/`` and ``results/paper``."""
    if installed():
        return SHIPPED
    if REPO_ROOT is None:
        raise FileNotFoundError(f"grades at {_HERE} is neither a source checkout nor an installed wheel with "
                                f"its data files ({SHIPPED} is missing); reinstall the package")
    return REPO_ROOT


def tasks_dir() -> Path:
    """Local lm-eval task templates (``evals/tasks``; ``$GRADES_EVAL_TASKS_DIR`` overrides)."""
    env = os.environ.get("GRADES_EVAL_TASKS_DIR")
    return Path(env) if env else root() / "evals" / "tasks"


def hub_tasks_dir() -> Path:
    """lm-eval tasks over Hub datasets (``evals/tasks/hub``: GQA, VQAv2, COCO Caption, MMStar)."""
    return tasks_dir() / "hub"


def commonsense_tasks_dir() -> Path:
    """lm-eval tasks that score the eight commonsense benchmarks by generation, in the text of
    commonsense-170k (``evals/tasks/commonsense``: ``cs_boolq``, ..., over Hub data)."""
    return tasks_dir() / "commonsense"


def snakefile() -> Path:
    """The workflow's Snakefile (it includes ``workflow/rules/*.smk``)."""
    return root() / "Snakefile"


def workflow_dir() -> Path:
    """The workflow's ``rules/``, ``profiles/``, ``schemas/`` and ``report/`` captions."""
    return root() / "workflow"


def workflow_schema() -> Path:
    """The workflow config's JSON schema."""
    return workflow_dir() / "schemas" / "config.schema.yaml"


def snakemake_profile(name: str) -> Path:
    """A Snakemake profile shipped with the workflow (``default``, ``slurm``)."""
    return workflow_dir() / "profiles" / name


def profile_config(name: str) -> Path:
    """A shipped workflow profile, ``config/<name>.yaml`` (``config``, ``smoke``, ``paper``)."""
    return root() / "config" / f"{name}.yaml"


def default_configfile() -> Path:
    """The workflow config used without ``--configfile``: ``config/config.yaml`` of the working
    directory when there is one (a checkout, or a copy the user edits), else the shipped one."""
    local = Path("config") / "config.yaml"
    return local if local.is_file() else profile_config("config")


def paper_dir() -> Path:
    """The paper's own numbers (``results/paper``)."""
    return root() / "results" / "paper"


def git_commit(checkout: Path | None = REPO_ROOT) -> str | None:
    """The commit of the git checkout at ``checkout`` (default: this package's own), with
    ``-dirty`` when tracked files have uncommitted changes; None when installed or not a git tree."""
    if checkout is None:
        return None
    with contextlib.suppress(Exception):
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, timeout=5)
        if r.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=checkout,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return r.stdout.strip() + ("-dirty" if dirty else "")
    return None
