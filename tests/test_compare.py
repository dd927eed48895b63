"""Comparison table and Pareto figures from fabricated run directories (no training)."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pandas as pd
import pytest

from grades.report import compare as C
from grades.report.__main__ import main as report_main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_run(root, model, slug, *, name, mode, method, acc, se=0.02, time=100.0, flops=1e12, frozen=0.0,
              steps=80, planned=80, seed=0, status="ok", stop="planned steps reached", tasks=("task_a",),
              val_time=0.0, evaluated=True):
    """A run directory with the train.json / eval.json fields the report reads."""
    d = root / model / slug / f"seed{seed}"
    d.mkdir(parents=True)
    train = {"status": status, "name": name, "mode": mode, "method": method, "train_time_s": time - val_time,
             "validation_time_s": val_time, "total_time_s": time, "time_per_step_s": time / max(steps, 1),
             "flops": {"total": flops * 0.9, "validation": flops * 0.1, "total_with_validation": flops},
             "steps_run": steps, "steps_planned": planned, "frozen_ratio": frozen, "frozen_param_ratio": frozen,
             "peak_rss_bytes": 2**30, "stop_reason": stop, "trainable_params": 1000, "grades": None,
             "loss_last": 1.0}
    (d / "train.json").write_text(json.dumps(train))
    if evaluated:
        ev = {"tasks": {t: {"acc": acc, "acc_stderr": se, "n": 400, "n_choices": 3} for t in tasks}}
        (d / "eval.json").write_text(json.dumps(ev))
    return d


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    m = "model-a"
    write_run(root, m, "lora", name="LoRA", mode="lora", method="none", acc=0.60, time=200, flops=4e12)
    write_run(root, m, "lora-es", name="LoRA+ES", mode="lora", method="es", acc=0.60, time=150, flops=3e12,
              val_time=30, stop="validation loss did not improve for 2 evaluations (best 1.1 at step 30)", steps=50)
    write_run(root, m, "lora-grades", name="LoRA+GradES", mode="lora", method="grades", acc=0.62, time=160,
              flops=2.5e12, frozen=0.6, stop="all components frozen", steps=70)
    write_run(root, m, "lora-grades-tau-8-0", name="LoRA+GradES[tau=8.0]", mode="lora", method="grades",
              acc=0.55, time=90, flops=1.5e12, frozen=0.9)
    write_run(root, m, "lora-freezeout", name="LoRA+FreezeOut", mode="lora", method="freezeout", acc=0.58,
              time=170, flops=3.5e12, frozen=0.5)  # dominated by LoRA+GradES on both axes
    write_run(root, m, "lora-mine", name="LoRA+Mine", mode="lora", method="mine", acc=0.50, time=80, flops=1e12)
    # a second seed of LoRA+GradES: the table averages seeds, the figure draws both points
    write_run(root, m, "lora-grades", name="LoRA+GradES", mode="lora", method="grades", acc=0.64, time=170,
              flops=2.5e12, frozen=0.6, seed=1)
    # failed, unevaluated and other-model runs
    write_run(root, m, "lora-autofreeze", name="LoRA+AutoFreeze", mode="lora", method="autofreeze", acc=0.7,
              status="failed")
    write_run(root, "model-b", "fp", name="FP", mode="fp", method="none", acc=0.4, evaluated=False)
    (root / m / "base").mkdir()
    (root / m / "base" / "eval.json").write_text(json.dumps({"tasks": {"task_a": {"acc": 0.4, "acc_stderr": 0.02,
                                                                               "n": 400, "n_choices": 3}}}))
    return root


def test_pareto_mask():
    cost = [1, 2, 3, 2, 5, np.nan]
    acc = [1, 3, 2, 3, 4, 9]
    # (2,3) twice: identical points do not dominate each other; (3,2) is beaten by (2,3); NaN never counts
    assert C.pareto_mask(cost, acc).tolist() == [True, True, False, True, True, False]
    assert C.pareto_mask([], []).tolist() == []


def test_comparison_table_ranks_and_marks(runs_dir, tmp_path):
    paths = C.write_comparison(runs_dir, tmp_path / "tables")
    tab = pd.read_csv(paths["comparison.csv"])
    a = tab[tab.model == "model-a"].set_index("setting")
    # the failed run is skipped; everything else of model-a is ranked by accuracy, then time
    # LoRA and LoRA+ES tie on accuracy: the faster one (ES, 150 s against 200 s) ranks first
    assert list(a.index) == ["LoRA+GradES", "LoRA+ES", "LoRA", "LoRA+FreezeOut", "LoRA+GradES[tau=8.0]",
                             "LoRA+Mine"]
    assert list(a["rank"]) == [1, 2, 3, 4, 5, 6]
    g = a.loc["LoRA+GradES"]
    assert g.seeds == 2 and g.acc == pytest.approx(63.0) and g.total_time_s == pytest.approx(165)
    assert g.acc_stderr == pytest.approx(math.sqrt(2 * 2.0**2) / 2, rel=1e-4)  # CSV keeps 6 digits
    assert a["best_acc"].tolist() == [True, False, False, False, False, False]
    assert a.loc["LoRA+Mine", "best_time"] and a.loc["LoRA+Mine", "best_flops"] and a["best_time"].sum() == 1
    assert a.loc["LoRA+ES", "validation_time_s"] == 30
    assert a.loc["LoRA", "acc_gap"] == pytest.approx(-3.0)
    assert a.loc["LoRA+ES", "tied_best"] and not a.loc["LoRA+Mine", "tied_best"]
    # LoRA+ES is as accurate as LoRA for less time (LoRA off the time frontier), but costs more FLOPs
    # than the more accurate LoRA+GradES (off the FLOPs frontier); LoRA+FreezeOut is beaten on both
    assert set(a.index[a.pareto_time]) == {"LoRA+GradES", "LoRA+ES", "LoRA+GradES[tau=8.0]", "LoRA+Mine"}
    assert set(a.index[a.pareto_flops]) == {"LoRA+GradES", "LoRA+GradES[tau=8.0]", "LoRA+Mine"}
    # a run without an evaluation is listed, last, with no accuracy and never on the frontier
    b = tab[tab.model == "model-b"].iloc[0]
    assert math.isnan(b.acc) and not b.pareto_time and b["rank"] == 1


def test_comparison_markdown_bold_best(runs_dir, tmp_path):
    C.write_comparison(runs_dir, tmp_path)
    md = (tmp_path / "comparison.md").read_text()
    assert "## model-a (task_a; protocol loglikelihood, metric acc)" in md and "## model-b" in md
    rows = {ln.split(" | ")[1]: ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln}
    # two seeds (62 and 64): the mean ± their standard deviation
    assert "**63.00 ± 1.41 (sd, 2 seeds)**" in rows["LoRA+GradES"]
    assert "| 60.00 ± 2.00 |" in rows["LoRA+ES"]  # one seed: ± its standard error
    assert "**80.0**" in rows["LoRA+Mine"] and "**1e+12**" in rows["LoRA+Mine"]
    assert "-3.00 ± 2.45 ≈" in rows["LoRA"] and "≈" not in rows["LoRA+Mine"]
    assert "| t, F |" in rows["LoRA+GradES"] and "| t |" in rows["LoRA+ES"] and "50/80" in rows["LoRA+ES"]
    assert "validation loss did not improve for 2 evaluations |" in rows["LoRA+ES"]  # parenthesis dropped
    assert "Base model without fine-tuning: 40.00 ± 2.00." in md
    assert "**" not in rows["LoRA+FreezeOut"]


def test_select_keeps_only_the_listed_runs(runs_dir, tmp_path):
    C.write_comparison(runs_dir, tmp_path, select=["model-a/lora/seed0", "model-a/lora-grades"])
    tab = pd.read_csv(tmp_path / "comparison.csv")
    assert sorted(tab.setting) == ["LoRA", "LoRA+GradES"]
    assert tab.set_index("setting").loc["LoRA+GradES", "seeds"] == 2


def test_pareto_figure_png_pdf_and_cli(runs_dir, tmp_path, capsys):
    rc = report_main(["compare", "--runs", str(runs_dir), "--tables", str(tmp_path / "t"),
                      "--figures", str(tmp_path / "f"), "--models", "model-a", "model-b", "model-c"])
    assert rc == 0
    out = capsys.readouterr().out
    for model in ("model-a", "model-b", "model-c"):  # model-b: no evaluated run, model-c: no run: empty panels
        png = (tmp_path / "f" / f"pareto_{model}.png").read_bytes()
        pdf = (tmp_path / "f" / f"pareto_{model}.pdf").read_bytes()
        assert png[:8] == PNG_MAGIC and pdf[:5] == b"%PDF-"
        assert f"pareto_{model}.png" in out
    assert (tmp_path / "t" / "comparison.md").exists()
    assert not [p for p in (tmp_path / "f").iterdir() if p.name.endswith(".tmp")]


def test_pareto_figure_contents(runs_dir):
    from grades.report.runs import collect

    train, evals = collect(runs_dir)
    pts = C.run_points(train, evals)
    fig = C.pareto_figure(pts, "model-a", C.base_accuracy(evals)["model-a"])
    ax_time, ax_flops = fig.axes[:2]
    # one error bar container per run (seeds apart), on each panel
    assert len(ax_time.containers) == 7 == len(ax_flops.containers)
    labels = {t.get_text() for t in ax_time.texts}
    # the shared 'LoRA+' is dropped, a sweep point keeps its grid values, seeds are told apart
    assert labels == {"LoRA", "ES", "GradES s0", "GradES s1", "[tau=8.0]", "FreezeOut", "Mine"}
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert {"none", "es", "grades", "freezeout", "mine", "Pareto frontier"} <= set(legend)
    assert "base model (no fine-tuning):\n40.0 ± 2.0%" in legend
    assert any(ln.get_linestyle() == ":" for ln in ax_time.lines)  # 40% is close enough to be drawn
    # the frontier line goes through the non-dominated runs, cheapest first
    front = [ln for ln in ax_time.lines if ln.get_linestyle() == "--"][0]
    assert list(front.get_xdata()) == [80, 90, 150, 160, 170]
    cols = C.method_colours(["grades", "mine", "other", "mine"])  # methods outside the palette get their own
    assert list(cols) == ["grades", "mine", "other"] and len(set(cols.values())) == 3


def test_point_labels_and_label_placement():
    assert C.point_labels(["LoRA", "LoRA+ES", "LoRA+GradES", "LoRA+GradES[tau=2.0]"]) == \
        {"LoRA": "LoRA", "LoRA+ES": "ES", "LoRA+GradES": "GradES", "LoRA+GradES[tau=2.0]": "[tau=2.0]"}
    assert C.point_labels(["FP", "LoRA+ES"]) == {"FP": "FP", "LoRA+ES": "LoRA+ES"}
    assert C.point_labels(["X[a=1]"]) == {"X[a=1]": "X[a=1]"}
    # five runs on one spot: their labels are stacked, not drawn over each other
    pts = pd.DataFrame({"model": "m", "setting": [f"LoRA+M{i}" for i in range(5)], "mode": "lora",
                        "method": [f"m{i}" for i in range(5)], "seed": 0, "acc": 60.0, "acc_stderr": 1.0,
                        "total_time_s": [100.0, 100.5, 101, 100, 100], "flops_total": 1e12, "tasks": "t"})
    fig = C.pareto_figure(pts, "m")
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert len(boxes) == 5
    assert all(not a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_base_far_below_the_runs_goes_to_the_legend_only():
    pts = pd.DataFrame({"model": "m", "setting": ["A", "B"], "mode": "fp", "method": ["none", "grades"], "seed": 0,
                        "acc": [80.0, 82.0], "acc_stderr": 1.0, "total_time_s": [10.0, 8.0],
                        "flops_total": [2e12, 1e12], "tasks": "t"})
    fig = C.pareto_figure(pts, "m", (30.0, 2.0))
    assert not any(ln.get_linestyle() == ":" for ln in fig.axes[0].lines)
    assert fig.axes[0].get_ylim()[0] > 70
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "base model (no fine-tuning):\n30.0 ± 2.0%, below the axis" in legend



# ---------------------------------------------------------------- paired claims and their error bars
def write_items(run_dir, correct):
    """samples.jsonl of a run: one record per item of task_a (``correct``: 0/1 per item)."""
    from grades.rundir import RunDir

    RunDir(run_dir).write_samples([{"task": "task_a", "doc_id": i, "acc": float(c)} for i, c in enumerate(correct)])


def flipped(correct, idx):
    return [1 - c if i in idx else c for i, c in enumerate(correct)]


@pytest.fixture
def paired_dir(tmp_path):
    """LoRA and LoRA+GradES (two seeds each, 400 items), LoRA+ES with LoRA's answers, and per-step times."""
    root = tmp_path / "runs"
    rng = np.random.default_rng(0)
    flips = {}
    for seed in (0, 1):
        base = (rng.random(400) < 0.6).astype(int).tolist()
        # GradES: 30 items won, 10 lost against the baseline of the same seed
        wrong, right = [i for i, c in enumerate(base) if not c], [i for i, c in enumerate(base) if c]
        idx = set(wrong[:30]) | set(right[:10])
        flips[seed] = idx
        g = flipped(base, idx)
        d = write_run(root, "model-a", "lora", name="LoRA", mode="lora", method="none", acc=np.mean(base),
                      time=200, seed=seed)
        write_items(d, base)
        d = write_run(root, "model-a", "lora-grades", name="LoRA+GradES", mode="lora", method="grades",
                      acc=np.mean(g), time=150, seed=seed, frozen=0.5)
        write_items(d, g)
        if seed == 0:
            d = write_run(root, "model-a", "lora-es", name="LoRA+ES", mode="lora", method="es", acc=np.mean(base),
                          time=190, seed=0)
            write_items(d, base)
    # step times (3% noise), 80 steps each: LoRA 2.5 s a step; GradES the same until its first freeze
    # at step 24, then faster (150 s in all)
    for d in sorted(root.glob("model-a/*/seed*")):
        t = json.loads((d / "train.json").read_text())
        key = zlib.crc32(d.relative_to(root).as_posix().encode())  # the same noise wherever the test runs
        noise = 1 + 0.03 * np.random.default_rng(key).standard_normal(80)
        steps = np.full(80, 2.5)
        if t["method"] == "grades":
            steps[23:] = (150 - 23 * 2.5) / 57
            t["grades"] = {"first_freeze_step": 24}
        t["step_times_s"] = (steps * t["train_time_s"] / steps.sum() * noise).tolist()
        (d / "train.json").write_text(json.dumps(t))
    return root


