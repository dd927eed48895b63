"""Training checkpoints: the folder that holds them, written by every rank at once, and the one a run resumes from.

A checkpoint is written every ``checkpoint_every`` steps into a hidden temporary folder
that rank 0 renames into place once every rank has written its part, so a ``step-*``
folder is always complete; a rerun of the same config (:func:`grades.train.config.resume_hash`)
continues from the newest one (what a checkpoint holds: :mod:`grades.train.snapshot`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path
from typing import Callable

import torch

from ..distributed import Dist
from .config import resume_hash

CHECKPOINT_FORMAT = 2  # 2: sharded (torch.distributed.checkpoint) + meta.pt; 1 was one state.pt
META = "meta.pt"


class Checkpoints:
    """Training checkpoints of one run: ``ROOT/step-00000010/{meta.pt, rng-*.pt, .metadata, *.distcp}``, ...

    Each is written into ``ROOT/.tmp-step-*`` by every rank and renamed into place by
    rank 0 after a barrier; the newest ``keep`` are kept.
    """

    def __init__(self, root: str | Path, keep: int = 2) -> None:
        self.root = Path(root)
        self.keep = max(1, keep)

    def list(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        out = []
        for d in self.root.iterdir():
            if d.is_dir() and d.name.startswith("step-") and (d / META).is_file():
                with contextlib.suppress(ValueError):
                    out.append((int(d.name[5:]), d))
        return sorted(out)

    def clean_partial(self) -> None:
        if self.root.is_dir():
            for d in self.root.glob(".tmp-step-*"):
                shutil.rmtree(d, ignore_errors=True)

    def save(self, step: int, dd: Dist, write: Callable[[Path], None]) -> Path:
        """Checkpoint ``step``: every rank calls it, and ``write(folder)`` writes this rank's part.

        Barriers before and after the writes: rank 0 makes the temporary folder, every rank
        writes, rank 0 renames it into place and drops the oldest, every rank goes on."""
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f".tmp-step-{step:08d}"
        if dd.is_main:
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
        dd.barrier()
        try:
            write(tmp)
        except BaseException:
            if dd.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        dd.barrier()  # every rank has written its part
        if dd.is_main:
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for _, old in self.list()[: -self.keep]:
                shutil.rmtree(old, ignore_errors=True)
        dd.barrier()
        return final

    def latest_meta(self) -> tuple[Path, dict] | None:
        """The newest checkpoint whose ``meta.pt`` loads, with it (an unreadable one is reported and skipped).

        Only this small file is read: the weights and optimizer state load later, shard by
        shard, into the model built for this run (:func:`grades.train.snapshot.restore`)."""
        for _, d in reversed(self.list()):
            try:  # our own files: full pickle (RNG states, numpy arrays), not weights_only
                return d, torch.load(d / META, map_location="cpu", weights_only=False)
            except Exception as e:  # noqa: BLE001
                print(f"warning: checkpoint {d} is unreadable ({type(e).__name__}: {e}); trying an older one",
                      file=sys.stderr)
        return None

    def remove(self) -> None:
        """Remove the checkpoints (``step-*``, ``.tmp-step-*``), and the folder once empty: never
        anything else a ``--checkpoint-dir`` may hold."""
        if self.root.is_dir() and not self.root.is_symlink():
            for d in [*self.root.glob("step-*"), *self.root.glob(".tmp-step-*")]:
                if d.is_dir() and not d.is_symlink():
                    shutil.rmtree(d, ignore_errors=True)
                else:
                    d.unlink()
            with contextlib.suppress(OSError):
                self.root.rmdir()


# ------------------------------------------------------- resuming a run
def find_resumable(ckpts: Checkpoints, cfg: dict, *, resume: bool, dd: Dist) -> tuple[Path, dict] | None:
    """The newest checkpoint this run continues from (its folder and ``meta.pt``), or None.

    Read before any other work, so a mismatch is reported at once. Checkpoints of another
    config (:func:`resume_hash`) or format, or any when ``resume`` is off, are removed (by
    rank 0, after every rank has looked)."""
    if dd.is_main:
        ckpts.clean_partial()
    dd.barrier()
    found = ckpts.latest_meta() if resume else None
    have_any = bool(ckpts.list())
    dd.barrier()  # every rank has looked before rank 0 deletes anything
    result, why = None, None
    if found is not None:
        where, meta = found
        if meta.get("format") != CHECKPOINT_FORMAT:
            why = f"warning: {where} has format {meta.get('format')}, not {CHECKPOINT_FORMAT}"
        elif meta.get("resume_hash") != resume_hash(cfg):
            why = (f"warning: {where} was written by a different run config (hash {meta.get('resume_hash')} != "
                   f"{resume_hash(cfg)})")
        else:
            result = found
        if why:
            why += f"; discarding the checkpoints in {ckpts.root} and starting from step 0"
    elif not resume and have_any:
        why = f"note: not resuming (--no-resume); removing the checkpoints in {ckpts.root}"
    if why and dd.is_main:
        print(why, file=sys.stderr)
        ckpts.remove()
    dd.barrier()
    return result
