"""``hf-dataset:`` source: argument construction and format conversion, without the Hub.

The Hub is unreachable here, so ``datasets.load_dataset`` is replaced by a recorder
that returns an in-memory ``datasets.Dataset`` (the object the real call returns)."""

from __future__ import annotations

import json

import pytest

from grades.config import ConfigError
from grades.data import DataError, check_item, format_prompt, format_target, load_split, prepare_dataset
from grades.data import hub

CS_ROWS = [  # the commonsense-170k row shape (LLM-Adapters): instruction, input, output, answer
    {"instruction": f"Please answer the following question with true or false. Question {i}?",
     "input": "", "output": f"the correct answer is {'true' if i % 2 else 'false'}",
     "answer": "true" if i % 2 else "false"} for i in range(30)
] + [{"instruction": "Choose the ending. Ending1: a Ending2: b", "input": "extra context",
      "output": "the correct answer is ending2", "answer": "ending2"}]


def fake_loader(rows, calls):
    import datasets

    def load_dataset(path, **kw):
        calls.append((path, kw))
        return datasets.Dataset.from_list(rows)

    return load_dataset


def test_load_rows_builds_the_load_dataset_call(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", fake_loader(CS_ROWS, calls))
    opts = {**hub.DEFAULTS}
    rows = hub.load_rows("zwhe99/commonsense_170k", opts)
    assert len(rows) == len(CS_ROWS)
    assert calls == [("zwhe99/commonsense_170k", {"split": "train"})]
    hub.load_rows("org/mc", {**opts, "config": "main", "split": "validation", "revision": "abc123"})
    assert calls[-1] == ("org/mc", {"split": "validation", "name": "main", "revision": "abc123"})


def test_load_rows_offline_error_says_prefetch(monkeypatch):
    import datasets

    def boom(path, **kw):
        raise ConnectionError("Couldn't reach 'zwhe99/commonsense_170k' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    with pytest.raises(DataError, match="hf-dataset:zwhe99/commonsense_170k.*grades.prefetch"):
        hub.load_rows("zwhe99/commonsense_170k", dict(hub.DEFAULTS))


def test_commonsense_rows_become_prompt_target_items(tmp_path, monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", fake_loader(CS_ROWS, calls))
    out = prepare_dataset("hf-dataset:zwhe99/commonsense_170k", tmp_path / "cs", n_validation=5, n_test=3, seed=1)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["counts"] == {"train": 23, "validation": 5, "test": 3} and meta["hub_id"] == "zwhe99/commonsense_170k"
    assert meta["n_choices"] == [] and meta["unconverted_rows"] == 0
    train = load_split(out, "train")
    allrows = train + load_split(out, "validation") + load_split(out, "test")
    assert sorted(r["id"] for r in allrows) == sorted(f"cs170k-{i}" for i in range(len(CS_ROWS)))
    last = next(r for r in allrows if r["id"] == f"cs170k-{len(CS_ROWS) - 1}")
    # the Alpaca prompt of grades.data.commonsense (the text the cs_* tasks score), with the input
    assert last["prompt"] == ("Below is an instruction that describes a task, paired with an input that provides "
                              "further context. Write a response that appropriately completes the request.\n\n"
                              "### Instruction:\nChoose the ending. Ending1: a Ending2: b\n\n### Input:\n"
                              "extra context\n\n### Response:\n")
    assert last["target"] == "the correct answer is ending2" and last["answer"] == "ending2"
    first = next(r for r in allrows if r["id"] == "cs170k-0")  # no input: the shorter prompt
    assert first["prompt"] == ("Below is an instruction that describes a task. Write a response that appropriately "
                               f"completes the request.\n\n### Instruction:\n{CS_ROWS[0]['instruction']}\n\n"
                               "### Response:\n")
    # training formats these items verbatim
    assert format_prompt(last) == last["prompt"] and format_target(last) == last["target"]
    # deterministic: the same seed gives the same split
    again = prepare_dataset("hf-dataset:zwhe99/commonsense_170k", tmp_path / "cs2", n_validation=5, n_test=3, seed=1)
    assert (again / "train.jsonl").read_text() == (out / "train.jsonl").read_text()


def test_tokenize_prompt_target_items_puts_loss_on_target_only():
    from grades.models.tiny import train_tokenizer
    from grades.train import tokenize_examples

    tok = train_tokenizer(["Question one? Answer: the correct answer is true"] * 4, 300)
    ex = {"id": "x", "prompt": "Question one?\nAnswer:", "target": " the correct answer is true"}
    [(ids, labels)], n = tokenize_examples([ex], tok, 64, "answer", "truncate")
    n_prompt = len(tok(ex["prompt"], add_special_tokens=False)["input_ids"])
    assert n == 0 and labels[:n_prompt] == [-100] * n_prompt and all(x != -100 for x in labels[n_prompt:])


def test_mc_format_with_field_names_and_letter_labels(tmp_path):
    rows = [{"id": f"q{i}", "premise": "ctx", "q": f"question {i}", "opts": {"text": ["a", "b", "c", "d"],
             "label": ["A", "B", "C", "D"]}, "answerKey": "ABCD"[i % 4]} for i in range(20)]
    opts = {**hub.DEFAULTS, "format": "mc", "context_field": "premise", "question_field": "q",
            "choices_field": "opts", "label_field": "answerKey"}
    items, bad = hub.convert(rows, opts)
    assert bad == 0 and [it["label"] for it in items[:5]] == [0, 1, 2, 3, 0]
    assert items[1] == {"id": "q1", "context": "ctx", "question": "question 1", "choices": ["a", "b", "c", "d"],
                        "label": 1}
    for it in items:
        check_item(it, "test")
    one_based, _ = hub.convert([{"choices": ["x", "y"], "label": "2"}], {**hub.DEFAULTS, "format": "mc",
                                                                          "label_base": 1})
    assert one_based[0]["label"] == 1


def test_bad_rows_and_options_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "LOADER", lambda i, o: [{"instruction": "", "output": ""}] * 10 + CS_ROWS)
    with pytest.raises(DataError, match="10 of 41 rows could not be converted"):
        prepare_dataset("hf-dataset:org/name", tmp_path / "x", n_validation=2, n_test=2)
    with pytest.raises(ConfigError, match="format"):
        prepare_dataset("hf-dataset:org/name", tmp_path / "y", format="alpaca")
    with pytest.raises(ConfigError, match="did you mean 'n_test'"):
        prepare_dataset("hf-dataset:org/name", tmp_path / "z", n_tset=2)
    with pytest.raises(DataError, match="missing field"):
        check_item({"id": "a", "prompt": "p"}, "row")
    assert not (tmp_path / "x").exists()  # nothing half-written


# ------------------------------------------------------------------ cauldron (images)
def cauldron_rows(subset: str, n: int):
    """Rows in the_cauldron's schema: a list of pictures and a list of turns."""
    import datasets
    from PIL import Image

    rows = []
    for i in range(n):
        img = Image.new("RGB", (24 + i, 16), (10 * i % 255, 100, 200))
        rows.append({"images": [img], "texts": [{"user": f"{subset} question {i}?", "assistant": f"answer {i}",
                                                 "source": subset},
                                                {"user": f"and a follow-up {i}?", "assistant": f"more {i}",
                                                 "source": subset}]})
    rows.append({"images": [Image.new("RGB", (8, 8)), Image.new("RGB", (8, 8))],  # two pictures: not ours
                 "texts": [{"user": "which differs?", "assistant": "left", "source": subset}]})
    if subset == "vqav2":  # a row without a usable turn: skipped and counted
        rows.append({"images": [Image.new("RGB", (8, 8))], "texts": [{"user": "", "assistant": "", "source": subset}]})
    feats = datasets.Features({"images": datasets.Sequence(datasets.Image()), "texts": [
        {"user": datasets.Value("string"), "assistant": datasets.Value("string"), "source": datasets.Value("string")}]})
    return datasets.Dataset.from_list(rows, features=feats)


def test_cauldron_subsets_become_image_questions(tmp_path, monkeypatch):
    from grades import workflow as gw
    from grades.data.shapes import load_examples

    calls = []

    def loader(dataset_id, opts):
        calls.append((dataset_id, opts["config"], opts["split"]))
        return cauldron_rows(opts["config"], 60 if opts["config"] == "vqav2" else 20)

    monkeypatch.setattr(hub, "LOADER", loader)
    out = prepare_dataset("hf-dataset:HuggingFaceM4/the_cauldron", tmp_path / "c", format="cauldron",
                          subsets=["vqav2", "textcaps"], n_validation=10, n_test=10, max_turns=0)
    assert calls == [("HuggingFaceM4/the_cauldron", "vqav2", "train"), ("HuggingFaceM4/the_cauldron", "textcaps", "train")]
    meta = json.loads((out / "meta.json").read_text())
    # every turn of every one-picture row; the two-picture rows are counted, the empty-turn rows skipped
    assert meta["items_by_subset"] == {"vqav2": 120, "textcaps": 40} and meta["multi_image_rows"] == 2
    assert meta["unconverted_rows"] == 1 and meta["images"] == 80 and meta["counts"]["train"] == 140
    assert meta["rows"] == 83
    rows = load_examples(out, "train")  # the loader grades.vlm trains from; every picture must exist
    r = next(x for x in rows if x["id"] == "vqav2-3-1")
    assert (r["question"], r["answer"], r["source"]) == ("and a follow-up 3?", "more 3", "vqav2")
    twin = next(x for x in rows + load_examples(out, "test") + load_examples(out, "validation")
                if x["id"] == "vqav2-3-0")
    assert twin["image"] == r["image"]  # the picture is written once, shared by its turns
    from PIL import Image

    with Image.open(r["image_path"]) as im:
        assert im.size == (27, 16)
    # a VLM is recognised from its image dataset at parse time
    cfg = {"profile": "t", "datasets": {"c": {"source": "hf-dataset:HuggingFaceM4/the_cauldron",
                                              "options": {"format": "cauldron", "subsets": ["vqav2"]},
                                              "eval_tasks": [], "lm_eval_tasks": ["vqav2"]}},
           "models": {"v": {"source": "hf:Qwen/Qwen2.5-VL-7B-Instruct"}},
           "settings": {"FP": {"mode": "fp"}}}
    assert gw.is_vlm(gw.load(cfg), "v")
    # the first turn only, with max_turns
    out1 = prepare_dataset("hf-dataset:HuggingFaceM4/the_cauldron", tmp_path / "c1", format="cauldron",
                           subsets=["textcaps"], n_validation=2, n_test=2, max_turns=1)
    assert json.loads((out1 / "meta.json").read_text())["items_by_subset"] == {"textcaps": 20}
    # a seeded sample of rows per sub-collection, before any picture is written; photos stay JPEG
    import io

    def jpeg_loader(dataset_id, opts):
        import datasets

        ds = cauldron_rows(opts["config"], 30)
        buf = io.BytesIO()
        ds[0]["images"][0].save(buf, format="JPEG")
        return ds.cast_column("images", datasets.Sequence(datasets.Image())).map(
            lambda r, i: {"images": [{"bytes": buf.getvalue(), "path": None}] if i % 2 == 0 else r["images"]},
            with_indices=True)

    monkeypatch.setattr(hub, "LOADER", jpeg_loader)
    a = prepare_dataset("hf-dataset:HuggingFaceM4/the_cauldron", tmp_path / "s1", format="cauldron",
                        subsets=["textcaps"], max_rows=12, n_validation=2, n_test=2, seed=3)
    b = prepare_dataset("hf-dataset:HuggingFaceM4/the_cauldron", tmp_path / "s2", format="cauldron",
                        subsets=["textcaps"], max_rows=12, n_validation=2, n_test=2, seed=3)
    ma = json.loads((a / "meta.json").read_text())
    assert ma["rows"] == 12 and len(list((a / "images").iterdir())) == ma["images"] <= 12
    assert (a / "train.jsonl").read_text() == (b / "train.jsonl").read_text()
    picked = {r["id"].split("-")[1] for s in ("train", "validation", "test") for r in load_split(a, s)}
    assert picked != {str(i) for i in range(len(picked))}  # shuffled, not the first rows
    exts = {p.suffix for p in (a / "images").iterdir()}
    assert exts == {".png", ".jpg"}
    from PIL import Image

    with Image.open(next((a / "images").glob("*.jpg"))) as im:
        assert im.format == "JPEG"


def test_cauldron_needs_its_subsets(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "LOADER", lambda d, o: cauldron_rows("x", 3))
    with pytest.raises(ConfigError, match="data.options.subsets: format 'cauldron' needs the sub-collections"):
        prepare_dataset("hf-dataset:HuggingFaceM4/the_cauldron", tmp_path / "c", format="cauldron")
    with pytest.raises(ConfigError, match="data.options.subsets = 'vqav2': expected a list"):
        prepare_dataset("hf-dataset:HuggingFaceM4/the_cauldron", tmp_path / "c", format="cauldron", subsets="vqav2")


def test_image_question_items_are_checked():
    check_item({"id": "a", "image": "images/1.png", "question": "q?", "answer": "yes"}, "f:1")
    with pytest.raises(DataError, match="f:2: missing field\\(s\\) \\['answer'\\]; an image question needs"):
        check_item({"id": "a", "image": "images/1.png", "question": "q?"}, "f:2")
    with pytest.raises(DataError, match="must be non-empty strings"):
        check_item({"id": "a", "image": "images/1.png", "question": "q?", "answer": ""}, "f:3")
