"""Performance benchmark: ``python -m grades.bench`` (workflow target ``bench``).

Measures, as ratios taken within one process, what GradES costs to monitor and what
freezing gives back (issue 8). Writes ``OUT/*.json`` and ``OUT/summary.md``
(default ``results/bench``):

``overhead.json``   (1a) time per training step with no monitoring, with our GradES for
                    each signal kind (exact fp32 / bf16 buffers, sampled estimator,
                    ||G||_1, weight delta) and with the released ``grades`` 1.0.6 callback
                    driven on the same plain loop (``on_step_end`` after each optimizer
                    step, as the HF Trainer does). Overhead is reported two ways: the
                    monitor's own time divided by a plain step (direct, low noise) and the
                    difference of whole-step medians (A/B, includes indirect effects,
                    noisier).
``speedup.json``    (1b) step time when 0/25/50/100 % of the matrices are frozen (lowest
                    layers first), FP and LoRA, with a plain freeze and with the savings of
                    :mod:`grades.savings`; realised speedup vs the analytic FLOPs
                    prediction (:mod:`grades.flops`), efficiency = realised / predicted.
``memory.json``     (1c) GradES state bytes per tracked parameter vs the released code's
                    weight copy; optimizer state bytes given back as matrices freeze
                    (summed over the optimizer's state tensors before/after); the sampled
                    estimator's error and freeze agreement on a short real run.
``workflows.json``  (1d) end-to-end time of the smoke and default workflows, read from
                    Snakemake's benchmark files ``results/benchmarks/<profile>/**/*.tsv``.

How the timings are made robust: every variant runs in the same process on the same
model and batch; variants are interleaved round by round (the order rotates each round),
so slow drift of the machine affects all of them alike; each figure is the median of the
timed steps after warm-up. The load average is recorded at start and end: on a busy
machine the ratios are still comparable, the absolute times are not.

Models: ``qwen3-29m`` (a Qwen3-class config of 29M parameters built in code, random
weights, random tokens — timing does not depend on the values) and ``smollm2-135m``
(the prepared checkpoint of the default profile, skipped with a note if absent).
``--quick`` runs a CI-size model and a few steps (seconds), for tests.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from types import SimpleNamespace

import torch

from .components import discover_components
from .config import GradESConfig
from .io import atomic_write_json, atomic_write_text

SCHEMA_VERSION = 1
SMOLLM2_DIR = Path("cache/default/models/smollm2-135m")
SIQA_DIR = Path("cache/default/data/siqa")
PROFILES = ("smoke", "default")

# Qwen3-class configs built in code (grades.models.tiny_config option names)
QWEN3_29M = dict(hidden_size=512, intermediate_size=1536, num_layers=8, num_heads=8, num_kv_heads=4, head_dim=64,
                 vocab_size=8192, max_position=512, tie_embeddings=True)
QWEN3_QUICK = dict(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                   vocab_size=256, max_position=128, tie_embeddings=True)

# the default profile's FP+GradES setting for SmolLM2-135M (config/config.yaml); read from
# that file when it is there, these values otherwise
DEFAULT_PROFILE = dict(steps=80, batch_size=8, seq_len=128, lr=5.0e-5, warmup_ratio=0.05, tau=12.1, alpha=0.3)

TARGETS = {"overhead": 0.01, "efficiency": 0.9, "state_bf16": 0.5, "state_sampled": 0.02, "within_checks": 2}


@dataclass
class Plan:
    """Sizes of one benchmark run (``--quick`` shrinks everything)."""

    batch_size: int = 8
    seq_len: int = 128
    warmup_rounds: int = 1  # untimed rounds over all variants (allocations, caches)
    rounds: int = 4  # timed rounds; variants interleaved, order rotated per round
    steps_per_turn: int = 1  # consecutive timed steps of one variant per round
    sample_fraction: float = 0.01
    estimator_steps: int | None = None  # None: the default profile's steps
    fractions: tuple = (0, 25, 50, 100)
    overhead_variants: tuple | None = None  # 1a variants timed (None: all); "none" is always timed
    warmup_all: bool = True  # 1b: warm every configuration (False: only the first, i.e. the allocations)
    lora_r: int = 16
    lora_alpha: int = 32


QUICK = Plan(batch_size=2, seq_len=16, warmup_rounds=1, rounds=2, steps_per_turn=1, sample_fraction=0.05,
             estimator_steps=8, lora_r=4, lora_alpha=8)
# SmolLM2 steps take ~5x longer than qwen3-29m ones: fewer rounds keep the run within
# 15 minutes on 2 cores (1b has 14 configurations per model, 1a has 7 variants)
# (measured: 1232 s with 3 rounds of all 7 variants and 0/25/50/100% on SmolLM2). The
# 29M model covers every variant and fraction; SmolLM2 repeats the headline ones.
SMOLLM2_SCALE = dict(rounds=2, steps_per_turn=1,
                     overhead_variants=("grad_delta_l1", "grad_delta_l1+sampled", "released-1.0.6"))
SMOLLM2_SPEEDUP_SCALE = dict(rounds=2, steps_per_turn=1, fractions=(0, 50, 100), warmup_all=False)


# ----------------------------------------------------------------- logging
_T0 = time.perf_counter()


def log(msg: str) -> None:
    el = time.perf_counter() - _T0
    print(f"[bench {int(el // 60):02d}:{int(el % 60):02d}] {msg}", file=sys.stderr, flush=True)


def loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover
        return None


def med(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def mad_rel(xs: list[float]) -> float:
    """Median absolute deviation relative to the median (a robust noise figure)."""
    if len(xs) < 2:
        return float("nan")
    m = statistics.median(xs)
    return float(statistics.median(abs(x - m) for x in xs) / m) if m else float("nan")


# ------------------------------------------------------------------ models
def build_qwen3(options: dict, seed: int = 0):
    import transformers as tf

    from .models import TINY_DEFAULTS, tiny_config

    o = {**TINY_DEFAULTS, **options}
    cfg = tiny_config("qwen3", o, o["vocab_size"], eos_id=0, pad_id=1)
    torch.manual_seed(seed)
    model = tf.Qwen3ForCausalLM(cfg)
    model.train()
    return model


def load_dir(path: Path):
    from .models import load_model

    model, tok = load_model(path, dtype="float32")
    model.train()
    return model, tok


@dataclass
class ModelSpec:
    name: str
    kind: str  # "qwen3" | "dir"
    options: dict | None = None
    path: Path | None = None

    def build(self):
        if self.kind == "qwen3":
            return build_qwen3(self.options or {})
        return load_dir(self.path)[0]

    def vocab(self, model) -> int:
        return int(model.config.vocab_size)


def random_batch(vocab: int, batch_size: int, seq_len: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (batch_size, seq_len), generator=g)
    return {"input_ids": x, "labels": x.clone()}


def add_lora(model, r: int, alpha: int):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, cfg)
    with torch.no_grad():  # B starts at zero; any value gives the same cost, nonzero gives real gradients
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    model.train()
    return model


# ----------------------------------------------------------- one train step
def train_step(model, batch: dict, optimizer, params: list, before=None, after=None, step: int = 1) -> dict:
    """One step as grades.train takes it (forward, backward, clipping, monitor, optimizer
    step, zero_grad, monitor); returns its timings in seconds."""
    t0 = time.perf_counter()
    loss = model(**batch).loss
    backward = loss.requires_grad  # False when nothing is left to train (a GradES run would have stopped)
    if backward:
        loss.backward()
    t1 = time.perf_counter()
    hook = opt_s = 0.0
    if backward:
        live = [p for p in params if p.requires_grad and p.grad is not None]
        if live:
            torch.nn.utils.clip_grad_norm_(live, 1.0)
        h0 = time.perf_counter()
        if before is not None:
            before(step)
        h1 = time.perf_counter()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        h2 = time.perf_counter()
        hook += h1 - h0
        opt_s = h2 - h1
    h3 = time.perf_counter()
    if after is not None:
        after(step)
    t4 = time.perf_counter()
    hook += t4 - h3
    return {"step": t4 - t0, "fwd_bwd": t1 - t0, "hook": hook, "optimizer": opt_s, "loss": float(loss.detach())}


def interleave(variants: list[str], plan: Plan, run_one, progress: str = "",
               warmup_all: bool = True) -> dict[str, list[dict]]:
    """Warm-up rounds, then timed rounds with the variants' order rotated each round.

    Every timed record carries its round, so ratios can be paired within a round
    (:func:`paired_ratio`): all variants of one round run within a short time, which
    cancels slow drift of the machine's speed."""
    times: dict[str, list[dict]] = {v: [] for v in variants}
    n = len(variants)
    for r in range(plan.warmup_rounds):
        for v in (variants if warmup_all else variants[:1]):
            run_one(v, 1)
    for r in range(plan.rounds):
        order = variants[r % n:] + variants[: r % n]
        for v in order:
            times[v].extend({**t, "round": r} for t in run_one(v, plan.steps_per_turn))
        log(f"{progress} round {r + 1}/{plan.rounds} done")
    return times


