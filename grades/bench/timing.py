"""Timing discipline: the plan of a run, one timed train step, interleaved rounds, medians and paired ratios."""

from __future__ import annotations

import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch


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
