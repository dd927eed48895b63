"""Names of a workflow config that become paths and wildcards: which are accepted, and why not.

The profile, every model key and every dataset key become one directory name each
(``cache/<profile>/models/<model>``, ``results/runs/<profile>/<model>/...``) and a
Snakemake wildcard value. A name is accepted only when it is one plain path component
that the wildcard constraints of the Snakefile (:data:`WILDCARD`) match: ASCII letters,
digits, ``_``, ``.`` and ``-``, starting with a letter or digit, at most
:data:`MAX_LEN` characters. So ``..``, ``a/b``, ``~``, ``/abs``, ``.hidden``, ``-x``,
names with spaces or non-ASCII letters, and the empty name are refused at parse time
with the reason, before Snakemake plans (or deletes) any path.
"""

from __future__ import annotations

import re

from ..config import ConfigError

#: the Snakefile's wildcard constraint of model and dataset names (and the profile's shape)
WILDCARD = r"[A-Za-z0-9][A-Za-z0-9_.-]*"
MAX_LEN = 100
_NAME = re.compile(WILDCARD)
_RULE = ("use ASCII letters, digits, '_', '.' and '-', starting with a letter or digit, at most "
         f"{MAX_LEN} characters (e.g. 'tiny-qwen3')")


def why_not(name) -> str | None:
    """Why ``name`` cannot be a path component and wildcard value, or None when it can."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not text (quote it)"
    if name == "":
        return "it is empty"
    if name in (".", ".."):
        return f"'{name}' means {'this' if name == '.' else 'the parent'} directory"
    if len(name) > MAX_LEN:
        return f"it has {len(name)} characters"
    if _NAME.fullmatch(name):
        return None
    if "/" in name or "\\" in name:
        return "it contains a path separator, so it would name a path of several directories"
    if name.startswith("~"):
        return "it starts with '~', a home-directory path"
    if name.startswith("."):
        return "it starts with '.', a hidden name"
    if name.startswith("-"):
        return "it starts with '-', which a command line reads as an option"
    bad = next(c for c in name if not re.fullmatch(r"[A-Za-z0-9_.-]", c))
    if bad.isspace():
        return "it contains white space"
    if not bad.isascii():
        return f"it contains the non-ASCII character {bad!r}"
    return f"it contains {bad!r}"


def check_name(name, where: str, paths: str) -> None:
    """Refuse ``name`` (``where``: the field; ``paths``: what it names) unless :func:`why_not` accepts it."""
    why = why_not(name)
    if why is not None:
        raise ConfigError(f"workflow config: {where}: {name!r} cannot name {paths}: {why}; {_RULE}")


def check_names(cfg: dict) -> None:
    """The profile and every model and dataset key (also against each other, ignoring case:
    on a case-insensitive file system ``Tiny`` and ``tiny`` would share a directory)."""
    check_name(cfg["profile"], "profile", "results/runs/<profile>/ and cache/<profile>/")
    for block, paths in (("models", "cache/<profile>/models/<model>/ and results/runs/<profile>/<model>/"),
                         ("datasets", "cache/<profile>/data/<dataset>/")):
        folded: dict[str, str] = {}
        for name in cfg[block]:
            check_name(name, block, paths)
            other = folded.setdefault(name.lower(), name)
            if other != name:
                raise ConfigError(f"workflow config: {block}: '{name}' and '{other}' differ only in case and would "
                                  f"share a directory on a case-insensitive file system; rename one")
