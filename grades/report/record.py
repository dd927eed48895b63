"""The record of a finished run that the documentation shows: results/record/<profile>/ rebuilt from its files.

    python -m grades.report record --profile default

copies the profile's tables (``results/tables/<profile>/*.md``, ``*.csv``) and figures
(``figures/<profile>/*.png``) into ``results/record/<profile>/`` and writes beside them a
small manifest of the run they come from (``manifest.json``, and ``manifest.md`` for the
documentation pages to include): the commit that recorded it and the commits the runs were
trained at, when the runs finished, the machine, and the runs themselves (models,
settings, seeds). Files that an earlier record listed and this one does not are removed,
so the folder describes one run; a hand-written ``README.md`` is kept.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import platform
from pathlib import Path

from ..io import atomic_write_bytes, atomic_write_json, atomic_write_text
from ..resources import git_commit
from ..rundir import finished_runs

MANIFEST = "manifest.json"
MANIFEST_MD = "manifest.md"
FIGURES = "figures"


def machine() -> dict:
    """The machine recording (the runs' own device and threads are in ``runs``)."""
    cpu = platform.processor() or None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = None
    with contextlib.suppress(Exception):
        import psutil

        mem = round(psutil.virtual_memory().total / 2**30, 1)
    return {"os": platform.platform(), "cpu": cpu, "cpus": os.cpu_count(), "memory_gib": mem,
            "python": platform.python_version()}


def _rel(p: Path, root: Path) -> str:
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return str(p)


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).isoformat(timespec="seconds")


def runs_summary(runs_dir: Path) -> dict:
    """What the finished runs under ``runs_dir`` are: models, settings, seeds, commits, when."""
    runs = finished_runs(runs_dir)
    if not runs:
        return {"count": 0}
    mtimes = [(r.dir / "train.json").stat().st_mtime for r in runs]
    first = runs[0].train
    return {
        "count": len(runs),
        "models": sorted({r.model for r in runs}),
        "settings": sorted({r.setting for r in runs}),
        "seeds": sorted({r.seed for r in runs}),
        "git_commits": sorted({str(r.train.get("git_commit")) for r in runs}),
        "first_finished": _iso(min(mtimes)), "last_finished": _iso(max(mtimes)),
        "devices": sorted({str(r.train.get("device")) for r in runs}),
        "threads": sorted({int(r.train["threads"]) for r in runs if r.train.get("threads") is not None}),
        "versions": first.get("versions") or {},
    }


def manifest_markdown(m: dict) -> str:
    r, mc = m["runs"], m["machine"]
    lines = [f"Recorded from `{m['source']['tables']}` and `{m['source']['figures']}` on {m['recorded_at']} "
             f"(commit `{m['recorded_at_commit'] or 'unknown'}`)."]
    if r.get("count"):
        commits = ", ".join(f"`{c}`" for c in r["git_commits"])
        lines += ["", f"* runs: {r['count']} finished ({', '.join(r['models'])}; seeds "
                      f"{', '.join(map(str, r['seeds']))}), between {r['first_finished']} and {r['last_finished']}",
                  f"* trained at commit {commits}",
                  f"* device {', '.join(r['devices'])}, {', '.join(map(str, r['threads']))} thread(s) per job; "
                  + ", ".join(f"{k} {v}" for k, v in r["versions"].items())]
    lines.append(f"* machine: {mc['cpu'] or 'unknown CPU'}, {mc['cpus']} CPU(s), {mc['memory_gib']} GiB, {mc['os']}")
    lines += ["", "Files: " + ", ".join(f"`{f}`" for f in m["files"]) + "."]
    return "\n".join(lines) + "\n"


def write_record(profile: str, *, root: str | Path = ".", runs: str | Path | None = None,
                 tables: str | Path | None = None, figures: str | Path | None = None,
                 out: str | Path | None = None) -> dict[str, Path]:
    """Rebuild ``results/record/<profile>/`` (paths relative to ``root`` unless given)."""
    root = Path(root)
    runs = Path(runs) if runs else root / "results" / "runs" / profile
    tables = Path(tables) if tables else root / "results" / "tables" / profile
    figures = Path(figures) if figures else root / "figures" / profile
    out = Path(out) if out else root / "results" / "record" / profile
    if not tables.is_dir():
        raise FileNotFoundError(f"no tables at {tables}: run the profile (and its report) first")
    old = {}
    with contextlib.suppress(Exception):
        old = json.loads((out / MANIFEST).read_text())
    files = sorted(p for p in tables.iterdir() if p.suffix in (".md", ".csv") and p.is_file())
    figs = sorted(figures.glob("*.png")) if figures.is_dir() else []
    paths: dict[str, Path] = {}
    names = []
    for src in files:
        paths[src.name] = atomic_write_text(out / src.name, src.read_text())
        names.append(src.name)
    (out / FIGURES).mkdir(parents=True, exist_ok=True)
    for src in figs:
        dst = out / FIGURES / src.name
        atomic_write_bytes(dst, src.read_bytes())
        paths[f"{FIGURES}/{src.name}"] = dst
        names.append(f"{FIGURES}/{src.name}")
    for stale in set(old.get("files") or []) - set(names):
        with contextlib.suppress(OSError):
            (out / stale).unlink()
    m = {"profile": profile, "recorded_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
         "recorded_at_commit": git_commit(root),
         "source": {"runs": _rel(runs, root), "tables": _rel(tables, root), "figures": _rel(figures, root)},
         "runs": runs_summary(runs), "machine": machine(), "files": names}
    paths[MANIFEST] = atomic_write_json(out / MANIFEST, m)
    paths[MANIFEST_MD] = atomic_write_text(out / MANIFEST_MD, manifest_markdown(m))
    return paths
