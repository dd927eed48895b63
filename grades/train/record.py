"""What train.json records about the environment of a run: package versions, git commit, peak memory."""

from __future__ import annotations

import contextlib
import platform
import resource
import subprocess
import sys

import torch

from ..resources import REPO_ROOT


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "peft", "lm_eval", "grades"):
        with contextlib.suppress(Exception):
            out[name] = __import__(name).__version__
    return out


def git_commit() -> str | None:
    """The checkout's commit (``-dirty`` with uncommitted changes); None when installed or not a git tree."""
    if REPO_ROOT is None:
        return None
    with contextlib.suppress(Exception):
        r = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5)
        if r.returncode == 0:
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                                   capture_output=True, text=True, timeout=5).stdout.strip()
            return r.stdout.strip() + ("-dirty" if dirty else "")
    return None


def peak_rss_bytes() -> int:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb * (1 if sys.platform == "darwin" else 1024))


def peak_gpu_bytes() -> int | None:
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
