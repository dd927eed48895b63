"""Collect run directories into data frames."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd


def _load(p: Path) -> dict | None:
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        return None


def collect(runs_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train, eval) frames; one train row per run, one eval row per run x task.

    Layout: <runs_dir>/<model>/<setting-slug>/seed<k>/{train,eval}.json and
    <runs_dir>/<model>/base/eval.json for the model without fine-tuning.
    """
    root = Path(runs_dir)
    trains, evals = [], []
    for tj in sorted(root.glob("*/*/seed*/train.json")):
        t = _load(tj)
        if not t or t.get("status") != "ok":
            continue
        model = tj.parts[-4]
        seed = int(tj.parts[-2].removeprefix("seed"))
        row = {
            "model": model, "setting": t["name"], "mode": t["mode"], "method": t["method"], "seed": seed,
            "train_time_s": t["train_time_s"], "validation_time_s": t["validation_time_s"],
            "total_time_s": t["total_time_s"], "time_per_step_s": t["time_per_step_s"],
            "flops_train": t["flops"]["total"], "flops_validation": t["flops"]["validation"],
            "flops_total": t["flops"]["total_with_validation"], "steps_run": t["steps_run"],
            "steps_planned": t["steps_planned"], "frozen_ratio": t["frozen_ratio"],
            "frozen_param_ratio": t["frozen_param_ratio"], "peak_rss_mb": t["peak_rss_bytes"] / 2**20,
            "stop_reason": t["stop_reason"], "trainable_params": t["trainable_params"],
            "first_freeze_step": (t.get("grades") or {}).get("first_freeze_step"),
            "loss_last": t.get("loss_last"), "run_dir": str(tj.parent),
        }
        trains.append(row)
        e = _load(tj.parent / "eval.json")
        if e:
            evals.extend(_eval_rows(e, model, t["name"], t["mode"], t["method"], seed))
    for ej in sorted(root.glob("*/base/eval.json")):
        e = _load(ej)
        if e:
            evals.extend(_eval_rows(e, ej.parts[-3], "Base", "base", "none", 0))
    return pd.DataFrame(trains), pd.DataFrame(evals)


def _eval_rows(e: dict, model, setting, mode, method, seed):
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
