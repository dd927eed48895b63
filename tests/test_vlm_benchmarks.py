"""evals/tasks/hub: the lm-eval tasks over the Hub copies of the paper's multimodal benchmarks.

Metric helpers against hand-checked cases (and CIDEr against pycocoevalcap); every task built
by lm-eval's TaskManager over a small fake dataset with the real schema (parquet files the
copied YAMLs are pointed at); end to end through hf-multimodal with a tiny VLM, the metrics
of the results recomputed from the logged samples."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import random
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
from PIL import Image

datasets = pytest.importorskip("datasets")
pytest.importorskip("lm_eval")

HUB = Path(__file__).resolve().parent.parent / "evals" / "tasks" / "hub"
MMSTAR = {"coarse_perception": "coarse perception", "fine_grained_perception": "fine-grained perception",
          "instance_reasoning": "instance reasoning", "logical_reasoning": "logical reasoning", "math": "math",
          "science_technology": "science & technology"}
TASKS = sorted(["gqa", "vqav2", "coco_caption", *[f"mmstar_{k}" for k in MMSTAR]])
SHORT = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."
CAPTION = "Provide a one-sentence caption for the provided image."
SMALL_VLM = {"hidden_size": 32, "num_heads": 2, "num_kv_heads": 1, "intermediate_size": 64,  # tests/test_vlm.py
             "vision_hidden_size": 16, "vision_intermediate_size": 32, "vocab_size": 300}


def _load_helpers():
    spec = importlib.util.spec_from_file_location("hub_vlm_bench_under_test", HUB / "vlm_bench.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


vb = _load_helpers()


# ------------------------------------------------------------------ VQAv2
@pytest.mark.parametrize("raw,norm", [
    ("Two", "2"), ("two dogs", "2 dogs"), ("none", "0"), ("Ten\n", "10"),
    ("The cat.", "cat"), ("an apple", "apple"), ("Yes!", "yes"), ("yes ?", "yes"),
    ("dont", "don't"), ("couldnt've", "couldn't've"), ("Its", "its"), ("shed", "shed"),
    ("10,000", "10000"), ("red, white", "red white"), ("t-shirt", "t shirt"), ("left - right", "left right"),
    ("2.5", "2.5"), ("5.", "5"), ("Mr.Smith", "mrsmith"), ("  hot  dog ", "hot dog"),
])
def test_vqa_answer_normalisation(raw, norm):
    assert vb.normalize_vqa(raw) == norm


def _official_loop(pred, answers):
    """The leave-one-annotator-out loop as the VQA paper states it (on normalised strings)."""
    accs = []
    for i in range(len(answers)):
        others = answers[:i] + answers[i + 1:]
        accs.append(min(1.0, sum(a == pred for a in others) / 3))
    return sum(accs) / len(accs)


@pytest.mark.parametrize("k,want", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (10, 1.0)])
def test_vqa_accuracy_averages_ten_leave_one_out_subsets(k, want):
    # k of 10 annotators said "2": a subset without one of them holds k - 1 matches (k of them),
    # the others k matches; e.g. k = 2 -> (2 * 1/3 + 8 * 2/3) / 10 = 0.6
    answers = [{"answer": "2", "answer_confidence": "yes", "answer_id": i + 1} for i in range(k)]
    answers += [{"answer": f"other{i}", "answer_confidence": "maybe", "answer_id": k + i + 1} for i in range(10 - k)]
    assert vb.vqa_accuracy("Two.", answers) == pytest.approx(want)
    assert vb.vqa_accuracy("2", [a["answer"] for a in answers]) == pytest.approx(want)  # plain strings too


def test_vqa_accuracy_matches_the_leave_one_out_loop():
    rng = random.Random(0)
    words = ["yes", "no", "2", "red", "blue"]
    for _ in range(50):
        answers = [rng.choice(words) for _ in range(rng.choice([3, 9, 10]))]
        pred = rng.choice(words)
        assert vb.vqa_accuracy(pred, answers) == pytest.approx(_official_loop(pred, answers))
    assert vb.vqa_accuracy("yes", []) == 0.0
    assert vb.vqav2_process_results({"answers": [{"answer": "yes"}] * 10}, ["\n Yes.\nbecause"]) == {"vqa_acc": 1.0}


# -------------------------------------------------------------------- GQA
@pytest.mark.parametrize("raw,norm", [("The Red car.", "red car"), ("  Yes ", "yes"), ("a man's hat", "mans hat"),
                                      ("an  apple,  please", "apple please"), ("theater", "theater"),
                                      ("T-shirt", "tshirt")])
def test_gqa_normalisation(raw, norm):
    assert vb.normalize_answer(raw) == norm


def test_gqa_exact_match_scores_the_first_line():
    doc = {"answer": "black"}
    assert vb.gqa_process_results(doc, ["\nThe black.\nsecond line"]) == {"exact_match": 1.0}
    assert vb.gqa_process_results(doc, ["white"]) == {"exact_match": 0.0}
    assert vb.gqa_process_results(doc, ["black and white"]) == {"exact_match": 0.0}
    assert vb.gqa_process_results(doc, [""]) == {"exact_match": 0.0}


# ----------------------------------------------------------------- MMStar
@pytest.mark.parametrize("text,letter", [
    ("B", "B"), ("b", "B"), (" (C) ", "C"), ("D.", "D"), ("[A]", "A"), ("c)", "C"),
    ("Answer: C", "C"), ("The answer is (B).", "B"), ("answer is A", "A"), ("Option D", "D"),
    ("The correct choice is B, a cat", "B"), ("I think (D) fits", "D"), ("I think C is right", "C"),
    ("B. a red car", "B"), ("\nA\n", "A"), ("A cat", "A"),
    ("none of them", None), ("", None), ("Answer: E", None), ("Definitely", None), ("Can't tell", None),
])
def test_option_letter_extraction(text, letter):
    assert vb.extract_choice(text) == letter


def test_mmstar_accuracy():
    assert vb.mmstar_process_results({"answer": "C"}, ["Answer: C"]) == {"acc": 1.0}
    assert vb.mmstar_process_results({"answer": "C"}, ["(B)"]) == {"acc": 0.0}
    assert vb.mmstar_process_results({"answer": "A"}, ["no idea"]) == {"acc": 0.0}


# ------------------------------------------------------------------- CIDEr
def test_cider_hand_checked():
    # two images, every n-gram in one image's references only: idf = log 2 for all of them.
    # "a b" against "a b": cosine 1 for n = 1, 2 and 0 for n = 3, 4 (no such n-grams), no
    # length penalty -> mean over n 0.5, x 10 = 5; "x" shares nothing with "c d" -> 0.
    pairs = [("a b", ["a b"]), ("x", ["c d"])]
    assert vb.cider_d_scores([["a", "b"], ["x"]], [[["a", "b"]], [["c", "d"]]]) == pytest.approx([5.0, 0.0])
    assert vb.cider_d(pairs) == pytest.approx(2.5)
    assert vb.cider_aggregate([(c, tuple(r)) for c, r in pairs]) == pytest.approx(2.5)
    # one image: idf = log 1 - log 1 = 0 for every reference n-gram -> 0
    assert vb.cider_d([("a b", ["a b"])]) == 0.0
    assert vb.cider_d([]) == 0.0
    # length penalty: the same words plus 2 unseen ones: unigram cosine 2/sqrt(2 * 4) (the
    # unseen words have idf log 2 as well), bigram 1/sqrt(3); times exp(-4/72); / 4 * 10
    want = (2 / math.sqrt(8) + 1 / math.sqrt(3)) * math.exp(-4 / 72) / 4 * 10
    assert vb.cider_d_scores([["a", "b", "y", "z"], ["x"]], [[["a", "b"]], [["c", "d"]]])[0] == pytest.approx(want)


CAPTIONS = [  # (candidate, references): shared words, repeats, punctuation, different lengths
    ("A man riding a horse on the beach.", ["A man rides a horse along the beach.",
                                           "Person on a horse at the shore",
                                           "a man riding a brown horse on a sandy beach", "Horse and rider by the sea."]),
    ("Two dogs playing with a frisbee in a park", ["Two dogs play with a red frisbee.", "dogs playing in the park",
                                                   "A pair of dogs chase a frisbee on grass"]),
    ("a plate of food", ["A plate with pasta and broccoli.", "a white plate of food on a table",
                         "Food on a plate, with a fork.", "pasta, broccoli and cheese on a plate", "dinner"]),
    ("a bus", ["A red double decker bus on a city street.", "a bus driving down the road", "Bus, street, people."]),
    ("the cat the cat the cat", ["a cat sleeping on a couch", "The cat is asleep on the sofa."]),
    ("A kitchen with a stove and a refrigerator", ["A kitchen with a stove and a refrigerator",
                                                  "a small kitchen with white appliances"]),
]


def test_cider_agrees_with_pycocoevalcap():
    cider = pytest.importorskip("pycocoevalcap.cider.cider")
    gts = {i: [" ".join(vb.caption_tokens(r)) for r in refs] for i, (_, refs) in enumerate(CAPTIONS)}
    res = {i: [" ".join(vb.caption_tokens(c))] for i, (c, _) in enumerate(CAPTIONS)}
    ref_score, ref_scores = cider.Cider().compute_score(gts, res)
    ours = vb.cider_d_scores([vb.caption_tokens(c) for c, _ in CAPTIONS],
                             [[vb.caption_tokens(r) for r in refs] for _, refs in CAPTIONS])
    assert len(ours) == len(ref_scores) and min(ours) >= 0 and max(ours) > 1  # not a trivial corpus
    for a, b in zip(ours, ref_scores):
        assert a == pytest.approx(float(b), abs=1e-9)
    assert vb.cider_d(CAPTIONS) == pytest.approx(float(ref_score), abs=1e-9)


def test_cider_orders_captions():
    """Against one reference set (three copies of a sentence) in a corpus of six images: the
    sentence itself scores exactly 10 (cosine 1 for every n, no length penalty), a shorter
    overlap less, a caption sharing no n-gram 0."""
    sentence = "a man riding a horse on the beach"

    def score(candidate: str) -> float:
        cands = [candidate] + [c for c, _ in CAPTIONS[1:]]
        refs = [[sentence] * 3] + [r for _, r in CAPTIONS[1:]]
        return vb.cider_d_scores([vb.caption_tokens(c) for c in cands],
                                 [[vb.caption_tokens(r) for r in rs] for rs in refs])[0]

    identical, close, partial = score("A man riding a horse on the beach."), score("a man riding a horse"), \
        score("a horse")
    assert identical == pytest.approx(10.0)
    assert identical > close > partial > score("zebra xylophone") == 0.0
    assert vb.caption_tokens("A man's Bike, RED.") == ["a", "man", "s", "bike", "red"]


# ------------------------------------------------------- image placeholder
def test_image_placeholder_with_and_without_chat_template():
    """The prompts start with lm-eval's <image>: hf-multimodal without a chat template puts the
    model's image token in its place; with one, the message becomes [image, text]."""
    from lm_eval.models.hf_vlms import DEFAULT_IMAGE_PLACEHOLDER, HFMultimodalLM
    from lm_eval.models.utils import replace_placeholders

    assert DEFAULT_IMAGE_PLACEHOLDER == vb.IMAGE == "<image>"
    prompts = {"gqa": vb.gqa_doc_to_text({"question": "Is it red?"}),
               "vqav2": vb.vqav2_doc_to_text({"question": " Is it red? "}),
               "coco": vb.coco_doc_to_text({}),
               "mmstar": vb.mmstar_doc_to_text({"question": "Which?\nOptions: A: x, B: y\n"})}
    texts = {"gqa": f"Is it red?\n{SHORT}", "vqav2": f"Is it red?\n{SHORT}", "coco": CAPTION,
             "mmstar": f"Which?\nOptions: A: x, B: y\n{LETTER}"}
    for k, prompt in prompts.items():
        assert prompt == "<image>" + texts[k]
        assert replace_placeholders(prompt, "<image>", "<|image_pad|>", 999) == "<|image_pad|>" + texts[k]
        stub = SimpleNamespace(interleave=True, max_images=999, chat_applied=False,
                               processor=SimpleNamespace(apply_chat_template=lambda history, **kw: history))
        history = HFMultimodalLM.apply_chat_template(stub, [{"role": "user", "content": prompt}])
        assert history == [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": texts[k]}]}]
        assert stub.chat_applied


# ------------------------------------------------------------- fake data
def _picture(seed: int, mode: str = "RGB", size=(24, 20)) -> Image.Image:
    rng = random.Random(seed)
    im = Image.new("RGB", size, tuple(rng.randrange(256) for _ in range(3)))
    im.paste(tuple(rng.randrange(256) for _ in range(3)), (2, 3, 12, 14))
    return im.convert(mode)


def _parquet(rows: dict, features: dict, path: Path) -> Path:
    datasets.Dataset.from_dict(rows, features=datasets.Features(features)).to_parquet(str(path))
    return path


def _features():
    V, S = datasets.Value, datasets.Value("string")
    return {
        "gqa_images": {"id": S, "image": datasets.Image()},
        "gqa": {"id": S, "imageId": S, "question": S, "answer": S, "fullAnswer": S, "isBalanced": V("bool")},
        "vqav2": {"question_type": S, "multiple_choice_answer": S,
                  "answers": [{"answer": S, "answer_confidence": S, "answer_id": V("int64")}],
                  "image_id": V("int64"), "answer_type": S, "question_id": V("int64"), "question": S,
                  "image": datasets.Image()},
        "coco_caption": {"question_id": S, "image": datasets.Image(), "question": S, "answer": datasets.Sequence(S),
                         "id": V("int64"), "license": V("int8"), "file_name": S, "coco_url": S, "height": V("int32"),
                         "width": V("int32"), "date_captured": S},
        "mmstar": {"index": V("int64"), "question": S, "image": datasets.Image(), "answer": S, "category": S,
                   "l2_category": S, "meta_info": {"source": S, "split": S, "image_path": S}},
    }


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    """Parquet files with the columns (and types) of the Hub datasets, a few rows each."""
    d = tmp_path_factory.mktemp("hub_data")
    feats = _features()
    out = {}
    # GQA: questions (testdev_balanced_instructions) and pictures (testdev_balanced_images)
    gqa_images = {"id": ["n161313", "n235859", "n999999"], "image": [_picture(1), _picture(2, "L"), _picture(3)]}
    out["gqa_images"] = _parquet(gqa_images, feats["gqa_images"], d / "gqa_images.parquet")
    gqa = {"id": ["201307251", "201640614", "202225914"], "imageId": ["n235859", "n161313", "n235859"],
           "question": ["Is the sky blue?", "What is the man holding?", "Which color is the car?"],
           "answer": ["yes", "umbrella", "red"],
           "fullAnswer": ["Yes, the sky is blue.", "The man is holding an umbrella.", "The car is red."],
           "isBalanced": [True, True, True]}
    out["gqa"] = _parquet(gqa, feats["gqa"], d / "gqa.parquet")
    # VQAv2 (validation)
    vqa_answers = [["2"] * 6 + ["3"] * 4, ["yes"] * 10, ["red"] * 3 + ["maroon"] * 7, ["tennis"] * 9 + ["ball"]]
    vqa = {"question_type": ["how many", "is this", "what color is the", "what sport is"],
           "multiple_choice_answer": ["2", "yes", "maroon", "tennis"],
           "answers": [[{"answer": a, "answer_confidence": "yes", "answer_id": j + 1} for j, a in enumerate(ans)]
                       for ans in vqa_answers],
           "image_id": [9, 25, 30, 42], "answer_type": ["number", "yes/no", "other", "other"],
           "question_id": [9000, 25001, 30002, 42003],
           "question": ["How many cats are there?", "Is this a kitchen?", "What color is the bus?",
                        "What sport is being played?"],
           "image": [_picture(10 + i) for i in range(4)]}
    out["vqav2"] = _parquet(vqa, feats["vqav2"], d / "vqav2.parquet")
    # COCO Caption 2017 (val)
    refs = [r for _, r in CAPTIONS[:4]]
    coco = {"question_id": [f"0000000{n}.jpg" for n in (39769, 397133, 37777, 252219)],
            "image": [_picture(20 + i, "L" if i == 1 else "RGB") for i in range(4)],
            "question": [CAPTION] * 4, "answer": refs, "id": [39769, 397133, 37777, 252219],
            "license": [1, 4, 1, 2], "file_name": [f"{i}.jpg" for i in range(4)],
            "coco_url": [f"http://images.cocodataset.org/val2017/{i}.jpg" for i in range(4)],
            "height": [20] * 4, "width": [24] * 4, "date_captured": ["2013-11-14 11:18:45"] * 4}
    out["coco_caption"] = _parquet(coco, feats["coco_caption"], d / "coco.parquet")
    # MMStar (val): two questions per category, interleaved; the math ones 3
    cats = [c for _ in range(2) for c in MMSTAR.values()] + ["math"]
    n = len(cats)
    mm = {"index": list(range(n)),
          "question": [f"Question {i}: what is shown?\nOptions: A: cat{i}, B: dog, C: car, D: tree" for i in range(n)],
          "image": [_picture(40 + i, "L" if i % 5 == 0 else "RGB") for i in range(n)],
          "answer": ["ABCD"[i % 4] for i in range(n)], "category": cats,
          "l2_category": [f"l2 {c}" for c in cats],
          "meta_info": [{"source": "MMBench", "split": "DEV", "image_path": f"images/{i}.jpg"} for i in range(n)]}
    out["mmstar"] = _parquet(mm, feats["mmstar"], d / "mmstar.parquet")
    out["rows"] = {"gqa": gqa, "gqa_images": gqa_images, "vqav2": vqa, "coco_caption": coco, "mmstar": mm}
    return SimpleNamespace(**out)


def _point_at(path: Path, split: str, parquet: Path) -> None:
    """Rewrite a task YAML's dataset to a local parquet file (the split name kept)."""
    lines = path.read_text().splitlines()
    keep = [ln for ln in lines if not ln.startswith(("dataset_path:", "dataset_name:", "dataset_kwargs:"))]
    assert len(keep) == len(lines) - 2, f"{path.name}: expected one dataset_path and one dataset_name line"
    keep += ["dataset_path: parquet", "dataset_name: null", "dataset_kwargs:", "  data_files:",
             f"    {split}: {json.dumps(str(parquet))}"]
    path.write_text("\n".join(keep) + "\n")


def _copy_tasks(d: Path, files: SimpleNamespace) -> Path:
    """evals/tasks/hub copied to ``d``, its datasets pointed at the parquet files of ``files``."""
    shutil.copytree(HUB, d, ignore=shutil.ignore_patterns("__pycache__"))
    _point_at(d / "gqa.yaml", "testdev", files.gqa)
    _point_at(d / "vqav2.yaml", "validation", files.vqav2)
    _point_at(d / "coco_caption.yaml", "val", files.coco_caption)
    _point_at(d / "_mmstar_template_yaml", "val", files.mmstar)
    return d


@pytest.fixture(scope="module")
def hub_dir(fake, tmp_path_factory):
    return _copy_tasks(tmp_path_factory.mktemp("hub_tasks") / "hub", fake)


@pytest.fixture
def gqa_images(fake, monkeypatch):
    monkeypatch.setenv(vb.GQA_IMAGES_ENV, str(fake.gqa_images))
    return fake.gqa_images


def _task_manager(path: Path):
    from lm_eval.tasks import TaskManager

    return TaskManager(include_path=str(path), include_defaults=False)


def _lm_eval_warnings(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("lm_eval")]


# ------------------------------------------------------------ the task index
def test_task_dir_indexes_the_nine_tasks_without_warnings(caplog):
    import yaml

    caplog.set_level(logging.DEBUG)
    tm = _task_manager(HUB)
    assert tm.all_subtasks == TASKS  # a YAML that fails to parse is skipped silently (debug log)
    assert tm.all_tags == ["mmstar"] and sorted(tm.task_index["mmstar"].tags) == [t for t in TASKS if "mmstar" in t]
    assert tm.all_groups == []
    assert _lm_eval_warnings(caplog) == []
    assert not [r for r in caplog.records if r.getMessage().startswith("Skip ")]
    # every task YAML carries its version; GQA names the second config it reads (for prefetch)
    for p in HUB.glob("*.yaml"):
        cfg = yaml.load(p.read_text(), Loader=yaml.BaseLoader)
        assert cfg["metadata"]["version"] == "1.0", p.name
    gqa = yaml.load((HUB / "gqa.yaml").read_text(), Loader=yaml.BaseLoader)
    assert gqa["metadata"]["extra_datasets"] == [{"path": "lmms-lab/GQA", "name": "testdev_balanced_images",
                                                  "split": "testdev"}]


@pytest.mark.slow
def test_task_names_are_not_in_lm_eval_registry():
    import lm_eval.tasks
    from lm_eval.tasks._index import TaskIndex

    builtin = TaskIndex.build([Path(lm_eval.tasks.__file__).parent])  # what TaskManager() indexes
    assert len(builtin) > 1000
    assert not set(TASKS + ["mmstar"]) & set(builtin)


# ------------------------------------------------------ tasks over fake data
def _same_picture(a: Image.Image, b: Image.Image) -> bool:
    return a.mode == "RGB" and a.size == b.size and a.tobytes() == b.convert("RGB").tobytes()


def _check_common(task, metric, max_gen_toks):
    cfg = task.config
    assert task.OUTPUT_TYPE == "generate_until" and task.MULTIMODAL
    assert cfg.generation_kwargs == {"until": [], "do_sample": False, "max_gen_toks": max_gen_toks}
    assert cfg.metric_list[0]["metric"] == metric and task.higher_is_better() == {metric: True}
    assert task.VERSION == 1.0 and cfg.num_fewshot in (None, 0)


def test_gqa_task_on_fake_data(hub_dir, fake, gqa_images):
    task = _task_manager(hub_dir).load(["gqa"])["tasks"]["gqa"]
    _check_common(task, "exact_match", 16)
    docs = list(task.test_docs())
    rows = fake.rows["gqa"]
    pics = dict(zip(fake.rows["gqa_images"]["id"], fake.rows["gqa_images"]["image"]))
    assert [d["id"] for d in docs] == rows["id"]
    for doc, q, a, image_id in zip(docs, rows["question"], rows["answer"], rows["imageId"]):
        assert task.doc_to_text(doc) == f"<image>{q}\n{SHORT}"
        assert task.doc_to_target(doc) == a
        (im,) = task.doc_to_image(doc)
        assert _same_picture(im, pics[image_id])
        assert task.process_results(doc, [f"The {a.upper()}."]) == {"exact_match": 1.0}
        assert task.process_results(doc, ["no idea"]) == {"exact_match": 0.0}
    # two questions share a picture: decoded once, the same object
    assert task.doc_to_image(docs[0])[0] is task.doc_to_image(docs[2])[0]
    assert task.config.metadata["extra_datasets"][0]["name"] == "testdev_balanced_images"


def test_gqa_image_lookup(fake, gqa_images, tmp_path, monkeypatch):
    im = vb.gqa_image("n161313")
    assert _same_picture(im, fake.rows["gqa_images"]["image"][0]) and vb.gqa_image("n161313") is im
    assert vb.gqa_image("n235859").mode == "RGB"  # stored greyscale
    with pytest.raises(KeyError, match="'nope' is not among the 3 pictures"):
        vb.gqa_image("nope")
    # a save_to_disk directory works as well; a table without the columns is refused
    ds = datasets.load_dataset("parquet", data_files=str(fake.gqa_images), split="train")
    ds.select([2]).save_to_disk(str(tmp_path / "saved"))
    monkeypatch.setenv(vb.GQA_IMAGES_ENV, str(tmp_path / "saved"))
    assert vb.gqa_images_source() == str(tmp_path / "saved")
    assert _same_picture(vb.gqa_image("n999999"), fake.rows["gqa_images"]["image"][2])
    with pytest.raises(KeyError):
        vb.gqa_image("n161313")
    ds.rename_column("id", "image_id").to_parquet(str(tmp_path / "bad.parquet"))
    monkeypatch.setenv(vb.GQA_IMAGES_ENV, str(tmp_path / "bad.parquet"))
    with pytest.raises(ValueError, match=r"no column\(s\) \['id'\]"):
        vb.gqa_image("n161313")
    monkeypatch.delenv(vb.GQA_IMAGES_ENV)
    assert vb.gqa_images_source() == "lmms-lab/GQA"


def test_vqav2_task_on_fake_data(hub_dir, fake):
    task = _task_manager(hub_dir).load(["vqav2"])["tasks"]["vqav2"]
    _check_common(task, "vqa_acc", 16)
    docs = list(task.test_docs())
    rows = fake.rows["vqav2"]
    assert [d["question_id"] for d in docs] == rows["question_id"]
    for doc, q, mc, im in zip(docs, rows["question"], rows["multiple_choice_answer"], rows["image"]):
        assert task.doc_to_text(doc) == f"<image>{q}\n{SHORT}"
        assert task.doc_to_target(doc) == mc
        (got,) = task.doc_to_image(doc)
        assert _same_picture(got, im)
    # hand-checked: 6 x "2" + 4 x "3"; 3 x "red" + 7 x "maroon"; 9 x "tennis" + "ball"
    assert task.process_results(docs[0], ["two"]) == {"vqa_acc": 1.0}
    assert task.process_results(docs[0], ["3"]) == {"vqa_acc": 1.0}
    assert task.process_results(docs[2], ["Red"]) == {"vqa_acc": pytest.approx(0.9)}
    assert task.process_results(docs[3], ["ball"]) == {"vqa_acc": pytest.approx(0.3)}
    assert task.process_results(docs[1], ["no"]) == {"vqa_acc": 0.0}


def test_coco_caption_task_on_fake_data(hub_dir, fake):
    task = _task_manager(hub_dir).load(["coco_caption"])["tasks"]["coco_caption"]
    _check_common(task, "cider", 64)
    docs = list(task.test_docs())
    rows = fake.rows["coco_caption"]
    assert [d["question_id"] for d in docs] == rows["question_id"]
    for doc, refs, im in zip(docs, rows["answer"], rows["image"]):
        assert task.doc_to_text(doc) == f"<image>{CAPTION}"
        assert task.doc_to_target(doc) == refs
        (got,) = task.doc_to_image(doc)
        assert _same_picture(got, im)
        assert task.process_results(doc, ["\nA caption.\nmore"]) == {"cider": ("A caption.", refs)}
    assert task.aggregation()["cider"] is not None
    items = [(c, r) for (c, _), r in zip(CAPTIONS, rows["answer"])]
    assert task.aggregation()["cider"](items) == pytest.approx(vb.cider_d(items)) and vb.cider_d(items) > 0


@pytest.mark.parametrize("key", sorted(MMSTAR))
def test_mmstar_task_on_fake_data(hub_dir, fake, key):
    name = f"mmstar_{key}"
    task = _task_manager(hub_dir).load([name])["tasks"][name]
    _check_common(task, "acc", 8)
    rows = fake.rows["mmstar"]
    want = [i for i, c in enumerate(rows["category"]) if c == MMSTAR[key]]
    docs = list(task.test_docs())
    assert [d["index"] for d in docs] == want and len(want) == (3 if key == "math" else 2)
    for doc, i in zip(docs, want):
        assert doc["category"] == MMSTAR[key]
        assert task.doc_to_text(doc) == f"<image>{rows['question'][i]}\n{LETTER}"
        assert task.doc_to_target(doc) == rows["answer"][i]
        (got,) = task.doc_to_image(doc)
        assert _same_picture(got, rows["image"][i])
        assert task.process_results(doc, [f"Answer: {rows['answer'][i]}"]) == {"acc": 1.0}
        wrong = "ABCD"[("ABCD".index(rows["answer"][i]) + 1) % 4]
        assert task.process_results(doc, [f"({wrong})"]) == {"acc": 0.0}


def test_mmstar_tag_loads_the_six_tasks(hub_dir):
    tasks = _task_manager(hub_dir).load(["mmstar"])["tasks"]
    assert sorted(tasks) == [t for t in TASKS if t.startswith("mmstar_")]


def test_mmstar_unknown_category_is_reported(fake):
    ds = datasets.load_dataset("parquet", data_files=str(fake.mmstar), split="train")
    assert len(vb.mmstar_math_docs(ds)) == 3
    with pytest.raises(ValueError, match="no question of category 'math'.*'coarse perception'"):
        vb.mmstar_math_docs(ds.filter(lambda c: c != "math", input_columns="category"))


# ------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory):
    """The tiny VLM of tests/test_vlm.py, untied, whose output layer scores only a space, the
    letters A-D, the tokenizer's space-prefixed words and the end of sequence -- each row
    paired with its negation, so one of a pair is never negative and every other token scores 0.
    A random tiny VLM answers "....." (tied) or byte soup (untied); this one answers strings of
    words and letters (e.g. " bottomB B B"), so that no metric is 0 by construction."""
    import re

    from grades import vlm

    d = vlm.prepare_tiny_vlm(tmp_path_factory.mktemp("hub_vlm") / "model", tie_embeddings=False, **SMALL_VLM)
    model, proc = vlm.load_vlm(d)
    tok = proc.tokenizer
    ids = [tok.convert_tokens_to_ids(t) for t in ["Ġ", "A", "B", "C", "D"]]
    ids += [i for i in range(len(tok)) if re.fullmatch(r" [a-z]{3,}", tok.decode([i]))] + [tok.eos_token_id]
    ids = ids[: len(ids) // 2 * 2]
    import torch

    with torch.no_grad():
        w = model.lm_head.weight
        keep = w[ids[0::2]].clone()
        w.zero_()
        w[ids[0::2]] = keep
        w[ids[1::2]] = -keep
    model.save_pretrained(d)
    return d


def _greedy(model, proc, prompt: str, image, max_new_tokens: int) -> str:
    """What hf-multimodal generates for one request: the prompt (the model's image token is
    the literal <image> here) and picture through the processor, greedy, decoded."""
    import torch

    enc = proc(text=[prompt], images=[[image]], padding="longest", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return proc.tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


@pytest.fixture(scope="module")
def e2e(tiny_vlm, fake, tmp_path_factory):
    """Data labelled from the tiny VLM's own answers, so the expected metrics are known:
    VQAv2 -- its answer given by 0, 1, 2, 4 of the 10 annotators -> VQA accuracy 0, 0.3, 0.6, 1
    (mean 0.475); COCO -- its caption among the references of the first two pictures; MMStar
    math -- the letter it names is the answer of the first two questions, not of the third (2/3)."""
    from grades import vlm

    model, proc = vlm.load_vlm(tiny_vlm)
    model.eval()
    rows = {k: {c: list(v) for c, v in r.items()} for k, r in fake.rows.items()}
    vq, cc, mm = rows["vqav2"], rows["coco_caption"], rows["mmstar"]
    said = {
        "vqav2": [_greedy(model, proc, vb.vqav2_doc_to_text({"question": q}), im, 16)
                  for q, im in zip(vq["question"], vq["image"])],
        "coco_caption": [_greedy(model, proc, vb.coco_doc_to_text({}), im, 64) for im in cc["image"]],
    }
    vq["answers"] = [[{"answer": a, "answer_confidence": "yes", "answer_id": j + 1}
                      for j, a in enumerate([vb.first_line(r)] * k + [f"other {j}" for j in range(10 - k)])]
                     for k, r in zip((0, 1, 2, 4), said["vqav2"])]
    bus = "a red bus on the street"
    cc["answer"] = [[vb.first_line(r), bus] if i < 2 else [bus, "two dogs in a park"]
                    for i, r in enumerate(said["coco_caption"])]
    math_rows = [i for i, c in enumerate(mm["category"]) if c == "math"]
    mm_rgb = [vb.rgb(im) for im in mm["image"]]
    said["mmstar_math"] = [_greedy(model, proc, vb.mmstar_doc_to_text({"question": mm["question"][i]}), mm_rgb[i], 8)
                           for i in math_rows]
    letters = [vb.extract_choice(r) for r in said["mmstar_math"]]
    assert letters[0] and letters[1], f"the tiny VLM named no option letter: {said['mmstar_math']}"
    for j, i in enumerate(math_rows):
        mm["answer"][i] = letters[j] if j < 2 else "ABCD"[("ABCD".index(letters[j] or "A") + 1) % 4]
    d = tmp_path_factory.mktemp("hub_e2e")
    feats = _features()
    files = SimpleNamespace(gqa=fake.gqa, **{k: _parquet(rows[k], feats[k], d / f"{k}.parquet")
                                            for k in ("vqav2", "coco_caption", "mmstar")})
    return SimpleNamespace(dir=_copy_tasks(d / "hub", files), said=said, rows=rows, math_rows=math_rows)


def _evaluate(model_dir, hub_dir, tasks, **kw):
    import lm_eval

    return lm_eval.simple_evaluate(model="hf-multimodal", model_args=f"pretrained={model_dir},dtype=float32,device=cpu",
                                   tasks=tasks, task_manager=_task_manager(hub_dir), limit=4, batch_size=1,
                                   log_samples=True, random_seed=0, numpy_random_seed=0, torch_random_seed=0,
                                   fewshot_random_seed=0, **kw)


def _context(sample) -> str:
    return sample["arguments"][0][0]


def _response(sample) -> str:
    return sample["resps"][0][0]


@pytest.mark.slow
def test_end_to_end_hf_multimodal(tiny_vlm, e2e):
    res = _evaluate(tiny_vlm, e2e.dir, ["vqav2", "coco_caption", "mmstar_math"])
    r, s = res["results"], res["samples"]
    assert (len(s["vqav2"]), len(s["coco_caption"]), len(s["mmstar_math"])) == (4, 4, 3)
    assert res["configs"]["vqav2"]["metric_list"][0]["metric"] == "vqa_acc"
    # the responses are the model's greedy answers to our prompt with the picture (<image> ->
    # the processor's image tokens), in the order of the docs
    for task in ("vqav2", "coco_caption"):
        assert [_response(x) for x in sorted(s[task], key=lambda x: x["doc_id"])] == e2e.said[task]
    assert [_response(x) for x in s["mmstar_math"]] == e2e.said["mmstar_math"]
    # VQAv2: 0, 1, 2, 4 annotators gave the model's answer
    vq = e2e.rows["vqav2"]
    for x in s["vqav2"]:
        assert _context(x) == f"<image>{vq['question'][x['doc_id']]}\n{SHORT}"
        assert x["arguments"][0][1]["max_gen_toks"] == 16 and len(x["arguments"][0][2]["visual"]) == 1
        assert x["vqa_acc"] == vb.vqa_accuracy(vb.first_line(_response(x)), x["doc"]["answers"])
    assert r["vqav2"]["vqa_acc,none"] == pytest.approx((0 + 0.3 + 0.6 + 1) / 4)
    assert r["vqav2"]["vqa_acc,none"] == pytest.approx(sum(x["vqa_acc"] for x in s["vqav2"]) / 4)
    assert isinstance(r["vqav2"]["vqa_acc_stderr,none"], float)
    # COCO: corpus CIDEr-D of the logged captions against the logged references
    assert all(_context(x) == f"<image>{CAPTION}" for x in s["coco_caption"])
    pairs = [(vb.first_line(_response(x)), list(x["doc"]["answer"])) for x in s["coco_caption"]]
    assert r["coco_caption"]["cider,none"] == pytest.approx(vb.cider_d(pairs), abs=1e-12)
    assert r["coco_caption"]["cider,none"] > 0
    assert r["coco_caption"]["cider_stderr,none"] == "N/A"  # lm-eval bootstraps only its own aggregations
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        pass
    else:
        gts = {i: [" ".join(vb.caption_tokens(t)) for t in refs] for i, (_, refs) in enumerate(pairs)}
        got = {i: [" ".join(vb.caption_tokens(c))] for i, (c, _) in enumerate(pairs)}
        assert r["coco_caption"]["cider,none"] == pytest.approx(float(Cider().compute_score(gts, got)[0]), abs=1e-9)
    # MMStar math: the named letter is right for two of the three questions
    mm = e2e.rows["mmstar"]
    assert [x["doc"]["index"] for x in s["mmstar_math"]] == e2e.math_rows
    for x in s["mmstar_math"]:
        assert _context(x) == f"<image>{mm['question'][x['doc']['index']]}\n{LETTER}"
        assert x["acc"] == float(vb.extract_choice(_response(x)) == x["doc"]["answer"])
    assert r["mmstar_math"]["acc,none"] == pytest.approx(2 / 3)


CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] | capitalize }}:{% for c in m['content'] %}"
                 "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
                 "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")


