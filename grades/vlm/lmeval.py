"""lm-eval for VLMs: which tasks it runs, its arguments, its results as eval.json entries.

Generation tasks go through lm-eval's multimodal model of a backend (``hf`` ->
``hf-multimodal``, ``vllm`` -> ``vllm-vlm``): the local templates of ``evals/tasks``
(``shapes_gen``, rendered for a prepared image dataset; :func:`generate_with_lm_eval`)
and the benchmarks over Hub data of ``evals/tasks/hub`` (:func:`hub_tasks`);
:func:`split_vlm_tasks` sorts a task list into those and the multiple-choice task scored
by :mod:`grades.vlm.score`. :func:`merge_adapter` merges a VLM's LoRA adapter first for vLLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..resources import hub_tasks_dir
from .checkpoint import load_vlm
from .errors import VLMError


def lm_eval_tasks(tasks: list[str]) -> list[str]:
    """The local tasks that go through lm-eval: those with a template in ``evals/tasks``
    (e.g. ``shapes_gen``, generate_until with images, rendered for a prepared dataset)."""
    from ..evaluate import local_tasks

    templates = local_tasks()
    return [t for t in tasks if t in templates]


def hub_tasks() -> dict[str, Path]:
    """``{task: yaml}`` of :func:`hub_tasks_dir` (their data comes from the HF cache)."""
    from ..evaluate import local_tasks

    d = hub_tasks_dir()
    return local_tasks(d) if d.is_dir() else {}


def split_vlm_tasks(names: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(multiple choice scored here, local lm-eval templates, Hub benchmarks); unknown names raise."""
    hub = hub_tasks()
    gen = lm_eval_tasks([t for t in names if t not in hub])
    hubs = [t for t in names if t in hub]
    mc = [t for t in names if t not in gen and t not in hubs]
    if len(mc) > 1:
        raise VLMError(f"one multiple-choice task per evaluation, got {mc}; the benchmarks over Hub data are "
                       f"{sorted(hub)} (evals/tasks/hub)")
    return mc, gen, hubs


def task_entry(task: str, res: dict, backend: str) -> dict:
    """A generation task of lm-eval's results -> its eval.json entry: every metric with its
    stderr, plus ``metric`` (the first of the task's metric_list) and ``score`` (its value)."""
    from ..evaluate import to_number

    r = res["results"][task]
    vals: dict[str, Any] = {}
    for k, v in r.items():
        name, sep, _filter = k.partition(",")
        if sep and name not in vals:
            vals[name] = to_number(v)
    metrics = [m["metric"] for m in (res.get("configs", {}).get(task, {}).get("metric_list") or [])
               if isinstance(m.get("metric"), str)]
    primary = next((m for m in metrics if m in vals), None) or next(
        (k for k in vals if not k.endswith("_stderr")), None)
    ns = res.get("n-samples", {}).get(task, {})
    return {**vals, "metric": primary, "score": vals.get(primary), "score_stderr": vals.get(f"{primary}_stderr"),
            "n": int(ns.get("effective") or 0) or None, "n_total": int(ns.get("original") or 0) or None,
            "version": res.get("versions", {}).get(task), "num_fewshot": 0, "output_type": "generate_until",
            "backend": f"lm-eval {backend}"}


def lm_eval_kwargs(model_dir: str | Path, tasks: list[str], *, adapter: str | Path | None = None,
                   backend: str = "hf", limit: int | None = None, batch_size: int = 16, dtype: str = "float32",
                   device: str = "cpu", seed: int = 0, apply_chat_template: bool = False,
                   vllm: dict | None = None) -> dict:
    """``lm_eval.simple_evaluate`` keyword arguments for a VLM (pure; the task manager is set by
    the caller): :func:`grades.evaluate.build_lm_eval_args` with ``backend``'s multimodal model."""
    from ..evaluate import MULTIMODAL_BACKENDS, build_lm_eval_args

    mm = MULTIMODAL_BACKENDS.get(backend)
    if mm is None:
        raise VLMError(f"backend {backend!r}: choose one of {list(MULTIMODAL_BACKENDS)}")
    v = vllm or {}
    kw = build_lm_eval_args(model=model_dir, tasks=tasks, adapter=Path(adapter).expanduser().resolve() if adapter
                            else None, backend=mm, batch_size=batch_size, dtype=dtype, device=device, limit=limit,
                            seed=seed, gpu_memory_utilization=v.get("gpu_memory_utilization", 0.9),
                            tensor_parallel_size=v.get("tensor_parallel_size", 1),
                            max_model_len=v.get("max_model_len"), apply_chat_template=apply_chat_template)
    return kw


