"""The memory a few real training steps hold in this process (CPU), to check the estimate against.

:func:`measure` builds a run exactly as ``python -m grades.train`` does (one process) and
takes a few steps, recording

* by tensor: parameters, gradients (after the last backward of a step), optimizer state
  (after the step), GradES's buffers, and the activations the forward pass keeps for
  backward (summed over the distinct storages handed to autograd's saved-tensor hooks,
  weights excluded), the largest over the micro-batches;
* the process's peak resident memory during the steps (Linux ``VmHWM``, reset once the
  run is built) less its resident memory at that point, plus the parameters: the peak
  the steps reached, allocator, transient buffers and all (and whatever code the first
  step loads, a few tens of MB: meaningful for models of a few hundred MB and up).

:func:`compare` puts it beside :func:`grades.memory.estimate.estimate` for one GPU (the
estimate's fixed GPU overhead left out: there is no CUDA context on a CPU; its 10% for the
allocator stays).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from ..distributed import Dist
from ..shards import local_bytes
from ..train.checkpoint import Checkpoints
from ..train.loop import Loop
from ..train.parallel import Parallel, parallel_strategy
from ..train.setup import build_training, prepare_process
from ..train.state import LoopState
from .arch import resolve_arch
from .estimate import OVERHEAD_FIXED, estimate


def _status(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:  # not Linux
        return None
    return None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


class MeasuringLoop(Loop):
    """The training loop, recording the bytes of saved activations, gradients and optimizer state."""

    def __init__(self, *a, **kw) -> None:
        super().__init__(*a, **kw)
        self.seen = {"activations": 0, "gradients": 0, "optimizer": 0, "tokens_per_row": 0}
        self.weights = {p.untyped_storage().data_ptr() for p in self.tr.model.parameters()}

    def batch_loss(self, b: dict) -> torch.Tensor:
        storages: dict[int, int] = {}

        def pack(t: torch.Tensor):
            st = t.untyped_storage()
            if st.data_ptr() not in self.weights and st.device.type != "meta":
                storages[st.data_ptr()] = max(storages.get(st.data_ptr(), 0), st.nbytes())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            loss = super().batch_loss(b)
        self.seen["activations"] = max(self.seen["activations"], sum(storages.values()))
        self.seen["tokens_per_row"] = max(self.seen["tokens_per_row"], int(b["input_ids"].shape[1]))
        return loss

    def apply(self, step: int, step_loss: float) -> None:
        grads = sum(local_bytes(p.grad) for p in self.trainable if p.grad is not None)
        self.seen["gradients"] = max(self.seen["gradients"], grads)
        super().apply(step, step_loss)
        state = sum(local_bytes(v) for st in self.tr.optimizer.state.values() for v in st.values()
                    if torch.is_tensor(v))
        self.seen["optimizer"] = max(self.seen["optimizer"], state)


def measure(cfg: dict, steps: int = 3) -> dict:
    """Bytes held by ``steps`` training steps of the run config ``cfg`` in this process (see the module)."""
    cfg = {**cfg, "steps": steps, "checkpoint_every": None, "save_model": False}
    dd = Dist()
    par = Parallel(parallel_strategy(cfg, 1), 1)
    dd.init("cpu", group_of_one=par.sharded)
    try:
        device = prepare_process(cfg, dd)
        tr = build_training(cfg, dd, device, par, fingerprint=False)
        params = sum(local_bytes(p) for p in tr.model.parameters())
        before = _status("VmRSS")
        reset = _reset_peak()
        with tempfile.TemporaryDirectory() as tmp:
            loop = MeasuringLoop(tr, LoopState(), ckpts=Checkpoints(tmp), record={}, progress=False)
            loop.run()
        peak = _status("VmHWM") if reset else None
        summary = tr.ctl.summary()
        return {"parameters": params, **loop.seen, "grades_state": summary.get("signal_state_bytes", 0),
                "rss_built": before, "rss_peak": peak,
                "peak": None if peak is None or before is None else params + peak - before,
                "steps": steps, "threads": torch.get_num_threads()}
    finally:
        dd.close()


def compare(cfg: dict, measured: dict, *, name: str = "run", model_dir: str | Path | None = None) -> dict:
    """The estimate for one GPU beside ``measured`` (:func:`measure`), part by part and in total.

    The estimate assumes micro-batches padded to ``seq_len``; here it is taken at the longest
    padded length the steps met, so that both count the same tokens."""
    arch = resolve_arch(name, cfg["model"]["source"], cfg["model"].get("options"), model_dir=model_dir)
    est = estimate(arch, {**cfg, "seq_len": measured["tokens_per_row"] or cfg["seq_len"]}, 1, name=name, device="cpu")
    parts = {k: est.parts[k] for k in ("parameters", "gradients", "optimizer", "grades_state", "activations")}
    without_gpu = est.total - OVERHEAD_FIXED  # no CUDA context on a CPU; the allocator's share stays
    out = {"tokens_per_row": measured["tokens_per_row"], "estimate": parts, "measured": {k: measured[k] for k in parts},
           "estimate_peak_without_gpu_overhead": without_gpu, "measured_peak": measured["peak"]}
    if measured["peak"]:
        out["ratio_estimate_to_measured_peak"] = without_gpu / measured["peak"]
    out["ratio_by_part"] = {k: (parts[k] / measured[k] if measured[k] else None) for k in parts}
    return out
