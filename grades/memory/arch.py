"""The shapes a memory estimate needs: counted on a model built on the meta device from its config.json.

The config comes from (first found): a prepared model directory; the Hugging Face cache
(after the prefetch); a built-in table of the paper's models (:data:`KNOWN`, excerpts of
their published config.json, so that a profile can be planned on a login node before
anything is downloaded); the options of a ``tiny:`` source. The model is instantiated
on the ``meta`` device (no memory, about a second for 14B), so parameter counts, the
transformer blocks FSDP shards one by one, the matrices GradES tracks and the matrices
LoRA adapts are those of the real module tree. Without any config the shapes are guessed
from ``size_b`` (``exact: False``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

#: config.json excerpts of the paper's models (public facts: the published config files)
KNOWN: dict[str, dict] = {
    "Qwen/Qwen3-0.6B": dict(model_type="qwen3", hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                            num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                            tie_word_embeddings=True),
    "Qwen/Qwen3-1.7B": dict(model_type="qwen3", hidden_size=2048, intermediate_size=6144, num_hidden_layers=28,
                            num_attention_heads=16, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                            tie_word_embeddings=True),
    "Qwen/Qwen3-4B": dict(model_type="qwen3", hidden_size=2560, intermediate_size=9728, num_hidden_layers=36,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                          tie_word_embeddings=True),
    "Qwen/Qwen3-8B": dict(model_type="qwen3", hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                          num_attention_heads=32, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                          tie_word_embeddings=False),
    "Qwen/Qwen3-14B": dict(model_type="qwen3", hidden_size=5120, intermediate_size=17408, num_hidden_layers=40,
                           num_attention_heads=40, num_key_value_heads=8, head_dim=128, vocab_size=151936,
                           tie_word_embeddings=False),
    "microsoft/phi-4": dict(model_type="phi3", hidden_size=5120, intermediate_size=17920, num_hidden_layers=40,
                            num_attention_heads=40, num_key_value_heads=10, vocab_size=100352,
                            tie_word_embeddings=False, pad_token_id=100349),
    "meta-llama/Llama-3.1-8B-Instruct": dict(model_type="llama", hidden_size=4096, intermediate_size=14336,
                                             num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                             vocab_size=128256, tie_word_embeddings=False),
    "mistralai/Mistral-7B-Instruct-v0.3": dict(model_type="mistral", hidden_size=4096, intermediate_size=14336,
                                               num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                                               vocab_size=32768, tie_word_embeddings=False),
    "Qwen/Qwen2.5-VL-7B-Instruct": dict(
        model_type="qwen2_5_vl",
        text_config=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                         num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False),
        vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                           patch_size=14, spatial_merge_size=2, temporal_patch_size=2)),
    "HuggingFaceTB/SmolLM2-135M": dict(model_type="llama", hidden_size=576, intermediate_size=1536,
                                       num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                                       vocab_size=49152, tie_word_embeddings=True),
    "google/siglip-base-patch16-224": dict(model_type="siglip_vision_model", hidden_size=768,
                                           intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                                           image_size=224, patch_size=16),
}
#: vision patches per example when the config cannot say (Qwen2-VL's dynamic resolution: a
#: 640 x 480 picture is about 1,600 patches of 14 x 14) -- an assumption of the estimate
DEFAULT_PATCHES = 1600


@dataclass(frozen=True)
class Dims:
    """What activations scale with, for one stack of blocks (the language model or a vision tower)."""

    layers: int
    hidden: int
    intermediate: int
    q_dim: int
    kv_dim: int
    qk_norm: bool = False
    heads: int = 1
    kv_heads: int = 1


@dataclass(frozen=True)
class Linear:
    """A weight matrix inside the blocks: its module path, shape and tower; ``tracked`` by GradES."""

    path: str
    fan_in: int
    fan_out: int
    tower: str
    tracked: bool


@dataclass
class Arch:
    """A model's sizes, counted on its module tree (or guessed from ``size_b`` when ``exact`` is False)."""

    name: str
    origin: str  # where the shapes came from
    params: int
    block_params: int  # the largest transformer block: what FSDP gathers at once
    root_params: int  # outside the blocks (embeddings, head, final norm, projector)
    tracked: int  # weight parameters of the matrices GradES tracks (full fine-tuning)
    vocab: int
    text: Dims
    vision: Dims | None = None
    patches: int = 0  # vision tokens through the tower per example
    linears: list[Linear] = field(default_factory=list)
    exact: bool = True

    def lora_params(self, r: int, targets: list[str]) -> tuple[int, int]:
        """(LoRA parameters, of which on tracked matrices) for rank ``r`` on ``targets`` (peft's suffix
        match of module names; ``@language`` / ``@vision``: every tracked matrix of that tower)."""
        if not self.linears:  # guessed shapes: 7 projections per layer, in and out about the hidden size
            n = self.text.layers * 7 * r * (self.text.hidden * 2)
            return n, n
        total = on_tracked = 0
        for lin in self.linears:
            hit = any((t[1:] == lin.tower and lin.tracked) if t.startswith("@") else
                      (lin.path == t or lin.path.endswith("." + t)) for t in targets)
            if hit:
                n = r * (lin.fan_in + lin.fan_out)
                total += n
                on_tracked += n if lin.tracked else 0
        return total, on_tracked


