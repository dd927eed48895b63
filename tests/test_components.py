import pytest
import torch

from grades.components import UnknownArchitectureError, discover_components, summarize
from tinymodels import add_lora, build_tiny


@pytest.mark.parametrize("arch,per_layer", [("qwen3", 7), ("llama", 7), ("mistral", 7), ("phi3", 4)])
def test_discovers_every_projection(arch, per_layer):
    model = build_tiny(arch)
    comps = discover_components(model)
    assert len(comps) == 2 * per_layer
    assert {c.layer for c in comps} == {0, 1}
    assert all(c.tower == "language" for c in comps)
    # every tracked parameter is a real 2-D weight of the model, counted once
    ids = [id(p) for c in comps for p in c.params]
    assert len(ids) == len(set(ids))
    named = {id(p): n for n, p in model.named_parameters()}
    assert all(id(p) in named for c in comps for p in c.params)
    assert summarize(comps)["params"] == sum(c.numel for c in comps)


def test_phi3_fused_projections_are_typed():
    comps = discover_components(build_tiny("phi3"))
    types = sorted({c.type for c in comps})
    assert types == ["down", "gate_up", "o", "qkv"]
    qkv = next(c for c in comps if c.type == "qkv")
    h, kv = 64, 2 * (64 // 4)
    assert qkv.params[0].shape == (h + 2 * kv, h)
    assert qkv.kind == "attn" and next(c for c in comps if c.type == "gate_up").kind == "mlp"


def test_qwen3_kinds_and_types():
    comps = discover_components(build_tiny("qwen3"))
    layer0 = [c for c in comps if c.layer == 0]
    assert [c.type for c in layer0] == ["q", "k", "v", "o", "gate", "up", "down"]
    assert [c.kind for c in layer0] == ["attn"] * 4 + ["mlp"] * 3
    assert layer0[0].name == "model.layers.0.self_attn.q_proj"


@pytest.mark.parametrize("adapter", ["default", "my_adapter"])
def test_lora_pairs_any_adapter_name(adapter):
    model = add_lora(build_tiny("qwen3"), adapter_name=adapter, r=4)
    comps = discover_components(model)
    assert len(comps) == 14
    for c in comps:
        assert c.lora and c.adapter == adapter
        a, b = c.params
        assert a.shape[0] == 4 and b.shape[1] == 4  # A is r x in, B is out x r
        assert a.requires_grad and b.requires_grad
    # the frozen base weights are not components
    base = [p for n, p in model.named_parameters() if "base_layer" in n]
    tracked = {id(p) for c in comps for p in c.params}
    assert base and not any(id(p) in tracked for p in base)


def test_frozen_projection_not_tracked_in_trainable_mode():
    model = build_tiny("qwen3")
    model.model.layers[0].self_attn.q_proj.weight.requires_grad_(False)
    assert len(discover_components(model)) == 13
    assert len(discover_components(model, trainable_only=False)) == 14


def test_unknown_architecture_names_what_it_saw():
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.wq = torch.nn.Linear(4, 4)

    model = torch.nn.Sequential(torch.nn.ModuleList([Block(), Block()]))
    with pytest.raises(UnknownArchitectureError) as e:
        discover_components(model)
    msg = str(e.value)
    assert "wq" in msg and "Block" in msg and "q_proj" in msg
