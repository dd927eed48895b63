"""``evaluate()``: one evaluation, from its inputs to eval.json.

Check the inputs, split and check the tasks, merge the adapter if asked, call lm-eval,
summarise, write eval.json (and the samples) through :class:`grades.rundir.RunDir`."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from ..rundir import RunDir
from .adapters import TOKENIZER_FILES, has_tokenizer, merge_adapter, read_adapter_config
from .backend import EvalOptions
from .data import check_data_dir, parse_data
from .environment import quiet_libraries, set_offline
from .errors import EvalConfigError, MissingInputError
from .lm_eval_call import run_lm_eval
from .lora_check import CHECK_DOCS, evaluate_checked
from .samples import sample_records
from .summary import eval_document, task_summaries
from .tasks import STANDARD_TASKS, local_tasks, parse_tasks, shipped_tasks, split_tasks

log = logging.getLogger("grades.evaluate")


def evaluate(model: str | os.PathLike, tasks: str | Sequence[str],
             data: str | os.PathLike | Mapping[str, Any] | None = None,
             out: str | os.PathLike | None = None, adapter: str | os.PathLike | None = None,
             backend: str = "hf", batch_size: int | str = 16, limit: int | float | None = None,
             dtype: str = "float32", device: str = "cpu", num_fewshot: int = 0, seed: int = 0,
             samples_out: str | os.PathLike | None = None, gpu_memory_utilization: float = 0.9,
             tensor_parallel_size: int = 1, max_model_len: int | None = None,
             threads: int | None = None, tokenizer: str | os.PathLike | None = None,
             quiet: bool = True, merge: bool = False,
             merge_dir: str | os.PathLike | None = None, lora_check: int = CHECK_DOCS,
             lora_check_tol: float | None = None) -> dict[str, Any]:
    """Evaluate ``model`` (+ optional PEFT ``adapter``) and return (and write) the summary.

    ``out`` receives eval.json (:mod:`grades.evaluate.summary` describes it), ``samples_out``
    one JSON line per scored document (:func:`grades.evaluate.samples.sample_records`).

    ``merge``: merge the adapter into the model first (:func:`merge_adapter`, into a
    temporary directory under ``merge_dir`` or ``$GRADES_MERGE_DIR``, removed afterwards)
    and evaluate the merged model; eval.json records ``lora: "merged"``.

    ``lora_check``: on ``vllm`` with an adapter (not merged), score the first ``lora_check``
    documents of each task on ``hf`` too and merge the adapter if vLLM's log-likelihoods
    differ by more than ``lora_check_tol`` nats (default by dtype), or vLLM fails with it
    (:mod:`grades.evaluate.lora_check`); eval.json records ``lora_check``. 0: no check.

    ``threads`` sets torch's intra-op threads for the run (restored afterwards); on a
    shared CPU, oversubscription is ruinous (2 threads on a busy 2-core box: ~10x slower).
    """
    set_offline()
    t_start = time.perf_counter()
    opts = EvalOptions(backend=backend, batch_size=batch_size, dtype=dtype, device=device, limit=limit,
                       num_fewshot=num_fewshot, seed=seed, threads=threads,
                       gpu_memory_utilization=gpu_memory_utilization,
                       tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len)
    model_dir, tok_dir, adapter_dir = check_model(model, tokenizer, adapter)
    opts.check()

    names = parse_tasks(tasks)
    local_names, shipped_names = local_tasks(), shipped_tasks()
    loc = [n for n in names if n in local_names]
    shipped = [n for n in names if n in shipped_names and n not in local_names]
    std = [n for n in names if n not in local_names and n not in shipped_names]
    if all(n in STANDARD_TASKS for n in std):
        split_tasks(names)  # fail fast; other names need lm-eval's index (~10 s), in run_lm_eval
    data_dirs = parse_data(data, loc)
    data_stats = {t: check_data_dir(t, d) for t, d in data_dirs.items()}
    if backend == "vllm" and find_spec("vllm") is None:
        raise EvalConfigError("backend 'vllm' requested but vllm is not installed "
                              "(pip install 'grades-harness[vllm]'); use --backend hf")

    if quiet:
        quiet_libraries()
    import lm_eval  # noqa: F401 - a broken lm-eval install fails here, before any merge

    lora_mode = None if adapter_dir is None else ("merged" if merge else "adapter")
    checked = backend == "vllm" and adapter_dir is not None and not merge and lora_check > 0
    check = None
    tok_arg = tok_dir if tokenizer is not None else None
    with contextlib.ExitStack() as stack:
        def merged() -> Path:
            mdir = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="grades_merged_", dir=merge_dir or os.environ.get("GRADES_MERGE_DIR"))))
            log.info("merging %s into %s", adapter_dir, model_dir)
            return merge_adapter(model_dir, adapter_dir, mdir / "model", dtype)

        if checked:
            res, lm_time, lora_mode, check = evaluate_checked(
                model_dir, adapter_dir, names, std, data_dirs, opts, merged=merged, docs=lora_check,
                tolerance=lora_check_tol, tokenizer=tok_arg, shipped=shipped)
        else:
            eval_model, eval_adapter = (merged(), None) if merge and adapter_dir is not None else (model_dir, adapter_dir)
            res, lm_time = run_lm_eval(eval_model, eval_adapter, names, std, data_dirs, opts, tokenizer=tok_arg,
                                       shipped=shipped)
    if res is None:  # non-zero rank in a distributed run
        return {}

    per_task = task_summaries(res, names, data_dirs, data_stats, opts.limit)
    summary = eval_document(res, per_task, opts, model_dir=model_dir, adapter_dir=adapter_dir,
                            tokenizer_dir=tok_dir, tokenizer_given=tokenizer is not None, lora=lora_mode,
                            lm_time=lm_time, t_start=t_start, lora_check=check)
    for name, t in per_task.items():
        log.info("%s: %s=%s ± %s (n=%d, %s)", name, t["metric"], _fmt(t["score"]), _fmt(t["score_stderr"]), t["n"],
                 t["protocol"])
    if samples_out is not None:
        RunDir(Path(samples_out).parent).write_samples(sample_records(res.get("samples") or {}, names),
                                                       samples_out)
    if out is not None:
        RunDir(Path(out).parent).write_eval(summary, out)
        log.info("wrote %s (%.1f s)", out, summary["wall_time_s"])
    return summary


def check_model(model: str | os.PathLike, tokenizer: str | os.PathLike | None,
                adapter: str | os.PathLike | None) -> tuple[Path, Path, Path | None]:
    """(model dir, tokenizer dir, adapter dir), resolved, or a :class:`MissingInputError` /
    :class:`EvalConfigError` naming what is missing: a saved model with config.json, a
    tokenizer (in the model dir or ``tokenizer``), a PEFT adapter dir when given."""
    model_dir = Path(model).expanduser()
    if not model_dir.is_dir():
        raise MissingInputError(f"model directory not found: {model_dir}")
    if not (model_dir / "config.json").is_file():
        raise MissingInputError(f"{model_dir} has no config.json (not a saved Hugging Face model)")
    model_dir = model_dir.resolve()
    tok_dir = Path(tokenizer).expanduser().resolve() if tokenizer is not None else model_dir
    if not has_tokenizer(tok_dir):
        raise MissingInputError(f"no tokenizer in {tok_dir} (none of {list(TOKENIZER_FILES)}); "
                                "save it with the model or pass --tokenizer DIR")
    adapter_dir = None
    if adapter is not None:
        adapter_dir = Path(adapter).expanduser().resolve()
        read_adapter_config(adapter_dir)
    return model_dir, tok_dir, adapter_dir


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"
