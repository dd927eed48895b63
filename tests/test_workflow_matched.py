"""The compare target's matched-budget runs, planned in two stages by Snakemake itself.

With no run finished, a dry run of ``compare`` plans only the budgets (checkpoint
``matched_budget``; tests/test_workflow_compare.py checks that). Here the smoke profile's
FP, FP+GradES, LoRA and LoRA+GradES runs of the tiny model are given finished train.json
files (FP+GradES stopped at step 120 of 200 with 45% of FP's training FLOPs; LoRA+GradES
ran all 200 steps with 75% of LoRA's); Snakemake then really runs the checkpoint and the
matched runs' run_config jobs, and a dry run of ``compare`` plans exactly the matched runs
whose budget saves something, with their steps. About 3 minutes (three Snakemake starts).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ROOT / "config" / "smoke.yaml"
RUNS = "results/runs/smoke/tiny-qwen3"
# slug: (name, mode, method, steps run, training FLOPs)
FINISHED = {"fp": ("FP", "fp", "none", 200, 2.0e12), "fp-grades": ("FP+GradES", "fp", "grades", 120, 0.9e12),
            "lora": ("LoRA", "lora", "none", 200, 0.8e12),
            "lora-grades": ("LoRA+GradES", "lora", "grades", 200, 0.6e12)}
MATCHED = {"fp-matched-fp-grades": 120, "fp-matched-flops-fp-grades": 90,  # the stop step; 0.45 * 200
           "lora-matched-lora-grades": None,  # LoRA+GradES did not stop: this budget is LoRA's own run
           "lora-matched-flops-lora-grades": 150}  # 0.75 * 200


def snakemake(tmp_path, *args, dry=False):
    cmd = [sys.executable, "-m", "snakemake", "--cores", "1", "--snakefile", str(ROOT / "Snakefile"),
           "--directory", str(tmp_path), "--configfile", str(SMOKE)] + (["-n", "-p"] if dry else []) + ["--", *args]
    env = {**os.environ, "GRADES_OFFICIAL_DIR": str(tmp_path / "no-peers")}
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-4000:]
    return out


def finish_runs(root: Path) -> None:
    """Prepared model and data, run.yaml and a finished train.json for the runs matched runs need,
    each newer than what it is made from (so Snakemake keeps them)."""
    for d in ("cache/smoke/models/tiny-qwen3", "cache/smoke/data/world-mc"):
        (root / d).mkdir(parents=True)
    for stage in ("run.yaml", "train.json"):
        time.sleep(1.1)  # a newer modification time than the stage before
        for slug, (name, mode, method, steps, flops) in FINISHED.items():
            d = root / RUNS / slug / "seed0"
            d.mkdir(parents=True, exist_ok=True)
            if stage == "run.yaml":
                (d / stage).write_text("name: x\n")
                continue
            (d / stage).write_text(json.dumps({
                "status": "ok", "name": name, "mode": mode, "method": method, "seed": 0,
                "data_dir": "cache/smoke/data/world-mc", "steps_run": steps, "steps_planned": 200,
                "flops": {"total": flops}}))


@pytest.mark.slow
def test_compare_plans_matched_runs_from_the_methods_train_json(tmp_path):
    finish_runs(tmp_path)
    # stage 2 for real: the checkpoint reads the train.json files, run_config writes the steps
    snakemake(tmp_path, *[f"{RUNS}/{s}/seed0/run.yaml" for s in MATCHED])
    for slug, steps in MATCHED.items():
        budget = json.loads((tmp_path / RUNS / slug / "seed0" / "budget.json").read_text())
        assert budget["planned"] is (steps is not None), budget
        rc = yaml.safe_load((tmp_path / RUNS / slug / "seed0" / "run.yaml").read_text())
        assert rc["method"] == "none" and rc["seed"] == 0 and rc["mode"] == slug.split("-")[0]
        assert rc["steps"] == (steps or 200), (slug, rc["steps"])
        assert rc["schedule"] == {"name": "cosine", "warmup_ratio": 0.05}  # laid out over those steps
    assert json.loads((tmp_path / RUNS / "fp-matched-flops-fp-grades/seed0/budget.json").read_text())[
        "flops_fraction"] == 0.45
    # the compare target now asks for the matched runs whose budget saves something, and no other
    out = snakemake(tmp_path, "compare", dry=True)
    trained = set(re.findall(r"output: \S+/([a-z0-9-]+)/seed0/train\.json", out))
    assert {s for s in trained if "matched" in s} == {s for s, steps in MATCHED.items() if steps}
    assert not trained & set(FINISHED)  # the finished runs are not trained again
    compare = out[out.index("rule compare:"):]
    assert "<TBD>" not in compare.split("output:")[0]  # every budget is known
    shell = next(ln for ln in compare.splitlines() if "-m grades.report compare" in ln)
    assert shell.rstrip().endswith("--matched > results/logs/smoke/compare.log 2>&1")
    for slug, steps in MATCHED.items():
        assert (f"{RUNS}/{slug}/seed0/eval.json" in compare) is (steps is not None)
        assert (f" tiny-qwen3/{slug}/seed0 " in shell) is (steps is not None)  # --select: the report reads them
