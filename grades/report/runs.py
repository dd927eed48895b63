"""The tables' view of a profile's runs: finished runs and base evaluations as data frames, and the planned runs' status.

Every file is read through :mod:`grades.rundir` (finished runs: train.json with status
``ok``; base models: ``<model>/base/eval.json``); a failed or damaged run is logged
there and left out of the frames, and :func:`run_status` says, for every run the
workflow planned, whether it is there, failed, was never run or was not evaluated.

An eval row carries the task's score in ``acc`` (its own metric: ``acc`` of a
log-likelihood task, ``exact_match`` of a generation task, a Hub benchmark's score),
with ``metric``, ``protocol``, ``benchmark`` and ``split`` saying what it is.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from ..rundir import Run, RunDir, base_dirs, finished_runs, load_run


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


def task_score(r: dict) -> tuple[float | None, float | None, str | None]:
    """(value, stderr, metric) of one eval.json task entry: its ``metric`` / ``score`` (every
    entry written since they were recorded), else ``acc``, else ``exact_match``."""
    if r.get("metric") and r.get("score") is not None:
        return r["score"], r.get("score_stderr"), r["metric"]
    for m in ("acc", "exact_match"):
        if r.get(m) is not None:
            return r[m], r.get(f"{m}_stderr"), m
    return None, None, None


def eval_rows(e: dict, model, setting, mode, method, seed):
    """One row per task of an eval.json that has a score (module docstring)."""
    from ..evaluate.catalogue import protocol_of

    for task, r in e.get("tasks", {}).items():
        acc, se, metric = task_score(r)
        if acc is None:
            continue
        chance = r.get("chance_acc") or ((1.0 / r["n_choices"]) if r.get("n_choices") else None)
        yield {"model": model, "setting": setting, "mode": mode, "method": method, "seed": seed, "task": task,
               "acc": acc, "acc_stderr": math.nan if se is None else se, "n": r.get("n"), "metric": metric,
               "protocol": r.get("protocol") or protocol_of(r.get("output_type")),
               "benchmark": r.get("benchmark"), "split": r.get("split"),
               "chance": math.nan if chance is None else chance}


STATUSES = ("ok", "not evaluated", "failed", "not run")


def run_status(runs_dir: str | Path, expected: list[str]) -> pd.DataFrame:
    """One row per planned run ``'<model>/<slug>/seed<k>[=<setting>]'`` (``'<model>/base'`` for a
    base evaluation): model, setting (the name given, else run.yaml's, else the slug), seed, status
    (:data:`STATUSES`) and why (the error of a failed run)."""
    rows = []
    for entry in expected:
        key, _, name = entry.partition("=")
        parts = key.strip("/").split("/")
        rd = RunDir(Path(runs_dir, *parts))
        if len(parts) == 2:  # <model>/base
            rows.append({"run": key, "model": parts[0], "setting": "Base", "seed": 0,
                         "status": "ok" if rd.eval(quiet=True) else "not run", "reason": ""})
            continue
        model, slug, seed = parts[0], parts[1], int(parts[2].removeprefix("seed"))
        setting = name or (rd.run_config() or {}).get("name") or slug
        failed = rd.failed()
        if load_run(rd.path, quiet=True) is not None:
            status, reason = ("ok", "") if rd.eval(quiet=True) else ("not evaluated", "no eval.json")
        elif failed:
            status, reason = "failed", str(failed.get("error") or "train_failed.json")
        else:
            status, reason = "not run", ""
        rows.append({"run": key, "model": model, "setting": setting, "seed": seed, "status": status,
                     "reason": reason.splitlines()[0][:200] if reason else ""})
    return pd.DataFrame(rows, columns=["run", "model", "setting", "seed", "status", "reason"])
