"""Analytic FLOPs of a VLM (language tower + vision tower per image) against FlopCounterMode.

One real forward+backward of the tiny Idefics3 (SigLIP-style encoder, pixel-shuffle
connector, Llama text model) on an image batch is measured under ``FlopCounterMode``
(patch-embedding convolution included) and compared with :func:`grades.flops.step_flops`
for the live frozen set: full fine-tuning, frozen vision matrices, a frozen language
model, LoRA on both towers, LoRA on the language model only (the image features then
need no gradient) and GradES-style partial freezes.
"""

from __future__ import annotations

import random

import pytest
import torch
from test_vlm_components import add_lora
from torch.utils.flop_counter import FlopCounterMode

from grades import vlm
from grades.components import VISION, discover_components
from grades.flops import VISION_KINDS, FlopsMeter, build_plan, count_images, forward_flops, step_flops
from grades.freezer import freeze_params

B, TEXT = 3, 12
REL = 0.01


def tiny(attn: str = "eager"):
    torch.manual_seed(0)
    model, _ = vlm.build_tiny_vlm({"vocab_size": 300}, texts=["a red circle"] * 4)
    model.set_attn_implementation(attn)
    model.train()
    return model


def batch(model, n: int = B, images: int = 1, pad_images: int = 0) -> dict:
    g = torch.Generator().manual_seed(0)
    img = torch.full((n, 4 * images), model.config.image_token_id)
    ids = torch.cat([img, torch.randint(0, 250, (n, TEXT), generator=g)], 1)
    pix = torch.randn(n, images + pad_images, 3, 32, 32, generator=g)
    if pad_images:
        pix[:, images:] = 0  # padding pictures: all zeros, skipped by the model
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pix, "labels": ids}


def measure(model, b) -> tuple[float, float]:
    model.zero_grad(set_to_none=True)
    with FlopCounterMode(display=False) as mode:
        model(**b).loss.backward()
    with torch.no_grad(), FlopCounterMode(display=False) as fwd:
        model(**b)
    return mode.get_total_flops(), fwd.get_total_flops()


def rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(b), 1.0)


def check(model, b=None):
    b = b or batch(model)
    got = step_flops(model, b["input_ids"].shape[0], b["input_ids"].shape[1], count_images(b))
    total, fwd = measure(model, b)
    assert rel(got.total, total) <= REL, (got.total, total)
    assert rel(got.forward, fwd) <= REL, (got.forward, fwd)
    assert got.total == pytest.approx(sum(got.by_kind.values()))
    assert got.vision == pytest.approx(sum(v for k, v in got.by_kind.items() if k in VISION_KINDS))
    return got


def freeze(model, *patterns):
    for n, p in model.named_parameters():
        if any(s in n for s in patterns):
            p.requires_grad_(False)


def test_full_finetuning_matches_flop_counter():
    got = check(tiny())
    assert set(VISION_KINDS) <= set(got.by_kind) and got.vision > 0
    assert build_plan(tiny()).vision_counted


def test_sdpa_attention_projections_match_too():
    """Under SDPA (the tiny VLM's default) FlopCounterMode sees no attention-score matmuls
    (torch's CPU flash kernel has no flop formula); everything else matches."""
    model = tiny("sdpa")
    b = batch(model)
    got = step_flops(model, B, b["input_ids"].shape[1], count_images(b))
    total, fwd = measure(model, b)
    scores = got.by_kind["attention_scores"] + got.by_kind["vision_attention_scores"]
    assert rel(got.total - scores, total) <= REL, (got.total - scores, total)


def test_frozen_vision_matrices_reduce_backward_flops():
    model = tiny()
    full = check(model)
    for c in discover_components(model, towers=(VISION,)):
        freeze_params(c.params)
    got = check(model)
    vw = got.by_kind_pass["vision_attn"]["weight_grad"] + got.by_kind_pass["vision_mlp"]["weight_grad"]
    assert vw == 0 < full.by_kind_pass["vision_attn"]["weight_grad"]
    assert got.forward == full.forward and got.total < full.total
    # the patch embedding still trains, so input gradients still flow through the frozen blocks
    assert got.by_kind_pass["vision_mlp"]["input_grad"] == full.by_kind_pass["vision_mlp"]["input_grad"]


def test_frozen_language_model_and_vision_tower():
    model = tiny()
    freeze(model, "text_model", "lm_head")
    check(model)
    freeze(model, "vision_model")  # only the connector trains: no backward through the vision tower at all
    got = check(model)
    assert all(got.by_kind_pass[k]["input_grad"] == got.by_kind_pass[k]["weight_grad"] == 0
               for k in ("vision_attn", "vision_mlp", "vision_patch_embed"))
    assert got.by_kind_pass["projector"]["weight_grad"] > 0


def test_lora_both_towers():
    model = tiny()
    model = add_lora(model, vlm.expand_lora_targets(model, ["@language", "@vision"]))
    got = check(model)
    assert got.by_kind_pass["vision_attn"]["weight_grad"] > 0
    assert got.by_kind_pass["vision_patch_embed"]["weight_grad"] == 0


def test_lora_language_only_needs_no_image_gradient():
    model = tiny()
    model = add_lora(model, vlm.expand_lora_targets(model, ["@language"]))
    got = check(model)
    assert got.by_kind_pass["projector"]["input_grad"] == got.by_kind_pass["projector"]["weight_grad"] == 0
    assert got.by_kind_pass["vision_attn"]["input_grad"] == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_random_partial_freezes(seed):
    model = tiny()
    rng = random.Random(seed)
    comps = discover_components(model)
    for c in rng.sample(comps, len(comps) // 2):
        freeze_params(c.params)
    check(model)


def test_padding_images_are_not_counted():
    model = tiny()
    b = batch(model, n=2, images=1, pad_images=1)
    assert count_images(b) == 2 and count_images({"input_ids": b["input_ids"]}) == 0
    check(model, b)


def test_meter_counts_images_and_forward_flops():
    model = tiny()
    b = batch(model)
    meter = FlopsMeter(model)
    per_step = meter.add_step(b["input_ids"], images=count_images(b))
    meter.add_step(b["input_ids"], images=count_images(b))
    d = meter.to_dict()
    assert d["images"] == 2 * B and d["total"] == pytest.approx(2 * per_step) and d["vision"] > 0
    text_only = step_flops(model, B, b["input_ids"].shape[1])
    assert per_step - text_only.total == pytest.approx(step_flops(model, B, b["input_ids"].shape[1], B).vision)
    n = b["input_ids"].shape[1]
    assert forward_flops(model, B, n, B) == step_flops(model, B, n, B).forward
