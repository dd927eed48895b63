"""A VLM checkpoint directory: load it as (model, processor) and count its parameters.

:func:`load_vlm` goes through ``AutoModelForImageTextToText`` + ``AutoProcessor``
(:func:`grades.models.is_vlm_dir` tells a VLM directory from a text model's);
:func:`param_groups` splits a model's parameters into vision tower, projector/connector
and language model; :func:`count_params` reads the total from the safetensors headers
without loading any weight.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .errors import VLMError


def load_vlm(path: str | Path, dtype: str = "float32"):
    """(model, processor) from a checkpoint directory (``AutoModelForImageTextToText`` + ``AutoProcessor``)."""
    import transformers as tf

    if not (Path(path) / "config.json").exists():
        raise VLMError(f"model directory {path} has no config.json; was it prepared (python -m grades.vlm prepare)?")
    proc = tf.AutoProcessor.from_pretrained(str(path))
    model = tf.AutoModelForImageTextToText.from_pretrained(str(path), dtype=getattr(torch, dtype))
    tok = proc.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, proc


def param_groups(model) -> dict[str, int]:
    """Parameter counts: vision tower, projector/connector, language model (incl. embeddings)."""
    from ..components import SKIP_OWNERS, VISION_OWNERS

    out = {"vision": 0, "projector": 0, "language": 0}
    for n, p in model.named_parameters():
        parts = n.split(".")
        key = ("projector" if any(x in SKIP_OWNERS for x in parts) else
               "vision" if any(x in VISION_OWNERS for x in parts) else "language")
        out[key] += p.numel()
    return out


def count_params(model_dir: Path) -> int | None:
    """Parameters of a saved checkpoint from its safetensors headers (no weights loaded)."""
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover
        return None
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    n = 0
    for f in files:
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                n += math.prod(st.get_slice(k).get_shape())
    return n
