"""Matched-budget baselines: names, budget arithmetic, planning in the workflow config, the
report's table and figure, and one real tiny run trained for the budget its method used.

The Snakemake side (the compare target plans matched runs only after the method's
train.json exists) is in tests/test_workflow_matched.py.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from grades import ConfigError
from grades import workflow as gw
from grades.report import compare as C
from grades.report import matched as RM
from grades.workflow import matched as WM

ROOT = Path(__file__).resolve().parent.parent
SMOKE = yaml.safe_load((ROOT / "config" / "smoke.yaml").read_text())
DEFAULT = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
M = "tiny-qwen3"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def train_record(steps_run, flops, *, planned=200, seed=0, data="cache/d", mode="fp", status="ok", name="X"):
    return {"status": status, "name": name, "mode": mode, "seed": seed, "data_dir": data, "steps_run": steps_run,
            "steps_planned": planned, "flops": {"total": flops}}


# ------------------------------------------------------------------ names
def test_names_round_trip_and_slugs_fit_the_wildcard():
    assert WM.matched_name("FP", "FP+GradES") == "FP@matched(FP+GradES)"
    assert WM.matched_name("LoRA", "LoRA+GradES", "flops") == "LoRA@matched-flops(LoRA+GradES)"
    assert WM.parse_matched("LoRA@matched-flops(LoRA+GradES[tau=1.0])") == ("LoRA", "LoRA+GradES[tau=1.0]", "flops")
    assert WM.parse_matched("FP@matched(FP+GradES)") == ("FP", "FP+GradES", "steps")
    assert WM.parse_matched("FP+GradES") is None and WM.parse_matched("LoRA+GradES[tau=1.0]") is None
    assert gw.slug("FP@matched(FP+GradES)") == "fp-matched-fp-grades"
    with pytest.raises(ValueError):
        WM.matched_name("FP", "FP+GradES", "time")


# ------------------------------------------------------------------ budget arithmetic
def test_step_budget_is_the_stop_step_and_flops_budget_the_flops_share():
    base = train_record(200, 2.0e12)
    stopped = train_record(120, 0.9e12)  # stopped at 120 of 200, frozen matrices made the steps cheaper too
    s = WM.compute_budget(stopped, base, "steps")
    assert (s["steps"], s["planned"]) == (120, True) and "stopped at step 120 of 200" in s["reason"]
    f = WM.compute_budget(stopped, base, "flops")
    assert f["flops_fraction"] == pytest.approx(0.45)
    assert (f["steps"], f["planned"]) == (90, True)  # 0.45 * 200 baseline steps
    # froze without stopping: the step budget is the baseline's own run, the FLOPs budget is not
    full = train_record(200, 1.3e12)
    assert WM.compute_budget(full, base, "steps")["planned"] is False
    f = WM.compute_budget(full, base, "flops")
    assert (f["steps"], f["planned"]) == (130, True)
    # stopped without freezing anything earlier: the FLOPs budget equals the step budget, planned once
    plain = train_record(50, 0.5e12)
    assert WM.compute_budget(plain, base, "steps")["steps"] == 50
    f = WM.compute_budget(plain, base, "flops")
    assert (f["steps"], f["planned"]) == (50, False)
    # the baseline's mean cost per step: a baseline cut short (NaN stop) still gives the right share
    cut = train_record(100, 1.0e12)
    assert WM.compute_budget(train_record(200, 0.25e12), cut, "flops")["steps"] == 25
    # rounding to the nearest step, at least one, at most the baseline's planned steps
    assert WM.compute_budget(train_record(200, 0.0026e12), base, "flops")["steps"] == 1  # 0.26 steps
    assert WM.compute_budget(train_record(200, 0.0151e12), base, "flops")["steps"] == 2  # 1.51 steps
    assert WM.compute_budget(train_record(200, 9e12), base, "flops")["steps"] == 200


@pytest.mark.parametrize("field,value", [("seed", 1), ("data_dir", "cache/other"), ("mode", "lora"),
                                         ("status", "failed")])
def test_budget_refuses_runs_that_are_not_a_pair(field, value):
    other = {**train_record(100, 1e12), field: value}
    with pytest.raises(ValueError, match=field if field != "status" else "did not finish"):
        WM.compute_budget(other, train_record(200, 2e12), "steps")


def test_matched_config_sets_the_steps_and_keeps_the_schedule(tmp_path):
    cfg = gw.load(copy.deepcopy(SMOKE))
    run = gw.PlannedRun(M, "FP@matched(FP+GradES)", 0)
    rc = gw.run_config(cfg, run, "m", "d")
    assert gw.matched_config(rc, []) is rc
    budget = tmp_path / "budget.json"
    budget.write_text(json.dumps({"steps": 37, "planned": True}))
    out = gw.matched_config(rc, [str(budget)])
    assert out["steps"] == 37 and out["schedule"] == rc["schedule"] == {"name": "cosine", "warmup_ratio": 0.05}
    assert {k: v for k, v in out.items() if k != "steps"} == {k: v for k, v in rc.items() if k != "steps"}
    assert WM.budget_planned(budget) and not WM.budget_planned(tmp_path / "absent.json")  # --touch wrote none


# ------------------------------------------------------------------ planning in the workflow config
def test_smoke_profile_plans_matched_runs_of_both_methods_for_the_tiny_model():
    cfg = gw.load(copy.deepcopy(SMOKE))
    runs = gw.matched_runs(cfg)
    assert [(r.model, r.setting) for r in runs] == [
        (M, "FP@matched(FP+GradES)"), (M, "FP@matched-flops(FP+GradES)"),
        (M, "LoRA@matched(LoRA+GradES)"), (M, "LoRA@matched-flops(LoRA+GradES)")]
    comp = gw.compare_runs(cfg)
    assert not set(runs) & set(comp)  # planned only once their budget is known
    assert {"FP", "FP+GradES", "LoRA", "LoRA+GradES"} <= {r.setting for r in comp}  # what they are planned from
    assert not set(runs) & set(gw.runs(cfg))  # not in the main target
    for r in runs:
        method, base = gw.matched_sources(cfg, r)
        assert (method.model, method.seed, base.model, base.seed) == (M, 0, M, 0)
        rc, brc = gw.run_config(cfg, r, "m", "d"), gw.run_config(cfg, base, "m", "d")
        assert rc["name"] == r.setting and brc["name"] == base.setting
        assert {k: v for k, v in rc.items() if k != "name"} == {k: v for k, v in brc.items() if k != "name"}
    assert gw.matched_sources(cfg, runs[2])[0].setting == "LoRA+GradES"


def test_default_profile_matches_fp_and_lora_grades_on_smollm2():
    cfg = gw.load(copy.deepcopy(DEFAULT))
    assert {(r.model, WM.parse_matched(r.setting)[1]) for r in gw.matched_runs(cfg)} == {
        ("smollm2-135m", "FP+GradES"), ("smollm2-135m", "LoRA+GradES")}


def test_matched_setting_takes_the_baselines_per_model_values():
    raw = copy.deepcopy(SMOKE)
    raw["models"][M]["settings"]["LoRA"] = {"lora": {"r": 4}}
    cfg = gw.load(raw)
    rc = gw.run_config(cfg, gw.PlannedRun(M, "LoRA@matched(LoRA+GradES)", 0), "m", "d")
    assert rc["lora"]["r"] == 4 and rc["method"] == "none"


BAD = [
    (["FP+GradEZ"], ["compare.matched", "did you mean 'FP+GradES'"]),
    (["FP"], ["compare.matched", "'FP' has no method"]),
]


@pytest.mark.parametrize("matched,words", BAD)
def test_bad_matched_names_the_field(matched, words):
    raw = copy.deepcopy(SMOKE)
    raw["compare"]["matched"] = matched
    with pytest.raises(ConfigError) as e:
        gw.load(raw)
    for w in words:
        assert w in str(e.value), str(e.value)


def test_a_method_without_a_baseline_of_its_mode_is_refused():
    raw = copy.deepcopy(SMOKE)
    raw["settings"]["FP2"] = {"mode": "fp", "method": "none"}  # two FP baselines: which one?
    with pytest.raises(ConfigError, match="more than one setting of mode 'fp'.*settings.FP\\+GradES.baseline"):
        gw.load(raw)
    raw["settings"]["FP+GradES"]["baseline"] = "FP2"
    cfg = gw.load(raw)
    assert "FP2@matched(FP+GradES)" in {r.setting for r in gw.matched_runs(cfg)}


# ------------------------------------------------------------------ report
def write_run(root, slug, name, mode, method, acc, *, steps, flops, seed=0, planned=200):
    d = root / "m" / slug / f"seed{seed}"
    d.mkdir(parents=True)
    train = {"status": "ok", "name": name, "mode": mode, "method": method, "train_time_s": 10.0,
             "validation_time_s": 0.0, "total_time_s": 10.0, "time_per_step_s": 0.1,
             "flops": {"total": flops, "validation": 0.0, "total_with_validation": flops},
             "steps_run": steps, "steps_planned": planned, "frozen_ratio": 0.0, "frozen_param_ratio": 0.0,
             "peak_rss_bytes": 2**30, "stop_reason": "x", "trainable_params": 1, "grades": None, "loss_last": 1.0}
    (d / "train.json").write_text(json.dumps(train))
    (d / "eval.json").write_text(json.dumps({"tasks": {"t": {"acc": acc, "acc_stderr": 0.02, "n": 300,
                                                             "n_choices": 4}}}))


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    for seed, bump in ((0, 0.0), (1, 0.02)):
        write_run(root, "fp", "FP", "fp", "none", 0.60 + bump, steps=200, flops=2e12, seed=seed)
        write_run(root, "fp-grades", "FP+GradES", "fp", "grades", 0.58 + bump, steps=120, flops=0.9e12, seed=seed)
        write_run(root, "fp-matched-fp-grades", "FP@matched(FP+GradES)", "fp", "none", 0.55 + bump, steps=120,
                  flops=1.2e12, seed=seed, planned=120)
        write_run(root, "fp-matched-flops-fp-grades", "FP@matched-flops(FP+GradES)", "fp", "none", 0.50 + bump,
                  steps=90, flops=0.9e12, seed=seed, planned=90)
    return root


def test_matched_table_pairs_each_method_with_its_budgets(runs_dir, tmp_path):
    paths = C.write_comparison(runs_dir, tmp_path / "t", tmp_path / "f", matched=True)
    tab = pd.read_csv(paths["matched.csv"]).set_index("budget")
    assert list(tab.index) == ["flops", "steps", "full"]  # cheapest budget first
    assert tab.loc["steps", "against"] == "FP@matched(FP+GradES)" and tab.loc["full", "against"] == "FP"
    assert tab.loc["flops", "delta"] == pytest.approx(8.0)  # 58 vs 50, and 60 vs 52: +8 points each seed
    assert tab.loc["steps", "delta"] == pytest.approx(3.0) and tab.loc["full", "delta"] == pytest.approx(-2.0)
    assert tab.loc["flops", "flops_ratio"] == pytest.approx(1.0)
    assert (tab["steps_method"] == 120).all() and tab.loc["flops", "steps_baseline"] == 90
    assert (tab["seeds"] == 2).all()
    assert tab["p_value"].isna().all() and (tab["verdict"] == "no per-item records").all()  # no samples.jsonl
    md = paths["comparison.md"].read_text()
    assert "## Matched budgets" in md and "| m | FP+GradES | FP@matched-flops(FP+GradES) | training FLOPs |" in md
    # the matched runs are rows of the comparison itself, too
    comp = pd.read_csv(paths["comparison.csv"])
    assert {"FP@matched(FP+GradES)", "FP@matched-flops(FP+GradES)"} <= set(comp["setting"])
    for ext in ("png", "pdf"):
        assert paths[f"matched_m.{ext}"].stat().st_size > 1000
    assert paths["matched_m.png"].read_bytes()[:8] == PNG_MAGIC


def test_paired_test_pairs_the_method_with_the_matched_run_item_by_item(runs_dir, tmp_path):
    """With per-item records the matched rows carry grades.report.paired's interval and McNemar p."""
    from grades.rundir import RunDir

    n = 300
    for seed in (0, 1):
        for slug, right in (("fp-grades", 240), ("fp-matched-flops-fp-grades", 200), ("fp", 240),
                            ("fp-matched-fp-grades", 240)):
            RunDir(runs_dir / "m" / slug / f"seed{seed}").write_samples(
                [{"task": "t", "doc_id": i, "acc": float(i < right)} for i in range(n)])
    tab = pd.read_csv(C.write_comparison(runs_dir, tmp_path / "t", None, matched=True)["matched.csv"])
    flops = tab.set_index("budget").loc["flops"]
    # FP+GradES right on 40 more items of 300 than FP@matched-flops, in both seeds: +13.3 points, certain
    assert 0 < flops["delta_ci_low"] <= 40 / 3 <= flops["delta_ci_high"] and flops["p_value"] < 1e-6
    same = tab.set_index("budget").loc["steps"]  # the same items right: no difference
    assert same["delta_ci_low"] == same["delta_ci_high"] == 0 and same["p_value"] == 1


