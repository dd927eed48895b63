"""Mixture-of-experts models: discovery, coverage, FLOPs with top-k routing, freezing
expert stacks mid-run, LoRA on experts (tiny Qwen3-MoE, Mixtral, Qwen2-MoE built from
configs, transformers 5.x: experts stored as 3-D parameters)."""

from __future__ import annotations

import warnings

import pytest
import torch
from tinymodels import add_lora, batch, build_tiny
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from grades.components import discover_components, expert_lora_targets, summarize
from grades.config import GradESConfig
from grades.controller import Controller
from grades.coverage import UntrackedWeightsError, coverage
from grades.flops import FlopsMeter, step_flops
from grades.methods import build_method
from grades.methods.base import Decision, StoppingMethod
from grades.methods.grades import GradES
from grades.savings import merge_adapters

B, S = 2, 16
MOE = ("qwen3_moe", "mixtral")


def tiny(arch: str, **over):
    model = build_tiny(arch, attn_implementation="eager", **over)
    model.train()
    return model


def lora_experts(model, r: int = 4):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                     target_parameters=expert_lora_targets(model))
    model = get_peft_model(model, cfg)
    with torch.no_grad():  # B starts at zero; give it values so that A gets gradients too
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    return model


def counted(model) -> tuple[float, float]:
    """(forward+backward, forward) FLOPs as FlopCounterMode counts them."""
    b = batch(B, S)
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as mode:
        model(**b).loss.backward()
    with torch.no_grad(), FlopCounterMode(display=False) as fwd:
        model(**b)
    return mode.get_total_flops(), fwd.get_total_flops()


def check_flops(model):
    got = step_flops(model, B, S)
    total, fwd = counted(model)
    assert got.total == pytest.approx(total, rel=1e-9), (got.total, total)
    assert got.forward == pytest.approx(fwd, rel=1e-9)
    return got


# ------------------------------------------------------------------ discovery
@pytest.mark.parametrize("arch", MOE)
def test_discovery_one_component_per_expert_stack_and_router(arch):
    model = tiny(arch)
    comps = discover_components(model)
    assert summarize(comps) == {"language": 14, "language.attn": 8, "language.mlp": 6, "total": 14,
                                "params": sum(c.numel for c in comps)}
    layer0 = {c.type: c for c in comps if c.layer == 0}
    assert set(layer0) == {"q", "k", "v", "o", "router", "expert_gate_up", "expert_down"}
    gu = layer0["expert_gate_up"]
    assert gu.name == "model.layers.0.mlp.experts.gate_up_proj" and gu.experts == 4 and gu.param_name == "gate_up_proj"
    assert gu.params == [model.model.layers[0].mlp.experts.gate_up_proj] and gu.params[0].ndim == 3
    assert layer0["router"].name == "model.layers.0.mlp.gate" and layer0["router"].params[0].shape == (4, 64)


def test_shared_experts_are_typed():
    comps = discover_components(tiny("qwen2_moe"))
    assert {c.type for c in comps if c.layer == 0} == {"q", "k", "v", "o", "router", "expert_gate_up", "expert_down",
                                                      "shared_gate", "shared_up", "shared_down", "shared_expert_gate"}


@pytest.mark.parametrize("arch", ["qwen3", "llama", "qwen3_moe", "mixtral", "qwen2_moe"])
def test_coverage_is_complete(arch):
    model = tiny(arch)
    cov = coverage(model, discover_components(model))
    assert cov.complete and cov.share == 1.0 and cov.tracked_params == cov.block_params > 0
    # what counts: the blocks' >= 2-D non-bias parameters; norms and embeddings are outside the share
    n_matrices = sum(p.numel() for n, p in model.named_parameters() if ".layers." in n and p.ndim >= 2)
    assert cov.block_params == n_matrices
    assert cov.outside_params == sum(p.numel() for p in model.parameters()) - n_matrices - sum(
        p.numel() for n, p in model.named_parameters() if ".layers." in n and p.ndim < 2)


def test_coverage_under_lora_counts_the_adapters():
    model = lora_experts(tiny("qwen3_moe"))
    comps = discover_components(model)
    assert {c.type for c in comps} == {"q", "k", "v", "o", "expert_gate_up", "expert_down"}
    cov = coverage(model, comps)
    assert cov.complete and cov.block_params == sum(p.numel() for p in model.parameters() if p.requires_grad)
    dense = add_lora(tiny("qwen3"))
    assert coverage(dense, discover_components(dense)).complete


def _with_unknown_matrices():
    model = tiny("qwen3")
    for layer in model.model.layers:  # a matrix GradES has no name for, inside every block
        layer.mlp.mystery = nn.Linear(64, 64, bias=True)
    return model