def test_comparison_carries_the_paired_claims(paired_dir, tmp_path):
    from scipy.stats import binomtest

    from grades.report.claims import ClaimOptions

    C.write_comparison(paired_dir, tmp_path, options=ClaimOptions(margin=2.0))
    tab = pd.read_csv(tmp_path / "comparison.csv").set_index("setting")
    g = tab.loc["LoRA+GradES"]
    # pooled over the two seeds: each seed wins 30 items and loses 10 of 400
    assert g["paired_baseline"] == "LoRA" and g["paired_n"] == 400 and g["paired_seeds"] == 2
    assert g["paired_diff"] == pytest.approx(100 * 20 / 400)
    assert g["paired_lo"] < g["paired_diff"] < g["paired_hi"]
    assert g["mcnemar_p"] == pytest.approx(binomtest(int(g["worse"]), int(g["better"] + g["worse"])).pvalue)
    assert g["margin"] == 2.0 and g["verdict"] == "different"
    es = tab.loc["LoRA+ES"]  # the same answers as LoRA on every item: equivalent within 2 points
    assert es["paired_diff"] == 0 and es["verdict"] == "equivalent"
    assert pd.isna(tab.loc["LoRA", "paired_diff"])  # the baseline itself
    # speed: 200 s against 150 s, with an interval from the step times
    assert g["speedup_vs_own"] == pytest.approx(200 / 150, rel=1e-5)  # the CSV keeps 6 digits
    assert g["speedup_vs_own_lo"] < g["speedup_vs_own"] < g["speedup_vs_own_hi"]
    assert g["speedup_vs_own_verdict"] == "faster"
    md = (tmp_path / "comparison.md").read_text()
    assert "Δ best" not in md.split("## model-a")[1]
    assert "| Δ vs baseline [95% CI] | McNemar p | TOST p (±2) | verdict | MDD |" in md
    rows = {ln.split(" | ")[1]: ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln}
    assert f"+5.00 [{g['paired_lo']:+.2f}, {g['paired_hi']:+.2f}] vs LoRA (400 items, 2 seeds)" in rows["LoRA+GradES"]
    assert "| different |" in rows["LoRA+GradES"] and "| equivalent |" in rows["LoRA+ES"]
    assert f"{g['speedup_vs_own']:.2f}x [{g['speedup_vs_own_lo']:.2f}, {g['speedup_vs_own_hi']:.2f}] | faster |" \
        in rows["LoRA+GradES"]


