"""The model walk behind :func:`build_plan`: each decoder (and vision) block's projections,
attention scores and norms, with ``requires_grad`` propagated the way autograd does,
tallied into a :class:`~grades.flops.plan.FlopsPlan` (the accounting rules are in
:mod:`grades.flops`)."""

from __future__ import annotations

from torch import nn

from ..components import LANGUAGE, VISION, Component, UnknownArchitectureError, discover_components
from .moe import is_moe, moe_branch
from .plan import ATTN, FORWARD, INPUT_GRAD, LM_HEAD, MLP, PROJECTOR, SCORES, TO_VISION, VISION_EMBED, WEIGHT_GRAD
from .plan import FlopsPlan
from .tally import Tally, projection, trainable, unwrap

# block-level norm names, by where they sit (see _norm_roles)
_PRE_ATTN_NORMS = {"input_layernorm", "ln_1", "attention_norm", "norm1", "layer_norm1", "input_norm"}
_PRE_MLP_NORMS = {"pre_feedforward_layernorm", "ln_2", "ffn_norm", "norm2", "layer_norm2"}
_POST_MLP_NORMS = {"post_feedforward_layernorm", "post_mlp_layernorm"}


def build_plan(model: nn.Module) -> FlopsPlan:
    """Walk ``model`` once and return the cost coefficients of its live frozen set."""
    tally = Tally()
    base = unwrap(model)
    blocks, owner = language_blocks(model)
    image_tally = Tally()
    image_rg = _vision_tower(image_tally, model)  # None: no vision tower counted

    emb = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    h_rg = trainable(emb) or bool(image_rg)  # image features are scattered into the token embeddings
    for block, prefix, comps in blocks:
        h_rg = _block(tally, block, prefix, comps, h_rg)

    # final norm and anything else in the decoder outside the blocks and the embedding
    skip = {id(p) for blk, _, _ in blocks for p in blk.parameters()}
    skip |= {id(p) for p in (emb.parameters() if emb is not None else ())}
    x_rg = h_rg or any(p.requires_grad for p in owner.parameters() if id(p) not in skip)

    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if head is not None:
        projection(tally, LM_HEAD, head, x_rg)
    return FlopsPlan(dict(tally.per_position), dict(tally.per_sequence_sq), dict(image_tally.per_position),
                     vision_counted=image_rg is not None, per_call=dict(tally.per_call))


def language_blocks(model: nn.Module) -> tuple[list[tuple[nn.Module, str, list[Component]]], nn.Module]:
    """The language tower's blocks as (block, block path, its components), and the
    module that owns the block list (holds the final norm)."""
    out = _grouped_blocks(model, discover_components(model, trainable_only=False, towers=(LANGUAGE,)))
    list_path = out[0][1].rsplit(".", 1)[0] if "." in out[0][1] else ""
    owner = model.get_submodule(list_path.rsplit(".", 1)[0]) if "." in list_path else model
    return out, owner


def _block_list_path(model: nn.Module, c: Component) -> str:
    parts = c.name.split(".")
    for i, part in enumerate(parts):
        if part == str(c.layer):
            path = ".".join(parts[:i])
            if isinstance(model.get_submodule(path), nn.ModuleList):
                return path
    raise ValueError(f"cannot locate the block list of {c.name}")


def _norm_roles(block: nn.Module, branches: set[str]) -> dict[str, list[nn.Module]]:
    """Sort a block's non-branch children into pre_attn / post_attn / pre_mlp / post_mlp
    / other.  ``post_attention_layernorm`` is the pre-MLP norm of pre-norm blocks
    (Llama, Qwen, Phi-3) but an attention-output norm in sandwich blocks (Gemma2/3,
    which also have ``pre_feedforward_layernorm``) and post-norm blocks (OLMo2, which
    have no ``input_layernorm``)."""
    names = {n for n, _ in block.named_children()}
    sandwich = "pre_feedforward_layernorm" in names or not (names & _PRE_ATTN_NORMS)
    roles: dict[str, list[nn.Module]] = {r: [] for r in ("pre_attn", "post_attn", "pre_mlp", "post_mlp", "other")}
    for name, child in block.named_children():
        if name in branches or not any(True for _ in child.parameters()):
            continue
        if name in _PRE_ATTN_NORMS:
            role = "pre_attn"
        elif name == "post_attention_layernorm":
            role = "post_attn" if sandwich else "pre_mlp"
        elif name in _PRE_MLP_NORMS:
            role = "pre_mlp"
        elif name in _POST_MLP_NORMS:
            role = "post_mlp"
        else:
            role = "other"
        roles[role].append(child)
    return roles


