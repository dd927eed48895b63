"""Test helper: build the project's wheel and install it into a folder, apart from the checkout.

The wheel is built from a copy of the files it is made of (so the checkout gets no
``build/`` or ``*.egg-info``), exactly as ``pip wheel --no-deps --no-build-isolation .``
builds it, and installed with ``pip install --no-deps --target``. Commands run with
:func:`installed_env` import that copy (``PYTHONPATH``), not the checkout, and run from a
directory that is not the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: what the wheel is built from: the package, its metadata and the files setup.py ships
SOURCES = ("grades", "Snakefile", "workflow", "config", "evals", "results/paper", "setup.py", "pyproject.toml",
           "README.md")


def _pip(*args: str) -> None:
    r = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, timeout=900,
                       env={**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"})
    if r.returncode != 0:
        raise RuntimeError(f"pip {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")


def copy_sources(dest: Path) -> Path:
    """A copy of what the wheel is built from (a source tree without tests, docs or results)."""
    for name in SOURCES:
        p = ROOT / name
        if p.is_dir():
            shutil.copytree(p, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dest / name)
    return dest


def build_wheel(tmp: Path) -> Path:
    src = copy_sources(tmp / "src")
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp / "dist"), str(src))
    return next((tmp / "dist").glob("grades_harness-*.whl"))


def install_editable(src: Path, prefix: Path) -> Path:
    """``pip install -e SRC`` into ``prefix``; returns its site-packages (add it with site.addsitedir).
    ``--ignore-installed``: without it pip uninstalls the running environment's own install of the
    project first (an install into another prefix still "replaces" it), and the venv loses grades."""
    _pip("install", "--no-deps", "--no-build-isolation", "--ignore-installed", "-q", "--prefix", str(prefix),
         "-e", str(src))
    return next(prefix.rglob("site-packages"))


def install(wheel: Path, target: Path) -> Path:
    _pip("install", "--no-deps", "-q", "--target", str(target), str(wheel))
    return target


def installed_env(target: Path, **extra: str) -> dict[str, str]:
    """The environment of a command that must import the installed copy: ``PYTHONPATH`` is the
    install folder only (an editable install of the checkout comes after it on sys.path)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PYTHONPATH=str(target), HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               **extra)
    return env
