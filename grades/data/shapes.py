"""``synthetic:shapes``: questions about small generated pictures of coloured shapes.

Every example is one PNG image (``image_size`` x ``image_size`` pixels, drawn with
PIL) split into a 2 x 2 grid; each of 1..``max_shapes`` cells holds one shape.  The
shapes of one image all differ in kind (circle, square, triangle, diamond) and in
colour, so every question below has exactly one answer:

* **colour**    "What colour is the triangle?"          -> a colour
* **shape**     "What shape is the blue one?"           -> circle / square / triangle / diamond
* **count**     "How many shapes are there?"            -> one .. four
* **position**  "Where is the red circle?"              -> top left / top right / bottom left / bottom right

Each row has a short answer (``answer``) *and* a multiple-choice form (``choices``,
``label``; ``n_choices`` options, chance = 1 / n_choices).  Distractors of colour
questions prefer the other colours present in the picture, so the question cannot be
answered without looking at the right shape.  ``caption`` describes the whole picture
("a red circle at top left and a blue square at bottom right"), for an optional
alignment pre-training of a randomly initialised model (:mod:`grades.vlm`).

Rows (``train/validation/test.jsonl``)::

    {"id", "image": "images/000123.png", "context": "", "question", "choices", "label",
     "answer", "type", "caption"}

``image`` is relative to the dataset directory.  :func:`load_examples` reads a split,
checks every row like :func:`grades.data.load_split` and checks that the image file
exists (an error names the JSONL file, the line and the missing image).  Everything
is a pure function of the options: the same seed gives byte-identical files.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from ..config import ConfigError
from . import DataError, check_item, split_rows

DEFAULTS = {"n_train": 2000, "n_validation": 200, "n_test": 300, "seed": 0, "image_size": 64,
            "max_shapes": 4, "n_choices": 4, "types": "colour,shape,count,position"}

QUESTION_TYPES = ("colour", "shape", "count", "position")
COLOURS = {  # name: RGB
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220),
    "yellow": (235, 200, 40), "purple": (140, 60, 180), "orange": (240, 130, 30),
}
SHAPES = ("circle", "square", "triangle", "diamond")
CELLS = ("top left", "top right", "bottom left", "bottom right")  # (row, col) = divmod(index, 2)
NUMBERS = ("one", "two", "three", "four")
BACKGROUND = (255, 255, 255)


def _check(opts: dict) -> list[str]:
    if opts["image_size"] < 16:
        raise ConfigError(f"data.options.image_size = {opts['image_size']}: must be >= 16 pixels")
    if not 1 <= opts["max_shapes"] <= len(CELLS):
        raise ConfigError(f"data.options.max_shapes = {opts['max_shapes']}: must be in 1..{len(CELLS)} "
                          f"(one shape per cell of a 2 x 2 grid)")
    if not 2 <= opts["n_choices"] <= 4:
        raise ConfigError(f"data.options.n_choices = {opts['n_choices']}: must be 2, 3 or 4")
    types = [t.strip() for t in opts["types"].split(",") if t.strip()]
    bad = [t for t in types if t not in QUESTION_TYPES]
    if bad or not types:
        raise ConfigError(f"data.options.types = {opts['types']!r}: expected a comma-separated subset of "
                          f"{list(QUESTION_TYPES)}")
    if "count" in types and opts["max_shapes"] < 2:
        raise ConfigError(f"data.options.max_shapes = {opts['max_shapes']}: count questions need max_shapes >= 2 "
                          f"(with one shape the answer is always 'one'); raise it or drop 'count' from types")
    return types


def make_scene(rng: random.Random, max_shapes: int, size: int) -> list[dict]:
    """1..max_shapes objects, each {shape, colour, cell, box} with distinct shapes and colours."""
    k = rng.randint(1, max_shapes)
    cells = sorted(rng.sample(range(len(CELLS)), k))
    shapes = rng.sample(SHAPES, k)
    colours = rng.sample(sorted(COLOURS), k)
    half = size // 2
    objs = []
    for cell, shape, colour in zip(cells, shapes, colours):
        r, c = divmod(cell, 2)
        s = rng.randint(max(4, int(0.5 * half)), max(5, int(0.8 * half)))
        x0 = c * half + rng.randint(1, max(1, half - s - 1))
        y0 = r * half + rng.randint(1, max(1, half - s - 1))
        objs.append({"shape": shape, "colour": colour, "cell": cell, "box": (x0, y0, x0 + s, y0 + s)})
    return objs


def draw_scene(objs: list[dict], size: int):
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), BACKGROUND)
    d = ImageDraw.Draw(img)
    for o in objs:
        x0, y0, x1, y1 = o["box"]
        fill = COLOURS[o["colour"]]
        if o["shape"] == "circle":
            d.ellipse([x0, y0, x1, y1], fill=fill)
        elif o["shape"] == "square":
            d.rectangle([x0, y0, x1, y1], fill=fill)
        elif o["shape"] == "triangle":
            d.polygon([((x0 + x1) / 2, y0), (x1, y1), (x0, y1)], fill=fill)
        else:  # diamond
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            d.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    return img


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(objs: list[dict]) -> str:
    parts = [f"{_article(o['colour'])} {o['colour']} {o['shape']} at {CELLS[o['cell']]}" for o in objs]
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def _choices(rng: random.Random, answer: str, pool: list[str], n: int, prefer: list[str] = ()) -> tuple[list[str], int]:
    """answer + n-1 distractors (those in ``prefer`` first), shuffled."""
    pref = [p for p in prefer if p != answer]
    rng.shuffle(pref)
    rest = [p for p in pool if p != answer and p not in pref]
    rng.shuffle(rest)
    opts = [answer] + (pref + rest)[: n - 1]
    rng.shuffle(opts)
    return opts, opts.index(answer)


def make_question(rng: random.Random, objs: list[dict], qtype: str, n_choices: int) -> tuple[str, list[str], int]:
    o = rng.choice(objs)
    if qtype == "colour":
        q = f"What colour is the {o['shape']}?"
        present = [x["colour"] for x in objs]
        ch, lab = _choices(rng, o["colour"], sorted(COLOURS), n_choices, prefer=present)
    elif qtype == "shape":
        q = f"What shape is the {o['colour']} one?"
        ch, lab = _choices(rng, o["shape"], list(SHAPES), n_choices)
    elif qtype == "count":
        q = "How many shapes are there?"
        ch, lab = _choices(rng, NUMBERS[len(objs) - 1], list(NUMBERS), n_choices)
    else:
        q = f"Where is the {o['colour']} {o['shape']}?"
        ch, lab = _choices(rng, CELLS[o["cell"]], list(CELLS), n_choices)
    return q, ch, lab


def build(name: str, opts: dict, out: Path):
    """Called by :func:`grades.data.prepare_dataset` with a temporary directory ``out``."""
    if name != "shapes":
        raise ConfigError(f"data.source = 'synthetic:{name}': unknown synthetic dataset")
    types = _check(opts)
    total = opts["n_train"] + opts["n_validation"] + opts["n_test"]
    rng = random.Random(opts["seed"])
    size = opts["image_size"]
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    width = max(6, len(str(total)))
    items = []
    for i in range(total):
        qtype = types[i % len(types)]  # round robin: the types are balanced
        objs = make_scene(rng, opts["max_shapes"], size)
        q, ch, lab = make_question(rng, objs, qtype, opts["n_choices"])
        rel = f"images/{i:0{width}d}.png"
        draw_scene(objs, size).save(out / rel, format="PNG", optimize=False)
        items.append({"id": f"shapes-{i}", "image": rel, "context": "", "question": q, "choices": ch,
                      "label": lab, "answer": ch[lab], "type": qtype, "caption": caption(objs)})
    splits = split_rows(items, opts["n_validation"], opts["n_test"], opts["n_train"], opts["seed"])
    meta = {"description": "generated pictures of coloured shapes on a 2x2 grid; questions on colour, "
                           "shape, count and position, with short answers and multiple-choice options",
            "modality": "image+text", "chance": 1 / opts["n_choices"], "question_types": types,
            "image_size": size, "colours": sorted(COLOURS), "shapes": list(SHAPES), "positions": list(CELLS)}
    return splits, meta, {}


def load_examples(data_dir: str | Path, split: str) -> list[dict]:
    """Rows of one split with ``image_path`` (absolute) added; every image must exist.

    Errors (:class:`grades.data.DataError`) name the JSONL file and line."""
    data_dir = Path(data_dir)
    path = data_dir / f"{split}.jsonl"
    if not path.exists():
        have = sorted(p.stem for p in data_dir.glob("*.jsonl"))
        raise DataError(f"split '{split}' not found: {path} does not exist; splits present: {have}")
    root = data_dir.resolve()
    rows = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: malformed JSON ({e.msg} at column {e.colno})") from None
            check_item(r, where)
            rel = r.get("image")
            if not isinstance(rel, str) or not rel:
                raise DataError(f"{where}: missing field 'image' (the picture's path relative to {data_dir})")
            img = (root / rel).resolve()
            if Path(rel).is_absolute() or root not in img.parents:
                raise DataError(f"{where}: image path {rel!r} must be relative and inside {data_dir}")
            if not img.is_file():
                raise DataError(f"{where}: image file {img} (image = {rel!r}) does not exist")
            rows.append({**r, "image_path": str(img)})
    if not rows:
        raise DataError(f"{path}: split '{split}' is empty")
    return rows
