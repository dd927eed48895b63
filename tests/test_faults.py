"""Faults during a run: bad data, NaN/Inf, a crash midway, a crash while saving.

NaN/Inf and crashes are injected with the ``GRADES_TEST_*_AT_STEP`` hooks of
:mod:`grades.train.faults`.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import yaml

from grades.data import DataError
from grades.config import ConfigError
from grades.train import RunFailed, load_run_config, main, run
from grades.train.faults import NO_FAULTS, InjectedFaults, faults_from_env

TAU = 0.35
GRADES = {"name": "grades", "alpha": 0.25, "tau": TAU}  # on this model: freezes at steps 12, 14, 15, 16, ...


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_world):
    return (tmp_path_factory.mktemp("faults"), *tiny_world)


def raw_config(tiny, **over) -> dict:
    _, model, data = tiny
    return {"name": "faults", "model": {"source": f"local:{model}"}, "data": {"source": f"jsonl:{data}"},
            "steps": 40, "batch_size": 4, "seq_len": 96, "threads": 1, "optim": {"lr": 3.0e-3},
            "method": GRADES, **over}


def config(tiny, **over) -> dict:
    return load_run_config(raw_config(tiny, **over))


def events(run_dir: Path) -> list[tuple[int, str, float]]:
    return [(int(e["step"]), e["component"], float(e["signal"]))
            for e in csv.DictReader((run_dir / "freeze_events.csv").open())]


def signal_steps(run_dir: Path) -> dict[int, list[float]]:
    out: dict[int, list[float]] = {}
    for r in csv.DictReader((run_dir / "signals.csv").open()):
        out.setdefault(int(r["step"]), []).append(float(r["value"]))
    return out


@pytest.fixture(scope="module")
def reference(tiny):
    out = tiny[0] / "ref"
    run(config(tiny, save_model=False), out, progress=False)
    ev = events(out)
    assert {12, 14} <= {s for s, _, _ in ev}, "the scenario needs freezes at steps 12 and 14"
    return ev


# ------------------------------------------------------------------ the hooks
def test_faults_come_from_the_environment_only_when_asked(monkeypatch):
    for kind in ("KILL", "FAIL", "NAN", "INF_GRAD"):
        monkeypatch.delenv(f"GRADES_TEST_{kind}_AT_STEP", raising=False)
    assert faults_from_env() is NO_FAULTS
    monkeypatch.setenv("GRADES_TEST_NAN_AT_STEP", "3, 5")
    assert faults_from_env() == InjectedFaults(nan=frozenset({3, 5}))
    monkeypatch.setenv("GRADES_TEST_FAIL_AT_STEP", "x")
    with pytest.raises(ConfigError, match="GRADES_TEST_FAIL_AT_STEP = 'x'"):
        faults_from_env()


def test_faults_passed_in_are_the_ones_the_loop_calls(tiny, monkeypatch):
    monkeypatch.delenv("GRADES_TEST_NAN_AT_STEP", raising=False)
    rec = run(config(tiny, nan_policy="skip", steps=4, save_model=False), tiny[0] / "hooks", progress=False,
              faults=InjectedFaults(nan=frozenset({2})))
    assert rec["nan_steps"] == [2] and rec["steps_run"] == 4


# ------------------------------------------------------------------ NaN / Inf
@pytest.mark.parametrize("hook", ["GRADES_TEST_NAN_AT_STEP", "GRADES_TEST_INF_GRAD_AT_STEP"])
def test_skip_policy_skips_the_step_and_never_freezes_on_it(tiny, reference, monkeypatch, hook):
    out = tiny[0] / f"skip-{hook}"
    monkeypatch.setenv(hook, "13,14")
    rec = run(config(tiny, nan_policy="skip"), out, progress=False)
    saved = json.loads((out / "train.json").read_text())
    for r in (rec, saved):
        assert r["status"] == "ok" and r["nan_policy"] == "skip" and r["nan_steps"] == [13, 14]
        assert r["steps_run"] == 40 and r["grades"]["skipped_steps"] == 2
        assert 13 not in {s for s, _ in r["loss_curve"]} and len(r["loss_curve"]) == 38
        assert all(math.isfinite(v) for _, v in r["loss_curve"])
    ev = events(out)
    assert [e for e in ev if e[0] < 13] == [e for e in reference if e[0] < 13]  # same run up to the fault
    # the skipped steps are never measured; the next check has no previous gradient (NaN):
    # neither the bad gradient nor a stale difference across the gap can freeze anything
    assert not {13, 14, 15} & {s for s, _, _ in ev}
    sig = signal_steps(out)
    assert 13 not in sig and 14 not in sig
    assert all(math.isnan(v) for v in sig[15])
    assert any(math.isfinite(v) for v in sig[16])
    assert all(math.isfinite(s) and s < TAU for _, _, s in ev)


def test_gradients_are_checked_without_clipping(tiny, monkeypatch):
    out = tiny[0] / "noclip"
    monkeypatch.setenv("GRADES_TEST_INF_GRAD_AT_STEP", "3")
    cfg = config(tiny, nan_policy="skip", steps=6, optim={"lr": 3.0e-3, "max_grad_norm": None}, save_model=False)
    rec = run(cfg, out, progress=False)
    assert rec["nan_steps"] == [3] and math.isfinite(rec["loss_last"])


def test_stop_policy_fails_the_run(tiny, reference, monkeypatch):
    out = tiny[0] / "stop"
    monkeypatch.setenv("GRADES_TEST_NAN_AT_STEP", "13")
    with pytest.raises(RunFailed, match="non-finite loss or gradient at step 13"):
        run(config(tiny, nan_policy="stop"), out, progress=False)
    assert not (out / "train.json").exists() and not (out / "model").exists()
    failed = json.loads((out / "train_failed.json").read_text())
    assert failed["status"] == "failed" and failed["nan_policy"] == "stop" and failed["nan_steps"] == [13]
    assert failed["steps_run"] == 12 and "step 13" in failed["stop_reason"]
    assert events(out) == [e for e in reference if e[0] <= 12]


def test_stop_policy_through_the_cli(tiny, monkeypatch, capsys):
    d = tiny[0]
    (d / "stop.yaml").write_text(yaml.safe_dump(raw_config(tiny, steps=8)))
    monkeypatch.setenv("GRADES_TEST_NAN_AT_STEP", "2")
    assert main(["--config", str(d / "stop.yaml"), "--out", str(d / "stop-cli"), "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "error: run failed: non-finite loss or gradient at step 2" in err and "Traceback" not in err


# ------------------------------------------------------------- atomic results
def test_crash_midway_leaves_no_result(tiny, monkeypatch):
    out = tiny[0] / "crash"
    run(config(tiny, steps=4), out, progress=False)  # an earlier, successful attempt
    assert (out / "train.json").exists() and (out / "model").is_dir()
    monkeypatch.setenv("GRADES_TEST_FAIL_AT_STEP", "5")
    with pytest.raises(RuntimeError, match="failure injected after step 5"):
        run(config(tiny, steps=10), out, progress=False)
    assert not (out / "train.json").exists(), "a failed attempt must not leave an earlier success behind"
    assert not (out / "model").exists() and not list(out.glob(".model*"))
    assert not (out / "freeze_events.csv").exists() and not (out / "signals.csv").exists()
    failed = json.loads((out / "train_failed.json").read_text())
    assert failed["status"] == "failed" and failed["stage"] == "train" and failed["steps_run"] == 5
    assert "failure injected" in failed["error"] and "Traceback" in failed["traceback"]


def test_crash_while_saving_leaves_no_half_written_model(tiny, monkeypatch):
    from transformers import PreTrainedModel

    out = tiny[0] / "crash-save"

    def broken_save(self, path, *a, **k):
        (Path(path) / "config.json").write_text("{}")  # part of the files, then the disk fills up
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", broken_save)
    with pytest.raises(OSError, match="No space left"):
        run(config(tiny, steps=3), out, progress=False)
    assert not (out / "train.json").exists() and not (out / "model").exists()
    assert not [p for p in out.iterdir() if p.name.startswith(".model")], "temporary model dir left behind"
    failed = json.loads((out / "train_failed.json").read_text())
    assert failed["stage"] == "save" and "No space left" in failed["error"]


# ------------------------------------------------------------------- bad data
def test_too_long_examples(tiny, monkeypatch, capsys):
    d = tiny[0]
    rec = run(config(tiny, steps=2, seq_len=24, save_model=False), d / "trunc", progress=False)
    assert 0 < rec["truncated_examples"] <= rec["n_train_examples"]
    assert json.loads((d / "trunc" / "train.json").read_text())["truncated_examples"] == rec["truncated_examples"]
    bad = config(tiny, steps=2, seq_len=24, data={**raw_config(tiny)["data"], "too_long": "error"})
    with pytest.raises(DataError, match=r"example 0 \(id '[^']+'\) has \d+ tokens, more than seq_len=24"):
        run(bad, d / "too-long", progress=False)
    failed = json.loads((d / "too-long" / "train_failed.json").read_text())
    assert failed["stage"] == "setup" and "too_long: truncate" in failed["error"]
    (d / "too-long.yaml").write_text(yaml.safe_dump(bad))
    assert main(["--config", str(d / "too-long.yaml"), "--out", str(d / "too-long"), "--no-progress"]) == 2  # bad input
    err = capsys.readouterr().err
    assert "error: " in err and "more than seq_len=24" in err and "Traceback" not in err


def test_empty_train_split(tiny, capsys):
    d, _, data = tiny
    empty = d / "empty-data"
    shutil.copytree(data, empty)
    (empty / "train.jsonl").write_text("\n")
    cfg = raw_config(tiny, data={"source": f"jsonl:{empty}"}, steps=2)
    with pytest.raises(DataError, match="train.jsonl: split 'train' is empty"):
        run(load_run_config(cfg), d / "empty", progress=False)
    (d / "empty.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["--config", str(d / "empty.yaml"), "--out", str(d / "empty"), "--no-progress"]) == 2  # bad input
    assert "split 'train' is empty" in capsys.readouterr().err
