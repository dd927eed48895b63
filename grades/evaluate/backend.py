"""lm-eval's arguments: the backends, the options of one run, simple_evaluate's keywords.

Backends are ``hf`` and ``vllm``, and their vision-language models (``hf-multimodal``,
``vllm-vlm``) for grades.vlm."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .adapters import max_lora_rank
from .errors import EvalConfigError

BACKENDS = ("hf", "vllm")
#: lm-eval's vision-language model of each backend (grades.vlm evaluates VLMs with these)
MULTIMODAL_BACKENDS = {"hf": "hf-multimodal", "vllm": "vllm-vlm"}


@dataclass(frozen=True)
class EvalOptions:
    """How one evaluation scores: the backend and its settings (the CLI's options)."""

    backend: str = "hf"
    batch_size: int | str = 16
    dtype: str = "float32"
    device: str | None = "cpu"
    limit: int | float | None = None
    num_fewshot: int = 0
    seed: int = 0
    threads: int | None = None
    gpu_memory_utilization: float = 0.9
    tensor_parallel_size: int = 1
    max_model_len: int | None = None

    def check(self) -> None:
        """Raise :class:`EvalConfigError` on an unknown backend or a non-positive threads / limit."""
        if self.backend not in BACKENDS:
            raise EvalConfigError(f"unknown backend {self.backend!r}; choose from {list(BACKENDS)}")
        if self.threads is not None and self.threads < 1:
            raise EvalConfigError(f"threads must be >= 1, got {self.threads}")
        if self.limit is not None and self.limit <= 0:
            raise EvalConfigError(f"limit must be positive, got {self.limit}")

    @property
    def vllm(self) -> dict[str, Any]:
        """The vLLM settings, as eval.json records them."""
        return {"tensor_parallel_size": self.tensor_parallel_size,
                "gpu_memory_utilization": self.gpu_memory_utilization, "max_model_len": self.max_model_len}

    def lm_eval_args(self, model: str | os.PathLike, tasks: Sequence[str], *,
                     adapter: str | os.PathLike | None = None, task_manager: Any = None,
                     tokenizer: str | os.PathLike | None = None) -> dict[str, Any]:
        """:func:`build_lm_eval_args` with these options."""
        return build_lm_eval_args(
            model=model, tasks=tasks, adapter=adapter, backend=self.backend, batch_size=self.batch_size,
            dtype=self.dtype, device=self.device, limit=self.limit, num_fewshot=self.num_fewshot,
            seed=self.seed, task_manager=task_manager, gpu_memory_utilization=self.gpu_memory_utilization,
            tensor_parallel_size=self.tensor_parallel_size, max_model_len=self.max_model_len,
            tokenizer=tokenizer)


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

    * ``hf``: ``model_args = {pretrained, dtype[, tokenizer][, peft][, parallelize]}``; device and
      batch size go through simple_evaluate (which forwards them to HFLM). With
      ``tensor_parallel_size`` > 1 (the GPUs of the job) a model too large for one GPU is
      spread over them, layer by layer (``parallelize=True``: accelerate's ``device_map``).
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
        if int(tensor_parallel_size) > 1:  # the job's GPUs: the model's layers spread over them
            model_args["parallelize"] = True
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