def test_pareto_error_bars_are_the_paired_intervals_per_seed(paired_dir):
    from grades.report.claims import load_claims
    from grades.report.runs import collect
    from grades.rundir import finished_runs

    train, evals = collect(paired_dir)
    pts = C.run_points(train, evals)
    claims = load_claims(finished_runs(paired_dir), pools=C.protocol_pools(evals))  # as write_comparison does
    fig = C.pareto_figure(pts, "model-a", None, claims)
    ax = fig.axes[0]
    bars = {}
    for cont, (_, r) in zip(ax.containers, pts.iterrows()):
        segs = cont.lines[2][0].get_segments() if cont.lines[2] else []
        bars[(r["setting"], r["seed"])] = (r["acc"], segs[0][:, 1] if segs else None)
    per = claims.per_seed.set_index(["setting", "seed"])
    for seed in (0, 1):
        acc, ys = bars[("LoRA+GradES", seed)]
        c = per.loc[("LoRA+GradES", seed)]
        assert c["paired_diff"] == pytest.approx(5.0)  # 30 won, 10 lost in each seed
        # the bar is the seed's own paired interval, drawn around the run's accuracy
        assert sorted(ys) == pytest.approx([acc - (c["paired_diff"] - c["paired_lo"]),
                                            acc + (c["paired_hi"] - c["paired_diff"])])
        assert bars[("LoRA", seed)][1] is None  # the baseline: the reference, no bar
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(t.startswith("error bars: 95% paired interval") for t in legend)