def run_lm_eval(model_dir: Path, tasks: list[str], include: Path, *, adapter: str | Path | None = None,
                backend: str = "hf", limit: int | None = None, batch_size: int = 16, dtype: str = "float32",
                device: str = "cpu", seed: int = 0, apply_chat_template: bool = False,
                vllm: dict | None = None, samples: list | None = None) -> dict[str, dict]:
    """Generation tasks through lm-eval's multimodal model of ``backend`` (``hf`` ->
    hf-multimodal with the adapter as ``peft=``, ``vllm`` -> vllm-vlm, adapter merged first
    by the caller) -> ``{task: eval.json entry}`` (:func:`task_entry`). ``samples``, when
    given, receives one record per question (id, type, response, filtered, target, metrics)."""
    import lm_eval

    from ..evaluate import task_manager

    kw = lm_eval_kwargs(model_dir, tasks, adapter=adapter, backend=backend, limit=limit, batch_size=batch_size,
                        dtype=dtype, device=device, seed=seed, apply_chat_template=apply_chat_template, vllm=vllm)
    kw.update(task_manager=task_manager(include, False), log_samples=samples is not None)
    res = lm_eval.simple_evaluate(**kw)
    if samples is not None:
        for t in tasks:
            metrics = [m["metric"] for m in res["configs"][t].get("metric_list") or []]
            for x in res["samples"][t]:
                samples.append({"task": t, "id": x["doc"].get("id", x.get("doc_id")), "type": x["doc"].get("type"),
                                "response": x["resps"][0][0], "filtered": x["filtered_resps"][0],
                                "target": x["target"], **{m: x.get(m) for m in metrics if m in x}})
    return {t: task_entry(t, res, kw["model"]) for t in tasks}


def generate_with_lm_eval(model_dir: Path, data_dir: Path, task: str, *, adapter: str | Path | None = None,
                          split: str = "test", limit: int | None = None, batch_size: int = 16,
                          dtype: str = "float32", seed: int = 0, samples: list | None = None, **lm_kw) -> dict:
    """One local generation task (a template of evals/tasks, rendered for ``data_dir`` by
    :func:`grades.evaluate.render_tasks`) through lm-eval -> its eval.json entry
    (:func:`run_lm_eval`; for ``shapes_gen`` the metric is ``exact_match`` of the short answer)."""
    import tempfile

    from ..evaluate import render_tasks

    if split != "test":
        raise VLMError(f"lm-eval task {task!r} is evaluated on its test split, not {split!r}")
    with tempfile.TemporaryDirectory(prefix="grades-vlm-lm-eval-") as tmp:
        inc = render_tasks({task: data_dir}, Path(tmp) / "tasks", cache_dir=Path(tmp) / "cache")
        out = run_lm_eval(model_dir, [task], inc, adapter=adapter, limit=limit, batch_size=batch_size, dtype=dtype,
                          seed=seed, samples=samples, **lm_kw)[task]
    return {**out, "data": str(data_dir)}


def merge_adapter(model: str | Path, adapter: str | Path, out: str | Path, dtype: str = "float32") -> Path:
    """Merge a VLM's LoRA adapter into its base model; save model + processor into ``out``
    (the ``vllm`` path: vLLM applies LoRA to the language model only, never the vision tower).
    :func:`grades.evaluate.merge_adapter` with the VLM loader."""
    from ..evaluate import merge_adapter as merge

    return merge(model, Path(adapter).expanduser().resolve(), out, dtype, load=load_vlm)
