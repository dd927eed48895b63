"""Find the trackable weight matrices of a transformer.

A *component* is one weight matrix GradES can monitor and freeze on its own: the
attention projections (q, k, v, o, or a fused qkv) and the MLP projections (gate, up,
down, or a fused gate_up; fc1/fc2 in vision towers) of every block, in the language
model and in any vision tower.  Under PEFT LoRA a component is the adapter pair
(A, B) that sits on such a projection, for whatever adapter name is active.

Structure is read from the module tree, never by splitting parameter names: blocks
are the children of an ``nn.ModuleList``; a block's projections are found by their
attribute name; the tower is decided by the module that owns the block list.
Projectors / mergers that sit between the towers (``multi_modal_projector``,
``merger``, ``connector``, Qwen3-VL's ``deepstack_merger_list``) are deliberately *not*
tracked: they are single small matrices outside the per-layer structure GradES is
defined on.  They keep training in whatever mode the run uses (all weights under full
fine-tuning; under LoRA only if a target name happens to match them, e.g. ``proj``,
``linear_fc1`` or ``all-linear``).  Patch embeddings are not tracked either.

Vision blocks the model never reads are left out: LLaVA-style models take their image
features from ``hidden_states[vision_feature_layer]`` (LLaVA-1.5: -2), so the blocks
after that layer get no gradient, can never train, and would otherwise stay
"unfrozen" for ever (their signal is undefined), keeping ``max_frozen_ratio: 1.0``
out of reach.  :func:`vision_layers_used` reads that from the model config.

Per family (transformers 5.x; ``V``/``L`` = vision/language layers), full fine-tuning:

=====================  =================================  ========  ===========
family                 vision block matrices              vision    language
=====================  =================================  ========  ===========
Qwen2-VL               qkv, proj, fc1, fc2                4 V       7 L
Qwen2.5-VL             qkv, proj, gate/up/down_proj       5 V       7 L
Qwen3-VL               qkv, proj, linear_fc1/fc2          4 V       7 L
Idefics3 / SmolVLM     q/k/v/out_proj, fc1, fc2           6 V       7 L
LLaVA (CLIP)           q/k/v/out_proj, fc1, fc2           6 V_used  7 L
=====================  =================================  ========  ===========

Mixture-of-experts blocks (Qwen3-MoE, Mixtral, OLMoE, Qwen2-MoE, DeepSeek-V2/V3, GPT-OSS,
and the other families transformers 5.x ships with the same layout) keep their experts
as 3-D parameters of one module (``experts.gate_up_proj``, ``experts.down_proj``, shape
``num_experts x out x in``, or ``x in x out`` where the module says ``is_transposed``).
A component is **one such 3-D parameter per layer** (type ``expert_gate_up``,
``expert_up`` or ``expert_down``; its bias, ``gate_up_proj_bias``, rides along), so a
freeze is exact: ``requires_grad=False`` on the whole stack, its optimizer state
released. Per-expert signals would need gradient masking inside one tensor and are not
offered. The router (the ``gate`` / ``router`` module beside the experts, a
``num_experts x hidden`` matrix) is a component of its own (type ``router``): it is
tracked and frozen like any matrix; once frozen, a token's choice of experts depends
only on its hidden state. Shared experts are ordinary projections (types
``shared_gate``, ``shared_up``, ``shared_down``) and Qwen2-MoE's ``shared_expert_gate``
is type ``shared_expert_gate``. Under PEFT LoRA with ``target_parameters`` a component
is the adapter pair peft puts on one 3-D parameter (:class:`peft.tuners.lora.ParamWrapper`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

LANGUAGE = "language"
VISION = "vision"

# attribute name of a projection inside a block -> (kind, canonical type)
_PROJECTIONS: dict[str, tuple[str, str]] = {
    # attention, language models (Llama, Qwen, Mistral, Phi-3 fused)
    "q_proj": ("attn", "q"),
    "k_proj": ("attn", "k"),
    "v_proj": ("attn", "v"),
    "o_proj": ("attn", "o"),
    "qkv_proj": ("attn", "qkv"),
    # attention, vision towers (Qwen2/2.5/3-VL fused qkv+proj, CLIP/SigLIP/Idefics3)
    "qkv": ("attn", "qkv"),
    "proj": ("attn", "o"),
    "out_proj": ("attn", "o"),
    # MLP
    "gate_proj": ("mlp", "gate"),
    "up_proj": ("mlp", "up"),
    "down_proj": ("mlp", "down"),
    "gate_up_proj": ("mlp", "gate_up"),
    "fc1": ("mlp", "up"),
    "fc2": ("mlp", "down"),
    "linear_fc1": ("mlp", "up"),
    "linear_fc2": ("mlp", "down"),
    # mixture of experts: the scalar gate of Qwen2-MoE's shared expert
    "shared_expert_gate": ("mlp", "shared_expert_gate"),
}

# 3-D expert stacks: parameter name -> canonical type (biases "<name>_bias" ride along)
EXPERT_PARAMS: dict[str, str] = {"gate_up_proj": "expert_gate_up", "up_proj": "expert_up",
                                 "down_proj": "expert_down"}
# the module beside the experts that scores them
ROUTER_NAMES = ("gate", "router")
ROUTER = "router"
# children of an MoE block holding shared (always-on) experts: their projections get a "shared_" type
SHARED_EXPERT_NAMES = ("shared_expert", "shared_experts", "shared_mlp")
_SHARED_TYPES = {"gate": "shared_gate", "up": "shared_up", "down": "shared_down", "gate_up": "shared_gate_up"}

# canonical order of types, for tables and figures
TYPE_ORDER = ["q", "k", "v", "qkv", "o", "gate", "up", "gate_up", "down", "router", "expert_gate_up", "expert_up",
              "expert_down", "shared_gate", "shared_up", "shared_gate_up", "shared_down", "shared_expert_gate"]
MOE_TYPES = frozenset({"router", "expert_gate_up", "expert_up", "expert_down", "shared_gate", "shared_up",
                       "shared_gate_up", "shared_down", "shared_expert_gate"})

# modules whose block lists belong to the vision tower
VISION_OWNERS = ("visual", "vision_tower", "vision_model", "vision_encoder", "vision")
# modules we never descend into for blocks (see module docstring)
SKIP_OWNERS = ("merger", "multi_modal_projector", "connector", "deepstack_merger_list", "projector")


@dataclass(eq=False)
class Component:
    """One trackable weight matrix (or LoRA A/B pair)."""

    name: str  # module path, e.g. "model.layers.3.self_attn.q_proj"
    layer: int  # block index within its tower
    kind: str  # "attn" | "mlp"
    type: str  # "q", "k", "v", "o", "qkv", "gate", "up", "down", "gate_up"
    tower: str  # "language" | "vision"
    params: list[nn.Parameter] = field(repr=False)
    module: nn.Module = field(repr=False)
    lora: bool = False
    adapter: str | None = None
    param_name: str | None = None  # expert stacks and routers: the parameter of ``module`` this is
    experts: int = 0  # expert stacks: how many experts the 3-D parameter holds

    @property
    def numel(self) -> int:
        return sum(p.numel() for p in self.params)

    @property
    def short(self) -> str:
        """Compact label: ``L3.q`` (language) or ``V3.qkv`` (vision)."""
        return f"{'V' if self.tower == VISION else 'L'}{self.layer}.{self.type}"

    def record(self) -> dict:
        """A JSON/CSV-friendly description (no tensors)."""
        return {
            "component": self.name,
            "layer": self.layer,
            "kind": self.kind,
            "type": self.type,
            "tower": self.tower,
            "params": self.numel,
            "lora": self.lora,
        }


class UnknownArchitectureError(ValueError):
    """Raised when no trackable matrices are found in a model."""


def _is_lora_layer(module: nn.Module) -> bool:
    return isinstance(getattr(module, "lora_A", None), nn.ModuleDict) and isinstance(
        getattr(module, "lora_B", None), nn.ModuleDict
    )


def _weight_params(module: nn.Module) -> list[nn.Parameter]:
    """The matrix (and its bias) of a plain projection."""
    out = []
    for attr in ("weight", "bias"):
        p = getattr(module, attr, None)
        if isinstance(p, nn.Parameter):
            out.append(p)
    return out


def _block_lists(model: nn.Module):
    """Yield (path, ModuleList, tower) for every list of transformer blocks."""
    for path, mod in model.named_modules():
        if not isinstance(mod, nn.ModuleList) or len(mod) == 0:
            continue
        parts = path.split(".") if path else []
        if any(p in SKIP_OWNERS for p in parts):
            continue
        # a block list's children contain projections (or expert stacks); LoRA's own
        # ModuleDicts never match. Hybrid stacks may start with a block of another kind.
        if not any(any(_projection_leaves(b)) or any(_param_leaves(b)) for b in mod):
            continue
        tower = VISION if any(p in VISION_OWNERS for p in parts) else LANGUAGE
        yield path, mod, tower


def block_lists(model: nn.Module) -> list[tuple[str, nn.ModuleList, str, int]]:
    """The model's lists of transformer blocks as (path, list, tower, blocks used).

    ``blocks used`` is how many leading blocks feed the output (all of them, except in a
    vision tower whose model reads an earlier layer: :func:`vision_layers_used`)."""
    lists = list(_block_lists(model))
    n_vision = sum(1 for _, _, t in lists if t == VISION)
    out = []
    for path, blocks, tower in lists:
        used = vision_layers_used(model, len(blocks)) if tower == VISION and n_vision == 1 else None
        out.append((path, blocks, tower, len(blocks) if used is None else used))
    return out


def _strip(rel: str) -> str:
    """A path inside a block without PEFT's ``base_layer`` hops (the module's own name)."""
    return ".".join(p for p in rel.split(".") if p != "base_layer")


def _param_leaves(block: nn.Module):
    """Yield (path in block, holder module, parameter name, type, LoRA wrapper or None) for
    every expert stack and router of an MoE block (see the module docstring).

    The path is the holder's, without PEFT's ``base_layer`` hops. A parameter adapted by
    PEFT (``target_parameters``: a ``ParamWrapper``; or a LoRA-wrapped linear router)
    comes with its wrapper, which carries the adapter pairs."""
    wrappers: dict[tuple[int, str], nn.Module] = {}
    slots = []
    for rel, sub in block.named_modules():
        if "lora_" in rel:
            continue
        if _is_lora_layer(sub):
            pname = getattr(sub, "parameter_name", None)
            wrappers[(id(sub.get_base_layer()), pname if isinstance(pname, str) else "weight")] = sub
            continue
        for pname, p in sub.named_parameters(recurse=False):
            slots.append((_strip(rel), sub, pname, p))
    holders = {rel for rel, _, pname, p in slots if pname in EXPERT_PARAMS and p.ndim == 3}
    parents = {rel.rsplit(".", 1)[0] if "." in rel else "" for rel in holders}
    for rel, sub, pname, p in slots:
        if rel in holders and pname in EXPERT_PARAMS and p.ndim == 3:
            typ = EXPERT_PARAMS[pname]
        elif pname == "weight" and p.ndim == 2 and rel.rsplit(".", 1)[-1] in ROUTER_NAMES and \
                (rel.rsplit(".", 1)[0] if "." in rel else "") in parents:
            typ = ROUTER
        else:
            continue
        yield rel, sub, pname, typ, wrappers.get((id(sub), pname))


def _param_component_params(holder: nn.Module, pname: str) -> list[nn.Parameter]:
    """An expert stack or router weight and its bias (``<name>_bias``; ``bias`` for a router)."""
    out = [getattr(holder, pname)]
    bias = getattr(holder, "bias" if pname == "weight" else f"{pname}_bias", None)
    if isinstance(bias, nn.Parameter):
        out.append(bias)
    return out


def _projection_leaves(block: nn.Module):
    """Yield (relative path, module, attr name) of recognised projections in a block."""
    for rel, sub in block.named_modules():
        if not rel:
            continue
        attr = rel.rsplit(".", 1)[-1]
        if attr not in _PROJECTIONS:
            continue
        # inside a LoRA layer, skip its base_layer (the LoRA wrapper carries the name)
        if ".base_layer" in f".{rel}" or "lora_" in rel:
            continue
        if _is_lora_layer(sub) or isinstance(sub, nn.Linear) or hasattr(sub, "weight"):
            yield rel, sub, attr


def vision_layers_used(model: nn.Module, n_layers: int) -> int | None:
    """How many vision blocks feed the model's output, from ``config.vision_feature_layer``.

    ``hidden_states[i]`` is the output of the first ``i`` blocks, so index ``i`` (or
    ``n_layers + 1 + i`` when negative) uses blocks ``0 .. i-1``; with a list of layers
    the largest counts. None when the config does not say (every block is used)."""
    cfg = getattr(model, "config", None)
    vfl = getattr(cfg, "vision_feature_layer", None)
    if vfl is None:
        return None
    layers = list(vfl) if isinstance(vfl, (list, tuple)) else [vfl]
    if not layers or not all(isinstance(x, int) and not isinstance(x, bool) for x in layers):
        return None
    used = max(x if x >= 0 else n_layers + 1 + x for x in layers)
    return min(max(used, 0), n_layers)


def discover_components(
    model: nn.Module,
    *,
    trainable_only: bool = True,
    towers: tuple[str, ...] = (LANGUAGE, VISION),
) -> list[Component]:
    """Return every trackable weight matrix of ``model`` as a :class:`Component`.

    With ``trainable_only`` (the default) a projection counts only if it has a
    parameter with ``requires_grad``; under LoRA that selects the adapter pairs and
    leaves out the frozen base weights.  Raises :class:`UnknownArchitectureError`
    (listing the module lists and linear layers it did see) when nothing is found.
    """
    comps: list[Component] = []
    seen: set[tuple[int, str | None]] = set()
    for path, blocks, tower, used in block_lists(model):
        if tower not in towers:
            continue
        for layer, block in enumerate(blocks):
            if layer >= used:
                break  # never read by the model: no gradient, nothing to track
            prefix = f"{path}.{layer}" if path else str(layer)
            for rel, mod, attr in _projection_leaves(block):
                if (id(mod), None) in seen:
                    continue
                seen.add((id(mod), None))
                kind, typ = _PROJECTIONS[attr]
                if typ in _SHARED_TYPES and any(p in SHARED_EXPERT_NAMES for p in rel.split(".")):
                    typ = _SHARED_TYPES[typ]
                comps += _make(f"{prefix}.{rel}", layer, kind, typ, tower, mod, _weight_params(mod),
                               trainable_only)
            for rel, holder, pname, typ, wrapper in _param_leaves(block):
                if (id(holder), pname) in seen:
                    continue
                seen.add((id(holder), pname))
                name = f"{prefix}.{rel}.{pname}" if typ != ROUTER else f"{prefix}.{rel}"
                param = getattr(holder, pname)
                n_exp = int(param.shape[0]) if typ != ROUTER else 0
                comps += _make(name, layer, "mlp", typ, tower, wrapper if wrapper is not None else holder,
                               _param_component_params(holder, pname), trainable_only, param_name=pname,
                               experts=n_exp)
    if not comps:
        raise UnknownArchitectureError(_describe_unknown(model, trainable_only))
    return comps


def _make(name: str, layer: int, kind: str, typ: str, tower: str, mod: nn.Module, plain: list[nn.Parameter],
          trainable_only: bool, **extra) -> list[Component]:
    """The component(s) of one matrix: one per LoRA adapter on it, or the plain matrix."""
    if _is_lora_layer(mod):
        out = []
        for adapter in mod.lora_A:
            params = [mod.lora_A[adapter].weight, mod.lora_B[adapter].weight]
            if trainable_only and not any(p.requires_grad for p in params):
                continue
            out.append(Component(name, layer, kind, typ, tower, params, mod, lora=True, adapter=adapter, **extra))
        return out
    params = [p for p in plain if p.requires_grad] if trainable_only else plain
    return [Component(name, layer, kind, typ, tower, params, mod, **extra)] if params else []


class ExpertLoRAUnsupported(RuntimeError):
    """The installed peft cannot put LoRA on 3-D expert parameters."""


def expert_lora_targets(model: nn.Module) -> list[str]:
    """peft ``LoraConfig(target_parameters=...)`` entries that put LoRA on every expert
    stack of ``model``, e.g. ``["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]``
    (peft matches them as suffixes of parameter names).

    Raises :class:`ExpertLoRAUnsupported` when the installed peft has no
    ``target_parameters`` (peft < 0.17) and ``ValueError`` when the model has no expert stacks."""
    import dataclasses

    try:
        import peft
        from peft import LoraConfig
    except ImportError as e:
        raise ExpertLoRAUnsupported("LoRA on expert stacks needs peft >= 0.17 (pip install 'peft>=0.17')") from e
    if "target_parameters" not in {f.name for f in dataclasses.fields(LoraConfig)}:
        raise ExpertLoRAUnsupported(
            f"peft {peft.__version__} cannot put LoRA on 3-D expert parameters (no LoraConfig.target_parameters; "
            "it arrived in peft 0.17): upgrade peft, train the experts fully, or leave them frozen under LoRA")
    out: list[str] = []
    for _, blocks, _, used in block_lists(model):
        for block in list(blocks)[:used]:
            for rel, _, pname, typ, _ in _param_leaves(block):
                target = f"{rel}.{pname}"
                if typ != ROUTER and target not in out:
                    out.append(target)
    if not out:
        raise ValueError(f"{type(model).__name__} has no expert stacks (3-D {sorted(EXPERT_PARAMS)} parameters)")
    return out


def _describe_unknown(model: nn.Module, trainable_only: bool) -> str:
    lists = [f"{p} ({len(m)} x {type(m[0]).__name__})" for p, m in model.named_modules()
             if isinstance(m, nn.ModuleList) and len(m)]
    linears = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return (
        f"No trackable weight matrices found in {type(model).__name__}"
        f"{' (trainable only: ' + str(n_train) + ' trainable parameters)' if trainable_only else ''}. "
        f"Module lists seen: {lists[:10] or 'none'}. Linear layer names seen: {linears[:30] or 'none'}. "
        f"Known projection names: {sorted(_PROJECTIONS)}. If this architecture uses other names, "
        f"add them to grades.components._PROJECTIONS."
    )


def summarize(components: list[Component]) -> dict:
    """Counts per tower and kind, for logs and tests."""
    out: dict[str, int] = {}
    for c in components:
        for key in (c.tower, f"{c.tower}.{c.kind}"):
            out[key] = out.get(key, 0) + 1
    out["total"] = len(components)
    out["params"] = sum(c.numel for c in components)
    return out


def param_to_component(components: list[Component]) -> dict[int, Component]:
    """Map ``id(param)`` to its component."""
    return {id(p): c for c in components for p in c.params}


def trainable_numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
