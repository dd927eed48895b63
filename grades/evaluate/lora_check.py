"""vLLM with a LoRA adapter: its log-likelihoods are checked against hf, not assumed.

lm-eval's ``vllm`` backend scores multiple-choice tasks with vLLM's ``prompt_logprobs``,
and vLLM's V1 engine has had LoRA bugs on exactly that path (LoRA with prompt log-probs
refused, the wrong adapter mapped while computing them, an ``lm_head`` delta dropped from
them). So an evaluation on ``vllm`` with an adapter (``lora: adapter``):

1. scores the first ``docs`` documents of each task on lm-eval's ``hf`` backend with the
   adapter through PEFT (the reference; before vLLM starts, so that both never hold the
   accelerator at once; on ``cuda`` when there is one, else the CPU);
2. runs vLLM with the adapter (``lora_local_path``) as usual;
3. compares vLLM's per-choice log-likelihoods of those documents with the reference. When
   the largest difference exceeds ``tolerance`` nats, or vLLM fails with the adapter, the
   adapter is merged into the model and vLLM scores the merged model instead.

eval.json records the outcome under ``lora_check`` (``status``: agree, disagree, error or
unchecked; ``action``: none or merged) and ``lora: "merged"`` after a fallback; the log
says it with a warning. ``docs=0`` (CLI ``--lora-check 0``) turns the check off.
"""

from __future__ import annotations

import dataclasses
import functools
import gc
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .backend import EvalOptions
from .lm_eval_call import run_lm_eval
from .samples import is_generation, loglikelihoods

log = logging.getLogger("grades.evaluate")

#: documents per task scored on hf as the reference (0: no check)
CHECK_DOCS = 8
#: nats: the largest |hf - vllm| per-choice log-likelihood still counted as agreement, by
#: dtype (a choice's log-likelihood sums its tokens'; measured on the CPU in float32: about
#: 1e-4; the half-precision values are allowances for GPU kernels, not measurements)
TOLERANCE = {"float32": 0.05, "bfloat16": 0.5, "float16": 0.5, "auto": 0.5}


def default_tolerance(dtype: str) -> float:
    """The :data:`TOLERANCE` of ``dtype`` (a half-precision one for unknown names)."""
    return TOLERANCE.get(str(dtype), TOLERANCE["auto"])


def choice_loglikelihoods(res: Mapping[str, Any] | None) -> dict[tuple[str, int], list[float]]:
    """``{(task, doc_id): [log-likelihood of each choice]}`` of lm-eval's results (documents of
    log-likelihood tasks only; generation samples have no numbers and are left out)."""
    out: dict[tuple[str, int], list[float]] = {}
    for task, samples in ((res or {}).get("samples") or {}).items():
        for s in samples:
            if is_generation(s):  # its response is text, even when it reads as a number
                continue
            try:
                ll = loglikelihoods(s)
            except (TypeError, ValueError, IndexError):
                continue
            if ll:
                out[(task, int(s.get("doc_id", -1)))] = ll
    return out


def compare(reference: Mapping[tuple[str, int], list[float]], res: Mapping[str, Any] | None,
            tolerance: float) -> dict[str, Any]:
    """vLLM's results ``res`` against the hf ``reference`` on the documents both scored:
    ``{status: agree | disagree | unchecked, docs, requests, max_abs_diff, mean_abs_diff,
    tolerance}`` (unchecked: no document in common, e.g. no log-likelihood task)."""
    got = choice_loglikelihoods(res)
    diffs: list[float] = []
    docs = 0
    for key, ref in reference.items():
        ll = got.get(key)
        if ll is None or len(ll) != len(ref):
            continue
        docs += 1
        diffs += [abs(a - b) for a, b in zip(ref, ll)]
    out: dict[str, Any] = {"reference": "hf", "docs": docs, "requests": len(diffs), "tolerance": tolerance}
    if not diffs:
        return {**out, "status": "unchecked", "max_abs_diff": None, "mean_abs_diff": None,
                "reason": "no log-likelihood document scored by both backends"}
    worst = max(diffs)
    return {**out, "status": "agree" if worst <= tolerance else "disagree",
            "max_abs_diff": worst, "mean_abs_diff": sum(diffs) / len(diffs)}


