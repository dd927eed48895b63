"""The command line of ``python -m grades.bench``: options, the sections run, and the files written."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from ..io import atomic_write_json, atomic_write_text
from .estimator import bench_estimator
from .overhead import bench_overhead
from .report import compact_md, memory_section, summary_md
from .speedup import bench_speedup
from .timing import QUICK, SMOLLM2_SCALE, SMOLLM2_SPEEDUP_SCALE, Plan, loadavg, log
from .verdicts import TARGETS, verdicts
from .workflows import workflow_times
from .workload import QWEN3_29M, QWEN3_QUICK, SIQA_DIR, SMOLLM2_DIR, ModelSpec

SCHEMA_VERSION = 1
SECTIONS = ("overhead", "speedup", "estimator", "workflows")
DESCRIPTION = "Performance benchmark: ``python -m grades.bench`` (workflow target ``bench``)."


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m grades.bench", description=DESCRIPTION)
    ap.add_argument("--out", default="results/bench", help="output folder (default results/bench)")
    ap.add_argument("--quick", action="store_true", help="CI size: a tiny model, a few steps (seconds)")
    ap.add_argument("--models", default=None,
                    help="comma-separated: qwen3-29m, smollm2-135m (default both; --quick: qwen3-quick)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {list(SECTIONS)}")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds of one step per variant (default 4; SmolLM2: 2, with the headline variants in 1a and 0/50/100%% frozen in 1b)")
    ap.add_argument("--estimator-steps", type=int, default=None,
                    help="steps of the estimator run (default: the default profile's, 80)")
    ap.add_argument("--smollm2", type=Path, default=SMOLLM2_DIR, help=f"prepared SmolLM2 (default {SMOLLM2_DIR})")
    ap.add_argument("--siqa", type=Path, default=SIQA_DIR, help=f"prepared Social IQa (default {SIQA_DIR})")
    ap.add_argument("--workflow-root", type=Path, default=Path("."),
                    help="project folder whose results/benchmarks/<profile>/ are read for 1d (default .)")
    ap.add_argument("--note", default=None, help="a note printed at the top of the summary (e.g. machine busy)")
    ap.add_argument("--update", action="store_true",
                    help="keep the sections of OUT/bench.json that are not rerun (e.g. --sections estimator --update)")
    ap.add_argument("--compact", type=Path, default=None, metavar="BENCH_JSON",
                    help="print the headline tables of an earlier run's bench.json and exit")
    return ap


def model_specs(names: list[str], smollm2: Path) -> tuple[list[ModelSpec], list[str]]:
    """The models to time, and a note for each one skipped; ValueError for an unknown name."""
    specs: list[ModelSpec] = []
    notes: list[str] = []
    for n in names:
        n = n.strip()
        if n == "qwen3-29m":
            specs.append(ModelSpec(n, "qwen3", QWEN3_29M))
        elif n == "qwen3-quick":
            specs.append(ModelSpec(n, "qwen3", QWEN3_QUICK))
        elif n == "smollm2-135m":
            if (smollm2 / "config.json").exists():
                specs.append(ModelSpec(n, "dir", path=smollm2))
            else:
                notes.append(f"smollm2-135m skipped: no prepared checkpoint at {smollm2} "
                             f"(snakemake --cores all prepares it)")
        else:
            raise ValueError(f"unknown model '{n}'; choose from qwen3-29m, smollm2-135m, qwen3-quick")
    return specs, notes


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.compact:
        print(compact_md(json.loads(args.compact.read_text())))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        print(f"error: unknown section(s) {bad}; choose from {list(SECTIONS)}", file=sys.stderr)
        return 2
    plan = QUICK if args.quick else Plan()
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    if args.estimator_steps:
        plan = replace(plan, estimator_steps=args.estimator_steps)
    names = (args.models.split(",") if args.models else (["qwen3-quick"] if args.quick else
                                                          ["qwen3-29m", "smollm2-135m"]))
    try:
        specs, notes = model_specs(names, args.smollm2)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for n in notes:
        log(n)
    out = Path(args.out)
    meta = {"schema_version": SCHEMA_VERSION, "quick": args.quick, "plan": asdict(plan),
            "models": [s.name for s in specs], "sections": sections, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "loadavg_start": loadavg(), "platform": platform.platform(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__}, "notes": notes,
            "contention_note": args.note, "targets": TARGETS}
    res: dict = {"meta": meta}
    files: dict[str, object] = {}
    if args.update and (out / "bench.json").exists():
        # rerun some sections, keep the others from the earlier run in OUT
        old = json.loads((out / "bench.json").read_text())
        keep = {k: v for k, v in old.items() if k in SECTIONS and k not in sections}
        res.update(keep)
        for k in ("overhead", "speedup", "workflows"):
            if k in keep:
                files[k] = keep[k]
        meta["updated_from"] = {"sections_kept": sorted(keep), "earlier_meta": old.get("meta")}
    t0 = time.perf_counter()

    def flush(final: bool = False) -> None:
        """Write what exists so far (a long run interrupted later still leaves its files)."""
        meta["elapsed_s"] = time.perf_counter() - t0
        meta["loadavg_end"] = loadavg()
        meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S") + ("" if final else " (partial: still running)")
        if "overhead" in res or "estimator" in res:
            files["memory"] = memory_section(res)
        res["verdicts"] = verdicts(res)
        for name, data in files.items():
            atomic_write_json(out / f"{name}.json", {"meta": meta, name: data})
        atomic_write_json(out / "bench.json", res)
        atomic_write_text(out / "summary.md", summary_md(res))
    if "overhead" in sections:
        res["overhead"] = []
        for spec in specs:
            p = replace(plan, **SMOLLM2_SCALE) if spec.kind == "dir" and not args.rounds else plan
            res["overhead"].append(bench_overhead(spec, p))
            files["overhead"] = res["overhead"]
            flush()
    if "speedup" in sections:
        res["speedup"] = []
        for spec in specs:
            p = replace(plan, **SMOLLM2_SPEEDUP_SCALE) if spec.kind == "dir" and not args.rounds else plan
            modes = ("fp", "lora") if spec.kind == "dir" else ("fp", "fp-frozen-emb", "lora")
            res["speedup"].append(bench_speedup(spec, p, modes))
            files["speedup"] = res["speedup"]
            flush()
    if "estimator" in sections:
        res["estimator"] = bench_estimator(plan, args.quick, args.smollm2, args.siqa, args.workflow_root)
        flush()
    if "workflows" in sections:
        res["workflows"] = workflow_times(args.workflow_root)
        files["workflows"] = res["workflows"]
    flush(final=True)
    log(f"wrote {out}/summary.md and {', '.join(f'{n}.json' for n in files)}, bench.json "
        f"in {meta['elapsed_s']:.0f} s")
    return 0
