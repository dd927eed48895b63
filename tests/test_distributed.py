"""Data-parallel training with FSDP2 on CPU: two gloo processes against one.

Runs the real training loop (grades.train.run): the processes are started the way
torchrun starts them (RANK / WORLD_SIZE / MASTER_* environment), or by torchrun itself.

* Two processes shard the model (``fully_shard`` per block), each measures its shards,
  and one all-reduce per check gives the whole-matrix signals: both ranks freeze the same
  matrices at the same steps as a single process over the same global batch, with losses
  within 1e-4; each rank holds about half of the parameters and optimizer state.
* One process with ``parallel: fsdp`` (a world of one) is the same code path and gives
  bit for bit what the unsharded loop gives.
* A global batch smaller than the world (one example on two GPUs) is shared: each rank
  takes the row, its loss weighted by 1/2, and the run equals the single-process one.
* A two-process run killed mid-way (SIGKILL after a checkpoint, on every rank) resumes
  from its sharded checkpoint with the same events and losses; the same checkpoint
  resumes on one process too.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from grades.train import load_run_config, run

slow = pytest.mark.slow  # runs of two processes (about 20 s each on a loaded 2-core machine)

ROOT = Path(__file__).resolve().parent.parent
STEPS = 24
GRADES = {"name": "grades", "alpha": 0.25, "tau": 0.35}  # freezes at steps 7 .. 21 on this model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, tiny_world):
    return (tmp_path_factory.mktemp("fsdp"), *tiny_world)


def config(tiny, **over) -> dict:
    _, model, data = tiny
    raw = {"name": "fsdp", "model": {"source": f"local:{model}"}, "data": {"source": f"jsonl:{data}"},
           "steps": STEPS, "batch_size": 4, "grad_accum": 2, "seq_len": 96, "threads": 1,
           "optim": {"lr": 3.0e-3}, "method": GRADES}
    return load_run_config({**raw, **over})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spy_and_run(cfg: dict, out: str) -> tuple[dict, dict]:
    """Run training; returns the record and what this process held (events, memory, weights)."""
    import grades.controller as C
    from grades.shards import local_bytes

    seen = []
    init = C.Controller.__init__

    def spy(self, *a, **kw):
        init(self, *a, **kw)
        seen.append(self)

    C.Controller.__init__ = spy
    try:
        rec = run(cfg, out, progress=False)
    finally:
        C.Controller.__init__ = init
    ctl = seen[0]
    opt = ctl.freezer.optimizer
    held = {"events": [(e.step, e.component) for e in ctl.events], "frozen": list(ctl.freezer.frozen),
            "stop": (ctl.should_stop, ctl.stop_step), "losses": rec["loss_curve"],
            "param_bytes": sum(local_bytes(p) for p in ctl.model.parameters()),
            "optimizer_bytes": sum(local_bytes(v) for st in opt.state.values() for v in st.values()
                                   if torch.is_tensor(v)),
            "local_weights": {n: p.detach().to_local().clone() if hasattr(p, "to_local") else p.detach().clone()
                              for n, p in ctl.model.named_parameters()}}
    return rec, held


def _worker(rank: int, world: int, port: int, cfg: dict, out: str) -> None:
    """One 'torchrun' process: train, then dump what this rank held."""
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    _, held = _spy_and_run(cfg, out)
    torch.save(held, Path(out) / f"rank{rank}.pt")


def _spawn(cfg: dict, out: Path, world: int = 2) -> list[dict]:
    import torch.multiprocessing as mp

    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(world, _free_port(), cfg, str(out)), nprocs=world, join=True)
    held = [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]
    for r in range(world):
        (out / f"rank{r}.pt").unlink()
    return held


def _events(run_dir: Path) -> list[tuple[int, str]]:
    return [(int(e["step"]), e["component"]) for e in csv.DictReader((run_dir / "freeze_events.csv").open())]


def _weights(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(next((run_dir / "model").glob("*.safetensors")))


@pytest.fixture(scope="module")
def single(tiny):
    d = tiny[0]
    rec, held = _spy_and_run(config(tiny), str(d / "single"))
    events = _events(d / "single")
    # the scenario needs several freezes at several steps, and some matrices left training
    assert len({s for s, _ in events}) >= 2 and 0 < len(events) < rec["grades"]["components"], events
    assert rec["parallel"] == {"strategy": "none", "world_size": 1}
    return rec, held, events


@slow
def test_two_processes_take_the_single_process_decisions(tiny, single):
    rec1, held1, events1 = single
    d = tiny[0]
    r0, r1 = _spawn(config(tiny), d / "fsdp2")
    # both ranks froze the same matrices at the same steps, and stopped (or not) together
    assert r0["events"] == r1["events"] == events1
    assert r0["frozen"] == r1["frozen"] == held1["frozen"] and r0["stop"] == r1["stop"] == held1["stop"]
    assert r0["losses"] == r1["losses"]  # the loss is all-reduced: identical on both ranks
    assert [s for s, _ in r0["losses"]] == [s for s, _ in rec1["loss_curve"]]
    diffs = [abs(a - b) for (_, a), (_, b) in zip(r0["losses"], rec1["loss_curve"])]
    assert max(diffs) < 1e-4, max(diffs)
    # each rank holds about half of the parameters and of the optimizer state
    for r in (r0, r1):
        for k in ("param_bytes", "optimizer_bytes"):
            assert 0.45 < r[k] / held1[k] < 0.56, (k, r[k], held1[k])
    assert r0["param_bytes"] + r1["param_bytes"] == held1["param_bytes"]
    # files: rank 0 wrote the run contract, nobody else wrote anything else
    t = json.loads((d / "fsdp2" / "train.json").read_text())
    assert t["parallel"] == {"strategy": "fsdp", "world_size": 2} and t["world_size"] == 2
    assert t["precision"]["name"] == "fp32" and t["status"] == "ok" and t["steps_run"] == rec1["steps_run"]
    assert t["tokens"] == rec1["tokens"] and t["flops"]["total"] == rec1["flops"]["total"]
    assert _events(d / "fsdp2") == events1
    assert sorted(p.name for p in (d / "fsdp2").iterdir()) == sorted(
        ["train.json", "signals.csv", "freeze_events.csv", "grades_summary.json", "model"])
    # final weights: gathered from the shards, those of the single-process run up to summation order
    ref, saved = _weights(d / "single"), _weights(d / "fsdp2")
    assert ref.keys() == saved.keys()
    for n in ref:
        torch.testing.assert_close(saved[n], ref[n], rtol=1e-4, atol=2e-5, msg=n)
    rows = r0["local_weights"]["model.layers.0.mlp.up_proj.weight"]  # rank 0 saved its own rows
    torch.testing.assert_close(saved["model.layers.0.mlp.up_proj.weight"][: rows.shape[0]], rows, rtol=0, atol=0)


@slow
def test_a_world_of_one_is_the_same_code_path(tiny, single):
    rec1, held1, events1 = single
    d = tiny[0]
    rec, held = _spy_and_run(config(tiny, parallel="fsdp"), str(d / "fsdp1"))
    assert rec["parallel"] == {"strategy": "fsdp", "world_size": 1}
    assert held["events"] == events1 and rec["loss_curve"] == rec1["loss_curve"]  # bit for bit
    assert held["param_bytes"] == held1["param_bytes"] and held["optimizer_bytes"] == held1["optimizer_bytes"]
    a, b = _weights(d / "single"), _weights(d / "fsdp1")
    assert all(torch.equal(a[n], b[n]) for n in a)


def _torchrun(run_yaml: Path, out: Path, nproc: int, kill_at: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("GRADES_TEST_KILL_AT_STEP", None)
    if kill_at is not None:
        env["GRADES_TEST_KILL_AT_STEP"] = str(kill_at)
    train = ["-m", "grades.train", "--config", str(run_yaml), "--out", str(out), "--no-progress"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *train] \
        if nproc > 1 else [sys.executable, *train]
    return subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)


@slow
def test_a_killed_two_process_run_resumes_with_the_same_events(tiny):
    d = tiny[0]
    run_yaml = d / "ckpt.yaml"
    run_yaml.write_text(yaml.safe_dump(config(tiny, checkpoint_every=5)))
    r = _torchrun(run_yaml, d / "ref2", 2)
    assert r.returncode == 0, r.stderr[-3000:]
    ref = json.loads((d / "ref2" / "train.json").read_text())
    ref_events = _events(d / "ref2")
    assert any(s <= 10 for s, _ in ref_events) and any(s > 10 for s, _ in ref_events)  # both sides of the kill

    killed = d / "killed2"
    r = _torchrun(run_yaml, killed, 2, kill_at=10)
    assert r.returncode != 0 and not (killed / "train.json").exists()
    ckpt = killed / ".checkpoints" / "step-00000010"
    assert {"meta.pt", ".metadata", "rng-00000.pt", "rng-00001.pt"} <= {p.name for p in ckpt.iterdir()}
    assert len(list(ckpt.glob("*.distcp"))) == 2, "each rank wrote its own shards"
    assert [p.name for p in sorted((killed / ".checkpoints").iterdir())] == ["step-00000005", "step-00000010"]
    backup = d / "killed2-ckpt"
    shutil.copytree(killed / ".checkpoints", backup)

    # the same number of processes: the same run
    r = _torchrun(run_yaml, killed, 2)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from the checkpoint of step 10" in r.stderr
    got = json.loads((killed / "train.json").read_text())
    assert got["resumed_from_steps"] == [10] and _events(killed) == ref_events
    assert got["loss_curve"] == ref["loss_curve"] and got["flops"]["total"] == ref["flops"]["total"]
    a, b = _weights(d / "ref2"), _weights(killed)
    assert all(torch.equal(a[n], b[n]) for n in a)

    # one process resumes the two-process checkpoint (resharded on load)
    one = d / "killed2-on1"
    shutil.copytree(backup, one / ".checkpoints")
    r = _torchrun(run_yaml, one, 1)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "resuming from the checkpoint of step 10" in r.stderr
    got = json.loads((one / "train.json").read_text())
    assert got["parallel"] == {"strategy": "none", "world_size": 1} and got["resumed_from_steps"] == [10]
    assert _events(one) == ref_events
    assert max(abs(x - y) for (_, x), (_, y) in zip(got["loss_curve"], ref["loss_curve"])) < 1e-4


def test_how_ranks_share_a_batch():
    from grades.distributed import Dist

    four = [Dist(rank=r, world=4) for r in range(4)]
    assert [d.rows(8) for d in four] == [(0, 2, 1.0), (2, 4, 1.0), (4, 6, 1.0), (6, 8, 1.0)]
    assert [d.rows(2) for d in four] == [(0, 1, 0.5), (1, 2, 0.5), (0, 1, 0.5), (1, 2, 0.5)]
    assert [d.rows(1) for d in four] == [(0, 1, 0.25)] * 4
    with pytest.raises(ValueError, match="cannot be shared"):
        four[0].check_batch(6)
    b = {"input_ids": torch.arange(8).view(2, 4), "pixel_values": torch.zeros(5, 3)}  # 5 patches of 2 examples
    with pytest.raises(ValueError, match="pixel_values"):
        Dist(rank=1, world=2).shard(b)
    whole, w = Dist(rank=1, world=4).shard({"input_ids": b["input_ids"][:1], "pixel_values": b["pixel_values"]})
    assert w == 0.25 and whole["pixel_values"].shape == (5, 3)  # a rank that takes every row takes all of it
    assert Dist().shard(b) == (b, 1.0)


@slow
def test_one_example_on_two_processes(tiny):
    d = tiny[0]
    c = config(tiny, batch_size=1, grad_accum=2, steps=12)
    rec1, held1 = _spy_and_run(c, str(d / "b1-single"))
    r0, r1 = _spawn(c, d / "b1-fsdp2")
    assert held1["events"] and r0["events"] == r1["events"] == held1["events"]
    assert max(abs(a - b) for (_, a), (_, b) in zip(r0["losses"], rec1["loss_curve"])) < 1e-4

