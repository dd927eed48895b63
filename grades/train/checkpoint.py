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
from pathlib import Path

import torch

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
        shutil.rmtree(self.root, ignore_errors=True)


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
