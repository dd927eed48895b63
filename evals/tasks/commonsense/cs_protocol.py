"""lm-eval hooks of the commonsense generation tasks (cs_*): see grades.evaluate.commonsense.

The prompt, the answer words and their parsing are grades.data.commonsense's, the module
that makes the training rows, so this file only binds one document hook per benchmark."""

from grades.evaluate.commonsense import process_docs, process_results  # noqa: F401 - named by the YAMLs

boolq_docs = process_docs("boolq")
piqa_docs = process_docs("piqa")
siqa_docs = process_docs("siqa")
hellaswag_docs = process_docs("hellaswag")
winogrande_docs = process_docs("winogrande")
openbookqa_docs = process_docs("openbookqa")
arc_challenge_docs = process_docs("arc_challenge")
arc_easy_docs = process_docs("arc_easy")
