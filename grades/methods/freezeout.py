"""FreezeOut (Brock et al., 2017): freeze layers on a fixed schedule, lowest first.

Decision rule: with L layers indexed i = 0..L-1 from the input upwards (see
:func:`grades.methods.bottomk.layer_units`; vision-tower blocks before language blocks),
layer i trains for the fraction

    f_i = s(t0 + (1 - t0) * i / (L - 1))        s = identity | x^2 | x^3  ("scale")

of the planned optimizer steps T, and all its components are frozen right after
optimizer step  t_i = max(1, ceil(f_i * T)). As in the original code, ``t0`` is given
*before* scaling (cubic with t0 = 0.8 freezes the first layer at 0.512 T) and the top
layer has f = 1: it trains for the whole run, so FreezeOut never freezes every
component and never stops training early — its saving is the shrinking backward pass.
A layer whose t_i >= T is never frozen (there is nothing left to save). With L = 1 the
single layer is the top layer.

Defaults: ``t0 = 0.5``, ``scale = linear`` — the configuration the FreezeOut author
reports worked out of the box (his scripts default to cubic with t0 = 0.8; both are
one config line away).

Not reproduced: FreezeOut also anneals each layer's learning rate to zero by t_i
(cosine) and optionally scales initial learning rates by 1/f_i. We do not change
per-layer learning rates; layers keep the run's optimizer and schedule until frozen.

Parameters: t0 in [0, 1]; scale one of linear, squared, cubic.
"""

from __future__ import annotations

import math

from ..config import closest
from .base import Decision, MethodContext, StoppingMethod
from .bottomk import bad_param, is_number, layer_units

SCALES = {"linear": lambda x: x, "squared": lambda x: x * x, "cubic": lambda x: x * x * x}


class FreezeOut(StoppingMethod):
    name = "freezeout"

    def __init__(self, t0: float = 0.5, scale: str = "linear") -> None:
        if not is_number(t0) or not 0 <= t0 <= 1:
            raise bad_param(self.name, "t0", t0, "a number in [0, 1] (the first layer's share of training, "
                                                 "before scaling)")
        if scale not in SCALES:
            raise bad_param(self.name, "scale", scale, f"one of {list(SCALES)}{closest(str(scale), SCALES)}")
        self.t0, self.scale = float(t0), scale
        self.done: set[int] = set()  # unit positions already frozen

    @staticmethod
    def fractions(n_layers: int, t0: float, scale: str) -> list[float]:
        """Share of the planned steps each layer trains for, lowest layer first."""
        s = SCALES[scale]
        if n_layers <= 1:
            return [1.0] * n_layers
        return [s(t0 + (1 - t0) * i / (n_layers - 1)) for i in range(n_layers)]

    def bind(self, ctx: MethodContext) -> None:
        super().bind(ctx)
        self.units = layer_units(ctx.components)
        T = ctx.planned_steps
        self.fracs = self.fractions(len(self.units), self.t0, self.scale)
        self.schedule = [max(1, math.ceil(f * T - 1e-9)) for f in self.fracs]  # freeze after this step

    def after_optimizer_step(self, step: int, loss: float | None = None) -> Decision | None:
        T = self.ctx.planned_steps
        due = [u for u, t in enumerate(self.schedule) if t < T and t <= step and u not in self.done]
        if not due:
            return None
        idx = []
        for u in due:
            self.done.add(u)
            idx.extend(i for i in self.units[u][1] if not self.ctx.frozen[i])
        d = Decision(freeze=idx, values={i: float("nan") for i in idx}, taus={i: float("nan") for i in idx},
                     freeze_reason="schedule")
        if all(self.ctx.frozen[i] or i in idx for i in range(len(self.ctx.components))):
            d.stop, d.reason = True, "all components frozen"  # unreachable with the standard schedule
        return d

    def summary(self) -> dict:
        T = self.ctx.planned_steps
        return {"method": self.name, "t0": self.t0, "scale": self.scale,
                "schedule": [{"layer": f"{tw}.{ly}", "fraction": round(f, 6), "freeze_after_step": t if t < T else None}
                             for ((tw, ly), _), f, t in zip(self.units, self.fracs, self.schedule)]}

    def state_dict(self) -> dict:
        return {"done": sorted(self.done)}

    def load_state_dict(self, state: dict) -> None:
        self.done = set(state["done"])
