"""The commonsense-170k text format: the prompt wrapper, each benchmark's instruction, the answer words.

One definition, used wherever that text is made: the training items of
``hf-dataset:...`` with ``format: commonsense170k`` (:mod:`grades.data.hub`) and of
``siqa-wheel:...`` with ``format: commonsense170k`` (:mod:`grades.data.siqa`), and the
lm-eval tasks that score the eight benchmarks by generation (``evals/tasks/commonsense``,
``evals/tasks/cs_siqa_local.yaml``), whose helpers import this module. So the text a model
is scored on is, by construction, the text it was fine-tuned on.

The format is LLM-Adapters' (Hu et al. 2023), also used by DoRA: each benchmark item
becomes an *instruction* (the per-benchmark templates below, as in the rows of
commonsense-170k), the answer is ``"the correct answer is <word>"`` with one answer word
per option (:data:`ANSWER_WORDS`), and the instruction goes into the Alpaca prompt
(:func:`wrap`). Generation is scored the way LLM-Adapters scores it: the first answer word
of the benchmark that occurs in the response (:func:`parse_answer`; case-sensitive, like
its regular expressions) must equal the gold word.

Assumptions where the paper is silent (it names neither training data nor prompt):

* the wrapper is LLM-Adapters' Alpaca prompt with its whitespace normalised. LLM-Adapters'
  own training and evaluation strings differ (indented lines, one or two spaces after
  "request."), so no single string reproduces both; ours is one string for both.
* the instructions of the eight benchmarks are made from the Hugging Face Hub's rows
  (fields of ``aps/super_glue`` boolq, ``baber/piqa``, ``lighteval/siqa``,
  ``Rowan/hellaswag``, ``allenai/winogrande``, ``allenai/openbookqa``,
  ``allenai/ai2_arc``) with the templates of commonsense-170k: BoolQ without its passage,
  HellaSwag with the Hub's ``ctx`` as is (WikiHow's ``[title]``/``[step]`` markers kept).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: the Alpaca prompt around an instruction (LLM-Adapters' training prompt, whitespace normalised)
PROMPT = ("Below is an instruction that describes a task. Write a response that appropriately completes "
          "the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")
#: ... and around an instruction with an input (no commonsense-170k row has one)
PROMPT_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.\n\n### Instruction:\n"
                     "{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
RESPONSE = "the correct answer is {answer}"

#: the benchmarks, by the names of the paper's table (grades.report.paper.BENCHMARKS)
BENCHMARKS = ("boolq", "piqa", "siqa", "hellaswag", "winogrande", "openbookqa", "arc_challenge", "arc_easy")
_ANSWERS = tuple(f"answer{i}" for i in range(1, 6))
#: the words LLM-Adapters looks for in a response, per benchmark, in its order
ANSWER_WORDS: dict[str, tuple[str, ...]] = {
    "boolq": ("true", "false"), "piqa": ("solution1", "solution2"), "siqa": _ANSWERS,
    "hellaswag": tuple(f"ending{i}" for i in range(1, 5)), "winogrande": ("option1", "option2"),
    "openbookqa": _ANSWERS, "arc_challenge": _ANSWERS, "arc_easy": _ANSWERS,
}
_PATTERNS = {b: re.compile("|".join(map(re.escape, words))) for b, words in ANSWER_WORDS.items()}


def wrap(instruction: str, input: str = "") -> str:
    """The prompt a model is trained and scored on: the instruction (and input) in the Alpaca
    prompt, ending with ``"### Response:\\n"``; the response follows directly."""
    if input:
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=input)
    return PROMPT.format(instruction=instruction)


def response(answer: str) -> str:
    """The training target of an item whose answer word is ``answer``."""
    return RESPONSE.format(answer=answer)


def parse_answer(benchmark: str, text: str) -> str:
    """The first answer word of ``benchmark`` in a response ("" when there is none), as
    LLM-Adapters reads its generations (``re.findall(...)[0]``, case-sensitive)."""
    m = _PATTERNS[benchmark].search(str(text).strip())
    return m.group(0) if m else ""


# ------------------------------------------------------------------ instructions
def _options(word: str, texts: Sequence[str], sep: str = " ") -> str:
    """'Answer1: a Answer2: b' (``word`` capitalised, numbered from 1)."""
    return sep.join(f"{word.capitalize()}{i}: {t}" for i, t in enumerate(texts, 1))


def _format(word: str, n: int) -> str:
    return "Answer format: " + "/".join(f"{word}{i}" for i in range(1, n + 1))


def _choose(lead: str, word: str, texts: Sequence[str]) -> str:
    return f"{lead}\n\n{_options(word, texts)}\n\n{_format(word, len(texts))}"


def _index(doc: Mapping[str, Any]) -> int:
    """0-based gold index of an ARC / OpenBookQA row (``answerKey`` among ``choices.label``:
    letters A-E, or digits 1-5 for a few ARC rows)."""
    labels = [str(x).strip() for x in doc["choices"]["label"]]
    return labels.index(str(doc["answerKey"]).strip())


def boolq(doc: Mapping[str, Any]) -> tuple[str, str, int]:
    """BoolQ (``question``, ``label`` 1 = true; or ``answer`` as a bool): the question alone."""
    gold = bool(int(doc["label"])) if "label" in doc else bool(doc["answer"])
    instr = f"Please answer the following question with true or false, question: {doc['question']}?\n\n" \
            f"Answer format: true/false"
    return instr, "true" if gold else "false", 2


def piqa(doc: Mapping[str, Any]) -> tuple[str, str, int]:
    """PIQA (``goal``, ``sol1``, ``sol2``, ``label`` 0/1): the options on lines of their own."""
    options = _options("solution", [doc["sol1"], doc["sol2"]], sep="\n\n")
    instr = f"Please choose the correct solution to the question: {doc['goal']}\n\n{options}\n\n{_format('solution', 2)}"
    return instr, f"solution{int(doc['label']) + 1}", 2


def siqa(doc: Mapping[str, Any]) -> tuple[str, str, int]:
    """Social IQa: a Hub row (``context``, ``question``, ``answerA``-``C``, ``label`` "1"-"3")
    or one of our prepared multiple-choice rows (``choices``, 0-based ``label``)."""
    if "choices" in doc:
        texts, gold = list(doc["choices"]), int(doc["label"])
    else:
        texts, gold = [doc["answerA"], doc["answerB"], doc["answerC"]], int(doc["label"]) - 1
    instr = _choose(f"Please choose the correct answer to the question: {doc['context']} {doc['question']}",
                    "answer", texts)
    return instr, f"answer{gold + 1}", len(texts)


def hellaswag(doc: Mapping[str, Any]) -> tuple[str, str, int]:
    """HellaSwag (``activity_label``, ``ctx``, ``endings``, ``label`` "0"-"3")."""
    instr = _choose(f"Please choose the correct ending to complete the given sentence: "
                    f"{doc['activity_label']}: {doc['ctx']}", "ending", list(doc["endings"]))
    return instr, f"ending{int(doc['label']) + 1}", len(doc["endings"])


def winogrande(doc: Mapping[str, Any]) -> tuple[str, str, int]:
    """WinoGrande (``sentence`` with ``_``, ``option1``, ``option2``, ``answer`` "1"/"2"): options
    and answer format on one line, as in commonsense-170k."""
    instr = (f"Please choose the correct answer to fill in the blank to complete the given sentence: "
             f"{doc['sentence']}\n\n{_options('option', [doc['option1'], doc['option2']])} {_format('option', 2)}")
    return instr, f"option{int(doc['answer'])}", 2


def openbookqa(doc: Mapping[str, Any]) -> tuple[str, str, int]:
    """OpenBookQA (``question_stem``, ``choices`` {text, label}, ``answerKey``)."""
    texts = list(doc["choices"]["text"])
    instr = _choose(f"Please choose the correct answer to the question: {doc['question_stem']}", "answer", texts)
    return instr, f"answer{_index(doc) + 1}", len(texts)


def arc(doc: Mapping[str, Any]) -> tuple[str, str, int]:
    """ARC-Challenge and ARC-Easy (``question``, ``choices`` {text, label}, ``answerKey``; 3-5 options)."""
    texts = list(doc["choices"]["text"])
    instr = _choose(f"Please choose the correct answer to the question: {doc['question']}", "answer", texts)
    return instr, f"answer{_index(doc) + 1}", len(texts)


#: benchmark -> (row -> (instruction, gold answer word, number of options))
INSTRUCTIONS: dict[str, Callable[[Mapping[str, Any]], tuple[str, str, int]]] = {
    "boolq": boolq, "piqa": piqa, "siqa": siqa, "hellaswag": hellaswag, "winogrande": winogrande,
    "openbookqa": openbookqa, "arc_challenge": arc, "arc_easy": arc,
}


def item(benchmark: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    """One row of ``benchmark`` in this format: ``prompt`` (:func:`wrap` of its instruction),
    ``target`` (:func:`response`), ``answer`` (the gold word) and ``n_options``."""
    instr, gold, n = INSTRUCTIONS[benchmark](doc)
    return {"prompt": wrap(instr), "target": response(gold), "answer": gold, "n_options": n}


def exact_match(benchmark: str, text: str, gold: str) -> float:
    """1.0 when the answer parsed from a response is the gold word, else 0.0."""
    return float(parse_answer(benchmark, text) == gold)
