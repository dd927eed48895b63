"""The data dirs of local tasks: which directory each task reads, and a check of its rows.

Both happen before any model is loaded (``--data``).

A prepared directory holds ``test.jsonl`` and ``validation.jsonl`` with rows
``{"id", "context", "question", "choices", "label"}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import EvalConfigError, MissingInputError

REQUIRED_FIELDS = ("context", "question", "choices", "label")
DATA_FILES = ("test.jsonl", "validation.jsonl")


def parse_data(data: str | os.PathLike | Mapping[str, Any] | None,
               local: Sequence[str]) -> dict[str, Path]:
    """Map each local task to its data dir.

    ``data`` is one directory (shared by all local tasks), ``"task=DIR,task=DIR"`` or a
    mapping ``{task: DIR}``.
    """
    if not local:
        return {}
    if data is None or (isinstance(data, str) and not data.strip()):
        raise EvalConfigError(f"local task(s) {list(local)} need a data directory (--data DIR)")
    if isinstance(data, Mapping):
        mapping = {str(k): Path(v) for k, v in data.items()}
    elif isinstance(data, str) and "=" in data and not Path(data).exists():
        mapping = {}
        for part in data.split(","):
            k, sep, v = part.partition("=")
            if not sep or not k.strip() or not v.strip():
                raise EvalConfigError(f"bad --data entry {part!r}; expected DIR or task=DIR[,task=DIR]")
            mapping[k.strip()] = Path(v.strip())
    else:
        return {t: Path(data).expanduser().resolve() for t in local}
    missing = [t for t in local if t not in mapping]
    if missing:
        raise EvalConfigError(f"no data directory given for task(s) {missing} (got {sorted(mapping)})")
    extra = [t for t in mapping if t not in local]
    if extra:
        raise EvalConfigError(f"--data names task(s) {extra} that are not requested local tasks {list(local)}")
    return {t: mapping[t].expanduser().resolve() for t in local}


def check_data_dir(task: str, data_dir: Path) -> dict[str, Any]:
    """Validate a prepared dataset dir; return ``{"n_test", "n_choices"}`` of test.jsonl."""
    if not data_dir.is_dir():
        raise MissingInputError(f"data directory for task {task!r} not found: {data_dir}")
    stats: dict[str, Any] = {}
    for fname in DATA_FILES:
        path = data_dir / fname
        if not path.is_file():
            raise MissingInputError(f"data file for task {task!r} not found: {path}")
        n, kinds = 0, set()
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise EvalConfigError(f"{path}:{lineno}: invalid JSON ({e})") from None
                check_row(row, f"{path}:{lineno}")
                n += 1
                kinds.add(len(row["choices"]))
        if n == 0:
            raise EvalConfigError(f"data file for task {task!r} is empty: {path}")
        if fname == "test.jsonl":
            stats = {"n_test": n, "n_choices": sorted(kinds)}
    return stats


def check_row(row: Mapping[str, Any], where: str) -> None:
    """One multiple-choice row: the required fields, >= 2 string choices, a label among them."""
    miss = [k for k in REQUIRED_FIELDS if k not in row]
    if miss:
        raise EvalConfigError(f"{where}: missing field(s) {miss}")
    ch, lab = row["choices"], row["label"]
    if not isinstance(ch, list) or len(ch) < 2 or not all(isinstance(c, str) for c in ch):
        raise EvalConfigError(f"{where}: 'choices' must be a list of >= 2 strings")
    if isinstance(lab, bool) or not isinstance(lab, int) or not 0 <= lab < len(ch):
        raise EvalConfigError(f"{where}: 'label' must be an int in [0, {len(ch)})")