def test_matched_figure_draws_one_line_per_pair(runs_dir):
    from grades.report.runs import collect

    points = C.run_points(*collect(runs_dir))
    fig = RM.matched_figure(RM.matched_pairs(points), "m")
    ax = fig.axes[0]
    dashed = [ln for ln in ax.get_lines() if ln.get_linestyle() == "--"]
    assert len(dashed) == 1  # one method, one "train less" line
    assert sorted(dashed[0].get_xdata()) == [0.9e12, 1.2e12, 2e12]  # flops budget, step budget, full run
    assert RM.matched_figure(RM.matched_pairs(points), "other").axes[0].texts  # "no matched runs" message


def test_without_matched_runs_the_table_says_so(tmp_path):
    root = tmp_path / "runs"
    write_run(root, "fp", "FP", "fp", "none", 0.6, steps=200, flops=2e12)
    paths = C.write_comparison(root, tmp_path / "t", None, matched=True)
    assert "no matched runs finished" in paths["matched.md"].read_text()
    assert "matched.csv" not in C.write_comparison(root, tmp_path / "t2")  # off unless asked


def test_accuracy_table_baseline_is_never_a_matched_run(runs_dir):
    from grades.report.runs import collect
    from grades.report.tables import accuracy_table

    acc = accuracy_table(*collect(runs_dir))
    g = acc[acc["setting"].eq("FP+GradES")]
    assert (g["baseline"] == "FP").all() and g["delta_vs_baseline"].iloc[0] == pytest.approx(-2.0)
    assert acc[acc["setting"].str.contains("@matched")]["delta_vs_baseline"].isna().all()


