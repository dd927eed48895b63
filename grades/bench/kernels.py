"""The delta signal's arithmetic alone: the released code's per-matrix way against grades.signals' kernels."""

from __future__ import annotations

import time

import torch

from ..signals import delta_l1_norms, l1_norms, resolve_kernel
from .timing import Plan, med


def bench_kernels(comps, plan: Plan) -> dict:
    """The delta signal's arithmetic alone, on tensors of the tracked matrices' shapes:
    the released code's way (per matrix: cat, subtract, L1 norm, ``.item()``, copy) and
    our two kernels (:mod:`grades.signals`), fp32 and bf16 buffers; medians in ms."""
    g = [torch.randn_like(p) for c in comps for p in c.params]
    b32 = [x.clone() for x in g]
    b16 = [x.to(torch.bfloat16) for x in g]

    def released():
        for x, b in zip(g, b32):
            cur = torch.cat([x.flatten()])
            float(torch.norm(cur - b.view(-1), p=1).item())
            b.view(-1).copy_(cur)

    def ours(kernel: str, buf):
        return lambda: delta_l1_norms(g, buf, update=True, kernel=kernel).cpu()

    def l1(kernel: str):
        return lambda: l1_norms(g, kernel=kernel).cpu()

    fns = {"released (weight delta)": released, "foreach fp32": ours("foreach", b32),
           "slices fp32": ours("slices", b32), "foreach bf16": ours("foreach", b16),
           "slices bf16": ours("slices", b16), "grad_l1 foreach": l1("foreach"), "grad_l1 slices": l1("slices")}
    times = {k: [] for k in fns}
    names = list(fns)
    for r in range(max(3, 2 * plan.rounds + 1)):
        for k in names[r % len(names):] + names[: r % len(names)]:
            t = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t)
    n = sum(x.numel() for x in g)
    return {"elements": n, "ms": {k: 1e3 * med(v) for k, v in times.items()},
            "ns_per_element": {k: 1e9 * med(v) / n for k, v in times.items()},
            "auto_kernel_on_cpu": resolve_kernel("auto", torch.device("cpu"))}
