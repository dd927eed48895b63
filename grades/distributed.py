"""Data-parallel training over ``torch.distributed``, started by torchrun or accelerate.

One process per GPU (``WORLD_SIZE`` > 1 in the environment, set by the launcher). The
training loop (:mod:`grades.train`) then:

* draws the same *global* batch on every rank (same seed) and keeps its own rows
  (:meth:`Dist.shard`), so no sampler state has to be shared;
* scales each rank's loss to ``sum over its label tokens / label tokens of the global
  batch`` (``num_items_in_batch``) and sums the gradients over ranks
  (:meth:`Dist.all_reduce_grads`, bucketed), which gives exactly the gradient of the
  single-process loss over the global batch (up to floating-point order);
* lets the :class:`grades.controller.Controller` take every stopping / freezing
  decision on rank 0 and broadcast it (:func:`agree`), so all ranks freeze the same
  matrices at the same step, keep identical parameter sets, and stop together;
* writes files on rank 0 only.

Every rank holds the whole model and optimizer state (no sharding): see the README for
what fits. Gradients are reduced after the backward pass of the last micro-batch, not
overlapped with it as DDP does: simpler, and correct with matrices that freeze mid-run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

_BUCKET = 1 << 25  # elements per all-reduce bucket (128 MB of fp32)


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

    def init(self, device_type: str = "cpu") -> "Dist":
        """Join the process group of the launcher (NCCL on GPUs, gloo on CPUs)."""
        if not self.enabled:
            return self
        import torch.distributed as dist

        if not dist.is_initialized():
            if device_type == "cuda":
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
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
    def all_reduce_grads(self, params: list[torch.nn.Parameter], bucket: int = _BUCKET) -> None:
        """Sum the gradients of ``params`` over ranks, in place (a missing gradient counts as 0).

        Every rank must pass the same list in the same order (the frozen set is the same
        everywhere because decisions are broadcast)."""
        if not self.enabled or not params:
            return
        import torch.distributed as dist

        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        group: list[torch.Tensor] = []
        size = 0
        for p in params:
            group.append(p.grad)
            size += p.grad.numel()
            if size >= bucket:
                _reduce_flat(group, dist)
                group, size = [], 0
        if group:
            _reduce_flat(group, dist)

    def all_reduce_sum(self, x: float, device: torch.device | str = "cpu") -> float:
        if not self.enabled:
            return x
        import torch.distributed as dist

        t = torch.tensor([x], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        return float(t.item())

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()


def _reduce_flat(tensors: list[torch.Tensor], dist) -> None:
    by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
    for t in tensors:
        by_dtype.setdefault(t.dtype, []).append(t)
    for ts in by_dtype.values():
        flat = torch.cat([t.reshape(-1) for t in ts])
        dist.all_reduce(flat)
        off = 0
        for t in ts:
            t.copy_(flat[off: off + t.numel()].view_as(t))
            off += t.numel()


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
