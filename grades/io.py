"""Atomic writes: a result file either exists complete or not at all.

A write goes to a hidden temporary sibling, ``.NAME.XXXXXXXX.tmp``, renamed over ``NAME``
when it is complete; a write that was killed leaves only such a sibling, which
:func:`clean_leftovers` removes at the next start. A target is refused
(:class:`TargetRefused`) when replacing it could delete what the writer does not own:
a name that is ``.``/``..``/empty, the working directory or one of its parents, a file
where a directory goes (or the reverse), or, with ``owned_by``, a directory that does not
hold the marker file of an earlier write.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

#: the names of the temporary siblings (mkstemp/mkdtemp: 8 random characters)
LEFTOVER = re.compile(r"\.(?P<name>.+)\.[a-z0-9_]{8}\.tmp")


class TargetRefused(ValueError):
    """Writing this target could delete what the writer does not own; the message says why."""


def check_target(path: str | os.PathLike, *, directory: bool, owned_by: str | None = None) -> Path:
    """``path`` as a :class:`Path`, or :class:`TargetRefused` when it may not be replaced."""
    raw = os.fspath(path)
    last = raw.replace(os.sep, "/").rstrip("/").rsplit("/", 1)[-1]
    if last in ("", ".", ".."):
        kind, example = ("directory", "out/run") if directory else ("file", "out/file.json")
        raise TargetRefused(f"{raw!r} names no entry of a directory ({last or 'the root'!r}); give the path of "
                            f"the {kind} to write, such as {example}")
    p = Path(path)
    real = Path(os.path.realpath(p))
    if real == Path(real.anchor) or real == Path.cwd().resolve() or real in Path.cwd().resolve().parents:
        raise TargetRefused(f"{raw}: replacing it would delete the working directory or one of its parents")
    if p.is_symlink():
        return p  # the link itself is replaced, never what it points to
    if directory and p.exists() and not p.is_dir():
        raise TargetRefused(f"{raw} is a file, not a directory; remove it or write elsewhere")
    if not directory and p.is_dir():
        raise TargetRefused(f"{raw} is a directory, not a file; remove it or write elsewhere")
    if directory and owned_by and p.is_dir() and not (p / owned_by).exists() and any(p.iterdir()):
        raise TargetRefused(f"{raw} is a directory with files of its own and no {owned_by}, so it was not written "
                            f"by this command; it is left alone: remove it or write elsewhere")
    return p


def leftovers(directory: str | os.PathLike) -> list[Path]:
    """The temporary siblings of killed atomic writes in ``directory`` (not descending)."""
    d = Path(directory)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if LEFTOVER.fullmatch(p.name))


def clean_leftovers(directory: str | os.PathLike) -> list[Path]:
    """Remove :func:`leftovers` (a symbolic link is unlinked, never followed); returns them.

    Only for a directory whose writers are known to be gone (a run directory its lock holds)."""
    out = leftovers(directory)
    for p in out:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
    return out


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary sibling path; on success it replaces ``path``, on failure it is removed.

    For writers that want a file name (``savefig``, ``zipfile``, ``torch.save``). The
    result gets ordinary permissions (0666 & ~umask), not mkstemp's 0600.
    """
    path = check_target(path, directory=False)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_json(path: str | os.PathLike, obj) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def _jsonable(o):
    if hasattr(o, "item"):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, owned_by: str | None = None):
    """Yield a temporary sibling directory that replaces ``path`` on success.

    ``owned_by``: a file every earlier write left in the directory (``meta.json``); an
    existing non-empty directory without it is refused before anything is written."""
    path = check_target(path, directory=True, owned_by=owned_by)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; the result is an ordinary directory
    old = None
    try:
        yield tmp
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.exists():  # moved aside (a leftover name if killed now), then removed
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.lexists(path):  # put the earlier write back
            os.replace(old, path)
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
