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
}

# canonical order of types, for tables and figures
TYPE_ORDER = ["q", "k", "v", "qkv", "o", "gate", "up", "gate_up", "down"]

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
        # a block list's children contain projections; LoRA's own ModuleDicts never match
        if not any(_projection_leaves(mod[0])):
            continue
        tower = VISION if any(p in VISION_OWNERS for p in parts) else LANGUAGE
        yield path, mod, tower


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
    seen: set[int] = set()
    lists = list(_block_lists(model))
    n_vision_lists = sum(1 for _, _, t in lists if t == VISION)
    for path, blocks, tower in lists:
        if tower not in towers:
            continue
        used = vision_layers_used(model, len(blocks)) if tower == VISION and n_vision_lists == 1 else None
        for layer, block in enumerate(blocks):
            if used is not None and layer >= used:
                break  # never read by the model: no gradient, nothing to track
            for rel, mod, attr in _projection_leaves(block):
                if id(mod) in seen:
                    continue
                seen.add(id(mod))
                kind, typ = _PROJECTIONS[attr]
                name = f"{path}.{layer}.{rel}" if path else f"{layer}.{rel}"
                if _is_lora_layer(mod):
                    for adapter in mod.lora_A:
                        params = [mod.lora_A[adapter].weight, mod.lora_B[adapter].weight]
                        if trainable_only and not any(p.requires_grad for p in params):
                            continue
                        comps.append(
                            Component(name, layer, kind, typ, tower, params, mod, lora=True, adapter=adapter)
                        )
                    continue
                params = _weight_params(mod)
                if trainable_only:
                    params = [p for p in params if p.requires_grad]
                if not params:
                    continue
                comps.append(Component(name, layer, kind, typ, tower, params, mod))
    if not comps:
        raise UnknownArchitectureError(_describe_unknown(model, trainable_only))
    return comps


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
