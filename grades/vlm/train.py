"""What :func:`grades.train.run` needs to fine-tune a VLM: model, LoRA targets by tower, batches, record.

:func:`train_inputs` turns a run config into the training loop's inputs, in the text
path's shape; :func:`expand_lora_targets` expands ``@language`` / ``@vision`` in
``lora.targets`` to the exact module paths GradES tracks in that tower.
"""

from __future__ import annotations

from pathlib import Path

from ..config import ConfigError
from .checkpoint import load_vlm, param_groups
from .encode import LazyItems, VLMBatchStream, encode_examples, pad_id, vlm_batches


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
    from ..data.shapes import load_examples
    from ..models import apply_lora

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
    from ..components import discover_components

    comps = discover_components(model)
    record = {"modality": "vision-language", "lora_targets": targets, "params_by_part": param_groups(model),
              "components_by_tower": {t: sum(c.tower == t for c in comps) for t in ("language", "vision")}}
    return {"model": model, "saver": proc, "stream": stream, "val_batches": val_batches, "n_train": len(items),
            "truncated": n_trunc, "truncated_validation": n_val_trunc, "record": record}


def expand_lora_targets(model, targets: list[str]) -> list[str]:
    """LoRA ``target_modules`` with ``@language`` / ``@vision`` expanded to module paths.

    Each ``@tower`` entry becomes the full path of every projection GradES tracks in
    that tower (peft matches a full path exactly), so adapters sit on exactly those
    matrices; the projector/connector and patch embeddings get none. Other entries
    (e.g. ``q_proj``) are kept; peft matches them as name suffixes anywhere in the
    model, vision tower included (see tests/test_vlm_components.py for what each
    family picks up)."""
    from ..components import LANGUAGE, VISION, discover_components

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
