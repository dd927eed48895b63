"""Memory a training run needs per GPU: estimated from the model's shapes before anything is submitted, and measured on CPU.

    arch       the shapes: a model built on the meta device from its config.json (prepared
               directory, Hugging Face cache, built-in table of the paper's models, tiny: options)
    estimate   bytes per GPU by part: parameters, gradients, optimizer, GradES state,
               activations, transient, overhead
    fit        whether a run fits its GPUs, and which change would make it fit; the plan table
    measure    the peak of a few real training steps on CPU, to check the estimate against
    cli        ``python -m grades.memory estimate|measure``
"""

from .arch import KNOWN, Arch, Dims, resolve_arch
from .estimate import GIB, PARTS, Estimate, estimate
from .fit import Fit, check_fit, plan_table

__all__ = ["GIB", "KNOWN", "PARTS", "Arch", "Dims", "Estimate", "Fit", "check_fit", "estimate", "plan_table",
           "resolve_arch"]