# ------------------------------------------------------------------ a real tiny matched run
# on this model and schedule: most matrices freeze at step 10 (end of the grace period), the last ones
# by step 16, where the run stops with about 37% of FP's training FLOPs (15 of FP's steps)
GRADES = {"name": "grades", "alpha": 0.25, "tau": 2.0}


def test_tiny_matched_runs_train_for_the_budget_their_method_used(tmp_path, tiny_world):
    """FP+GradES stops early on the tiny Qwen3; FP@matched trains for its stop step, and
    FP@matched-flops for its share of FP's FLOPs, each with the schedule over those steps."""
    from grades.train import load_run_config, run

    model, data = tiny_world
    common = {"model": {"source": f"local:{model}"}, "data": {"source": f"jsonl:{data}"}, "steps": 40,
              "batch_size": 4, "seq_len": 96, "threads": 1, "optim": {"lr": 3.0e-3}, "save_model": False,
              "schedule": {"name": "cosine", "warmup_ratio": 0.1}}
    method = run(load_run_config({**common, "name": "FP+GradES", "method": GRADES}), tmp_path / "method",
                 progress=False)
    base = run(load_run_config({**common, "name": "FP"}), tmp_path / "fp", progress=False)
    assert method["early_stopped"] and method["steps_run"] < 40, method["stop_reason"]
    for budget in ("steps", "flops"):
        b = WM.compute_budget(method, base, budget)
        assert b["planned"], b
        path = tmp_path / f"budget-{budget}.json"
        path.write_text(json.dumps(b))
        name = WM.matched_name("FP", "FP+GradES", budget)
        rc = WM.matched_config(load_run_config({**common, "name": name}), [str(path)])
        rec = run(rc, tmp_path / name, progress=False)
        assert rec["steps_run"] == rec["steps_planned"] == b["steps"] and not rec["early_stopped"]
        assert rec["config"]["schedule"] == common["schedule"] and rec["config"]["steps"] == b["steps"]
        if budget == "steps":
            assert b["steps"] == method["steps_run"]
        else:
            want = method["flops"]["total"] / base["flops"]["total"] * base["steps_run"]
            assert b["steps"] == math.floor(want + 0.5) < method["steps_run"]
            # the FLOPs-matched run spent the method's training FLOPs, to within one step
            per_step = base["flops"]["total"] / base["steps_run"]
            assert abs(rec["flops"]["total"] - method["flops"]["total"]) <= per_step
        # same data order as the baseline: the first steps' losses are the baseline's (until the schedules part)
        assert rec["loss_curve"][0] == base["loss_curve"][0]


