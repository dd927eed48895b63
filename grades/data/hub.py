"""``hf-dataset:ORG/NAME``: a Hugging Face Hub dataset turned into our JSONL splits.

Loaded with ``datasets.load_dataset(ORG/NAME, name=config, split=split,
revision=revision)``. Where the Hub is unreachable (compute nodes, CI) it works only
from the local HF datasets cache: run the prefetch step first (``python -m
grades.prefetch``, the workflow's ``prefetch`` target), then ``HF_DATASETS_OFFLINE=1``.

Row formats (option ``format``):

``commonsense170k``
    The commonsense-170k fine-tuning mixture of LLM-Adapters (the union of the
    training sets of BoolQ, PIQA, SIQA, HellaSwag, WinoGrande, ARC-e, ARC-c and OBQA
    as instructions), rows ``{"instruction", "input", "output", "answer"}``. Each row
    becomes a *prompt/target* item: ``prompt`` = the instruction (and input, when there is
    one) in the Alpaca prompt of :func:`grades.data.commonsense.wrap` (ending with
    ``"### Response:\\n"``), ``target`` = ``output`` ("the correct answer is ..."). The
    lm-eval tasks that score the eight benchmarks by generation (``evals/tasks/commonsense``)
    build their prompts with the same function. Training puts the loss on the target only,
    like every other dataset here.
``cauldron``
    Image question/answer data in the schema of HuggingFaceM4/the_cauldron: rows
    ``{"images": [image], "texts": [{"user", "assistant", "source"}, ...]}``, one Hub
    config per sub-collection (option ``subsets``, e.g. ``[vqav2, textcaps]``; ``config``
    for a single one). Every (image, turn) becomes an image item ``{"id", "image",
    "question", "answer", "source"}``; the picture is written once as
    ``images/<n>.png`` and shared by its turns. Rows with more or fewer than one image
    cannot go through the one-picture prompt of :mod:`grades.vlm`; they are counted
    (``multi_image_rows`` in meta.json), not converted. ``max_rows`` (0 = all) reads a
    seeded sample of that many rows per sub-collection, ``max_turns`` (0 = all) the first
    turns of a row. Photos are kept as JPEG (quality 95), other pictures as PNG.
``mc``
    A multiple-choice dataset with configurable field names (``context_field``,
    ``question_field``, ``choices_field``, ``label_field``): rows become our usual
    ``{"id", "context", "question", "choices", "label"}`` items. A label given as a
    letter (``"B"``) or a 1-based digit string is converted (``label_base``).

The rows are shuffled with ``seed`` and split into test / validation / train
(``n_test``, ``n_validation``, ``n_train`` = 0 for all the rest), like the other sources.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Callable, Iterable

from ..config import ConfigError
from . import DataError, split_rows
from .commonsense import wrap

FORMATS = ("commonsense170k", "mc", "cauldron")
IMAGE_FORMATS = ("cauldron",)  # formats whose items carry a picture (vision-language models)
DEFAULTS: dict[str, Any] = {
    "format": "commonsense170k", "config": "", "split": "train", "revision": "",
    "n_validation": 120, "n_test": 120, "n_train": 0, "seed": 0,
    "context_field": "context", "question_field": "question", "choices_field": "choices",
    "label_field": "label", "label_base": 0, "subsets": [], "max_turns": 0, "max_rows": 0,
}


def load_rows(dataset_id: str, opts: dict) -> Iterable[dict]:
    """The rows of one split from the Hub or the local HF datasets cache."""
    import datasets

    kw: dict[str, Any] = {"split": opts["split"]}
    if opts["config"]:
        kw["name"] = opts["config"]
    if opts["revision"]:
        kw["revision"] = opts["revision"]
    try:
        return datasets.load_dataset(dataset_id, **kw)
    except Exception as e:  # ConnectionError, offline-mode errors, unknown ids ...
        why = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"data.source = 'hf-dataset:{dataset_id}': could not load split '{opts['split']}' from "
                        f"the Hub or the local HF datasets cache ({why}). Prefetch it where the Hub is reachable: "
                        f"python -m grades.prefetch --workflow-config CONFIG") from e


#: the loader used by :func:`build` (tests replace it with an in-memory fake)
LOADER: Callable[[str, dict], Iterable[dict]] = load_rows


def commonsense_row(r: dict, i: int) -> dict | None:
    """One LLM-Adapters commonsense row -> a prompt/target item (None if a field is empty)."""
    instr = str(r.get("instruction") or "").strip()
    extra = str(r.get("input") or "").strip()
    out = str(r.get("output") or "").strip()
    if not instr or not out:
        return None
    item = {"id": f"cs170k-{i}", "prompt": wrap(instr, extra), "target": out}
    if r.get("answer") not in (None, ""):
        item["answer"] = str(r["answer"]).strip()
    return item


def _label(v, n: int, base: int) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, str):
        s = v.strip()
        if len(s) == 1 and s.isalpha():
            return "ABCDEFGHIJ".index(s.upper()) if s.upper() in "ABCDEFGHIJ" else None
        if not s.lstrip("-").isdigit():
            return None
        v = int(s)
    if not isinstance(v, int):
        return None
    v -= base
    return v if 0 <= v < n else None


def mc_row(r: dict, i: int, o: dict) -> dict | None:
    choices = r.get(o["choices_field"])
    if isinstance(choices, dict) and "text" in choices:  # ARC/OBQA style {"text": [...], "label": [...]}
        choices = choices["text"]
    if not isinstance(choices, list) or len(choices) < 2:
        return None
    choices = [str(c) for c in choices]
    label = _label(r.get(o["label_field"]), len(choices), o["label_base"])
    if label is None:
        return None
    return {"id": str(r.get("id", f"row-{i}")), "context": str(r.get(o["context_field"]) or ""),
            "question": str(r.get(o["question_field"]) or ""), "choices": choices, "label": label}


def convert(rows: Iterable[dict], opts: dict) -> tuple[list[dict], int]:
    """(items, rows skipped) for the configured format."""
    out, bad = [], 0
    for i, r in enumerate(rows):
        item = commonsense_row(r, i) if opts["format"] == "commonsense170k" else mc_row(r, i, opts)
        if item is None:
            bad += 1
        else:
            out.append(item)
    return out, bad


def cauldron_items(rows: Iterable[dict], subset: str, out: Path, start: int, opts: dict,
                   index: list[int] | None = None) -> tuple[list[dict], int, int]:
    """(items, rows skipped as unusable, rows with != 1 picture) of one Cauldron sub-collection;
    pictures are written under ``out/images`` numbered from ``start``; item ids are
    ``<subset>-<row>-<turn>`` with the row's index in the sub-collection (``index`` maps a
    sample's positions back to it)."""
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    items: list[dict] = []
    bad = multi = 0
    n = start
    for i, r in enumerate(rows):
        images, texts = r.get("images") or [], r.get("texts") or []
        if len(images) != 1:
            multi += 1
            continue
        turns = [(str(t.get("user") or "").strip(), str(t.get("assistant") or "").strip())
                 for t in texts if isinstance(t, dict)]
        turns = [(q, a) for q, a in turns if q and a][: opts["max_turns"] or None]
        if not turns:
            bad += 1
            continue
        img = images[0]
        if img.format == "JPEG":  # photos stay JPEG (near-lossless), everything else PNG
            rel = f"images/{n:08d}.jpg"
            img.convert("RGB").save(out / rel, format="JPEG", quality=95)
        else:
            rel = f"images/{n:08d}.png"
            img.convert("RGB").save(out / rel, format="PNG")
        n += 1
        row = index[i] if index is not None else i
        for k, (q, a) in enumerate(turns):
            items.append({"id": f"{subset}-{row}-{k}", "image": rel, "question": q, "answer": a, "source": subset})
    return items, bad, multi


