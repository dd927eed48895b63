"""Whether a run fits the memory of its GPUs, and what would make it fit: more GPUs, sharding, checkpointing, a smaller micro-batch.

:func:`check_fit` estimates a run (:func:`grades.memory.estimate.estimate`); when it
does not fit it tries one change at a time -- more GPUs (sharded), gradient
checkpointing, a smaller micro-batch with more accumulation (the same global batch),
GradES's buffers in bfloat16 or sampled -- then the first two together, and names every
change that brings the run under the GPU's memory. :func:`plan_table` prints the plan.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .arch import Arch
from .estimate import GIB, PARTS, Estimate, estimate

GPU_COUNTS = (1, 2, 4, 8, 16, 32, 64)


@dataclass
class Fit:
    """One run's estimate against the memory of one GPU; ``fixes``: what would make it fit."""

    estimate: Estimate
    capacity: int  # bytes per GPU
    fixes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.estimate.total <= self.capacity

    def describe(self) -> str:
        e = self.estimate
        head = (f"{e.name}: {gib(e.total)} per GPU on {e.gpus} GPU(s) ({e.strategy}, {e.precision}) "
                f"> {gib(self.capacity)}")
        return head + ("; would fit with: " + "; or ".join(self.fixes) if self.fixes else
                       "; nothing tried fits (a smaller model, or GPUs with more memory)")


def gib(n: float) -> str:
    return f"{n / GIB:.1f} GiB"


def shares_batch(batch: int, gpus: int) -> bool:
    """Whether ``gpus`` processes can share a global micro-batch of ``batch`` rows (grades.distributed)."""
    return batch % gpus == 0 or gpus % batch == 0


def check_fit(arch: Arch, cfg: dict, gpus: int, capacity: int, *, name: str | None = None,
              max_gpus: int = 64) -> Fit:
    """The estimate of ``cfg`` on ``gpus`` GPUs of ``capacity`` bytes, with the fixes when it does not fit."""
    est = estimate(arch, cfg, gpus, name=name)
    fit = Fit(est, capacity)
    if fit.ok:
        return fit

    def fits(c: dict, g: int) -> Estimate | None:
        e = estimate(arch, c, g, strategy=None if g > 1 or c.get("parallel") != "none" else "none")
        return e if e.total <= capacity else None

    bs, acc = cfg["batch_size"], cfg["grad_accum"]
    more = [g for g in GPU_COUNTS if gpus < g <= max_gpus and shares_batch(bs, g)]
    sharded = {k: v for k, v in cfg.items() if k != "parallel"}  # several GPUs: FSDP2 shards everything
    g = next((g for g in more if fits(sharded, g)), None)
    if g:
        fit.fixes.append(f"{g} GPUs, sharded with FSDP2 ({gib(fits(sharded, g).total)} per GPU)")
    if not cfg.get("gradient_checkpointing"):
        ck = {**cfg, "gradient_checkpointing": True}
        if (e := fits(ck, gpus)) is not None:
            fit.fixes.append(f"gradient_checkpointing: true ({gib(e.total)} per GPU)")
        elif (g := next((g for g in more if fits({**sharded, "gradient_checkpointing": True}, g)), None)):
            e = fits({**sharded, "gradient_checkpointing": True}, g)
            fit.fixes.append(f"{g} GPUs with gradient_checkpointing: true ({gib(e.total)} per GPU)")
    smaller, factor = bs, 1
    while smaller % 2 == 0 and smaller > 1:
        smaller, factor = smaller // 2, factor * 2
        if not shares_batch(smaller, gpus):
            break
        c = {**cfg, "batch_size": smaller, "grad_accum": acc * factor}
        if (e := fits(c, gpus)) is not None:
            fit.fixes.append(f"batch_size: {smaller}, grad_accum: {acc * factor} (the same global batch; "
                             f"{gib(e.total)} per GPU)")
            break
    m = cfg["method"]
    if isinstance(m, dict) and est.parts["grades_state"] > 0:
        for change in ({"buffer_dtype": "bfloat16"}, {"sample_fraction": 0.01}):
            if all(m.get(k) == v for k, v in change.items()):
                continue
            if (e := fits({**cfg, "method": {**m, **change}}, gpus)) is not None:
                k, v = next(iter(change.items()))
                fit.fixes.append(f"method {k}: {v} ({gib(e.total)} per GPU)")
    return fit


def plan_table(fits: list[Fit]) -> str:
    """One line per run: GPUs, strategy, precision, GiB per part and in total, against the GPU's memory."""
    cols = ["run", "GPUs", "parallel", "precision", *PARTS, "total", "GPU", "fits"]
    rows = []
    for f in fits:
        e = f.estimate
        rows.append([e.name, str(e.gpus), e.strategy, e.precision, *(f"{e.parts[p] / GIB:.1f}" for p in PARTS),
                     f"{e.total / GIB:.1f}", f"{f.capacity / GIB:.0f}", "yes" if f.ok else "NO"])
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda r: "  ".join(x.rjust(w) if i else x.ljust(w) for i, (x, w) in enumerate(zip(r, widths)))  # noqa: E731
    out = [line(cols), line(["-" * w for w in widths])] + [line(r) for r in rows]
    out += [f"  {f.estimate.name}: {n}" for f in fits for n in f.estimate.notes]
    return "\n".join(out) + "\n"
