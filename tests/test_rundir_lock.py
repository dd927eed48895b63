"""One writer per run directory: the lock names its holder, a dead holder's lock is taken
over, the directory is checked for writability and cleaned of killed writes before any
work, and nothing outside it is touched."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from grades.lock import DirLock, DirLocked
from grades.rundir import RunDir, RunDirError

ROOT = Path(__file__).resolve().parent.parent
HOLD = ("import sys, time\nfrom grades.lock import DirLock\nDirLock(sys.argv[1]).acquire()\n"
        "print('held', flush=True)\ntime.sleep(120)\n")


def holder(d: Path) -> subprocess.Popen:
    """A process that holds ``d`` until it is killed."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(d)], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.stdout.readline().strip() == "held"
    return p


def test_lock_is_exclusive_named_and_removed(tmp_path):
    a = DirLock(tmp_path).acquire()
    rec = json.loads((tmp_path / ".lock").read_text())
    assert rec["pid"] == os.getpid() and rec["host"] and rec["command"]
    with pytest.raises(DirLocked) as e:  # another open of the file conflicts, even in this process
        DirLock(tmp_path).acquire()
    assert f"process {os.getpid()}" in str(e.value)
    a.release()
    assert not (tmp_path / ".lock").exists()
    with DirLock(tmp_path) as b:
        assert b.took_over is None
    a.release()  # releasing twice is harmless


def test_a_live_holder_is_named_and_a_killed_ones_lock_taken_over(tmp_path):
    p = holder(tmp_path)
    try:
        with pytest.raises(DirLocked) as e:
            DirLock(tmp_path).acquire()
        assert e.value.holder["pid"] == p.pid and f"process {p.pid}" in str(e.value)
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == p.pid  # the stale lock file remains
    lock = DirLock(tmp_path).acquire()
    assert lock.took_over["pid"] == p.pid
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_lock_file_junk_and_symlinks(tmp_path):
    (tmp_path / ".lock").write_bytes(b"\xff garbage")
    lock = DirLock(tmp_path).acquire()
    assert lock.took_over is not None
    lock.release()
    outside = tmp_path / "outside.txt"
    outside.write_text("precious\n")
    d = tmp_path / "run"
    d.mkdir()
    (d / ".lock").symlink_to(outside)
    with DirLock(d):
        assert not (d / ".lock").is_symlink()
    assert outside.read_text() == "precious\n"


def test_open_for_writing_checks_locks_and_cleans(tmp_path, capsys):
    d = tmp_path / "run"
    d.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "data.bin").write_text("keep\n")
    leftovers = [".model.abcd1234.tmp", ".adapter.x_9y8z7w.tmp", ".train.json.q1w2e3r4.tmp", ".eval.json.zzzzzzzz.tmp"]
    (d / leftovers[0]).mkdir()
    (d / leftovers[0] / "model.safetensors").write_text("half")
    (d / leftovers[1]).symlink_to(outside)  # a link is removed, never followed
    (d / leftovers[2]).write_text("{")
    (d / leftovers[3]).write_text("{")
    keep = [".checkpoints", ".hidden", "notes.tmp", ".model.tmp", "run.yaml", ".tmp-step-00000010-1"]
    for k in keep:
        (d / k).mkdir() if k.startswith((".check", ".tmp-step")) else (d / k).write_text("x")
    rd = RunDir(d)
    rd.open_for_writing()
    try:
        assert sorted(p.name for p in d.iterdir()) == sorted(keep + [".lock"])
        assert (outside / "data.bin").read_text() == "keep\n"
        err = capsys.readouterr().err
        assert all(f"removed {n}" in err for n in leftovers)
        with pytest.raises(RunDirError, match=f"in use by process {os.getpid()}"):
            RunDir(d).open_for_writing()
    finally:
        rd.release()
    assert not (d / ".lock").exists()


