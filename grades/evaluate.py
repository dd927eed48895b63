"""Multiple-choice evaluation through EleutherAI's lm-evaluation-harness (lm-eval 0.4.13).

Two kinds of tasks:

* **local** tasks (``world_mc``, ``siqa_local``; templates in ``evals/tasks/``) read a
  prepared dataset directory (``test.jsonl`` + ``validation.jsonl``, rows
  ``{"id", "context", "question", "choices", "label"}``) whose path is only known at
  run time.  The templates are rendered into a temporary include dir with the data
  dir substituted, and lm-eval is pointed at it via
  ``TaskManager(include_path=..., include_defaults=False)``.  The prompt is
  lm-eval's own ``social_iqa`` prompt: ``"Q: {context} {question}\\nA:"`` + ``" "`` +
  choice.
* **standard** lm-eval tasks by name (``boolq``, ``piqa``, ``social_iqa``,
  ``hellaswag``, ``winogrande``, ``openbookqa``, ``arc_easy``, ``arc_challenge``, or
  any other name in lm-eval's registry).  They need their Hugging Face datasets in
  the local cache (or ``HF_HUB_OFFLINE=0``).

Library::

    from grades.evaluate import evaluate
    summary = evaluate("runs/x/model", tasks=["world_mc"], data="cache/data/world",
                       adapter="runs/x/adapter", out="runs/x/eval.json")

CLI::

    python -m grades.evaluate --model MODEL_DIR [--adapter ADAPTER_DIR] [--tokenizer DIR] \\
        --tasks world_mc[,siqa_local] --data DATA_DIR|task=DIR[,task=DIR] --out eval.json \\
        [--backend hf|vllm] [--batch-size 16] [--limit N] [--dtype float32] \\
        [--device cpu] [--num-fewshot 0] [--seed 0] [--samples-out samples.jsonl] [--threads N]

``eval.json`` (written atomically)::

    {"status": "ok",
     "tasks": {name: {"acc", "acc_stderr", "acc_norm", "acc_norm_stderr",  # float | null
                      "n", "n_total", "version", "num_fewshot",
                      "n_choices", "n_choices_range", "chance_acc", "data"}},
     "backend", "model", "adapter", "tokenizer", "batch_size", "dtype", "device", "limit",
     "num_fewshot", "seed", "lm_eval_version", "transformers_version", "peft_version",
     "torch_version", "model_num_parameters", "eval_tokens", "eval_flops",
     "threads", "wall_time_s", "lm_eval_time_s"}

``acc_stderr`` is lm-eval's closed form for a mean of 0/1 scores: the sample standard
deviation (ddof=1) over sqrt(n), i.e. ``sqrt(acc*(1-acc)/(n-1))``; it is ``null`` when
lm-eval reports ``"N/A"`` (n == 1).  ``acc_norm`` is ``null`` for tasks that do not
compute it (the local tasks mirror ``social_iqa``, which only reports ``acc``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping, Sequence
from importlib import metadata as _md
from importlib.util import find_spec
from pathlib import Path
from typing import Any

from .resources import tasks_dir

log = logging.getLogger("grades.evaluate")

#: lm-eval's own tasks this harness knows about (they need the Hub or a warm HF cache).
STANDARD_TASKS: tuple[str, ...] = ("boolq", "piqa", "social_iqa", "hellaswag", "winogrande",
                                   "openbookqa", "arc_easy", "arc_challenge")
#: vLLM only accepts these values for ``max_lora_rank`` (vllm.config.LoRAConfig).
VLLM_LORA_RANKS: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 320, 512)
BACKENDS = ("hf", "vllm")
#: lm-eval's vision-language model of each backend (grades.vlm evaluates VLMs with these)
MULTIMODAL_BACKENDS = {"hf": "hf-multimodal", "vllm": "vllm-vlm"}
REQUIRED_FIELDS = ("context", "question", "choices", "label")
DATA_FILES = ("test.jsonl", "validation.jsonl")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")
_PLACEHOLDERS = ("@DATA_DIR@", "@CACHE_DIR@")


class EvalConfigError(ValueError):
    """Bad evaluation inputs (reported before any model is loaded)."""


class MissingInputError(EvalConfigError, FileNotFoundError):
    """A model / adapter / data path that should exist does not."""


# --------------------------------------------------------------------------- offline

def set_offline(force: bool = False) -> None:
    """Default HF_HUB_OFFLINE / HF_DATASETS_OFFLINE to 1 (an explicit ``=0`` is kept
    unless ``force``) and patch the constants of already-imported HF libraries."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if force:
            os.environ[var] = "1"
        else:
            os.environ.setdefault(var, "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    hub_off = os.environ["HF_HUB_OFFLINE"].strip().lower() in ("1", "true", "yes", "on")
    ds_off = hub_off or os.environ["HF_DATASETS_OFFLINE"].strip().lower() in ("1", "true", "yes", "on")
    if "huggingface_hub" in sys.modules:  # constants are read once, at import
        import huggingface_hub.constants as hc

        hc.HF_HUB_OFFLINE = hub_off
    if "datasets" in sys.modules:
        import datasets.config as dc

        dc.HF_HUB_OFFLINE = ds_off
        if hasattr(dc, "HF_DATASETS_OFFLINE"):
            dc.HF_DATASETS_OFFLINE = ds_off


set_offline()  # before lm_eval / datasets / huggingface_hub are imported


# --------------------------------------------------------------------------- tasks

def local_tasks(directory: str | Path | None = None) -> dict[str, Path]:
    """``{task name: template yaml}`` for every ``*.yaml`` template in ``directory``."""
    import yaml

    d = Path(directory) if directory else tasks_dir()
    if not d.is_dir():
        raise MissingInputError(f"task template dir not found: {d}")
    out: dict[str, Path] = {}
    for p in sorted(d.glob("*.yaml")):
        with p.open() as f:
            cfg = yaml.load(f, Loader=yaml.BaseLoader) or {}  # no !function resolution
        if isinstance(cfg, dict) and isinstance(cfg.get("task"), str):
            out[cfg["task"]] = p
    return out


def split_tasks(tasks: str | Sequence[str], directory: str | Path | None = None,
                registry: Sequence[str] | None = None) -> tuple[list[str], list[str]]:
    """Split requested names into (local, lm-eval); raise on unknown names.

    Non-local names must be in :data:`STANDARD_TASKS`, or in ``registry`` (the names of
    lm-eval's task index, ``TaskManager().all_tasks``) when that is given.
    """
    names = parse_tasks(tasks)
    local_names = local_tasks(directory)
    known = set(STANDARD_TASKS) | set(registry or ())
    loc = [n for n in names if n in local_names]
    other = [n for n in names if n not in local_names]
    unknown = [n for n in other if n not in known]
    if unknown:
        raise EvalConfigError(
            f"unknown task(s) {', '.join(map(repr, unknown))}; available: local "
            f"{sorted(local_names)} (need --data), lm-eval standard {list(STANDARD_TASKS)}"
            + (" or any other task in lm-eval's registry" if registry is not None else ""))
    return loc, other


def parse_tasks(tasks: str | Sequence[str]) -> list[str]:
    names = tasks.split(",") if isinstance(tasks, str) else [t for x in tasks for t in str(x).split(",")]
    names = [n.strip() for n in names if n.strip()]
    if not names:
        raise EvalConfigError("no tasks given")
    seen: list[str] = []
    for n in names:
        if n not in seen:
            seen.append(n)
    return seen


def parse_data(data: str | os.PathLike | Mapping[str, Any] | None,
               local: Sequence[str]) -> dict[str, Path]:
    """Map each local task to its data dir.

    ``data`` is one directory (shared by all local tasks), ``"task=DIR,task=DIR"`` or a
    mapping ``{task: DIR}``.
    """
    if not local:
        return {}
    if data is None or (isinstance(data, str) and not data.strip()):
        raise EvalConfigError(f"local task(s) {list(local)} need a data directory (--data DIR)")
    if isinstance(data, Mapping):
        mapping = {str(k): Path(v) for k, v in data.items()}
    elif isinstance(data, str) and "=" in data and not Path(data).exists():
        mapping = {}
        for part in data.split(","):
            k, sep, v = part.partition("=")
            if not sep or not k.strip() or not v.strip():
                raise EvalConfigError(f"bad --data entry {part!r}; expected DIR or task=DIR[,task=DIR]")
            mapping[k.strip()] = Path(v.strip())
    else:
        return {t: Path(data).expanduser().resolve() for t in local}
    missing = [t for t in local if t not in mapping]
    if missing:
        raise EvalConfigError(f"no data directory given for task(s) {missing} (got {sorted(mapping)})")
    extra = [t for t in mapping if t not in local]
    if extra:
        raise EvalConfigError(f"--data names task(s) {extra} that are not requested local tasks {list(local)}")
    return {t: mapping[t].expanduser().resolve() for t in local}


def check_data_dir(task: str, data_dir: Path) -> dict[str, Any]:
    """Validate a prepared dataset dir; return ``{"n_test", "n_choices"}`` of test.jsonl."""
    if not data_dir.is_dir():
        raise MissingInputError(f"data directory for task {task!r} not found: {data_dir}")
    stats: dict[str, Any] = {}
    for fname in DATA_FILES:
        path = data_dir / fname
        if not path.is_file():
            raise MissingInputError(f"data file for task {task!r} not found: {path}")
        n, kinds = 0, set()
        with path.open(encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise EvalConfigError(f"{path}:{lineno}: invalid JSON ({e})") from None
                miss = [k for k in REQUIRED_FIELDS if k not in row]
                if miss:
                    raise EvalConfigError(f"{path}:{lineno}: missing field(s) {miss}")
                ch, lab = row["choices"], row["label"]
                if not isinstance(ch, list) or len(ch) < 2 or not all(isinstance(c, str) for c in ch):
                    raise EvalConfigError(f"{path}:{lineno}: 'choices' must be a list of >= 2 strings")
                if isinstance(lab, bool) or not isinstance(lab, int) or not 0 <= lab < len(ch):
                    raise EvalConfigError(f"{path}:{lineno}: 'label' must be an int in [0, {len(ch)})")
                n += 1
                kinds.add(len(ch))
        if n == 0:
            raise EvalConfigError(f"data file for task {task!r} is empty: {path}")
        if fname == "test.jsonl":
            stats = {"n_test": n, "n_choices": sorted(kinds)}
    return stats


def render_tasks(data_dirs: Mapping[str, str | os.PathLike], out_dir: str | os.PathLike,
                 templates: str | os.PathLike | None = None,
                 cache_dir: str | os.PathLike | None = None) -> Path:
    """Render the local task templates for ``data_dirs`` into ``out_dir`` (an include dir).

    Each task gets its own sub-directory holding its YAML plus a copy of every
    non-YAML template (the shared ``include:`` bases and ``*.py`` helpers), with ``@DATA_DIR@`` replaced by
    that task's data dir and ``@CACHE_DIR@`` by ``cache_dir`` (default
    ``out_dir/hf_datasets_cache``).  The result can also be used with the lm-eval CLI:
    ``lm_eval --include_path OUT_DIR --tasks world_mc ...``.
    """
    src = Path(templates) if templates else tasks_dir()
    names = local_tasks(src)
    out = Path(out_dir)
    cache = Path(cache_dir) if cache_dir else out / "hf_datasets_cache"
    for task, ddir in data_dirs.items():
        if task not in names:
            raise EvalConfigError(f"no template for local task {task!r} in {src} (have {sorted(names)})")
        dst = out / task
        dst.mkdir(parents=True, exist_ok=True)
        subs = {"@DATA_DIR@": _yaml_escape(Path(ddir).resolve()),
                "@CACHE_DIR@": _yaml_escape(cache.resolve())}
        for p in sorted(src.iterdir()):
            # the task's own YAML, shared bases (not *.yaml, so never indexed) and Python
            # helpers that a YAML names with !function (e.g. shapes_images.doc_to_image)
            if p.is_file() and (p == names[task] or p.suffix == ".py" or (p.suffix != ".yaml" and "yaml" in p.name)):
                text = p.read_text(encoding="utf-8")
                for k, v in subs.items():
                    text = text.replace(k, v)
                left = [ph for ph in _PLACEHOLDERS if ph in text]
                if left:  # pragma: no cover - a template bug
                    raise EvalConfigError(f"{p}: unrendered placeholder(s) {left}")
                (dst / p.name).write_text(text, encoding="utf-8")
    return out


def _yaml_escape(p: Path) -> str:
    """Escape a path for use inside a double-quoted YAML scalar."""
    return json.dumps(str(p), ensure_ascii=False)[1:-1]


# --------------------------------------------------------------------------- args

def max_lora_rank(adapter: str | os.PathLike) -> int:
    """Largest LoRA rank in ``adapter_config.json`` (``r`` and ``rank_pattern``), rounded up
    to the next rank vLLM accepts."""
    cfg = read_adapter_config(adapter)
    ranks = [int(cfg.get("r") or 0)] + [int(v) for v in (cfg.get("rank_pattern") or {}).values()]
    r = max(ranks)
    if r <= 0:
        raise EvalConfigError(f"{adapter}/adapter_config.json has no positive LoRA rank 'r'")
    for allowed in VLLM_LORA_RANKS:
        if r <= allowed:
            return allowed
    raise EvalConfigError(f"LoRA rank {r} exceeds vLLM's maximum {VLLM_LORA_RANKS[-1]}")


def read_adapter_config(adapter: str | os.PathLike) -> dict[str, Any]:
    p = Path(adapter)
    if not p.is_dir():
        raise MissingInputError(f"adapter directory not found: {p}")
    cfg = p / "adapter_config.json"
    if not cfg.is_file():
        subs = sorted(q.parent.name for q in p.glob("*/adapter_config.json"))
        hint = (f"; it has adapter sub-directories {subs} (PEFT saves non-'default' adapter "
                f"names there) - pass one of those") if subs else ""
        raise EvalConfigError(f"{p} is not a PEFT adapter directory: no adapter_config.json{hint}")
    try:
        return json.loads(cfg.read_text())
    except json.JSONDecodeError as e:
        raise EvalConfigError(f"{cfg}: invalid JSON ({e})") from None


def merge_adapter(model: str | os.PathLike, adapter: str | os.PathLike, out: str | os.PathLike,
                  dtype: str = "float32", load: Any = None) -> Path:
    """Merge a PEFT LoRA adapter into its base model and save a plain checkpoint in ``out``.

    The ``eval.lora: merged`` path: backends then score an ordinary model (vLLM without
    LoRA kernels, or no PEFT at evaluation time). ``load(model, dtype)`` returns the base
    model and what is saved beside it (default: a causal LM and its tokenizer, taken from
    the adapter directory when it has one, as grades.train saves it there; grades.vlm passes
    its VLM loader, which gives the processor)."""
    from peft import PeftModel

    out = Path(out)
    if load is None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tdtype = getattr(torch, dtype) if dtype not in ("auto", None) else "auto"
        base = AutoModelForCausalLM.from_pretrained(str(model), dtype=tdtype)
        tok_src = adapter if any((Path(adapter) / f).is_file() for f in TOKENIZER_FILES) else model
        saver = AutoTokenizer.from_pretrained(str(tok_src))
    else:
        base, saver = load(model, dtype)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    saver.save_pretrained(out)
    (out / "grades_merged.json").write_text(json.dumps({"base": str(model), "adapter": str(adapter),
                                                        "dtype": dtype}, indent=2) + "\n")
    return out


def build_lm_eval_args(*, model: str | os.PathLike, tasks: Sequence[str],
                       adapter: str | os.PathLike | None = None, backend: str = "hf",
                       batch_size: int | str = 16, dtype: str = "float32",
                       device: str | None = "cpu", limit: int | float | None = None,
                       num_fewshot: int = 0, seed: int = 0, task_manager: Any = None,
                       gpu_memory_utilization: float = 0.9, tensor_parallel_size: int = 1,
                       max_model_len: int | None = None, bootstrap_iters: int = 100_000,
                       tokenizer: str | os.PathLike | None = None,
                       apply_chat_template: bool = False) -> dict[str, Any]:
    """Keyword arguments for ``lm_eval.simple_evaluate`` (pure; vLLM reads adapter_config.json).

    * ``hf``: ``model_args = {pretrained, dtype[, tokenizer][, peft]}``; device and batch size go
      through simple_evaluate (which forwards them to HFLM).
    * ``vllm``: ``model_args = {pretrained, dtype, tensor_parallel_size,
      gpu_memory_utilization, seed[, tokenizer][, max_model_len][, enable_lora, max_lora_rank,
      lora_local_path]}``; ``device`` is None (lm-eval's VLLM ignores it with a warning;
      select GPUs with CUDA_VISIBLE_DEVICES).
    * ``hf-multimodal`` / ``vllm-vlm`` (vision-language models, :data:`MULTIMODAL_BACKENDS`):
      as ``hf`` / ``vllm``; vllm-vlm also gets ``max_images=1`` (one picture per prompt)
      and takes no adapter: vLLM puts LoRA on the language model only, so grades.vlm
      merges a VLM's adapter first.
    * ``apply_chat_template``: prompts go through the model's chat template (instruct models).
    """
    known = BACKENDS + tuple(MULTIMODAL_BACKENDS.values())
    if backend not in known:
        raise EvalConfigError(f"unknown backend {backend!r}; choose from {list(known)}")
    if backend == "vllm-vlm" and adapter is not None:
        raise EvalConfigError("backend 'vllm-vlm' takes no adapter (vLLM applies LoRA to the language model "
                              "only): merge the adapter into the model first (grades.vlm.merge_adapter)")
    pretrained = str(model)
    if backend in ("hf", "hf-multimodal"):
        model_args: dict[str, Any] = {"pretrained": pretrained, "dtype": dtype}
        if tokenizer is not None:
            model_args["tokenizer"] = str(tokenizer)
        if adapter is not None:
            model_args["peft"] = str(adapter)
    else:
        model_args = {"pretrained": pretrained, "dtype": dtype,
                      "tensor_parallel_size": int(tensor_parallel_size),
                      "gpu_memory_utilization": float(gpu_memory_utilization), "seed": int(seed)}
        if tokenizer is not None:
            model_args["tokenizer"] = str(tokenizer)
        if max_model_len is not None:
            model_args["max_model_len"] = int(max_model_len)
        if adapter is not None:
            model_args.update(enable_lora=True, max_lora_rank=max_lora_rank(adapter),
                              lora_local_path=str(adapter))
        if backend == "vllm-vlm":
            model_args["max_images"] = 1
        device = None
    chat = {"apply_chat_template": True} if apply_chat_template else {}
    return {
        "model": backend,
        "model_args": model_args,
        "tasks": list(tasks),
        "num_fewshot": int(num_fewshot),
        "batch_size": batch_size,
        "device": device,
        "limit": limit,
        "use_cache": None,            # no sqlite response cache
        "cache_requests": False,      # no request cache under lm_eval/
        "bootstrap_iters": bootstrap_iters,
        "log_samples": True,          # needed for n_choices / eval_tokens / samples_out
        "task_manager": task_manager,
        "random_seed": int(seed),
        "numpy_random_seed": int(seed),
        "torch_random_seed": int(seed),
        "fewshot_random_seed": int(seed),
        **chat,
    }


# --------------------------------------------------------------------------- run

def evaluate(model: str | os.PathLike, tasks: str | Sequence[str],
             data: str | os.PathLike | Mapping[str, Any] | None = None,
             out: str | os.PathLike | None = None, adapter: str | os.PathLike | None = None,
             backend: str = "hf", batch_size: int | str = 16, limit: int | float | None = None,
             dtype: str = "float32", device: str = "cpu", num_fewshot: int = 0, seed: int = 0,
             samples_out: str | os.PathLike | None = None, gpu_memory_utilization: float = 0.9,
             tensor_parallel_size: int = 1, max_model_len: int | None = None,
             threads: int | None = None, tokenizer: str | os.PathLike | None = None,
             quiet: bool = True, merge: bool = False,
             merge_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """Evaluate ``model`` (+ optional PEFT ``adapter``) and return (and write) the summary.

    ``merge``: merge the adapter into the model first (:func:`merge_adapter`, into a
    temporary directory under ``merge_dir`` or ``$GRADES_MERGE_DIR``, removed afterwards)
    and evaluate the merged model; eval.json records ``lora: "merged"``.

    ``threads`` sets torch's intra-op threads for the run (restored afterwards); on a
    shared CPU, oversubscription is ruinous (2 threads on a busy 2-core box: ~10x slower).
    """
    set_offline()
    t_start = time.perf_counter()
    model_dir = Path(model).expanduser()
    if not model_dir.is_dir():
        raise MissingInputError(f"model directory not found: {model_dir}")
    if not (model_dir / "config.json").is_file():
        raise MissingInputError(f"{model_dir} has no config.json (not a saved Hugging Face model)")
    model_dir = model_dir.resolve()
    tok_dir = Path(tokenizer).expanduser().resolve() if tokenizer is not None else model_dir
    if not any((tok_dir / f).is_file() for f in TOKENIZER_FILES):
        raise MissingInputError(f"no tokenizer in {tok_dir} (none of {list(TOKENIZER_FILES)}); "
                                "save it with the model or pass --tokenizer DIR")
    adapter_dir = None
    if adapter is not None:
        adapter_dir = Path(adapter).expanduser().resolve()
        read_adapter_config(adapter_dir)
    if backend not in BACKENDS:
        raise EvalConfigError(f"unknown backend {backend!r}; choose from {list(BACKENDS)}")
    if threads is not None and threads < 1:
        raise EvalConfigError(f"threads must be >= 1, got {threads}")
    if limit is not None and limit <= 0:
        raise EvalConfigError(f"limit must be positive, got {limit}")

    names = parse_tasks(tasks)
    local_names = local_tasks()
    loc = [n for n in names if n in local_names]
    std = [n for n in names if n not in local_names]
    if all(n in STANDARD_TASKS for n in std):
        split_tasks(names)  # fail fast; other names need lm-eval's index (~10 s), below
    data_dirs = parse_data(data, loc)
    data_stats = {t: check_data_dir(t, d) for t, d in data_dirs.items()}
    if backend == "vllm" and find_spec("vllm") is None:
        raise EvalConfigError("backend 'vllm' requested but vllm is not installed "
                              "(pip install 'grades-harness[vllm]'); use --backend hf")

    if quiet:
        _quiet_libraries()
    import lm_eval

    lora_mode = None if adapter_dir is None else ("merged" if merge else "adapter")
    eval_model, eval_adapter = model_dir, adapter_dir
    with contextlib.ExitStack() as stack:
        if merge and adapter_dir is not None:
            mdir = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="grades_merged_", dir=merge_dir or os.environ.get("GRADES_MERGE_DIR"))))
            log.info("merging %s into %s", adapter_dir, model_dir)
            eval_model, eval_adapter = merge_adapter(model_dir, adapter_dir, mdir / "model", dtype), None
        res, lm_time, names = _run_lm_eval(
            lm_eval, eval_model, eval_adapter, names, std, loc, data_dirs, backend=backend,
            batch_size=batch_size, dtype=dtype, device=device, limit=limit, num_fewshot=num_fewshot, seed=seed,
            gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len, tok_dir=tok_dir if tokenizer is not None else None, threads=threads)
    if res is None:  # non-zero rank in a distributed run
        return {}
    return _summarise(res, names, data_dirs, data_stats, tok_dir, model_dir, adapter_dir, tokenizer, lora_mode,
                      backend=backend, batch_size=batch_size, dtype=dtype, device=device, limit=limit,
                      num_fewshot=num_fewshot, seed=seed, threads=threads, lm_time=lm_time, t_start=t_start,
                      samples_out=samples_out, out=out, vllm={"tensor_parallel_size": tensor_parallel_size,
                                                              "gpu_memory_utilization": gpu_memory_utilization,
                                                              "max_model_len": max_model_len})