def test_end_to_end_with_chat_template(tiny_vlm, hub_dir, fake, gqa_images, tmp_path):
    """apply_chat_template: lm-eval turns the prompt into [image, text] content and the
    processor's chat template places the image (a minimal template given to the tiny model)."""
    import transformers as tf

    from grades import vlm

    model_dir = tmp_path / "chat"
    shutil.copytree(tiny_vlm, model_dir)
    proc = tf.AutoProcessor.from_pretrained(str(model_dir))
    proc.chat_template = CHAT_TEMPLATE
    proc.save_pretrained(str(model_dir))
    res = _evaluate(model_dir, hub_dir, ["gqa"], apply_chat_template=True)
    rows, pics = fake.rows["gqa"], dict(zip(fake.rows["gqa_images"]["id"], fake.rows["gqa_images"]["image"]))
    s = res["samples"]["gqa"]
    assert len(s) == 3
    model, proc = vlm.load_vlm(model_dir)
    model.eval()
    for x in s:
        q = rows["question"][x["doc_id"]]
        assert _context(x) == f"User:<image>{q}\n{SHORT}<end_of_utterance>\nAssistant:"
        image = vb.rgb(pics[rows["imageId"][x["doc_id"]]])
        assert _response(x) == _greedy(model, proc, _context(x), image, 16)
        assert x["exact_match"] == float(vb.normalize_answer(vb.first_line(_response(x)))
                                         == vb.normalize_answer(x["doc"]["answer"]))
    assert res["results"]["gqa"]["exact_match,none"] == pytest.approx(sum(x["exact_match"] for x in s) / 3)


