"""What train.json says about a run: its setup, its result, and the environment it ran in.

:func:`setup_fields` (known once the run is set up) and :func:`result_fields` (after the
loop) fill the run's record; :func:`versions`, :func:`grades.resources.git_commit` and the peak-memory
readers describe the environment.
"""

from __future__ import annotations

import contextlib
import platform
import resource
import sys

import torch

from ..resources import git_commit
from .config import config_hash
from .state import LoopState, Training


def setup_fields(tr: Training) -> dict:
    """The run as set up: name, mode, method, sizes of data and model."""
    cfg, info = tr.cfg, tr.info
    return {
        "status": "running", "name": cfg["name"], "mode": cfg["mode"], "method": tr.method.name,
        "steps_planned": cfg["steps"], "config_hash": config_hash(cfg), "seed": cfg["seed"],
        "model_dir": str(tr.model_dir), "data_dir": str(tr.data_dir), "n_train_examples": info["n_train"],
        "truncated_examples": info["truncated"], "truncated_validation_examples": info["truncated_validation"],
        "trainable_params": sum(p.numel() for p in tr.trainable),
        "total_params": sum(p.numel() for p in tr.model.parameters()),
        "world_size": tr.dd.world, "parallel": tr.par.record(), "precision": tr.precision.record(),
        **info["record"],  # VLM runs: modality, LoRA targets, matrices per tower
    }


def result_fields(tr: Training, ls: LoopState, result, setup_s: float) -> dict:
    """The run's outcome after the loop (``result``: its :class:`grades.train.loop.LoopResult`)."""
    cfg, ctl = tr.cfg, tr.ctl
    steps_run, train_s, val_time, losses = result.steps_run, result.train_time, ls.val_time, ls.losses
    flops = tr.meter.to_dict()
    return {
        "status": "failed" if result.failed else "ok",
        "stop_reason": result.stop_reason, "steps_run": steps_run, "early_stopped": steps_run < cfg["steps"],
        "train_time_s": train_s, "validation_time_s": val_time, "total_time_s": train_s + val_time,
        "setup_time_s": setup_s, "time_per_step_s": train_s / max(1, steps_run), "step_times_s": ls.step_times,
        "checkpoint_time_s": ls.checkpoint_time, "tokens": ls.tokens,
        "flops": {**flops, "validation": ls.val_flops, "total_with_validation": flops["total"] + ls.val_flops},
        "peak_rss_bytes": peak_rss_bytes(), "peak_gpu_bytes": peak_gpu_bytes(),
        "loss_first": losses[0][1] if losses else None, "loss_last": losses[-1][1] if losses else None,
        "loss_curve": losses, "validation_curve": ls.val_log, "nan_steps": ls.nan_steps,
        "nan_policy": cfg["nan_policy"], "checkpoint_every": cfg["checkpoint_every"],
        "resumed_from_steps": ls.resumed_from,
        "grades": ctl.summary(),
        "frozen_ratio": ctl.freezer.frozen_ratio, "frozen_param_ratio": ctl.freezer.frozen_param_ratio,
        "versions": versions(), "git_commit": git_commit(), "config": cfg,
        "device": tr.device.type, "threads": torch.get_num_threads(),
    }


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for name in ("transformers", "peft", "lm_eval", "grades"):
        with contextlib.suppress(Exception):
            out[name] = __import__(name).__version__
    return out


def peak_rss_bytes() -> int:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(kb * (1 if sys.platform == "darwin" else 1024))


def peak_gpu_bytes() -> int | None:
    return torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