def test_paired_test_is_that_of_the_protocol_whose_accuracy_the_row_shows(tmp_path):
    """A model scored by two protocols: the row shows the first protocol's accuracy (as the
    comparison does), so its interval and p are that task's alone, never pooled with the other
    protocol's items (a real default-profile run showed Δ -4.75 beside an interval of both)."""
    from grades.rundir import RunDir

    root, n = tmp_path / "runs", 400
    # (generation, log-likelihood): the method is 19 items behind by generation and 19 ahead by
    # log-likelihood, so a test pooling both protocols would see no difference at all
    right = {"fp-grades": (128, 176), "fp-matched-fp-grades": (147, 157)}
    for slug, name, steps in (("fp", "FP", 40), ("fp-grades", "FP+GradES", 29),
                              ("fp-matched-fp-grades", "FP@matched(FP+GradES)", 29)):
        g, ll = right.get(slug, (128, 158))
        write_run(root, slug, name, "fp", "grades" if slug == "fp-grades" else "none", 0, steps=steps,
                  flops=steps * 1e12, planned=steps if "matched" in slug else 40)
        d = root / "m" / slug / "seed0"
        task = {"n": n, "n_choices": 3}
        (d / "eval.json").write_text(json.dumps({"tasks": {
            "gen": {**task, "acc": None, "score": g / n, "score_stderr": 0.02, "metric": "exact_match",
                    "protocol": "commonsense-generation", "output_type": "generate_until"},
            "ll": {**task, "acc": ll / n, "acc_stderr": 0.02, "metric": "acc", "score": ll / n,
                   "protocol": "loglikelihood", "output_type": "multiple_choice"}}}))
        RunDir(d).write_samples([{"task": "gen", "doc_id": i, "exact_match": float(i < g)} for i in range(n)]
                                + [{"task": "ll", "doc_id": i, "acc": float(i < ll)} for i in range(n)])
    vlm = root / "vlm" / "fp" / "seed0"
    vlm.mkdir(parents=True)
    (vlm / "train.json").write_text((root / "m" / "fp" / "seed0" / "train.json").read_text())
    (vlm / "eval.json").write_text(json.dumps({"tasks": {"shapes_mc": {
        "n": 300, "n_choices": 4, "acc": 0.5, "acc_stderr": 0.03, "protocol": "image-choice"}}}))
    paths = C.write_comparison(root, tmp_path / "t", tmp_path / "f", matched=True)
    both = pd.read_csv(paths["matched.csv"])
    # first protocol first; another model's protocol (the VLM's, say) adds no rows of NaN
    assert list(dict.fromkeys(both["protocol"])) == ["commonsense-generation", "loglikelihood"]
    assert both["acc_method"].notna().all()
    tab = both[both["protocol"].eq("commonsense-generation")].set_index("budget")
    steps = tab.loc["steps"]
    assert steps["tasks"] == "gen" and steps["protocol"] == "commonsense-generation"
    assert steps["delta"] == pytest.approx(100 * (128 - 147) / n)  # -4.75 points, generation only
    # 19 items right only in the matched run, none the other way: the generation task's own interval
    assert steps["delta_ci_low"] < -4.75 / 2 and steps["delta_ci_high"] < 0 and steps["p_value"] < 1e-4
    assert steps["verdict"] == "different"
    # the log-likelihood block: its own accuracy and test, 19 items the other way
    ll = both[both["protocol"].eq("loglikelihood")].set_index("budget").loc["steps"]
    assert ll["tasks"] == "ll" and ll["delta"] == pytest.approx(100 * 19 / n)
    assert ll["delta_ci_low"] > 0 and ll["verdict"] == "different"
    md = (tmp_path / "t" / "matched.md").read_text()
    assert "| gen (commonsense-generation) |" in md and "| ll (loglikelihood) |" in md
    from grades.report.matched import matched_figure, matched_pairs
    from grades.report.runs import collect

    train, evals = collect(root)
    per_protocol = [C.run_points(train, evals, protocol=p) for p in C.protocols(evals)]
    assert len(matched_figure(matched_pairs(per_protocol), "m").axes) == 2  # a panel per protocol
    assert paths["matched_m.png"].read_bytes()[:8] == PNG_MAGIC


