"""Analytic matmul FLOPs of a training step, from model shapes and the live frozen set.

GradES saves compute by freezing weight matrices, so the cost of a step changes as a
run goes on.  This module counts it analytically, the way
``torch.utils.flop_counter.FlopCounterMode`` would measure it: **only matrix
multiplications count** (``mm``/``addmm``/``bmm``), at 2 FLOPs per multiply-add;
norms, activations, softmax, the loss and embedding look-ups are free.

Accounting for one forward+backward over ``T = batch_size * seq_len`` positions:

* **Projection** ``y = x W^T`` with ``W`` of shape ``out x in`` (every q/k/v/o, fused
  qkv, gate/up/down, fused gate_up, and the lm_head):

  - forward: ``2 T in out``;
  - input gradient ``dx = dy W``: ``2 T in out``, *only if x requires grad*, i.e.
    something trainable lies below this matrix.  Autograd skips it otherwise;
  - weight gradient ``dW = dy^T x``: ``2 T in out``, *only if W requires grad*.
    (Bias gradients are reductions, not matmuls.)

* **PEFT LoRA** projection ``y = x W^T + s * B(A x)``: the frozen base matmul (forward,
  plus its input gradient when ``x`` requires grad), then ``A`` (``r x in``) and ``B``
  (``out x r``) as two projections of their own.  ``A``'s output requires grad when
  ``x`` or ``A`` does, which decides whether ``B`` computes its input gradient.
  Merged or disabled adapters cost only the base matmul.

* **Attention scores** (eager / SDPA math: the full ``seq x seq`` products, masked
  afterwards), per sequence and per *query* head (K and V are repeated to all heads
  under GQA before the matmuls): ``S = Q K^T`` costs ``2 s^2 d`` forward, plus
  ``2 s^2 d`` for ``dQ`` if Q requires grad and ``2 s^2 d`` for ``dK`` if K does;
  ``O = P V`` costs ``2 s^2 d`` forward, ``2 s^2 d`` for ``dP`` if the scores require
  grad and ``2 s^2 d`` for ``dV`` if V does.

* **lm_head**: a projection over all ``T`` positions (the loss is taken over all
  positions), whether it is tied to the input embeddings or not: tying only means its
  weight gradient follows the embedding's ``requires_grad``.

Whether an activation requires grad is propagated through each decoder block the way
autograd does: the embedding output requires grad iff the embedding matrix is
trainable; a norm's output requires grad iff its input does or its weight is
trainable (full fine-tuning); a projection's output iff its input, weight or bias
does; ``q_norm``/``k_norm`` (Qwen3, Gemma3) act on Q and K alone; a residual sum
requires grad iff either summand does.  Pre-norm blocks (Llama, Qwen, Mistral, Phi-3)
and sandwich-norm blocks (Gemma2/3, OLMo2) are recognised by their norm names; any
other trainable block-level parameter is treated conservatively as feeding both
branch inputs.

The per-step cost is ``a * T + c * batch_size * seq_len**2`` for coefficients ``a``,
``c`` that depend only on the frozen set; :class:`FlopsMeter` caches them and walks the
model again only when the frozen set changes.

* **Vision tower of a VLM** (Idefics3 / SmolVLM: a SigLIP-style encoder and a
  pixel-shuffle connector), counted *per image* on top of the language tower:
  the patch embedding (a convolution with stride = kernel, ``2 P (C k k) d`` for
  ``P`` patches; weight gradient only, pixels need none), every encoder block
  exactly like a decoder block above (``q/k/v/out_proj``, ``fc1/fc2``, bidirectional
  ``P x P`` scores, with ``P`` positions), and the connector projection over
  ``P / scale_factor**2`` positions.  Whether the image features require grad is
  propagated the same way, and decides, with the token embedding, whether the
  language tower's first block computes input gradients.  Vision terms are reported
  under their own kinds (``vision_attn``, ``vision_mlp``, ``vision_attention_scores``,
  ``vision_patch_embed``, ``projector``; ``FlopsBreakdown.vision`` is their sum), so a
  frozen vision matrix visibly removes its weight-gradient FLOPs.  The cost per step
  is then ``a T + c B s^2 + v I`` with ``I`` images in the batch (padding images, all
  zeros, are skipped by the model and not counted: :func:`count_images`).

Scope and caveats: dense decoder-only language models, and the vision tower of
Idefics3-style VLMs.  Other VLM families (Qwen2/2.5/3-VL, LLaVA) are counted for the
language tower only (their vision towers are not walked: ``FlopsPlan.vision_counted``
is False).  Gradient checkpointing recompute, DoRA/other LoRA variants' extra work,
LoRA on embeddings and FlashAttention's causal skipping are not modelled.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

import torch
from torch import nn

from .components import LANGUAGE, VISION, Component, UnknownArchitectureError, discover_components

FORWARD = "forward"
INPUT_GRAD = "input_grad"
WEIGHT_GRAD = "weight_grad"
PASSES = (FORWARD, INPUT_GRAD, WEIGHT_GRAD)

ATTN = "attn"  # attention projections (q/k/v/o, qkv), including their LoRA adapters
MLP = "mlp"  # MLP projections (gate/up/down, gate_up), including their LoRA adapters
SCORES = "attention_scores"  # Q K^T and P V
LM_HEAD = "lm_head"
KINDS = (ATTN, MLP, SCORES, LM_HEAD)
# vision tower of a VLM, per image (present only for models whose vision tower is counted)
VISION_ATTN, VISION_MLP, VISION_SCORES = "vision_attn", "vision_mlp", "vision_attention_scores"
VISION_EMBED, PROJECTOR = "vision_patch_embed", "projector"
VISION_KINDS = (VISION_ATTN, VISION_MLP, VISION_SCORES, VISION_EMBED, PROJECTOR)
_TO_VISION = {ATTN: VISION_ATTN, MLP: VISION_MLP, SCORES: VISION_SCORES}

# block-level norm names, by where they sit (see _norm_roles)
_PRE_ATTN_NORMS = {"input_layernorm", "ln_1", "attention_norm", "norm1", "layer_norm1", "input_norm"}
_PRE_MLP_NORMS = {"pre_feedforward_layernorm", "ln_2", "ffn_norm", "norm2", "layer_norm2"}
_POST_MLP_NORMS = {"post_feedforward_layernorm", "post_mlp_layernorm"}

Key = tuple[str, str]  # (kind, pass)


# ------------------------------------------------------------------ results
@dataclass(frozen=True)
class FlopsBreakdown:
    """Matmul FLOPs of one step (or of an accumulation of steps).

    Two decompositions of the same ``total``: by pass (``forward + input_grad +
    weight_grad``) and by kind (``by_kind``: ``attn``, ``mlp``, ``attention_scores``,
    ``lm_head``).  ``attention`` and ``lm_head`` repeat ``by_kind["attention_scores"]``
    and ``by_kind["lm_head"]`` (all passes); ``attention`` is the score/value matmuls,
    not the q/k/v/o projections (those are ``by_kind["attn"]``).  ``by_kind_pass``
    holds the full ``kind -> pass -> FLOPs`` table.
    """

    forward: float
    input_grad: float
    weight_grad: float
    attention: float
    lm_head: float
    total: float
    by_kind: dict[str, float]
    by_kind_pass: dict[str, dict[str, float]] = field(repr=False)
    vision: float = 0.0  # the vision kinds (tower, patch embedding, projector) summed; 0 for language models

    @classmethod
    def from_terms(cls, terms: dict[Key, float]) -> FlopsBreakdown:
        kinds = KINDS + tuple(k for k in VISION_KINDS if any(key[0] == k for key in terms))
        table = {k: {p: float(terms.get((k, p), 0.0)) for p in PASSES} for k in kinds}
        by_kind = {k: sum(v.values()) for k, v in table.items()}
        by_pass = {p: sum(table[k][p] for k in kinds) for p in PASSES}
        return cls(forward=by_pass[FORWARD], input_grad=by_pass[INPUT_GRAD], weight_grad=by_pass[WEIGHT_GRAD],
                   attention=by_kind[SCORES], lm_head=by_kind[LM_HEAD], total=sum(by_pass.values()),
                   by_kind=by_kind, by_kind_pass=table,
                   vision=sum(v for k, v in by_kind.items() if k in VISION_KINDS))

    def to_dict(self) -> dict:
        """JSON-friendly copy."""
        out = {"total": self.total, "forward": self.forward, "input_grad": self.input_grad,
               "weight_grad": self.weight_grad, "attention": self.attention, "lm_head": self.lm_head,
               "by_kind": dict(self.by_kind), "by_kind_pass": {k: dict(v) for k, v in self.by_kind_pass.items()}}
        if any(k in VISION_KINDS for k in self.by_kind):
            out["vision"] = self.vision
        return out


@dataclass(frozen=True)
class FlopsPlan:
    """Per-step cost coefficients for one frozen set.

    A step over ``batch_size`` sequences of ``seq_len`` positions with ``images``
    pictures costs, per ``(kind, pass)``, ``per_position * batch_size * seq_len +
    per_sequence_sq * batch_size * seq_len**2 + per_image * images`` FLOPs.
    """

    per_position: dict[Key, float]
    per_sequence_sq: dict[Key, float]
    per_image: dict[Key, float] = field(default_factory=dict)  # vision tower + projector (VLMs)
    vision_counted: bool = False  # the model's vision tower is walked (Idefics3-style VLMs)

    def terms(self, batch_size: int, seq_len: int, images: int = 0) -> dict[Key, float]:
        n, sq = batch_size * seq_len, batch_size * seq_len * seq_len
        keys = self.per_position.keys() | self.per_sequence_sq.keys()
        out = {k: self.per_position.get(k, 0.0) * n + self.per_sequence_sq.get(k, 0.0) * sq for k in keys}
        if images:
            for k, v in self.per_image.items():
                out[k] = out.get(k, 0.0) + v * images
        return out

    def evaluate(self, batch_size: int, seq_len: int, images: int = 0) -> FlopsBreakdown:
        return FlopsBreakdown.from_terms(self.terms(batch_size, seq_len, images))


# --------------------------------------------------------------- public API
def step_flops(model: nn.Module, batch_size: int, seq_len: int, images: int = 0) -> FlopsBreakdown:
    """Matmul FLOPs of one forward+backward of ``model`` on a ``batch_size x seq_len``
    batch (with ``images`` pictures, for a VLM), for the parameters' current
    ``requires_grad`` flags."""
    return build_plan(model).evaluate(batch_size, seq_len, images)


def forward_flops(model: nn.Module, batch_size: int, seq_len: int, images: int = 0) -> float:
    """Matmul FLOPs of one forward pass (e.g. a validation batch under ``no_grad``).

    Independent of the frozen set; equals ``step_flops(...).forward``."""
    return step_flops(model, batch_size, seq_len, images).forward


def count_images(batch: dict) -> int:
    """Pictures the vision tower encodes for a batch: those in ``pixel_values`` that are
    not all zeros (Idefics3 drops zero padding images); 0 for a text batch."""
    pv = batch.get("pixel_values") if isinstance(batch, dict) else None
    if not isinstance(pv, torch.Tensor) or pv.dim() < 4:
        return 0
    per_image = pv.reshape(-1, *pv.shape[-3:]).flatten(1)
    return int((per_image != 0).any(dim=1).sum())


def build_plan(model: nn.Module) -> FlopsPlan:
    """Walk ``model`` once and return the cost coefficients of its live frozen set."""
    tally = _Tally()
    base = _unwrap(model)
    blocks, owner = _language_blocks(model)
    image_tally = _Tally()
    image_rg = _vision_tower(image_tally, model)  # None: no vision tower counted

    emb = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
    h_rg = _trainable(emb) or bool(image_rg)  # image features are scattered into the token embeddings
    for block, prefix, comps in blocks:
        h_rg = _block(tally, block, prefix, comps, h_rg)

    # final norm and anything else in the decoder outside the blocks and the embedding
    skip = {id(p) for blk, _, _ in blocks for p in blk.parameters()}
    skip |= {id(p) for p in (emb.parameters() if emb is not None else ())}
    x_rg = h_rg or any(p.requires_grad for p in owner.parameters() if id(p) not in skip)

    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if head is not None:
        _projection(tally, LM_HEAD, head, x_rg)
    return FlopsPlan(dict(tally.per_position), dict(tally.per_sequence_sq), dict(image_tally.per_position),
                     vision_counted=image_rg is not None)


class FlopsMeter:
    """Accumulate training FLOPs over a run, one :meth:`add_step` per forward+backward.

    The per-step coefficients are recomputed only when the frozen set changes: pass
    ``version`` (e.g. ``Freezer.version``, bumped on every freeze) and the cache is
    keyed on it alone, so the hot path is a dict look-up and a dozen multiply-adds;
    without ``version`` the key is the tuple of all parameters' ``requires_grad``
    flags (one cheap pass over the parameter list, no module walk).
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._params = list(model.parameters())
        self._key: Hashable = None
        self._plan: FlopsPlan | None = None
        self._terms: dict[Key, float] = {}
        self.steps = 0  # add_step calls (micro-batches)
        self.positions = 0  # batch_size * seq_len summed (padding included: it is computed)
        self.recomputes = 0  # model walks, i.e. distinct frozen sets seen
        self.images = 0  # pictures encoded by a VLM's vision tower

    def signature(self, version: Hashable | None = None) -> Hashable:
        """Cache key of the live frozen set."""
        if version is not None:
            return ("version", version)
        return tuple(p.requires_grad for p in self._params)

    @property
    def plan(self) -> FlopsPlan:
        """Coefficients of the live frozen set (refreshed if it changed)."""
        self._refresh(self.signature())
        assert self._plan is not None
        return self._plan

    def _refresh(self, key: Hashable) -> None:
        if self._plan is None or key != self._key:
            self._plan = build_plan(self.model)
            self._key = key
            self.recomputes += 1

    def add_step(self, batch_size: int | torch.Tensor, seq_len: int | None = None, *,
                 version: Hashable | None = None, images: int = 0) -> float:
        """Count one forward+backward; returns its FLOPs.

        ``batch_size`` may also be a ``(batch, seq)`` tensor such as ``input_ids``
        (then ``seq_len`` is taken from it); ``images``: pictures in the batch (VLMs,
        :func:`count_images`)."""
        if isinstance(batch_size, torch.Tensor):
            batch_size, seq_len = int(batch_size.shape[0]), int(batch_size.shape[-1])
        if seq_len is None:
            raise TypeError("add_step needs seq_len (or an input_ids tensor)")
        self._refresh(self.signature(version))
        assert self._plan is not None
        step = 0.0
        for k, v in self._plan.terms(batch_size, seq_len, images).items():
            self._terms[k] = self._terms.get(k, 0.0) + v
            step += v
        self.steps += 1
        self.positions += batch_size * seq_len
        self.images += images
        return step

    def reset(self) -> None:
        """Forget accumulated totals (the cached plan is kept)."""
        self._terms = {}
        self.steps = self.positions = self.images = 0

    @property
    def breakdown(self) -> FlopsBreakdown:
        return FlopsBreakdown.from_terms(self._terms)

    @property
    def total(self) -> float:
        return sum(self._terms.values())

    @property
    def by_kind(self) -> dict[str, float]:
        return self.breakdown.by_kind

    def to_dict(self) -> dict:
        """Totals for ``train.json``: the :class:`FlopsBreakdown` fields plus counters."""
        out = {**self.breakdown.to_dict(), "steps": self.steps, "positions": self.positions,
               "recomputes": self.recomputes}
        if self.images:
            out["images"] = self.images
        return out


