"""1a monitoring overhead: time per step with no monitor, each of our signals, and the released callback."""

from __future__ import annotations

from types import SimpleNamespace

import torch

from ..components import discover_components
from ..config import GradESConfig
from .kernels import bench_kernels
from .timing import Plan, interleave, log, mad_rel, med, paired_ratio, raw, train_step
from .workload import ModelSpec, random_batch


class OursMonitor:
    """Our GradES, driven through the Controller exactly as grades.train does; never freezes (tau=0)."""

    def __init__(self, model, optimizer, components, **cfg) -> None:
        from ..controller import Controller
        from ..methods.grades import GradES

        self.method = GradES(GradESConfig(tau=0.0, alpha=0.0, **cfg))
        self.ctl = Controller(model, optimizer, self.method, planned_steps=10 ** 9, components=components)
        self.before = self.ctl.before_optimizer_step
        self.after = lambda step: self.ctl.after_optimizer_step(step, None)

    def state_bytes(self) -> int:
        return self.method.tracker.buffer_bytes()


class ReleasedMonitor:
    """The released ``grades`` 1.0.6 callback, called as the HF Trainer calls it (``on_step_end``).

    Its grace period is set beyond reach (alpha=0.99 of 10^9 planned steps), so it
    measures every step and never freezes."""

    def __init__(self, model) -> None:
        from transformers import TrainerControl, TrainerState

        from ..methods.official import load_official

        gem = load_official().gradient_early_stopping
        self.cb = gem.GradEarlyStoppingCallback(gem.GradEarlyStoppingConfig(tau=1e-12, alpha=0.99, compute_interval=1))
        self.args = SimpleNamespace(output_dir=None)
        self.state = TrainerState(max_steps=10 ** 9, global_step=0)
        self._control = TrainerControl
        self.model = model
        self.cb.on_train_begin(self.args, self.state, TrainerControl(), model=model)
        self.before = None

    def after(self, step: int) -> None:
        self.state.global_step = step
        self.cb.on_step_end(self.args, self.state, self._control(), model=self.model)

    def state_bytes(self) -> int:
        total = 0
        for s in self.cb.component_stats.values():
            cache = s.weight_cache
            tensors = cache.values() if isinstance(cache, dict) else [cache]
            total += sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))
        return total


OURS = {  # variant name -> GradESConfig fields
    "grad_delta_l1": {},
    "grad_delta_l1+bf16": {"buffer_dtype": "bfloat16"},
    "grad_delta_l1+sampled": {"sample_fraction": None},  # filled from the plan
    "grad_l1": {"signal": "grad_l1"},
    "weight_delta_l1": {"signal": "weight_delta_l1"},
}
RELEASED = "released-1.0.6"


def bench_overhead(spec: ModelSpec, plan: Plan) -> dict:
    model = spec.build()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-7, foreach=True)  # real steps, negligible drift
    comps = discover_components(model)
    tracked = sum(c.numel for c in comps)
    batch = random_batch(spec.vocab(model), plan.batch_size, plan.seq_len)
    monitors: dict[str, object] = {"none": None}
    for name, fields in OURS.items():
        if plan.overhead_variants is not None and name not in plan.overhead_variants:
            continue
        fields = dict(fields)
        if "sample_fraction" in fields:
            fields["sample_fraction"] = plan.sample_fraction
        monitors[name] = OursMonitor(model, opt, comps, **fields)
    notes = []
    try:
        if plan.overhead_variants is None or RELEASED in plan.overhead_variants:
            monitors[RELEASED] = ReleasedMonitor(model)
    except Exception as e:  # noqa: BLE001 - the peer is optional
        notes.append(f"released grades 1.0.6 not measured: {type(e).__name__}: {str(e).splitlines()[0]}")
    steps = {v: 0 for v in monitors}

    def run_one(v: str, n: int) -> list[dict]:
        m = monitors[v]
        out = []
        for _ in range(n):
            steps[v] += 1
            out.append(train_step(model, batch, opt, params, getattr(m, "before", None), getattr(m, "after", None),
                                  step=steps[v]))
        return out

    log(f"overhead {spec.name}: {len(monitors)} variants x {plan.rounds} rounds x {plan.steps_per_turn} steps")
    times = interleave(list(monitors), plan, run_one, progress=f"overhead {spec.name}")
    base = med([t["step"] for t in times["none"]])
    released_bytes = monitors[RELEASED].state_bytes() if RELEASED in monitors else None
    weight_copy_bytes = sum(p.numel() * p.element_size() for c in comps for p in c.params)
    rows = []
    for v, ts in times.items():
        m = monitors[v]
        step = med([t["step"] for t in ts])
        hook = med([t["hook"] for t in ts])
        state = m.state_bytes() if m is not None else 0
        rows.append({
            "variant": v, "ours": v in OURS, "steps_timed": len(ts),
            "step_s": step, "hook_s": hook, "step_noise_mad_rel": mad_rel([t["step"] for t in ts]),
            "overhead_direct": hook / base, "overhead_ab": paired_ratio(ts, times["none"]) - 1.0,
            "steps_ms": raw(ts),
            "state_bytes": state, "state_bytes_per_tracked_param": state / tracked,
            "state_vs_weight_copy": state / weight_copy_bytes,
            "state_vs_released": (state / released_bytes) if released_bytes else None,
        })
    del monitors
    kernels = bench_kernels(comps, plan)
    return {"kernels": kernels, "model": spec.name, "params": sum(p.numel() for p in model.parameters()), "tracked_params": tracked,
            "components": len(comps), "batch_size": plan.batch_size, "seq_len": plan.seq_len,
            "baseline_step_s": base, "released_state_bytes": released_bytes,
            "weight_copy_bytes": weight_copy_bytes, "variants": rows, "notes": notes}
