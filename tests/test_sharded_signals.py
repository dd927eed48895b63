"""GradES's signals over FSDP2-sharded parameters equal the whole-matrix signals, on CPU with gloo.

Two processes shard tiny models with ``fully_shard`` (rows split unevenly: 63-row MLP
matrices, a 4-expert MoE stack) and give every matrix the same gradients and weight
changes as an unsharded copy. Each rank measures its shard; the one all-reduce per check
must give the unsharded tracker's values, for every signal, full and sampled, with
float32 and bfloat16 buffers. A tracker's state moves between the sharded and the
unsharded run in both directions (resuming on another number of processes). The freezer
releases each rank's share of the optimizer state.
"""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # two processes (about 10 s)

CASES = [  # (signal, sample_fraction, buffer_dtype)
    ("grad_delta_l1", None, "float32"),
    ("grad_delta_l1", 0.3, "bfloat16"),
    ("grad_l1", None, "float32"),
    ("weight_delta_l1", None, "bfloat16"),
    ("weight_delta_l1", 0.25, "float32"),
]
STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _models():
    from tinymodels import build_tiny

    return {"dense": build_tiny("qwen3", intermediate_size=63, hidden_size=32, num_attention_heads=2,
                                num_key_value_heads=1),
            "moe": build_tiny("qwen3_moe", hidden_size=32, num_attention_heads=2, num_key_value_heads=1)}


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
    torch.set_num_threads(1)
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from grades.components import block_lists, discover_components
    from grades.freezer import Freezer
    from grades.shards import is_sharded, local, rows_of, sharded_like
    from grades.signals import SignalTracker

    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    results: dict = {}
    for name, ref in _models().items():
        model = copy.deepcopy(ref)
        for _, blocks, _, _ in block_lists(model):
            for b in blocks:
                fully_shard(b, mesh=mesh)
        fully_shard(model, mesh=mesh)
        comps, ref_comps = discover_components(model), discover_components(ref)
        params = [p for c in comps for p in c.params]
        ref_params = [p for c in ref_comps for p in c.params]
        assert all(is_sharded(p) for p in params) and not any(is_sharded(p) for p in ref_params)
        uneven = [p for p in params if p.shape[0] % world]
        assert name == "moe" or uneven, "the scenario needs matrices whose rows do not split evenly"

        def step(s: int) -> None:  # the same gradient and weight change on both copies
            g = torch.Generator().manual_seed(100 + s)
            with torch.no_grad():
                for p, q in zip(params, ref_params):
                    grad = torch.randn(q.shape, generator=g) * (1 + s)
                    dw = torch.randn(q.shape, generator=g) * 1e-3
                    q.grad = grad
                    p.grad = sharded_like(rows_of(grad, p).clone(), p)
                    q.add_(dw)
                    local(p).add_(rows_of(dw, p))

        for signal, frac, buf in CASES:
            kw = dict(signal=signal, sample_fraction=frac, buffer_dtype=buf, seed=3)
            sharded, whole = SignalTracker(comps, **kw), SignalTracker(ref_comps, **kw)
            assert sharded.mesh is not None and whole.mesh is None
            got, want = [], []
            for s in range(STEPS):
                step(s)
                got.append(sharded.measure())
                want.append(whole.measure())
            # the state moves both ways: sharded -> whole (as DCP would gather it) and whole -> sharded
            st = sharded.state_dict()
            gathered = {"buffer": [None if b is None else (b.full_tensor() if is_sharded(b) else b)
                                   for b in st["buffer"]], "probe": st["probe"]}
            to_whole, to_sharded = SignalTracker(ref_comps, **kw), SignalTracker(comps, **kw)
            to_whole.load_state_dict(gathered)
            to_sharded.load_state_dict(copy.deepcopy(whole.state_dict()))  # as saved, not the live buffers
            step(STEPS)
            after = [sharded.measure(), whole.measure(), to_whole.measure(), to_sharded.measure()]
            results[(name, signal, frac, buf)] = {"got": torch.stack(got), "want": torch.stack(want),
                                                   "after": torch.stack(after),
                                                   "bytes": (sharded.buffer_bytes(), whole.buffer_bytes())}
        # a freeze releases this rank's share of the optimizer state
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        step(0)
        opt.step()
        fr = Freezer(comps, opt)
        fr.freeze(0, step=1)
        c0 = comps[0]
        results[(name, "freeze")] = {
            "released": fr.released_optimizer_bytes,
            "expected": sum(2 * local(p).numel() * 4 + 4 for p in c0.params),  # exp_avg, exp_avg_sq, step
            "state_left": any(p in opt.state for p in c0.params), "requires_grad": any(p.requires_grad
                                                                                       for p in c0.params)}
    torch.save(results, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    import torch.multiprocessing as mp

    out = tmp_path_factory.mktemp("sharded-signals")
    mp.spawn(_worker, args=(2, _free_port(), str(out)), nprocs=2, join=True)
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("model", ["dense", "moe"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(x) for x in c))
def test_sharded_signals_equal_the_whole_matrix_signals(ranks, model, case):
    r0, r1 = ranks[0][(model, *case)], ranks[1][(model, *case)]
    for k in ("got", "after"):  # every rank has the same values (one all-reduce)
        assert torch.equal(torch.nan_to_num(r0[k], nan=-1.0), torch.nan_to_num(r1[k], nan=-1.0))
    signal = case[0]
    got, want = r0["got"], r0["want"]
    first = 0 if signal == "grad_l1" else 1  # a delta is undefined at its first measurement
    assert torch.isnan(got[:first]).all() and torch.isnan(want[:first]).all()
    torch.testing.assert_close(got[first:], want[first:], rtol=1e-5, atol=0)
    # after the state moved (sharded <-> whole), the next values are those of the runs that kept it
    sharded, whole, to_whole, to_sharded = r0["after"]
    torch.testing.assert_close(to_whole, whole, rtol=1e-5, atol=0)
    torch.testing.assert_close(to_sharded, sharded, rtol=1e-5, atol=0)
    torch.testing.assert_close(sharded, whole, rtol=1e-5, atol=0)
    if case[1] is None and signal != "grad_l1":  # each rank keeps about half of the whole buffers
        (s0, w), (s1, _) = r0["bytes"], r1["bytes"]
        assert s0 + s1 == w and 0.3 < s0 / w < 0.7


@pytest.mark.parametrize("model", ["dense", "moe"])
def test_freeze_releases_each_ranks_share_of_the_optimizer_state(ranks, model):
    for r in ranks:
        f = r[(model, "freeze")]
        assert f["released"] == f["expected"] > 0
        assert not f["state_left"] and not f["requires_grad"]
