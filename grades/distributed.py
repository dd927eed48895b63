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
        """Refuse a global batch that the processes cannot share (see :meth:`rows`)."""
        if batch_size % self.world and self.world % batch_size:
            raise ValueError(f"batch_size {batch_size} (global, per micro-step) cannot be shared by the "
                             f"{self.world} processes: use a multiple of {self.world}, or a divisor of it")

    def rows(self, n: int) -> tuple[int, int, float]:
        """This rank's rows ``[lo, hi)`` of a global batch of ``n`` rows, and the weight of its loss.

        ``n`` a multiple of the world: equal contiguous shares, weight 1. ``n`` a divisor of
        the world (e.g. one example on two GPUs): every rank takes one row, each row is taken
        by ``world / n`` ranks, whose losses are weighted ``n / world`` so that the sum over
        ranks is still the global batch's loss (compute is repeated, memory is still sharded)."""
        if n % self.world == 0:
            per = n // self.world
            return self.rank * per, (self.rank + 1) * per, 1.0
        if self.world % n == 0:
            r = self.rank % n
            return r, r + 1, n / self.world
        raise ValueError(f"a batch of {n} rows cannot be shared by {self.world} processes")

    def shard(self, batch: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], float]:
        """This rank's rows of a global batch, and the weight of its loss (:meth:`rows`).

        A tensor that is not one row per example (a VLM's patches of every picture, concatenated)
        cannot be split by rows: it passes whole when this rank takes every row, else it is refused."""
        if not self.enabled:
            return batch, 1.0
        n = batch["input_ids"].shape[0]
        lo, hi, weight = self.rows(n)
        out = {}
        for k, v in batch.items():
            if v.shape[0] == n:
                out[k] = v[lo:hi]
            elif (lo, hi) == (0, n):
                out[k] = v
            else:
                raise ValueError(f"cannot split the batch's {k!r} (first dimension {v.shape[0]}, not one per "
                                 f"each of its {n} rows) over {self.world} processes; use a batch_size that "
                                 f"divides {self.world} (e.g. 1)")
        return out, weight

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
