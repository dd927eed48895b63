"""Vision-language models: a tiny local VLM, training batches, multiple-choice scoring.

**Family: Idefics3** (the architecture of SmolVLM-256M/500M-Instruct: a SigLIP-style
vision encoder with ``q/k/v/out_proj`` + ``fc1/fc2``, a pixel-shuffle connector, a
Llama text model).  Chosen because its processor works on CPU without torchvision in
transformers 5.x: ``Idefics3Processor`` has no video processor, and
``Idefics3ImageProcessorPil`` needs only PIL + numpy.  The Qwen2-VL / Qwen2.5-VL /
Qwen3-VL / SmolVLM(2) processors all declare a ``video_processor``, and constructing
them without torchvision fails (``BaseVideoProcessor`` is unavailable), so neither
``AutoProcessor`` nor a hand-built processor works for those families here; their
*models* still build and are covered by the discovery tests.

API (everything train.py / evaluation need):

* :func:`prepare_tiny_vlm` / :func:`build_tiny_vlm` — a tiny Idefics3 built from a config
  in code, its byte-level BPE tokenizer trained locally (:func:`grades.models.train_tokenizer`),
  optionally *aligned* first (caption pre-training, :func:`align_pretrain`); saved as a
  checkpoint directory that ``AutoModelForImageTextToText`` / ``AutoProcessor`` load.
* :func:`compose_vlm` — a nanoVLM-style Idefics3 joined from a pretrained SigLIP encoder
  and a Llama-architecture language model with a fresh connector (``compose-vlm:idefics3``).
* :func:`load_vlm` — load ``(model, processor)`` (:func:`grades.models.is_vlm_dir` detects a VLM).
* :func:`encode_examples` + :class:`VLMBatchStream` / :func:`vlm_batches` — batches from
  ``(image, question, answer)`` rows: the prompt ``<image>Q: {question}\\nA:`` (or, with
  ``chat``, the processor's chat template) goes through ``processor(text=..., images=...)``
  (the model's own image-token expansion), the target ``" " + answer + eos`` is tokenized
  apart and appended, labels are -100 on the prompt (``loss_on="answer"``), as in
  :func:`grades.train.tokenize_examples`. :class:`LazyItems` encodes a row when its batch
  draws it (large image datasets).
* :func:`score_multiple_choice`, :func:`evaluate_vlm` — log-likelihood of each choice given
  image + prompt (lm-eval's ``multiple_choice`` rule: continuation ``" " + choice``, no eos;
  acc = argmax, acc_norm = argmax of ll / len(choice)) -> ``eval.json`` with the structure of
  :mod:`grades.evaluate`, ``backend: "grades-vlm"``.  lm-eval 0.4.13's ``hf-multimodal``
  backend cannot do this: its ``loglikelihood`` raises ``NotImplementedError`` for requests
  that carry images (only ``generate_until`` is implemented).
* :func:`run_lm_eval` / :func:`lm_eval_kwargs` — generation tasks (``shapes_gen``, the
  benchmarks of ``evals/tasks/hub``) through lm-eval's ``hf-multimodal`` or ``vllm-vlm``;
  :func:`merge_adapter` merges a VLM's LoRA adapter first for vLLM.
* :func:`expand_lora_targets` — LoRA target lists with ``@language`` / ``@vision`` entries
  expanded to the exact module paths GradES tracks in that tower.

CLI: ``python -m grades.vlm prepare --out DIR [--data DIR|SPEC] [--set k=v]`` and
``python -m grades.vlm evaluate --model DIR [--data DIR] --task T1,T2 --out eval.json
[--adapter DIR] [--backend hf|vllm] [--apply-chat-template]``.

Measurements (CPU, 1 thread; default tiny model: 0.46M parameters = vision 80k,
connector 33k, language 343k incl. embeddings; 32 px input, 8 px patches -> 4 image
tokens, ~20 tokens per example; synthetic:shapes defaults, 2000 training pictures,
batch 16, AdamW 2e-3 cosine, test n = 300, chance 0.25):

* fine-tuning from random init, 1000 steps (29-40 s): acc 0.19-0.26 -> 0.47-0.49 ± 0.029
  (> 7 stderr above chance). Counting is learnt (0.93-0.99), position partly (0.27-0.43);
  colour-of-a-named-shape and shape-of-a-named-colour stay near chance.
* 4000 steps on 8000 pictures (133 s): 0.46 (count 1.00, position 0.36, colour/shape ~0.25).
* caption alignment (``pretrain_steps`` 3000, 179 s; caption loss plateaus at 0.45/token)
  + 500 fine-tuning steps: 0.49 (count 1.00, position 0.54, colour 0.30, shape 0.16):
  alignment does not unlock the object binding either.
* LoRA needs an aligned base: on the random model, LoRA (``@language`` + ``@vision``, r 8)
  stays at 0.29 after 1000 steps. Alignment on the plain caption (1000 steps) brings
  LoRA to 0.31-0.40 (lr 5e-3 / 2e-3, 500 steps) while FP reaches 0.50; alignment on
  :func:`describe` (the number of shapes, then the caption; 500 steps, ~35 s CPU) brings
  both to 0.52 (500 steps, lr 2e-3; counting 1.00 in both), the base model to 0.33.
  The workflow profiles use the latter (``tiny-vlm:idefics3`` with ``pretrain_steps: 500``).
* the same vision tower alone with a linear head classifies single shapes at 0.87 after
  1000 steps (18 s): the bottleneck is learning the question -> object binding through a
  2-layer language model from scratch, not the vision capacity.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from .config import ConfigError, closest
from .io import atomic_dir, atomic_write_json, atomic_write_text
from .models.source import ModelSource
from .resources import hub_tasks_dir

FAMILIES = ("idefics3",)
TINY_VLM_DEFAULTS: dict[str, Any] = {
    "family": "idefics3",
    # language model (Llama)
    "hidden_size": 128, "num_layers": 2, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 256,
    "vocab_size": 512, "max_position": 256, "tie_embeddings": True,
    # vision encoder (SigLIP-style) + pixel-shuffle connector
    "vision_hidden_size": 64, "vision_layers": 2, "vision_heads": 2, "vision_intermediate_size": 128,
    "image_size": 32, "patch_size": 8, "scale_factor": 2,
    "seed": 0,
    # tokenizer texts and optional alignment pre-training: a prepared image dataset dir or a
    # data spec (e.g. synthetic:shapes, prepared into the cache) whose train split has 'caption's
    "data": "", "pretrain_steps": 0, "pretrain_batch_size": 16, "pretrain_lr": 2.0e-3, "threads": 0,
}
SPECIAL_TOKENS = ["<image>", "<fake_token_around_image>", "<global-img>", "<end_of_utterance>"]
IMAGE_KEYS_SKIP = ("input_ids", "attention_mask", "labels")
SEQ_KEYS = ("token_type_ids", "mm_token_type_ids")  # per-token extras some processors return (padded with 0)


class VLMError(ValueError):
    """Bad VLM inputs (model directory, processor, examples)."""


# ------------------------------------------------------------------ options
def check_options(options: dict) -> dict:
    out = dict(TINY_VLM_DEFAULTS)
    for k, v in (options or {}).items():
        if k not in out:
            raise ConfigError(f"model.options.{k}: unknown option for a tiny VLM{closest(k, out)}; "
                              f"known: {sorted(out)}")
        d = out[k]
        ok = (isinstance(v, bool) if isinstance(d, bool) else
              (isinstance(v, int) and not isinstance(v, bool)) if isinstance(d, int) else
              (isinstance(v, (int, float)) and not isinstance(v, bool)) if isinstance(d, float) else
              isinstance(v, type(d)))
        if not ok:
            raise ConfigError(f"model.options.{k} = {v!r}: expected {type(d).__name__}")
        if isinstance(d, (int, float)) and not isinstance(d, bool) and v < 0:
            raise ConfigError(f"model.options.{k} = {v!r}: must be >= 0")
        out[k] = v
    if out["family"] not in FAMILIES:
        raise ConfigError(f"model.options.family = {out['family']!r}: unknown tiny VLM family"
                          f"{closest(out['family'], FAMILIES)}; known: {list(FAMILIES)}")
    for a, b in (("num_heads", "num_kv_heads"), ("hidden_size", "num_heads"), ("vision_hidden_size", "vision_heads")):
        if out[b] < 1 or out[a] % out[b]:
            raise ConfigError(f"model.options.{b} = {out[b]}: must be >= 1 and divide {a} = {out[a]}")
    grid = out["image_size"] // max(1, out["patch_size"])
    if out["patch_size"] < 1 or out["image_size"] % out["patch_size"] or grid % max(1, out["scale_factor"]):
        raise ConfigError(f"model.options: image_size ({out['image_size']}) must be a multiple of patch_size "
                          f"({out['patch_size']}) and image_size / patch_size a multiple of scale_factor "
                          f"({out['scale_factor']})")
    if out["pretrain_steps"] and not out["data"]:
        raise ConfigError("model.options.data: required when pretrain_steps > 0 (a prepared synthetic:shapes dir)")
    return out


def image_seq_len(o: dict) -> int:
    """Image tokens per picture: (image_size / patch_size)^2 / scale_factor^2."""
    return (o["image_size"] // o["patch_size"]) ** 2 // o["scale_factor"] ** 2


# ------------------------------------------------------------ tiny model
def data_dir(spec: str) -> Path:
    """A prepared dataset directory from a directory path or a data spec (``synthetic:shapes``)."""
    if Path(spec).expanduser().is_dir():
        return Path(spec).expanduser()
    from .data import prepare_dataset

    return Path(prepare_dataset(spec))


def _texts(data: str) -> list[str]:
    """Tokenizer training text: every question, choice, answer and caption of a dataset
    (or a fixed vocabulary of the shapes world when no data is given)."""
    if data:
        data_dir_ = data_dir(data)
        texts = []
        for split in ("train", "validation", "test"):
            p = data_dir_ / f"{split}.jsonl"
            if not p.exists():
                continue
            for line in p.read_text().splitlines():
                if line.strip():
                    r = json.loads(line)
                    texts += [format_prompt(r), " ".join(r["choices"]), r.get("caption", "")]
        if texts:
            return texts
    from .data import shapes

    words = [*shapes.COLOURS, *shapes.SHAPES, *shapes.CELLS, *shapes.NUMBERS]
    return [f"Q: What is it?\nA: {w}" for w in words] * 4


def build_tiny_vlm(options: dict | None = None, texts: list[str] | None = None):
    """(model, processor) of a randomly initialised tiny VLM (no weights downloaded)."""
    import transformers as tf

    from .models.tiny import train_tokenizer

    o = check_options(options or {})
    torch.manual_seed(o["seed"])
    tok = train_tokenizer(texts if texts is not None else _texts(o["data"]), o["vocab_size"])
    tok.add_special_tokens({"additional_special_tokens": SPECIAL_TOKENS})
    ip = tf.Idefics3ImageProcessorPil(do_image_splitting=False, size={"longest_edge": o["image_size"]},
                                      max_image_size={"longest_edge": o["image_size"]})
    proc = tf.Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=image_seq_len(o))
    text = dict(model_type="llama", vocab_size=len(tok), hidden_size=o["hidden_size"],
                intermediate_size=o["intermediate_size"], num_hidden_layers=o["num_layers"],
                num_attention_heads=o["num_heads"], num_key_value_heads=o["num_kv_heads"],
                max_position_embeddings=o["max_position"], tie_word_embeddings=o["tie_embeddings"],
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None)
    vision = dict(hidden_size=o["vision_hidden_size"], intermediate_size=o["vision_intermediate_size"],
                  num_hidden_layers=o["vision_layers"], num_attention_heads=o["vision_heads"],
                  image_size=o["image_size"], patch_size=o["patch_size"])
    cfg = tf.Idefics3Config(text_config=text, vision_config=vision, scale_factor=o["scale_factor"],
                            image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id,
                            tie_word_embeddings=o["tie_embeddings"])
    model = tf.Idefics3ForConditionalGeneration(cfg)
    return model, proc


def prepare_tiny_vlm(out_dir: str | Path, **options: Any) -> Path:
    """Build (and optionally align) a tiny VLM into ``out_dir`` atomically; returns the dir.

    ``out_dir/grades_model.json`` records the options, parameter counts per tower and the
    pre-training curve."""
    o = check_options(options)
    out = Path(out_dir)
    t0 = time.perf_counter()
    with atomic_dir(out) as tmp:
        info = build_into(o, tmp)
        info["prepare_time_s"] = round(time.perf_counter() - t0, 2)
        (tmp / "grades_model.json").write_text(json.dumps(info, indent=2) + "\n")
    return out


def build_into(options: dict, out: Path) -> dict:
    """Build (and optionally align) a tiny VLM, save model + processor into ``out``
    (an existing directory); returns the ``grades_model.json`` record (without times).
    Used by :func:`prepare_tiny_vlm` and the ``tiny-vlm:`` model source of :mod:`grades.models`."""
    o = check_options(options)
    model, proc = build_tiny_vlm(o)
    info: dict[str, Any] = {"kind": "vlm", "family": o["family"], "options": o,
                            "params": sum(p.numel() for p in model.parameters()),
                            "params_by_part": param_groups(model), "vocab_size": len(proc.tokenizer),
                            "image_seq_len": image_seq_len(o)}
    if o["pretrain_steps"]:
        from .data.shapes import load_examples

        prev = torch.get_num_threads()
        try:
            if o["threads"]:
                torch.set_num_threads(o["threads"])
            info["pretrain"] = align_pretrain(model, proc, load_examples(data_dir(o["data"]), "train"),
                                              steps=o["pretrain_steps"], batch_size=o["pretrain_batch_size"],
                                              lr=o["pretrain_lr"], seed=o["seed"])
        finally:  # the thread count is process-wide
            torch.set_num_threads(prev)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return info


# ------------------------------------------------------- composed model
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


def check_family(arg: str, spec: str) -> None:
    if arg not in FAMILIES:
        raise ConfigError(f"model.source = {spec!r}: unknown tiny VLM family '{arg}'"
                          f"{closest(arg, FAMILIES)}; known: {list(FAMILIES)}")


def check_composed(arg: str, spec: str) -> None:
    if arg != "idefics3":
        raise ConfigError(f"model.source = {spec!r}: composed VLMs are built as Idefics3 (compose-vlm:idefics3)")


#: the ``tiny-vlm:FAMILY`` and ``compose-vlm:idefics3`` model sources (grades.models.SOURCES)
TINY_SOURCE = ModelSource(build=lambda family, o, out: build_into({**o, "family": family}, out),
                          check_options=check_options, check_arg=check_family)
COMPOSE_SOURCE = ModelSource(build=lambda family, o, out: compose_into(o, out), check_options=check_compose_options,
                             check_arg=check_composed)


def param_groups(model) -> dict[str, int]:
    """Parameter counts: vision tower, projector/connector, language model (incl. embeddings)."""
    from .components import SKIP_OWNERS, VISION_OWNERS

    out = {"vision": 0, "projector": 0, "language": 0}
    for n, p in model.named_parameters():
        parts = n.split(".")
        key = ("projector" if any(x in SKIP_OWNERS for x in parts) else
               "vision" if any(x in VISION_OWNERS for x in parts) else "language")
        out[key] += p.numel()
    return out


# ---------------------------------------------------------------- loading
def load_vlm(path: str | Path, dtype: str = "float32"):
    """(model, processor) from a checkpoint directory (``AutoModelForImageTextToText`` + ``AutoProcessor``)."""
    import transformers as tf

    if not (Path(path) / "config.json").exists():
        raise VLMError(f"model directory {path} has no config.json; was it prepared (python -m grades.vlm prepare)?")
    proc = tf.AutoProcessor.from_pretrained(str(path))
    model = tf.AutoModelForImageTextToText.from_pretrained(str(path), dtype=getattr(torch, dtype))
    tok = proc.tokenizer
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return model, proc


# ------------------------------------------------------------------- data
def image_token(processor) -> str:
    tok = getattr(processor, "image_token", None)
    if not isinstance(tok, str):
        raise VLMError(f"{type(processor).__name__} has no image_token; not a supported VLM processor")
    return tok


def format_prompt(ex: dict, processor=None, chat: bool = False) -> str:
    """``<image>Q: {context} {question}\\nA:`` (the text prompt of :func:`grades.data.format_prompt`
    with the processor's image placeholder in front), or with ``chat`` the processor's chat
    template around one user turn ``[image, context + question]`` with the generation prompt
    (instruct VLMs; the form lm-eval's ``--apply_chat_template`` evaluates)."""
    ctx = ex.get("context") or ""
    if chat:
        if processor is None or not getattr(processor, "chat_template", None):
            raise VLMError(f"data.prompt = chat: {type(processor).__name__} has no chat template; use prompt: plain")
        msg = [{"role": "user", "content": [{"type": "image"},
                                            {"type": "text", "text": (ctx + " " if ctx else "") + ex["question"]}]}]
        return processor.apply_chat_template(msg, add_generation_prompt=True, tokenize=False)
    text = f"Q: {ctx + ' ' if ctx else ''}{ex['question']}\nA:"
    return (image_token(processor) if processor is not None else "") + text


def format_target(ex: dict, chat: bool = False) -> str:
    """The text trained on: ``" " + answer`` (after ``A:``); with ``chat`` the bare answer."""
    ans = ex["choices"][ex["label"]] if "choices" in ex else ex["answer"]
    return ans if chat else " " + ans


def open_image(ex: dict):
    from PIL import Image

    path = ex.get("image_path") or ex.get("image")
    if path is None:
        raise VLMError(f"example {ex.get('id')!r} has no image (expected 'image_path'; read rows with "
                       f"grades.data.shapes.load_examples)")
    try:
        with Image.open(path) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise VLMError(f"example {ex.get('id')!r}: image file {path} does not exist") from None


def encode_prompt(processor, ex: dict, image=None, chat: bool = False) -> tuple[list[int], dict[str, torch.Tensor]]:
    """Prompt token ids (image placeholder expanded by the processor) and the image tensors."""
    image = image if image is not None else open_image(ex)
    text = format_prompt(ex, processor, chat)
    enc = processor(text=[text], images=[[image]], return_tensors="pt", **({"add_special_tokens": False} if chat else {}))
    ids = enc["input_ids"][0].tolist()
    extras = {k: v for k, v in enc.items() if k not in IMAGE_KEYS_SKIP and torch.is_tensor(v)}
    return ids, extras


def encode_example(i: int, ex: dict, processor, seq_len: int | None = None, loss_on: str = "answer",
                   too_long: str = "truncate", target=None, where: str = "data", prompt=None,
                   chat: bool = False) -> tuple[dict, bool]:
    """One row -> (training item ``{"input_ids", "labels", "extras"}``, whether it was truncated).

    ``target(ex)`` gives the text trained on (default :func:`format_target`); eos is appended.
    Image tokens are never cut: an item longer than ``seq_len`` loses the end of its
    target (``too_long="truncate"``) or raises (``"error"``)."""
    from .data import DataError

    tok = processor.tokenizer
    eos = tok.eos_token_id
    p, extras = encode_prompt(processor, ex if prompt is None else {**ex, "question": prompt(ex)}, chat=chat)
    text = target(ex) if target is not None else format_target(ex, chat)
    t = tok(text, add_special_tokens=False)["input_ids"] + ([eos] if eos is not None else [])
    cut = False
    if seq_len is not None and len(p) + len(t) > seq_len:
        if too_long == "error" or len(p) >= seq_len:
            raise DataError(f"{where}: example {i} (id {ex.get('id')!r}) has {len(p) + len(t)} tokens "
                            f"({len(p)} in the prompt with its image tokens), more than seq_len={seq_len}; "
                            f"raise seq_len")
        cut = True
        t = t[: seq_len - len(p)]
    labels = ([-100] * len(p) if loss_on == "answer" else list(p)) + t
    return {"input_ids": p + t, "labels": labels, "extras": extras}, cut


def encode_examples(examples: list[dict], processor, seq_len: int | None = None, loss_on: str = "answer",
                    too_long: str = "truncate", target=None, where: str = "data",
                    prompt=None, chat: bool = False) -> tuple[list[dict], int]:
    """Encode every row up front (:func:`encode_example`). Returns (items, n_truncated)."""
    items, truncated = [], 0
    for i, ex in enumerate(examples):
        item, cut = encode_example(i, ex, processor, seq_len, loss_on, too_long, target, where, prompt, chat)
        items.append(item)
        truncated += cut
    return items, truncated


class LazyItems:
    """Rows encoded when a batch draws them (``data.encode: lazy``): the pictures' tensors of a
    large image dataset never sit in memory all at once. Indexable like the list of
    :func:`encode_examples`; ``truncated`` counts the truncated items encoded so far."""

    def __init__(self, rows: list[dict], processor, **kw) -> None:
        self.rows, self.processor, self.kw = rows, processor, kw
        self.truncated = 0

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        item, cut = encode_example(i, self.rows[i], self.processor, **self.kw)
        self.truncated += cut
        return item


def _pad_cat(tensors: list[torch.Tensor]) -> torch.Tensor:
    """Concatenate along dim 0, zero-padding any other dim that differs."""
    shape = [max(t.shape[d] for t in tensors) for d in range(tensors[0].dim())]
    if all(list(t.shape[1:]) == shape[1:] for t in tensors):
        return torch.cat(tensors, 0)
    out = []
    for t in tensors:
        pad = []
        for d in reversed(range(1, t.dim())):
            pad += [0, shape[d] - t.shape[d]]
        out.append(torch.nn.functional.pad(t, pad))
    return torch.cat(out, 0)


def collate_vlm(items: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids`` / ``labels`` / ``attention_mask`` + concatenated image tensors."""
    n = max(len(it["input_ids"]) for it in items)
    ids = torch.full((len(items), n), pad_id, dtype=torch.long)
    lab = torch.full((len(items), n), -100, dtype=torch.long)
    att = torch.zeros((len(items), n), dtype=torch.long)
    for i, it in enumerate(items):
        L = len(it["input_ids"])
        ids[i, :L] = torch.tensor(it["input_ids"])
        lab[i, :L] = torch.tensor(it["labels"])
        att[i, :L] = 1
    batch = {"input_ids": ids, "labels": lab, "attention_mask": att}
    for k in items[0]["extras"]:
        vals = [it["extras"][k] for it in items]
        if k in SEQ_KEYS:
            t = torch.zeros((len(items), n), dtype=vals[0].dtype)
            for i, v in enumerate(vals):
                t[i, : v.shape[-1]] = v[0]
            batch[k] = t
        else:
            batch[k] = _pad_cat(vals)
    return batch


class VLMBatchStream:
    """Endless seeded shuffled batches of encoded items (reshuffled each epoch).

    Same interface as :class:`grades.train.BatchStream` (``next``, ``state_dict``,
    ``load_state_dict``, ``epoch``), so the training loop and its checkpoints use either."""

    def __init__(self, items: list[dict], batch_size: int, pad_id: int, seed: int) -> None:
        self.items, self.bs, self.pad = items, batch_size, pad_id
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.epoch = 0

    def next(self) -> dict[str, torch.Tensor]:
        if len(self.order) < self.bs:
            self.order += torch.randperm(len(self.items), generator=self.gen).tolist()
            self.epoch += 1
        take, self.order = self.order[: self.bs], self.order[self.bs:]
        return collate_vlm([self.items[i] for i in take], self.pad)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "order": list(self.order), "epoch": self.epoch}

    def load_state_dict(self, s: dict) -> None:
        self.gen.set_state(s["gen"])
        self.order, self.epoch = list(s["order"]), s["epoch"]


def vlm_batches(items: list[dict], batch_size: int, pad_id: int) -> list[dict[str, torch.Tensor]]:
    """Fixed batches in order (validation)."""
    return [collate_vlm(items[i: i + batch_size], pad_id) for i in range(0, len(items), batch_size)]


def pad_id(processor) -> int:
    tok = processor.tokenizer
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


# --------------------------------------------------------------- training
def train_steps(model, stream, steps: int, lr: float, *, warmup: int | None = None, max_grad_norm: float = 1.0,
                weight_decay: float = 0.0, log_every: int = 25, desc: str = "train") -> dict:
    """A plain AdamW loop with linear warm-up and cosine decay (alignment, tests, measurements)."""
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    w = max(1, steps // 20) if warmup is None else max(1, warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / w) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    losses = []
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        loss = model(**stream.next()).loss
        loss.backward()
        if max_grad_norm:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if step % log_every == 0 or step in (1, steps):
            losses.append((step, round(loss.item(), 4)))
    model.eval()
    return {"steps": steps, "loss": losses, "time_s": round(time.perf_counter() - t0, 2)}


def describe(ex: dict) -> str:
    """Alignment target: how many shapes, then the caption, e.g. ``" two shapes: a red circle at
    top left and a blue square at bottom right"`` (the caption names one ``... at <cell>``
    per shape)."""
    from .data.shapes import NUMBERS

    cap = ex["caption"]
    n = cap.count(" at ")
    if not 1 <= n <= len(NUMBERS):
        return " " + cap
    return f" {NUMBERS[n - 1]} shape{'s' if n > 1 else ''}: {cap}"


def align_pretrain(model, processor, examples: list[dict], steps: int, batch_size: int = 16, lr: float = 2e-3,
                   seed: int = 0) -> dict:
    """Caption pre-training (all weights): ``<image>Q: Describe the picture.\\nA: {description}``.

    Uses the ``caption`` field of image rows (:mod:`grades.data.shapes`), prefixed by the
    number of shapes (:func:`describe`). It teaches the vision tower and connector to
    describe pictures, never in the question format of the fine-tuning task."""
    rows = [ex for ex in examples if ex.get("caption")]
    if not rows:
        raise VLMError("alignment pre-training needs rows with a 'caption' field (synthetic:shapes)")
    items, _ = encode_examples(rows, processor, target=describe, prompt=lambda ex: "Describe the picture.")
    stream = VLMBatchStream(items, batch_size, pad_id(processor), seed)
    return train_steps(model, stream, steps, lr, desc="align")


# ------------------------------------------------------- grades.train glue
def train_inputs(cfg: dict, model_dir: str | Path, data_dir: str | Path, needs_validation: bool) -> dict:
    """What :func:`grades.train.run` needs for a VLM run config, in the text path's shape.

    Loads ``(model, processor)`` (:func:`load_vlm`), expands ``@language`` / ``@vision`` in
    ``lora.targets`` and wraps the model with LoRA (``mode: lora``), encodes the train
    split into a :class:`VLMBatchStream` (image rows of :mod:`grades.data.shapes`: the
    processor expands the image placeholder; labels only on the answer by default) and,
    when the method needs it, the validation split into fixed batches.

    Returns ``{"model", "saver", "stream", "val_batches", "n_train", "truncated",
    "truncated_validation", "record"}``; ``saver`` is the processor (its
    ``save_pretrained`` writes tokenizer + image processor next to the weights);
    ``record`` goes into train.json (``modality: vision-language``, the expanded LoRA
    targets, parameters per part, tracked matrices per tower)."""
    from .data.shapes import load_examples
    from .models import apply_lora

    model, proc = load_vlm(model_dir, cfg["model"]["dtype"])
    targets = None
    if cfg["mode"] == "lora":
        targets = expand_lora_targets(model, cfg["lora"]["targets"])
        model = apply_lora(model, {**cfg["lora"], "targets": targets})
    model.train()
    d = cfg["data"]
    pid = pad_id(proc)
    rows = load_examples(data_dir, d["train_split"])
    chat = d.get("prompt", "plain") == "chat"  # no schema default: run.yaml of other runs stays as it was
    kw = {"seq_len": cfg["seq_len"], "loss_on": d["loss_on"], "too_long": d["too_long"],
          "where": f"{data_dir}/{d['train_split']}", "chat": chat}
    if d.get("encode", "eager") == "lazy":
        items, n_trunc = LazyItems(rows, proc, **kw), None  # counted as batches are drawn
    else:
        items, n_trunc = encode_examples(rows, proc, **kw)
    stream = VLMBatchStream(items, cfg["batch_size"], pid, cfg["seed"])
    val_batches: list[dict] = []
    n_val_trunc = 0
    if needs_validation:
        vrows = load_examples(data_dir, d["validation_split"])[: cfg["val_limit"] or None]
        vitems, n_val_trunc = encode_examples(vrows, proc, cfg["seq_len"], d["loss_on"], "truncate", chat=chat)
        val_batches = vlm_batches(vitems, cfg["val_batch_size"], pid)
    from .components import discover_components

    comps = discover_components(model)
    record = {"modality": "vision-language", "lora_targets": targets, "params_by_part": param_groups(model),
              "components_by_tower": {t: sum(c.tower == t for c in comps) for t in ("language", "vision")}}
    return {"model": model, "saver": proc, "stream": stream, "val_batches": val_batches, "n_train": len(items),
            "truncated": n_trunc, "truncated_validation": n_val_trunc, "record": record}


# ------------------------------------------------------------------ LoRA
def expand_lora_targets(model, targets: list[str]) -> list[str]:
    """LoRA ``target_modules`` with ``@language`` / ``@vision`` expanded to module paths.

    Each ``@tower`` entry becomes the full path of every projection GradES tracks in
    that tower (peft matches a full path exactly), so adapters sit on exactly those
    matrices; the projector/connector and patch embeddings get none. Other entries
    (e.g. ``q_proj``) are kept; peft matches them as name suffixes anywhere in the
    model, vision tower included (see tests/test_vlm_components.py for what each
    family picks up)."""
    from .components import LANGUAGE, VISION, discover_components

    out: list[str] = []
    for t in targets:
        if t.startswith("@"):
            tower = t[1:]
            if tower not in (LANGUAGE, VISION):
                raise ConfigError(f"lora.targets: {t!r}: unknown tower; use @language or @vision")
            comps = discover_components(model, trainable_only=False, towers=(tower,))
            out += [c.name for c in comps if c.name not in out]
        elif t not in out:
            out.append(t)
    return out


# ---------------------------------------------------------------- scoring
@torch.no_grad()
def score_multiple_choice(model, processor, examples: list[dict], batch_size: int = 16,
                          progress: bool = False) -> list[dict]:
    """Per example: log-likelihood of ``" " + choice`` after image + prompt, for every choice.

    Returns ``[{"id", "label", "loglikelihoods", "pred", "acc", "pred_norm", "acc_norm", "type"}]``."""
    tok = processor.tokenizer
    pid = pad_id(processor)
    was = model.training
    model.eval()
    rows: list[tuple[int, int, list[int], int, dict]] = []  # (example, choice, ids, n_prompt, extras)
    for i, ex in enumerate(examples):
        p, extras = encode_prompt(processor, ex)
        for j, ch in enumerate(ex["choices"]):
            c = tok(" " + ch, add_special_tokens=False)["input_ids"]
            rows.append((i, j, p + c, len(p), extras))
    lls = [[0.0] * len(ex["choices"]) for ex in examples]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rows), desc="score", file=sys.stderr)
    for s in range(0, len(rows), batch_size):
        chunk = rows[s: s + batch_size]
        items = [{"input_ids": ids, "labels": ids, "extras": ex} for _, _, ids, _, ex in chunk]
        b = collate_vlm(items, pid)
        b.pop("labels")
        logp = torch.log_softmax(model(**b).logits.float(), dim=-1)
        for r, (i, j, ids, n_p, _) in enumerate(chunk):
            tgt = torch.tensor(ids[n_p:])
            pos = torch.arange(n_p - 1, len(ids) - 1)
            lls[i][j] = float(logp[r, pos, tgt].sum())
        if bar:
            bar.update(len(chunk))
    if bar:
        bar.close()
    model.train(was)
    out = []
    for ex, ll in zip(examples, lls):
        pred = max(range(len(ll)), key=ll.__getitem__)
        norm = [v / max(1, len(c)) for v, c in zip(ll, ex["choices"])]
        pred_n = max(range(len(norm)), key=norm.__getitem__)
        out.append({"id": ex.get("id"), "type": ex.get("type"), "label": ex["label"], "loglikelihoods": ll,
                    "pred": pred, "acc": float(pred == ex["label"]), "pred_norm": pred_n,
                    "acc_norm": float(pred_n == ex["label"])})
    return out


def mean_stderr(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and lm-eval's stderr of a mean (sample std, ddof=1, over sqrt(n)); None when undefined."""
    n = len(values)
    if n == 0:
        return None, None
    m = sum(values) / n
    if n < 2:
        return m, None
    var = sum((v - m) ** 2 for v in values) / (n - 1)
    return m, math.sqrt(var / n)


def summarize_scores(scores: list[dict], n_total: int | None = None, data: str | None = None) -> dict:
    """A task entry of eval.json (the fields of :func:`grades.evaluate._task_summary`)."""
    acc, se = mean_stderr([s["acc"] for s in scores])
    accn, sen = mean_stderr([s["acc_norm"] for s in scores])
    kinds = [len(s["loglikelihoods"]) for s in scores]
    chance = sum(1 / k for k in kinds) / len(kinds) if kinds else None
    rng = [min(kinds), max(kinds)] if kinds else None
    by_type: dict[str, dict] = {}
    for t in sorted({s["type"] for s in scores if s.get("type")}):
        a, e = mean_stderr([s["acc"] for s in scores if s.get("type") == t])
        by_type[t] = {"acc": a, "acc_stderr": e, "n": sum(1 for s in scores if s.get("type") == t)}
    return {"acc": acc, "acc_stderr": se, "acc_norm": accn, "acc_norm_stderr": sen, "n": len(scores),
            "n_total": n_total if n_total is not None else len(scores), "version": 1.0, "num_fewshot": 0,
            "n_choices": (kinds[0] if rng and rng[0] == rng[1] else (1 / chance if chance else None)),
            "n_choices_range": rng, "chance_acc": chance, "data": data, "by_type": by_type}


def lm_eval_tasks(tasks: list[str]) -> list[str]:
    """The local tasks that go through lm-eval: those with a template in ``evals/tasks``
    (e.g. ``shapes_gen``, generate_until with images, rendered for a prepared dataset)."""
    from .evaluate import local_tasks

    templates = local_tasks()
    return [t for t in tasks if t in templates]


def hub_tasks() -> dict[str, Path]:
    """``{task: yaml}`` of :func:`hub_tasks_dir` (their data comes from the HF cache)."""
    from .evaluate import local_tasks

    d = hub_tasks_dir()
    return local_tasks(d) if d.is_dir() else {}


def split_vlm_tasks(names: list[str]) -> tuple[list[str], list[str], list[str]]:
    """(multiple choice scored here, local lm-eval templates, Hub benchmarks); unknown names raise."""
    hub = hub_tasks()
    gen = lm_eval_tasks([t for t in names if t not in hub])
    hubs = [t for t in names if t in hub]
    mc = [t for t in names if t not in gen and t not in hubs]
    if len(mc) > 1:
        raise VLMError(f"one multiple-choice task per evaluation, got {mc}; the benchmarks over Hub data are "
                       f"{sorted(hub)} (evals/tasks/hub)")
    return mc, gen, hubs


def _task_entry(task: str, res: dict, backend: str) -> dict:
    """A generation task of lm-eval's results -> its eval.json entry: every metric with its
    stderr, plus ``metric`` (the first of the task's metric_list) and ``score`` (its value)."""
    from .evaluate import to_number

    r = res["results"][task]
    vals: dict[str, Any] = {}
    for k, v in r.items():
        name, sep, _filter = k.partition(",")
        if sep and name not in vals:
            vals[name] = to_number(v)
    metrics = [m["metric"] for m in (res.get("configs", {}).get(task, {}).get("metric_list") or [])
               if isinstance(m.get("metric"), str)]
    primary = next((m for m in metrics if m in vals), None) or next(
        (k for k in vals if not k.endswith("_stderr")), None)
    ns = res.get("n-samples", {}).get(task, {})
    return {**vals, "metric": primary, "score": vals.get(primary), "score_stderr": vals.get(f"{primary}_stderr"),
            "n": int(ns.get("effective") or 0) or None, "n_total": int(ns.get("original") or 0) or None,
            "version": res.get("versions", {}).get(task), "num_fewshot": 0, "output_type": "generate_until",
            "backend": f"lm-eval {backend}"}


def lm_eval_kwargs(model_dir: str | Path, tasks: list[str], *, adapter: str | Path | None = None,
                   backend: str = "hf", limit: int | None = None, batch_size: int = 16, dtype: str = "float32",
                   device: str = "cpu", seed: int = 0, apply_chat_template: bool = False,
                   vllm: dict | None = None) -> dict:
    """``lm_eval.simple_evaluate`` keyword arguments for a VLM (pure; the task manager is set by
    the caller): :func:`grades.evaluate.build_lm_eval_args` with ``backend``'s multimodal model."""
    from .evaluate import MULTIMODAL_BACKENDS, build_lm_eval_args

    mm = MULTIMODAL_BACKENDS.get(backend)
    if mm is None:
        raise VLMError(f"backend {backend!r}: choose one of {list(MULTIMODAL_BACKENDS)}")
    v = vllm or {}
    kw = build_lm_eval_args(model=model_dir, tasks=tasks, adapter=Path(adapter).expanduser().resolve() if adapter
                            else None, backend=mm, batch_size=batch_size, dtype=dtype, device=device, limit=limit,
                            seed=seed, gpu_memory_utilization=v.get("gpu_memory_utilization", 0.9),
                            tensor_parallel_size=v.get("tensor_parallel_size", 1),
                            max_model_len=v.get("max_model_len"), apply_chat_template=apply_chat_template)
    return kw


def run_lm_eval(model_dir: Path, tasks: list[str], include: Path, *, adapter: str | Path | None = None,
                backend: str = "hf", limit: int | None = None, batch_size: int = 16, dtype: str = "float32",
                device: str = "cpu", seed: int = 0, apply_chat_template: bool = False,
                vllm: dict | None = None, samples: list | None = None) -> dict[str, dict]:
    """Generation tasks through lm-eval's multimodal model of ``backend`` (``hf`` ->
    hf-multimodal with the adapter as ``peft=``, ``vllm`` -> vllm-vlm, adapter merged first
    by the caller) -> ``{task: eval.json entry}`` (:func:`_task_entry`). ``samples``, when
    given, receives one record per question (id, type, response, filtered, target, metrics)."""
    import lm_eval

    from .evaluate import task_manager

    kw = lm_eval_kwargs(model_dir, tasks, adapter=adapter, backend=backend, limit=limit, batch_size=batch_size,
                        dtype=dtype, device=device, seed=seed, apply_chat_template=apply_chat_template, vllm=vllm)
    kw.update(task_manager=task_manager(include, False), log_samples=samples is not None)
    res = lm_eval.simple_evaluate(**kw)
    if samples is not None:
        for t in tasks:
            metrics = [m["metric"] for m in res["configs"][t].get("metric_list") or []]
            for x in res["samples"][t]:
                samples.append({"task": t, "id": x["doc"].get("id", x.get("doc_id")), "type": x["doc"].get("type"),
                                "response": x["resps"][0][0], "filtered": x["filtered_resps"][0],
                                "target": x["target"], **{m: x.get(m) for m in metrics if m in x}})
    return {t: _task_entry(t, res, kw["model"]) for t in tasks}


def generate_with_lm_eval(model_dir: Path, data_dir: Path, task: str, *, adapter: str | Path | None = None,
                          split: str = "test", limit: int | None = None, batch_size: int = 16,
                          dtype: str = "float32", seed: int = 0, samples: list | None = None, **lm_kw) -> dict:
    """One local generation task (a template of evals/tasks, rendered for ``data_dir`` by
    :func:`grades.evaluate.render_tasks`) through lm-eval -> its eval.json entry
    (:func:`run_lm_eval`; for ``shapes_gen`` the metric is ``exact_match`` of the short answer)."""
    import tempfile

    from .evaluate import render_tasks

    if split != "test":
        raise VLMError(f"lm-eval task {task!r} is evaluated on its test split, not {split!r}")
    with tempfile.TemporaryDirectory(prefix="grades-vlm-lm-eval-") as tmp:
        inc = render_tasks({task: data_dir}, Path(tmp) / "tasks", cache_dir=Path(tmp) / "cache")
        out = run_lm_eval(model_dir, [task], inc, adapter=adapter, limit=limit, batch_size=batch_size, dtype=dtype,
                          seed=seed, samples=samples, **lm_kw)[task]
    return {**out, "data": str(data_dir)}


def merge_adapter(model: str | Path, adapter: str | Path, out: str | Path, dtype: str = "float32") -> Path:
    """Merge a VLM's LoRA adapter into its base model; save model + processor into ``out``
    (the ``vllm`` path: vLLM applies LoRA to the language model only, never the vision tower).
    :func:`grades.evaluate.merge_adapter` with the VLM loader."""
    from .evaluate import merge_adapter as merge

    return merge(model, Path(adapter).expanduser().resolve(), out, dtype, load=load_vlm)


def _version(pkg: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


def evaluate_vlm(model: str | Path, data: str | Path | None = None, *, out: str | Path | None = None,
                 adapter: str | Path | None = None, task: str = "shapes_mc", split: str = "test",
                 limit: int | None = None, batch_size: int = 16, dtype: str = "float32",
                 threads: int | None = None, seed: int = 0, samples_out: str | Path | None = None,
                 progress: bool = False, backend: str = "hf", device: str = "cpu",
                 apply_chat_template: bool = False, vllm: dict | None = None) -> dict:
    """Evaluate a (LoRA-adapted) VLM -> eval.json with the structure of :mod:`grades.evaluate`.

    Three kinds of task (:func:`split_vlm_tasks`), any mix, one eval.json:

    * a multiple-choice task over a prepared image dataset (``shapes_mc``), scored here
      (log-likelihood of each choice; lm-eval's hf-multimodal cannot): ``acc``,
      ``acc_norm``, chance, ``by_type``;
    * local lm-eval templates over the same dataset (``shapes_gen``), and
    * benchmarks over Hub data (evals/tasks/hub: ``gqa``, ``vqav2``, ``coco_caption``,
      ``mmstar_*``), both through lm-eval (:func:`run_lm_eval`) with ``backend``'s
      multimodal model; entries carry every metric plus ``metric`` / ``score``.

    ``data`` (the prepared dataset) is needed only by the first two. With ``backend="vllm"``
    an adapter is merged into the model first (:func:`merge_adapter`); eval.json records
    ``lora: "merged"``."""
    import tempfile

    t_start = time.perf_counter()
    model_dir = Path(model).expanduser().resolve()
    if threads is not None and threads < 1:
        raise VLMError(f"threads must be >= 1, got {threads}")
    if limit is not None and limit < 1:
        raise VLMError(f"limit must be >= 1, got {limit}")
    names = [t.strip() for t in (task.split(",") if isinstance(task, str) else task) if t.strip()]
    if not names:
        raise VLMError("no task given")
    mc, gen, hub = split_vlm_tasks(names)
    if (mc or gen) and data is None:
        raise VLMError(f"task(s) {mc + gen} read a prepared image dataset: pass --data DIR")
    if backend == "vllm" and mc:
        raise VLMError(f"the multiple-choice task {mc[0]} is scored with transformers (backend hf), not vllm")
    ddir = Path(data).expanduser().resolve() if data is not None else None
    examples: list[dict] = []
    n_total = None
    if mc:
        from .data.shapes import load_examples

        examples = load_examples(ddir, split)
        n_total = len(examples)
        examples = examples[:limit] if limit else examples
    lm_kw = {"backend": backend, "device": device, "apply_chat_template": apply_chat_template, "vllm": vllm}
    prev = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    net = proc = None
    lora_mode = None if adapter is None else ("merged" if backend == "vllm" else "adapter")
    try:
        with tempfile.TemporaryDirectory(prefix="grades-vlm-merged-") as tmp:
            eval_model, eval_adapter = model_dir, adapter
            if adapter is not None and backend == "vllm":
                eval_model, eval_adapter = merge_adapter(model_dir, adapter, Path(tmp) / "model", dtype), None
            torch.manual_seed(seed)
            scores: list[dict] = []
            t0 = time.perf_counter()
            if mc:
                net, proc = load_vlm(model_dir, dtype)
                if adapter is not None:
                    from peft import PeftModel

                    net = PeftModel.from_pretrained(net, str(Path(adapter).expanduser().resolve()))
                scores = score_multiple_choice(net, proc, examples, batch_size=batch_size, progress=progress)
            score_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            gen_samples: list[dict] | None = [] if samples_out is not None else None
            results = {t: generate_with_lm_eval(eval_model, ddir, t, adapter=eval_adapter, split=split, limit=limit,
                                                batch_size=batch_size, dtype=dtype, seed=seed, samples=gen_samples,
                                                **lm_kw) for t in gen}
            if hub:
                results.update(run_lm_eval(eval_model, hub, hub_tasks_dir(), adapter=eval_adapter, limit=limit,
                                           batch_size=batch_size, dtype=dtype, seed=seed, samples=gen_samples,
                                           **lm_kw))
            lm_eval_s = time.perf_counter() - t0 if gen or hub else None
    finally:
        torch.set_num_threads(prev)
    n_params = sum(p.numel() for p in net.parameters()) if net is not None else _count_params(model_dir)
    eval_tokens = eval_flops = None
    if mc:
        tok = proc.tokenizer
        lengths = []  # prompt (with image tokens) + choice, per request, as evaluate._count_tokens does
        for ex in examples:
            n_prompt = len(encode_prompt(proc, ex)[0])
            lengths += [n_prompt + len(tok(" " + c, add_special_tokens=False)["input_ids"]) for c in ex["choices"]]
        eval_tokens = sum(lengths)
        try:  # analytic forward FLOPs of every request (one picture each, padding not counted)
            from .flops import build_plan

            plan = build_plan(net)
            eval_flops = float(sum(plan.evaluate(1, n, 1).forward for n in lengths))
        except (NotImplementedError, ValueError):
            eval_flops = float(2 * n_params * eval_tokens)  # the rough estimate of grades.evaluate
    summary = {
        "status": "ok",
        "tasks": {**({mc[0]: summarize_scores(scores, n_total, str(ddir))} if mc else {}), **results},
        "backend": "grades-vlm", "lm_eval_backend": backend if gen or hub else None, "model": str(model_dir),
        "adapter": str(Path(adapter).resolve()) if adapter else None, "lora": lora_mode, "tokenizer": None,
        "batch_size": batch_size, "dtype": dtype, "device": device if backend == "hf" else None, "limit": limit,
        "num_fewshot": 0, "seed": seed, "split": split, "apply_chat_template": apply_chat_template,
        **({"vllm": vllm} if backend == "vllm" else {}),
        "lm_eval_version": _version("lm_eval") if gen or hub else None,
        "transformers_version": _version("transformers"), "peft_version": _version("peft"),
        "torch_version": _version("torch"), "model_num_parameters": n_params, "eval_tokens": eval_tokens,
        "eval_flops": eval_flops, "threads": threads,
        "lm_eval_time_s": round(lm_eval_s, 3) if lm_eval_s is not None else None, "score_time_s": round(score_s, 3),
        "wall_time_s": round(time.perf_counter() - t_start, 3),
    }
    if samples_out is not None:
        recs = [{"task": mc[0], **s} for s in scores] + (gen_samples or [])
        atomic_write_text(samples_out, "".join(json.dumps(r) + "\n" for r in recs))
    if out is not None:
        atomic_write_json(out, summary)
    return summary


def _count_params(model_dir: Path) -> int | None:
    """Parameters of a saved checkpoint from its safetensors headers (no weights loaded)."""
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover
        return None
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    n = 0
    for f in files:
        with safe_open(str(f), "pt") as st:
            for k in st.keys():
                n += math.prod(st.get_slice(k).get_shape())
    return n


# -------------------------------------------------------------------- CLI
def evaluate_kwargs(args: argparse.Namespace) -> dict:
    """Keyword arguments of :func:`evaluate_vlm` from the ``evaluate`` command line (pure)."""
    vllm = None
    if args.backend == "vllm":
        vllm = {"tensor_parallel_size": args.tensor_parallel_size,
                "gpu_memory_utilization": args.gpu_memory_utilization, "max_model_len": args.max_model_len}
    return {"out": args.out, "adapter": args.adapter, "task": args.task, "split": args.split, "limit": args.limit,
            "batch_size": args.batch_size, "dtype": args.dtype, "threads": args.threads,
            "samples_out": args.samples_out, "backend": args.backend, "device": args.device, "seed": args.seed,
            "apply_chat_template": args.apply_chat_template, "vllm": vllm}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m grades.vlm", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare", help="build a tiny VLM checkpoint (optionally caption-aligned)")
    p.add_argument("--out", required=True)
    p.add_argument("--data", default="", help="prepared image dataset dir (tokenizer texts, alignment captions)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="an option (repeatable)")
    e = sub.add_parser("evaluate", help="multiple choice (scored here) and generation tasks (lm-eval) -> eval.json")
    e.add_argument("--model", required=True)
    e.add_argument("--adapter")
    e.add_argument("--data", help="prepared image dataset dir (needed by its multiple-choice / local tasks)")
    e.add_argument("--out")
    e.add_argument("--task", default="shapes_mc",
                   help="comma-separated; the multiple-choice one (shapes_mc) is scored here, templates in "
                        "evals/tasks (shapes_gen) and the benchmarks of evals/tasks/hub (gqa, vqav2, coco_caption, "
                        "mmstar_*) run through lm-eval's multimodal backend")
    e.add_argument("--split", default="test")
    e.add_argument("--limit", type=int)
    e.add_argument("--batch-size", type=int, default=16)
    e.add_argument("--dtype", default="float32")
    e.add_argument("--threads", type=int)
    e.add_argument("--samples-out")
    e.add_argument("--backend", choices=["hf", "vllm"], default="hf",
                   help="lm-eval's multimodal model for the generation tasks: hf -> hf-multimodal, vllm -> vllm-vlm")
    e.add_argument("--device", default="cpu", help="hf backend: cpu or cuda")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--apply-chat-template", action="store_true", help="prompts through the model's chat template")
    e.add_argument("--tensor-parallel-size", type=int, default=1, help="vllm only")
    e.add_argument("--gpu-memory-utilization", type=float, default=0.9, help="vllm only")
    e.add_argument("--max-model-len", type=int, help="vllm only")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from .data import DataError

    try:
        if args.cmd == "prepare":
            from .overrides import apply_overrides

            opts = apply_overrides({"data": args.data} if args.data else {}, args.set)
            out = prepare_tiny_vlm(args.out, **opts)
            info = json.loads((out / "grades_model.json").read_text())
            print(f"prepared a tiny {info['family']} VLM -> {out}: {info['params'] / 1e6:.2f}M parameters "
                  f"in {info['prepare_time_s']} s")
        else:
            s = evaluate_vlm(args.model, args.data, **evaluate_kwargs(args), progress=True)
            for name, t in s["tasks"].items():
                if "metric" not in t:  # the multiple-choice task scored here
                    print(f"{name}: acc {t['acc']:.4f} ± {t['acc_stderr'] or 0:.4f} (n={t['n']}, chance "
                          f"{t['chance_acc']:.3f})")
                else:
                    print(f"{name}: {t['metric']} {t['score']:.4f} ± {t['score_stderr'] or 0:.4f} "
                          f"(n={t['n']}, {t['backend']})")
    except (ConfigError, DataError, VLMError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
