"""Component discovery on tiny vision-language models built from configs (no weights).

Every family is built with V = 3 vision blocks and L = 2 language blocks, so the
expected counts are (matrices per block) x (blocks), a fused projection counting once.
"""

from __future__ import annotations

import pytest
import torch

from grades.components import (
    LANGUAGE,
    TYPE_ORDER,
    VISION,
    discover_components,
    summarize,
)

V, L = 3, 2
TEXT = dict(vocab_size=160, hidden_size=64, intermediate_size=128, num_hidden_layers=L, num_attention_heads=4,
            num_key_value_heads=2, max_position_embeddings=512, bos_token_id=None, eos_token_id=1, pad_token_id=0)
MROPE = {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 10000.0}
QWEN_TOKENS = dict(image_token_id=150, video_token_id=151, vision_start_token_id=152, vision_end_token_id=153)
IMAGE = 150  # image token id in every family
FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "idefics3", "smolvlm", "llava")

# per family: vision matrices per block (full fine-tuning), and the vision blocks the model reads
FP_VISION = {"qwen2_vl": 4, "qwen2_5_vl": 5, "qwen3_vl": 4, "idefics3": 6, "smolvlm": 6, "llava": 6}
USED_VISION_BLOCKS = {"llava": V - 1}  # LLaVA reads hidden_states[-2]: the last CLIP block is unused
LLM_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# the extra names that put LoRA on every vision block matrix of each family
VISION_NAMES = {"qwen2_vl": ["qkv", "proj", "fc1", "fc2"], "qwen2_5_vl": ["qkv", "proj"],
                "qwen3_vl": ["qkv", "proj", "linear_fc1", "linear_fc2"], "idefics3": ["out_proj", "fc1", "fc2"],
                "smolvlm": ["out_proj", "fc1", "fc2"], "llava": ["out_proj", "fc1", "fc2"]}


def build_vlm(family: str, **over):
    import transformers as tf

    torch.manual_seed(0)
    if family in ("qwen2_vl", "qwen2_5_vl", "qwen3_vl"):
        text = dict(TEXT, rope_parameters=MROPE, **({"head_dim": 16} if family == "qwen3_vl" else {}))
        if family == "qwen2_vl":
            vision = dict(depth=V, embed_dim=32, hidden_size=64, mlp_ratio=2, num_heads=2, patch_size=8)
            cls, cfg_cls = tf.Qwen2VLForConditionalGeneration, tf.Qwen2VLConfig
        elif family == "qwen2_5_vl":
            vision = dict(depth=V, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                          patch_size=8, window_size=32, fullatt_block_indexes=[V - 1])
            cls, cfg_cls = tf.Qwen2_5_VLForConditionalGeneration, tf.Qwen2_5_VLConfig
        else:
            vision = dict(depth=V, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64,
                          patch_size=8, num_position_embeddings=64, deepstack_visual_indexes=[1])
            cls, cfg_cls = tf.Qwen3VLForConditionalGeneration, tf.Qwen3VLConfig
        return cls(cfg_cls(text_config=text, vision_config={**vision, **over}, **QWEN_TOKENS))
    text = dict(TEXT, model_type="llama")
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=V, num_attention_heads=2, image_size=32,
                  patch_size=8)
    if family in ("idefics3", "smolvlm"):
        cfg_cls, cls = ((tf.Idefics3Config, tf.Idefics3ForConditionalGeneration) if family == "idefics3" else
                        (tf.SmolVLMConfig, tf.SmolVLMForConditionalGeneration))
        return cls(cfg_cls(text_config=text, vision_config=vision, image_token_id=IMAGE, scale_factor=2,
                           pad_token_id=0))
    if family == "llava":
        cfg = tf.LlavaConfig(text_config=text, vision_config=dict(vision, model_type="clip_vision_model"),
                             image_token_index=IMAGE, image_seq_length=16, **over)
        return tf.LlavaForConditionalGeneration(cfg)
    raise ValueError(family)


def dummy_inputs(family: str, model, n: int = 2) -> dict:
    """One 32x32 picture per row + a few text tokens, in the family's input format."""
    g = torch.Generator().manual_seed(1)
    text = torch.randint(3, 100, (n, 5), generator=g)
    if family.startswith("qwen"):
        # 4 x 4 patches of 8 px (temporal patch 2), merged 2 x 2 -> 4 image tokens
        grid = torch.tensor([[1, 4, 4]] * n)
        pix = torch.randn(n * 16, 3 * 2 * 8 * 8, generator=g)
        img = torch.tensor([[152] + [IMAGE] * 4 + [153]] * n)
        ids = torch.cat([img, text], 1)
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pix,
                "image_grid_thw": grid, "mm_token_type_ids": (ids == IMAGE).long(), "labels": ids}
    if family in ("idefics3", "smolvlm"):
        ids = torch.cat([torch.full((n, 4), IMAGE), text], 1)  # (32/8)^2 / 2^2 = 4 image tokens
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
                "pixel_values": torch.randn(n, 1, 3, 32, 32, generator=g), "labels": ids}
    ids = torch.cat([torch.full((n, 16), IMAGE), text], 1)  # CLIP: (32/8)^2 patches, CLS dropped
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids),
            "pixel_values": torch.randn(n, 3, 32, 32, generator=g), "labels": ids}


