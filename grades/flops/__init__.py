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

The per-step cost is ``a * T + c * batch_size * seq_len**2 (+ a per-call constant
under LoRA on expert stacks)`` for coefficients that depend only on the frozen set; :class:`FlopsMeter` caches them and walks the
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

* **Mixture-of-experts blocks** (Qwen3-MoE, Mixtral, OLMoE, Qwen2-MoE, ...): the router
  is a projection over every position; each 3-D expert stack counts for the ``top_k``
  experts a token is routed to (``2 k in out`` per position and pass), shared experts
  as a dense MLP; LoRA on a stack (peft ``target_parameters``) adds the per-call cost of
  forming the adapted stack (``FlopsPlan.per_call``). Details: :mod:`grades.flops.moe`.

Scope and caveats: decoder-only language models (dense and MoE), and the vision tower of
Idefics3-style VLMs.  Other VLM families (Qwen2/2.5/3-VL, LLaVA) are counted for the
language tower only (their vision towers are not walked: ``FlopsPlan.vision_counted``
is False).  Gradient checkpointing recompute, DoRA/other LoRA variants' extra work,
LoRA on embeddings and FlashAttention's causal skipping are not modelled.
"""

from __future__ import annotations

from collections.abc import Hashable

import torch
from torch import nn

from .plan import (ATTN, FORWARD, INPUT_GRAD, KINDS, LM_HEAD, MLP, PASSES, PROJECTOR, SCORES, VISION_ATTN,
                   VISION_EMBED, VISION_KINDS, VISION_MLP, VISION_SCORES, WEIGHT_GRAD, FlopsBreakdown, FlopsPlan, Key)
from .walk import build_plan, language_blocks

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

    def state_dict(self) -> dict:
        """Accumulated totals, for a training checkpoint."""
        return {"terms": dict(self._terms), "steps": self.steps, "positions": self.positions,
                "recomputes": self.recomputes, "images": self.images}

    def load_state_dict(self, state: dict, version: Hashable | None = None) -> None:
        """Restore totals saved by :meth:`state_dict`; the plan is rebuilt for the live frozen set
        (``version``: the freezer's version, as passed to :meth:`add_step`) and counted as before."""
        self._refresh(self.signature(version))
        self._terms = dict(state["terms"])
        self.steps, self.positions, self.recomputes = state["steps"], state["positions"], state["recomputes"]
        self.images = state.get("images", 0)

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


__all__ = ["ATTN", "FORWARD", "INPUT_GRAD", "KINDS", "LM_HEAD", "MLP", "PASSES", "PROJECTOR", "SCORES", "VISION_ATTN",
           "VISION_EMBED", "VISION_KINDS", "VISION_MLP", "VISION_SCORES", "WEIGHT_GRAD", "FlopsBreakdown", "FlopsMeter",
           "FlopsPlan", "Key", "build_plan", "count_images", "forward_flops", "language_blocks", "step_flops"]
