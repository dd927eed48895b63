"""VLM inputs: prompts, their encoding through the processor, and batches of them.

A row ``(image, question, answer)`` of :mod:`grades.data.shapes` becomes a training item:
the prompt ``<image>Q: {question}\\nA:`` (or, with ``chat``, the processor's chat template)
goes through ``processor(text=..., images=...)`` (the model's own image-token expansion),
the target ``" " + answer + eos`` is tokenized apart and appended, labels are -100 on the
prompt (``loss_on="answer"``), as in :func:`grades.train.tokenize_examples`.
:func:`encode_examples` encodes every row up front, :class:`LazyItems` when its batch draws
it (large image datasets). :func:`collate_vlm` pads items into a batch;
:class:`VLMBatchStream` draws endless shuffled batches, :func:`vlm_batches` fixed ones.
"""

from __future__ import annotations

import torch

from .errors import VLMError

IMAGE_KEYS_SKIP = ("input_ids", "attention_mask", "labels")
SEQ_KEYS = ("token_type_ids", "mm_token_type_ids")  # per-token extras some processors return (padded with 0)


# ---------------------------------------------------------------- prompts
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
    from ..data import DataError

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


# --------------------------------------------------------------- batches
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


def pad_cat(tensors: list[torch.Tensor]) -> torch.Tensor:
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
            batch[k] = pad_cat(vals)
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
