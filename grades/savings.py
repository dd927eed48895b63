"""Savings beyond a plain freeze: turn each frozen matrix into less work per step.

A plain freeze (:func:`grades.freezer.freeze_params`) sets ``requires_grad=False``,
drops the gradient and releases the optimizer state. Autograd then skips the matrix's
weight-gradient matmul, and its input-gradient matmul where nothing below needs a
gradient. Three optional savings go further; each is off by default and switched on in
the run config's ``savings`` block (``grades/schemas/run.schema.yaml``) or by passing a
:class:`SavingsConfig` to the :class:`grades.controller.Controller`:

``truncate_backward``
    When every tracked matrix of the lowest ``k`` decoder layers is frozen and nothing
    else below layer ``k`` trains except those layers' own small parameters (norm
    weights, biases) — in particular the input embeddings are not trained (LoRA, or a
    full fine-tune with frozen embeddings) — backpropagation stops at layer ``k``: the
    leftover parameters of layers ``< k`` are frozen too (their optimizer state is
    released) and a forward hook detaches the output of layer ``k - 1``. Without it a
    full fine-tune keeps back-propagating through the frozen prefix (``2 x`` its
    forward matmul FLOPs) only to reach its norm weights. Consequence: those norm
    weights stop training. Forward values and the gradients of every parameter above
    layer ``k`` are unchanged. Under LoRA the base model's norms are already frozen, so
    autograd truncates by itself; the hook only makes it explicit.

``merge_lora_on_freeze``
    When every active adapter on a LoRA-wrapped projection is frozen, ``s * B A`` is
    merged into the base weight; PEFT then runs only the base matmul for that module
    (the adapter's two matmuls and its dropout disappear from the forward pass). The
    adapter tensors (``r x (in + out)`` values, frozen) stay in place so the adapter
    still saves as usual: base + saved adapter equals the merged model. With
    ``lora.dropout > 0`` a merged adapter no longer sees dropout (same in expectation;
    identical in eval mode).

``prune_optimizer``
    Frozen parameters are removed from the optimizer's ``param_groups`` (their state is
    already released by the freeze), so ``optimizer.step()`` and ``zero_grad()`` do not
    even visit them. Without it ``torch.optim`` still loops over them in Python each
    step (they have no gradient, so no arithmetic is done). Group dicts are kept (the
    LR scheduler holds them); only their ``params`` lists shrink. On resume the frozen
    set is re-applied before the optimizer state is loaded, so the pruned groups match.

:meth:`Savings.sync` applies whatever the current frozen set allows; it is idempotent
and the Controller calls it after every freeze decision and after restoring a
checkpoint. The same primitives (:func:`merge_adapters`, :func:`unmerge_adapters`,
:func:`prune_param_groups`, :class:`BackwardTruncation`) are used by
:mod:`grades.bench` to measure each saving.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from .components import LANGUAGE, Component
from .config import ConfigError, closest
from .flops.tally import unwrap
from .freezer import base_optimizer, freeze_params


@dataclass
class SavingsConfig:
    """Which savings to apply on top of a plain freeze (all off by default)."""

    truncate_backward: bool = False
    merge_lora_on_freeze: bool = False
    prune_optimizer: bool = False

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if not isinstance(v, bool):
                raise ConfigError(f"savings.{f.name} = {v!r} is invalid: must be true or false")

    @property
    def any(self) -> bool:
        return self.truncate_backward or self.merge_lora_on_freeze or self.prune_optimizer

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict | None, where: str = "savings") -> "SavingsConfig":
        d = dict(d or {})
        names = {f.name for f in fields(cls)}
        for key in d:
            if key not in names:
                raise ConfigError(f"{where}: unknown field '{key}'{closest(key, names)}; valid fields: {sorted(names)}")
        return cls(**d)


# ------------------------------------------------------------------ primitives
def _lora_modules(components: list[Component]) -> dict[int, tuple[nn.Module, list[int]]]:
    """id(LoRA-wrapped module) -> (module, indices of its components)."""
    out: dict[int, tuple[nn.Module, list[int]]] = {}
    for i, c in enumerate(components):
        if c.lora:
            out.setdefault(id(c.module), (c.module, []))[1].append(i)
    return out


def merge_adapters(module: nn.Module, adapters: list[str]) -> bool:
    """Merge ``adapters`` of a PEFT LoRA layer into its base weight (no-op if merged)."""
    todo = [a for a in adapters if a not in getattr(module, "merged_adapters", [])]
    if todo:
        module.merge(adapter_names=todo)
    return bool(todo)


def unmerge_adapters(module: nn.Module) -> bool:
    """Undo :func:`merge_adapters` (used by the benchmark to switch configurations)."""
    if getattr(module, "merged", False):
        module.unmerge()
        return True
    return False


def prune_param_groups(optimizer) -> int:
    """Drop parameters with ``requires_grad=False`` from every param group; returns how many."""
    opt = base_optimizer(optimizer)
    removed = 0
    for group in opt.param_groups:
        keep = [p for p in group["params"] if p.requires_grad]
        removed += len(group["params"]) - len(keep)
        group["params"] = keep
    return removed


def _detach_output(module, args, output):
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, tuple) and output and isinstance(output[0], torch.Tensor):
        return (output[0].detach(),) + tuple(output[1:])
    return output


class BackwardTruncation:
    """Stop backpropagation below the longest fully frozen prefix of decoder layers."""

    def __init__(self, model: nn.Module, components: list[Component]) -> None:
        from .flops import language_blocks  # the block list, found the same way the FLOPs model does

        self.model = model
        blocks, owner = language_blocks(model)
        self.blocks = [b for b, _, _ in blocks]
        base = unwrap(model)
        emb = base.get_input_embeddings() if hasattr(base, "get_input_embeddings") else None
        head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
        self._emb = emb
        # parameters "above" a cut at layer k, apart from blocks[k:]: the final norm and
        # other decoder-level modules after the blocks, and the lm_head
        block_list = next(m for m in owner.children() if isinstance(m, nn.ModuleList) and
                          any(m_ is self.blocks[0] for m_ in m))
        after: set[int] = set()
        for child in owner.children():
            if child is block_list or child is emb:
                continue
            after |= {id(p) for p in child.parameters()}
        if head is not None:
            after |= {id(p) for p in head.parameters()}
        self._after = after
        self._block_params = [{id(p) for p in b.parameters()} for b in self.blocks]
        self._all = list(model.parameters())
        self._lang = [(i, c) for i, c in enumerate(components) if c.tower == LANGUAGE]
        self.k = 0
        self._hook = None
        self.released_optimizer_bytes = 0
        self.frozen_extra: list[str] = []  # names of the small parameters it froze
        self._names = {id(p): n for n, p in model.named_parameters()}

    def _prefix(self, frozen: list[bool]) -> int:
        k = 0
        while k < len(self.blocks):
            comps = [i for i, c in self._lang if c.layer == k]
            if not comps or not all(frozen[i] for i in comps):
                break
            k += 1
        return k

    def _below_ok(self, k: int) -> bool:
        """Nothing trains below layer k except small parameters of blocks[:k]."""
        if self._emb is not None and any(p.requires_grad for p in self._emb.parameters()):
            return False
        above = set(self._after)
        for s in self._block_params[k:]:
            above |= s
        prefix = set().union(*self._block_params[:k]) if k else set()
        for p in self._all:
            if p.requires_grad and id(p) not in above and id(p) not in prefix:
                return False
        return True

    def sync(self, frozen: list[bool], optimizer=None) -> int:
        """Move the cut up to the current fully frozen prefix; returns the new k."""
        k = self._prefix(frozen)
        if k <= self.k or not self._below_ok(k):
            return self.k
        extra = [p for b in self.blocks[:k] for p in b.parameters() if p.requires_grad]
        self.frozen_extra += [self._names.get(id(p), "?") for p in extra]
        self.released_optimizer_bytes += freeze_params(extra, optimizer)
        self.install(k)
        return k

    def install(self, k: int) -> None:
        """Detach the output of layer k-1 (k=0 removes the hook)."""
        self.remove()
        self.k = k
        if k > 0:
            self._hook = self.blocks[k - 1].register_forward_hook(_detach_output)

    def remove(self) -> None:
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self.k = 0


# ----------------------------------------------------------------- controller
class Savings:
    """Applies the configured savings to the live frozen set (see the module docstring)."""

    def __init__(self, model: nn.Module, components: list[Component], config: SavingsConfig | dict | None,
                 optimizer=None) -> None:
        self.config = config if isinstance(config, SavingsConfig) else SavingsConfig.from_dict(config)
        self.model = model
        self.components = components
        self.optimizer = optimizer
        self.truncation = BackwardTruncation(model, components) if self.config.truncate_backward else None
        self._lora = _lora_modules(components) if self.config.merge_lora_on_freeze else {}
        self.merged_modules = 0
        self.merged_adapters = 0
        self.pruned_params = 0

    def set_optimizer(self, optimizer) -> None:
        self.optimizer = optimizer

    def sync(self, frozen: list[bool]) -> None:
        cfg = self.config
        if cfg.merge_lora_on_freeze:
            for key, (mod, idx) in list(self._lora.items()):
                if not all(frozen[i] for i in idx):
                    continue
                names = [self.components[i].adapter for i in idx]
                active = set(getattr(mod, "active_adapters", names))
                if not active <= set(names):  # an untracked active adapter would be skipped too
                    continue
                with torch.no_grad():
                    if merge_adapters(mod, names):
                        self.merged_modules += 1
                        self.merged_adapters += len(names)
                del self._lora[key]
        if cfg.truncate_backward and self.truncation is not None:
            self.truncation.sync(frozen, self.optimizer)
        if cfg.prune_optimizer and self.optimizer is not None:
            self.pruned_params += prune_param_groups(self.optimizer)

    def summary(self) -> dict:
        t = self.truncation
        return {
            "config": self.config.to_dict(),
            "truncated_layers": t.k if t else 0,
            "truncation_frozen_params": len(t.frozen_extra) if t else 0,
            "truncation_released_optimizer_bytes": t.released_optimizer_bytes if t else 0,
            "merged_modules": self.merged_modules,
            "merged_adapters": self.merged_adapters,
            "pruned_optimizer_params": self.pruned_params,
        }


__all__ = ["SavingsConfig", "Savings", "BackwardTruncation", "merge_adapters", "unmerge_adapters",
           "prune_param_groups"]
