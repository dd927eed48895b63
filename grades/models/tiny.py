"""The ``tiny:qwen3`` / ``tiny:llama`` model source: a small model built from a config in
code, with a byte-level BPE tokenizer trained locally, optionally pretrained briefly on a
synthetic corpus (``pretrain_corpus``, ``pretrain_steps``)."""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Any

from ..config import ConfigError, closest
from .source import ModelSource, check_typed_options

DEFAULTS: dict[str, Any] = {
    "hidden_size": 256, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "head_dim": 64,
    "intermediate_size": 768, "vocab_size": 1024, "max_position": 512, "tie_embeddings": True,
    "seed": 0, "pretrain_corpus": "", "pretrain_corpus_options": {}, "pretrain_steps": 0,
    "pretrain_batch_size": 32, "pretrain_seq_len": 64, "pretrain_lr": 3.0e-3, "threads": 0,
}
ARCHS = ("qwen3", "llama")


def check_arg(arg: str, spec: str) -> None:
    if arg not in ARCHS:
        raise ConfigError(f"model.source = {spec!r}: unknown tiny architecture '{arg}'"
                          f"{closest(arg, ARCHS)}; known: {list(ARCHS)}")


def check_options(options: dict) -> dict:
    out = check_typed_options("tiny", options, DEFAULTS)
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

    from ..data import parse_spec as data_spec, prepare_dataset, read_corpus

    kind, arg = data_spec(spec)
    if kind == "jsonl":
        return read_corpus(Path(arg))
    with tempfile.TemporaryDirectory() as d:
        return read_corpus(prepare_dataset(spec, Path(d) / "corpus", **options))


def build(arch: str, o: dict, out: Path) -> dict:
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


SOURCE = ModelSource(build=build, check_options=check_options, check_arg=check_arg)
