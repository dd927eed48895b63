"""Registry of stopping / freezing methods: name -> "module:Class", imported lazily.

Add a method: write a subclass of :class:`grades.methods.base.StoppingMethod` in one
file and add one line to ``REGISTRY`` (or call :func:`register` from your own code).
"""

from __future__ import annotations

import importlib

from ..config import ConfigError, closest
from .base import Decision, MethodContext, StoppingMethod

REGISTRY: dict[str, str] = {
    "none": "grades.methods.base:StoppingMethod",
    "grades": "grades.methods.grades:GradES",
}


def register(name: str, target: str | type) -> None:
    """Register a method by import path ("pkg.mod:Class") or class."""
    REGISTRY[name] = target  # type: ignore[assignment]


def get_method_class(name: str) -> type[StoppingMethod]:
    if name not in REGISTRY:
        raise ConfigError(f"method.name = '{name}' is unknown{closest(name, REGISTRY)}; known methods: {sorted(REGISTRY)}")
    target = REGISTRY[name]
    if isinstance(target, type):
        return target
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


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
    try:
        return cls(**spec)
    except TypeError as e:
        raise ConfigError(f"method '{name}': {e}") from None


__all__ = ["REGISTRY", "register", "build_method", "get_method_class", "Decision", "MethodContext", "StoppingMethod"]
