"""``siqa-wheel:evals==3.0.1.post1``: Social IQa from a PyPI wheel, split locally.

The wheel of OpenAI's ``evals`` package carries Social IQa
(``evals/registry/data/theory_of_mind/socialiqa/test.jsonl``: 2,224 items with
answers) as chat prompts::

    {"input": [{"role": "user", "content": "<context> <question>? A: ..; B: ..; C: .."}],
     "ideal": "C"}

We fetch the wheel (pinned sha256), extract that one file (the package is never
installed), parse each row back into context / question / three answers / label, and
split deterministically (seeded shuffle) into test, validation (used by early
stopping) and train. Rows that cannot be parsed are counted in ``meta.json``.

``format``: ``mc`` (the default) trains on lm-eval's ``social_iqa`` prompt (see
:mod:`grades.data`); ``commonsense170k`` adds to every item the Social IQa row of
commonsense-170k (:func:`grades.data.commonsense.item`: ``prompt``, ``target``,
``answer``), which training then uses, while the multiple-choice fields stay for the
log-likelihood task ``siqa_local``; the generation task ``cs_siqa_local`` rebuilds the
same prompt from them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..config import ConfigError
from . import DataError, split_rows
from .commonsense import item

MEMBER = "evals/registry/data/theory_of_mind/socialiqa/test.jsonl"
KNOWN = {"evals==3.0.1.post1": "0abcb2051303500784b1641a6e4f6b813ed43ad64f879a37d344a6774eb8eb78"}
DEFAULTS = {"n_validation": 200, "n_test": 500, "n_train": 0, "seed": 0, "sha256": "", "wheel_cache": "", "format": "mc"}
FORMATS = ("mc", "commonsense170k")

_ROW = re.compile(r"^(?P<body>.*) A: (?P<a>.*?); B: (?P<b>.*?); C: (?P<c>.*?)\.?$", re.S)
_SENT = re.compile(r"(?<=[.!?])\s+")


def parse_row(obj: dict, i: int) -> dict | None:
    """One wheel row -> {id, context, question, choices, label}; None if it does not parse."""
    try:
        content = obj["input"][-1]["content"].strip()
        ideal = obj["ideal"].strip()
    except (KeyError, IndexError, TypeError, AttributeError):
        return None
    m = _ROW.match(content)
    if not m or ideal not in ("A", "B", "C"):
        return None
    body = m["body"].strip()
    parts = _SENT.split(body)
    if len(parts) < 2 or not parts[-1].endswith("?"):
        return None
    question = parts[-1]
    context = body[: len(body) - len(question)].strip()
    choices = [m["a"].strip(), m["b"].strip(), m["c"].strip()]
    if not all(choices) or not context:
        return None
    return {"id": f"siqa-{i}", "context": context, "question": question,
            "choices": choices, "label": "ABC".index(ideal)}


def parse_file(path: Path) -> tuple[list[dict], int]:
    rows, bad = [], 0
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: malformed JSON ({e.msg})") from None
            r = parse_row(obj, lineno - 1)
            if r is None:
                bad += 1
            else:
                rows.append(r)
    return rows, bad


def build(req: str, opts: dict, out: Path):
    from ..fetch import extract_member, fetch_wheel

    if opts["format"] not in FORMATS:
        raise ConfigError(f"data.options.format = {opts['format']!r}: choose one of {list(FORMATS)}")
    sha = opts["sha256"] or KNOWN.get(req)
    if sha is None:
        raise ConfigError(f"data.source = 'siqa-wheel:{req}': no pinned checksum for this wheel; "
                          f"set data.options.sha256 (known: {sorted(KNOWN)})")
    wheel = fetch_wheel(req, sha, opts["wheel_cache"] or None)
    raw = extract_member(wheel, MEMBER, out / "_raw" / "socialiqa.jsonl")
    rows, bad = parse_file(raw)
    raw.unlink()
    raw.parent.rmdir()
    if bad > 0.02 * (len(rows) + bad):
        raise DataError(f"{wheel.name}:{MEMBER}: {bad} of {len(rows) + bad} rows could not be parsed; "
                        f"the file format changed?")
    if opts["format"] == "commonsense170k":
        rows = [{**r, **{k: v for k, v in item("siqa", r).items() if k != "n_options"}} for r in rows]
    splits = split_rows(rows, opts["n_validation"], opts["n_test"], opts["n_train"] or None, opts["seed"])
    meta = {"description": "Social IQa (Sap et al. 2019), 2,224 items from the evals wheel, split locally",
            "wheel": wheel.name, "wheel_sha256": sha, "member": MEMBER, "rows": len(rows),
            "unparsed_rows": bad, "chance": 1 / 3}
    return splits, meta, {}
