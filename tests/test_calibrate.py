"""python -m grades.calibrate: the tau proposal, its errors, and a probe that predicts a real run."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from tinymodels import prepare_tiny
import yaml

from grades import ConfigError
from grades.calibrate import freeze_steps, main, propose_tau

SMOKE = str(Path(__file__).resolve().parent.parent / "config" / "smoke.yaml")


def frame(curves: dict[str, list[float]], steps=None, tower: str = "language") -> pd.DataFrame:
    rows = []
    for c, vals in curves.items():
        for s, v in zip(steps or range(1, len(vals) + 1), vals):
            rows.append({"step": s, "component": c, "layer": 0, "kind": "attn", "type": "q", "tower": tower,
                         "value": v})
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ the rule
def hand_example() -> pd.DataFrame:
    """T = 10, alpha = 0.3 -> grace step 3; at = 0.7 -> step 7."""
    s = np.arange(1, 11)
    return frame({
        "c0": list(10 / s),  # window min 10/7 = 1.43
        "c1": list(20 / s),  # window min 20/7 = 2.86
        "c2": [5.0] * 10,  # 5
        "c3": [float("nan")] * 10,  # never measured: never converges
        "c4": [0.1, 0.1] + [100.0] * 8,  # tiny only inside the grace period: ignored
    })


def test_hand_example_tau_and_freeze_steps():
    r = propose_tau(hand_example(), alpha=0.3, planned_steps=10, target_frozen=0.4, at=0.7)
    assert (r["grace_step"], r["at_step"], r["n_components"]) == (3, 7, 5)
    # k = 2: tau lies in (20/7, 5], midway in log space (sqrt(20/7 * 5) = 3.78) shortened to 4
    assert 20 / 7 < r["tau"] <= 5 and r["tau"] == 4.0
    assert r["method"] == {"tau": 4.0}
    assert r["frozen_at"] == pytest.approx(0.4)
    # c0: 10/s < 4 first at s = 3 (the grace step); c1: 20/s < 4 first at s = 6
    assert r["freeze_step"] == {"c0": 3, "c1": 6, "c2": None, "c3": None, "c4": None}
    assert r["first_freeze_step"] == 3
    assert r["frozen_end"] == pytest.approx(0.4)  # signals reach T = 10
    curve = dict((s, f) for s, f in r["curve"])
    assert curve[3] == pytest.approx(0.2) and curve[5] == pytest.approx(0.2) and curve[6] == pytest.approx(0.4)
    assert min(curve) == 3  # nothing before the grace step


def test_nan_never_converges_and_grace_is_ignored():
    r = propose_tau(hand_example(), alpha=0.3, planned_steps=10, target_frozen=1.0, at=0.7)
    # c3 is NaN throughout: at most 4 of 5 can ever freeze, and the result says so
    assert r["frozen_at"] == pytest.approx(0.8)
    assert r["freeze_step"]["c3"] is None
    assert any("finite signal" in w for w in r["warnings"])
    # c4's 0.1 lies before the grace step: with any tau below 100 it never freezes
    r2 = propose_tau(hand_example(), alpha=0.3, planned_steps=10, target_frozen=0.6, at=0.7)
    assert 5 < r2["tau"] <= 100 and r2["freeze_step"]["c4"] is None
    fs = freeze_steps(np.array([[0.1, 0.1, 100.0]]), np.array([1, 2, 3]), np.array([1.0]), grace=3)
    assert math.isinf(fs[0])
    # the simulation is GradES's rule: strict <, first check at or after the grace step
    fs = freeze_steps(np.array([[3.0, 2.0, 2.0, 1.0]]), np.array([2, 4, 6, 8]), np.array([2.0]), grace=3)
    assert fs[0] == 8


@pytest.mark.parametrize("target", [0.1, 0.25, 0.5, 0.75, 0.9, 1.0])
def test_decaying_curves_hit_the_target(target):
    rng = np.random.default_rng(0)
    T = 100
    s = np.arange(1, T + 1)
    curves = {f"m{i}": list(rng.uniform(1, 50) * np.exp(-s / rng.uniform(20, 80)) * rng.uniform(0.8, 1.2, T))
              for i in range(28)}
    r = propose_tau(frame(curves), alpha=0.3, planned_steps=T, target_frozen=target, at=0.7)
    assert r["frozen_at"] == pytest.approx(math.ceil(target * 28) / 28)
    assert r["tau"] > 0 and math.isfinite(r["tau"])
    # the curve is monotone and ends no lower than the fraction at `at`
    fracs = [f for _, f in r["curve"]]
    assert fracs == sorted(fracs) and fracs[-1] >= r["frozen_at"]
    # table rows are consistent: more target, higher tau, more frozen
    taus = [row["tau"] for row in r["table"]]
    assert taus == sorted(taus)
    row = next(x for x in r["table"] if x["target"] == target)
    assert row["tau"] == r["tau"] and row["frozen_at"] == r["frozen_at"]


def test_towers_get_their_own_tau():
    s = np.arange(1, 21)
    df = pd.concat([frame({f"l{i}": list((i + 1) * 10 / s) for i in range(4)}, tower="language"),
                    frame({f"v{i}": list((i + 1) * 0.01 / s) for i in range(4)}, tower="vision")])
    r = propose_tau(df, alpha=0.2, planned_steps=20, target_frozen=0.5, at=0.8)
    assert r["tau"] is None and set(r["method"]) == {"language_tau", "vision_tau"}
    assert r["method"]["vision_tau"] < 0.01 < 1 < r["method"]["language_tau"]
    assert r["frozen_at"] == pytest.approx(0.5)
    only = propose_tau(df, alpha=0.2, planned_steps=20, target_frozen=0.5, at=0.8, tower="vision")
    assert only["n_components"] == 4 and only["tau"] == r["method"]["vision_tau"]


# ------------------------------------------------------------------- errors
@pytest.mark.parametrize("kw, words", [
    ({"target_frozen": 0.0}, ["target_frozen", "(0, 1]"]),
    ({"target_frozen": 1.5}, ["target_frozen", "1.5"]),
    ({"at": 0.0}, ["at = 0.0"]),
    ({"at": 1.2}, ["at = 1.2"]),
    ({"at": 0.2}, ["at = 0.2", "grace period", "alpha = 0.3"]),
    ({"alpha": 1.0}, ["alpha = 1.0"]),
    ({"planned_steps": 0}, ["planned_steps"]),
])
def test_bad_arguments_name_the_field(kw, words):
    args = {"alpha": 0.3, "planned_steps": 10, "target_frozen": 0.5, "at": 0.7, **kw}
    with pytest.raises(ConfigError) as e:
        propose_tau(hand_example(), **args)
    for w in words:
        assert w in str(e.value)


def test_bad_signals_are_explained(tmp_path):
    with pytest.raises(ConfigError, match=r"missing column.*'value'"):
        propose_tau(hand_example().drop(columns="value"), alpha=0.3, planned_steps=10)
    with pytest.raises(ConfigError, match="no components"):
        propose_tau(hand_example().iloc[:0], alpha=0.3, planned_steps=10)
    with pytest.raises(ConfigError, match="not found"):
        propose_tau(tmp_path / "nope.csv", alpha=0.3, planned_steps=10)
    with pytest.raises(ConfigError, match="probe at least 70 steps"):  # signals stop at step 10 of 100
        propose_tau(hand_example(), alpha=0.05, planned_steps=100)
    with pytest.raises(ConfigError, match="tower = 'vison'.*did you mean 'vision'"):
        df = pd.concat([hand_example(), frame({"v": [1.0] * 10}, tower="vision")])
        propose_tau(df, alpha=0.3, planned_steps=10, tower="vison")


def test_cli_errors(tmp_path, capsys):
    sig = tmp_path / "signals.csv"
    hand_example().to_csv(sig, index=False)
    assert main(["--from-signals", str(sig), "--out", str(tmp_path / "o"), "--target-frozen", "2"]) == 2
    assert "target_frozen" in capsys.readouterr().err
    assert main(["--from-signals", str(sig), "--out", str(tmp_path / "o")]) == 2
    assert "--alpha is required" in capsys.readouterr().err
    assert main(["--workflow-config", SMOKE, "--model", "tiny-qwen3", "--setting", "FP+GradES",
                 "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"snakemake --cores all --configfile {SMOKE}" in err and "models/tiny-qwen3" in err
    assert main(["--workflow-config", SMOKE, "--model", "tiny-qwen", "--out", str(tmp_path)]) == 2
    assert "did you mean 'tiny-qwen3'" in capsys.readouterr().err
    # from signals, with alpha and planned steps given: writes the files, no training
    assert main(["--from-signals", str(sig), "--alpha", "0.3", "--planned-steps", "10", "--target-frozen", "0.4",
                 "--out", str(tmp_path / "o")]) == 0
    doc = json.loads((tmp_path / "o" / "calibration.json").read_text())
    assert doc["proposal"]["tau"] == 4.0 and (tmp_path / "o" / "calibration.png").stat().st_size > 0
    assert "tau: 4.0" in capsys.readouterr().out


def test_probe_config_keeps_the_signal_and_never_freezes():
    from grades.calibrate import grades_params, probe_config
    from grades.methods import build_method
    from grades.train import load_run_config

    base = {"model": {"source": "local:m"}, "data": {"source": "jsonl:d"}, "steps": 50}
    cfg = load_run_config({**base, "method": {"name": "grades-v1", "tau": 3.0, "alpha": 0.2, "check_interval": 2}})
    p = probe_config(cfg, 35)
    assert p["method"] == {"name": "grades-probe", "alpha": 0.2, "check_interval": 2, "signal": "grad_l1",
                           "probe_steps": 35}
    assert p["save_model"] is False and p["steps"] == 50
    m = build_method(p["method"])
    assert m.config.tau == 0.0 and m.config.record_signals  # L1 norms are >= 0: nothing is ever < 0
    params, note = grades_params(load_run_config({**base, "method": "es"}))
    assert params == {} and "'es'" in note
    with pytest.raises(ConfigError, match="probe_steps"):
        build_method({"name": "grades-probe", "probe_steps": 0})


# --------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    d, model, data = prepare_tiny(tmp_path_factory.mktemp("calib"),
                                  model={"hidden_size": 64, "num_heads": 4, "num_kv_heads": 2,
                                         "intermediate_size": 128, "vocab_size": 256, "max_position": 64},
                                  data={"n_train": 48})
    cfg = {"model": {"source": f"local:{model}"}, "data": {"source": f"jsonl:{data}"}, "mode": "fp",
           "steps": 20, "batch_size": 4, "seq_len": 32, "threads": 1, "optim": {"lr": 1.0e-3},
           "method": {"name": "grades", "alpha": 0.3, "tau": 123.0}, "save_model": False}
    (d / "run.yaml").write_text(yaml.safe_dump(cfg))
    return d, cfg


@pytest.mark.slow
def test_probe_predicts_a_real_run(tiny_run, capsys):
    from grades.train import load_run_config, run

    d, cfg = tiny_run
    out = d / "cal"
    assert main(["--config", str(d / "run.yaml"), "--out", str(out), "--target-frozen", "0.5", "--at", "0.7",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "paste into the workflow config" in printed and "tau:" in printed
    doc = json.loads((out / "calibration.json").read_text())
    tau = doc["proposal"]["tau"]
    assert tau > 0 and math.isfinite(tau)
    assert (out / "calibration.png").stat().st_size > 0
    probe = json.loads((out / "probe" / "train.json").read_text())
    assert probe["steps_run"] == doc["at_step"] == 14 and probe["steps_planned"] == 20
    assert probe["frozen_ratio"] == 0.0  # the probe never freezes
    assert doc["inputs"]["signal"] == "grad_delta_l1" and doc["grace_step"] == 6

    # the same run with the proposed tau: identical up to its first freeze, then an estimate
    real = dict(cfg, method={"name": "grades", "alpha": 0.3, "tau": tau})
    rec = run(load_run_config(real), d / "real", progress=False)
    with open(d / "real" / "freeze_events.csv") as f:
        steps = [int(e["step"]) for e in csv.DictReader(f)]
    frozen_at = sum(s <= doc["at_step"] for s in steps) / rec["grades"]["components"]
    assert frozen_at > 0
    assert abs(frozen_at - 0.5) <= 0.35
    assert min(steps) == doc["first_freeze_step"]

    # calibrating from the probe's files gives the same proposal (alpha, T read from train.json)
    assert main(["--from-signals", str(out / "probe"), "--out", str(d / "again")]) == 0
    assert json.loads((d / "again" / "calibration.json").read_text())["proposal"]["tau"] == tau
