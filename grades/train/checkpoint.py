"""Training checkpoints: the folder that holds them, what one holds, and how a run resumes from it.

A checkpoint is written atomically every ``checkpoint_every`` steps; a rerun of the same
config (:func:`grades.train.config.resume_hash`) continues from the newest one with the
same trainable weights, optimizer, scheduler, RNG states, batch-stream position,
controller/method state and counters, so it ends exactly like an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from ..distributed import Dist
from .config import config_hash, resume_hash
from .errors import RunFailed
from .state import LoopState, Training

CHECKPOINT_FORMAT = 1


class Checkpoints:
    """Training checkpoints of one run: ``ROOT/step-00000010/state.pt``, ...

    Each is written into a hidden temporary sibling and renamed into place, so a
    ``step-*`` folder is always complete; the newest ``keep`` are kept.
    """

    def __init__(self, root: str | Path, keep: int = 2) -> None:
        self.root = Path(root)
        self.keep = max(1, keep)

    def list(self) -> list[tuple[int, Path]]:
        if not self.root.is_dir():
            return []
        out = []
        for d in self.root.iterdir():
            if d.is_dir() and d.name.startswith("step-") and (d / "state.pt").is_file():
                with contextlib.suppress(ValueError):
                    out.append((int(d.name[5:]), d))
        return sorted(out)

    def clean_partial(self) -> None:
        if self.root.is_dir():
            for d in self.root.glob(".tmp-step-*"):
                shutil.rmtree(d, ignore_errors=True)

    def save(self, step: int, state: dict) -> Path:
        self.root.mkdir(parents=True, exist_ok=True)
        final = self.root / f"step-{step:08d}"
        tmp = self.root / f".tmp-step-{step:08d}-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            with open(tmp / "state.pt", "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        for _, old in self.list()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def load_latest(self) -> tuple[Path, dict] | None:
        """The newest checkpoint that loads (an unreadable one is reported and skipped)."""
        for _, d in reversed(self.list()):
            try:  # our own files: full pickle (RNG states, numpy arrays), not weights_only
                return d, torch.load(d / "state.pt", map_location="cpu", weights_only=False)
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


def base_fingerprint(model, trainable_names: set[str]) -> list:
    """Cheap identity of the parameters a checkpoint does not store (the LoRA base)."""
    out = []
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n not in trainable_names:
                t = p.detach().double()
                out.append((n, tuple(p.shape), float(t.sum()), float(t.abs().sum())))
    return out


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


# ------------------------------------------------------- resuming a run
def find_resumable(ckpts: Checkpoints, cfg: dict, *, resume: bool, dd: Dist) -> dict | None:
    """The newest checkpoint state this run continues from, or None.

    Read before any other work, so a mismatch is reported at once. Checkpoints of another
    config (:func:`resume_hash`), or any when ``resume`` is off, are removed (by rank 0,
    after every rank has looked)."""
    if dd.is_main:
        ckpts.clean_partial()
    if resume:
        found = ckpts.load_latest()
        if found is not None:
            where, saved = found
            if saved.get("format") == CHECKPOINT_FORMAT and saved.get("resume_hash") == resume_hash(cfg):
                return saved
            print(f"warning: {where} was written by a different run config (hash "
                  f"{saved.get('resume_hash')} != {resume_hash(cfg)}); discarding the checkpoints in "
                  f"{ckpts.root} and starting from step 0", file=sys.stderr)
            dd.barrier()  # every rank has read before rank 0 deletes
            if dd.is_main:
                ckpts.remove()
    elif ckpts.list():
        print(f"note: not resuming (--no-resume); removing the checkpoints in {ckpts.root}", file=sys.stderr)
        dd.barrier()
        if dd.is_main:
            ckpts.remove()
    return None


def capture(tr: Training, ls: LoopState) -> dict:
    """What a checkpoint holds after step ``ls.step`` (RNG states: as they are now)."""
    return {
        "format": CHECKPOINT_FORMAT, "step": ls.step, "resume_hash": resume_hash(tr.cfg),
        "config_hash": config_hash(tr.cfg), "base_fingerprint": tr.fingerprint,
        "model": {n: p.detach() for n, p in tr.trainable_named},
        "optimizer": tr.optimizer.state_dict(), "scheduler": tr.scheduler.state_dict(),
        "rng": rng_state(), "stream": tr.stream.state_dict(), "controller": tr.ctl.state_dict(),
        "meter": tr.meter.state_dict(), "loop": asdict(ls),
    }


def restore(tr: Training, saved: dict, root: Path) -> LoopState:
    """Put a checkpoint's state (from ``root``) into freshly built parts; returns the loop's counters.

    The RNG states are not restored here: :func:`set_rng_state` right before the first step."""
    names = {n for n, _ in tr.trainable_named}
    if saved["base_fingerprint"] != tr.fingerprint:
        raise RunFailed(f"cannot resume from {root}: the frozen base weights of {tr.model_dir} differ from "
                        f"the ones the checkpoint was trained on; delete {root} to start over")
    if set(saved["model"]) != names:
        raise RunFailed(f"cannot resume from {root}: its parameters do not match the model's trainable ones")
    with torch.no_grad():
        for n, p in tr.trainable_named:
            p.copy_(saved["model"][n])
    tr.ctl.load_state_dict(saved["controller"])  # re-freezes the saved frozen set first
    tr.optimizer.load_state_dict(saved["optimizer"])
    tr.scheduler.load_state_dict(saved["scheduler"])
    tr.stream.load_state_dict(saved["stream"])
    tr.meter.load_state_dict(saved["meter"], tr.ctl.freezer.version)
    ls = LoopState(**saved["loop"])
    ls.resumed_from.append(ls.step)
    return ls
