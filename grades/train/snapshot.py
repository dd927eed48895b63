"""What a checkpoint holds and how a run is put back from it: tensors shard by shard, the rest in one small file.

A checkpoint folder (:class:`grades.train.checkpoint.Checkpoints`) holds

* the trainable weights, the optimizer state and the large tensors of the controller
  (GradES's previous-gradient or weight buffers), written with
  ``torch.distributed.checkpoint`` (DCP): each rank writes its own shards and, on
  resume, reads only what its shards need, straight into the model built for the run.
  DCP records where every shard sits in its tensor, so a checkpoint of N processes
  resumes on M (``parallel: fsdp`` or ``none``);
* ``meta.pt`` (rank 0): step, config hashes, scheduler, batch-stream position, the
  controller's and method's small state, FLOPs meter, loop counters, and a slot
  (:class:`TensorSlot`) where each large tensor was taken out;
* ``rng-RANK.pt``: each rank's RNG states (resuming on another number of processes,
  every rank takes rank 0's).

A resumed run ends with the same losses, signals and freezes as an uninterrupted one
(same machine, thread count and number of processes; on another number of processes,
up to the order of floating-point sums).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..shards import empty_sharded, is_sharded, local, mesh_of, rows_of, sharded_like, sum_over_ranks
from .checkpoint import CHECKPOINT_FORMAT, META, Checkpoints
from .config import config_hash, resume_hash
from .errors import RunFailed
from .state import LoopState, Training

SMALL = 1 << 16  #: plain tensors with fewer elements stay in meta.pt


@dataclass(frozen=True)
class TensorSlot:
    """Where a tensor was taken out of a state for DCP: its key, shape, dtype and layout."""

    key: str
    shape: tuple
    dtype: torch.dtype
    sharded: bool  # a DTensor split by rows (saved shard by shard)
    on_cpu: bool


def split_tensors(obj, prefix: str, out: dict):
    """``obj`` (nested dicts, lists, tuples) with its DTensors and large tensors replaced by
    :class:`TensorSlot` s; the tensors go into ``out`` under the slots' keys."""
    if isinstance(obj, dict):
        return {k: split_tensors(v, prefix, out) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(split_tensors(v, prefix, out) for v in obj)
    if torch.is_tensor(obj) and (is_sharded(obj) or obj.numel() >= SMALL):
        key = f"{prefix}{len(out)}"
        out[key] = obj
        return TensorSlot(key, tuple(obj.shape), obj.dtype, is_sharded(obj), local(obj).device.type == "cpu")
    return obj


def slots_of(skeleton) -> list[TensorSlot]:
    if isinstance(skeleton, dict):
        return [s for v in skeleton.values() for s in slots_of(v)]
    if isinstance(skeleton, (list, tuple)):
        return [s for v in skeleton for s in slots_of(v)]
    return [skeleton] if isinstance(skeleton, TensorSlot) else []


def fill_tensors(skeleton, loaded: dict):
    """The inverse of :func:`split_tensors`: every slot replaced by its loaded tensor."""
    if isinstance(skeleton, dict):
        return {k: fill_tensors(v, loaded) for k, v in skeleton.items()}
    if isinstance(skeleton, (list, tuple)):
        return type(skeleton)(fill_tensors(v, loaded) for v in skeleton)
    return loaded[skeleton.key] if isinstance(skeleton, TensorSlot) else skeleton


def allocate(slots: list[TensorSlot], mesh, device: torch.device, *, shard_all: bool = False) -> dict:
    """Destinations for DCP to load ``slots`` into, in this run's layout.

    Sharded over ``mesh`` when the run is sharded and the slot was (or, with ``shard_all``,
    when it has a dimension: optimizer state mirrors its parameter); else whole tensors."""
    out = {}
    for s in slots:
        dev = "cpu" if s.on_cpu else device
        if mesh is not None and len(s.shape) and (s.sharded or shard_all):
            out[s.key] = empty_sharded(s.shape, s.dtype, mesh, device=dev)
        else:
            out[s.key] = torch.empty(s.shape, dtype=s.dtype, device=dev)
    return out


def shard_like_params(osd: dict, optimizer) -> dict:
    """An optimizer state dict whose whole tensors (written by an unsharded run, or small
    ones kept in meta.pt) are cut to this rank's rows where their parameter is sharded."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, st in osd["state"].items():
        p = params[i]
        if not is_sharded(p):
            continue
        for k, v in st.items():
            if torch.is_tensor(v) and not is_sharded(v) and tuple(v.shape) == tuple(p.shape) and v.ndim:
                st[k] = sharded_like(rows_of(v, p).to(local(p).device).clone(), p)
    return osd


# ------------------------------------------------------- identity, RNG
def base_fingerprint(model, trainable_names: set[str]) -> list:
    """Cheap identity of the parameters a checkpoint does not store (the LoRA base): name,
    shape, sum and sum of absolute values (float64, summed over ranks when sharded)."""
    frozen = [(n, p) for n, p in model.named_parameters() if n not in trainable_names]
    if not frozen:
        return []
    with torch.no_grad():
        sums = torch.stack([torch.stack([v.sum(), v.abs().sum()]) for v in
                            (local(p.detach()).double() for _, p in frozen)])
    sums = sum_over_ranks(sums, mesh_of([p for _, p in frozen])).cpu().tolist()
    return [(n, tuple(p.shape), s, a) for (n, p), (s, a) in zip(frozen, sums)]


def same_fingerprint(a: list, b: list) -> bool:
    """Same names and shapes, sums equal up to the order of summation (another number of ranks)."""
    return len(a) == len(b) and all(
        (x[0], tuple(x[1])) == (y[0], tuple(y[1])) and all(math.isclose(u, v, rel_tol=1e-9, abs_tol=1e-12)
                                                           for u, v in zip(x[2:], y[2:]))
        for x, y in zip(a, b))


def rng_state() -> dict:
    import numpy as np

    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict) -> None:
    import numpy as np

    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def rng_file(folder: Path, rank: int) -> Path:
    return folder / f"rng-{rank:05d}.pt"


def load_rng(folder: Path, meta: dict, rank: int, world: int) -> dict:
    """This rank's RNG states; rank 0's when the checkpoint was written by another number of processes."""
    same = meta.get("world_size", 1) == world and rng_file(folder, rank).is_file()
    return torch.load(rng_file(folder, rank if same else 0), map_location="cpu", weights_only=False)


def _save_file(obj, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())


@contextlib.contextmanager
def _dcp_mode():
    """Whether DCP runs without a process group (one process, ``parallel: none``); its
    warning that it does so is silenced, since that is the intent."""
    import torch.distributed as dist

    no_dist = not (dist.is_available() and dist.is_initialized())
    with warnings.catch_warnings():
        if no_dist:
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield no_dist


# ------------------------------------------------------------- save
def save_checkpoint(ckpts: Checkpoints, tr: Training, ls: LoopState) -> Path:
    """Checkpoint after step ``ls.step`` (RNG states as they are now); every rank calls it."""
    import torch.distributed.checkpoint as dcp

    tensors: dict = {}
    meta = {
        "format": CHECKPOINT_FORMAT, "step": ls.step, "resume_hash": resume_hash(tr.cfg),
        "config_hash": config_hash(tr.cfg), "world_size": tr.dd.world, "parallel": tr.par.record(),
        "base_fingerprint": tr.fingerprint,
        "optimizer": split_tensors(tr.optimizer.state_dict(), "o", tensors),
        "controller": split_tensors(tr.ctl.state_dict(), "c", tensors),  # collectives when sharded
        "scheduler": tr.scheduler.state_dict(), "stream": tr.stream.state_dict(),
        "meter": tr.meter.state_dict(), "loop": asdict(ls),
    }
    state = {"model": {n: p.detach() for n, p in tr.trainable_named}, "tensors": tensors}

    def write(folder: Path) -> None:
        with _dcp_mode() as no_dist:
            dcp.save(state, checkpoint_id=folder, no_dist=no_dist)
        _save_file(rng_state(), rng_file(folder, tr.dd.rank))
        if tr.dd.is_main:
            _save_file(meta, folder / META)

    return ckpts.save(ls.step, tr.dd, write)


# ---------------------------------------------------------- restore
def restore(tr: Training, folder: Path, meta: dict) -> tuple[LoopState, dict]:
    """Put a checkpoint back into freshly built parts; returns the loop's counters and this rank's RNG states.

    The frozen set first (frozen matrices get no optimizer state), then every rank reads its
    shards of the weights, optimizer state and controller tensors; the RNG states are set by
    the caller right before the first step."""
    import torch.distributed.checkpoint as dcp

    if tr.fingerprint is not None and not same_fingerprint(meta["base_fingerprint"] or [], tr.fingerprint):
        raise RunFailed(f"cannot resume from {folder}: the frozen base weights of {tr.model_dir} differ from "
                        f"the ones the checkpoint was trained on; delete {folder} to start over")
    tr.ctl.restore_frozen(meta["controller"])
    mesh = tr.par.mesh
    tensors = allocate(slots_of(meta["optimizer"]), mesh, tr.device, shard_all=True)
    tensors.update(allocate(slots_of(meta["controller"]), mesh, tr.device))
    model = {n: p.detach() for n, p in tr.trainable_named}
    try:
        with _dcp_mode() as no_dist:
            dcp.load({"model": model, "tensors": tensors}, checkpoint_id=folder, no_dist=no_dist)
    except Exception as e:  # noqa: BLE001  (DCP names the missing key)
        raise RunFailed(f"cannot resume from {folder}: its tensors do not match this run's "
                        f"({type(e).__name__}: {e}); delete {folder} to start over") from e
    tr.optimizer.load_state_dict(shard_like_params(fill_tensors(meta["optimizer"], tensors), tr.optimizer))
    tr.ctl.load_state_dict(fill_tensors(meta["controller"], tensors))
    tr.scheduler.load_state_dict(meta["scheduler"])
    tr.stream.load_state_dict(meta["stream"])
    tr.meter.load_state_dict(meta["meter"], tr.ctl.freezer.version)
    ls = LoopState(**meta["loop"])
    ls.resumed_from.append(ls.step)
    return ls, load_rng(folder, meta, tr.dd.rank, tr.dd.world)


def read_checkpoint(folder: str | Path) -> dict:
    """A whole checkpoint in one process, every tensor whole (to inspect it; training resumes with :func:`restore`).

    ``meta.pt`` with its slots filled, plus ``model`` (trainable weights by name) and
    ``rng`` (rank 0's)."""
    import tempfile

    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    folder = Path(folder)
    meta = torch.load(folder / META, map_location="cpu", weights_only=False)
    with tempfile.TemporaryDirectory() as tmp, _dcp_mode():
        dcp_to_torch_save(folder, Path(tmp) / "all.pt")
        flat = torch.load(Path(tmp) / "all.pt", map_location="cpu", weights_only=False)
    tensors = flat.get("tensors", {})
    return {**meta, "model": flat.get("model", {}), "optimizer": fill_tensors(meta["optimizer"], tensors),
            "controller": fill_tensors(meta["controller"], tensors), "rng": load_rng(folder, meta, 0, 1)}

