"""Registry of stopping / freezing methods: name -> "module:Class", imported lazily.

Add a method: write a subclass of :class:`grades.methods.base.StoppingMethod` in one
file and add one line to ``REGISTRY`` (or call :func:`register` from your own code).
"""

from __future__ import annotations

import inspect

from ..config import ConfigError, closest
from ..registry import Registry
from .base import Decision, MethodContext, StoppingMethod

REGISTRY = Registry("method", "method.name", {
    "none": "grades.methods.base:StoppingMethod",
    "grades": "grades.methods.grades:GradES",
    "es": "grades.methods.es:EarlyStopping",
    "grades-v1": "grades.methods.grades:GradESV1",
    "grades-weight": "grades.methods.grades:GradESWeight",
    "autofreeze": "grades.methods.autofreeze:AutoFreeze",
    "freezeout": "grades.methods.freezeout:FreezeOut",
    "bottom-k": "grades.methods.bottomk:BottomK",
    "grades-official": "grades.methods.official:OfficialGradES",
    "grades-probe": "grades.calibrate.probe:ProbeGradES",  # python -m grades.calibrate's probe (records, never freezes)
})


def register(name: str, target: str | type) -> None:
    """Register a method by import path ("pkg.mod:Class") or class."""
    REGISTRY.register(name, target)


def get_method_class(name: str) -> type[StoppingMethod]:
    if name not in REGISTRY:
        raise ConfigError(f"method.name = '{name}' is unknown{closest(name, REGISTRY.names())}; "
                          f"known methods: {sorted(REGISTRY.names())}")
    return REGISTRY.get(name)


def build_method(spec: str | dict | None) -> StoppingMethod:
    """Build from "none", "grades" or {"name": "grades", "tau": ..., ...}."""
    if spec is None:
        spec = "none"
    if isinstance(spec, str):
        spec = {"name": spec}
    spec = dict(spec)
    name = spec.pop("name", None)
    if name is None:
        raise ConfigError("method.name is missing; e.g. method: {name: grades, tau: 1e-3, alpha: 0.3}")
    cls = get_method_class(name)
    accepted = _accepted_params(cls)
    if accepted is not None:
        for key in spec:
            if key not in accepted:
                raise ConfigError(f"method '{name}': unknown parameter '{key}'{closest(key, accepted)}; "
                                  f"valid parameters: {sorted(accepted)}")
    try:
        return cls(**spec)
    except TypeError as e:
        raise ConfigError(f"method '{name}': {e}") from None


def _accepted_params(cls) -> set[str] | None:
    """Parameter names a method accepts (GradES: the GradESConfig fields); None if open-ended."""
    accepted = getattr(cls, "config_fields", None)
    if accepted is not None:
        return set(accepted())
    sig = inspect.signature(cls.__init__)
    if any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n in sig.parameters if n != "self"}


__all__ = ["REGISTRY", "register", "build_method", "get_method_class", "Decision", "MethodContext", "StoppingMethod"]