def test_a_budget_not_trained_is_a_row_with_its_reason(runs_dir, tmp_path):
    """LoRA+GradES that saved nothing beyond its full run: no matched LoRA run is trained, and
    the table says so (with the method against LoRA's full run) instead of leaving it out."""
    write_run(runs_dir, "lora", "LoRA", "lora", "none", 0.62, steps=200, flops=1.5e12)
    write_run(runs_dir, "lora-grades", "LoRA+GradES", "lora", "grades", 0.61, steps=200, flops=1.49e12)
    d = runs_dir / "m" / "lora-matched-flops-lora-grades" / "seed0"
    d.mkdir(parents=True)
    why = "the FLOPs budget (199 steps) is not below the step budget (200)"
    (d / "budget.json").write_text(json.dumps({
        "name": "LoRA@matched-flops(LoRA+GradES)", "method": "LoRA+GradES", "baseline": "LoRA", "budget": "flops",
        "steps": 199, "planned": False, "reason": why}))
    paths = C.write_comparison(runs_dir, tmp_path / "t", tmp_path / "f", matched=True)
    tab = pd.read_csv(paths["matched.csv"])
    lora = tab[tab["method"].eq("LoRA+GradES")].set_index("budget")
    assert list(lora.index) == ["flops", "full"]
    assert lora.loc["flops", "verdict"] == f"not trained: {why}" and np.isnan(lora.loc["flops", "acc_baseline"])
    assert lora.loc["flops", "steps_baseline"] == 199
    assert lora.loc["full", "delta"] == pytest.approx(-1.0) and lora.loc["full", "against"] == "LoRA"
    md = paths["matched.md"].read_text()
    assert f"| – | not trained: {why} |" in md
    fp = tab[tab["method"].eq("FP+GradES")]
    assert len(fp) == 3 and not fp["verdict"].str.startswith("not trained").any()  # planned ones unchanged
