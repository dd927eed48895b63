"""Checkpoint and resume: an interrupted run ends exactly like an uninterrupted one.

Our loop (``grades.train``): a tiny model trained 40 steps with GradES freezing
matrices at several steps between 12 and 32, checkpointed every 10 steps, is killed
with SIGKILL (test hook ``GRADES_TEST_KILL_AT_STEP``) right after the checkpoints of
steps 10 and 30 and between checkpoints at step 25, and rerun each time. The finished
run must have the same losses, signals, freeze events, FLOPs and weights as the run
that was never interrupted. The HF callback is checked the same way through
``Trainer.train(resume_from_checkpoint=...)``.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from grades.train import Checkpoints, load_run_config, run
from grades.train.snapshot import read_checkpoint

ROOT = Path(__file__).resolve().parent.parent
STEPS = 40
GRADES = {"name": "grades", "alpha": 0.25, "tau": 0.35}  # freezes at steps 12..32 on this model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_world):
    return (tmp_path_factory.mktemp("resume"), *tiny_world)


def config(tiny, **over) -> dict:
    _, model, data = tiny
    raw = {"name": "resume", "model": {"source": f"local:{model}"}, "data": {"source": f"jsonl:{data}"},
           "steps": STEPS, "batch_size": 4, "seq_len": 96, "threads": 1, "optim": {"lr": 3.0e-3},
           "method": GRADES, "checkpoint_every": 10}
    return load_run_config({**raw, **over})


def outputs(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    t = json.loads((run_dir / "train.json").read_text())
    weights = [p for p in ("model", "adapter") if (run_dir / p).is_dir()]
    w = load_file(next((run_dir / weights[0]).glob("*.safetensors"))) if weights else {}
    return {
        "train": t,
        "events": list(csv.DictReader((run_dir / "freeze_events.csv").open())),
        "signals": list(csv.DictReader((run_dir / "signals.csv").open())),
        "weights": w,
    }


def assert_same_run(a: dict, b: dict, *, exact_losses: bool = True) -> None:
    ta, tb = a["train"], b["train"]
    assert ta["status"] == tb["status"] == "ok"
    assert ta["steps_run"] == tb["steps_run"] and ta["tokens"] == tb["tokens"]
    # one training time per step, kept across a resume (the report's speed intervals read them)
    assert len(ta["step_times_s"]) == len(tb["step_times_s"]) == ta["steps_run"]
    assert all(x > 0 for x in ta["step_times_s"] + tb["step_times_s"])
    assert [s for s, _ in ta["loss_curve"]] == [s for s, _ in tb["loss_curve"]]
    for (_, x), (_, y) in zip(ta["loss_curve"], tb["loss_curve"]):
        assert abs(x - y) <= 1e-5 * max(1.0, abs(x)), (x, y)
    assert abs(ta["loss_last"] - tb["loss_last"]) <= 1e-5
    assert ta["flops"]["total"] == tb["flops"]["total"]
    assert ta["flops"]["by_kind_pass"] == tb["flops"]["by_kind_pass"]
    key = ("step", "component", "reason")
    assert [tuple(e[k] for k in key) for e in a["events"]] == [tuple(e[k] for k in key) for e in b["events"]]
    for ea, eb in zip(a["events"], b["events"]):
        assert float(ea["signal"]) == pytest.approx(float(eb["signal"]), rel=1e-5)
    assert len(a["signals"]) == len(b["signals"])
    for sa, sb in zip(a["signals"], b["signals"]):
        assert (sa["step"], sa["component"]) == (sb["step"], sb["component"])
        assert sa["value"] == sb["value"] or float(sa["value"]) == pytest.approx(float(sb["value"]), rel=1e-5)
    assert a["weights"].keys() == b["weights"].keys()
    for k in a["weights"]:
        torch.testing.assert_close(a["weights"][k], b["weights"][k], rtol=1e-5, atol=1e-6)
    assert ta["grades"]["frozen"] == tb["grades"]["frozen"]
    assert ta["grades"]["checks"] == tb["grades"]["checks"]


@pytest.fixture(scope="module")
def reference(tiny):
    d = tiny[0]
    rec = run(config(tiny), d / "ref", progress=False)
    steps = sorted({int(e["step"]) for e in csv.DictReader((d / "ref" / "freeze_events.csv").open())})
    # the scenario needs freezes before, between and after the kill points
    assert steps[0] > 10 and any(20 < s <= 30 for s in steps) and steps[-1] > 30, steps
    assert rec["resumed_from_steps"] == [] and not (d / "ref" / ".checkpoints").exists()
    # the steps' times are the training time, less what the loop spends between steps
    assert len(rec["step_times_s"]) == STEPS and 0.8 * rec["train_time_s"] < sum(rec["step_times_s"]) <= \
        rec["train_time_s"] + 1e-6
    return outputs(d / "ref")


def _train_cli(run_yaml: Path, out: Path, ckpt: Path, kill_at: int | None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("GRADES_TEST_KILL_AT_STEP", None)
    if kill_at is not None:
        env["GRADES_TEST_KILL_AT_STEP"] = str(kill_at)
    cmd = [sys.executable, "-m", "grades.train", "--config", str(run_yaml), "--out", str(out),
           "--checkpoint-dir", str(ckpt), "--no-progress"]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


@pytest.mark.slow
def test_sigkill_and_rerun_resumes_to_the_same_result(tiny, reference):
    d = tiny[0]
    run_yaml = d / "run.yaml"
    run_yaml.write_text(yaml.safe_dump(config(tiny)))
    out, ckpt = d / "killed", d / "ckpt" / "killed"
    ckpts = Checkpoints(ckpt)
    # (kill after step, newest checkpoint left, resumed from)
    for kill_at, newest, resumed in ((10, 10, None), (25, 20, 10), (30, 30, 20)):
        r = _train_cli(run_yaml, out, ckpt, kill_at)
        assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
        assert not (out / "train.json").exists() and not (out / "model").exists()
        assert ckpts.list()[-1][0] == newest and len(ckpts.list()) <= 2
        assert not list(ckpt.glob(".tmp-*"))
        if resumed is not None:
            assert f"resuming from the checkpoint of step {resumed}" in r.stderr
    r = _train_cli(run_yaml, out, ckpt, None)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from the checkpoint of step 30" in r.stderr
    assert not ckpt.exists(), "checkpoints are deleted after success"
    resumed = outputs(out)
    assert resumed["train"]["resumed_from_steps"] == [10, 20, 30]
    assert_same_run(resumed, reference)


def test_failure_keeps_checkpoints_and_rerun_resumes(tiny, reference):
    d = tiny[0]
    out = d / "failed"
    os.environ["GRADES_TEST_FAIL_AT_STEP"] = "17"
    try:
        with pytest.raises(RuntimeError, match="failure injected after step 17"):
            run(config(tiny), out, progress=False)
    finally:
        del os.environ["GRADES_TEST_FAIL_AT_STEP"]
    failed = json.loads((out / "train_failed.json").read_text())
    assert failed["status"] == "failed" and "failure injected" in failed["error"]
    assert failed["checkpoint_kept"].endswith("step-00000010")
    assert not (out / "train.json").exists() and not (out / "model").exists()
    # a different number of threads or checkpoint interval still resumes
    rec = run(config(tiny, checkpoint_every=7, threads=1), out, progress=False)
    assert rec["resumed_from_steps"] == [10] and not (out / "train_failed.json").exists()
    assert_same_run(outputs(out), reference)


def test_other_config_discards_checkpoints_and_starts_fresh(tiny, capsys):
    d = tiny[0]
    out = d / "changed"
    os.environ["GRADES_TEST_FAIL_AT_STEP"] = "12"
    try:
        with pytest.raises(RuntimeError):
            run(config(tiny, steps=20), out, progress=False, keep_checkpoints=True)
    finally:
        del os.environ["GRADES_TEST_FAIL_AT_STEP"]
    assert Checkpoints(out / ".checkpoints").list()[-1][0] == 10
    rec = run(config(tiny, steps=20, optim={"lr": 1.0e-3}), out, progress=False, keep_checkpoints=True)
    assert "written by a different run config" in capsys.readouterr().err
    assert rec["resumed_from_steps"] == [] and rec["steps_run"] == 20
    assert [s for s, _ in Checkpoints(out / ".checkpoints").list()] == [10], "kept on request; stale ones gone"
    # --no-resume starts over even when the config matches
    rec = run(config(tiny, steps=20, optim={"lr": 1.0e-3}), out, progress=False, resume=False)
    assert rec["resumed_from_steps"] == [] and not (out / ".checkpoints").exists()


def test_lora_resume_checks_the_base_weights(tiny):
    from safetensors.torch import load_file, save_file

    d, model_dir, _ = tiny
    lora = {"mode": "lora", "lora": {"r": 4, "alpha": 8}, "steps": 20, "checkpoint_every": 5,
            "method": {"name": "grades", "alpha": 0.25, "tau": 0.35}, "optim": {"lr": 1.0e-2}}
    ref = run(config(tiny, **lora), d / "lora-ref", progress=False)
    assert ref["trainable_params"] < ref["total_params"] and ref["grades"]["frozen"] > 0
    os.environ["GRADES_TEST_FAIL_AT_STEP"] = "12"
    try:
        with pytest.raises(RuntimeError):
            run(config(tiny, **lora), d / "lora", progress=False)
    finally:
        del os.environ["GRADES_TEST_FAIL_AT_STEP"]
    rec = run(config(tiny, **lora), d / "lora", progress=False)
    assert rec["resumed_from_steps"] == [10]
    assert_same_run(outputs(d / "lora"), outputs(d / "lora-ref"))

    # a checkpoint of a LoRA run refuses a base model whose weights changed since (same path)
    copy = d / "model-copy"
    shutil.copytree(model_dir, copy)
    cfg = config(tiny, **{**lora, "model": {"source": f"local:{copy}"}})
    os.environ["GRADES_TEST_FAIL_AT_STEP"] = "6"
    try:
        with pytest.raises(RuntimeError):
            run(cfg, d / "lora2", progress=False)
    finally:
        del os.environ["GRADES_TEST_FAIL_AT_STEP"]
    f = next(copy.glob("*.safetensors"))
    w = load_file(f)
    k = next(k for k in w if "mlp.up_proj" in k)
    w[k] = w[k] + 1e-3
    save_file(w, f, metadata={"format": "pt"})
    with pytest.raises(RuntimeError, match="frozen base weights"):
        run(cfg, d / "lora2", progress=False)
    failed = json.loads((d / "lora2" / "train_failed.json").read_text())
    assert "frozen base weights" in failed["error"] and failed["stage"] == "setup"


def test_checkpoint_holds_the_full_state(tiny):
    """What a checkpoint carries, and that frozen matrices are frozen in the optimizer too."""
    d = tiny[0]
    out = d / "inspect"
    os.environ["GRADES_TEST_FAIL_AT_STEP"] = "30"
    try:
        with pytest.raises(RuntimeError):
            run(config(tiny), out, progress=False)
    finally:
        del os.environ["GRADES_TEST_FAIL_AT_STEP"]
    path, meta = Checkpoints(out / ".checkpoints").latest_meta()
    assert path.name == "step-00000030" and meta["step"] == 30 and meta["world_size"] == 1
    assert (path / ".metadata").is_file() and (path / "rng-00000.pt").is_file()  # DCP's index, rank 0's RNG
    st = read_checkpoint(path)
    assert {"model", "optimizer", "scheduler", "rng", "stream", "controller", "meter", "loop"} <= set(st)
    assert st["model"] and all(torch.is_tensor(v) for v in st["model"].values())
    assert set(st["rng"]) >= {"python", "numpy", "torch"}
    frozen = st["controller"]["freezer"]["frozen"]
    events = st["controller"]["freezer"]["events"]
    assert sum(frozen) == len(events) > 0 and all(e["step"] <= 30 for e in events)
    assert len(st["controller"]["method"]["history"]) == 30  # one check per step
    bufs = st["controller"]["method"]["tracker"]["buffer"]
    assert sum(b is None for b in bufs) == sum(frozen), "a frozen matrix keeps no previous gradient"
    # the optimizer holds no state for frozen matrices; every live one has its moments
    n_params = len(st["optimizer"]["param_groups"][0]["params"])
    assert len(st["optimizer"]["state"]) == n_params - sum(frozen)
    loop = st["loop"]
    assert loop["step"] == 30 and len(loop["losses"]) == 30 and loop["tokens"] > 0 and loop["train_time"] > 0
    assert st["meter"]["steps"] == 30


# ------------------------------------------------------------ the HF callback


def _hf_train(out: Path, *, stop_at: int | None = None, resume: str | None = None, **cb_kw):
    from tinymodels import TokenData, build_tiny
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from grades import GradESCallback, GradESConfig

    class Interrupt(TrainerCallback):  # ends training right after a step (its checkpoint is still saved)
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == stop_at:
                control.should_training_stop = True

    args = TrainingArguments(output_dir=str(out), max_steps=20, per_device_train_batch_size=4, learning_rate=1e-3,
                             report_to=[], save_strategy="steps", save_steps=5, logging_strategy="no",
                             use_cpu=True, disable_tqdm=True, max_grad_norm=1.0, seed=0)
    cb = GradESCallback(GradESConfig(tau=5.6, alpha=0.25), **cb_kw)  # freezes at steps 5, 11 and 12
    callbacks = [cb] + ([Interrupt()] if stop_at else [])
    trainer = Trainer(model=build_tiny("qwen3"), args=args, train_dataset=TokenData(), callbacks=callbacks)
    trainer.train(resume_from_checkpoint=resume)
    return cb, trainer


def _events(cb):
    return [(e.step, e.component) for e in cb.events]


def test_callback_resumes_from_a_trainer_checkpoint(tmp_path):
    ref, _ = _hf_train(tmp_path / "ref")
    steps = sorted({s for s, _ in _events(ref)})
    assert steps[0] <= 10 < steps[-1], steps  # freezes on both sides of the interruption

    cut, trainer = _hf_train(tmp_path / "run", stop_at=10)
    assert trainer.state.global_step == 10
    ckpt = tmp_path / "run" / "checkpoint-10"
    assert (ckpt / "grades_callback.pt").is_file()
    assert _events(cut) == [e for e in _events(ref) if e[0] <= 10]

    resumed, trainer = _hf_train(tmp_path / "run", resume=str(ckpt))
    assert resumed.resumed_step == 10 and trainer.state.global_step == 20
    assert _events(resumed) == _events(ref)
    for e, f in zip(resumed.events, ref.events):
        assert e.signal == pytest.approx(f.signal, rel=1e-5)
    ha, hb = resumed.controller.method.signal_history(), ref.controller.method.signal_history()
    assert [s for s, _ in ha] == [s for s, _ in hb] == list(range(1, 21))
    for (_, a), (_, b) in zip(ha, hb):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=0, equal_nan=True)
    frozen = {id(p) for c, f in zip(resumed.controller.components, resumed.controller.freezer.frozen) if f
              for p in c.params}
    assert frozen and all(not p.requires_grad for p in trainer.model.parameters() if id(p) in frozen)


def test_callback_resume_without_its_state_warns(tmp_path):
    _hf_train(tmp_path / "run", stop_at=5)
    ckpt = tmp_path / "run" / "checkpoint-5"
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    (ckpt / "grades_callback.pt").rename(moved / "grades_callback.pt")
    with pytest.warns(UserWarning, match="does not exist"):
        cb, _ = _hf_train(tmp_path / "run", resume=str(ckpt))
    assert cb.resumed_step is None
    cb, _ = _hf_train(tmp_path / "run2", resume=str(ckpt), resume_from=moved)  # explicit location
    assert cb.resumed_step == 5 and any(e.step == 5 for e in cb.events)


def test_checkpoint_folder_survives_a_kill_during_a_write(tmp_path, capsys):
    """A write killed midway leaves only a hidden temp folder; an unreadable one falls back to the previous."""
    from grades.distributed import Dist
    from grades.train.checkpoint import META

    c = Checkpoints(tmp_path / "ck", keep=2)
    for step in (10, 20, 30):
        c.save(step, Dist(), lambda folder, s=step: torch.save({"step": s, "w": torch.full((3,), float(s))},
                                                                 folder / META))
    assert [s for s, _ in c.list()] == [20, 30], "the newest two are kept"
    partial = tmp_path / "ck" / ".tmp-step-00000040"
    partial.mkdir()
    (partial / META).write_bytes(b"half a file")
    assert [s for s, _ in c.list()] == [20, 30]
    c.clean_partial()
    assert not partial.exists()
    (tmp_path / "ck" / "step-00000030" / META).write_bytes(b"garbage")
    path, meta = c.latest_meta()
    assert path.name == "step-00000020" and meta["step"] == 20 and meta["w"][0] == 20
    assert "step-00000030 is unreadable" in capsys.readouterr().err
    with pytest.raises(RuntimeError, match="disk full"):  # a failed write leaves no folder behind
        c.save(40, Dist(), lambda folder: (_ for _ in ()).throw(RuntimeError("disk full")))
    assert [s for s, _ in c.list()] == [20, 30] and not list((tmp_path / "ck").glob(".tmp-*"))
