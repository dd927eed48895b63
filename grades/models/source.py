"""What a model source kind provides (:class:`ModelSource`), and the option check they share."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..config import ConfigError, closest


@dataclass(frozen=True)
class ModelSource:
    """One kind of model source.

    ``build(arg, options, out)`` writes the checkpoint into the existing directory ``out``
    and returns the record kept in ``grades_model.json``; ``check_options(options)``
    returns the options with defaults filled (ConfigError naming the field otherwise);
    ``check_arg(arg, spec)`` refuses a bad argument (``tiny:gpt9``) at parse time."""

    build: Callable[[str, dict, Path], dict]
    check_options: Callable[[dict], dict]
    check_arg: Callable[[str, str], None] | None = None


def check_typed_options(kind: str, options: dict, defaults: dict) -> dict:
    """``options`` over ``defaults``: unknown keys, wrong types and negative numbers name the field."""
    out = dict(defaults)
    for k, v in (options or {}).items():
        if k not in defaults:
            raise ConfigError(f"model.options.{k}: unknown option for a {kind} source{closest(k, defaults)}; "
                              f"known: {sorted(defaults)}")
        d = defaults[k]
        ok = (isinstance(v, bool) if isinstance(d, bool) else
              (isinstance(v, int) and not isinstance(v, bool)) if isinstance(d, int) else
              (isinstance(v, (int, float)) and not isinstance(v, bool)) if isinstance(d, float) else
              isinstance(v, type(d)))
        if not ok:
            raise ConfigError(f"model.options.{k} = {v!r}: expected {type(d).__name__}")
        if isinstance(d, (int, float)) and not isinstance(d, bool) and not math.isfinite(v):
            raise ConfigError(f"model.options.{k} = {v!r}: not a finite number")
        if isinstance(d, (int, float)) and not isinstance(d, bool) and v < 0:
            raise ConfigError(f"model.options.{k} = {v!r}: must be >= 0")
        out[k] = v
    return out


def link_tree(src: Path, out: Path) -> int:
    """Symlink every file under ``src`` into ``out`` (same relative paths); returns how many.
    A prepared checkpoint that costs no copy: a Hub snapshot, or a ``local:`` directory."""
    n = 0
    for f in sorted(Path(src).rglob("*")):
        if f.is_file() and f.name != "grades_model.json":
            dst = out / f.relative_to(src)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(f.resolve())
            n += 1
    return n
