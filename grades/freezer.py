"""What a freeze does, and the record of every freeze.

Freezing a component sets ``requires_grad=False`` on its parameters, drops their
gradients and releases their optimizer state (Adam's two moments are 2x the
parameter's bytes), so the memory comes back and the optimizer does no more work for
them. Autograd then skips the weight-gradient matmuls of frozen matrices, and the
input-gradient matmuls too where nothing below needs a gradient; gradients still flow
*through* a frozen matrix to the trainable ones beneath it.

Sharded parameters (FSDP2): each rank releases its own shard's optimizer state; the
freeze is applied on every rank at the same step (by the Controller), so the ranks keep
the same trainable set.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .components import Component
from .shards import local_bytes


def base_optimizer(optimizer):
    """Unwrap accelerate / DeepSpeed style wrappers down to the torch optimizer."""
    seen = 0
    while hasattr(optimizer, "optimizer") and seen < 5:
        optimizer = optimizer.optimizer
        seen += 1
    return optimizer


def freeze_params(params: list[torch.nn.Parameter], optimizer=None) -> int:
    """Freeze ``params`` and release their optimizer state; returns bytes released (by this
    rank: its shard's, when the parameters are sharded)."""
    released = 0
    opt = base_optimizer(optimizer) if optimizer is not None else None
    for p in params:
        p.requires_grad_(False)
        p.grad = None
        if opt is not None:
            state = opt.state.pop(p, None)
            if state:
                released += sum(local_bytes(v) for v in state.values() if torch.is_tensor(v))
    return released


@dataclass
class FreezeEvent:
    step: int
    component: str
    layer: int
    kind: str
    type: str
    tower: str
    params: int
    signal: float
    tau: float
    reason: str = "converged"

    def record(self) -> dict:
        return dict(self.__dict__)


class Freezer:
    """The live frozen set of a run, and its events."""

    def __init__(self, components: list[Component], optimizer=None) -> None:
        self.components = components
        self.optimizer = optimizer
        self.frozen = [False] * len(components)
        self.events: list[FreezeEvent] = []
        self.released_optimizer_bytes = 0
        self.version = 0  # bumps on every change (cheap cache key for FLOPs)

    @property
    def active(self) -> list[bool]:
        return [not f for f in self.frozen]

    @property
    def n_frozen(self) -> int:
        return sum(self.frozen)

    @property
    def frozen_ratio(self) -> float:
        return self.n_frozen / max(1, len(self.components))

    @property
    def frozen_param_ratio(self) -> float:
        total = sum(c.numel for c in self.components)
        return sum(c.numel for c, f in zip(self.components, self.frozen) if f) / max(1, total)

    def freeze(self, index: int, step: int, signal: float = float("nan"), tau: float = float("nan"),
               reason: str = "converged") -> FreezeEvent | None:
        if self.frozen[index]:
            return None
        comp = self.components[index]
        self.released_optimizer_bytes += freeze_params(comp.params, self.optimizer)
        self.frozen[index] = True
        self.version += 1
        ev = FreezeEvent(step, comp.name, comp.layer, comp.kind, comp.type, comp.tower, comp.numel,
                         float(signal), float(tau), reason)
        self.events.append(ev)
        return ev

    def state_dict(self) -> dict:
        return {"frozen": list(self.frozen), "events": [e.record() for e in self.events],
                "released_optimizer_bytes": self.released_optimizer_bytes}

    def load_state_dict(self, state: dict) -> None:
        """Re-apply a saved frozen set (on resume)."""
        if len(state["frozen"]) != len(self.components):
            raise ValueError(f"saved frozen set has {len(state['frozen'])} components, model has {len(self.components)}")
        for i, f in enumerate(state["frozen"]):
            if f and not self.frozen[i]:
                freeze_params(self.components[i].params, self.optimizer)
                self.frozen[i] = True
        self.events = [FreezeEvent(**e) for e in state["events"]]
        self.released_optimizer_bytes = state.get("released_optimizer_bytes", 0)
        self.version += 1