def _run_lm_eval(lm_eval, model_dir, adapter_dir, names, std, loc, data_dirs, *, backend, batch_size, dtype,
                 device, limit, num_fewshot, seed, gpu_memory_utilization, tensor_parallel_size, max_model_len,
                 tok_dir, threads):
    """One ``lm_eval.simple_evaluate`` call: (results, seconds, task names)."""
    with tempfile.TemporaryDirectory(prefix="grades_eval_") as tmp:
        include = (render_tasks(data_dirs, Path(tmp) / "tasks", cache_dir=Path(tmp) / "datasets_cache")
                   if loc else None)
        tm = task_manager(include, include_defaults=bool(std))
        split_tasks(names, registry=tm.all_tasks)
        _preflight(tm, names, std)  # task/dataset errors before the model is loaded
        kwargs = build_lm_eval_args(
            model=model_dir, tasks=names, adapter=adapter_dir, backend=backend,
            batch_size=batch_size, dtype=dtype, device=device, limit=limit,
            num_fewshot=num_fewshot, seed=seed, task_manager=tm,
            gpu_memory_utilization=gpu_memory_utilization,
            tensor_parallel_size=tensor_parallel_size, max_model_len=max_model_len,
            tokenizer=tok_dir)
        log.info("lm-eval %s: backend=%s model=%s adapter=%s tasks=%s limit=%s",
                 _version("lm_eval"), backend, model_dir, adapter_dir, names, limit)
        import torch

        prev_threads = torch.get_num_threads()
        if threads:
            torch.set_num_threads(int(threads))
        t0 = time.perf_counter()
        try:
            res = lm_eval.simple_evaluate(**kwargs)
        finally:
            torch.set_num_threads(prev_threads)
        lm_time = time.perf_counter() - t0
    return res, lm_time, names