def arch_from_config(config, name: str, origin: str) -> Arch:
    """Count an architecture on a model built from ``config`` on the meta device."""
    import transformers as tf

    from ..components import block_lists, discover_components

    vlm = getattr(config, "vision_config", None) is not None
    with torch.device("meta"):
        auto = tf.AutoModelForImageTextToText if vlm else tf.AutoModelForCausalLM
        model = auto.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    lists = block_lists(model)
    blocks = [(tower, b) for _, lst, tower, _ in lists for b in lst]
    block_sizes = [sum(p.numel() for p in b.parameters()) for _, b in blocks]
    comps = discover_components(model, trainable_only=False)
    tracked_ids = {id(p) for c in comps for p in c.params if p.ndim >= 2}
    linears = []
    for _, lst, tower, _ in lists:
        prefix = next(n for n, m in model.named_modules() if m is lst)
        for i, b in enumerate(lst):
            for path, mod in b.named_modules():
                if isinstance(mod, torch.nn.Linear):
                    linears.append(Linear(f"{prefix}.{i}.{path}", mod.in_features, mod.out_features, tower,
                                          id(mod.weight) in tracked_ids))
    text = dims(getattr(config, "text_config", None) or config, model, "language")
    vision = dims(config.vision_config, model, "vision") if vlm else None
    return Arch(name=name, origin=origin, params=params, block_params=max(block_sizes, default=params),
                root_params=params - sum(block_sizes), tracked=sum(c.numel for c in comps),
                vocab=int(getattr(getattr(config, "text_config", None) or config, "vocab_size")),
                text=text, vision=vision, patches=patches(config) if vlm else 0, linears=linears)


def dims(cfg, model, tower: str) -> Dims:
    """:class:`Dims` of one stack from its (sub)config."""
    h = int(getattr(cfg, "hidden_size"))
    heads = int(getattr(cfg, "num_attention_heads", None) or getattr(cfg, "num_heads"))
    kv = int(getattr(cfg, "num_key_value_heads", None) or heads)
    hd = int(getattr(cfg, "head_dim", None) or h // heads)
    layers = int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "depth"))
    inter = int(getattr(cfg, "intermediate_size", None) or 4 * h)
    qk = tower == "language" and any(n.endswith("q_norm") for n, _ in model.named_modules())
    return Dims(layers=layers, hidden=h, intermediate=inter, q_dim=heads * hd, kv_dim=kv * hd, qk_norm=qk,
                heads=heads, kv_heads=kv)