def test_open_for_writing_refuses_files_and_unwritable_directories(tmp_path, monkeypatch):
    (tmp_path / "afile").write_text("mine\n")
    with pytest.raises(RunDirError, match="is a file, not a directory"):
        RunDir(tmp_path / "afile").open_for_writing()
    with pytest.raises(RunDirError, match="is a file"):  # a file where a parent directory goes
        RunDir(tmp_path / "afile" / "run").open_for_writing()
    assert (tmp_path / "afile").read_text() == "mine\n"
    import grades.rundir as rundir

    def read_only(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(rundir.tempfile, "mkstemp", read_only)  # as root, chmod cannot make one
    with pytest.raises(RunDirError, match="is not writable .Permission denied.; nothing was trained"):
        RunDir(tmp_path / "ro").open_for_writing()
    with pytest.raises(RunDirError, match="checkpoint directory .* is not writable"):
        monkeypatch.undo()
        calls = []

        def second_fails(*a, **k):
            calls.append(k.get("dir"))
            if len(calls) > 1:
                raise OSError(30, "Read-only file system")
            return orig(*a, **k)

        orig = rundir.tempfile.mkstemp
        monkeypatch.setattr(rundir.tempfile, "mkstemp", second_fails)
        RunDir(tmp_path / "ok").open_for_writing((tmp_path / "ckpt",))


# ------------------------------------------------------------------ grades.train
RUN = {"name": "lock", "model": {"source": "tiny:qwen3"}, "data": {"source": "synthetic:world-mc"}, "steps": 2}


def test_train_refuses_a_held_run_directory_and_leaves_it_alone(tmp_path, capsys):
    from grades.train import main

    d = tmp_path / "run"
    (d / "model").mkdir(parents=True)
    (d / "model" / "weights.bin").write_text("the first run's\n")
    (d / "train.json").write_text('{"status": "ok"}\n')
    (d / ".checkpoints" / "step-00000010").mkdir(parents=True)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({**RUN, "mode": "lora"}))
    p = holder(d)
    try:
        assert main(["--config", str(cfg), "--out", str(d), "--no-progress", "--no-resume"]) == 2
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait()
    err = capsys.readouterr().err
    assert f"in use by process {p.pid}" in err and "Traceback" not in err
    assert (d / "model" / "weights.bin").exists() and (d / "train.json").exists()
    assert (d / ".checkpoints" / "step-00000010").is_dir() and not (d / "train_failed.json").exists()


def test_train_refuses_an_unwritable_run_directory_before_any_work(tmp_path, capsys, monkeypatch):
    import grades.rundir as rundir
    from grades.train import main

    def read_only(*a, **k):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(rundir.tempfile, "mkstemp", read_only)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump(RUN))
    t0 = time.perf_counter()
    assert main(["--config", str(cfg), "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    assert time.perf_counter() - t0 < 10, "refused only after work"
    err = capsys.readouterr().err
    assert "is not writable (Read-only file system)" in err and "Traceback" not in err


@pytest.mark.slow
def test_sigkilled_writer_leaves_a_lock_that_the_rerun_takes_over(tmp_path):
    """A run SIGKILLed mid-way leaves its lock file (and a half-written leftover); the rerun
    takes the lock over, removes the leftover, resumes from the checkpoint and finishes."""
    from grades.data import prepare_dataset
    from grades.models import prepare_model

    model = prepare_model("tiny:qwen3", tmp_path / "model", hidden_size=32, num_layers=2, num_heads=2,
                          num_kv_heads=1, head_dim=16, intermediate_size=64, vocab_size=300, max_position=256)
    data = prepare_dataset("synthetic:world-mc", tmp_path / "data", n_train=32, n_validation=8, n_test=8,
                           n_names=40, corpus_docs=10)
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"name": "kill", "model": {"source": f"local:{model}"},
                                   "data": {"source": f"jsonl:{data}"}, "steps": 6, "batch_size": 4, "seq_len": 96,
                                   "threads": 1, "checkpoint_every": 2, "method": "none"}))
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "grades.train", "--config", str(cfg), "--out", str(out), "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GRADES_TEST_KILL_AT_STEP": "4"}
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr[-2000:]
    dead = json.loads((out / ".lock").read_text())["pid"]
    (out / ".model.k1ll3d00.tmp").mkdir()  # what a save killed halfway leaves
    env.pop("GRADES_TEST_KILL_AT_STEP")
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"took over the lock left by process {dead}" in r.stderr and "removed .model.k1ll3d00.tmp" in r.stderr
    assert json.loads((out / "train.json").read_text())["resumed_from_steps"] == [4]
    assert not (out / ".lock").exists() and not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_checkpoint_removal_keeps_what_is_not_a_checkpoint(tmp_path):
    """``--checkpoint-dir`` may name a folder with other files: only checkpoints are removed."""
    from grades.train import Checkpoints

    (tmp_path / "step-00000010").mkdir()
    (tmp_path / "step-00000010" / "state.pt").write_text("x")
    (tmp_path / ".tmp-step-00000020-99").mkdir()
    (tmp_path / "notes.txt").write_text("mine\n")
    Checkpoints(tmp_path).remove()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.txt"]
    only = tmp_path / "only"
    (only / "step-00000001").mkdir(parents=True)
    Checkpoints(only).remove()
    assert not only.exists()  # a folder of checkpoints only goes with them