def _summarise(res, names, data_dirs, data_stats, tok_dir, model_dir, adapter_dir, tokenizer, lora_mode, *,
               backend, batch_size, dtype, device, limit, num_fewshot, seed, threads, lm_time, t_start,
               samples_out, out, vllm):
    samples = res.get("samples") or {}
    per_task: dict[str, Any] = {}
    for name in names:
        if name not in res.get("results", {}):
            raise RuntimeError(f"lm-eval returned no results for task {name!r} "
                               f"(got {sorted(res.get('results', {}))})")
        per_task[name] = _task_summary(name, res, samples.get(name, []), data_dirs.get(name))
        st = data_stats.get(name)
        if st and limit is None and per_task[name]["n"] != st["n_test"]:
            raise RuntimeError(f"{name}: lm-eval scored {per_task[name]['n']} docs but "
                               f"{data_dirs[name]}/test.jsonl has {st['n_test']}")

    cfg = res.get("config", {})
    n_params = cfg.get("model_num_parameters")
    n_params = int(n_params) if isinstance(n_params, (int, float)) and n_params > 0 else None
    eval_tokens = _count_tokens(tok_dir, samples)
    summary = {
        "status": "ok",
        "tasks": per_task,
        "backend": backend,
        "model": str(model_dir),
        "adapter": str(adapter_dir) if adapter_dir else None,
        "lora": lora_mode,
        "tokenizer": str(tok_dir) if tokenizer is not None else None,
        "batch_size": batch_size,
        "dtype": dtype,
        "device": device if backend == "hf" else None,
        "limit": limit,
        "num_fewshot": num_fewshot,
        "seed": seed,
        "task_versions": {n: t["version"] for n, t in per_task.items()},
        **({"vllm": vllm} if backend == "vllm" else {}),
        "lm_eval_version": res.get("lm_eval_version") or _version("lm_eval"),
        "transformers_version": res.get("transformers_version") or _version("transformers"),
        "peft_version": _version("peft"),
        "torch_version": _version("torch"),
        "model_num_parameters": n_params,
        "eval_tokens": eval_tokens,
        # forward-pass estimate: 2 * params * tokens of every (context, choice) request
        "eval_flops": float(2 * n_params * eval_tokens) if n_params and eval_tokens else None,
        "threads": threads,
        "lm_eval_time_s": round(lm_time, 3),
        "wall_time_s": round(time.perf_counter() - t_start, 3),
    }
    for name, t in per_task.items():
        log.info("%s: acc=%s ± %s (n=%d)", name, _fmt(t["acc"]), _fmt(t["acc_stderr"]), t["n"])
    if samples_out is not None:
        _write_samples(samples_out, samples, names)
    if out is not None:
        from grades.io import atomic_write_json

        atomic_write_json(out, summary)
        log.info("wrote %s (%.1f s)", out, summary["wall_time_s"])
    return summary


