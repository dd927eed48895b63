"""synthetic:shapes — generated pictures + questions, prepared like every other dataset."""

from __future__ import annotations

import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import pytest

from grades.config import ConfigError
from grades.data import DataError, load_split, prepare_dataset
from grades.data.shapes import CELLS, COLOURS, NUMBERS, SHAPES, load_examples

SMALL = dict(n_train=40, n_validation=8, n_test=12, seed=0)


@pytest.fixture(scope="module")
def shapes_dir(tmp_path_factory):
    return prepare_dataset("synthetic:shapes", tmp_path_factory.mktemp("shapes") / "d", **SMALL)


def _digest(d: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(d.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(d)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_counts_and_meta(shapes_dir):
    meta = json.loads((shapes_dir / "meta.json").read_text())
    assert meta["source"] == "synthetic:shapes"
    assert meta["counts"] == {"train": 40, "validation": 8, "test": 12}
    assert meta["n_choices"] == [4] and meta["chance"] == 0.25
    assert len(list((shapes_dir / "images").glob("*.png"))) == 60
    ids = [r["id"] for s in ("train", "validation", "test") for r in load_examples(shapes_dir, s)]
    assert len(ids) == len(set(ids)) == 60
    # the generic reader accepts the rows too (same fields as every multiple-choice dataset)
    assert len(load_split(shapes_dir, "test")) == 12


def test_deterministic_by_seed(shapes_dir, tmp_path):
    again = prepare_dataset("synthetic:shapes", tmp_path / "again", **SMALL)
    assert _digest(again) == _digest(shapes_dir)
    other = prepare_dataset("synthetic:shapes", tmp_path / "other", **{**SMALL, "seed": 1})
    assert _digest(other) != _digest(shapes_dir)


def test_rows_are_consistent(shapes_dir):
    rows = [r for s in ("train", "validation", "test") for r in load_examples(shapes_dir, s)]
    pools = {"colour": set(COLOURS), "shape": set(SHAPES), "count": set(NUMBERS), "position": set(CELLS)}
    for r in rows:
        assert not Path(r["image"]).is_absolute() and r["image"].startswith("images/")
        assert r["answer"] == r["choices"][r["label"]]
        assert len(set(r["choices"])) == 4 and set(r["choices"]) <= pools[r["type"]]
        objs = re.findall(r"an? (\w+) (\w+) at (\w+ \w+)", r["caption"])
        assert objs and len({o[0] for o in objs}) == len(objs) == len({o[1] for o in objs})
        if r["type"] == "count":
            assert r["answer"] == NUMBERS[len(objs) - 1]
        elif r["type"] == "colour":
            shape = r["question"].split()[-1].rstrip("?")
            assert (r["answer"], shape) in {(c, s) for c, s, _ in objs}
        elif r["type"] == "shape":
            colour = r["question"].split()[-2]
            assert (colour, r["answer"]) in {(c, s) for c, s, _ in objs}
        else:
            colour, shape = r["question"].split()[-2:]
            assert (colour, shape.rstrip("?"), r["answer"]) in set(objs)
    assert set(Counter(r["type"] for r in rows).values()) == {15}  # round robin over four types


def test_pictures_show_what_the_caption_says(shapes_dir):
    from PIL import Image

    for r in load_examples(shapes_dir, "test"):
        with Image.open(r["image_path"]) as im:
            assert im.size == (64, 64) and im.mode == "RGB"
            objs = re.findall(r"an? (\w+) (\w+) at (\w+ \w+)", r["caption"])
            for colour, _, cell in objs:
                row, col = divmod(CELLS.index(cell), 2)
                box = im.crop((col * 32, row * 32, col * 32 + 32, row * 32 + 32))
                assert COLOURS[colour] in {c for _, c in box.getcolors(4096)}, (r["id"], colour, cell)
            drawn = {c for _, c in im.getcolors(4096)} - {(255, 255, 255)}
            assert drawn == {COLOURS[c] for c, _, _ in objs}


def test_missing_image_names_file_and_line(shapes_dir, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(shapes_dir, d)
    rows = (d / "test.jsonl").read_text().splitlines()
    victim = json.loads(rows[2])["image"]
    (d / victim).unlink()
    with pytest.raises(DataError) as e:
        load_examples(d, "test")
    msg = str(e.value)
    assert f"{d / 'test.jsonl'}:3" in msg and victim in msg and "does not exist" in msg


def test_image_path_must_stay_inside(shapes_dir, tmp_path):
    import shutil

    d = tmp_path / "copy"
    shutil.copytree(shapes_dir, d)
    rows = (d / "test.jsonl").read_text().splitlines()
    r = json.loads(rows[0])
    r["image"] = "../outside.png"
    (d / "test.jsonl").write_text("\n".join([json.dumps(r)] + rows[1:]) + "\n")
    with pytest.raises(DataError, match=r"test.jsonl:1: image path '../outside.png' must be relative"):
        load_examples(d, "test")


@pytest.mark.parametrize("opt,value,words", [
    ("max_shapes", 5, "max_shapes = 5"),
    ("n_choices", 5, "n_choices = 5"),
    ("types", "colour,size", "types = 'colour,size'"),
    ("image_size", 8, "image_size = 8"),
    ("max_shapes", 1, "count questions need max_shapes >= 2"),
])
def test_bad_options_name_the_field(tmp_path, opt, value, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        prepare_dataset("synthetic:shapes", tmp_path / "x", **{**SMALL, opt: value})
    assert not (tmp_path / "x").exists()


def test_variants_two_choices_single_type(tmp_path):
    d = prepare_dataset("synthetic:shapes", tmp_path / "d", **SMALL, n_choices=2, types="colour", max_shapes=1,
                        image_size=32)
    rows = load_examples(d, "train")
    assert all(len(r["choices"]) == 2 and r["type"] == "colour" for r in rows)
    assert json.loads((d / "meta.json").read_text())["chance"] == 0.5
