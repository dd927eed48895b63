"""The composed VLM (``compose-vlm:idefics3``): a pretrained vision encoder and language model, joined.

:func:`compose_vlm` builds a nanoVLM-style Idefics3 from a pretrained SigLIP encoder and a
Llama-architecture language model with a fresh pixel-shuffle connector;
:func:`compose_into` saves it; :data:`COMPOSE_SOURCE` is its model source of
:data:`grades.models.SOURCES`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, closest
from ..models.source import ModelSource
from .build import SPECIAL_TOKENS
from .checkpoint import param_groups
from .errors import VLMError

COMPOSE_DEFAULTS: dict[str, Any] = {"vision": "", "language": "", "scale_factor": 2, "seed": 0}


def check_compose_options(options: dict) -> dict:
    """Options of a ``compose-vlm:idefics3`` source: ``vision`` and ``language`` are model
    sources (``hf:ORG/NAME`` or ``local:DIR``), ``scale_factor`` the pixel shuffle."""
    out = dict(COMPOSE_DEFAULTS)
    for k, v in (options or {}).items():
        if k not in out:
            raise ConfigError(f"model.options.{k}: unknown option for a composed VLM{closest(k, out)}; "
                              f"known: {sorted(out)}")
        if not isinstance(v, type(out[k])) or isinstance(v, bool):
            raise ConfigError(f"model.options.{k} = {v!r}: expected {type(out[k]).__name__}")
        out[k] = v
    for k in ("vision", "language"):
        if not out[k].startswith(("hf:", "local:")) or len(out[k].split(":", 1)[1]) == 0:
            raise ConfigError(f"model.options.{k} = {out[k]!r}: expected a model source hf:ORG/NAME or local:DIR "
                              f"(e.g. vision: hf:google/siglip-base-patch16-224, language: hf:HuggingFaceTB/SmolLM2-135M)")
    if out["scale_factor"] < 1:
        raise ConfigError(f"model.options.scale_factor = {out['scale_factor']}: must be >= 1")
    return out


def _source_path(spec: str) -> str:
    kind, _, arg = spec.partition(":")
    return str(Path(arg).expanduser()) if kind == "local" else arg


def compose_vlm(options: dict):
    """(model, processor, record) of an Idefics3 VLM joined from a pretrained SigLIP vision
    encoder and a pretrained Llama-architecture language model (SmolLM2), with a freshly
    initialised pixel-shuffle connector: nanoVLM's construction, in an architecture
    transformers loads (``AutoModelForImageTextToText``).

    Every vision weight except SigLIP's pooling head (unused by Idefics3) and every language
    weight is copied; the tokenizer gains the image tokens (:data:`SPECIAL_TOKENS`), whose new
    embedding rows start at the mean of the others. The image processor takes the encoder's
    resolution (no tiling) and its normalisation. Anything else missing or left over raises."""
    import transformers as tf

    o = check_compose_options(options)
    vsrc, lsrc = _source_path(o["vision"]), _source_path(o["language"])
    vcfg = tf.AutoConfig.from_pretrained(vsrc)
    vcfg = getattr(vcfg, "vision_config", None) or vcfg
    if vcfg.model_type != "siglip_vision_model":
        raise ConfigError(f"model.options.vision = {o['vision']!r}: a {vcfg.model_type} model; expected a SigLIP "
                          f"vision encoder (siglip / siglip_vision_model)")
    lcfg = tf.AutoConfig.from_pretrained(lsrc)
    if lcfg.model_type != "llama":
        raise ConfigError(f"model.options.language = {o['language']!r}: a {lcfg.model_type} model; Idefics3's "
                          f"language model is a Llama (SmolLM2 is one)")
    grid = vcfg.image_size // vcfg.patch_size
    if grid % o["scale_factor"]:
        raise ConfigError(f"model.options.scale_factor = {o['scale_factor']}: must divide the encoder's patch grid "
                          f"({vcfg.image_size} / {vcfg.patch_size} = {grid})")
    vision = tf.SiglipVisionModel.from_pretrained(vsrc, dtype=torch.float32)
    lm = tf.AutoModelForCausalLM.from_pretrained(lsrc, dtype=torch.float32)
    tok = tf.AutoTokenizer.from_pretrained(lsrc)
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    lm.resize_token_embeddings(len(tok), mean_resizing=True)
    mean, std = [0.5, 0.5, 0.5], [0.5, 0.5, 0.5]  # SigLIP's normalisation, unless its processor says otherwise
    try:
        sp = tf.AutoImageProcessor.from_pretrained(vsrc)
        mean, std = list(sp.image_mean), list(sp.image_std)
    except (OSError, ValueError, AttributeError, TypeError):
        pass
    ip = tf.Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": vcfg.image_size},
                                      max_image_size={"longest_edge": vcfg.image_size}, image_mean=mean, image_std=std)
    seq = grid ** 2 // o["scale_factor"] ** 2
    proc = tf.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=seq,
                                chat_template=getattr(tok, "chat_template", None))
    text = {**lm.config.to_dict(), "vocab_size": len(tok), "pad_token_id": tok.pad_token_id}
    tie = bool(lm.config.tie_word_embeddings)
    cfg = tf.Idefics3Config(text_config=text, vision_config=vcfg.to_dict(), scale_factor=o["scale_factor"],
                            image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id,
                            tie_word_embeddings=tie)
    torch.manual_seed(o["seed"])
    model = tf.Idefics3ForConditionalGeneration(cfg)
    sd: dict[str, torch.Tensor] = {}
    for k, v in vision.state_dict().items():
        k = k.removeprefix("vision_model.")
        if not k.startswith("head."):  # SigLIP's attention-pooling head: Idefics3 reads the patch states
            sd[f"model.vision_model.{k}"] = v
    for k, v in lm.state_dict().items():
        if k.startswith("model."):
            sd[f"model.text_model.{k.removeprefix('model.')}"] = v
        elif k == "lm_head.weight":
            sd[k] = v
    missing, unexpected = model.load_state_dict(sd, strict=False)
    fresh = [k for k in missing if not k.startswith("model.connector.") and not (tie and k == "lm_head.weight")]
    if fresh or unexpected:
        raise VLMError(f"composing {o['vision']} + {o['language']}: weights without a source {fresh[:5]}, "
                       f"unused {list(unexpected)[:5]}")
    if tie:
        model.tie_weights()
    record = {"kind": "vlm", "family": "idefics3", "composed_from": {"vision": o["vision"], "language": o["language"]},
              "options": o, "params": sum(p.numel() for p in model.parameters()), "params_by_part": param_groups(model),
              "vocab_size": len(tok), "image_seq_len": seq, "image_size": vcfg.image_size,
              "new_connector_params": sum(p.numel() for n, p in model.named_parameters() if ".connector." in n)}
    return model, proc, record


def compose_into(options: dict, out: Path) -> dict:
    """:func:`compose_vlm`, saved (model + processor) into the existing directory ``out``."""
    model, proc, record = compose_vlm(options)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return record


def check_composed(arg: str, spec: str) -> None:
    if arg != "idefics3":
        raise ConfigError(f"model.source = {spec!r}: composed VLMs are built as Idefics3 (compose-vlm:idefics3)")


#: the ``compose-vlm:idefics3`` model source (grades.models.SOURCES)
COMPOSE_SOURCE = ModelSource(build=lambda family, o, out: compose_into(o, out), check_options=check_compose_options,
                             check_arg=check_composed)
