"""Analytic FLOPs (grades.flops) against torch's FlopCounterMode on tiny models.

Every case measures one real forward+backward (``model(input_ids, labels=input_ids)
.loss.backward()``) under ``FlopCounterMode`` and compares it with the analytic count
for the model's live frozen set: the total, the forward/backward split, the
attention-score matmuls (``bmm``) and the lm_head.  Freezing patterns are chosen so
that autograd skips input-gradient matmuls (frozen embeddings and norms below frozen
matrices), weight-gradient matmuls, and parts of the QK^T / PV backward.
"""

from __future__ import annotations

import random

import pytest
import torch
from tinymodels import add_lora, batch, build_tiny
from torch.utils.flop_counter import FlopCounterMode

from grades.components import discover_components
from grades.flops import FlopsBreakdown, FlopsMeter, build_plan, forward_flops, step_flops
from grades.freezer import freeze_params

B, S = 2, 16
REL = 0.01


def tiny(arch: str = "qwen3", layers: int = 3, **over):
    model = build_tiny(arch, num_hidden_layers=layers, attn_implementation="eager", **over)
    model.train()
    return model


def measure(model) -> dict[str, float]:
    """FLOPs of one forward+backward, as FlopCounterMode counts them (plus a separate
    no-grad forward for the forward/backward split: the forward does not depend on
    the frozen set)."""
    b = batch(B, S)
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as mode:
        model(input_ids=b["input_ids"], labels=b["labels"]).loss.backward()
    with torch.no_grad(), FlopCounterMode(display=False) as fwd:
        model(input_ids=b["input_ids"], labels=b["labels"])
    counts = mode.get_flop_counts()
    total = mode.get_total_flops()
    return {
        "total": total,
        "forward": fwd.get_total_flops(),
        "backward": total - fwd.get_total_flops(),
        "bmm": sum(v for op, v in counts["Global"].items() if "bmm" in str(op)),
        "lm_head": sum(sum(c.values()) for name, c in counts.items() if name.endswith(".lm_head")),
    }


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1.0)


def check(model) -> FlopsBreakdown:
    """Analytic == measured (within REL) on every reported axis."""
    got = step_flops(model, B, S)
    want = measure(model)
    assert rel(got.total, want["total"]) <= REL, (got.total, want["total"])
    assert rel(got.forward, want["forward"]) <= REL, (got.forward, want["forward"])
    assert rel(got.input_grad + got.weight_grad, want["backward"]) <= REL
    assert rel(got.attention, want["bmm"]) <= REL, (got.attention, want["bmm"])
    assert rel(got.lm_head, want["lm_head"]) <= REL, (got.lm_head, want["lm_head"])
    assert got.total == pytest.approx(sum(got.by_kind.values()))
    assert got.total == pytest.approx(got.forward + got.input_grad + got.weight_grad)
    return got


def freeze(model, *patterns: str) -> None:
    """Freeze every parameter whose name contains one of ``patterns``."""
    for n, p in model.named_parameters():
        if any(s in n for s in patterns):
            p.requires_grad_(False)


def unfreeze(model, *patterns: str) -> None:
    for n, p in model.named_parameters():
        if any(s in n for s in patterns):
            p.requires_grad_(True)


# ------------------------------------------------------------ (a) unfrozen
def test_unfrozen_qwen3():
    model = tiny()
    got = check(model)
    # full fine-tuning: every matrix computes forward, input and weight gradients
    matrices_forward = got.forward - got.by_kind_pass["attention_scores"]["forward"]
    assert got.input_grad > 0 and got.weight_grad == pytest.approx(matrices_forward)


