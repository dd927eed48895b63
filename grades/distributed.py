"""The process group of multi-process training: ranks from the launcher, joined with an explicit timeout.

One process per GPU (``WORLD_SIZE`` > 1 in the environment, set by torchrun or
accelerate). :class:`Dist` reads the ranks, joins the group (NCCL on GPUs, gloo on
CPUs) with an explicit collective timeout, or makes a group of one for a single process
that trains sharded (FSDP2 with a world of one: the same code path), and gives each
rank its rows of the global batch (:meth:`Dist.shard`). :func:`agree` puts rank 0's
decision on every rank.

Data parallelism itself is torch's FSDP2 (``fully_shard``, applied by
:mod:`grades.train.parallel`): parameters, gradients and optimizer state are sharded,
gradients reduce-scattered after each backward. The library measures sharded
parameters through :mod:`grades.shards`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

#: collective timeout when the run config gives none (torch's own default for gloo and NCCL
#: is shorter or differs between versions; a checkpoint of a large model takes minutes)
DEFAULT_TIMEOUT_S = 1800


def _env_int(name: str, default: int) -> int:
    v = os.environ.get(name, "").strip()
    return int(v) if v else default


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    owns_group: bool = False  # this object initialised the process group (and destroys it)

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls) -> "Dist":
        world = _env_int("WORLD_SIZE", 1)
        return cls(rank=_env_int("RANK", 0), world=world, local_rank=_env_int("LOCAL_RANK", 0),
                   local_world=_env_int("LOCAL_WORLD_SIZE", world))

    def init(self, device_type: str = "cpu", *, timeout_s: float | None = None,
             group_of_one: bool = False) -> "Dist":
        """Join the launcher's process group (NCCL on GPUs, gloo on CPUs), with collectives
        timing out after ``timeout_s`` seconds (default :data:`DEFAULT_TIMEOUT_S`).

        A single process joins nothing, unless ``group_of_one``: then it makes a process
        group of one (an in-memory store), so that sharded training runs the same code with
        a world of one."""
        if not self.enabled and not group_of_one:
            return self
        import datetime

        import torch.distributed as dist

        if not dist.is_initialized():
            if device_type == "cuda":
                torch.cuda.set_device(self.local_rank)
            backend = "nccl" if device_type == "cuda" else "gloo"
            timeout = datetime.timedelta(seconds=timeout_s or DEFAULT_TIMEOUT_S)
            if self.enabled:
                dist.init_process_group(backend=backend, timeout=timeout)
            else:
                dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1,
                                        timeout=timeout)
            self.owns_group = True
        if dist.get_world_size() != self.world or dist.get_rank() != self.rank:
            raise RuntimeError(f"process group (rank {dist.get_rank()} of {dist.get_world_size()}) does not match "
                               f"RANK={self.rank} WORLD_SIZE={self.world}")
        return self

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()
            self.owns_group = False

    # ------------------------------------------------------------ batches
    def check_batch(self, batch_size: int) -> None:
        if batch_size % self.world:
            raise ValueError(f"batch_size {batch_size} (global, per micro-step) is not divisible by the "
                             f"{self.world} processes; use a multiple of {self.world}")

    def shard(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """This rank's rows of a global batch (contiguous, equal shares)."""
        if not self.enabled:
            return batch
        n = next(iter(batch.values())).shape[0]
        per = n // self.world
        lo = self.rank * per
        return {k: v[lo: lo + per] for k, v in batch.items()}

    # -------------------------------------------------------- collectives
    def all_reduce_sum(self, x: float, device: torch.device | str = "cpu") -> float:
        if not self.enabled:
            return x
        import torch.distributed as dist

        t = torch.tensor([x], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        """Wait for every rank (nothing to wait for in a single process)."""
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


def active_world() -> int:
    """World size of an initialised process group, else 1."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def agree(obj):
    """Rank 0's ``obj`` on every rank (identity without a process group)."""
    if active_world() <= 1:
        return obj
    import torch.distributed as dist

    box = [obj if dist.get_rank() == 0 else None]
    device = None
    if dist.get_backend() == "nccl":
        device = torch.device("cuda", torch.cuda.current_device())
    dist.broadcast_object_list(box, src=0, device=device)
    return box[0]