# ------------------------------------------------------------- model walk
class _Tally:
    def __init__(self) -> None:
        self.per_position: dict[Key, float] = {}
        self.per_sequence_sq: dict[Key, float] = {}

    def add(self, kind: str, pas: str, flops: float, *, quadratic: bool = False) -> None:
        d = self.per_sequence_sq if quadratic else self.per_position
        d[(kind, pas)] = d.get((kind, pas), 0.0) + flops


def _unwrap(model: nn.Module) -> nn.Module:
    """PEFT / DDP wrappers -> the transformers model."""
    for _ in range(5):
        if hasattr(model, "get_base_model"):
            model = model.get_base_model()
        elif isinstance(getattr(model, "module", None), nn.Module):
            model = model.module
        else:
            break
    return model


def _trainable(module: nn.Module | None) -> bool:
    return module is not None and any(p.requires_grad for p in module.parameters())


def _is_lora(module: nn.Module) -> bool:
    return isinstance(getattr(module, "lora_A", None), nn.ModuleDict) and isinstance(
        getattr(module, "lora_B", None), nn.ModuleDict)


def _language_blocks(model: nn.Module) -> tuple[list[tuple[nn.Module, str, list[Component]]], nn.Module]:
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


def _dense(t: _Tally, kind: str, lin: nn.Module, x_rg: bool) -> bool:
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