def test_accuracy_and_efficiency_tables_carry_the_claims(paired_dir, tmp_path):
    """The same runs through `grades.report tables`: accuracy.{csv,md} and efficiency.{csv,md}."""
    rc = report_main(["tables", "--runs", str(paired_dir), "--out", str(tmp_path), "--baseline", "LoRA",
                      "--margin", "0.5", "--bootstrap-seed", "3"])
    assert rc == 0
    acc = pd.read_csv(tmp_path / "accuracy.csv").set_index("setting")
    g = acc.loc["LoRA+GradES"]
    assert g["paired_baseline"] == "LoRA" and g["paired_diff"] == pytest.approx(5.0) and g["margin"] == 0.5
    assert g["seeds"] == 2 and g["acc_sd_seeds"] == pytest.approx(
        100 * np.std([json.loads((paired_dir / "model-a" / "lora-grades" / f"seed{k}" / "eval.json").read_text())
                      ["tasks"]["task_a"]["acc"] for k in (0, 1)], ddof=1), rel=1e-4)
    md = (tmp_path / "accuracy.md").read_text()
    assert "| Δ vs baseline [95% CI] | McNemar p | TOST p (±0.5) | verdict | MDD |" in md
    row = next(ln for ln in md.splitlines() if ln.startswith("| model-a | LoRA+GradES |"))
    assert "(sd, 2 seeds)" in row and "vs LoRA (400 items, 2 seeds)" in row and "| different |" in row
    es = next(ln for ln in md.splitlines() if ln.startswith("| model-a | LoRA+ES |"))
    # identical answers on 400 items cannot show a difference within half a point: the chance of no
    # disagreement among 400 items if 0.5% of them disagreed is 0.995^400 = 0.13
    assert f"| {0.995 ** 400:.2f} | undecided (too few items) |" in es
    eff = pd.read_csv(tmp_path / "efficiency.csv").set_index("setting")
    e = eff.loc["LoRA+GradES"]
    assert e["speedup_vs_LoRA_lo"] < e["speedup_vs_LoRA"] < e["speedup_vs_LoRA_hi"]
    assert e["own_baseline"] == "LoRA" and e["speedup_vs_own_verdict"] == "faster"
    emd = (tmp_path / "efficiency.md").read_text()
    erow = next(ln for ln in emd.splitlines() if ln.startswith("| model-a | LoRA+GradES |"))
    assert f"{e['speedup_vs_LoRA']:.2f}x [{e['speedup_vs_LoRA_lo']:.2f}, {e['speedup_vs_LoRA_hi']:.2f}] faster" in erow
    # LoRA+ES: 190 s against 200 s, the same work all along (no freeze): its interval decides
    es_verdict = eff.loc["LoRA+ES", "speedup_vs_own_verdict"]
    assert es_verdict in ("faster", "indistinguishable from 1", "confounded (identical steps differ)")


