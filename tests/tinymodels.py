"""Tiny models, batches and prepared directories the tests share (no network, no weights).

A module of its own, not conftest.py: ``tests/vllm_parity`` has a conftest.py too, and with both
collected ``from tinymodels import ...`` can reach the wrong one."""

from __future__ import annotations

import torch

TINY = dict(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)


def build_tiny(arch: str = "qwen3", **over):
    import transformers as tf

    torch.manual_seed(0)
    kw = {**TINY, **over}
    if arch == "qwen3":
        return tf.Qwen3ForCausalLM(tf.Qwen3Config(head_dim=16, **kw))
    if arch == "llama":
        return tf.LlamaForCausalLM(tf.LlamaConfig(**kw))
    if arch == "mistral":
        return tf.MistralForCausalLM(tf.MistralConfig(**kw))
    if arch == "phi3":
        return tf.Phi3ForCausalLM(tf.Phi3Config(pad_token_id=0, **kw))
    # mixture of experts: 4 experts, 2 per token; experts stored as 3-D parameters
    moe = dict(num_experts_per_tok=2, experts_implementation=kw.pop("experts_implementation", "eager"))
    if arch == "qwen3_moe":
        return tf.Qwen3MoeForCausalLM(tf.Qwen3MoeConfig(head_dim=16, moe_intermediate_size=32, num_experts=4,
                                                        **moe, **kw))
    if arch == "mixtral":
        kw["intermediate_size"] = over.get("intermediate_size", 32)
        return tf.MixtralForCausalLM(tf.MixtralConfig(num_local_experts=4, **moe, **kw))
    if arch == "qwen2_moe":
        return tf.Qwen2MoeForCausalLM(tf.Qwen2MoeConfig(moe_intermediate_size=32, shared_expert_intermediate_size=64,
                                                        num_experts=4, **moe, **kw))
    raise ValueError(arch)


def add_lora(model, adapter_name: str = "default", r: int = 4):
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=r, lora_alpha=2 * r, lora_dropout=0.0,
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    model = get_peft_model(model, cfg, adapter_name=adapter_name)
    # LoRA B starts at zero; give it values so that gradients of A are nonzero too
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    return model



class TokenData(torch.utils.data.Dataset):
    """``n`` random sequences of ``seq`` token ids, labels = inputs (a Trainer's dataset)."""

    def __init__(self, n=64, seq=16, vocab=128):
        g = torch.Generator().manual_seed(0)
        self.x = torch.randint(0, vocab, (n, seq), generator=g)

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"input_ids": self.x[i], "labels": self.x[i]}


def batch(n: int = 2, seq: int = 16, vocab: int = 128, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, vocab, (n, seq), generator=g)
    return {"input_ids": x, "labels": x.clone()}


# ----------------------------------------------- prepared directories for training tests
#: the tiny Qwen3 and world-mc options the training tests share (tests/test_resume.py and others
#: pin freeze steps on exactly these: change them and those expectations move)
TINY_QWEN3 = dict(hidden_size=32, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=16, intermediate_size=64,
                  vocab_size=300, max_position=256)
WORLD_MC = dict(n_train=64, n_validation=8, n_test=8, n_names=40, corpus_docs=10)


def prepare_tiny(d, model: dict | None = None, data: dict | None = None):
    """A tiny Qwen3 checkpoint (``tiny:qwen3``, no pretraining) and a small ``synthetic:world-mc``
    dataset prepared under ``d``: ``(d, model_dir, data_dir)``. ``model`` / ``data`` override
    :data:`TINY_QWEN3` / :data:`WORLD_MC`."""
    from grades.data import prepare_dataset
    from grades.models import prepare_model

    m = prepare_model("tiny:qwen3", d / "model", **{**TINY_QWEN3, **(model or {})})
    return d, m, prepare_dataset("synthetic:world-mc", d / "data", **{**WORLD_MC, **(data or {})})

