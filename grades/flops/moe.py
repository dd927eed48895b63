"""The mixture-of-experts branch of a decoder block, for the FLOPs walk: the router, the
top-k routed expert stacks (plain, or LoRA-adapted through peft's ``ParamWrapper``) and
shared experts.

Accounting, per position (``T`` positions, ``k`` experts per token, ``E`` experts):

* **router** ``logits = x R^T`` (``R``: ``E x hidden``): a projection like any other,
  ``2 hidden E`` forward, the input gradient if ``x`` requires grad, the weight gradient
  if ``R`` does. Softmax, top-k and the weighting of the expert outputs are not matmuls.
* **routed expert stacks** (``gate_up_proj`` / ``up_proj``, then ``down_proj``): each
  token goes through the ``k`` experts it is routed to, so a stack of per-expert shape
  ``out x in`` costs ``2 k in out`` per position forward, the same again for the input
  gradient when its input requires grad, and again for the weight gradient when the
  stack (or its LoRA adapter) trains. This is what the eager and ``batched_mm``
  implementations of transformers compute, and what ``FlopCounterMode`` counts for them
  (it does not count ``grouped_mm``, whose arithmetic is the same).
* **LoRA on a stack** (``target_parameters``): peft forms ``W + s B A`` for all ``E``
  experts, a batched product of ``2 E out in r`` FLOPs per call (not per position),
  twice per forward in peft 0.17-0.21 (``torch.nn.utils.parametrize`` evaluates a
  parametrization once when peft registers it, to check its shape, and once for the
  forward), and back-propagates into ``B`` and ``A`` once (the same ``2 E out in r`` for
  each factor that trains) — reported under ``per_call`` of the plan. The stack's matmuls then count
  as above, with the weight gradient present while the adapter trains.
* **shared experts** are a dense MLP over every position; Qwen2-MoE's scalar
  ``shared_expert_gate`` is a ``hidden x 1`` projection.

A branch output requires grad if the routed experts' output does, or the routing
weights do (router trainable or its input requiring grad), or the shared experts' does.
"""

from __future__ import annotations

from torch import nn

from ..components import MOE_TYPES, ROUTER, Component
from .plan import FORWARD, INPUT_GRAD, MLP, WEIGHT_GRAD
from .tally import Tally, projection

_EXPERT_TYPES = ("expert_gate_up", "expert_up", "expert_down")
# peft registers the LoRA parametrization of a ParamWrapper at every forward, and torch
# evaluates it once then to check it (see the module docstring), once more for the forward
FORMS_PER_FORWARD = 2


def is_moe(comps: list[Component]) -> bool:
    """Whether a block's components form an MoE branch."""
    return any(c.type in MOE_TYPES for c in comps)


def top_k(comps: list[Component]) -> int:
    """Experts per token, read from the router (``top_k``) or the experts' config."""
    for c in sorted((c for c in comps if c.type in MOE_TYPES), key=lambda c: c.type != ROUTER):
        holder = _holder(c)
        for obj in (holder, getattr(holder, "config", None)):
            for attr in ("top_k", "num_experts_per_tok", "moe_top_k"):
                k = getattr(obj, attr, None)
                if isinstance(k, int) and k > 0:
                    return k
    raise ValueError("cannot read the number of experts per token (top_k) of an MoE block: "
                     f"{[c.name for c in comps]}")


def _holder(c: Component) -> nn.Module:
    """The module that owns the component's parameter (under LoRA, the wrapped one)."""
    return c.module.get_base_layer() if c.lora else c.module


def _lora_active(wrapper: nn.Module) -> list[str]:
    if getattr(wrapper, "disable_adapters", False) or getattr(wrapper, "merged", False):
        return []
    return [a for a in wrapper.active_adapters if a in wrapper.lora_A]


def _param_matmul(t: Tally, c: Component, per_position: float, x_rg: bool) -> bool:
    """A matmul with a parameter-level component's weight (an expert stack or a router)
    over every position, ``per_position`` FLOPs per position forward, plus, under
    ``ParamWrapper`` LoRA, forming the adapted weight once per call; returns whether its
    output requires grad."""
    param = getattr(_holder(c), c.param_name)
    w_rg = param.requires_grad
    bias = getattr(_holder(c), "bias" if c.param_name == "weight" else f"{c.param_name}_bias", None)
    b_rg = isinstance(bias, nn.Parameter) and bias.requires_grad
    if c.lora:
        n_exp = max(1, c.experts)
        per_expert = param.numel() // n_exp
        for name in _lora_active(c.module):
            a, b = c.module.lora_A[name].weight, c.module.lora_B[name].weight
            f = 2.0 * per_expert * (a.shape[0] // n_exp) * n_exp  # 2 E out in r
            t.add_call(MLP, FORWARD, FORMS_PER_FORWARD * f)
            t.add_call(MLP, WEIGHT_GRAD, f * (a.requires_grad + b.requires_grad))
            w_rg = w_rg or a.requires_grad or b.requires_grad
    t.add(MLP, FORWARD, per_position)
    if x_rg:
        t.add(MLP, INPUT_GRAD, per_position)
    if w_rg:
        t.add(MLP, WEIGHT_GRAD, per_position)
    return x_rg or w_rg or b_rg


def moe_branch(t: Tally, comps: list[Component], x_rg: bool) -> bool:
    """Account the MoE branch of one block; returns whether its output requires grad."""
    by_type: dict[str, Component] = {}
    for c in comps:  # LoRA: one component per adapter on the same parameter
        by_type.setdefault(c.type, c)
    out_rg = False
    if any(typ in by_type for typ in _EXPERT_TYPES):
        k = top_k(comps)
        r_rg = False
        if ROUTER in by_type:
            router = by_type[ROUTER]
            if router.lora and not hasattr(router.module, "parameter_name"):  # a LoRA-wrapped nn.Linear router
                r_rg = projection(t, MLP, router.module, x_rg)
            else:
                n_exp, hidden = getattr(_holder(router), router.param_name).shape
                r_rg = _param_matmul(t, router, 2.0 * n_exp * hidden, x_rg)
        h_rg = x_rg
        for typ in _EXPERT_TYPES:  # the order of the computation: gate_up / up, then down
            if typ in by_type:
                c = by_type[typ]
                per_expert = getattr(_holder(c), c.param_name).numel() // max(1, c.experts)
                h_rg = _param_matmul(t, c, 2.0 * k * per_expert, h_rg)
        out_rg = h_rg or r_rg
    if "shared_down" in by_type:  # a dense MLP over every position, optionally scaled by a scalar gate
        if "shared_gate_up" in by_type:
            act_rg = projection(t, MLP, by_type["shared_gate_up"].module, x_rg)
        else:
            act_rg = False
            for typ in ("shared_gate", "shared_up"):
                if typ in by_type:
                    act_rg = projection(t, MLP, by_type[typ].module, x_rg) or act_rg
        s_rg = projection(t, MLP, by_type["shared_down"].module, act_rg)
        if "shared_expert_gate" in by_type:
            s_rg = projection(t, MLP, by_type["shared_expert_gate"].module, x_rg) or s_rg
        out_rg = out_rg or s_rg
    return out_rg