def _projection(t: _Tally, kind: str, mod: nn.Module, x_rg: bool) -> bool:
    """A projection, plain or PEFT-LoRA-wrapped; returns whether its output requires grad."""
    if not _is_lora(mod):
        return _dense(t, kind, mod, x_rg)
    out_rg = _dense(t, kind, mod.get_base_layer(), x_rg)
    if getattr(mod, "disable_adapters", False) or getattr(mod, "merged", False):
        return out_rg
    for name in mod.active_adapters:
        if name in mod.lora_A:
            a_rg = _dense(t, kind, mod.lora_A[name], x_rg)
            out_rg = _dense(t, kind, mod.lora_B[name], a_rg) or out_rg
    return out_rg


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


def _block(t: _Tally, block: nn.Module, prefix: str, comps: list[Component], h_rg: bool) -> bool:
    """Account one decoder block; returns whether its output (residual stream) requires grad."""
    proj: dict[str, nn.Module] = {}
    rel: dict[str, str] = {}
    for c in comps:  # LoRA gives one component per adapter on the same module
        proj.setdefault(c.type, c.module)
        rel.setdefault(c.type, c.name[len(prefix) + 1:])
    branches = {r.split(".", 1)[0] for r in rel.values()}
    roles = _norm_roles(block, branches)
    other = any(_trainable(m) for m in roles["other"])

    # attention branch
    x_rg = h_rg or other or any(_trainable(m) for m in roles["pre_attn"])
    if "o" in proj:
        q_key = "qkv" if "qkv" in proj else "q"
        attn = block.get_submodule(rel[q_key].rsplit(".", 1)[0]) if "." in rel[q_key] else block
        if "qkv" in proj:
            q_rg = k_rg = v_rg = _projection(t, ATTN, proj["qkv"], x_rg)
        else:
            q_rg = _projection(t, ATTN, proj["q"], x_rg)
            k_rg = _projection(t, ATTN, proj["k"], x_rg)
            v_rg = _projection(t, ATTN, proj["v"], x_rg)
        q_rg = q_rg or _trainable(getattr(attn, "q_norm", None))
        k_rg = k_rg or _trainable(getattr(attn, "k_norm", None))
        ctx_rg = _scores(t, attn, q_rg, k_rg, v_rg)
        a_rg = _projection(t, ATTN, proj["o"], ctx_rg)
        a_rg = a_rg or any(_trainable(m) for m in roles["post_attn"])
        h_rg = h_rg or a_rg

    # MLP branch
    x_rg = h_rg or other or any(_trainable(m) for m in roles["pre_mlp"])
    if "down" in proj:
        if "gate_up" in proj:
            act_rg = _projection(t, MLP, proj["gate_up"], x_rg)
        else:
            act_rg = False
            for typ in ("gate", "up"):
                if typ in proj:
                    act_rg = _projection(t, MLP, proj[typ], x_rg) or act_rg
        m_rg = _projection(t, MLP, proj["down"], act_rg)
        m_rg = m_rg or any(_trainable(m) for m in roles["post_mlp"])
        h_rg = h_rg or m_rg
    return h_rg or other


