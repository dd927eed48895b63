"""grades.report.claims: the tables' statistical columns, from fabricated run directories."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pandas as pd
import pytest

from grades.report import claims as C
from grades.report import speed as SP
from grades.rundir import finished_runs


def write_timed(root, model, slug, *, name, mode, method, level, seed=0, steps=80, first_freeze=None, fast=None,
                step_times=True):
    """A finished run whose step times are ``level`` s (``fast`` s from ``first_freeze`` on), 3% noise."""
    rng = np.random.default_rng(zlib.crc32(f"{slug}{seed}".encode()))
    t = np.full(steps, float(level))
    if first_freeze and fast:
        t[first_freeze - 1:] = fast
    t = t * (1 + 0.03 * rng.standard_normal(steps))
    d = root / model / slug / f"seed{seed}"
    d.mkdir(parents=True)
    train = {"status": "ok", "name": name, "mode": mode, "method": method, "train_time_s": float(t.sum()),
             "total_time_s": float(t.sum()), "grades": {"first_freeze_step": first_freeze} if first_freeze else None}
    if step_times:
        train["step_times_s"] = t.tolist()
    (d / "train.json").write_text(json.dumps(train))


@pytest.fixture
def timed(tmp_path):
    root = tmp_path / "runs"
    write_timed(root, "m", "fp", name="FP", mode="fp", method="none", level=3.0)
    write_timed(root, "m", "fp-grades", name="FP+GradES", mode="fp", method="grades", level=3.0, first_freeze=24,
                fast=2.4)
    write_timed(root, "m", "lora", name="LoRA", mode="lora", method="none", level=2.0)
    write_timed(root, "m", "lora-grades", name="LoRA+GradES", mode="lora", method="grades", level=2.0,
                first_freeze=24, fast=1.98)
    return root


def test_speed_claims(timed):
    t = C.speed_claims(finished_runs(timed), baseline="FP").set_index("setting")
    g = t.loc["FP+GradES"]
    assert g["speedup_vs_FP_lo"] < g["speedup_vs_FP"] < g["speedup_vs_FP_hi"]
    assert g["speedup_vs_FP_verdict"] == SP.FASTER and g["speedup_vs_FP_interval"] == "steps"
    assert g["own_baseline"] == "FP" and g["same_work_steps"] == 23 and g["same_work_lo"] <= 1 <= g["same_work_hi"]
    lg = t.loc["LoRA+GradES"]  # 1% faster after step 24: within the noise
    assert lg["own_baseline"] == "LoRA" and lg["speedup_vs_own_verdict"] == SP.SAME
    assert lg["speedup_vs_FP_verdict"] == SP.FASTER  # LoRA steps are cheaper than FP ones
    assert not math.isnan(lg["same_work"])
    assert t.loc["FP", "speedup_vs_FP"] == pytest.approx(1.0) and t.loc["FP", "own_baseline"] == ""


def test_speed_claims_without_step_times(tmp_path):
    root = tmp_path / "runs"
    write_timed(root, "m", "fp", name="FP", mode="fp", method="none", level=3.0, step_times=False)
    write_timed(root, "m", "fp-es", name="FP+ES", mode="fp", method="es", level=2.0, step_times=False)
    t = C.speed_claims(finished_runs(root)).set_index("setting")
    assert t.loc["FP+ES", "speedup_vs_FP"] == pytest.approx(1.5, rel=0.05)
    assert t.loc["FP+ES", "speedup_vs_FP_verdict"] == SP.NO_INTERVAL


def test_paper_cells_and_summary():
    cmp = pd.DataFrame({"model": ["Q", "Q", "Q", "P"], "method": ["FP"] * 4,
                        "benchmark": ["boolq", "piqa", "avg", "boolq"], "ours": [80.0, 70.0, 75.0, 60.0],
                        "paper": [82.0, 80.0, 81.0, math.nan], "n": [400, 400, math.nan, 400]})
    cells = C.paper_cells(cmp)
    assert cells["reproduced"].tolist() == [True, False, None, None]
    assert cells.loc[0, "lo"] < 80 < cells.loc[0, "hi"]
    assert C.reproduced_summary(cells) == ["Q: 1 of 2 cells reproduced (the paper's value inside our 95% interval)."]


def test_cells():
    assert C.interval_cell(0.5, -2.25, 3.25) == "+0.50 [-2.25, +3.25]"
    assert C.interval_cell(-0.001, -1, 1) == "+0.00 [-1.00, +1.00]"
    assert C.interval_cell(math.nan, 0, 0) == "–"
    assert C.speed_cell(1.0512, 0.98, 1.12) == "1.05x [0.98, 1.12]"
    assert C.speed_cell(1.05, math.nan, math.nan) == "1.05x"
    assert C.p_cell(0.0004) == "<0.001" and C.p_cell(0.0351) == "0.035" and C.p_cell(0.5) == "0.50"
