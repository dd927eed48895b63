"""grades.report.paired: settings compared with their baselines item by item, from fabricated run directories."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from grades.report import paired as P
from grades.report import stats as S
from grades.rundir import RunDir, finished_runs


def write_run(root, model, slug, *, name, mode, method, correct, seed=0, task="task_a", samples=True,
              first_id=0):
    """A finished run with eval.json and one samples.jsonl record per item (``correct``: 0/1 per item)."""
    d = root / model / slug / f"seed{seed}"
    d.mkdir(parents=True)
    (d / "train.json").write_text(json.dumps({"status": "ok", "name": name, "mode": mode, "method": method}))
    tasks = correct if isinstance(correct, dict) else {task: correct}
    (d / "eval.json").write_text(json.dumps({"tasks": {t: {"acc": float(np.mean(c)), "n": len(c)}
                                                       for t, c in tasks.items()}}))
    if samples:
        recs = [{"task": t, "doc_id": first_id + i, "acc": float(c)} for t, cs in tasks.items()
                for i, c in enumerate(cs)]
        RunDir(d).write_samples(recs)
    return d


def scores(n, p, seed):
    return (np.random.default_rng(seed).random(n) < p).astype(int).tolist()


def flip(c, k, seed):
    c = list(c)
    for i in np.random.default_rng(seed).choice(len(c), k, replace=False):
        c[i] = 1 - c[i]
    return c


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    fp = scores(400, 0.43, 0)
    write_run(root, "m", "fp", name="FP", mode="fp", method="none", correct=fp)
    write_run(root, "m", "fp-grades", name="FP+GradES", mode="fp", method="grades", correct=flip(fp, 60, 1))
    lora = scores(400, 0.43, 2)
    write_run(root, "m", "lora", name="LoRA", mode="lora", method="none", correct=lora)
    write_run(root, "m", "lora-es", name="LoRA+ES", mode="lora", method="es", correct=lora)  # identical answers
    # two seeds of LoRA+GradES against one of LoRA: only seed 0 pairs
    write_run(root, "m", "lora-grades", name="LoRA+GradES", mode="lora", method="grades", correct=flip(lora, 40, 3))
    write_run(root, "m", "lora-grades", name="LoRA+GradES", mode="lora", method="grades", correct=flip(lora, 40, 4),
              seed=1)
    # a run without per-item records
    write_run(root, "m", "fp-es", name="FP+ES", mode="fp", method="es", correct=fp, samples=False)
    return root


def test_samples_read_through_rundir(runs_dir, tmp_path):
    rd = RunDir(runs_dir / "m" / "fp" / "seed0")
    recs = rd.samples()
    assert len(recs) == 400 and recs[0]["task"] == "task_a"
    assert RunDir(tmp_path).samples() is None
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "samples.jsonl").write_text('{"a": 1}\nnot json\n')
    assert RunDir(bad).samples() is None


def test_item_scores_keys_and_metrics():
    recs = [{"task": "t", "doc_id": 0, "acc": 1.0}, {"task": "t", "doc_id": 1, "acc": 0},
            {"task": "g", "id": "q7", "exact_match": True}, {"task": "g", "id": "q8", "exact_match": None},
            {"task": "g", "doc_id": None, "id": None, "acc": 1}]
    s = P.item_scores(recs, {"g": "exact_match"})
    assert s == {("t", "0"): 1.0, ("t", "1"): 0.0, ("g", "q7"): 1.0}


def test_baselines():
    settings = {("m", "FP"): ("fp", "none"), ("m", "FP+GradES"): ("fp", "grades"), ("m", "LoRA"): ("lora", "none"),
                ("m", "LoRA+ES"): ("lora", "es"), ("m", "LoRA[r=4]"): ("lora", "none")}
    assert P.baseline_of("m", "FP+GradES", "fp", "grades", settings) == "FP"
    assert P.baseline_of("m", "LoRA+ES", "lora", "es", settings) == "LoRA"
    assert P.baseline_of("m", "LoRA", "lora", "none", settings) is None
    assert P.baseline_of("m", "LoRA+ES", "lora", "es", settings, "FP") == "FP"  # the config names one
    assert P.baseline_of("m", "LoRA", "lora", "none", settings, "FP") == "FP"
    assert P.baseline_of("m", "FP", "fp", "none", settings, "FP") is None
    assert P.baseline_of("m", "FP+GradES", "fp", "grades", settings, "Other") is None


def test_paired_comparisons(runs_dir):
    tab = P.collect_paired(runs_dir, n_resamples=2000).set_index("setting")
    assert sorted(tab.index) == ["FP+GradES", "LoRA+ES", "LoRA+GradES"]  # FP+ES has no records
    g = tab.loc["FP+GradES"]
    assert g["baseline"] == "FP" and g["n"] == 400 and g["seeds_paired"] == 1
    assert g["better"] + g["worse"] == 60 and g["verdict"] == S.UNDECIDED
    assert g["lo"] < g["diff"] < g["hi"]
    es = tab.loc["LoRA+ES"]
    assert es["diff"] == 0 and es["verdict"] == S.EQUIVALENT  # 400 identical answers: within a point
    assert tab.loc["LoRA+GradES", "seeds_paired"] == 1  # LoRA has seed 0 only


def test_paired_per_seed_and_named_baseline(runs_dir):
    runs = finished_runs(runs_dir)
    per = P.paired_comparisons(runs, per_seed=True, n_resamples=500)
    lg = per[per["setting"] == "LoRA+GradES"]
    assert lg["seed"].tolist() == [0]
    named = P.paired_comparisons(runs, baseline="FP", n_resamples=500).set_index("setting")
    assert set(named["baseline"]) == {"FP"} and "LoRA" in named.index and "FP" not in named.index


def test_paired_seeds_and_tasks(tmp_path):
    root = tmp_path / "runs"
    for seed in (0, 1):
        a, b = scores(200, 0.5, 10 + seed), scores(100, 0.5, 20 + seed)
        write_run(root, "m", "fp", name="FP", mode="fp", method="none", seed=seed, correct={"a": a, "b": b})
        write_run(root, "m", "fp-g", name="FP+GradES", mode="fp", method="grades", seed=seed,
                  correct={"a": flip(a, 20, seed), "b": flip(b, 10, seed)})
    tab = P.collect_paired(root, n_resamples=500)
    assert tab["task"].tolist() == ["a", "b", P.ALL_TASKS]
    assert set(tab["seeds_paired"]) == {2}
    by = tab.set_index("task")
    # every task counts equally in the pooled row, as in the tables' average
    assert by.loc[P.ALL_TASKS, "diff"] == pytest.approx((by.loc["a", "diff"] + by.loc["b", "diff"]) / 2)
    assert by.loc[P.ALL_TASKS, "acc"] == pytest.approx((by.loc["a", "acc"] + by.loc["b", "acc"]) / 2)
    assert by.loc["a", "n"] == 200 and by.loc[P.ALL_TASKS, "n"] == 300


def test_only_common_items_are_paired(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "m", "fp", name="FP", mode="fp", method="none", correct=[1] * 100)
    write_run(root, "m", "fp-g", name="FP+GradES", mode="fp", method="grades", correct=[1] * 100, first_id=50)
    tab = P.collect_paired(root, n_resamples=200)
    assert tab["n"].tolist() == [50]
    assert math.isnan(tab["seed"].iloc[0])


def test_pools(tmp_path):
    """Tasks of different protocols are not averaged together: one pooled row per pool of several tasks."""
    root = tmp_path / "runs"
    c = {"a": scores(50, 0.5, 1), "b": scores(50, 0.5, 2), "g": scores(50, 0.5, 3)}
    write_run(root, "m", "fp", name="FP", mode="fp", method="none", correct=c)
    write_run(root, "m", "fp-g", name="FP+GradES", mode="fp", method="grades",
              correct={t: flip(v, 5, 9) for t, v in c.items()})
    tab = P.collect_paired(root, n_resamples=200, pools={"a": "loglikelihood", "b": "loglikelihood",
                                                         "g": "generation"})
    assert list(zip(tab["task"], tab["pool"])) == [("a", "loglikelihood"), ("b", "loglikelihood"),
                                                   ("g", "generation"), (P.ALL_TASKS, "loglikelihood")]
    assert tab.iloc[-1]["n"] == 100
