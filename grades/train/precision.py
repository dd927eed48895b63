"""The numeric precision of a run: which dtype holds the weights, the optimizer state, the matmuls and the gradient sums.

``precision`` in the run config (absent: ``fp32`` for a float32 model, ``bf16-mixed``
for a model loaded in bfloat16 or float16):

=============  ====================  ===============  ==============  =================
precision      trainable weights     optimizer state  compute         gradient sums
=============  ====================  ===============  ==============  =================
fp32           float32               float32          float32         float32
bf16-mixed     float32 (master)      float32          bfloat16        float32
bf16-pure      bfloat16              bfloat16         bfloat16        bfloat16
=============  ====================  ===============  ==============  =================

``bf16-mixed`` is the standard recipe (FSDP2's ``MixedPrecisionPolicy``: the fp32 master
shards are all-gathered in bfloat16 for forward and backward, gradients are reduced and
kept in float32), so it always trains sharded (``parallel: fsdp``, a world of one in a
single process). Weights that are never trained (a LoRA run's base) stay in the dtype
they were loaded in. ``bf16-pure`` is what the harness did before: at lr 2e-5 most AdamW
updates of weights of size 0.02 round away in bfloat16, so it is accepted only when asked
for, with a warning when the config is read. ``model.dtype`` says how the checkpoint is
loaded and how the final weights are saved.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict, dataclass

import torch

from ..config import ConfigError

PRECISIONS = ("fp32", "bf16-mixed", "bf16-pure")


class PureBf16Warning(UserWarning):
    """A run trains its weights and optimizer state in bfloat16 (``precision: bf16-pure``)."""


@dataclass(frozen=True)
class Precision:
    """The dtypes of one run (names of torch dtypes)."""

    name: str
    master: str  # trainable weights and optimizer state
    compute: str  # forward and backward matmuls
    reduce: str  # gradients, summed over ranks and accumulated
    saved: str  # the final weights on disk (the model's dtype)

    @property
    def mixed(self) -> bool:
        return self.compute != self.master

    def record(self) -> dict:
        return asdict(self)


def precision_name(cfg: dict) -> str:
    """The run's precision: ``precision`` as given, else by the model's dtype."""
    given = cfg.get("precision")
    if given:
        return given
    return "fp32" if cfg["model"]["dtype"] == "float32" else "bf16-mixed"


def resolve_precision(cfg: dict) -> Precision:
    """The dtypes of ``cfg``'s run."""
    name = precision_name(cfg)
    saved = cfg["model"]["dtype"]
    if name == "fp32":
        return Precision(name, "float32", "float32", "float32", saved)
    if name == "bf16-mixed":
        return Precision(name, "float32", "bfloat16", "float32", saved)
    return Precision(name, "bfloat16", "bfloat16", "bfloat16", saved)


def check_precision(cfg: dict) -> None:
    """Refuse what cannot run and warn about pure bfloat16, when the config is read."""
    name = precision_name(cfg)
    if name == "bf16-mixed" and cfg.get("parallel") == "none":
        raise ConfigError("precision: bf16-mixed trains with FSDP2's mixed precision (fp32 master weights, "
                          "bfloat16 compute); it needs parallel: fsdp (a world of one in a single process) "
                          "- remove parallel: none, or use precision: fp32")
    if name == "bf16-pure":
        warnings.warn(f"run '{cfg.get('name')}': precision: bf16-pure keeps the weights and AdamW's state in "
                      "bfloat16, without an fp32 master copy; small updates (lr 2e-5 on weights of size 0.02) "
                      "round away and most weights do not change. Use bf16-mixed unless this is what you "
                      "want to measure.", PureBf16Warning, stacklevel=2)


def cast_trainable(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Trainable parameters of ``module`` (its own and its children's) cast to ``dtype`` in place.

    ``p.data`` is replaced, so the ``Parameter`` objects, and weight ties, are kept."""
    for p in module.parameters():
        if p.requires_grad and p.dtype != dtype:
            p.data = p.data.to(dtype)


def cast_all(module: torch.nn.Module, dtype: torch.dtype) -> None:
    """Every floating-point parameter of ``module`` cast to ``dtype`` in place (ties kept)."""
    for p in module.parameters():
        if p.is_floating_point() and p.dtype != dtype:
            p.data = p.data.to(dtype)
