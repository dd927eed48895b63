"""Evaluate a (LoRA-adapted) VLM on any mix of its task kinds -> one eval.json.

:func:`evaluate_vlm` scores the multiple-choice task itself (:mod:`grades.vlm.score`) and
hands generation tasks and Hub benchmarks to lm-eval (:mod:`grades.vlm.lmeval`); the
result has the structure of :mod:`grades.evaluate`'s eval.json, ``backend: "grades-vlm"``,
and is written through :class:`grades.rundir.RunDir`.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from ..resources import hub_tasks_dir
from ..rundir import RunDir
from .checkpoint import count_params, load_vlm
from .errors import VLMError
from .lmeval import generate_with_lm_eval, merge_adapter, run_lm_eval, split_vlm_tasks
from .score import request_lengths, score_multiple_choice, summarize_scores


def _version(pkg: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def _eval_flops(net, lengths: list[int], n_params: int) -> float:
    """Analytic forward FLOPs of every request (one picture each, padding not counted), or
    grades.evaluate's rough estimate (2 x parameters x tokens) for a model the plan cannot count."""
    try:
        from ..flops import build_plan

        plan = build_plan(net)
        return float(sum(plan.evaluate(1, n, 1).forward for n in lengths))
    except (NotImplementedError, ValueError):
        return float(2 * n_params * sum(lengths))


def evaluate_vlm(model: str | Path, data: str | Path | None = None, *, out: str | Path | None = None,
                 adapter: str | Path | None = None, task: str = "shapes_mc", split: str = "test",
                 limit: int | None = None, batch_size: int = 16, dtype: str = "float32",
                 threads: int | None = None, seed: int = 0, samples_out: str | Path | None = None,
                 progress: bool = False, backend: str = "hf", device: str = "cpu",
                 apply_chat_template: bool = False, vllm: dict | None = None) -> dict:
    """Evaluate a (LoRA-adapted) VLM -> eval.json with the structure of :mod:`grades.evaluate`.

    Three kinds of task (:func:`split_vlm_tasks`), any mix, one eval.json:

    * a multiple-choice task over a prepared image dataset (``shapes_mc``), scored here
      (log-likelihood of each choice; lm-eval's hf-multimodal cannot): ``acc``,
      ``acc_norm``, chance, ``by_type``;
    * local lm-eval templates over the same dataset (``shapes_gen``), and
    * benchmarks over Hub data (evals/tasks/hub: ``gqa``, ``vqav2``, ``coco_caption``,
      ``mmstar_*``), both through lm-eval (:func:`run_lm_eval`) with ``backend``'s
      multimodal model; entries carry every metric plus ``metric`` / ``score``.

    ``data`` (the prepared dataset) is needed only by the first two. With ``backend="vllm"``
    an adapter is merged into the model first (:func:`merge_adapter`); eval.json records
    ``lora: "merged"``."""
    t_start = time.perf_counter()
    model_dir = Path(model).expanduser().resolve()
    if threads is not None and threads < 1:
        raise VLMError(f"threads must be >= 1, got {threads}")
    if limit is not None and limit < 1:
        raise VLMError(f"limit must be >= 1, got {limit}")
    names = [t.strip() for t in (task.split(",") if isinstance(task, str) else task) if t.strip()]
    if not names:
        raise VLMError("no task given")
    mc, gen, hub = split_vlm_tasks(names)
    if (mc or gen) and data is None:
        raise VLMError(f"task(s) {mc + gen} read a prepared image dataset: pass --data DIR")
    if backend == "vllm" and mc:
        raise VLMError(f"the multiple-choice task {mc[0]} is scored with transformers (backend hf), not vllm")
    ddir = Path(data).expanduser().resolve() if data is not None else None
    examples: list[dict] = []
    n_total = None
    if mc:
        from ..data.shapes import load_examples

        examples = load_examples(ddir, split)
        n_total = len(examples)
        examples = examples[:limit] if limit else examples
    lm_kw = {"backend": backend, "device": device, "apply_chat_template": apply_chat_template, "vllm": vllm}
    prev = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    net = proc = None
    lora_mode = None if adapter is None else ("merged" if backend == "vllm" else "adapter")
    try:
        with tempfile.TemporaryDirectory(prefix="grades-vlm-merged-") as tmp:
            eval_model, eval_adapter = model_dir, adapter
            if adapter is not None and backend == "vllm":
                eval_model, eval_adapter = merge_adapter(model_dir, adapter, Path(tmp) / "model", dtype), None
            torch.manual_seed(seed)
            scores: list[dict] = []
            t0 = time.perf_counter()
            if mc:
                net, proc = load_vlm(model_dir, dtype)
                if adapter is not None:
                    from peft import PeftModel

                    net = PeftModel.from_pretrained(net, str(Path(adapter).expanduser().resolve()))
                scores = score_multiple_choice(net, proc, examples, batch_size=batch_size, progress=progress)
            score_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            gen_samples: list[dict] | None = [] if samples_out is not None else None
            results = {t: generate_with_lm_eval(eval_model, ddir, t, adapter=eval_adapter, split=split, limit=limit,
                                                batch_size=batch_size, dtype=dtype, seed=seed, samples=gen_samples,
                                                **lm_kw) for t in gen}
            if hub:
                results.update(run_lm_eval(eval_model, hub, hub_tasks_dir(), adapter=eval_adapter, limit=limit,
                                           batch_size=batch_size, dtype=dtype, seed=seed, samples=gen_samples,
                                           **lm_kw))
            lm_eval_s = time.perf_counter() - t0 if gen or hub else None
    finally:
        torch.set_num_threads(prev)
    n_params = sum(p.numel() for p in net.parameters()) if net is not None else count_params(model_dir)
    eval_tokens = eval_flops = None
    if mc:
        lengths = request_lengths(proc, examples)  # prompt (with image tokens) + choice, per request
        eval_tokens = sum(lengths)
        eval_flops = _eval_flops(net, lengths, n_params)
    summary = {
        "status": "ok",
        "tasks": {**({mc[0]: summarize_scores(scores, n_total, str(ddir))} if mc else {}), **results},
        "backend": "grades-vlm", "lm_eval_backend": backend if gen or hub else None, "model": str(model_dir),
        "adapter": str(Path(adapter).resolve()) if adapter else None, "lora": lora_mode, "tokenizer": None,
        "batch_size": batch_size, "dtype": dtype, "device": device if backend == "hf" else None, "limit": limit,
        "num_fewshot": 0, "seed": seed, "split": split, "apply_chat_template": apply_chat_template,
        **({"vllm": vllm} if backend == "vllm" else {}),
        "lm_eval_version": _version("lm_eval") if gen or hub else None,
        "transformers_version": _version("transformers"), "peft_version": _version("peft"),
        "torch_version": _version("torch"), "model_num_parameters": n_params, "eval_tokens": eval_tokens,
        "eval_flops": eval_flops, "threads": threads,
        "lm_eval_time_s": round(lm_eval_s, 3) if lm_eval_s is not None else None, "score_time_s": round(score_s, 3),
        "wall_time_s": round(time.perf_counter() - t_start, 3),
    }
    if samples_out is not None:
        recs = [{"task": mc[0], **s} for s in scores] + (gen_samples or [])
        RunDir(Path(samples_out).parent).write_samples(recs, samples_out)
    if out is not None:
        RunDir(Path(out).parent).write_eval(summary, out)
    return summary
