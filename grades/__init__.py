"""GradES: gradient-based early stopping by freezing converged weight matrices.

Public API::

    from grades import GradESConfig, GradESCallback      # Trainer / TRL drop-in
    from grades import discover_components, Controller   # for custom training loops
"""

from .components import Component, UnknownArchitectureError, discover_components
from .config import ConfigError, GradESConfig
from .controller import Controller
from .coverage import UntrackedWeightsError

__version__ = "0.1.0"


def __getattr__(name):  # transformers is imported only when the callback is used
    if name == "GradESCallback":
        from .callback import GradESCallback

        return GradESCallback
    raise AttributeError(f"module 'grades' has no attribute {name!r}")


__all__ = ["GradESConfig", "GradESCallback", "ConfigError", "Component", "Controller",
           "UnknownArchitectureError", "UntrackedWeightsError", "discover_components", "__version__"]