def add_lora(model, targets, r: int = 2):
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules=targets))


def lora_modules(model) -> set[str]:
    return {n.removeprefix("base_model.model.") for n, m in model.named_modules()
            if isinstance(getattr(m, "lora_A", None), torch.nn.ModuleDict)}


def _counts(comps) -> tuple[int, int]:
    s = summarize(comps)
    return s.get(VISION, 0), s.get(LANGUAGE, 0)


# ----------------------------------------------------------- full fine-tuning
@pytest.mark.parametrize("family", FAMILIES)
def test_full_finetuning_counts_per_tower(family):
    model = build_vlm(family)
    comps = discover_components(model)
    blocks = USED_VISION_BLOCKS.get(family, V)
    assert _counts(comps) == (FP_VISION[family] * blocks, 7 * L)
    vis = [c for c in comps if c.tower == VISION]
    assert {c.layer for c in vis} == set(range(blocks))
    assert all(c.short.startswith("V") for c in vis)
    assert {c.layer for c in comps if c.tower == LANGUAGE} == set(range(L))
    ids = [id(p) for c in comps for p in c.params]
    assert len(ids) == len(set(ids))


VISION_TYPES = {"qwen2_vl": ["qkv", "o", "up", "down"], "qwen2_5_vl": ["qkv", "o", "gate", "up", "down"],
                "qwen3_vl": ["qkv", "o", "up", "down"], "idefics3": ["q", "k", "v", "o", "up", "down"],
                "smolvlm": ["q", "k", "v", "o", "up", "down"], "llava": ["q", "k", "v", "o", "up", "down"]}


@pytest.mark.parametrize("family", FAMILIES)
def test_vision_block_types_and_names(family):
    comps = [c for c in discover_components(build_vlm(family)) if c.tower == VISION and c.layer == 0]
    assert sorted((c.type for c in comps), key=TYPE_ORDER.index) == VISION_TYPES[family]  # module order varies
    assert all(c.kind == ("attn" if c.type in ("q", "k", "v", "qkv", "o") else "mlp") for c in comps)
    owner = {"qwen2_vl": "model.visual.blocks.0.", "qwen2_5_vl": "model.visual.blocks.0.",
             "qwen3_vl": "model.visual.blocks.0.", "idefics3": "model.vision_model.encoder.layers.0.",
             "smolvlm": "model.vision_model.encoder.layers.0.", "llava": "model.vision_tower.encoder.layers.0."}
    assert all(c.name.startswith(owner[family]) for c in comps)


def test_qwen2_vl_fused_qkv_shape():
    model = build_vlm("qwen2_vl")
    qkv = next(c for c in discover_components(model) if c.tower == VISION and c.type == "qkv")
    assert qkv.params[0].shape == (3 * 32, 32)  # embed_dim 32, fused q|k|v
    assert len(qkv.params) == 2  # weight + bias


@pytest.mark.parametrize("family", FAMILIES)
def test_projector_trains_but_is_not_a_component(family):
    """The documented choice: projector / merger / connector weights train normally
    (they get gradients) but are never tracked, and every tracked matrix gets a gradient."""
    model = build_vlm(family)
    comps = discover_components(model)
    tracked = {id(p) for c in comps for p in c.params}
    model(**dummy_inputs(family, model)).loss.backward()
    proj = [(n, p) for n, p in model.named_parameters()
            if any(k in n.split(".") for k in ("merger", "multi_modal_projector", "connector"))]
    assert proj, "every family has a projector"
    for n, p in proj:
        assert p.requires_grad and id(p) not in tracked, n
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for _, p in proj)
    for c in comps:
        assert all(p.grad is not None for p in c.params), f"{c.name} is tracked but gets no gradient"


def test_llava_unused_last_vision_block_is_left_out():
    model = build_vlm("llava")
    assert model.config.vision_feature_layer == -2
    model(**dummy_inputs("llava", model)).loss.backward()
    last = model.model.vision_tower.encoder.layers[V - 1]
    assert all(p.grad is None for p in last.parameters()), "the last CLIP block never gets a gradient"
    assert max(c.layer for c in discover_components(model) if c.tower == VISION) == V - 2
    # reading the last layer (-1) uses every block
    assert _counts(discover_components(build_vlm("llava", vision_feature_layer=-1)))[0] == 6 * V
    # a list of layers: the deepest one counts
    assert _counts(discover_components(build_vlm("llava", vision_feature_layer=[0, 1])))[0] == 6 * 1


