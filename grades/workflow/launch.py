"""Run the shipped workflow from any directory: Snakemake's command line for the installed Snakefile.

``python -m grades.workflow run [SNAKEMAKE ARGS...]`` takes the arguments a user would give
``snakemake`` in a checkout and adds what the checkout provides implicitly:

* ``--snakefile``: the shipped ``Snakefile`` (:func:`grades.resources.snakefile`);
* ``--directory .``: outputs go to the working directory (``results/``, ``cache/``, ``figures/``);
* the checkout's paths ``config/<name>.yaml`` and ``workflow/profiles/<name>`` resolve to
  the shipped copies when the working directory has no such file, so the commands of the
  documentation work unchanged (``--configfile config/smoke.yaml``,
  ``--profile workflow/profiles/slurm``).

An option the user gives wins over each of these.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from .. import resources

_CONFIG = re.compile(r"config/([A-Za-z0-9_.-]+)\.yaml")
_PROFILE = re.compile(r"workflow/profiles/([A-Za-z0-9_.-]+)/?")


def _given(args: list[str], *names: str) -> bool:
    return any(a in names or any(a.startswith(n + "=") for n in names if n.startswith("--")) for a in args)


def _shipped(value: str, pattern: re.Pattern, where) -> str:
    """``value`` itself when it exists in the working directory or is not a checkout path,
    else the shipped file it names (when there is one)."""
    m = pattern.fullmatch(value)
    if m is None or Path(value).exists():
        return value
    p = where(m.group(1))
    return str(p) if p.exists() else value


def resolve_paths(args: list[str]) -> list[str]:
    """The values of ``--configfile`` / ``--configfiles`` and ``--profile`` that name the
    checkout's ``config/<name>.yaml`` or ``workflow/profiles/<name>``, replaced by the shipped
    copies when the working directory has none."""
    out: list[str] = []
    option = None  # the option whose values follow
    for a in args:
        if a.startswith("-"):
            name, eq, value = a.partition("=")
            option = name if name in ("--configfile", "--configfiles", "--profile") and not eq else None
            if eq and name in ("--configfile", "--configfiles"):
                a = f"{name}={_shipped(value, _CONFIG, resources.profile_config)}"
            elif eq and name == "--profile":
                a = f"{name}={_shipped(value, _PROFILE, resources.snakemake_profile)}"
            out.append(a)
        elif option in ("--configfile", "--configfiles"):
            out.append(_shipped(a, _CONFIG, resources.profile_config))  # several values may follow
        elif option == "--profile":
            out.append(_shipped(a, _PROFILE, resources.snakemake_profile))
            option = None  # one value
        else:
            out.append(a)
    return out


def configfiles(args: list[str]) -> list[str]:
    """The values of ``--configfile`` / ``--configfiles`` in Snakemake arguments."""
    out: list[str] = []
    option = False
    for a in args:
        if a.startswith("-"):
            name, eq, value = a.partition("=")
            option = name in ("--configfile", "--configfiles") and not eq
            if eq and name in ("--configfile", "--configfiles"):
                out.append(value)
        elif option:
            out.append(a)
    return out


def snakemake_command(args: list[str], python: str = sys.executable) -> list[str]:
    """The full command: ``python -m snakemake`` on the shipped Snakefile, with ``args``."""
    args = resolve_paths(list(args))
    extra = []
    if not _given(args, "--snakefile", "-s"):
        extra += ["--snakefile", str(resources.snakefile())]
    if not _given(args, "--directory", "-d"):
        extra += ["--directory", "."]
    return [python, "-m", "snakemake", *extra, *args]
