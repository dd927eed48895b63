"""The tables' view of a profile's runs: finished runs and base evaluations as two data frames.

Every file is read through :mod:`grades.rundir` (finished runs: train.json with status
``ok``; base models: ``<model>/base/eval.json``); a failed or damaged run is logged
there and left out here.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..rundir import Run, base_dirs, finished_runs


def train_row(r: Run) -> dict:
    """The train.json numbers of one finished run, as a row of the train frame."""
    t = r.train
    return {
        "model": r.model, "setting": t["name"], "mode": t["mode"], "method": t["method"], "seed": r.seed,
        "train_time_s": t["train_time_s"], "validation_time_s": t["validation_time_s"],
        "total_time_s": t["total_time_s"], "time_per_step_s": t["time_per_step_s"],
        "flops_train": t["flops"]["total"], "flops_validation": t["flops"]["validation"],
        "flops_total": t["flops"]["total_with_validation"], "steps_run": t["steps_run"],
        "steps_planned": t["steps_planned"], "frozen_ratio": t["frozen_ratio"],
        "frozen_param_ratio": t["frozen_param_ratio"], "peak_rss_mb": t["peak_rss_bytes"] / 2**20,
        "stop_reason": t["stop_reason"], "trainable_params": t["trainable_params"],
        "first_freeze_step": (t.get("grades") or {}).get("first_freeze_step"),
        "loss_last": t.get("loss_last"), "run_dir": str(r.dir),
    }


def collect(runs_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, eval) frames; one train row per run, one eval row per run x task.

    Layout: <runs_dir>/<model>/<setting-slug>/seed<k>/{train,eval}.json and
    <runs_dir>/<model>/base/eval.json for the model without fine-tuning.
    """
    trains, evals = [], []
    for r in finished_runs(runs_dir):
        t = r.train
        trains.append(train_row(r))
        e = r.eval
        if e:
            evals.extend(eval_rows(e, r.model, t["name"], t["mode"], t["method"], r.seed))
    for b in base_dirs(runs_dir):
        e = b.eval()
        if e:
            evals.extend(eval_rows(e, b.model, "Base", "base", "none", 0))
    return pd.DataFrame(trains), pd.DataFrame(evals)


def eval_rows(e: dict, model, setting, mode, method, seed):
    """One row per task of an eval.json that has an accuracy (or a benchmark's own score)."""
    for task, r in e.get("tasks", {}).items():
        acc, se, metric = r.get("acc"), r.get("acc_stderr"), "acc"
        if acc is None and "data" not in r and r.get("score") is not None:
            # a benchmark over Hub data (evals/tasks/hub): its own metric (VQA accuracy, CIDEr, ...)
            acc, se, metric = r["score"], r.get("score_stderr"), r.get("metric") or "score"
        if acc is None:
            continue
        yield {"model": model, "setting": setting, "mode": mode, "method": method, "seed": seed, "task": task,
               "acc": acc, "acc_stderr": math.nan if se is None else se, "n": r.get("n"), "metric": metric,
               "chance": (1.0 / r["n_choices"]) if r.get("n_choices") else math.nan}
