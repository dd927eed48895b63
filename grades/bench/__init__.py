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

The package, by concern: :mod:`.timing` (the plan, one timed step, interleaved rounds,
medians), :mod:`.workload` (models and batches), one module per section —
:mod:`.overhead` with :mod:`.kernels` (1a), :mod:`.speedup` (1b and the optimizer
memory of 1c), :mod:`.estimator` (1c), :mod:`.workflows` (1d) — then :mod:`.verdicts`
(targets), :mod:`.report` (summary.md, ``--compact``, memory.json) and :mod:`.cli`.
"""

from __future__ import annotations

from .cli import SCHEMA_VERSION, SECTIONS, main, model_specs
from .estimator import (DEFAULT_PROFILE, bench_estimator, default_profile_setting, error_stats, first_below,
                        freeze_agreement, relative_errors)
from .kernels import bench_kernels
from .overhead import OURS, RELEASED, OursMonitor, ReleasedMonitor, bench_overhead
from .report import compact_md, memory_section, summary_md
from .speedup import Configurator, bench_speedup, optimizer_release, optimizer_state_bytes
from .timing import (QUICK, SMOLLM2_SCALE, SMOLLM2_SPEEDUP_SCALE, Plan, interleave, loadavg, log, mad_rel, med,
                     paired_ratio, raw, train_step)
from .verdicts import TARGETS, verdicts
from .workflows import PROFILES, workflow_times
from .workload import (QWEN3_29M, QWEN3_QUICK, SIQA_DIR, SMOLLM2_DIR, ModelSpec, add_lora, build_qwen3, load_dir,
                       random_batch)

__all__ = [
    # CLI and schema
    "SCHEMA_VERSION", "SECTIONS", "main", "model_specs",
    # timing
    "Plan", "QUICK", "SMOLLM2_SCALE", "SMOLLM2_SPEEDUP_SCALE", "interleave", "loadavg", "log", "mad_rel", "med",
    "paired_ratio", "raw", "train_step",
    # workload
    "ModelSpec", "QWEN3_29M", "QWEN3_QUICK", "SIQA_DIR", "SMOLLM2_DIR", "add_lora", "build_qwen3", "load_dir",
    "random_batch",
    # sections
    "OURS", "RELEASED", "OursMonitor", "ReleasedMonitor", "bench_overhead", "bench_kernels",
    "Configurator", "bench_speedup", "optimizer_release", "optimizer_state_bytes",
    "DEFAULT_PROFILE", "bench_estimator", "default_profile_setting", "error_stats", "first_below",
    "freeze_agreement", "relative_errors",
    "PROFILES", "workflow_times",
    # targets and report
    "TARGETS", "verdicts", "compact_md", "memory_section", "summary_md",
]