def paired_ratio(num: list[dict], den: list[dict], key: str = "step") -> float:
    """Median over rounds of (median ``key`` of ``num`` in the round / that of ``den``)."""
    rounds = sorted({t["round"] for t in num} & {t["round"] for t in den})
    ratios = [med([t[key] for t in num if t["round"] == r]) / med([t[key] for t in den if t["round"] == r])
              for r in rounds]
    return med(ratios)


def raw(ts: list[dict]) -> list[dict]:
    """Per-step records for the JSON (ms, rounded)."""
    return [{k: (round(v * 1e3, 3) if k in ("step", "fwd_bwd", "hook", "optimizer") else v)
             for k, v in t.items() if k != "loss"} for t in ts]


# ------------------------------------------------------------ 1a overhead
class OursMonitor:
    """Our GradES, driven through the Controller exactly as grades.train does; never freezes (tau=0)."""

    def __init__(self, model, optimizer, components, **cfg) -> None:
        from .controller import Controller
        from .methods.grades import GradES

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

        from .methods.official import load_official

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


def bench_kernels(comps, plan: Plan) -> dict:
    """The delta signal's arithmetic alone, on tensors of the tracked matrices' shapes:
    the released code's way (per matrix: cat, subtract, L1 norm, ``.item()``, copy) and
    our two kernels (:mod:`grades.signals`), fp32 and bf16 buffers; medians in ms."""
    from .signals import delta_l1_norms, l1_norms, resolve_kernel

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


# ------------------------------------------------------------- 1b speedup
class Configurator:
    """Puts one model into a (frozen fraction, variant) configuration, reversibly."""

    def __init__(self, model, mode: str, optimizer, params: list) -> None:
        self.model, self.mode, self.opt, self.params = model, mode, optimizer, params
        self.comps = discover_components(model)
        self.order = sorted(range(len(self.comps)), key=lambda i: (self.comps[i].layer, i))  # lowest layers first
        self.groups = [list(g["params"]) for g in optimizer.param_groups]
        self.savings = None

    def apply(self, fraction: int, variant: str) -> dict:
        from .savings import Savings, SavingsConfig, prune_param_groups, unmerge_adapters

        # undo the previous configuration
        if self.savings is not None and self.savings.truncation is not None:
            self.savings.truncation.remove()
        for c in self.comps:
            if c.lora:
                unmerge_adapters(c.module)
        for p in self.params:
            p.requires_grad_(True)
            p.grad = None
        for g, ps in zip(self.opt.param_groups, self.groups):
            g["params"] = list(ps)
        # freeze the lowest `fraction` % of the components
        n = round(len(self.comps) * fraction / 100)
        frozen = [False] * len(self.comps)
        for i in self.order[:n]:
            frozen[i] = True
            for p in self.comps[i].params:
                p.requires_grad_(False)
        info = {"frozen_components": n, "truncated_layers": 0, "merged_modules": 0, "pruned_params": 0}
        self.savings = None
        if variant == "savings":
            cfg = SavingsConfig(truncate_backward=True, merge_lora_on_freeze=self.mode == "lora")
            self.savings = Savings(self.model, self.comps, cfg)
            with torch.no_grad():
                self.savings.sync(frozen)
            info["truncated_layers"] = self.savings.truncation.k
            info["merged_modules"] = self.savings.merged_modules
            info["pruned_params"] = prune_param_groups(self.opt)
        return info


