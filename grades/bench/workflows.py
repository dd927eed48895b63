"""1d end-to-end workflow times, summed from Snakemake's benchmark files per profile and rule."""

from __future__ import annotations

from pathlib import Path

PROFILES = ("smoke", "default")


def workflow_times(root: Path) -> dict:
    """Sum Snakemake benchmark files per profile and rule (``results/benchmarks/<profile>/<rule>/...tsv``)."""
    out = {}
    for prof in PROFILES:
        d = root / "results" / "benchmarks" / prof
        files = sorted(d.rglob("*.tsv")) if d.is_dir() else []
        if not files:
            out[prof] = {"run": False, "note": f"not run: no benchmark files under {d}"}
            continue
        rules: dict[str, dict] = {}
        starts, ends = [], []
        for f in files:
            lines = f.read_text().strip().splitlines()
            if len(lines) < 2:
                continue
            head = lines[0].split("\t")
            vals = lines[-1].split("\t")
            row = dict(zip(head, vals))
            try:
                secs = float(row["s"])
            except (KeyError, ValueError):
                continue
            rule = f.relative_to(d).parts[0] if len(f.relative_to(d).parts) > 1 else f.stem
            r = rules.setdefault(rule, {"jobs": 0, "seconds": 0.0, "max_rss_mb": 0.0})
            r["jobs"] += 1
            r["seconds"] += secs
            try:
                r["max_rss_mb"] = max(r["max_rss_mb"], float(row.get("max_rss", "nan")))
            except ValueError:
                pass
            mtime = f.stat().st_mtime
            ends.append(mtime)
            starts.append(mtime - secs)
        total = sum(r["seconds"] for r in rules.values())
        out[prof] = {"run": True, "jobs": sum(r["jobs"] for r in rules.values()), "sum_job_seconds": total,
                     "span_seconds": (max(ends) - min(starts)) if ends else None, "rules": rules,
                     "note": "sum_job_seconds adds every job's wall time (jobs may overlap on --cores > 1); "
                             "span_seconds is first job start to last job end, from the files' times"}
    return out