# ------------------------------------------------------ (b) frozen matrices
FROZEN_CASES = {
    # GradES in full fine-tuning: embeddings and norms keep training
    "layer0": ["layers.0.self_attn.", "layers.0.mlp."],
    "layer0_and_kv1": ["layers.0.self_attn.", "layers.0.mlp.",
                       "layers.1.self_attn.k_proj", "layers.1.self_attn.v_proj"],
    # nothing trainable below: input gradients of the lowest matrices are skipped
    "bottom_frozen": ["embed_tokens", "norm", "layers.0.", "layers.1.self_attn.k_proj", "layers.1.self_attn.v_proj"],
    "mix": ["embed_tokens", "layernorm", "model.norm", "layers.0.self_attn.q_proj", "layers.0.self_attn.k_",
            "layers.0.mlp.gate_proj", "layers.1.self_attn.o_proj", "layers.1.mlp.down_proj", "layers.2.mlp"],
    "top_only": ["embed_tokens", "norm", "layers.0.", "layers.1.", "layers.2.self_attn"],
    "all_but_head": ["embed_tokens", "norm", "layers."],
}


@pytest.mark.parametrize("case", sorted(FROZEN_CASES))
def test_frozen_qwen3(case):
    model = tiny()
    freeze(model, *FROZEN_CASES[case])
    check(model)


def test_qk_norm_only_path():
    """Only layer 1's q_norm (and a matrix above) trainable: in layer 1 attention
    computes dQ and dP but not dK or dV; layer 2 computes all four; layer 0 none."""
    model = tiny()
    freeze(model, "")
    unfreeze(model, "layers.1.self_attn.q_norm", "layers.2.mlp.up_proj")
    got = check(model)
    one_matmul = 2 * B * 4 * S * S * 16  # 4 heads of 16
    assert got.by_kind_pass["attention_scores"]["input_grad"] == (2 + 4) * one_matmul


def test_grades_components_frozen():
    """Freezing through GradES' own components and freezer."""
    model = tiny()
    freeze(model, "embed_tokens", "norm")
    comps = discover_components(model)
    for c in comps:
        if c.layer == 0 or (c.layer == 1 and c.type in ("k", "v")) or (c.layer == 2 and c.kind == "mlp"):
            freeze_params(c.params)
    check(model)


@pytest.mark.parametrize("seed", range(4))
def test_random_masks_qwen3(seed):
    model = tiny()
    rng = random.Random(seed)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(rng.random() < 0.4)
    params[-1].requires_grad_(True)
    check(model)


# ------------------------------------------------------------------ (c) LoRA
def test_lora_qwen3():
    model = add_lora(tiny(), adapter_name="grades")
    got = check(model)
    # base weights frozen: no weight gradient outside the adapters
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_" not in n)
    assert got.by_kind_pass["lm_head"]["weight_grad"] == 0


def test_lora_qwen3_partially_frozen():
    model = add_lora(tiny(), adapter_name="grades")
    comps = discover_components(model)
    assert all(c.lora and c.adapter == "grades" for c in comps)
    for c in comps:
        if c.layer == 0 or (c.layer == 1 and c.type in ("k", "v", "down")):
            freeze_params(c.params)
    # one A and one B alone
    model.base_model.model.model.layers[2].self_attn.q_proj.lora_A["grades"].weight.requires_grad_(False)
    model.base_model.model.model.layers[2].mlp.up_proj.lora_B["grades"].weight.requires_grad_(False)
    check(model)


@pytest.mark.parametrize("seed", range(3))
def test_random_masks_lora(seed):
    model = add_lora(tiny(), adapter_name="grades")
    rng = random.Random(seed)
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in lora:
        p.requires_grad_(rng.random() < 0.5)
    lora[-1].requires_grad_(True)
    check(model)


# ------------------------------------------------------- (d) Llama and Phi-3
@pytest.mark.parametrize("arch", ["llama", "phi3"])
def test_other_architectures(arch):
    model = tiny(arch)
    check(model)
    types = {c.type for c in discover_components(model)}
    if arch == "phi3":
        assert {"qkv", "gate_up"} <= types
    freeze(model, "embed_tokens", "norm", "layers.0.", "layers.1.mlp")
    check(model)


@pytest.mark.parametrize("seed", range(2))
def test_random_masks_phi3(seed):
    model = tiny("phi3")
    rng = random.Random(seed)
    params = list(model.parameters())
    for p in params:
        p.requires_grad_(rng.random() < 0.4)
    params[-1].requires_grad_(True)
    check(model)