def bench_speedup(spec: ModelSpec, plan: Plan, modes: tuple[str, ...]) -> dict:
    from .flops import step_flops

    out = {"model": spec.name, "batch_size": plan.batch_size, "seq_len": plan.seq_len, "modes": {},
           "freeze_order": "lowest layers first (all matrices of layer 0, then layer 1, ...)"}
    for mode in modes:
        model = spec.build()
        if mode == "fp-frozen-emb":
            model.get_input_embeddings().weight.requires_grad_(False)  # tied: the lm_head too
        if mode == "lora":
            model = add_lora(model, plan.lora_r, plan.lora_alpha)
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-7, foreach=True)
        conf = Configurator(model, mode, opt, params)
        batch = random_batch(spec.vocab(model), plan.batch_size, plan.seq_len)
        configs = [(0, "plain")] + [(f, v) for f in plan.fractions if f > 0 for v in ("plain", "savings")]
        keys = [f"{f}%/{v}" for f, v in configs]
        flops, infos = {}, {}
        for (f, v), k in zip(configs, keys):
            infos[k] = conf.apply(f, v)
            flops[k] = step_flops(model, plan.batch_size, plan.seq_len)
        current = [None]

        def run_one(k: str, n: int) -> list[dict]:
            if current[0] != k:
                f, v = k.split("/")
                conf.apply(int(f[:-1]), v)
                current[0] = k
            return [train_step(model, batch, opt, params) for _ in range(n)]

        log(f"speedup {spec.name} {mode}: {len(configs)} configurations x {plan.rounds} rounds")
        times = interleave(keys, plan, run_one, progress=f"speedup {spec.name} {mode}", warmup_all=plan.warmup_all)
        conf.apply(0, "plain")
        base_f = flops[keys[0]].total
        rows = []
        for (f, v), k in zip(configs, keys):
            ts = times[k]
            step = med([t["step"] for t in ts])
            fb = med([t["fwd_bwd"] for t in ts])
            pred = base_f / flops[k].total
            real = 1.0 / paired_ratio(ts, times[keys[0]])  # base / this, paired within rounds
            rows.append({
                "frozen_pct": f, "variant": v, **infos[k], "steps_timed": len(ts),
                "step_s": step, "fwd_bwd_s": fb, "optimizer_s": med([t["optimizer"] for t in ts]),
                "step_noise_mad_rel": mad_rel([t["step"] for t in ts]),
                "flops": flops[k].total, "flops_by_pass": {"forward": flops[k].forward,
                                                           "input_grad": flops[k].input_grad,
                                                           "weight_grad": flops[k].weight_grad},
                "predicted_speedup": pred, "realised_speedup": real, "efficiency": real / pred,
                "realised_speedup_fwd_bwd": 1.0 / paired_ratio(ts, times[keys[0]], "fwd_bwd"),
                "efficiency_fwd_bwd": 1.0 / paired_ratio(ts, times[keys[0]], "fwd_bwd") / pred,
                "steps_ms": raw(ts),
            })
        mem = optimizer_release(model, params, plan, batch) if mode == "fp" else None
        out["modes"][mode] = {"params": sum(p.numel() for p in model.parameters()), "trainable_params":
                              sum(p.numel() for p in params), "components": len(conf.comps), "rows": rows,
                              "optimizer_memory": mem}
        del model, opt, conf
    return out


def optimizer_state_bytes(optimizer) -> int:
    from .freezer import base_optimizer

    opt = base_optimizer(optimizer)
    return sum(v.numel() * v.element_size() for st in opt.state.values() for v in st.values() if torch.is_tensor(v))


def optimizer_release(model, params: list, plan: Plan, batch: dict) -> dict:
    """Optimizer state bytes, measured on the optimizer, as matrices freeze (through the Freezer)."""
    from .freezer import Freezer

    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=1e-7, foreach=True)
    train_step(model, batch, opt, params)
    comps = discover_components(model)
    order = sorted(range(len(comps)), key=lambda i: (comps[i].layer, i))
    fr = Freezer(comps, opt)
    rows = [{"frozen_pct": 0, "optimizer_state_bytes": optimizer_state_bytes(opt), "released_counted": 0}]
    for f in [x for x in plan.fractions if x > 0]:
        for i in order[: round(len(comps) * f / 100)]:
            fr.freeze(i, step=1)
        rows.append({"frozen_pct": f, "optimizer_state_bytes": optimizer_state_bytes(opt),
                     "released_counted": fr.released_optimizer_bytes})
    full = rows[0]["optimizer_state_bytes"]
    for r in rows:
        r["released_bytes"] = full - r["optimizer_state_bytes"]
        r["released_fraction"] = r["released_bytes"] / full if full else None
    for p in params:
        p.requires_grad_(True)
    return {"optimizer": "AdamW (2 fp32 moments per trainable parameter)", "rows": rows}


