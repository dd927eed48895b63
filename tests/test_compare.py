"""Comparison table and Pareto figures from fabricated run directories (no training)."""

from __future__ import annotations

import json
import math

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
    assert "**63.00 ± 1.41**" in rows["LoRA+GradES"]
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

