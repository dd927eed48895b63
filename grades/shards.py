"""Sharded parameters seen from one rank: the local shard, where it sits in its matrix, sums over ranks.

Under FSDP2 (``torch.distributed.fsdp.fully_shard``) every parameter is a ``DTensor``
split by rows over a one-dimensional device mesh (placement ``Shard(0)``, the chunks
of ``torch.chunk``: ``ceil(rows / world)`` rows per rank, the last ranks possibly fewer
or none). Its gradient and its optimizer state are split the same way. The library
(:mod:`grades.signals`, :mod:`grades.freezer`, the methods) measures and frees the
local shard only; a whole-matrix value is the sum of the ranks' partial values, taken
with one collective (:func:`sum_over_ranks`).

Without sharding (plain tensors, no mesh) every helper is the identity, so code written
against these helpers runs unchanged in a single process.
"""

from __future__ import annotations

import math

import torch

try:  # torch built without distributed support: nothing is ever sharded
    from torch.distributed.tensor import DTensor, Shard
except ImportError:  # pragma: no cover
    DTensor = None  # type: ignore[assignment,misc]
    Shard = None  # type: ignore[assignment,misc]


class LayoutError(ValueError):
    """A sharded tensor is not laid out the way the library measures it (rows over a 1-D mesh)."""


def is_sharded(t) -> bool:
    """Whether ``t`` is a DTensor (a sharded parameter, gradient or state)."""
    return DTensor is not None and isinstance(t, DTensor)


def local(t):
    """This rank's shard of ``t`` (a plain tensor, or None, as it is)."""
    return t.to_local() if is_sharded(t) else t


def local_bytes(t) -> int:
    """Bytes of ``t`` held by this rank."""
    v = local(t)
    return v.numel() * v.element_size()


def mesh_of(params) -> object | None:
    """The device mesh of sharded ``params``, None when none is sharded.

    Raises :class:`LayoutError` when some are sharded and others not, or when they live on
    different meshes: their partial values could not be summed with one collective."""
    meshes = [p.device_mesh for p in params if is_sharded(p)]
    if not meshes:
        return None
    if len(meshes) != len(params):
        raise LayoutError(f"{len(params) - len(meshes)} of {len(params)} tracked parameters are not sharded while "
                          "the others are: shard the whole model (fully_shard on the root module too)")
    mesh = meshes[0]
    if any(m != mesh for m in meshes[1:]):
        raise LayoutError("the tracked parameters are sharded over different device meshes")
    if mesh.ndim != 1:
        raise LayoutError(f"a {mesh.ndim}-D device mesh: only one-dimensional (FSDP) meshes are supported")
    return mesh


def check_rows(t) -> None:
    """Raise :class:`LayoutError` unless ``t`` is sharded by rows (``Shard(0)``) over a 1-D mesh."""
    if t.device_mesh.ndim != 1 or len(t.placements) != 1 or not (
            isinstance(t.placements[0], Shard) and t.placements[0].dim == 0):
        raise LayoutError(f"placements {t.placements} on a {t.device_mesh.ndim}-D mesh: only rows split over a "
                          "1-D mesh (FSDP2's default Shard(0)) are supported")


def chunk_rows(rows: int, world: int, rank: int) -> tuple[int, int]:
    """Rows ``[lo, hi)`` of ``rank`` when ``rows`` are split like ``torch.chunk`` over ``world`` ranks."""
    chunk = math.ceil(rows / world) if rows else 0
    lo = min(rank * chunk, rows)
    return lo, min(lo + chunk, rows)


def row_range(t) -> tuple[int, int]:
    """The rows ``[lo, hi)`` of the whole tensor that this rank holds (all rows when not sharded)."""
    if not is_sharded(t):
        return 0, (t.shape[0] if t.ndim else 1)
    check_rows(t)
    rows = t.shape[0]
    lo, hi = chunk_rows(rows, t.device_mesh.size(), t.device_mesh.get_local_rank())
    if t.to_local().shape[0] != hi - lo:
        raise LayoutError(f"rank {t.device_mesh.get_local_rank()} holds {t.to_local().shape[0]} rows of {rows}, expected {hi - lo} "
                          "(torch.chunk's split)")
    return lo, hi


def flat_range(t) -> tuple[int, int]:
    """This rank's elements ``[lo, hi)`` of the whole tensor, flattened (rows are contiguous)."""
    if not is_sharded(t):
        return 0, t.numel()
    lo, hi = row_range(t)
    per_row = math.prod(t.shape[1:])
    return lo * per_row, hi * per_row


def rows_of(full: torch.Tensor, like) -> torch.Tensor:
    """This rank's rows of ``full``, a whole tensor with the shape of the sharded ``like``."""
    if not is_sharded(like):
        return full
    if tuple(full.shape) != tuple(like.shape):
        raise LayoutError(f"a tensor of shape {tuple(full.shape)} for a parameter of shape {tuple(like.shape)}")
    lo, hi = row_range(like)
    return full[lo:hi]


def sharded_like(shard: torch.Tensor, like):
    """``shard`` (this rank's part, any dtype) as a DTensor laid out like the sharded ``like``."""
    return DTensor.from_local(shard, like.device_mesh, like.placements, run_check=False,
                              shape=like.shape, stride=like.stride())


def empty_sharded(shape, dtype: torch.dtype, mesh, device: str | torch.device | None = None):
    """An uninitialised DTensor of ``shape`` split by rows over ``mesh`` (a destination to load a
    shard into); this rank's rows live on ``device`` (default: the mesh's device)."""
    shape = torch.Size(shape)
    lo, hi = chunk_rows(shape[0], mesh.size(), mesh.get_local_rank())
    part = torch.empty((hi - lo, *shape[1:]), dtype=dtype, device=device or mesh.device_type)
    stride = torch.empty(shape, device="meta").stride()
    return DTensor.from_local(part, mesh, [Shard(0)], run_check=False, shape=shape, stride=stride)


def sum_over_ranks(t: torch.Tensor, mesh) -> torch.Tensor:
    """``t`` summed over the ranks of ``mesh``, in place (the identity without a mesh).

    Every rank of the mesh must call it at the same point with a tensor of the same shape."""
    if mesh is None or mesh.size() == 1:
        return t
    import torch.distributed as dist

    dist.all_reduce(t, group=mesh.get_group())
    return t


def mesh_rank(mesh) -> int:
    """This process's rank in ``mesh`` (0 without one)."""
    return 0 if mesh is None else mesh.get_local_rank()