# ------------------------------------------------------ 1c sampled estimator
def relative_errors(exact: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
    """|est - exact| / exact over entries where both are finite and exact > 0 (flattened)."""
    exact, est = exact.double().flatten(), est.double().flatten()
    ok = torch.isfinite(exact) & torch.isfinite(est) & (exact > 0)
    return ((est[ok] - exact[ok]).abs() / exact[ok])


def first_below(values: torch.Tensor, steps: list[int], tau: float, grace: int) -> list[int | None]:
    """Per component (column), the first step >= grace whose value is finite and < tau."""
    out: list[int | None] = []
    ok = torch.isfinite(values) & (values < tau)
    for j in range(values.shape[1]):
        hit = None
        for i, s in enumerate(steps):
            if s >= grace and bool(ok[i, j]):
                hit = s
                break
        out.append(hit)
    return out


def freeze_agreement(exact: torch.Tensor, est: torch.Tensor, steps: list[int], tau: float, grace: int,
                     check_interval: int = 1, within: int = 2) -> dict:
    """Would each estimator freeze the same matrices, within ``within`` checks of each other?

    ``exact`` and ``est`` are ``[checks x components]`` signal tables measured on the
    same gradients (a shadow run: nothing is frozen, so both see every check)."""
    a = first_below(exact, steps, tau, grace)
    b = first_below(est, steps, tau, grace)
    same, both, exact_only, est_only, worst = 0, 0, 0, 0, 0
    for x, y in zip(a, b):
        if x is None and y is None:
            same += 1
        elif x is not None and y is not None:
            both += 1
            d = abs(x - y) // check_interval
            worst = max(worst, d)
            same += d <= within
        elif x is not None:
            exact_only += 1
        else:
            est_only += 1
    n = len(a)
    return {"components": n, "frozen_by_exact": sum(x is not None for x in a),
            "frozen_by_estimate": sum(y is not None for y in b), "frozen_by_both": both,
            "exact_only": exact_only, "estimate_only": est_only, "max_check_difference": worst,
            "agree_within": within, "agreeing": same, "all_agree": same == n}


def error_stats(errors: torch.Tensor) -> dict:
    if errors.numel() == 0:
        return {"n": 0, "median": None, "p90": None, "max": None, "mean": None}
    e = errors.double()
    return {"n": int(e.numel()), "median": float(e.median()), "p90": float(torch.quantile(e, 0.9)),
            "max": float(e.max()), "mean": float(e.mean())}


def default_profile_setting(root: Path = Path(".")) -> dict:
    """The default profile's SmolLM2 FP+GradES settings (config/config.yaml), with fallbacks."""
    out = dict(DEFAULT_PROFILE)
    p = root / "config" / "config.yaml"
    try:
        import yaml

        cfg = yaml.safe_load(p.read_text())
        ft = cfg.get("finetune", {})
        m = cfg["models"]["smollm2-135m"]
        out["steps"] = ft.get("steps", out["steps"])
        out["batch_size"] = ft.get("batch_size", out["batch_size"])
        out["seq_len"] = ft.get("seq_len", out["seq_len"])
        lr = ft.get("lr", {})
        out["lr"] = lr.get("fp", out["lr"]) if isinstance(lr, dict) else lr
        out["warmup_ratio"] = ft.get("schedule", {}).get("warmup_ratio", out["warmup_ratio"])
        method = m.get("settings", {}).get("FP+GradES", {}).get("method", {})
        out["tau"] = method.get("tau", out["tau"])
        out["alpha"] = cfg["settings"]["FP+GradES"]["method"].get("alpha", out["alpha"])
        out["source"] = str(p)
    except Exception:  # noqa: BLE001 - fall back to the constants
        out["source"] = "built-in constants (config/config.yaml not readable)"
    return out


def bench_estimator(plan: Plan, quick: bool, smollm2: Path, siqa: Path, root: Path) -> dict:
    """A short shadow run: train without freezing, measure the exact and estimated signals on the same gradients."""
    from transformers import get_scheduler

    from .signals import SignalTracker

    if not quick and (smollm2 / "config.json").exists() and (siqa / "train.jsonl").exists():
        from .data import load_split
        from .train import BatchStream, tokenize_examples

        s = default_profile_setting(root)
        model, tok = load_dir(smollm2)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        pairs, _ = tokenize_examples(load_split(siqa, "train"), tok, s["seq_len"], "answer", "truncate")
        stream = BatchStream(pairs, s["batch_size"], tok.pad_token_id, seed=0)
        next_batch = stream.next
        n = plan.estimator_steps or s["steps"]
        what = (f"smollm2-135m on Social IQa, the default profile's FP+GradES setting ({s['source']}): "
                f"{n} steps{'' if n == s['steps'] else ' (of the profile' + chr(39) + 's ' + str(s['steps']) + ')'}, "
                f"batch {s['batch_size']}, lr {s['lr']}, cosine schedule, tau {s['tau']}, alpha {s['alpha']}")
        model_name, tau_note = "smollm2-135m", "the default profile's tau"
    else:
        s = dict(DEFAULT_PROFILE, steps=plan.estimator_steps or 8, batch_size=plan.batch_size,
                 seq_len=plan.seq_len, lr=1e-3, tau=None)
        spec = ModelSpec("qwen3-quick", "qwen3", QWEN3_QUICK if quick else QWEN3_29M)
        model = spec.build()
        vocab = spec.vocab(model)
        counter = iter(range(10 ** 9))
        next_batch = lambda: random_batch(vocab, s["batch_size"], s["seq_len"], seed=next(counter))  # noqa: E731
        what = (f"{spec.name} on random tokens ({'--quick' if quick else 'SmolLM2 or Social IQa not prepared'}); "
                f"{s['steps']} steps")
        model_name, tau_note = spec.name, "tau chosen after the run: the median exact signal after the grace period"
    steps = plan.estimator_steps or s["steps"]
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=s["lr"], weight_decay=0.0, foreach=True)
    sched = get_scheduler("cosine", opt, num_warmup_steps=int(s["warmup_ratio"] * steps), num_training_steps=steps)
    comps = discover_components(model)
    trackers = {
        "exact": SignalTracker(comps, "grad_delta_l1"),
        "bf16": SignalTracker(comps, "grad_delta_l1", buffer_dtype="bfloat16"),
        "sampled": SignalTracker(comps, "grad_delta_l1", sample_fraction=plan.sample_fraction, seed=0),
    }
    hist = {k: [] for k in trackers}
    measure_s = {k: [] for k in trackers}
    log(f"estimator: {what}")
    for step in range(1, steps + 1):
        b = next_batch()
        loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        for k, tr in trackers.items():
            t = time.perf_counter()
            hist[k].append(tr.measure())
            measure_s[k].append(time.perf_counter() - t)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % max(1, steps // 10) == 0 or step == steps:
            log(f"estimator step {step}/{steps} loss {float(loss.detach()):.4f}")
    step_ids = list(range(1, steps + 1))
    table = {k: torch.stack(v) for k, v in hist.items()}
    grace = GradESConfig(tau=1.0, alpha=s["alpha"]).grace_steps(steps)
    tau = s["tau"]
    if tau is None:
        after = table["exact"][grace - 1:]
        tau = float(after[torch.isfinite(after)].median())
    tracked = sum(c.numel for c in comps)
    out = {"run": what, "model": model_name, "steps": steps, "grace_step": grace, "tau": tau, "tau_note": tau_note,
           "sample_fraction": plan.sample_fraction, "components": len(comps), "tracked_params": tracked,
           "method": "shadow run: nothing is frozen, every estimator measures the same gradients at every step; "
                     "a matrix's freeze step is its first check at or after the grace step with signal < tau",
           "estimators": {}}
    for k in ("bf16", "sampled"):
        out["estimators"][k] = {
            "relative_error": error_stats(relative_errors(table["exact"], table[k])),
            "agreement": freeze_agreement(table["exact"], table[k], step_ids, tau, grace),
            "state_bytes": trackers[k].buffer_bytes(),
            "state_vs_weight_copy": trackers[k].buffer_bytes() / (4 * tracked),
            "measure_s": med(measure_s[k]),
        }
    out["exact"] = {"state_bytes": trackers["exact"].buffer_bytes(), "measure_s": med(measure_s["exact"]),
                    "frozen": sum(x is not None for x in first_below(table["exact"], step_ids, tau, grace))}
    return out


# --------------------------------------------------------- 1d workflows
def workflow_times(root: Path) -> dict:
    """Sum Snakemake benchmark files per profile and rule (``results/benchmarks/<profile>/<rule>/...tsv``)."""
    out = {}
    for prof in PROFILES:
        d = root / "results" / "benchmarks" / prof
        files = sorted(d.rglob("*.tsv")) if d.is_dir() else []
        if not files:
            out[prof] = {"run": False, "note": f"not run: no benchmark files under {d}"}
            continue
        rules: dict[str, dict] = {}
        starts, ends = [], []
        for f in files:
            lines = f.read_text().strip().splitlines()
            if len(lines) < 2:
                continue
            head = lines[0].split("\t")
            vals = lines[-1].split("\t")
            row = dict(zip(head, vals))
            try:
                secs = float(row["s"])
            except (KeyError, ValueError):
                continue
            rule = f.relative_to(d).parts[0] if len(f.relative_to(d).parts) > 1 else f.stem
            r = rules.setdefault(rule, {"jobs": 0, "seconds": 0.0, "max_rss_mb": 0.0})
            r["jobs"] += 1
            r["seconds"] += secs
            try:
                r["max_rss_mb"] = max(r["max_rss_mb"], float(row.get("max_rss", "nan")))
            except ValueError:
                pass
            mtime = f.stat().st_mtime
            ends.append(mtime)
            starts.append(mtime - secs)
        total = sum(r["seconds"] for r in rules.values())
        out[prof] = {"run": True, "jobs": sum(r["jobs"] for r in rules.values()), "sum_job_seconds": total,
                     "span_seconds": (max(ends) - min(starts)) if ends else None, "rules": rules,
                     "note": "sum_job_seconds adds every job's wall time (jobs may overlap on --cores > 1); "
                             "span_seconds is first job start to last job end, from the files' times"}
    return out


# ---------------------------------------------------------------- summary
def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.2f}%"


