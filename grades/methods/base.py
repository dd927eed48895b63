"""The interface every stopping / freezing method implements.

A method observes training through three hooks and answers with a :class:`Decision`
(freeze these components, stop training). It never touches ``requires_grad`` or the
optimizer itself: the :class:`grades.controller.Controller` applies decisions, so time,
FLOPs and memory are accounted the same way for every method.

Hooks, in the order a training step calls them::

    before_optimizer_step(step)   gradients are final (accumulated, clipped)
    after_optimizer_step(step, loss)  weights are updated
    on_validation(step, val_loss)  only for methods with ``needs_validation``

``step`` is the 1-based index of the optimizer step being taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from ..components import Component
from ..coverage import Coverage


@dataclass
class Decision:
    freeze: list[int] = field(default_factory=list)  # component indices
    values: dict[int, float] = field(default_factory=dict)  # signal per frozen index
    taus: dict[int, float] = field(default_factory=dict)
    stop: bool = False
    reason: str = ""  # why training stops (with stop=True)
    freeze_reason: str = "converged"  # recorded on each freeze event: converged, schedule, static, ...


@dataclass
class MethodContext:
    model: torch.nn.Module
    components: list[Component]
    planned_steps: int
    frozen: list[bool]  # live view owned by the Freezer; read-only for methods
    coverage: Coverage | None = None  # which block weight matrices the components hold (grades.coverage)


class StoppingMethod:
    """Base class: a method that never freezes and never stops (plain training)."""

    name = "none"
    needs_validation = False  # True: the loop must call on_validation every eval_every steps
    eval_every: int | None = None
    #: True when every rank of a multi-process run computes the same decision by itself (its
    #: inputs are summed over ranks, e.g. GradES's signals), so the Controller applies it as
    #: is; otherwise rank 0's decision is broadcast to every rank (grades.distributed.agree)
    rank_consistent = False
    #: False for methods that cannot read sharded (FSDP) parameters: a sharded run refuses them
    supports_sharding = True

    def __init__(self, **params: Any) -> None:
        if params:
            raise TypeError(f"method '{self.name}' takes no parameters, got {sorted(params)}")

    def bind(self, ctx: MethodContext) -> None:
        self.ctx = ctx

    def before_optimizer_step(self, step: int) -> Decision | None:
        return None

    def after_optimizer_step(self, step: int, loss: float | None = None) -> Decision | None:
        return None

    def on_validation(self, step: int, val_loss: float) -> Decision | None:
        return None

    def signal_history(self) -> list[tuple[int, torch.Tensor]]:
        """(step, per-component values) pairs, for methods that measure signals."""
        return []

    def summary(self) -> dict:
        return {"method": self.name}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