def patches(config) -> int:
    """Vision tokens per example through the tower: fixed-size encoders say it, dynamic ones do not."""
    v = config.vision_config
    size, patch = getattr(v, "image_size", None), getattr(v, "patch_size", None)
    if size and patch and getattr(config, "model_type", "") not in ("qwen2_vl", "qwen2_5_vl"):
        return (int(size) // int(patch)) ** 2
    return DEFAULT_PATCHES


def config_from_dict(d: dict):
    """A transformers config from a config.json mapping (``model_type`` required)."""
    import transformers as tf

    d = dict(d)
    return tf.AutoConfig.for_model(d.pop("model_type"), **d)


def guessed(name: str, size_b: float) -> Arch:
    """Shapes of a model known only by its size: a Llama-like stack with 128-wide heads, 32k vocabulary."""
    params = int(size_b * 1e9)
    layers = max(4, round(8 * size_b ** 0.4))
    hidden = max(256, int(128 * round(math.sqrt(params / (12 * layers)) / 128)))
    text = Dims(layers=layers, hidden=hidden, intermediate=int(hidden * 3.5), q_dim=hidden, kv_dim=hidden // 4,
                heads=max(1, hidden // 128), kv_heads=max(1, hidden // 512))
    block = params // (layers + 1)
    return Arch(name=name, origin=f"guessed from size_b={size_b}", params=params, block_params=block,
                root_params=params - block * layers, tracked=int(0.9 * block * layers), vocab=32000, text=text,
                exact=False)


def tiny_config(arch: str, options: dict):
    """The config of a ``tiny:`` source from its options (the model is built in code)."""
    from ..models.tiny import DEFAULTS

    o = {**DEFAULTS, **options}
    d = dict(hidden_size=o["hidden_size"], intermediate_size=o["intermediate_size"],
             num_hidden_layers=o["num_layers"], num_attention_heads=o["num_heads"],
             num_key_value_heads=o["num_kv_heads"], vocab_size=o["vocab_size"],
             tie_word_embeddings=o["tie_embeddings"], max_position_embeddings=o["max_position"])
    if arch == "qwen3":
        d["head_dim"] = o["head_dim"]
    return config_from_dict({"model_type": arch, **d})


def resolve_arch(name: str, source: str, options: dict | None = None, *, model_dir: str | Path | None = None,
                 size_b: float | None = None) -> Arch:
    """The :class:`Arch` of a model spec, from the first config found (see the module's docstring)."""
    options = options or {}
    if model_dir is not None and (Path(model_dir) / "config.json").is_file():
        cfg = config_from_dict(json.loads((Path(model_dir) / "config.json").read_text()))
        return arch_from_config(cfg, name, f"config.json of {model_dir}")
    kind, _, arg = source.partition(":")
    if kind == "hf":
        cached = hf_cached_config(arg)
        if cached is not None:
            return arch_from_config(config_from_dict(json.loads(cached.read_text())), name,
                                    f"config.json in the Hugging Face cache ({arg})")
        if arg in KNOWN:
            return arch_from_config(config_from_dict(KNOWN[arg]), name, f"built-in config of {arg}")
    if kind == "tiny":
        return arch_from_config(tiny_config(arg, options), name, f"options of {source}")
    if kind == "compose-vlm" and options.get("language", "").startswith("hf:"):
        composed = composed_config(options)
        if composed is not None:
            return arch_from_config(composed, name, f"built-in configs of {options['vision']} + "
                                                    f"{options['language']}")
    if size_b:
        return guessed(name, size_b)
    raise ValueError(f"model {name!r} ({source}): no config.json found and no size_b to estimate from; "
                     "prepare or prefetch it, or give size_b")


def hf_cached_config(repo: str) -> Path | None:
    """config.json of a Hub model in the local Hugging Face cache, if it was downloaded."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    found = try_to_load_from_cache(repo, "config.json")
    return Path(found) if isinstance(found, str) else None


def composed_config(options: dict):
    """An Idefics3 config joining a vision encoder and a language model of :data:`KNOWN` (nanoVLM-style)."""
    vision, language = options.get("vision", "")[3:], options.get("language", "")[3:]
    if vision not in KNOWN or language not in KNOWN:
        return None
    import transformers as tf

    v = {k: w for k, w in KNOWN[vision].items() if k != "model_type"}
    t = dict(KNOWN[language])
    return tf.Idefics3Config(vision_config=v, text_config=t, scale_factor=int(options.get("scale_factor", 2)))