# ---------------------------------------------------------------------- LoRA
# LoRA on the usual language-model names: what each family's vision tower picks up
LLM_TARGET_VISION = {"qwen2_vl": 0, "qwen2_5_vl": 3, "qwen3_vl": 0, "idefics3": 3, "smolvlm": 3, "llava": 3}


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_language_targets(family):
    """q/k/v/o/gate/up/down: every language matrix, and *some* vision matrices by name
    collision (Qwen2.5-VL's gated vision MLP, the q/k/v of SigLIP/CLIP attention)."""
    model = add_lora(build_vlm(family), LLM_TARGETS)
    comps = discover_components(model)
    blocks = USED_VISION_BLOCKS.get(family, V)
    assert _counts(comps) == (LLM_TARGET_VISION[family] * blocks, 7 * L)
    assert all(c.lora and c.adapter == "default" and len(c.params) == 2 for c in comps)
    if family == "qwen2_5_vl":
        assert {c.type for c in comps if c.tower == VISION} == {"gate", "up", "down"}
    if family in ("idefics3", "smolvlm", "llava"):
        assert {c.type for c in comps if c.tower == VISION} == {"q", "k", "v"}  # out_proj != o_proj


# LoRA modules the name list creates outside the tracked block matrices
UNTRACKED_WITH_VISION_NAMES = {
    "qwen2_vl": {"model.visual.patch_embed.proj"},
    "qwen2_5_vl": {"model.visual.patch_embed.proj"},
    "qwen3_vl": {"model.visual.patch_embed.proj", "model.visual.merger.linear_fc1", "model.visual.merger.linear_fc2",
                 "model.visual.deepstack_merger_list.0.linear_fc1", "model.visual.deepstack_merger_list.0.linear_fc2"},
    "idefics3": set(), "smolvlm": set(),
    "llava": {f"model.vision_tower.encoder.layers.{V - 1}.{m}"
              for m in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
                        "mlp.fc1", "mlp.fc2")},
}


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_vision_names_cover_every_vision_matrix(family):
    model = add_lora(build_vlm(family), LLM_TARGETS + VISION_NAMES[family])
    comps = discover_components(model)
    blocks = USED_VISION_BLOCKS.get(family, V)
    assert _counts(comps) == (FP_VISION[family] * blocks, 7 * L)
    assert lora_modules(model) - {c.name.removeprefix("base_model.model.") for c in comps} == \
        UNTRACKED_WITH_VISION_NAMES[family]


@pytest.mark.parametrize("family", FAMILIES)
def test_lora_tower_targets_are_exact(family):
    """``@language`` / ``@vision`` (grades.vlm.expand_lora_targets): adapters on exactly the
    tracked matrices, nothing on patch embeddings, projectors or unused blocks."""
    from grades.vlm import expand_lora_targets

    base = build_vlm(family)
    targets = expand_lora_targets(base, ["@language", "@vision"])
    model = add_lora(base, targets)
    comps = discover_components(model)
    blocks = USED_VISION_BLOCKS.get(family, V)
    assert _counts(comps) == (FP_VISION[family] * blocks, 7 * L)
    assert lora_modules(model) == {c.name.removeprefix("base_model.model.") for c in comps}
    only_vision = add_lora(build_vlm(family), expand_lora_targets(build_vlm(family), ["@vision"]))
    assert _counts(discover_components(only_vision)) == (FP_VISION[family] * blocks, 0)


def test_lora_all_linear_also_adapts_the_projector():
    model = add_lora(build_vlm("idefics3"), "all-linear")
    comps = discover_components(model)
    assert _counts(comps) == (6 * V, 7 * L)
    assert lora_modules(model) - {c.name.removeprefix("base_model.model.") for c in comps} == \
        {"model.connector.modality_projection.proj"}


def test_towers_filter():
    model = build_vlm("qwen2_5_vl")
    assert _counts(discover_components(model, towers=(VISION,))) == (5 * V, 0)
    assert _counts(discover_components(model, towers=(LANGUAGE,))) == (0, 7 * L)


@pytest.mark.parametrize("family", FAMILIES)
def test_coverage_is_complete_full_and_lora(family):
    """Every trainable weight matrix inside the blocks of both towers is tracked (grades.coverage);
    LLaVA's unread last vision block is reported as unused, not as untracked."""
    from grades.coverage import coverage

    for model in (build_vlm(family), add_lora(build_vlm(family), LLM_TARGETS + VISION_NAMES[family])):
        cov = coverage(model, discover_components(model))
        assert cov.complete and cov.share == 1.0 and cov.block_params > 0, cov.untracked
        assert (cov.unused_params > 0) == (family in USED_VISION_BLOCKS)
