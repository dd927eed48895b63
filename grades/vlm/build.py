"""The tiny VLM: its options, the model and tokenizer built in code, caption alignment, ``tiny-vlm:``.

**Family: Idefics3** (the architecture of SmolVLM-256M/500M-Instruct: a SigLIP-style
vision encoder with ``q/k/v/out_proj`` + ``fc1/fc2``, a pixel-shuffle connector, a
Llama text model).  Chosen because its processor works on CPU without torchvision in
transformers 5.x: ``Idefics3Processor`` has no video processor, and
``Idefics3ImageProcessorPil`` needs only PIL + numpy.  The Qwen2-VL / Qwen2.5-VL /
Qwen3-VL / SmolVLM(2) processors all declare a ``video_processor``, and constructing
them without torchvision fails (``BaseVideoProcessor`` is unavailable), so neither
``AutoProcessor`` nor a hand-built processor works for those families here; their
*models* still build and are covered by the discovery tests.

:func:`build_tiny_vlm` builds a randomly initialised Idefics3 from a config in code, its
byte-level BPE tokenizer trained locally (:func:`grades.models.tiny.train_tokenizer`);
:func:`prepare_tiny_vlm` / :func:`build_into` optionally *align* it first (caption
pre-training, :func:`align_pretrain`) and save a checkpoint directory that
``AutoModelForImageTextToText`` / ``AutoProcessor`` load. :data:`TINY_SOURCE` is the
``tiny-vlm:FAMILY`` model source of :data:`grades.models.SOURCES`.

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

import json
import math
import time
from pathlib import Path
from typing import Any

import torch

from ..config import ConfigError, closest
from ..io import atomic_dir
from ..models.source import ModelSource, check_typed_options
from .checkpoint import param_groups
from .encode import VLMBatchStream, encode_examples, format_prompt, pad_id
from .errors import VLMError

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


# ------------------------------------------------------------------ options
def check_options(options: dict) -> dict:
    """A tiny VLM's options over :data:`TINY_VLM_DEFAULTS`; a bad one raises ConfigError naming it."""
    out = check_typed_options("tiny VLM", options, TINY_VLM_DEFAULTS)
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
    from ..data import prepare_dataset

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
    from ..data import shapes

    words = [*shapes.COLOURS, *shapes.SHAPES, *shapes.CELLS, *shapes.NUMBERS]
    return [f"Q: What is it?\nA: {w}" for w in words] * 4


def build_tiny_vlm(options: dict | None = None, texts: list[str] | None = None):
    """(model, processor) of a randomly initialised tiny VLM (no weights downloaded)."""
    import transformers as tf

    from ..models.tiny import train_tokenizer

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
    with atomic_dir(out, owned_by="grades_model.json") as tmp:
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
        from ..data.shapes import load_examples

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


# -------------------------------------------------------------- alignment
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
    from ..data.shapes import NUMBERS

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


# ------------------------------------------------------------------ source
def check_family(arg: str, spec: str) -> None:
    if arg not in FAMILIES:
        raise ConfigError(f"model.source = {spec!r}: unknown tiny VLM family '{arg}'"
                          f"{closest(arg, FAMILIES)}; known: {list(FAMILIES)}")


#: the ``tiny-vlm:FAMILY`` model source (grades.models.SOURCES)
TINY_SOURCE = ModelSource(build=lambda family, o, out: build_into({**o, "family": family}, out),
                          check_options=check_options, check_arg=check_family)