def _build_cauldron(dataset_id: str, opts: dict, out: Path):
    subsets = list(opts["subsets"]) or ([opts["config"]] if opts["config"] else [])
    if not subsets:
        raise ConfigError(f"data.options.subsets: format 'cauldron' needs the sub-collections to read "
                          f"(Hub configs of {dataset_id}), e.g. [vqav2, textcaps]")
    items: list[dict] = []
    bad = multi = images = 0
    per: dict[str, int] = {}
    for s in subsets:
        rows = LOADER(dataset_id, {**opts, "config": s})
        index = None
        if opts["max_rows"] and len(rows) > opts["max_rows"]:  # a seeded sample, before any picture is written
            order = list(range(len(rows)))
            random.Random(opts["seed"]).shuffle(order)
            index = sorted(order[: opts["max_rows"]])  # read in file order; ids keep the row's own index
            rows = rows.select(index)
        got, b, m = cauldron_items(rows, s, out, images, opts, index)
        images += len({g["image"] for g in got})
        items += got
        bad, multi, per[s] = bad + b, multi + m, len(got)
    return items, bad, {"multi_image_rows": multi, "items_by_subset": per, "images": images, "modality": "image+text",
                        "rows": images + bad + multi}


def build(dataset_id: str, opts: dict, out: Path):
    if opts["format"] not in FORMATS:
        raise ConfigError(f"data.options.format = {opts['format']!r}: choose one of {list(FORMATS)}")
    if "/" not in dataset_id:
        raise ConfigError(f"data.source = 'hf-dataset:{dataset_id}': expected a Hub id ORG/NAME")
    if not isinstance(opts["subsets"], list) or not all(isinstance(x, str) and x for x in opts["subsets"]):
        raise ConfigError(f"data.options.subsets = {opts['subsets']!r}: expected a list of Hub config names")
    extra_meta: dict[str, Any] = {}
    if opts["format"] == "cauldron":
        items, bad, extra_meta = _build_cauldron(dataset_id, opts, out)
    else:
        items, bad = convert(LOADER(dataset_id, opts), opts)
    total = extra_meta.get("rows", len(items) + bad)  # rows read (a Cauldron row makes one item per turn)
    if not items:
        raise DataError(f"hf-dataset:{dataset_id}: no usable rows in split '{opts['split']}' "
                        f"(format {opts['format']}, {bad} skipped)")
    if bad > 0.02 * total:
        raise DataError(f"hf-dataset:{dataset_id}: {bad} of {total} rows could not be converted with format "
                        f"{opts['format']!r}; wrong format or field names?")
    splits = split_rows(items, opts["n_validation"], opts["n_test"], opts["n_train"] or None, opts["seed"])
    meta = {"description": f"{dataset_id} (split {opts['split']}) from the Hugging Face Hub, format {opts['format']}",
            "hub_id": dataset_id, "unconverted_rows": bad, **extra_meta, "rows": total}
    return splits, meta, {}
