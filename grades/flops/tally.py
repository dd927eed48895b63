"""Counting primitives of the FLOPs walk: a :class:`Tally` of cost coefficients and the
cost of one projection, plain or PEFT-LoRA-wrapped (the rules are in :mod:`grades.flops`)."""

from __future__ import annotations

import torch
from torch import nn

from .plan import FORWARD, INPUT_GRAD, WEIGHT_GRAD, Key


class Tally:
    """Cost coefficients being collected: per position, per ``seq_len**2`` of a sequence,
    and per call (work done once per forward+backward whatever the batch, e.g. forming
    a LoRA-adapted expert stack)."""

    def __init__(self) -> None:
        self.per_position: dict[Key, float] = {}
        self.per_sequence_sq: dict[Key, float] = {}
        self.per_call: dict[Key, float] = {}

    def add(self, kind: str, pas: str, flops: float, *, quadratic: bool = False) -> None:
        d = self.per_sequence_sq if quadratic else self.per_position
        d[(kind, pas)] = d.get((kind, pas), 0.0) + flops

    def add_call(self, kind: str, pas: str, flops: float) -> None:
        self.per_call[(kind, pas)] = self.per_call.get((kind, pas), 0.0) + flops


def trainable(module: nn.Module | None) -> bool:
    """Whether any parameter of ``module`` requires grad (False for None)."""
    return module is not None and any(p.requires_grad for p in module.parameters())


def is_lora(module: nn.Module) -> bool:
    """A PEFT LoRA layer (``lora_A`` / ``lora_B`` module dicts)."""
    return isinstance(getattr(module, "lora_A", None), nn.ModuleDict) and isinstance(
        getattr(module, "lora_B", None), nn.ModuleDict)


def dense(t: Tally, kind: str, lin: nn.Module, x_rg: bool) -> bool:
    """One plain matmul over every position; returns whether its output requires grad."""
    w = lin.weight
    n_in = getattr(lin, "in_features", None) or w.shape[-1]
    n_out = getattr(lin, "out_features", None) or w.shape[0]
    f = 2.0 * n_in * n_out
    t.add(kind, FORWARD, f)
    if x_rg:
        t.add(kind, INPUT_GRAD, f)
    if w.requires_grad:
        t.add(kind, WEIGHT_GRAD, f)
    bias = getattr(lin, "bias", None)
    return x_rg or w.requires_grad or (isinstance(bias, torch.Tensor) and bias.requires_grad)


def projection(t: Tally, kind: str, mod: nn.Module, x_rg: bool) -> bool:
    """A projection, plain or PEFT-LoRA-wrapped; returns whether its output requires grad."""
    if not is_lora(mod):
        return dense(t, kind, mod, x_rg)
    out_rg = dense(t, kind, mod.get_base_layer(), x_rg)
    if getattr(mod, "disable_adapters", False) or getattr(mod, "merged", False):
        return out_rg
    for name in mod.active_adapters:
        if name in mod.lora_A:
            a_rg = dense(t, kind, mod.lora_A[name], x_rg)
            out_rg = dense(t, kind, mod.lora_B[name], a_rg) or out_rg
    return out_rg


def unwrap(model: nn.Module) -> nn.Module:
    """PEFT / DDP wrappers -> the transformers model."""
    for _ in range(5):
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            break
    return model
