"""The per-GPU memory estimate: the shapes it counts, what fits, what it suggests, and how it compares with a measurement.

The paper's models are counted on their module trees built on the meta device from the
built-in config.json excerpts (no download). Full fine-tuning of Qwen3-14B in bf16-mixed
(fp32 master weights and AdamW state, 16 bytes per parameter) needs more than one
80 GiB GPU and fits sharded over four with gradient checkpointing.
"""

from __future__ import annotations

import pytest

from grades.memory import GIB, check_fit, estimate, plan_table, resolve_arch
from grades.train import load_run_config

PAPER = {"model": {"source": "hf:Qwen/Qwen3-14B", "dtype": "bfloat16"}, "data": {"source": "synthetic:world-mc"},
         "steps": 3500,
         "batch_size": 16, "grad_accum": 3, "seq_len": 256, "gradient_checkpointing": True}
GRADES = {"name": "grades", "signal": "weight_delta_l1", "tau": 2.4, "alpha": 0.55, "sample_fraction": 0.005}
GPU = 80 * GIB


@pytest.fixture(scope="module")
def qwen14():
    return resolve_arch("qwen3-14b", "hf:Qwen/Qwen3-14B")


def cfg(**over) -> dict:
    return load_run_config({**PAPER, **over})


def test_the_paper_models_are_counted_from_their_configs(qwen14):
    assert qwen14.exact and "built-in config" in qwen14.origin
    assert 14.7e9 < qwen14.params < 14.8e9 and qwen14.text.layers == 40 and qwen14.text.qk_norm
    assert qwen14.vocab == 151936 and 13.1e9 < qwen14.tracked < 13.3e9  # the 7 projections of 40 blocks
    assert 320e6 < qwen14.block_params < 340e6  # what FSDP gathers at once
    lora, on_tracked = qwen14.lora_params(16, ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"])
    assert lora == on_tracked == 40 * 16 * (2 * 5120 + (5120 + 1024) * 2 + (5120 + 5120) + 3 * (5120 + 17408))
    vl = resolve_arch("vl", "hf:Qwen/Qwen2.5-VL-7B-Instruct")
    assert 8.2e9 < vl.params < 8.4e9 and vl.vision is not None and vl.vision.layers == 32
    assert vl.lora_params(128, ["@vision"])[0] == sum(128 * (x.fan_in + x.fan_out) for x in vl.linears
                                                      if x.tower == "vision" and x.tracked)


def test_14b_full_fine_tuning_is_refused_on_one_gpu_and_fits_on_four(qwen14):
    c = cfg(mode="fp", method=GRADES)
    one = check_fit(qwen14, c, 1, GPU, name="qwen3-14b/FP+GradES")
    assert not one.ok and one.estimate.total > 200 * GIB
    e = one.estimate.parts  # 16 bytes per parameter on one GPU: fp32 master, fp32 gradient, two AdamW moments
    assert e["parameters"] > 55 * GIB and e["gradients"] > 55 * GIB and e["optimizer"] > 110 * GIB
    assert any("4 GPUs" in f or "8 GPUs" in f for f in one.fixes), one.fixes
    assert "would fit with" in one.describe()
    four = check_fit(qwen14, c, 4, GPU)
    assert four.ok and four.estimate.strategy == "fsdp" and four.estimate.total < 80 * GIB
    assert four.estimate.parts["optimizer"] == pytest.approx(one.estimate.parts["optimizer"] / 4, rel=1e-6)
    # without checkpointing the activations of 4 x 256 tokens per GPU no longer fit; the plan says what does
    no_ck = check_fit(qwen14, cfg(mode="fp", method=GRADES, gradient_checkpointing=False), 4, GPU)
    assert not no_ck.ok and any("gradient_checkpointing: true" in f for f in no_ck.fixes)


def test_pure_bfloat16_and_lora_need_less(qwen14):
    mixed = estimate(qwen14, cfg(mode="fp"), 4)
    pure = estimate(qwen14, cfg(mode="fp", precision="bf16-pure"), 4)
    assert pure.parts["optimizer"] * 2 == pytest.approx(mixed.parts["optimizer"], rel=1e-6)
    lora = check_fit(qwen14, cfg(mode="lora", method={**GRADES, "tau": 0.02}), 1, GPU)
    assert lora.ok and lora.estimate.parts["optimizer"] < GIB


def test_grades_state_follows_its_buffer_and_sampling(qwen14):
    full = estimate(qwen14, cfg(mode="fp", method={**GRADES, "sample_fraction": None}), 4)
    half = estimate(qwen14, cfg(mode="fp", method={**GRADES, "sample_fraction": None, "buffer_dtype": "bfloat16"}), 4)
    sampled = estimate(qwen14, cfg(mode="fp", method=GRADES), 4)
    v1 = estimate(qwen14, cfg(mode="fp", method={"name": "grades-v1", "tau": 1.0}), 4)
    assert full.parts["grades_state"] == pytest.approx(qwen14.tracked * 4 / 4, rel=1e-6)
    assert half.parts["grades_state"] * 2 == pytest.approx(full.parts["grades_state"], rel=1e-6)
    assert sampled.parts["grades_state"] < full.parts["grades_state"] / 100 and v1.parts["grades_state"] == 0


def test_plan_table_lists_every_part():
    arch = resolve_arch("tiny", "tiny:qwen3")
    table = plan_table([check_fit(arch, load_run_config({**PAPER, "model": {"source": "tiny:qwen3"}}), 1, GPU,
                                  name="tiny/FP")])
    for col in ("parameters", "gradients", "optimizer", "grades_state", "activations", "total", "fits"):
        assert col in table
    assert "tiny/FP" in table and "yes" in table


@pytest.mark.slow
def test_the_estimate_matches_a_measured_run_on_cpu(tmp_path):
    """Three real steps of a tiny model: the states exactly, the activations within 20% (the RSS
    of so small a model is mostly code; docs/guides/cluster.md compares SmolLM2-135M's)."""
    from grades.data import prepare_dataset
    from grades.memory.measure import compare, measure
    from grades.models import prepare_model

    model = prepare_model("tiny:qwen3", tmp_path / "model", hidden_size=64, num_layers=2, num_heads=2,
                          num_kv_heads=1, head_dim=32, intermediate_size=128, vocab_size=300, max_position=256)
    data = prepare_dataset("synthetic:world-mc", tmp_path / "data", n_train=32, n_validation=8, n_test=8,
                           n_names=20, corpus_docs=10)
    c = load_run_config({"model": {"source": f"local:{model}"}, "data": {"source": f"jsonl:{data}"},
                         "batch_size": 8, "seq_len": 96, "threads": 1, "method": {"name": "grades", "tau": 1e-9}})
    got = compare(c, measure(c, 3), model_dir=model)
    for part in ("parameters", "gradients", "grades_state"):
        assert got["estimate"][part] == got["measured"][part], part
    assert got["ratio_by_part"]["optimizer"] == pytest.approx(1.0, abs=1e-3)  # AdamW's step counters
    assert 0.8 < got["ratio_by_part"]["activations"] < 1.2, got
    assert got["measured_peak"] is None or got["measured_peak"] > 0
