"""The eight commonsense benchmarks: their Hub copies and the item counts of their scorable splits.

The counts decide which split a published accuracy can come from: a score over n items is
k/n, so a value printed with two decimals fits only some n (grades.report.splits). The
Hub copies are those lm-eval 0.4.13's own tasks read (``lm_eval/tasks/*``); the
commonsense generation tasks (``evals/tasks/commonsense``) read the same ones.

Splits listed are the labelled ones (an unlabelled test split cannot be scored), plus
the one test file of LLM-Adapters whose size differs from the Hub's split (PIQA: 1,830
items, its ``dataset/piqa/test.json``).
"""

from __future__ import annotations

#: benchmark -> (Hub dataset, config name or None)
HUB: dict[str, tuple[str, str | None]] = {
    "boolq": ("aps/super_glue", "boolq"), "piqa": ("baber/piqa", None), "siqa": ("lighteval/siqa", None),
    "hellaswag": ("Rowan/hellaswag", None), "winogrande": ("allenai/winogrande", "winogrande_xl"),
    "openbookqa": ("allenai/openbookqa", "main"), "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy"),
}
#: benchmark -> {split: items}; "llm-adapters" is LLM-Adapters' own test file where it differs
SPLITS: dict[str, dict[str, int]] = {
    "boolq": {"validation": 3270},
    "piqa": {"validation": 1838, "llm-adapters": 1830},
    "siqa": {"validation": 1954},
    "hellaswag": {"validation": 10042},
    "winogrande": {"validation": 1267},
    "openbookqa": {"validation": 500, "test": 500},
    "arc_challenge": {"validation": 299, "test": 1172},
    "arc_easy": {"validation": 570, "test": 2376},
}
#: lm-eval's own (log-likelihood) task of each benchmark
LM_EVAL_TASKS: dict[str, str] = {
    "boolq": "boolq", "piqa": "piqa", "siqa": "social_iqa", "hellaswag": "hellaswag", "winogrande": "winogrande",
    "openbookqa": "openbookqa", "arc_challenge": "arc_challenge", "arc_easy": "arc_easy",
}


def benchmark_of(dataset: str, name: str | None) -> str | None:
    """The benchmark whose Hub copy is ``dataset`` (config ``name``), or None."""
    for b, (d, n) in HUB.items():
        if d == dataset and (n or None) == (name or None):
            return b
    return None


def split_size(benchmark: str | None, split: str | None) -> int | None:
    """Items of ``split`` of ``benchmark``'s Hub copy, when known."""
    return SPLITS.get(benchmark or "", {}).get(split or "")
