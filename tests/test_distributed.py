"""Data-parallel training on CPU with two gloo processes.

Both ranks must freeze the same matrices at the same steps (rank 0 decides, the
Controller broadcasts), and the two-process run must end like a single-process run
over the same global batch: same freeze events, same losses and weights up to
floating-point summation order. Runs the real training loop (grades.train.run), the
processes started the way torchrun would (RANK / WORLD_SIZE / MASTER_* environment).

One two-process run does both (about 20 s of CPU): rank 1's GradES sees every signal
halved, so on its own it would freeze more matrices, earlier; it must still
apply exactly rank 0's decisions, which are those of the single-process run."""

from __future__ import annotations

import csv
import json
import os
import socket
from pathlib import Path

import pytest
import torch

from grades.train import load_run_config, run

STEPS = 24
GRADES = {"name": "grades", "alpha": 0.25, "tau": 0.35}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from grades.data import prepare_dataset
    from grades.models import prepare_model

    d = tmp_path_factory.mktemp("ddp")
    model = prepare_model("tiny:qwen3", d / "model", hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1,
                          head_dim=16, intermediate_size=64, vocab_size=300, max_position=256)
    data = prepare_dataset("synthetic:world-mc", d / "data", n_train=64, n_validation=8, n_test=8, n_names=40,
                           corpus_docs=10)
    return d, model, data


def config(tiny, **over) -> dict:
    _, model, data = tiny
    raw = {"name": "ddp", "model": {"source": f"local:{model}"}, "data": {"source": f"jsonl:{data}"},
           "steps": STEPS, "batch_size": 4, "grad_accum": 2, "seq_len": 96, "threads": 1,
           "optim": {"lr": 3.0e-3}, "method": GRADES}
    return load_run_config({**raw, **over})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cfg: dict, out: str, perturb_rank: int | None = None) -> None:
    """One 'torchrun' process: run training, then dump what this rank saw (and, on
    ``perturb_rank``, what its own GradES would have frozen from halved signals)."""
    proposals = []
    if rank == perturb_rank:
        import grades.methods.grades as G

        orig = G.GradES._decide

        def _decide(self, step, values):
            d = orig(self, step, values * 0.5)
            proposals.extend((step, i) for i in d.freeze)
            return d

        G.GradES._decide = _decide
    os.environ.update({"RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world),
                       "LOCAL_WORLD_SIZE": str(world), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "OMP_NUM_THREADS": "1"})
    torch.set_num_threads(1)
    import grades.controller as C

    seen = []
    init = C.Controller.__init__

    def spy(self, *a, **kw):
        init(self, *a, **kw)
        seen.append(self)

    C.Controller.__init__ = spy
    rec = run(cfg, out, progress=False)
    ctl = seen[0]
    torch.save({"events": [(e.step, e.component) for e in ctl.events], "frozen": list(ctl.freezer.frozen),
                "losses": rec["loss_curve"], "stop": (ctl.should_stop, ctl.stop_step),
                "weights": {n: p.detach().clone() for n, p in ctl.model.named_parameters()},
                "tokens": rec["tokens"], "flops": rec["flops"]["total"],
                "proposals": [(st, ctl.components[i].name) for st, i in proposals]}, Path(out) / f"rank{rank}.pt")


def _spawn(cfg: dict, out: Path, world: int = 2, perturb_rank: int | None = None) -> list[dict]:
    import torch.multiprocessing as mp

    out.mkdir(parents=True, exist_ok=True)
    mp.spawn(_worker, args=(world, _free_port(), cfg, str(out), perturb_rank), nprocs=world, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def single(tiny):
    d = tiny[0]
    rec = run(config(tiny), d / "single", progress=False)
    events = [(int(e["step"]), e["component"]) for e in csv.DictReader((d / "single" / "freeze_events.csv").open())]
    # the scenario needs several freezes at several steps, and some matrices left training
    assert len({s for s, _ in events}) >= 2 and 0 < len(events) < rec["grades"]["components"], events
    return rec, events


def test_two_gloo_ranks_agree_and_match_a_single_process(tiny, single):
    rec1, events1 = single
    d = tiny[0]
    r0, r1 = _spawn(config(tiny), d / "ddp", perturb_rank=1)
    # both ranks froze the same matrices at the same steps, and stopped (or not) together
    assert r0["events"] == r1["events"] and r0["frozen"] == r1["frozen"] and r0["stop"] == r1["stop"]
    # ... although rank 1, left to itself, would have frozen differently: the decisions are rank 0's
    assert r1["proposals"] and r1["proposals"] != r1["events"] and r0["proposals"] == []
    assert r0["losses"] == r1["losses"]  # the loss is all-reduced: identical on both ranks
    for n in r0["weights"]:
        assert torch.equal(r0["weights"][n], r1["weights"][n]), n  # identical updates on both ranks
    # ... and the run equals the single-process run over the same global batch
    assert [(s, c) for s, c in r0["events"]] == events1
    steps1 = [s for s, _ in rec1["loss_curve"]]
    assert [s for s, _ in r0["losses"]] == steps1
    for (_, a), (_, b) in zip(r0["losses"], rec1["loss_curve"]):
        assert a == pytest.approx(b, rel=1e-4, abs=1e-5)
    assert r0["tokens"] == rec1["tokens"] and r0["flops"] == rec1["flops"]["total"]
    # files: rank 0 wrote the run contract, nobody else wrote anything else
    t = json.loads((d / "ddp" / "train.json").read_text())
    assert t["world_size"] == 2 and t["status"] == "ok" and t["steps_run"] == rec1["steps_run"]
    assert [(int(e["step"]), e["component"]) for e in csv.DictReader((d / "ddp" / "freeze_events.csv").open())] \
        == events1
    assert sorted(p.name for p in (d / "ddp").iterdir()) == sorted(
        ["train.json", "signals.csv", "freeze_events.csv", "grades_summary.json", "model", "rank0.pt", "rank1.pt"])
    # final weights: those of the single-process run, up to summation order
    from grades.models import load_model

    ref = dict(load_model(d / "single" / "model")[0].named_parameters())
    saved = dict(load_model(d / "ddp" / "model")[0].named_parameters())
    for n, w in r0["weights"].items():
        torch.testing.assert_close(w, ref[n].detach(), rtol=1e-4, atol=2e-5, msg=n)
        torch.testing.assert_close(w, saved[n].detach(), rtol=0, atol=0, msg=n)  # rank 0 saved its own
