"""compose-vlm:idefics3 — a nanoVLM-style model joined from a SigLIP vision encoder and a
Llama-architecture language model (the paper profile's nanoVLM), built here from tiny
checkpoints saved in the test (no Hub)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from grades.models import is_vlm_dir
from grades.models.tiny import train_tokenizer
from grades import models as gm
from grades import vlm
from grades.components import LANGUAGE, VISION, discover_components
from grades.config import ConfigError


@pytest.fixture(scope="module")
def backbones(tmp_path_factory):
    """A tiny SigLIP (full model: text + vision, as the Hub's google/siglip-* are) and a tiny
    Llama with a trained byte-level BPE tokenizer, saved like Hub checkpoints."""
    import transformers as tf

    root = tmp_path_factory.mktemp("backbones")
    torch.manual_seed(0)
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  image_size=32, patch_size=8)
    siglip = tf.SiglipModel(tf.SiglipConfig(vision_config=vision, text_config=dict(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=64)))
    siglip.save_pretrained(root / "siglip")
    tf.SiglipImageProcessor(image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4]).save_pretrained(root / "siglip")
    tok = train_tokenizer(["Q: what colour is the square?\nA: red", "a blue circle on the left"] * 20, 200)
    lm = tf.LlamaForCausalLM(tf.LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64,
                                            num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                                            max_position_embeddings=128, tie_word_embeddings=True,
                                            eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    lm.save_pretrained(root / "lm")
    tok.save_pretrained(root / "lm")
    return root, siglip, lm


def _opts(root, **over):
    return {"vision": f"local:{root / 'siglip'}", "language": f"local:{root / 'lm'}", **over}


def test_every_backbone_weight_is_copied(backbones):
    root, siglip, lm = backbones
    model, proc, rec = vlm.compose_vlm(_opts(root))
    sd = model.state_dict()
    for k, v in siglip.vision_model.state_dict().items():
        if not k.startswith("head."):
            assert torch.equal(sd[f"model.vision_model.{k}"], v), k
    n_old = lm.config.vocab_size
    for k, v in lm.state_dict().items():
        mine = sd[f"model.text_model.{k.removeprefix('model.')}"] if k.startswith("model.") else sd[k]
        if "embed_tokens" in k or k == "lm_head.weight":
            assert torch.equal(mine[:n_old], v), k  # the image tokens are new rows at the end
            assert mine.shape[0] == n_old + len(vlm.SPECIAL_TOKENS)
        else:
            assert torch.equal(mine, v), k
    # only the connector is new: (32 * 2^2) -> 32 pixel-shuffle projection, no bias
    assert rec["new_connector_params"] == 32 * 4 * 32
    assert rec["image_seq_len"] == 4 and rec["composed_from"]["language"].startswith("local:")
    assert model.config.tie_word_embeddings and model.lm_head.weight.data_ptr() == \
        model.model.text_model.embed_tokens.weight.data_ptr()
    # the encoder's own normalisation and resolution, no tiling
    ip = proc.image_processor
    assert list(ip.image_mean) == [0.4, 0.5, 0.6] and ip.size["longest_edge"] == 32 and not ip.do_image_splitting


def test_composed_model_discovers_both_towers_and_trains(backbones):
    root, _, _ = backbones
    model, proc, _ = vlm.compose_vlm(_opts(root))
    comps = discover_components(model)
    assert sum(c.tower == VISION for c in comps) == 2 * 6 and sum(c.tower == LANGUAGE for c in comps) == 2 * 7
    img = Image.new("RGB", (40, 30), (200, 10, 10))
    ids, extras = vlm.encode_prompt(proc, {"question": "what colour is the square?"}, image=img)
    assert ids.count(proc.tokenizer.convert_tokens_to_ids("<image>")) == 4
    x = torch.tensor([ids])
    out = model(input_ids=x, labels=x, **extras)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    conn = model.model.connector.modality_projection.proj.weight.grad
    vis = model.model.vision_model.encoder.layers[0].self_attn.q_proj.weight.grad
    assert conn is not None and conn.abs().sum() > 0 and vis is not None and vis.abs().sum() > 0


def test_prepared_through_the_model_source(backbones, tmp_path):
    root, _, _ = backbones
    out = gm.prepare_model("compose-vlm:idefics3", tmp_path / "nano", **_opts(root, scale_factor=2))
    info = json.loads((out / "grades_model.json").read_text())
    assert info["source"] == "compose-vlm:idefics3" and info["family"] == "idefics3"
    assert is_vlm_dir(out)
    model, proc = vlm.load_vlm(out)
    assert type(model).__name__ == "Idefics3ForConditionalGeneration" and proc.image_seq_len == 4


def test_bad_options_name_the_field(backbones):
    root, _, _ = backbones
    with pytest.raises(ConfigError, match="model.options.language.*hf:ORG/NAME"):
        gm.check_options("compose-vlm", {"vision": "hf:google/siglip-base-patch16-224", "language": "SmolLM2"})
    with pytest.raises(ConfigError, match="model.options.scale_factr.*did you mean 'scale_factor'"):
        gm.check_options("compose-vlm", {**_opts(root), "scale_factr": 2})
    with pytest.raises(ConfigError, match="scale_factor = 3: must divide the encoder's patch grid"):
        vlm.compose_vlm(_opts(root, scale_factor=3))
    with pytest.raises(ConfigError, match="expected a SigLIP vision encoder"):
        vlm.compose_vlm({"vision": f"local:{root / 'lm'}", "language": f"local:{root / 'lm'}"})
    with pytest.raises(ConfigError, match="compose-vlm:idefics3"):
        gm.parse_spec("compose-vlm:llava")