def test_refuses_untracked_matrices_and_names_them():
    model = _with_unknown_matrices()
    with pytest.raises(UntrackedWeightsError) as e:
        Controller(model, None, GradES(GradESConfig(tau=1.0)), 10)
    msg = str(e.value)
    assert "model.layers.0.mlp.mystery.weight" in msg and "model.layers.1.mlp.mystery.weight" in msg
    assert "allow_untracked" in msg and "mystery.bias" not in msg  # biases are not weight matrices


def test_refuses_a_real_hybrid_model():
    import transformers as tf

    cfg = tf.JambaConfig(vocab_size=128, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2,
                         attn_layer_period=2, attn_layer_offset=1, expert_layer_period=2, expert_layer_offset=1,
                         mamba_d_state=4)
    with pytest.raises(UntrackedWeightsError, match=r"model\.layers\.0\.mamba\.in_proj\.weight"):
        Controller(tf.JambaForCausalLM(cfg), None, GradES(GradESConfig(tau=1.0)), 10)


def test_allow_untracked_starts_and_reports(tmp_path):
    model = _with_unknown_matrices()
    method = build_method({"name": "grades", "tau": 1.0, "allow_untracked": True})  # the run config's method block
    with pytest.warns(UserWarning, match="mystery"):
        ctl = Controller(model, None, method, 10)
    cov = ctl.summary()["coverage"]
    assert cov["untracked"] == ["model.layers.0.mlp.mystery.weight", "model.layers.1.mlp.mystery.weight"]
    assert 0 < cov["share"] < 1 and cov["untracked_params"] == 2 * 64 * 64
    from grades.schema import validate

    cfg = validate({"name": "x", "model": {"source": "tiny:qwen3"}, "data": {"source": "synthetic:world-mc"},
                    "method": {"name": "grades", "tau": 1.0, "allow_untracked": True}}, "run", "run config")
    assert build_method(cfg["method"]).config.allow_untracked is True


def test_allow_untracked_must_be_a_bool():
    from grades.config import ConfigError

    with pytest.raises(ConfigError, match="allow_untracked"):
        GradESConfig(tau=1.0, allow_untracked="yes")


# ---------------------------------------------------------------------- FLOPs
@pytest.mark.parametrize("arch", MOE + ("qwen2_moe",))
@pytest.mark.parametrize("impl", ["eager", "batched_mm"])
def test_flops_match_flop_counter_with_top_k_routing(arch, impl):
    model = tiny(arch, experts_implementation=impl)
    got = check_flops(model)
    # the experts count for the 2 of 4 experts each token uses
    comps = discover_components(model)
    stacks = sum(c.numel for c in comps if c.type.startswith("expert_"))
    assert got.by_kind_pass["mlp"]["weight_grad"] >= 2 * B * S * 2 * stacks / 4
    freeze = [c for c in comps if c.type in ("expert_gate_up", "router") or c.layer == 0]
    for c in freeze:
        for p in c.params:
            p.requires_grad_(False)
    model.get_input_embeddings().weight.requires_grad_(False)
    for n, p in model.named_parameters():
        if "layers.0" in n:
            p.requires_grad_(False)
    frozen = check_flops(model)
    assert frozen.total < got.total


def test_flops_lora_on_experts():
    model = lora_experts(tiny("qwen3_moe"))
    got = check_flops(model)
    assert build_plan_per_call(model) > 0
    comps = discover_components(model)
    for c in comps:
        if c.type == "expert_down" and c.layer == 1 or c.type == "expert_gate_up" and c.layer == 0:
            c.params[0].requires_grad_(False)  # A only: B still trains
    check_flops(model)
    for c in comps:
        if c.type.startswith("expert_"):
            for p in c.params:
                p.requires_grad_(False)
    assert check_flops(model).total < got.total


def build_plan_per_call(model) -> float:
    from grades.flops import build_plan

    return sum(build_plan(model).per_call.values())


# ------------------------------------------------------ freezing expert stacks
class FreezeStacksAt(StoppingMethod):
    """Freezes every expert stack at one step (a decision like GradES's, through the same hook)."""

    name = "freeze-stacks"

    def __init__(self, step: int) -> None:
        self.step = step

    def before_optimizer_step(self, step: int) -> Decision | None:
        if step != self.step:
            return None
        return Decision(freeze=[i for i, c in enumerate(self.ctx.components) if c.type.startswith("expert_")])


