"""The one parser of ``--set KEY=VALUE`` overrides, shared by every command line.

``KEY`` is a dotted path into a mapping (``optim.lr``, ``method.tau``); ``VALUE`` is read
as YAML, except that numbers YAML 1.1 reads as strings (``1e-5``) become numbers. Every
problem is a :class:`~grades.config.ConfigError` that quotes the override and says what
to write instead::

    cfg = apply_overrides(cfg, ["steps=50", "optim.lr=1e-4"])
"""

from __future__ import annotations

import copy
import re
from typing import Any

import yaml

from .config import ConfigError

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")


def parse_value(text: str) -> Any:
    """A ``--set`` value: YAML (``true``, ``[a, b]``, ``{r: 8}``, ``null``), numbers such
    as ``1e-5`` as floats, anything else as the string itself."""
    try:
        v = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(v, str):
        try:
            return float(v)  # also nan / inf: the config checks refuse them with the field's name
        except ValueError:
            return v
    return v


def split_override(item: str, where: str = "--set") -> tuple[str, Any]:
    """``"a.b=1"`` -> ``("a.b", 1)``; a missing ``=`` or a malformed key is refused."""
    key, sep, value = str(item).partition("=")
    key = key.strip()
    if not sep:
        raise ConfigError(f"{where} {item!r}: expected KEY=VALUE, e.g. {where} steps=50 or {where} optim.lr=1e-4")
    if not _KEY.fullmatch(key):
        raise ConfigError(f"{where} {item!r}: '{key}' is not a dotted key such as steps, optim.lr or method.tau")
    return key, parse_value(value)


def set_path(doc: dict, key: str, value: Any, where: str = "--set", *, promote: tuple[str, ...] = ("method",)) -> None:
    """Set ``doc[k1][k2]...[kn] = value`` for ``key = "k1.k2...kn"``, creating mappings on the way.

    A parent that exists and is not a mapping is refused (``steps.x=1`` when ``steps`` is
    a number), except the keys named in ``promote``, whose string shorthand becomes a
    mapping (``method: grades`` -> ``{name: grades}``)."""
    node = doc
    *parents, leaf = key.split(".")
    for i, k in enumerate(parents):
        if isinstance(node.get(k), str) and k in promote:
            node[k] = {"name": node[k]}
        child = node.setdefault(k, {})
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            path = ".".join(parents[: i + 1])
            raise ConfigError(f"{where} '{key}': '{path}' is {child!r}, not a mapping, so it has no field "
                              f"'{'.'.join(key.split('.')[i + 1:])}'; set {path}=... instead")
        node = child
    node[leaf] = copy.deepcopy(value)


def apply_overrides(doc: dict, items: list[str] | tuple[str, ...], where: str = "--set") -> dict:
    """A copy of ``doc`` with every ``KEY=VALUE`` of ``items`` applied in order."""
    out = copy.deepcopy(doc) if doc is not None else {}
    for item in items:
        key, value = split_override(item, where)
        set_path(out, key, value, where)
    return out


def parse_options(json_text: str, items: list[str] | tuple[str, ...], where: str = "--options") -> dict:
    """Options of a ``prepare`` command: a JSON object, then ``--set`` items over it."""
    import json

    try:
        opts = json.loads(json_text) if json_text else {}
    except json.JSONDecodeError as e:
        raise ConfigError(f"{where} is not valid JSON ({e.msg} at column {e.colno}): {json_text!r}") from None
    if not isinstance(opts, dict):
        raise ConfigError(f"{where} must be a JSON object such as '{{\"steps\": 10}}', got {json_text!r}")
    return apply_overrides(opts, items)
