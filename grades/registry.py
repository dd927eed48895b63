"""Name -> ``"module:attribute"`` registries, imported lazily.

Stopping methods (:mod:`grades.methods`), model sources (:mod:`grades.models`) and
dataset sources (:mod:`grades.data`) are each one :class:`Registry`: adding one is a
module plus one entry (or a :meth:`Registry.register` call from your own code), and
nothing is imported until a name is used, so the packages behind the entries never
import each other.
"""

from __future__ import annotations

import importlib
from typing import Any

from .config import ConfigError, closest


class Registry:
    """``name -> "package.module:attribute"`` (or ``"package.module"`` for the module itself,
    or the object), resolved on first use."""

    def __init__(self, what: str, field: str, entries: dict[str, Any]) -> None:
        self.what = what  # "method", "model source", ...: used in messages
        self.field = field  # the config field that names an entry, e.g. "method.name"
        self.entries: dict[str, Any] = dict(entries)

    def __contains__(self, name: object) -> bool:
        return name in self.entries

    def __iter__(self):
        return iter(self.entries)

    def names(self) -> list[str]:
        return list(self.entries)

    def register(self, name: str, target: Any) -> None:
        """Add or replace an entry: an import path ``"pkg.mod:Attr"`` or the object itself."""
        self.entries[name] = target

    def unknown(self, name: str) -> ConfigError:
        return ConfigError(f"{self.field} = {name!r} is not a known {self.what}{closest(name, self.entries)}; "
                           f"known: {sorted(self.entries)}")

    def get(self, name: str) -> Any:
        if name not in self.entries:
            raise self.unknown(name)
        target = self.entries[name]
        if not isinstance(target, str):
            return target
        return resolve(target)


def resolve(target: str) -> Any:
    """``"pkg.mod:Attr"`` -> the attribute; ``"pkg.mod"`` -> the module."""
    module, _, attr = target.partition(":")
    mod = importlib.import_module(module)
    return getattr(mod, attr) if attr else mod