def reference(model_dir: Path, adapter_dir: Path, names: Sequence[str], std: Sequence[str],
              data_dirs: Mapping[str, Path], opts: EvalOptions, *, docs: int,
              tokenizer: Path | None = None,
              shipped: Sequence[str] = ()) -> tuple[dict[tuple[str, int], list[float]], float]:
    """The hf backend's per-choice log-likelihoods of the first ``docs`` documents of each
    task, adapter through PEFT -> (table, seconds); the model is released afterwards."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    limit = min(docs, opts.limit) if isinstance(opts.limit, int) else docs
    ref_opts = dataclasses.replace(opts, backend="hf", device=device, limit=limit)
    t0 = time.perf_counter()
    res, _ = run_lm_eval(model_dir, adapter_dir, names, std, data_dirs, ref_opts, tokenizer=tokenizer,
                         shipped=shipped)
    table = choice_loglikelihoods(res)
    del res
    release(device)
    return table, time.perf_counter() - t0


def release(device: str | None = None) -> None:
    """Free what a finished lm-eval model held (its objects, the CUDA cache)."""
    gc.collect()
    if device != "cpu":
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def evaluate_checked(model_dir: Path, adapter_dir: Path, names: Sequence[str], std: Sequence[str],
                     data_dirs: Mapping[str, Path], opts: EvalOptions, *, merged: Callable[[], Path],
                     docs: int = CHECK_DOCS, tolerance: float | None = None,
                     tokenizer: Path | None = None,
                     shipped: Sequence[str] = ()) -> tuple[dict[str, Any] | None, float, str, dict[str, Any]]:
    """vLLM with the adapter, checked against hf (module docstring) -> (lm-eval's results,
    seconds in lm-eval, the lora mode scored: adapter | merged, the ``lora_check`` record).
    ``merged()`` merges the adapter and returns the merged model's directory; ``shipped``: the
    tasks of ``evals/tasks/commonsense`` among ``names`` (:func:`run_lm_eval`)."""
    tol = default_tolerance(opts.dtype) if tolerance is None else float(tolerance)
    run = functools.partial(run_lm_eval, tokenizer=tokenizer, shipped=shipped)
    try:
        ref, ref_time = reference(model_dir, adapter_dir, names, std, data_dirs, opts, docs=docs,
                                  tokenizer=tokenizer, shipped=shipped)
    except Exception as e:  # no reference (e.g. too large for one device): evaluate unchecked
        log.warning("LoRA check: no hf reference (%s: %s); vLLM's adapter path is not checked", type(e).__name__, e)
        release()
        res, lm_time = run(model_dir, adapter_dir, names, std, data_dirs, opts)
        return res, lm_time, "adapter", {"status": "unchecked", "action": "none", "reference": "hf",
                                         "reason": f"hf reference failed: {type(e).__name__}: {e}"}
    try:
        res, lm_time = run(model_dir, adapter_dir, names, std, data_dirs, opts)
    except Exception as e:  # vLLM refused or broke on the adapter: the merged model needs no LoRA
        res, lm_time = None, 0.0
        check = {"status": "error", "reference": "hf", "docs": None, "requests": None, "tolerance": tol,
                 "max_abs_diff": None, "mean_abs_diff": None, "error": f"{type(e).__name__}: {e}"}
    else:
        check = compare(ref, res, tol)
    check["reference_time_s"] = round(ref_time, 3)
    if check["status"] in ("agree", "unchecked"):
        log.info("LoRA check: vLLM's log-likelihoods with the adapter %s hf's (max |diff| %s over %s "
                 "choices, tolerance %g)", "agree with" if check["status"] == "agree" else "were not compared with",
                 _fmt(check["max_abs_diff"]), check["requests"], tol)
        return res, lm_time, "adapter", {**check, "action": "none"}
    why = (f"failed with the adapter ({check['error']})" if check["status"] == "error" else
           f"disagree with hf's (max |diff| {_fmt(check['max_abs_diff'])} nats over {check['requests']} "
           f"choices > tolerance {tol:g})")
    log.warning("LoRA check: vLLM's log-likelihoods with the adapter %s; evaluating the model with the "
                "adapter merged instead (eval.json: lora = merged, lora_check)", why)
    check["discarded_lm_eval_time_s"] = round(lm_time, 3)
    del res
    release()
    res, lm_time = run(merged(), None, names, std, data_dirs, opts)
    return res, lm_time, "merged", {**check, "action": "merged"}


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}"
