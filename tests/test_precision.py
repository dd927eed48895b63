"""Training precision and the parallel strategy: what the run config says, and what bfloat16 does to small updates.

At lr 2e-5, AdamW moves a weight by about 2e-5 per step; a bfloat16 weight of size 0.02
has a spacing of about 1.2e-4, so in pure bfloat16 most updates round away. With fp32
master weights (``bf16-mixed``: FSDP2's mixed precision, bfloat16 compute) every weight
moves.
"""

from __future__ import annotations

import warnings

import pytest
from tinymodels import prepare_tiny
import torch

from grades.config import ConfigError
from grades.train import load_run_config, resume_hash
from grades.train.parallel import parallel_strategy
from grades.train.precision import PureBf16Warning, resolve_precision

BASE = {"name": "p", "model": {"source": "tiny:qwen3"}, "data": {"source": "synthetic:world-mc"}}


def cfg(**over) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PureBf16Warning)
        return load_run_config({**BASE, **over})


def test_precision_follows_the_model_dtype_unless_given():
    assert resolve_precision(cfg()).record() == {"name": "fp32", "master": "float32", "compute": "float32",
                                                 "reduce": "float32", "saved": "float32"}
    bf16 = resolve_precision(cfg(model={"source": "tiny:qwen3", "dtype": "bfloat16"}))
    assert bf16.name == "bf16-mixed" and bf16.master == "float32" and bf16.compute == "bfloat16"
    assert bf16.reduce == "float32" and bf16.saved == "bfloat16" and bf16.mixed
    pure = resolve_precision(cfg(precision="bf16-pure"))
    assert (pure.master, pure.compute, pure.reduce, pure.saved) == ("bfloat16",) * 3 + ("float32",)
    assert "precision" not in cfg() and "parallel" not in cfg(), "absent fields keep existing config hashes"


def test_pure_bfloat16_is_warned_about_when_the_config_is_read():
    with pytest.warns(PureBf16Warning, match="round away"):
        load_run_config({**BASE, "precision": "bf16-pure"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", PureBf16Warning)
        load_run_config({**BASE, "model": {"source": "tiny:qwen3", "dtype": "bfloat16"}})  # bf16-mixed: silent


def test_mixed_precision_needs_fsdp():
    with pytest.raises(ConfigError, match="bf16-mixed .* needs parallel: fsdp"):
        load_run_config({**BASE, "precision": "bf16-mixed", "parallel": "none"})


def test_parallel_strategy_defaults():
    assert parallel_strategy(cfg(), 1) == "none"
    assert parallel_strategy(cfg(), 2) == "fsdp"
    assert parallel_strategy(cfg(precision="bf16-mixed"), 1) == "fsdp"  # a world of one
    assert parallel_strategy(cfg(parallel="fsdp"), 1) == "fsdp"
    with pytest.raises(ConfigError, match="parallel: none with 2 processes"):
        parallel_strategy(cfg(parallel="none"), 2)


def test_resuming_on_another_number_of_processes_is_allowed():
    assert resume_hash(cfg()) == resume_hash(cfg(parallel="fsdp", dist_timeout_s=60))
    assert resume_hash(cfg()) != resume_hash(cfg(precision="bf16-pure"))


def test_a_method_that_cannot_read_shards_is_refused_when_the_run_is_sharded():
    official = {"name": "grades-official", "tau": 0.1}
    cfg(method=official)  # unsharded: fine
    for over in ({"parallel": "fsdp"}, {"precision": "bf16-mixed"}):
        with pytest.raises(ConfigError, match="grades-official.*cannot read sharded"):
            cfg(method=official, **over)


def test_a_sharded_run_refuses_what_it_cannot_do():
    from grades.methods import build_method
    from grades.train.errors import RunFailed
    from grades.train.setup import check_sharded

    check_sharded(cfg(), build_method({"name": "grades", "tau": 0.1}))
    check_sharded(cfg(savings={"prune_optimizer": True}), build_method("none"))
    with pytest.raises(RunFailed, match="savings .*truncate_backward"):
        check_sharded(cfg(savings={"truncate_backward": True}), build_method("none"))


# ---------------------------------------------------- what bfloat16 does to updates
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return prepare_tiny(tmp_path_factory.mktemp("precision"),
                        model={"hidden_size": 64, "head_dim": 32, "intermediate_size": 128},
                        data={"n_train": 32, "n_names": 20})


def _unchanged(tiny, precision: str) -> float:
    """Share of the block matrices' entries that 3 AdamW steps at lr 2e-5 left unchanged."""
    from safetensors.torch import load_file

    from grades.train import run

    d, model, data = tiny
    c = cfg(model={"source": f"local:{model}"}, data={"source": f"jsonl:{data}"}, steps=3, batch_size=4,
            seq_len=64, threads=1, optim={"lr": 2.0e-5}, schedule={"name": "constant"}, precision=precision)
    run(c, d / precision, progress=False)
    before = load_file(next(model.glob("*.safetensors")))
    after = load_file(next((d / precision / "model").glob("*.safetensors")))
    start = torch.bfloat16 if precision == "bf16-pure" else torch.float32  # what the run started from
    same = total = 0
    for k, w in after.items():
        if ".layers." in k and k.endswith("_proj.weight"):
            w0 = before[k].to(start).float()
            same += int((w.float() == w0).sum())
            total += w.numel()
    return same / total


@pytest.mark.slow
def test_fp32_master_weights_change_where_pure_bfloat16_rounds_the_updates_away(tiny):
    mixed, pure = _unchanged(tiny, "bf16-mixed"), _unchanged(tiny, "bf16-pure")
    print(f"\nunchanged after 3 AdamW steps at lr 2e-5: bf16-mixed (fp32 masters) {mixed:.4%}, "
          f"bf16-pure {pure:.2%}")
    assert mixed < 0.001 and pure > 0.5
