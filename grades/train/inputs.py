"""What a run trains on: its model and data resolved, examples tokenized into batches.

:func:`build_inputs` gives the model (LoRA-wrapped for ``mode: lora``), the object that
saves beside the weights (tokenizer or VLM processor), an endless seeded
:class:`BatchStream` of training batches and the fixed validation batches, for a
language model (:func:`text_inputs`) or a vision-language model
(:func:`grades.vlm.train_inputs`). :func:`validation_loss` scores the validation batches.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..data import DataError, format_prompt, format_target, load_split, prepare_dataset, resolve_local_data
from ..models import apply_lora, is_vlm_dir, load_model, prepare_model, resolve_local


def resolve_model(spec: dict) -> Path:
    """A prepared local checkpoint directory for the model spec."""
    local = resolve_local(spec["source"])
    if local is not None:
        return local
    return prepare_model(spec["source"], None, **spec.get("options", {}))


def resolve_data(spec: dict) -> Path:
    """A prepared local dataset directory for the data spec."""
    local = resolve_local_data(spec["source"])
    if local is not None:
        return local
    return prepare_dataset(spec["source"], None, **spec.get("options", {}))


def tokenize_examples(examples: list[dict], tokenizer, seq_len: int, loss_on: str, too_long: str,
                      where: str = "data") -> tuple[list[tuple[list[int], list[int]]], int]:
    """prompt + target -> (input_ids, labels); returns the pairs and how many were truncated."""
    out, truncated = [], 0
    eos = tokenizer.eos_token_id
    for i, ex in enumerate(examples):
        p = tokenizer(format_prompt(ex), add_special_tokens=False)["input_ids"]
        t = tokenizer(format_target(ex), add_special_tokens=False)["input_ids"]
        if eos is not None:
            t = t + [eos]
        if len(p) + len(t) > seq_len:
            if too_long == "error":
                raise DataError(f"{where}: example {i} (id {ex.get('id')!r}) has {len(p) + len(t)} tokens, "
                                f"more than seq_len={seq_len}; raise seq_len or set data.too_long: truncate")
            truncated += 1
            keep = max(1, seq_len - len(t))
            p = p[-keep:]  # keep the end of the prompt, next to the answer
            t = t[: seq_len - len(p)]
        ids = p + t
        labels = ([-100] * len(p) if loss_on == "answer" else list(p)) + list(t)
        out.append((ids, labels))
    return out, truncated


def collate(pairs, pad_id: int) -> dict[str, torch.Tensor]:
    """(input_ids, labels) pairs -> one right-padded batch (labels -100 on padding)."""
    n = max(len(ids) for ids, _ in pairs)
    ids = torch.full((len(pairs), n), pad_id, dtype=torch.long)
    lab = torch.full((len(pairs), n), -100, dtype=torch.long)
    att = torch.zeros((len(pairs), n), dtype=torch.long)
    for i, (x, y) in enumerate(pairs):
        ids[i, : len(x)] = torch.tensor(x)
        lab[i, : len(y)] = torch.tensor(y)
        att[i, : len(x)] = 1
    return {"input_ids": ids, "labels": lab, "attention_mask": att}


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on ``device`` (the same dict on the CPU)."""
    if device.type == "cpu":
        return batch
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


class BatchStream:
    """Endless seeded shuffled batches (reshuffled each epoch)."""

    def __init__(self, pairs, batch_size: int, pad_id: int, seed: int) -> None:
        self.pairs, self.bs, self.pad = pairs, batch_size, pad_id
        self.gen = torch.Generator().manual_seed(seed)
        self.order: list[int] = []
        self.epoch = 0

    def next(self) -> dict[str, torch.Tensor]:
        if len(self.order) < self.bs:
            self.order += torch.randperm(len(self.pairs), generator=self.gen).tolist()
            self.epoch += 1
        take, self.order = self.order[: self.bs], self.order[self.bs:]
        return collate([self.pairs[i] for i in take], self.pad)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "order": list(self.order), "epoch": self.epoch}

    def load_state_dict(self, s: dict) -> None:
        self.gen.set_state(s["gen"])
        self.order, self.epoch = list(s["order"]), s["epoch"]


def text_inputs(cfg: dict, model_dir: Path, data_dir: Path, needs_validation: bool) -> dict:
    """Model (LoRA-wrapped for ``mode: lora``), tokenizer, batch stream and validation
    batches of a language-model run (the VLM counterpart: :func:`vlm_inputs`)."""
    model, tokenizer = load_model(model_dir, dtype=cfg["model"]["dtype"])
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
        model.config.use_cache = False
        if cfg["mode"] == "lora":
            model.enable_input_require_grads()  # frozen embeddings: checkpointed blocks still need a grad path
    if cfg["mode"] == "lora":
        model = apply_lora(model, cfg["lora"])
    model.train()

    d = cfg["data"]
    train_ex = load_split(data_dir, d["train_split"])
    pairs, n_trunc = tokenize_examples(train_ex, tokenizer, cfg["seq_len"], d["loss_on"], d["too_long"],
                                       where=f"{data_dir}/{d['train_split']}")
    stream = BatchStream(pairs, cfg["batch_size"], tokenizer.pad_token_id, cfg["seed"])
    val_batches: list[dict] = []
    n_val_trunc = 0
    if needs_validation:
        val_ex = load_split(data_dir, d["validation_split"])[: cfg["val_limit"] or None]
        vpairs, n_val_trunc = tokenize_examples(val_ex, tokenizer, cfg["seq_len"], d["loss_on"], "truncate")
        vb = cfg["val_batch_size"]
        val_batches = [collate(vpairs[i: i + vb], tokenizer.pad_token_id) for i in range(0, len(vpairs), vb)]
    return {"model": model, "saver": tokenizer, "stream": stream, "val_batches": val_batches, "n_train": len(pairs),
            "truncated": n_trunc, "truncated_validation": n_val_trunc}


def vlm_inputs(cfg: dict, model_dir: Path, data_dir: Path, needs_validation: bool) -> dict:
    """The same for a vision-language model directory (config.json has a vision_config):
    processor instead of tokenizer, image batches, ``@language``/``@vision`` LoRA targets
    (:func:`grades.vlm.train_inputs`)."""
    from ..vlm import train_inputs

    return train_inputs(cfg, model_dir, data_dir, needs_validation)


def build_inputs(cfg: dict, model_dir: Path, data_dir: Path, needs_validation: bool) -> dict:
    """:func:`vlm_inputs` for a vision-language model directory, else :func:`text_inputs`."""
    inputs = vlm_inputs if is_vlm_dir(model_dir) else text_inputs
    return inputs(cfg, model_dir, data_dir, needs_validation)


@torch.no_grad()
def validation_loss(model, batches: list[dict]) -> float:
    """Mean loss per label token over the validation batches (the model's mode is kept)."""
    was = model.training
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        out = model(**b)
        n = int((b["labels"][:, 1:] != -100).sum())
        total += float(out.loss) * n
        count += n
    model.train(was)
    return total / max(1, count)
