"""How a run's model is spread over its processes: FSDP2 (``fully_shard``) per transformer block, or not at all.

``parallel`` in the run config (absent: ``fsdp`` when the launcher starts several
processes or the precision is ``bf16-mixed``, else ``none``):

* ``none``: one process, the model as loaded (plain tensors). A float32 run is then
  exactly what the harness always did.
* ``fsdp``: torch's FSDP2 on a one-dimensional mesh of all ranks (a world of one in a
  single process: the same code path). Every transformer block (of the language model
  and of a vision tower, :func:`grades.components.block_lists`) is one ``fully_shard``
  unit, the root module (embeddings, final norm, head) another. Parameters, gradients
  and optimizer state are split by rows over the ranks; a block's weights are
  all-gathered for its forward and backward and freed after; its gradients are
  reduce-scattered after each backward, *summed* over ranks (each rank's loss is its
  share of the global batch's token-mean, :mod:`grades.train.loop`), and accumulated in
  the sharded gradient. With ``bf16-mixed`` the fp32 master shards are gathered in
  bfloat16 and gradients reduced in float32 (:mod:`grades.train.precision`).

A block whose matrices GradES froze keeps being gathered for the forward pass (its
weights are needed) but produces no weight gradients and reduces nothing for them.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch

from ..components import block_lists
from ..config import ConfigError
from ..shards import is_sharded, mesh_rank
from .precision import Precision, cast_all, cast_trainable, precision_name

STRATEGIES = ("none", "fsdp")


@dataclass
class Parallel:
    """How the run's model is spread: the strategy, the number of processes, FSDP's device mesh."""

    strategy: str
    world: int
    mesh: Any = None

    @property
    def sharded(self) -> bool:
        return self.strategy == "fsdp"

    def record(self) -> dict:
        return {"strategy": self.strategy, "world_size": self.world}


def parallel_strategy(cfg: dict, world: int) -> str:
    """``parallel`` as given, else ``fsdp`` for several processes or mixed precision, ``none`` otherwise."""
    given = cfg.get("parallel")
    if given == "none" and world > 1:
        raise ConfigError(f"parallel: none with {world} processes: data-parallel training is FSDP2; "
                          "remove parallel: none or start one process")
    if given:
        return given
    return "fsdp" if world > 1 or precision_name(cfg) == "bf16-mixed" else "none"


def place_model(model: torch.nn.Module, precision: Precision, par: Parallel, device: torch.device) -> None:
    """Cast the model to the run's precision and place it: on ``device``, or sharded over ``par``'s ranks."""
    if not par.sharded:
        if precision.name != "bf16-mixed":
            cast_all(model, getattr(torch, precision.master))
        if device.type != "cpu":
            model.to(device)
        return
    par.mesh = shard_model(model, precision, device, par.world)


def shard_model(model: torch.nn.Module, precision: Precision, device: torch.device, world: int):
    """``fully_shard`` every transformer block, then the root; returns the device mesh.

    Trainable weights are cast to the master dtype block by block just before the block is
    sharded, so a process never holds more than one block in both dtypes."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world,))
    master = getattr(torch, precision.master)
    cast = cast_trainable if precision.name == "bf16-mixed" else cast_all
    policy = MixedPrecisionPolicy(param_dtype=getattr(torch, precision.compute) if precision.mixed else None,
                                  reduce_dtype=getattr(torch, precision.reduce))
    blocks = [b for _, lst, _, _ in block_lists(model) for b in lst]
    if not blocks:
        warnings.warn("no transformer blocks found: the model is sharded as one unit (every weight is gathered "
                      "at once in forward and backward)", stacklevel=2)
    for b in blocks:
        cast(b, master)
        fully_shard(b, mesh=mesh, mp_policy=policy)
    cast(model, master)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    for m in model.modules():  # sums, not means, over ranks (gloo has no pre-multiplied sum)
        if isinstance(m, FSDPModule):
            m.set_gradient_divide_factor(1.0)
            m.set_force_sum_reduction_for_comms(True)
    return mesh


def full_state_dict(model: torch.nn.Module, par: Parallel, dtype: torch.dtype | None,
                    only: set[str] | None = None) -> dict | None:
    """The model's whole weights (those named in ``only``, if given), floating-point ones in
    ``dtype`` (None: as they are), on the CPU of rank 0; None on the other ranks. Every rank
    calls it: a sharded tensor is gathered with a collective, one at a time.

    Without sharding and with nothing to cast: None (the model saves itself as it is)."""
    if not par.sharded and (dtype is None or all(p.dtype == dtype for p in model.parameters()
                                                 if p.is_floating_point())):
        return None
    main = par.mesh is None or mesh_rank(par.mesh) == 0
    out: dict = {}
    gathered: dict[int, torch.Tensor] = {}  # tied weights are gathered once
    for name, t in model.state_dict(keep_vars=True).items():
        if only is not None and name not in only:
            continue
        if id(t) not in gathered:
            with torch.no_grad():
                full = t.detach().full_tensor() if is_sharded(t) else t.detach()
            if dtype is not None and full.is_floating_point():
                full = full.to(dtype)
            gathered[id(t)] = full.cpu() if main else full.new_empty(0)
        if main:
            out[name] = gathered[id(t)]
    return out if main else None