def test_expert_stacks_freeze_mid_run_release_state_and_cut_flops():
    torch.manual_seed(0)
    model = tiny("qwen3_moe")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    ctl = Controller(model, opt, FreezeStacksAt(3), 10)
    meter = FlopsMeter(model)
    stacks = [c for c in ctl.components if c.type.startswith("expert_")]
    stack_params = [p for c in stacks for p in c.params]
    flops = []
    for step in range(1, 6):
        model(**batch(B, S, seed=step)).loss.backward()
        flops.append(meter.add_step(B, S, version=ctl.freezer.version))
        if step == 3:
            assert all(p in opt.state for p in stack_params)  # Adam moments held until the freeze
        ctl.before_optimizer_step(step)
        opt.step()
        opt.zero_grad(set_to_none=True)
        ctl.after_optimizer_step(step)
    assert all(not p.requires_grad for p in stack_params)
    assert all(p not in opt.state for p in stack_params)
    assert ctl.freezer.released_optimizer_bytes >= 2 * 4 * sum(p.numel() for p in stack_params)  # Adam moments
    assert flops[3] < flops[2] == flops[0] and flops[3] == flops[4]
    assert flops[3] == pytest.approx(step_flops(model, B, S).total) == pytest.approx(counted(model)[0])
    assert [(e.component, e.step) for e in ctl.events] == [(c.name, 3) for c in stacks]
    assert ctl.summary()["coverage"]["share"] == 1.0


def test_lora_expert_adapters_freeze_and_merge():
    from peft.tuners.lora import ParamWrapper

    model = lora_experts(tiny("qwen3_moe"))
    comps = discover_components(model)
    wrapped = [c for c in comps if isinstance(c.module, ParamWrapper)]
    assert len(wrapped) == 4 and all(c.lora and c.adapter == "default" for c in wrapped)
    b = batch(B, S)
    before = model(**b).logits.detach()
    with torch.no_grad():
        for c in wrapped:
            merge_adapters(c.module, [c.adapter])
    torch.testing.assert_close(model(**b).logits, before, rtol=1e-4, atol=1e-5)
    assert step_flops(model, B, S).total == pytest.approx(counted(model)[0], rel=1e-9)


def test_expert_lora_targets():
    assert expert_lora_targets(tiny("mixtral")) == ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
    with pytest.raises(ValueError, match="no expert stacks"):
        expert_lora_targets(tiny("qwen3"))


def test_refuses_expert_lora_on_a_peft_without_target_parameters(monkeypatch):
    import dataclasses

    import peft

    from grades.components import ExpertLoRAUnsupported

    real = dataclasses.fields

    def fields(cls):
        return tuple(f for f in real(cls) if not (cls is peft.LoraConfig and f.name == "target_parameters"))

    monkeypatch.setattr(dataclasses, "fields", fields)
    with pytest.raises(ExpertLoRAUnsupported, match="target_parameters"):
        expert_lora_targets(tiny("mixtral"))


def test_no_warning_when_coverage_is_complete():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        Controller(tiny("mixtral"), None, GradES(GradESConfig(tau=1.0)), 10)


def test_gpt_oss_transposed_stacks_with_biases():
    """GPT-OSS stores its stacks transposed (hidden x out per expert) with per-expert biases,
    and its router has a bias: all tracked, FLOPs exact."""
    import transformers as tf

    torch.manual_seed(0)
    cfg = tf.GptOssConfig(vocab_size=128, hidden_size=64, intermediate_size=32, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_local_experts=4,
                          num_experts_per_tok=2, max_position_embeddings=64, attn_implementation="eager",
                          experts_implementation="eager")
    model = tf.GptOssForCausalLM(cfg)
    model.train()
    comps = discover_components(model)
    layer0 = {c.type: c for c in comps if c.layer == 0}
    assert [p.shape for p in layer0["expert_gate_up"].params] == [(4, 64, 64), (4, 64)]
    assert [p.shape for p in layer0["router"].params] == [(4, 64), (4,)]
    assert coverage(model, comps).complete
    check_flops(model)


def test_run_config_lora_targets_experts():
    """`@experts` in lora.targets (the harness's run config) adapts every expert stack too."""
    from grades.config import ConfigError
    from grades.models import apply_lora

    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "targets": ["q_proj", "@experts"], "adapter_name": "default"}
    model = apply_lora(build_tiny("qwen3_moe"), lora)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("experts" in n and "lora_A" in n for n in names), names
    assert any("q_proj.lora_A" in n for n in names)
    assert coverage(model, discover_components(model)).share == 1.0
    with pytest.raises(ConfigError, match="lora.dropout = 0.1.*set lora.dropout: 0"):
        apply_lora(build_tiny("qwen3_moe"), {**lora, "dropout": 0.1})
    with pytest.raises(ConfigError, match="@experts.*no expert stacks"):
        apply_lora(build_tiny("qwen3"), lora)
