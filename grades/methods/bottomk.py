"""Bottom-k: a static control that freezes the lowest k layers before any update.

Decision rule: at the first optimizer step (in ``before_optimizer_step(1)``, so the
frozen layers never receive an update) every tracked component of the lowest ``k``
layers is frozen; nothing else ever happens. It answers "how much of GradES's saving
and accuracy does a fixed, signal-free freezing of the same amount buy?".

Parameters (exactly one of them):

    k         number of lowest layers to freeze (integer >= 0, at most the layer count)
    fraction  fraction of the layers to freeze, in [0, 1]: k = floor(fraction * L)

Layers are the (tower, block index) units of the tracked components, ordered from the
input upwards: a vision tower's blocks first, then the language model's (see
:func:`layer_units`). If k equals the number of layers every component is frozen and
training stops at step 1 ("all components frozen").

This module also holds the helpers shared by the layer-wise methods (``autofreeze``,
``freezeout``): :func:`layer_units` and :func:`bad_param`.
"""

from __future__ import annotations

import math

from ..components import LANGUAGE, VISION, Component
from ..config import ConfigError
from .base import Decision, MethodContext, StoppingMethod

_TOWER_ORDER = {VISION: 0, LANGUAGE: 1}


def layer_units(components: list[Component]) -> list[tuple[tuple[str, int], list[int]]]:
    """Group component indices by layer: [((tower, layer), [indices]), ...], lowest first.

    Vision-tower blocks come before language-model blocks (the vision tower feeds the
    language model); within a tower, by block index."""
    units: dict[tuple[str, int], list[int]] = {}
    for i, c in enumerate(components):
        units.setdefault((c.tower, c.layer), []).append(i)
    order = sorted(units, key=lambda u: (_TOWER_ORDER.get(u[0], 2), u[0], u[1]))
    return [(u, units[u]) for u in order]


def bad_param(method: str, field: str, value, rule: str) -> ConfigError:
    return ConfigError(f"method '{method}': {field} = {value!r} is invalid; it must be {rule}")


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


class BottomK(StoppingMethod):
    name = "bottom-k"

    def __init__(self, k: int | None = None, fraction: float | None = None) -> None:
        if (k is None) == (fraction is None):
            raise ConfigError(f"method '{self.name}': set exactly one of k (number of lowest layers) or "
                              f"fraction (share of the layers), got k={k!r}, fraction={fraction!r}")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 0):
            raise bad_param(self.name, "k", k, "an integer >= 0")
        if fraction is not None and (not is_number(fraction) or not 0 <= fraction <= 1):
            raise bad_param(self.name, "fraction", fraction, "a number in [0, 1]")
        self.k_param, self.fraction = k, fraction
        self.applied = False
        self.applied_step: int | None = None

    def bind(self, ctx: MethodContext) -> None:
        super().bind(ctx)
        self.units = layer_units(ctx.components)
        n = len(self.units)
        if self.k_param is not None:
            if self.k_param > n:
                raise bad_param(self.name, "k", self.k_param, f"at most the model's number of layers ({n})")
            self.k = self.k_param
        else:
            self.k = math.floor(self.fraction * n + 1e-9)
        self.targets = [i for _, idx in self.units[: self.k] for i in idx]

    def before_optimizer_step(self, step: int) -> Decision | None:
        if self.applied:
            return None
        self.applied, self.applied_step = True, step
        todo = [i for i in self.targets if not self.ctx.frozen[i]]
        d = Decision(freeze=todo, values={i: float("nan") for i in todo}, taus={i: float("nan") for i in todo},
                     freeze_reason="static")
        if len(self.targets) == len(self.ctx.components):
            d.stop, d.reason = True, "all components frozen"
        return d

    def summary(self) -> dict:
        return {"method": self.name, "k": self.k, "fraction": self.fraction, "layers": len(self.units),
                "frozen_layers": [f"{t}.{layer}" for (t, layer), _ in self.units[: self.k]],
                "applied_step": self.applied_step}

    def state_dict(self) -> dict:
        return {"applied": self.applied, "applied_step": self.applied_step}

    def load_state_dict(self, state: dict) -> None:
        self.applied, self.applied_step = state["applied"], state["applied_step"]
