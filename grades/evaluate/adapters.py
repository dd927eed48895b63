"""PEFT LoRA adapters at evaluation time: their config, their rank for vLLM, merging one.

Merging is the ``eval.lora: merged`` path: the backend then scores a plain checkpoint."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .errors import EvalConfigError, MissingInputError

#: vLLM only accepts these values for ``max_lora_rank`` (vllm.config.LoRAConfig).
VLLM_LORA_RANKS: tuple[int, ...] = (8, 16, 32, 64, 128, 256, 320, 512)
#: any of these in a directory means a tokenizer was saved there
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def has_tokenizer(directory: str | os.PathLike) -> bool:
    """Whether ``directory`` holds a saved tokenizer (one of :data:`TOKENIZER_FILES`)."""
    return any((Path(directory) / f).is_file() for f in TOKENIZER_FILES)


def read_adapter_config(adapter: str | os.PathLike) -> dict[str, Any]:
    """``adapter_config.json`` of a PEFT adapter directory (with a hint when PEFT saved the
    adapter one level down, under a non-'default' adapter name)."""
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
        tok_src = adapter if has_tokenizer(adapter) else model
        saver = AutoTokenizer.from_pretrained(str(tok_src))
    else:
        base, saver = load(model, dtype)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    merged.save_pretrained(out)
    saver.save_pretrained(out)
    (out / "grades_merged.json").write_text(json.dumps({"base": str(model), "adapter": str(adapter),
                                                        "dtype": dtype}, indent=2) + "\n")
    return out
