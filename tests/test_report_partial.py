"""Tables and figures from whatever runs exist: the planned runs' status, missing cells marked,
and the workflow's `partial` target, which never runs or waits on a run (dry runs, and a real
run over a faked runs directory where one run failed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from grades.report.runs import run_status
from grades.report.tables import write_tables

ROOT = Path(__file__).resolve().parent.parent
TRAIN = {"status": "ok", "train_time_s": 10.0, "validation_time_s": 0.0, "total_time_s": 10.0,
         "time_per_step_s": 0.1, "flops": {"total": 1e12, "validation": 0.0, "total_with_validation": 1e12},
         "steps_run": 100, "steps_planned": 100, "frozen_ratio": 0.0, "frozen_param_ratio": 0.0,
         "peak_rss_bytes": 2**30, "stop_reason": "max_steps", "trainable_params": 1, "grades": {}, "loss_last": 1.0}


def _eval(acc: float) -> dict:
    return {"status": "ok", "tasks": {
        "world_mc": {"acc": acc, "acc_stderr": 0.02, "metric": "acc", "score": acc, "score_stderr": 0.02,
                     "protocol": "loglikelihood", "output_type": "multiple_choice", "split": "test", "n": 300,
                     "n_choices": 4},
        "cs_world": {"acc": None, "exact_match": acc / 2, "metric": "exact_match", "score": acc / 2,
                     "score_stderr": 0.03, "protocol": "commonsense-generation", "output_type": "generate_until",
                     "split": "test", "n": 300, "chance_acc": 0.25}}}


def _write(path: Path, doc) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    t = time.time() + _write.tick  # strictly increasing mtimes: Snakemake sees each output newer than its inputs
    _write.tick += 1
    os.utime(path, (t, t))


_write.tick = 0


def fake_runs(runs: Path, model: str = "tiny-qwen3") -> Path:
    """FP finished and evaluated, FP+GradES failed, LoRA trained but not evaluated, LoRA+GradES never run,
    the base model evaluated."""
    for slug, name, mode, method in (("fp", "FP", "fp", "none"), ("fp-grades", "FP+GradES", "fp", "grades"),
                                     ("lora", "LoRA", "lora", "none")):
        d = runs / model / slug / "seed0"
        _write(d / "run.yaml", yaml.safe_dump({"name": name, "mode": mode}))
        if slug == "fp-grades":
            _write(d / "train_failed.json", {"status": "failed", "name": name, "stage": "train",
                                             "error": "RuntimeError: CUDA out of memory\nmore"})
            continue
        _write(d / "train.json", {**TRAIN, "name": name, "mode": mode, "method": method})
        if slug == "fp":
            _write(d / "eval.json", _eval(0.5))
    _write(runs / model / "base" / "eval.json", _eval(0.3))
    return runs


EXPECTED = ["tiny-qwen3/fp/seed0=FP", "tiny-qwen3/fp-grades/seed0=FP+GradES", "tiny-qwen3/lora/seed0=LoRA",
            "tiny-qwen3/lora-grades/seed0=LoRA+GradES", "tiny-qwen3/base"]


def test_a_missing_run_is_marked_only_under_its_own_models_tasks(tmp_path):
    """Two models scored on different tasks of one protocol: a missing run of one marks its own
    task's cell, the other model's column keeps "–"; a protocol without a chance level prints none."""
    runs = fake_runs(tmp_path / "runs")
    doc = _eval(0.4)
    doc["tasks"] = {"other_mc": {**doc["tasks"]["world_mc"], "n_choices": None},
                    "other_gen": {**doc["tasks"]["cs_world"], "protocol": "generation", "chance_acc": None}}
    _write(runs / "other" / "base" / "eval.json", doc)
    write_tables(runs, tmp_path / "t", expected=EXPECTED + ["other/fp/seed0=FP", "other/base"])
    md = (tmp_path / "t" / "accuracy.md").read_text()
    # columns other_mc, world_mc (first seen first)
    assert "| other | FP | missing (not run) | – |" in md, md
    assert "| tiny-qwen3 | LoRA+GradES | – | missing (not run) |" in md, md
    start = md.index("**Protocol: generation**") + 1
    gen = md[start - 1:min(i for i in (md.find("**Protocol:", start), md.find("**Missing", start)) if i > 0)]
    assert "Chance level" not in gen, gen


def test_run_status_says_which_runs_are_missing_and_why(tmp_path):
    st = run_status(fake_runs(tmp_path / "runs"), EXPECTED)
    assert list(zip(st["setting"], st["status"])) == [("FP", "ok"), ("FP+GradES", "failed"), ("LoRA", "not evaluated"),
                                                      ("LoRA+GradES", "not run"), ("Base", "ok")]
    assert st.loc[1, "reason"] == "RuntimeError: CUDA out of memory"  # the first line of the error


def test_tables_mark_missing_cells_and_name_protocols(tmp_path):
    runs = fake_runs(tmp_path / "runs")
    paths = write_tables(runs, tmp_path / "t", expected=EXPECTED)
    assert {"runs", "runs_md", "accuracy", "accuracy_md"} <= set(paths)
    md = (tmp_path / "t" / "accuracy.md").read_text()
    # one table per protocol, each column with its metric
    assert "**Protocol: loglikelihood**" in md and "**Protocol: commonsense-generation**" in md
    assert "| model | setting | world_mc (acc) | Δ vs baseline |" in md
    assert "| model | setting | cs_world (exact_match) | Δ vs baseline |" in md
    assert "| tiny-qwen3 | FP | 50.00 ± 2.00 |" in md and "| tiny-qwen3 | FP | 25.00 ± 3.00 |" in md
    assert "| tiny-qwen3 | FP+GradES | missing (failed) |" in md
    assert "| tiny-qwen3 | LoRA+GradES | missing (not run) |" in md
    assert "| tiny-qwen3/fp-grades/seed0 | FP+GradES | failed | RuntimeError: CUDA out of memory |" in md
    acc = pd.read_csv(tmp_path / "t" / "accuracy.csv")
    assert set(acc[acc["status"] == "ok"]["protocol"]) == {"loglikelihood", "commonsense-generation"}
    assert sorted(acc[acc["status"] != "ok"]["status"]) == ["failed", "not evaluated", "not run"]
    assert acc[acc["status"] != "ok"]["acc"].isna().all()
    eff = (tmp_path / "t" / "efficiency.md").read_text()
    assert "Missing: 3 of 5 planned runs" in eff
    assert "Planned runs: 2 ok, 1 failed, 1 not evaluated, 1 not run." in (tmp_path / "t" / "runs.md").read_text()


def test_without_a_plan_the_tables_are_as_before(tmp_path):
    runs = fake_runs(tmp_path / "runs")
    paths = write_tables(runs, tmp_path / "t")
    assert "runs" not in paths and "Missing" not in (tmp_path / "t" / "accuracy.md").read_text()


# ------------------------------------------------------------------ the workflow
CONFIG = {"profile": "t",
          "datasets": {"world-mc": {"source": "synthetic:world-mc",
                                    "options": {"n_train": 200, "n_validation": 20, "n_test": 30, "seed": 0}}},
          "models": {"tiny-qwen3": {"source": "tiny:qwen3", "options": {"pretrain_steps": 10, "pretrain_corpus": "synthetic:world-mc", "seed": 0},
                                    "settings": {"FP+GradES": {"method": {"tau": 4.0}},
                                                 "LoRA+GradES": {"method": {"tau": 2.0}}}}},
          "finetune": {"steps": 10, "batch_size": 4, "seq_len": 64, "lr": {"fp": 1e-3, "lora": 1e-3}},
          "settings": {"FP": {"mode": "fp", "method": "none"},
                       "FP+GradES": {"mode": "fp", "method": {"name": "grades", "alpha": 0.3}},
                       "LoRA": {"mode": "lora", "method": "none"},
                       "LoRA+GradES": {"mode": "lora", "method": {"name": "grades", "alpha": 0.3}}}}


def snakemake(workdir: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory",
                           str(workdir), "--configfile", str(cfg), "--cores", "1", *args],
                          capture_output=True, text=True, env=env, timeout=timeout)


def jobs(dry: subprocess.CompletedProcess) -> dict[str, int]:
    """{rule: jobs} of a dry run's job table."""
    out, on = {}, False
    for line in dry.stdout.splitlines():
        parts = line.split()
        if parts[:2] == ["job", "count"]:
            on = True
        elif on and len(parts) == 2 and parts[1].isdigit() and parts[0] != "total":
            out[parts[0]] = int(parts[1])
        elif on and parts and parts[0] == "total":
            break
    return out


