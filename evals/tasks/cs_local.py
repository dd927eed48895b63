"""lm-eval hooks of cs_siqa_local (see grades.evaluate.commonsense): Social IQa rows of a
prepared directory in the commonsense-170k text they were trained on."""

from grades.evaluate.commonsense import process_docs, process_results  # noqa: F401 - named by the YAML

siqa_docs = process_docs("siqa")
