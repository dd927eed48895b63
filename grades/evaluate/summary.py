"""The eval.json document, made from lm-eval's results of one evaluation.

A summary per task (accuracy, stderr, counts, chance level), token and FLOP estimates,
and the versions and options that produced them.

``eval.json``::

    {"status": "ok",
     "tasks": {name: {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr",  # float | null
                      "metric", "score", "score_stderr",  # the task's own metric and its value
                      "benchmark", "protocol", "output_type", "split", "dataset", "split_size",
                      "n", "n_total", "version", "num_fewshot",
                      "n_choices", "n_choices_range", "chance_acc", "data"}},
     "backend", "model", "adapter", "lora", "tokenizer", "batch_size", "dtype", "device",
     "limit", "num_fewshot", "seed", "task_versions", ["vllm",] ["lora_check",] "lm_eval_version",
     "transformers_version", "peft_version", "torch_version", "model_num_parameters",
     "eval_tokens", "eval_flops", "threads", "lm_eval_time_s", "wall_time_s"}

``lora_check`` (vllm with an adapter, :mod:`grades.evaluate.lora_check`): ``{"status": agree |
disagree | error | unchecked, "action": none | merged, "reference": "hf", "docs", "requests",
"max_abs_diff", "mean_abs_diff", "tolerance", "reference_time_s"[, "error"][, "reason"]
[, "discarded_lm_eval_time_s"]}``; after ``action: merged``, ``lora`` is ``"merged"``.

``acc_stderr`` is lm-eval's closed form for a mean of 0/1 scores: the sample standard
deviation (ddof=1) over sqrt(n), i.e. ``sqrt(acc*(1-acc)/(n-1))``; it is ``null`` when
lm-eval reports ``"N/A"`` (n == 1).  ``acc_norm`` is ``null`` for tasks that do not
compute it (the local tasks mirror ``social_iqa``, which only reports ``acc``).

``metric`` is the first metric of the task's ``metric_list`` (``acc`` for the
log-likelihood tasks, ``exact_match`` for the commonsense generation tasks), ``score`` /
``score_stderr`` its value; ``benchmark``, ``protocol``, ``output_type``, ``split``,
``dataset`` and ``split_size`` say what was scored (:func:`grades.evaluate.catalogue.facts`).
The chance level of a generation task is 1/options of its documents (``cs_options``).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .backend import EvalOptions
from .catalogue import facts
from .environment import package_version
from .samples import requests

log = logging.getLogger("grades.evaluate")


def to_number(v: Any) -> float | None:
    """A metric value as a float, or None for lm-eval's ``"N/A"`` (and NaN, booleans, ...)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None  # lm-eval uses the string "N/A" for missing stderrs
    return None if math.isnan(v) else float(v)


def task_summary(name: str, res: Mapping[str, Any], samples: list, data_dir: Path | None) -> dict[str, Any]:
    """The eval.json entry of task ``name`` from lm-eval's results ``res`` and its ``samples``."""
    r = res["results"][name]
    metric = {}
    for key, val in r.items():
        if "," in key:
            m, _, filt = key.partition(",")
            if filt == "none":
                metric[m] = val
    counts = res.get("n-samples", {}).get(name, {})
    n = counts.get("effective", r.get("sample_len"))
    about = facts(name, res.get("configs", {}).get(name) or {})
    if about["output_type"] == "generate_until":  # one request per document: chance from its options
        kinds = [int(s["doc"]["cs_options"]) for s in samples if (s.get("doc") or {}).get("cs_options")]
    else:
        kinds = [len(requests(s)) for s in samples]
    n_choices: int | float | None = None
    n_range = chance = None
    if kinds:
        # uniform: an int; varying (e.g. ARC's 3-5): 1/chance, so 1/n_choices is always chance
        chance = sum(1.0 / k for k in kinds) / len(kinds)
        n_range = [min(kinds), max(kinds)]
        n_choices = kinds[0] if n_range[0] == n_range[1] else 1.0 / chance
    primary = about["metric"] if about["metric"] in metric else next(
        (m for m in metric if not m.endswith("_stderr")), None)
    out = {
        "acc": to_number(metric.get("acc")),
        "acc_stderr": to_number(metric.get("acc_stderr")),
        "acc_norm": to_number(metric.get("acc_norm")),
        "acc_norm_stderr": to_number(metric.get("acc_norm_stderr")),
        "metric": primary,
        "score": to_number(metric.get(primary)) if primary else None,
        "score_stderr": to_number(metric.get(f"{primary}_stderr")) if primary else None,
        **{k: about[k] for k in ("benchmark", "protocol", "output_type", "split", "dataset", "split_size")},
        "n": int(n) if n is not None else None,
        "n_total": counts.get("original"),
        "version": res.get("versions", {}).get(name),
        "num_fewshot": res.get("n-shot", {}).get(name),
        "n_choices": n_choices,
        "n_choices_range": n_range,
        "chance_acc": chance,
        "data": str(data_dir) if data_dir else None,
    }
    extra = {k: to_number(v) for k, v in metric.items() if k not in out and to_number(v) is not None}
    if extra:
        out["other_metrics"] = extra
    return out


