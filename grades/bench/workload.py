"""What is timed: the models (Qwen3 configs built in code, prepared checkpoints), random batches, LoRA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

SMOLLM2_DIR = Path("cache/default/models/smollm2-135m")
SIQA_DIR = Path("cache/default/data/siqa")

# Qwen3-class configs built in code (grades.models.tiny_config option names)
QWEN3_29M = dict(hidden_size=512, intermediate_size=1536, num_layers=8, num_heads=8, num_kv_heads=4, head_dim=64,
                 vocab_size=8192, max_position=512, tie_embeddings=True)
QWEN3_QUICK = dict(hidden_size=64, intermediate_size=128, num_layers=2, num_heads=4, num_kv_heads=2, head_dim=16,
                   vocab_size=256, max_position=128, tie_embeddings=True)


def build_qwen3(options: dict, seed: int = 0):
    import transformers as tf

    from ..models.tiny import DEFAULTS as TINY_DEFAULTS, tiny_config

    o = {**TINY_DEFAULTS, **options}
    cfg = tiny_config("qwen3", o, o["vocab_size"], eos_id=0, pad_id=1)
    torch.manual_seed(seed)
    model = tf.Qwen3ForCausalLM(cfg)
    model.train()
    return model


def load_dir(path: Path):
    from ..models import load_model

    model, tok = load_model(path, dtype="float32")
    model.train()
    return model, tok


@dataclass
class ModelSpec:
    """A model to time: a Qwen3 config built in code (kind "qwen3") or a prepared checkpoint (kind "dir")."""

    name: str
    kind: str  # "qwen3" | "dir"
    options: dict | None = None
    path: Path | None = None

    def build(self):
        if self.kind == "qwen3":
            return build_qwen3(self.options or {})
        return load_dir(self.path)[0]

    def vocab(self, model) -> int:
        return int(model.config.vocab_size)


def random_batch(vocab: int, batch_size: int, seq_len: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (batch_size, seq_len), generator=g)
    return {"input_ids": x, "labels": x.clone()}


def add_lora(model, r: int, alpha: int):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, task_type="CAUSAL_LM",
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, cfg)
    with torch.no_grad():  # B starts at zero; any value gives the same cost, nonzero gives real gradients
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.01)
    model.train()
    return model