class TaskLoadError(EvalConfigError):
    """A task (or its dataset) could not be loaded."""


def _preflight(tm, names: Sequence[str], std: Sequence[str]) -> None:
    try:
        tm.load(list(names))
    except Exception as e:
        hint = ""
        if std and os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
            hint = (f"; lm-eval's own tasks {list(std)} download their datasets from the "
                    "Hugging Face Hub, which is disabled (HF_HUB_OFFLINE=1) - pre-fetch them "
                    "into the HF datasets cache where the Hub is reachable "
                    "(HF_HUB_OFFLINE=0 HF_DATASETS_OFFLINE=0)")
        raise TaskLoadError(f"could not load task(s) {list(names)}: "
                            f"{type(e).__name__}: {e}{hint}") from e


def task_manager(include: Path | None, include_defaults: bool):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(include) if include else None,
                       include_defaults=include_defaults)


def to_number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None  # lm-eval uses the string "N/A" for missing stderrs
    return None if math.isnan(v) else float(v)


def _task_summary(name: str, res: Mapping[str, Any], samples: list, data_dir: Path | None):
    r = res["results"][name]
    metric = {}
    for key, val in r.items():
        if "," in key:
            m, _, filt = key.partition(",")
            if filt == "none":
                metric[m] = val
    counts = res.get("n-samples", {}).get(name, {})
    n = counts.get("effective", r.get("sample_len"))
    kinds = [len(_requests(s)) for s in samples]
    n_choices: int | float | None = None
    n_range = chance = None
    if kinds:
        # uniform: an int; varying (e.g. ARC's 3-5): 1/chance, so 1/n_choices is always chance
        chance = sum(1.0 / k for k in kinds) / len(kinds)
        n_range = [min(kinds), max(kinds)]
        n_choices = kinds[0] if n_range[0] == n_range[1] else 1.0 / chance
    out = {
        "acc": to_number(metric.get("acc")),
        "acc_stderr": to_number(metric.get("acc_stderr")),
        "acc_norm": to_number(metric.get("acc_norm")),
        "acc_norm_stderr": to_number(metric.get("acc_norm_stderr")),
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


def _requests(sample: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(context, continuation) per choice; lm-eval gives a list of tuples in memory and
    ``{"gen_args_i": {"arg_0", "arg_1"}}`` once serialised."""
    args = sample.get("arguments") or []
    if isinstance(args, Mapping):
        return [(a.get("arg_0", ""), a.get("arg_1", "")) for a in args.values()]
    return [(a[0], a[1]) for a in args]


def _loglikelihoods(sample: Mapping[str, Any]) -> list[float]:
    resps = sample.get("filtered_resps") or [r[0] for r in sample.get("resps", [])]
    return [float(r[0]) for r in resps]


def _write_samples(path: str | os.PathLike, samples: Mapping[str, list], names: Sequence[str]):
    """Per-doc JSONL: task, doc_id, id, label, pred, acc, per-choice loglikelihoods."""
    from grades.io import atomic_write_text

    lines = []
    for name in names:
        for s in samples.get(name, []):
            ll = _loglikelihoods(s)
            doc = s.get("doc", {})
            target = s.get("target")
            label = doc.get("label", target)
            lines.append(json.dumps({
                "task": name, "doc_id": s.get("doc_id"), "id": doc.get("id"),
                "label": label, "target": target,
                "pred": max(range(len(ll)), key=ll.__getitem__) if ll else None,
                "acc": s.get("acc"), "acc_norm": s.get("acc_norm"),
                "loglikelihoods": ll}))
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))


def _count_tokens(model_dir: Path, samples: Mapping[str, list]) -> int | None:
    """Tokens fed to the model over all (context, continuation) requests."""
    pairs = [p for ss in samples.values() for s in ss for p in _requests(s)]
    if not pairs:
        return None
    try:
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(str(model_dir))
        ctx = tok([c for c, _ in pairs], add_special_tokens=False)["input_ids"]
        cont = tok([c for _, c in pairs], add_special_tokens=False)["input_ids"]
        return int(sum(len(a) + len(b) for a, b in zip(ctx, cont)))
    except Exception as e:  # an estimate only; never fail the eval over it
        log.warning("could not count eval tokens (%s); eval_flops = null", e)
        return None


class _DropDefaultFewshotNotice(logging.Filter):
    """lm-eval warns "Overwriting default num_fewshot of T from None to 0" on every run."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        return not (str(record.msg).startswith("Overwriting default num_fewshot")
                    and len(args) >= 2 and args[1] is None)


def _quiet_libraries() -> None:
    """Warnings only from lm-eval / transformers / datasets; tqdm progress stays."""
    logging.getLogger("lm_eval").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning,
                            module=r"(transformers|peft|datasets|lm_eval)(\.|$)")
    ev_log = logging.getLogger("lm_eval.evaluator")
    if not any(isinstance(f, _DropDefaultFewshotNotice) for f in ev_log.filters):
        ev_log.addFilter(_DropDefaultFewshotNotice())
    for name in ("transformers", "datasets", "peft", "accelerate", "huggingface_hub", "filelock"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers

        transformers.logging.set_verbosity_error()
    except Exception:  # pragma: no cover
        pass
    try:
        import datasets

        datasets.logging.set_verbosity_error()
        datasets.disable_progress_bars()
    except Exception:  # pragma: no cover
        pass


def _version(pkg: str) -> str | None:
    try:
        return _md.version(pkg)
    except _md.PackageNotFoundError:
        return None


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


# --------------------------------------------------------------------------- CLI

def _limit(s: str) -> int | float:
    v = float(s)
    return int(v) if v >= 1 and v.is_integer() else v


def _batch(s: str) -> int | str:
    return s if s.startswith("auto") else int(s)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m grades.evaluate",
        description="Multiple-choice evaluation of a (LoRA-adapted) causal LM through lm-eval.")
    p.add_argument("--model", required=True, help="saved Hugging Face model dir (base model)")
    p.add_argument("--adapter", help="PEFT adapter dir (with adapter_config.json)")
    p.add_argument("--tokenizer", help="tokenizer dir, if not saved in --model")
    p.add_argument("--tasks", required=True,
                   help=f"comma-separated; local: world_mc, siqa_local; standard: {','.join(STANDARD_TASKS)}")
    p.add_argument("--data", help="prepared dataset dir for the local tasks, or task=DIR[,task=DIR]")
    p.add_argument("--out", help="eval.json path (written atomically)")
    p.add_argument("--backend", choices=BACKENDS, default="hf")
    p.add_argument("--batch-size", type=_batch, default=16)
    p.add_argument("--limit", type=_limit, default=None, help="first N docs per task (or a fraction < 1)")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--device", default="cpu", help="hf backend only (vllm: CUDA_VISIBLE_DEVICES)")
    p.add_argument("--num-fewshot", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--samples-out", help="per-doc JSONL with choice loglikelihoods")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm only")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm only")
    p.add_argument("--max-model-len", type=int, default=None, help="vllm only")
    p.add_argument("--merge-adapter", action="store_true",
                   help="merge --adapter into --model first and evaluate the merged model")
    p.add_argument("--merge-dir", help="where the temporary merged model goes (default $GRADES_MERGE_DIR or /tmp)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads for the run (default: torch's; set it on shared CPUs)")
    p.add_argument("-v", "--verbose", action="store_true", help="lm-eval INFO logging")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = evaluate(
            args.model, args.tasks, data=args.data, out=args.out, adapter=args.adapter,
            backend=args.backend, batch_size=args.batch_size, limit=args.limit,
            dtype=args.dtype, device=args.device, num_fewshot=args.num_fewshot, seed=args.seed,
            samples_out=args.samples_out, gpu_memory_utilization=args.gpu_memory_utilization,
            tensor_parallel_size=args.tensor_parallel_size, max_model_len=args.max_model_len,
            threads=args.threads, tokenizer=args.tokenizer, quiet=not args.verbose,
            merge=args.merge_adapter, merge_dir=args.merge_dir)
    except EvalConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out is None:
        json.dump(summary, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