def test_vqav2_scores_a_fixed_sample(monkeypatch):
    import datasets

    ds = datasets.Dataset.from_dict({"question_id": list(range(50)), "question": [f"q{i}" for i in range(50)]})
    assert vb.vqav2_docs(ds) is ds  # below the sample size: every question
    monkeypatch.setattr(vb, "VQAV2_SAMPLE", 20)
    a, b = vb.vqav2_docs(ds), vb.vqav2_docs(ds)
    assert len(a) == 20 and a["question_id"] == b["question_id"]  # the same sample every time
    assert len(set(a["question_id"])) == 20 and a["question_id"] != list(range(20))  # shuffled, no repeats
    monkeypatch.setattr(vb, "VQAV2_SEED", 1)
    assert vb.vqav2_docs(ds)["question_id"] != a["question_id"]


@pytest.mark.slow
def test_grades_vlm_evaluate_writes_the_benchmarks_to_eval_json(tiny_vlm, e2e, tmp_path, monkeypatch):
    """The workflow's path: `python -m grades.vlm evaluate --task vqav2,coco_caption,mmstar_math`
    (no prepared dataset: the benchmarks read their own data) -> eval.json with lm-eval's
    metrics, each entry naming its metric and score."""
    from grades import vlm

    monkeypatch.setenv("GRADES_EVAL_TASKS_DIR", str(e2e.dir.parent))  # <dir>/hub = the rewritten tasks
    assert vlm.split_vlm_tasks(["vqav2", "mmstar_math"]) == ([], [], ["vqav2", "mmstar_math"])
    out = tmp_path / "eval.json"
    assert vlm.main(["evaluate", "--model", str(tiny_vlm), "--task", "vqav2,coco_caption,mmstar_math",
                     "--limit", "4", "--batch-size", "1", "--out", str(out),
                     "--samples-out", str(tmp_path / "s.jsonl")]) == 0
    e = json.loads(out.read_text())
    t = e["tasks"]
    assert (t["vqav2"]["metric"], t["coco_caption"]["metric"], t["mmstar_math"]["metric"]) == ("vqa_acc", "cider", "acc")
    assert t["vqav2"]["score"] == t["vqav2"]["vqa_acc"] == pytest.approx((0 + 0.3 + 0.6 + 1) / 4)
    assert t["mmstar_math"]["score"] == pytest.approx(2 / 3) and t["mmstar_math"]["n"] == 3
    assert t["coco_caption"]["score"] > 0 and t["coco_caption"]["score_stderr"] is None  # "N/A" for a corpus metric
    assert t["vqav2"]["backend"] == "lm-eval hf-multimodal" and "data" not in t["vqav2"]
    assert e["lm_eval_backend"] == "hf" and e["lora"] is None and e["eval_tokens"] is None
    assert e["model_num_parameters"] == sum(p.numel() for p in vlm.load_vlm(tiny_vlm)[0].parameters())
    recs = [json.loads(ln) for ln in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert sorted(r["response"] for r in recs if r["task"] == "vqav2") == sorted(e2e.said["vqav2"])
    assert all("vqa_acc" in r for r in recs if r["task"] == "vqav2")
