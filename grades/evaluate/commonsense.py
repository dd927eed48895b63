"""lm-eval hooks of the commonsense generation tasks: documents in the training text, responses scored by their answer.

The tasks (``cs_<benchmark>`` in ``evals/tasks/commonsense`` over the Hub's rows, and
``cs_siqa_local`` over a prepared Social IQa directory) name these through the small
helper files beside their YAMLs. :func:`process_docs` gives every document the fields
the YAMLs read, from :func:`grades.data.commonsense.item`, the function that makes the
training rows: ``cs_prompt`` (the prompt, generation starts after it), ``cs_answer`` (the
gold answer word), ``cs_benchmark`` and ``cs_options`` (how many options the item has:
chance is 1/cs_options). :func:`process_results` scores one response:
``exact_match`` = 1 when the first answer word of the benchmark in it is the gold one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ..data.commonsense import BENCHMARKS, exact_match, item

#: the fields process_docs adds to a document
FIELDS = ("cs_benchmark", "cs_prompt", "cs_answer", "cs_options")


def doc_fields(benchmark: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The ``cs_*`` fields of one document of ``benchmark``."""
    it = item(benchmark, doc)
    return {"cs_benchmark": benchmark, "cs_prompt": it["prompt"], "cs_answer": it["answer"],
            "cs_options": it["n_options"]}


def process_docs(benchmark: str) -> Callable:
    """lm-eval's ``process_docs`` for a benchmark: the dataset with the :data:`FIELDS` added."""
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown commonsense benchmark {benchmark!r}; known: {list(BENCHMARKS)}")

    def add_fields(dataset):
        return dataset.map(lambda doc: doc_fields(benchmark, doc))

    add_fields.__name__ = f"{benchmark}_docs"
    return add_fields


def process_results(doc: Mapping[str, Any], results: list[str]) -> dict[str, float]:
    """lm-eval's ``process_results``: ``{"exact_match": 1.0 | 0.0}`` for the one response."""
    return {"exact_match": exact_match(doc["cs_benchmark"], results[0], doc["cs_answer"])}