@pytest.mark.slow
def test_dry_runs_partial_never_runs_a_run_and_all_waits_for_every_one(tmp_path):
    fresh = snakemake(tmp_path, "-n", "partial")
    assert fresh.returncode == 0, fresh.stderr
    assert jobs(fresh) == {"partial": 1}  # nothing exists: still no training, no evaluation
    full = snakemake(tmp_path, "-n")
    assert full.returncode == 0, full.stderr
    j = jobs(full)
    assert j["train"] == 4 and j["evaluate"] == 4 and j["evaluate_base"] == 1 and j["tables"] == 1
    assert "partial" not in j


@pytest.mark.slow
def test_partial_over_a_runs_directory_with_a_failed_run(tmp_path):
    runs = tmp_path / "results" / "runs" / "t"
    for d in ("models/tiny-qwen3", "data/world-mc"):  # the prepared inputs, older than every run file
        (tmp_path / "cache" / "t" / d).mkdir(parents=True)
    fake_runs(runs)
    dry = snakemake(tmp_path, "-n", "partial")
    assert jobs(dry) == {"partial": 1}, dry.stdout
    done = snakemake(tmp_path, "partial")
    assert done.returncode == 0, done.stderr + (tmp_path / "results/logs/t/partial.log").read_text()
    tables = tmp_path / "results" / "tables" / "t"
    md = (tables / "accuracy.md").read_text()
    assert "| tiny-qwen3 | FP | 50.00 ± 2.00 |" in md and "| tiny-qwen3 | FP+GradES | missing (failed) |" in md
    assert "| tiny-qwen3 | LoRA+GradES | missing (not run) |" in md
    st = pd.read_csv(tables / "runs.csv")
    assert list(st["status"]) == ["ok", "failed", "not evaluated", "not run", "ok"]
    assert (tables / "efficiency.md").exists()
    # the main target reruns what is missing: the failed run, the unevaluated one, the one never run
    again = snakemake(tmp_path, "-n")
    j = jobs(again)
    assert j["train"] == 2 and j["evaluate"] == 3 and j["tables"] == 1 and "evaluate_base" not in j, again.stdout