def test_each_protocols_table_carries_its_own_claims(tmp_path):
    """A model scored under two protocols: each accuracy table pools only its own tasks' items."""
    from grades.rundir import RunDir

    root = tmp_path / "runs"
    rng = np.random.default_rng(5)
    base = {"task_a": (rng.random(400) < 0.5).astype(int).tolist(), "cs_b": (rng.random(200) < 0.5).astype(int).tolist()}
    # GradES: 20 more right of task_a's 400 items (+5 points), 10 fewer of cs_b's 200 (-5 points)
    won = set([i for i, c in enumerate(base["task_a"]) if not c][:20])
    lost = set([i for i, c in enumerate(base["cs_b"]) if c][:10])
    grades = {"task_a": flipped(base["task_a"], won), "cs_b": flipped(base["cs_b"], lost)}
    for slug, name, method, answers in (("lora", "LoRA", "none", base), ("lora-grades", "LoRA+GradES", "grades", grades)):
        d = write_run(root, "m", slug, name=name, mode="lora", method=method, acc=0.5)
        ev = {"tasks": {"task_a": {"acc": np.mean(answers["task_a"]), "acc_stderr": 0.02, "n": 400,
                                   "protocol": "loglikelihood", "metric": "acc", "score": np.mean(answers["task_a"])},
                        "cs_b": {"exact_match": np.mean(answers["cs_b"]), "n": 200, "protocol": "commonsense-generation",
                                 "metric": "exact_match", "score": np.mean(answers["cs_b"])}}}
        (d / "eval.json").write_text(json.dumps(ev))
        RunDir(d).write_samples([{"task": "task_a", "doc_id": i, "acc": float(c)} for i, c in enumerate(answers["task_a"])]
                                + [{"task": "cs_b", "doc_id": i, "exact_match": float(c)}
                                   for i, c in enumerate(answers["cs_b"])])
    assert report_main(["tables", "--runs", str(root), "--out", str(tmp_path / "t")]) == 0
    md = (tmp_path / "t" / "accuracy.md").read_text()
    def row(protocol):  # the GradES row of that protocol's table
        block = md.split(f"**Protocol: {protocol}**")[1].split("**Protocol:")[0]
        return next(ln for ln in block.splitlines() if ln.startswith("| m | LoRA+GradES |"))

    assert "| +5.00 [" in row("loglikelihood") and "vs LoRA (400 items)" in row("loglikelihood")
    assert "| -5.00 [" in row("commonsense-generation") and "vs LoRA (200 items)" in row("commonsense-generation")
    acc = pd.read_csv(tmp_path / "t" / "accuracy.csv").set_index(["setting", "task"])
    assert acc.loc[("LoRA+GradES", "cs_b"), "paired_diff"] == pytest.approx(-5.0)