def _f(x, nd=3) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"


def _mb(b) -> str:
    return "n/a" if b is None else f"{b / 2 ** 20:.1f} MiB"


def verdicts(res: dict) -> list[dict]:
    """Each target: met / missed, by how much, and why (figures of --quick are not meaningful)."""
    out = []
    for o in res.get("overhead", []):
        rows = {r["variant"]: r for r in o["variants"]}
        step_ns = 1e9 * o["baseline_step_s"] / o["tracked_params"]
        for v in OURS:
            if v not in rows:
                continue
            r = rows[v]
            x = r["overhead_direct"]
            met = x <= TARGETS["overhead"]
            why = None
            if not met:
                why = (f"{1e9 * r['hook_s'] / o['tracked_params']:.2f} ns per tracked entry per step against a "
                       f"plain step of {step_ns:.0f} ns per entry. ")
                why += ("The exact delta is memory-bound: every step it reads G_t and the buffer and writes the "
                        "buffer (12 bytes per entry with fp32 buffers, 8 with bf16), while the step's compute per "
                        "entry is ~6 x the tokens per step; with bf16 buffers the conversions add work. Cheaper: "
                        "sample_fraction, check_interval > 1, or more tokens per step."
                        if v.startswith("grad_delta") or v == "weight_delta_l1" else
                        "One read of every gradient per step (4 bytes per entry).")
            out.append({"target": f"1a monitoring overhead <= 1% ({o['model']}, {v}, every step)",
                        "value": x, "met": met, "by": None if met else x - TARGETS["overhead"], "why": why})
        if RELEASED in rows:
            r = rows[RELEASED]
            out.append({"target": f"1a (report) released grades 1.0.6 monitoring overhead ({o['model']})",
                        "value": r["overhead_direct"], "met": True, "why": "reported, no target"})
        for r in o["variants"]:
            if r["variant"] == "grad_delta_l1+bf16":
                out.append({"target": f"1c state <= 0.5x the weight copy, bf16 buffers ({o['model']})",
                            "value": r["state_vs_weight_copy"], "met": r["state_vs_weight_copy"] <= 0.5 + 1e-9})
            if r["variant"] == "grad_delta_l1+sampled":
                v = r["state_vs_weight_copy"]
                out.append({"target": f"1c state <= 0.02x the weight copy, sampled estimator ({o['model']})",
                            "value": v, "met": v <= TARGETS["state_sampled"],
                            "by": None if v <= TARGETS["state_sampled"] else v - TARGETS["state_sampled"],
                            "why": None if v <= TARGETS["state_sampled"] else
                            f"sample_fraction {res['meta']['plan']['sample_fraction']} in this run"})
    for s in res.get("speedup", []):
        for mode, m in s["modes"].items():
            for r in m["rows"]:
                if r["frozen_pct"] == 0:
                    continue
                e = r["efficiency"]
                met = e >= TARGETS["efficiency"]
                why = None
                if not met:
                    why = (f"fwd+bwd alone: {r['efficiency_fwd_bwd']:.2f}. FLOPs count only matmuls; what freezing "
                           "does not shrink (attention softmax and masking, norms, activations, embedding, loss, "
                           "autograd and Python dispatch, and the optimizer when it is not the part saved) weighs "
                           "more in time than in FLOPs, most at high frozen fractions where the matmuls left are few")
                    if mode == "lora":
                        why += "; under LoRA the frozen base model's forward and input-gradient matmuls remain"
                out.append({"target": f"1b efficiency >= 0.9 ({s['model']}, {mode}, {r['frozen_pct']}% frozen, "
                                      f"{r['variant']})", "value": e, "met": met,
                            "by": None if met else TARGETS["efficiency"] - e, "why": why})
    est = res.get("estimator")
    if est:
        a = est["estimators"]["sampled"]["agreement"]
        out.append({"target": f"1c sampled estimator freezes the same matrices within two checks of the exact one "
                              f"({est['model']})", "value": f"{a['agreeing']}/{a['components']}",
                    "met": a["all_agree"],
                    "why": None if a["all_agree"] else
                    (f"{a['exact_only']} frozen by the exact signal only, {a['estimate_only']} by the estimate only, "
                     f"largest gap {a['max_check_difference']} checks: matrices whose signal hovers near tau cross it "
                     f"at different checks under a {100 * est['sample_fraction']:.1f}% sample")})
    if res["meta"].get("quick"):
        for v in out:
            v["why"] = "--quick: CI-size model and steps, not meaningful" + (f"; {v['why']}" if v.get("why") else "")
    return out