def _block(t: Tally, block: nn.Module, prefix: str, comps: list[Component], h_rg: bool) -> bool:
    """Account one decoder block; returns whether its output (residual stream) requires grad."""
    proj: dict[str, nn.Module] = {}
    rel: dict[str, str] = {}
    for c in comps:  # LoRA gives one component per adapter on the same module
        proj.setdefault(c.type, c.module)
        rel.setdefault(c.type, c.name[len(prefix) + 1:])
    branches = {r.split(".", 1)[0] for r in rel.values()}
    roles = _norm_roles(block, branches)
    other = any(trainable(m) for m in roles["other"])

    # attention branch
    x_rg = h_rg or other or any(trainable(m) for m in roles["pre_attn"])
    if "o" in proj:
        q_key = "qkv" if "qkv" in proj else "q"
        attn = block.get_submodule(rel[q_key].rsplit(".", 1)[0]) if "." in rel[q_key] else block
        if "qkv" in proj:
            q_rg = k_rg = v_rg = projection(t, ATTN, proj["qkv"], x_rg)
        else:
            q_rg = projection(t, ATTN, proj["q"], x_rg)
            k_rg = projection(t, ATTN, proj["k"], x_rg)
            v_rg = projection(t, ATTN, proj["v"], x_rg)
        q_rg = q_rg or trainable(getattr(attn, "q_norm", None))
        k_rg = k_rg or trainable(getattr(attn, "k_norm", None))
        ctx_rg = _scores(t, attn, q_rg, k_rg, v_rg)
        a_rg = projection(t, ATTN, proj["o"], ctx_rg)
        a_rg = a_rg or any(trainable(m) for m in roles["post_attn"])
        h_rg = h_rg or a_rg

    # MLP branch
    x_rg = h_rg or other or any(trainable(m) for m in roles["pre_mlp"])
    if "down" in proj:
        if "gate_up" in proj:
            act_rg = projection(t, MLP, proj["gate_up"], x_rg)
        else:
            act_rg = False
            for typ in ("gate", "up"):
                if typ in proj:
                    act_rg = projection(t, MLP, proj[typ], x_rg) or act_rg
        m_rg = projection(t, MLP, proj["down"], act_rg)
        m_rg = m_rg or any(trainable(m) for m in roles["post_mlp"])
        h_rg = h_rg or m_rg
    elif is_moe(comps):  # router + top-k routed expert stacks (+ shared experts)
        m_rg = moe_branch(t, comps, x_rg) or any(trainable(m) for m in roles["post_mlp"])
        h_rg = h_rg or m_rg
    return h_rg or other


def _scores(t: Tally, attn: nn.Module, q_rg: bool, k_rg: bool, v_rg: bool) -> bool:
    """QK^T and PV per sequence (coefficients of seq_len**2); returns whether the
    attention output (before o_proj) requires grad."""
    cfg = getattr(attn, "config", None)
    heads = getattr(attn, "num_heads", None) or getattr(cfg, "num_attention_heads", None)
    head_dim = getattr(attn, "head_dim", None) or getattr(cfg, "head_dim", None)
    if not heads:
        raise ValueError(f"cannot read the number of attention heads of {type(attn).__name__}")
    if not head_dim:
        head_dim = cfg.hidden_size // heads
    f = 2.0 * heads * head_dim
    t.add(SCORES, FORWARD, 2 * f, quadratic=True)  # S = Q K^T, O = P V
    s_rg = q_rg or k_rg
    t.add(SCORES, INPUT_GRAD, f * (q_rg + k_rg + s_rg + v_rg), quadratic=True)  # dQ, dK, dP, dV
    return s_rg or v_rg


# ------------------------------------------------------------ vision tower
def _vision_tower(t: Tally, model: nn.Module) -> bool | None:
    """Per-image terms of an Idefics3-style vision tower + connector into ``t.per_position``
    (as FLOPs per image); returns whether the image features handed to the language
    model require grad, or None when the model has no vision tower we can count."""
    base = unwrap(model)
    inner = getattr(base, "model", base)
    vm, conn = getattr(inner, "vision_model", None), getattr(inner, "connector", None)
    emb = getattr(vm, "embeddings", None)
    patch = getattr(emb, "patch_embedding", None)
    proj = getattr(getattr(conn, "modality_projection", None), "proj", None)
    n = getattr(emb, "num_patches", None)
    scale = getattr(conn, "scale_factor", None)
    if not (isinstance(patch, nn.Conv2d) and proj is not None and n and scale):
        return None
    try:
        comps = discover_components(model, trainable_only=False, towers=(VISION,))
    except UnknownArchitectureError:
        return None
    # patch embedding: a convolution with stride = kernel, one output per patch
    f = 2.0 * n * patch.in_channels * patch.kernel_size[0] * patch.kernel_size[1] * patch.out_channels
    t.add(VISION_EMBED, FORWARD, f)
    if patch.weight.requires_grad:
        t.add(VISION_EMBED, WEIGHT_GRAD, f)  # the pixels never need a gradient
    h_rg = trainable(emb)
    # encoder blocks: the decoder-block walk, over n positions (bidirectional n x n scores)
    blocks = _grouped_blocks(model, comps)
    inner_t = Tally()
    for block, prefix, bcomps in blocks:
        h_rg = _block(inner_t, block, prefix, bcomps, h_rg)
    for (kind, pas), v in inner_t.per_position.items():
        t.add(TO_VISION[kind], pas, v * n)
    for (kind, pas), v in inner_t.per_sequence_sq.items():
        t.add(TO_VISION[kind], pas, v * n * n)
    h_rg = h_rg or trainable(getattr(vm, "post_layernorm", None))
    # connector: pixel shuffle (a reshape) then one projection over n / scale^2 positions
    conn_t = Tally()
    out_rg = projection(conn_t, PROJECTOR, proj, h_rg)
    for key, v in conn_t.per_position.items():
        t.add(*key, v * n / scale**2)
    return out_rg


def _grouped_blocks(model: nn.Module, comps: list[Component]) -> list[tuple[nn.Module, str, list[Component]]]:
    """(block, block path, its components) for the one block list the components live in."""
    by_block: dict[str, list[Component]] = {}
    lists: set[str] = set()
    for c in comps:
        list_path = _block_list_path(model, c)
        lists.add(list_path)
        by_block.setdefault(f"{list_path}.{c.layer}" if list_path else str(c.layer), []).append(c)
    if len(lists) != 1:
        raise NotImplementedError(f"FLOPs accounting supports one block list per tower; found {sorted(lists)}")
    (list_path,) = lists
    out = []
    for i, block in enumerate(model.get_submodule(list_path)):
        prefix = f"{list_path}.{i}" if list_path else str(i)
        out.append((block, prefix, by_block.get(prefix, [])))
    return out