def test_lora_phi3_fused():
    from peft import LoraConfig, get_peft_model

    model = tiny("phi3")
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0,
                     target_modules=["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])
    model = get_peft_model(model, cfg, adapter_name="fused")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    check(model)
    for c in discover_components(model):
        if c.layer == 0 or c.type == "gate_up":
            freeze_params(c.params)
    check(model)


# ------------------------------------------------------- (e) tied embeddings
def test_tied_embeddings():
    model = tiny(tie_word_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    got = check(model)
    assert got.by_kind_pass["lm_head"]["weight_grad"] > 0
    # freezing the shared matrix drops the lm_head weight gradient and, with the
    # norms and layer 0 frozen, the input gradients of layer 0
    freeze(model, "embed_tokens", "norm", "layers.0.")
    got = check(model)
    assert got.by_kind_pass["lm_head"]["weight_grad"] == 0


# ------------------------------------------------------------- forward only
@pytest.mark.parametrize("arch", ["qwen3", "phi3"])
def test_forward_flops_matches_no_grad_pass(arch):
    model = tiny(arch)
    freeze(model, "layers.0.")
    b = batch(3, 12)
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(**b)
    assert rel(forward_flops(model, 3, 12), fc.get_total_flops()) <= REL
    assert forward_flops(model, 3, 12) == step_flops(model, 3, 12).forward


# -------------------------------------------------------------------- meter
def test_meter_sums_and_recomputes(monkeypatch):
    import grades.flops as flops_mod

    model = tiny(layers=2)
    meter = FlopsMeter(model)
    walks = []
    real = flops_mod.build_plan
    monkeypatch.setattr(flops_mod, "build_plan", lambda m: walks.append(1) or real(m))

    expected = 0.0
    for bs, sl in [(2, 16), (3, 8), (2, 16)]:
        want = step_flops(model, bs, sl).total
        expected += want
        before = len(walks)
        assert meter.add_step(bs, sl) == pytest.approx(want)
        assert len(walks) - before == (1 if meter.steps == 1 else 0)  # same frozen set: no walk
    assert meter.recomputes == 1
    assert meter.total == pytest.approx(expected)

    full_step = step_flops(model, 2, 16).total
    comps = discover_components(model)
    freeze_params([p for c in comps if c.layer == 0 for p in c.params])
    frozen_step = step_flops(model, 2, 16)
    assert frozen_step.total < full_step
    meter.add_step(batch(2, 16)["input_ids"])  # tensor form
    assert meter.recomputes == 2
    expected += frozen_step.total
    assert meter.total == pytest.approx(expected)
    assert meter.steps == 4 and meter.positions == 2 * 16 + 3 * 8 + 2 * 16 + 2 * 16

    by_kind = meter.by_kind
    assert set(by_kind) == {"attn", "mlp", "attention_scores", "lm_head"}
    assert sum(by_kind.values()) == pytest.approx(meter.total)
    d = meter.to_dict()
    assert d["total"] == pytest.approx(meter.total) and d["steps"] == 4 and d["recomputes"] == 2
    assert d["forward"] + d["input_grad"] + d["weight_grad"] == pytest.approx(d["total"])


def test_meter_version_key():
    """Keyed on ``Freezer.version`` the flags are not even read: a change is seen only
    when the version moves (as it does on every freeze)."""
    from grades.freezer import Freezer

    model = tiny(layers=2)
    freezer = Freezer(discover_components(model))
    meter = FlopsMeter(model)
    full = meter.add_step(2, 16, version=freezer.version)
    freeze(model, "layers.0.mlp.")  # behind the freezer's back: stale by contract
    assert meter.add_step(2, 16, version=freezer.version) == full
    assert meter.recomputes == 1
    freezer.freeze(0, step=3)  # layers.0.self_attn.q_proj
    cheaper = meter.add_step(2, 16, version=freezer.version)
    assert cheaper < full and meter.recomputes == 2
    assert cheaper == pytest.approx(step_flops(model, 2, 16).total)
    assert meter.add_step(2, 16, version=freezer.version) == cheaper and meter.recomputes == 2
    assert meter.plan == build_plan(model)