def _scores(t: _Tally, attn: nn.Module, q_rg: bool, k_rg: bool, v_rg: bool) -> bool:
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
def _vision_tower(t: _Tally, model: nn.Module) -> bool | None:
    """Per-image terms of an Idefics3-style vision tower + connector into ``t.per_position``
    (as FLOPs per image); returns whether the image features handed to the language
    model require grad, or None when the model has no vision tower we can count."""
    base = _unwrap(model)
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
    h_rg = _trainable(emb)
    # encoder blocks: the decoder-block walk, over n positions (bidirectional n x n scores)
    blocks = _grouped_blocks(model, comps)
    inner_t = _Tally()
    for block, prefix, bcomps in blocks:
        h_rg = _block(inner_t, block, prefix, bcomps, h_rg)
    for (kind, pas), v in inner_t.per_position.items():
        t.add(_TO_VISION[kind], pas, v * n)
    for (kind, pas), v in inner_t.per_sequence_sq.items():
        t.add(_TO_VISION[kind], pas, v * n * n)
    h_rg = h_rg or _trainable(getattr(vm, "post_layernorm", None))
    # connector: pixel shuffle (a reshape) then one projection over n / scale^2 positions
    conn_t = _Tally()
    out_rg = _projection(conn_t, PROJECTOR, proj, h_rg)
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


__all__ = [
    "FlopsBreakdown", "FlopsPlan", "FlopsMeter", "build_plan", "step_flops", "forward_flops", "count_images",
    "PASSES", "KINDS", "VISION_KINDS",
]