def task_summaries(res: Mapping[str, Any], names: Sequence[str], data_dirs: Mapping[str, Path],
                   data_stats: Mapping[str, Mapping[str, Any]], limit: int | float | None) -> dict[str, Any]:
    """``{task: entry}`` for every requested task; a local task scored in full must have as many
    documents as its test.jsonl."""
    samples = res.get("samples") or {}
    per_task: dict[str, Any] = {}
    for name in names:
        if name not in res.get("results", {}):
            raise RuntimeError(f"lm-eval returned no results for task {name!r} "
                               f"(got {sorted(res.get('results', {}))})")
        per_task[name] = task_summary(name, res, samples.get(name, []), data_dirs.get(name))
        st = data_stats.get(name)
        if st and limit is None and per_task[name]["n"] != st["n_test"]:
            raise RuntimeError(f"{name}: lm-eval scored {per_task[name]['n']} docs but "
                               f"{data_dirs[name]}/test.jsonl has {st['n_test']}")
    return per_task


def count_tokens(tokenizer_dir: Path, samples: Mapping[str, list]) -> int | None:
    """Tokens fed to the model over all (context, continuation) requests."""
    pairs = [p for ss in samples.values() for s in ss for p in requests(s)]
    if not pairs:
        return None
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        ctx = tok([c for c, _ in pairs], add_special_tokens=False)["input_ids"]
        cont = tok([c for _, c in pairs], add_special_tokens=False)["input_ids"]
        return int(sum(len(a) + len(b) for a, b in zip(ctx, cont)))
    except Exception as e:  # an estimate only; never fail the eval over it
        log.warning("could not count eval tokens (%s); eval_flops = null", e)
        return None


def eval_document(res: Mapping[str, Any], per_task: Mapping[str, Any], opts: EvalOptions, *,
                  model_dir: Path, adapter_dir: Path | None, tokenizer_dir: Path, tokenizer_given: bool,
                  lora: str | None, lm_time: float, t_start: float,
                  lora_check: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The eval.json document: ``per_task`` (:func:`task_summaries`) with the run's inputs,
    options, package versions, token / FLOP estimates and timings (wall time since ``t_start``);
    ``lora_check``: the outcome of :func:`grades.evaluate.lora_check.evaluate_checked`."""
    cfg = res.get("config", {})
    n_params = cfg.get("model_num_parameters")
    n_params = int(n_params) if isinstance(n_params, (int, float)) and n_params > 0 else None
    eval_tokens = count_tokens(tokenizer_dir, res.get("samples") or {})
    return {
        "status": "ok",
        "tasks": dict(per_task),
        "backend": opts.backend,
        "model": str(model_dir),
        "adapter": str(adapter_dir) if adapter_dir else None,
        "lora": lora,
        "tokenizer": str(tokenizer_dir) if tokenizer_given else None,
        "batch_size": opts.batch_size,
        "dtype": opts.dtype,
        "device": opts.device if opts.backend == "hf" else None,
        "limit": opts.limit,
        "num_fewshot": opts.num_fewshot,
        "seed": opts.seed,
        "task_versions": {n: t["version"] for n, t in per_task.items()},
        **({"vllm": opts.vllm} if opts.backend == "vllm" else {}),
        **({"lora_check": dict(lora_check)} if lora_check is not None else {}),
        "lm_eval_version": res.get("lm_eval_version") or package_version("lm_eval"),
        "transformers_version": res.get("transformers_version") or package_version("transformers"),
        "peft_version": package_version("peft"),
        "torch_version": package_version("torch"),
        "model_num_parameters": n_params,
        "eval_tokens": eval_tokens,
        # forward-pass estimate: 2 * params * tokens of every (context, choice) request
        "eval_flops": float(2 * n_params * eval_tokens) if n_params and eval_tokens else None,
        "threads": opts.threads,
        "lm_eval_time_s": round(lm_time, 3),
        "wall_time_s": round(time.perf_counter() - t_start, 3),
    }