def summary_md(res: dict) -> str:
    meta = res["meta"]
    L = ["# GradES performance benchmark", "",
         f"`python -m grades.bench{' --quick' if meta['quick'] else ''}` — {meta['finished']} — "
         f"torch {meta['versions']['torch']}, {meta['threads']} thread(s), {meta['cpu_count']} CPU(s), "
         f"load average {meta['loadavg_start']} at start, {meta['loadavg_end']} at end; "
         f"{meta['elapsed_s']:.0f} s in all.", ""]
    if meta.get("updated_from"):
        em = meta["updated_from"].get("earlier_meta") or {}
        L += [f"Sections {', '.join(meta['updated_from']['sections_kept'])} come from the earlier run of "
              f"{em.get('finished', '?')} (load average {em.get('loadavg_start')} at start, "
              f"{em.get('loadavg_end')} at end, {em.get('elapsed_s', 0):.0f} s); the others were rerun "
              f"with --update.", ""]
    if meta.get("contention_note"):
        L += [f"**Note:** {meta['contention_note']}", ""]
    L += ["Ratios come from one process: variants interleaved round by round (rotating order), "
          "medians of timed steps after warm-up.", ""]
    for o in res.get("overhead", []):
        L += [f"## 1a. Monitoring overhead — {o['model']} ({o['params'] / 1e6:.1f}M params, "
              f"{o['components']} matrices, batch {o['batch_size']} x {o['seq_len']})", "",
              f"Plain step: {o['baseline_step_s'] * 1e3:.1f} ms. *direct* = the monitor's own time / plain step; "
              f"*A/B* = whole step vs plain, the median over rounds of the per-round ratio (includes indirect effects and noise; the step-time spread (MAD) is shown).", "",
              "| variant | monitor ms | direct | A/B | noise | state | bytes/tracked param | vs weight copy |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for r in o["variants"]:
            L.append(f"| {r['variant']} | {r['hook_s'] * 1e3:.2f} | {_pct(r['overhead_direct'])} | "
                     f"{_pct(r['overhead_ab'])} | {_f(r['step_noise_mad_rel'] * 100, 1)}% | {_mb(r['state_bytes'])} | "
                     f"{_f(r['state_bytes_per_tracked_param'], 3)} | {_f(r['state_vs_weight_copy'], 3)}x |")
        k = o.get("kernels")
        if k:
            L += ["", f"Delta-signal arithmetic alone over the {k['elements'] / 1e6:.1f}M tracked entries "
                  f"(median ms; ns per entry):", "",
                  "| " + " | ".join(k["ms"]) + " |", "|" + "---:|" * len(k["ms"]),
                  "| " + " | ".join(f"{v:.1f} ({k['ns_per_element'][n]:.2f})" for n, v in k["ms"].items()) + " |"]
        L += [""] + [f"- {n}" for n in o["notes"]] + ([""] if o["notes"] else [])
    for s in res.get("speedup", []):
        L += [f"## 1b. Realised vs predicted speedup — {s['model']} (batch {s['batch_size']} x {s['seq_len']})", "",
              f"Frozen: {s['freeze_order']}. *savings* = backward truncation + LoRA merge-on-freeze + optimizer "
              f"pruning (grades.savings). Speedups relative to 0% frozen (median over rounds of the per-round "
              f"ratio); efficiency = realised / predicted (FLOPs); the fwd+bwd columns leave the optimizer "
              f"step out.", ""]
        for mode, m in s["modes"].items():
            L += [f"**{mode}** ({m['trainable_params'] / 1e6:.2f}M trainable)", "",
                  "| frozen | variant | step ms | fwd+bwd ms | opt ms | predicted | realised | efficiency | "
                  "eff. fwd+bwd | cut layers | merged | pruned |",
                  "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for r in m["rows"]:
                L.append(f"| {r['frozen_pct']}% | {r['variant']} | {r['step_s'] * 1e3:.1f} | {r['fwd_bwd_s'] * 1e3:.1f} | "
                         f"{r['optimizer_s'] * 1e3:.1f} | {r['predicted_speedup']:.3f}x | {r['realised_speedup']:.3f}x | "
                         f"{r['efficiency']:.3f} | {r['efficiency_fwd_bwd']:.3f} | {r['truncated_layers']} | "
                         f"{r['merged_modules']} | {r['pruned_params']} |")
            L.append("")
            mem = m.get("optimizer_memory")
            if mem:
                L += ["Optimizer memory given back (AdamW state bytes summed over the optimizer's state, "
                      "freezing through the Freezer):", "",
                      "| frozen | optimizer state | given back |", "|---:|---:|---:|"]
                for r in mem["rows"]:
                    L.append(f"| {r['frozen_pct']}% | {_mb(r['optimizer_state_bytes'])} | "
                             f"{_mb(r['released_bytes'])} ({_pct(r['released_fraction'])}) |")
                L.append("")
    est = res.get("estimator")
    if est:
        L += ["## 1c. Estimators against the exact signal", "", f"Run: {est['run']}.", "",
              f"{est['method']}; grace step {est['grace_step']}, tau {est['tau']:.4g} ({est['tau_note']}).", "",
              "| estimator | state vs weight copy | rel. error median | p90 | max | frozen (exact / est.) | "
              "agree within 2 checks | max check diff |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for k, e in est["estimators"].items():
            r, a = e["relative_error"], e["agreement"]
            L.append(f"| {k} | {e['state_vs_weight_copy']:.4f}x | {_pct(r['median'])} | {_pct(r['p90'])} | "
                     f"{_pct(r['max'])} | {a['frozen_by_exact']} / {a['frozen_by_estimate']} | "
                     f"{a['agreeing']}/{a['components']} | {a['max_check_difference']} |")
        L.append("")
    wf = res.get("workflows")
    if wf:
        L += ["## 1d. End-to-end workflow time", "", "| profile | jobs | sum of job times | span | by rule |",
              "|---|---:|---:|---:|---|"]
        for prof, w in wf.items():
            if not w["run"]:
                L.append(f"| {prof} | — | — | — | {w['note']} |")
                continue
            rules = ", ".join(f"{k} {v['seconds']:.0f} s ({v['jobs']})" for k, v in sorted(w["rules"].items()))
            span = "n/a" if w["span_seconds"] is None else f"{w['span_seconds']:.0f} s"
            L.append(f"| {prof} | {w['jobs']} | {w['sum_job_seconds']:.0f} s | {span} | {rules} |")
        L += ["", "Sum = every job's wall time added (jobs may overlap); span = first job start to last job end.", ""]
    v = res.get("verdicts", [])
    if v:
        L += ["## Targets", "", "| target | value | met | by | why |", "|---|---:|:---:|---:|---|"]
        for t in v:
            val = t["value"] if isinstance(t["value"], str) else f"{t['value']:.4f}"
            by = "" if not t.get("by") else f"{t['by']:.4f}"
            L.append(f"| {t['target']} | {val} | {'yes' if t['met'] else '**no**'} | {by} | {t.get('why') or ''} |")
        L.append("")
    return "\n".join(L)


def compact_md(res: dict) -> str:
    """The headline tables (README "Performance"): ``python -m grades.bench --compact results/bench/bench.json``."""
    L = []
    ov = res.get("overhead", [])
    if ov:
        cols = [v for v in ("grad_delta_l1", "grad_delta_l1+bf16", "grad_delta_l1+sampled", "grad_l1",
                            "weight_delta_l1", RELEASED)]
        L += ["Monitoring overhead per step, checked every step (direct: the monitor's time / a plain step; "
              "A/B in brackets), and GradES state in bytes per tracked parameter:", "",
              "| model | plain step | " + " | ".join(cols) + " |", "|---|---:|" + "---:|" * len(cols)]
        for o in ov:
            rows = {r["variant"]: r for r in o["variants"]}
            cells = [(f"{100 * rows[c]['overhead_direct']:.2f}% ({100 * rows[c]['overhead_ab']:+.1f}%)"
                      if c in rows else "n/a") for c in cols]
            L.append(f"| {o['model']} | {o['baseline_step_s']:.2f} s | " + " | ".join(cells) + " |")
            cells = [(f"{rows[c]['state_bytes_per_tracked_param']:.3f} B ({rows[c]['state_vs_weight_copy']:.3f}x)"
                      if c in rows else "n/a") for c in cols]
            L.append(f"| {o['model']} state | | " + " | ".join(cells) + " |")
        L.append("")
    sp = res.get("speedup", [])
    if sp:
        L += ["Realised speedup of a step (predicted by FLOPs in brackets; efficiency = realised / predicted) "
              "with the lowest layers' matrices frozen; plain freeze / with all savings:", "",
              "| model | mode | 25% plain | 25% savings | 50% plain | 50% savings | 100% plain | 100% savings |",
              "|---|---|---:|---:|---:|---:|---:|---:|"]
        for s in sp:
            for mode, m in s["modes"].items():
                by = {(r["frozen_pct"], r["variant"]): r for r in m["rows"]}
                cells = []
                for f in (25, 50, 100):
                    for v in ("plain", "savings"):
                        r = by.get((f, v))
                        cells.append("n/a" if r is None else
                                     f"{r['realised_speedup']:.2f}x ({r['predicted_speedup']:.2f}x) e={r['efficiency']:.2f}")
                L.append(f"| {s['model']} | {mode} | " + " | ".join(cells) + " |")
        L.append("")
        mem = [(s["model"], m["optimizer_memory"]) for s in sp for mode, m in s["modes"].items()
               if m.get("optimizer_memory")]
        if mem:
            L += ["AdamW state given back as matrices freeze (FP, measured on the optimizer):", "",
                  "| model | 25% | 50% | 100% |", "|---|---:|---:|---:|"]
            for model, mm in mem:
                by = {r["frozen_pct"]: r for r in mm["rows"]}
                L.append(f"| {model} | " + " | ".join(
                    f"{by[f]['released_bytes'] / 2 ** 20:.0f} MiB ({100 * by[f]['released_fraction']:.0f}%)"
                    if f in by else "n/a" for f in (25, 50, 100)) + " |")
            L.append("")
    est = res.get("estimator")
    if est:
        L += [f"Estimators against the exact ||G_t - G_(t-1)||_1 on {est['run']} (shadow run, tau {est['tau']:.4g}):", "",
              "| estimator | state vs weight copy | relative error median / p90 / max | freezes (exact / estimate) | "
              "same matrices within 2 checks |", "|---|---:|---:|---:|---:|"]
        for k, e in est["estimators"].items():
            r, a = e["relative_error"], e["agreement"]
            L.append(f"| {k} | {e['state_vs_weight_copy']:.4f}x | {100 * r['median']:.2f}% / {100 * r['p90']:.2f}% / "
                     f"{100 * r['max']:.1f}% | {a['frozen_by_exact']} / {a['frozen_by_estimate']} | "
                     f"{a['agreeing']}/{a['components']} (max gap {a['max_check_difference']}) |")
        L.append("")
    wf = res.get("workflows")
    if wf:
        L += ["End-to-end workflow time (Snakemake benchmark files):", "", "| profile | jobs | sum of job times | span |",
              "|---|---:|---:|---:|"]
        for prof, w in wf.items():
            if w["run"]:
                L.append(f"| {prof} | {w['jobs']} | {w['sum_job_seconds'] / 60:.1f} min | "
                         f"{(w['span_seconds'] or 0) / 60:.1f} min |")
            else:
                L.append(f"| {prof} | not run | | |")
        L.append("")
    return "\n".join(L)


# -------------------------------------------------------------------- main
SECTIONS = ("overhead", "speedup", "estimator", "workflows")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m grades.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="results/bench", help="output folder (default results/bench)")
    ap.add_argument("--quick", action="store_true", help="CI size: a tiny model, a few steps (seconds)")
    ap.add_argument("--models", default=None,
                    help="comma-separated: qwen3-29m, smollm2-135m (default both; --quick: qwen3-quick)")
    ap.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated subset of {list(SECTIONS)}")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds of one step per variant (default 4; SmolLM2: 2, with the headline variants in 1a and 0/50/100%% frozen in 1b)")
    ap.add_argument("--estimator-steps", type=int, default=None,
                    help="steps of the estimator run (default: the default profile's, 80)")
    ap.add_argument("--smollm2", type=Path, default=SMOLLM2_DIR, help=f"prepared SmolLM2 (default {SMOLLM2_DIR})")
    ap.add_argument("--siqa", type=Path, default=SIQA_DIR, help=f"prepared Social IQa (default {SIQA_DIR})")
    ap.add_argument("--workflow-root", type=Path, default=Path("."),
                    help="project folder whose results/benchmarks/<profile>/ are read for 1d (default .)")
    ap.add_argument("--note", default=None, help="a note printed at the top of the summary (e.g. machine busy)")
    ap.add_argument("--update", action="store_true",
                    help="keep the sections of OUT/bench.json that are not rerun (e.g. --sections estimator --update)")
    ap.add_argument("--compact", type=Path, default=None, metavar="BENCH_JSON",
                    help="print the headline tables of an earlier run's bench.json and exit")
    args = ap.parse_args(argv)
    if args.compact:
        print(compact_md(json.loads(args.compact.read_text())))
        return 0
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.threads:
        torch.set_num_threads(args.threads)
    sections = [s.strip() for s in args.sections.split(",") if s.strip()]
    bad = [s for s in sections if s not in SECTIONS]
    if bad:
        print(f"error: unknown section(s) {bad}; choose from {list(SECTIONS)}", file=sys.stderr)
        return 2
    plan = QUICK if args.quick else Plan()
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    if args.estimator_steps:
        plan = replace(plan, estimator_steps=args.estimator_steps)
    specs: list[ModelSpec] = []
    names = (args.models.split(",") if args.models else (["qwen3-quick"] if args.quick else
                                                          ["qwen3-29m", "smollm2-135m"]))
    notes = []
    for n in names:
        n = n.strip()
        if n == "qwen3-29m":
            specs.append(ModelSpec(n, "qwen3", QWEN3_29M))
        elif n == "qwen3-quick":
            specs.append(ModelSpec(n, "qwen3", QWEN3_QUICK))
        elif n == "smollm2-135m":
            if (args.smollm2 / "config.json").exists():
                specs.append(ModelSpec(n, "dir", path=args.smollm2))
            else:
                notes.append(f"smollm2-135m skipped: no prepared checkpoint at {args.smollm2} "
                             f"(snakemake --cores all prepares it)")
        else:
            print(f"error: unknown model '{n}'; choose from qwen3-29m, smollm2-135m, qwen3-quick", file=sys.stderr)
            return 2
    for n in notes:
        log(n)
    out = Path(args.out)
    meta = {"schema_version": SCHEMA_VERSION, "quick": args.quick, "plan": asdict(plan),
            "models": [s.name for s in specs], "sections": sections, "threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "loadavg_start": loadavg(), "platform": platform.platform(),
            "versions": {"python": platform.python_version(), "torch": torch.__version__}, "notes": notes,
            "contention_note": args.note, "targets": TARGETS}
    res: dict = {"meta": meta}
    files: dict[str, object] = {}
    if args.update and (out / "bench.json").exists():
        # rerun some sections, keep the others from the earlier run in OUT
        old = json.loads((out / "bench.json").read_text())
        keep = {k: v for k, v in old.items() if k in SECTIONS and k not in sections}
        res.update(keep)
        for k in ("overhead", "speedup", "workflows"):
            if k in keep:
                files[k] = keep[k]
        meta["updated_from"] = {"sections_kept": sorted(keep), "earlier_meta": old.get("meta")}
    t0 = time.perf_counter()

    def flush(final: bool = False) -> None:
        """Write what exists so far (a long run interrupted later still leaves its files)."""
        meta["elapsed_s"] = time.perf_counter() - t0
        meta["loadavg_end"] = loadavg()
        meta["finished"] = time.strftime("%Y-%m-%d %H:%M:%S") + ("" if final else " (partial: still running)")
        if "overhead" in res or "estimator" in res:
            files["memory"] = memory_section(res)
        res["verdicts"] = verdicts(res)
        for name, data in files.items():
            atomic_write_json(out / f"{name}.json", {"meta": meta, name: data})
        atomic_write_json(out / "bench.json", res)
        atomic_write_text(out / "summary.md", summary_md(res))
    if "overhead" in sections:
        res["overhead"] = []
        for spec in specs:
            p = replace(plan, **SMOLLM2_SCALE) if spec.kind == "dir" and not args.rounds else plan
            res["overhead"].append(bench_overhead(spec, p))
            files["overhead"] = res["overhead"]
            flush()
    if "speedup" in sections:
        res["speedup"] = []
        for spec in specs:
            p = replace(plan, **SMOLLM2_SPEEDUP_SCALE) if spec.kind == "dir" and not args.rounds else plan
            modes = ("fp", "lora") if spec.kind == "dir" else ("fp", "fp-frozen-emb", "lora")
            res["speedup"].append(bench_speedup(spec, p, modes))
            files["speedup"] = res["speedup"]
            flush()
    if "estimator" in sections:
        res["estimator"] = bench_estimator(plan, args.quick, args.smollm2, args.siqa, args.workflow_root)
        flush()
    if "workflows" in sections:
        res["workflows"] = workflow_times(args.workflow_root)
        files["workflows"] = res["workflows"]
    flush(final=True)
    log(f"wrote {out}/summary.md and {', '.join(f'{n}.json' for n in files)}, bench.json "
        f"in {meta['elapsed_s']:.0f} s")
    return 0


def memory_section(res: dict) -> dict:
    """memory.json: GradES state (from 1a), optimizer memory given back (from 1b), estimator (1c)."""
    return {
        "state": [{"model": o["model"], "tracked_params": o["tracked_params"],
                   "weight_copy_bytes": o["weight_copy_bytes"], "released_state_bytes": o["released_state_bytes"],
                   "variants": [{k: r[k] for k in ("variant", "state_bytes", "state_bytes_per_tracked_param",
                                                   "state_vs_weight_copy", "state_vs_released")}
                                for r in o["variants"]]} for o in res.get("overhead", [])],
        "optimizer": [{"model": s["model"], "mode": mode, **m["optimizer_memory"]}
                      for s in res.get("speedup", []) for mode, m in s["modes"].items() if m.get("optimizer_memory")],
        "estimator": res.get("estimator"),
    }


if __name__ == "__main__":
    sys.exit(main())
