"""Interrupting the workflow and rerunning it gives a complete, consistent result set.

A miniature profile (a very small Qwen3-class model, two settings, checkpoints every 10
steps) is run three times in a scratch directory:

1. a training job is SIGKILLed after step 35 (as a cluster would kill it): Snakemake
   fails, the run has no train.json, its checkpoint of step 30 survives;
2. the rerun resumes that run from step 30; while it trains the next run, Snakemake
   itself is interrupted with SIGINT once that run has written a checkpoint;
3. the third invocation finishes everything.

Then every run has train.json with status ok and an eval.json, the tables list every
setting, no checkpoint is left behind, and a dry run plans nothing. About 2 minutes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow

PROFILE = "interrupt"
CONFIG = {
    "profile": PROFILE,
    "datasets": {"world-mc": {"source": "synthetic:world-mc",
                              "options": {"n_train": 300, "n_validation": 20, "n_test": 40, "n_names": 60,
                                          "corpus_docs": 40, "seed": 0},
                              "eval_tasks": ["world_mc"]}},
    "models": {"mini": {"source": "tiny:qwen3",
                        "options": {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "num_kv_heads": 1,
                                    "head_dim": 16, "intermediate_size": 64, "vocab_size": 300,
                                    "pretrain_steps": 20, "pretrain_corpus": "synthetic:world-mc",
                                    "pretrain_corpus_options": {"n_train": 300, "n_validation": 20,
                                                                "n_test": 40, "n_names": 60, "corpus_docs": 40},
                                    "seed": 0},
                        "settings": {"FP+GradES": {"method": {"tau": 0.35}}}}},
    "finetune": {"steps": 60, "batch_size": 4, "seq_len": 96, "lr": {"fp": 3.0e-3, "lora": 3.0e-3},
                 "checkpoint_every": 10},
    "settings": {"FP": {"mode": "fp", "method": "none"},
                 "FP+GradES": {"mode": "fp", "method": {"name": "grades", "alpha": 0.25}}},
    "seeds": [0],
    "eval": {"backend": "hf", "batch_size": 16, "dtype": "float32"},
    "report": {"baseline": "FP"},
}


def _cmd(work: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "--directory", str(work),
            "--configfile", str(work / "config.yaml"), "--cores", "1", *args]


def _env(**extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRADES_TEST_")}
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def _checkpoints(work: Path) -> dict[str, list[str]]:
    root = work / "results" / "checkpoints" / PROFILE / "mini"
    if not root.is_dir():
        return {}
    return {d.name: sorted(p.name for p in (d / "seed0").glob("step-*")) for d in root.iterdir()
            if (d / "seed0").is_dir()}


def _runs(work: Path) -> Path:
    return work / "results" / "runs" / PROFILE / "mini"


def test_kill_interrupt_and_rerun_give_a_complete_result_set(tmp_path):
    work = tmp_path
    (work / "config.yaml").write_text(yaml.safe_dump(CONFIG))

    # 1. a training job is killed after step 35
    r = subprocess.run(_cmd(work), env=_env(GRADES_TEST_KILL_AT_STEP="35"), capture_output=True, text=True,
                       timeout=900)
    assert r.returncode != 0, "the killed job must fail the workflow"
    ck = _checkpoints(work)
    killed = [s for s, steps in ck.items() if steps]
    assert len(killed) == 1, f"expected one run with checkpoints, got {ck}"
    killed = killed[0]
    assert ck[killed] == ["step-00000020", "step-00000030"], ck
    assert not (_runs(work) / killed / "seed0" / "train.json").exists(), "a killed run must not look finished"

    # 2. the rerun resumes it; Snakemake is interrupted while it trains the other run
    other = {"fp", "fp-grades"} - {killed}
    (other,) = other
    # SIGINT back to its default: a test run started in the background (nohup, `&`) inherits
    # it ignored, and then neither Snakemake nor its jobs would ever see the Ctrl-C
    p = subprocess.Popen(_cmd(work), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 1200
    try:
        while not _checkpoints(work).get(other):
            assert p.poll() is None, "the workflow finished before it could be interrupted:\n" + p.stdout.read()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint of the second run appeared"
            time.sleep(0.2)
        # Ctrl-C in the terminal reaches the whole process group. Snakemake drops an interrupt
        # that lands while it writes a log line (a loaded machine makes that likelier), and the
        # job goes on: like a user, press Ctrl-C again until it stops.
        for _ in range(60):
            os.killpg(p.pid, signal.SIGINT)
            try:
                p.wait(timeout=2)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
    assert p.returncode != 0
    resumed = json.loads((_runs(work) / killed / "seed0" / "train.json").read_text())
    assert resumed["status"] == "ok" and resumed["resumed_from_steps"] == [30], resumed.get("resumed_from_steps")
    assert not (_runs(work) / other / "seed0" / "train.json").exists()
    assert _checkpoints(work).get(other), "the interrupted run's checkpoints must survive"

    # 3. the third invocation completes everything
    r = subprocess.run(_cmd(work), env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-4000:]
    for setting in ("fp", "fp-grades"):
        run = _runs(work) / setting / "seed0"
        t = json.loads((run / "train.json").read_text())
        assert t["status"] == "ok" and t["steps_run"] <= 60
        assert json.loads((run / "eval.json").read_text())["tasks"]["world_mc"]
        assert not (run / "train_failed.json").exists()
    assert json.loads((_runs(work) / other / "seed0" / "train.json").read_text())["resumed_from_steps"]
    assert not any(_checkpoints(work).values()), "checkpoints of finished runs must be removed"
    acc = pd.read_csv(work / "results" / "tables" / PROFILE / "accuracy.csv")
    assert {"FP", "FP+GradES"} <= set(acc.setting)

    r = subprocess.run(_cmd(work, "-n"), env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr
