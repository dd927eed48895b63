"""The memory plan of a workflow config: every GPU run's per-GPU estimate against the GPU memory the config declares.

``python -m grades.workflow plan CONFIG`` prints it (:func:`plan_text`); ``check`` and
the Snakefile refuse a profile in which a run cannot fit (:func:`check_memory`), naming
the run and what would make it fit (more GPUs, sharding, gradient checkpointing, a
smaller micro-batch, lighter GradES state: :func:`grades.memory.check_fit`). Runs
without GPUs (``gpus: 0``, the CPU profiles) are not planned, and nothing is imported
for them.

A model's shapes come from its prepared checkpoint (``cache/<profile>/models/<m>``), the
Hugging Face cache, the built-in configs of the paper's models, or its ``size_b``
(:func:`grades.memory.resolve_arch`); the GPU's memory from ``jobs.gpu_memory_gib``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from ..config import ConfigError
from .plan import PlannedRun, compare_runs, run_config, runs

GIB = 1 << 30


def gpu_runs(cfg: dict) -> list[PlannedRun]:
    """The runs of both targets whose model trains on GPUs."""
    return [r for r in dict.fromkeys(runs(cfg) + compare_runs(cfg)) if cfg["models"][r.model]["gpus"] > 0]


def model_arch(cfg: dict, model: str):
    """The shapes of one model of the workflow config (see the module's docstring)."""
    mc = cfg["models"][model]
    src = mc["source"]
    local = src.removeprefix("local:") if src.startswith("local:") or Path(src).expanduser().is_dir() else None
    prepared = Path(local).expanduser() if local else Path(f"cache/{cfg['profile']}/models/{model}")
    return _arch(model, src, json.dumps(mc["options"], sort_keys=True),
                 str(prepared) if (prepared / "config.json").is_file() else None, mc["size_b"])


@lru_cache(maxsize=64)
def _arch(model: str, source: str, options: str, model_dir: str | None, size_b: float | None):
    from ..memory import resolve_arch

    return resolve_arch(model, source, json.loads(options), model_dir=model_dir, size_b=size_b)


def plan_memory(cfg: dict) -> list:
    """A :class:`grades.memory.Fit` per GPU run: its estimate against ``jobs.gpu_memory_gib``."""
    from ..memory import check_fit

    capacity = int(cfg["jobs"]["gpu_memory_gib"] * GIB)
    out = []
    for r in gpu_runs(cfg):
        mc = cfg["models"][r.model]
        try:
            arch = model_arch(cfg, r.model)
        except ValueError as e:
            raise ConfigError(f"workflow config: models.{r.model}: {e}") from None
        rc = run_config(cfg, r, model_dir="cache/x", data_dir="cache/y")
        out.append(check_fit(arch, rc, mc["gpus"], capacity, name=f"{r.model}/{r.slug}/seed{r.seed}",
                             max_gpus=64))
    return out


def check_memory(cfg: dict) -> list:
    """The plan of :func:`plan_memory`; raises :class:`ConfigError` naming every run that cannot fit."""
    fits = plan_memory(cfg)
    bad = [f for f in fits if not f.ok]
    if bad:
        raise ConfigError(f"workflow config: {len(bad)} run(s) cannot fit on GPUs of "
                          f"{cfg['jobs']['gpu_memory_gib']:g} GiB (jobs.gpu_memory_gib):\n  "
                          + "\n  ".join(f.describe() for f in bad)
                          + "\n(python -m grades.workflow plan CONFIG prints every run's estimate)")
    return fits


def plan_text(cfg: dict) -> tuple[str, bool]:
    """The memory plan as a table, and whether every run fits."""
    from ..memory import plan_table

    fits = plan_memory(cfg)
    if not fits:
        return "no run trains on GPUs (models.<m>.gpus: 0): nothing to plan\n", True
    head = (f"per-GPU memory of each run, GiB (GPU: {cfg['jobs']['gpu_memory_gib']:g} GiB, jobs.gpu_memory_gib); "
            "estimates, see docs/guides/cluster.md\n")
    tail = "".join(f"{f.describe()}\n" for f in fits if not f.ok)
    return head + plan_table(fits) + tail, all(f.ok for f in fits)
