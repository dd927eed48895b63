"""Evaluation through EleutherAI's lm-evaluation-harness (lm-eval 0.4.13): multiple choice and generation.

Three kinds of tasks:

* **local** tasks (``world_mc``, ``siqa_local``; templates in ``evals/tasks/``) read a
  prepared dataset directory (``test.jsonl`` + ``validation.jsonl``, rows
  ``{"id", "context", "question", "choices", "label"}``) whose path is only known at
  run time.  The templates are rendered into a temporary include dir with the data
  dir substituted, and lm-eval is pointed at it via
  ``TaskManager(include_path=..., include_defaults=False)``.  The prompt is
  lm-eval's own ``social_iqa`` prompt: ``"Q: {context} {question}\\nA:"`` + ``" "`` +
  choice. ``cs_siqa_local`` scores the same rows by generation in the commonsense-170k text.
* **shipped** tasks (``evals/tasks/commonsense``: ``cs_boolq``, ..., ``cs_arc_easy``): the
  eight commonsense benchmarks by generation, in the text a model is fine-tuned on
  (:mod:`grades.data.commonsense`), on the Hub's validation splits; used as they are.
* **standard** lm-eval tasks by name (``boolq``, ``piqa``, ``social_iqa``,
  ``hellaswag``, ``winogrande``, ``openbookqa``, ``arc_easy``, ``arc_challenge``, or
  any other name in lm-eval's registry).  They need their Hugging Face datasets in
  the local cache (or ``HF_HUB_OFFLINE=0``).

Library::

    from grades.evaluate import evaluate
    summary = evaluate("runs/x/model", tasks=["world_mc"], data="cache/data/world",
                       adapter="runs/x/adapter", out="runs/x/eval.json")

CLI::

    python -m grades.evaluate --model MODEL_DIR [--adapter ADAPTER_DIR] [--tokenizer DIR] \\
        --tasks world_mc[,siqa_local] --data DATA_DIR|task=DIR[,task=DIR] --out eval.json \\
        [--backend hf|vllm] [--batch-size 16] [--limit N] [--dtype float32] \\
        [--device cpu] [--num-fewshot 0] [--seed 0] [--samples-out samples.jsonl] [--threads N]

eval.json (written atomically) is described in :mod:`.summary`.

The package, by concern, in the order an evaluation uses them:

* :mod:`.errors` - what bad inputs raise (the CLI exits with 2);
* :mod:`.environment` - Hugging Face offline by default, quiet libraries, torch threads;
* :mod:`.tasks` - task names, the local templates and their rendering for a data dir;
* :mod:`.catalogue` - what a task scores: benchmark, protocol, split, metric, item count;
* :mod:`.commonsense` - the lm-eval hooks of the commonsense generation tasks;
* :mod:`.data` - the data dir of each local task and a check of its rows;
* :mod:`.adapters` - PEFT adapter config, LoRA rank for vLLM, merging an adapter;
* :mod:`.backend` - the options of a run and lm-eval's arguments for each backend;
* :mod:`.lm_eval_call` - the task manager, the preflight load, the lm-eval call;
* :mod:`.samples` - lm-eval's per-document samples and the per-item records;
* :mod:`.summary` - per-task summaries and the eval.json document;
* :mod:`.run` - :func:`evaluate`, the orchestration;
* :mod:`.cli` - ``python -m grades.evaluate``;
* :mod:`.listing` - ``python -m grades.evaluate tasks`` (what a model will be scored on).
"""

from .adapters import TOKENIZER_FILES, VLLM_LORA_RANKS, max_lora_rank, merge_adapter, read_adapter_config
from .backend import BACKENDS, MULTIMODAL_BACKENDS, EvalOptions, build_lm_eval_args
from .cli import build_parser, main
from .data import DATA_FILES, REQUIRED_FIELDS, check_data_dir, parse_data
from .environment import quiet_libraries, set_offline
from .errors import EvalConfigError, MissingInputError, TaskLoadError
from .lm_eval_call import task_manager
from .run import evaluate
from .summary import task_summary, to_number
from .tasks import STANDARD_TASKS, local_tasks, parse_tasks, render_tasks, shipped_tasks, split_tasks

set_offline()  # before lm_eval / datasets / huggingface_hub are imported

__all__ = [
    "BACKENDS", "DATA_FILES", "MULTIMODAL_BACKENDS", "REQUIRED_FIELDS", "STANDARD_TASKS", "TOKENIZER_FILES",
    "VLLM_LORA_RANKS", "EvalConfigError", "EvalOptions", "MissingInputError", "TaskLoadError",
    "build_lm_eval_args", "build_parser", "check_data_dir", "evaluate", "local_tasks", "main",
    "max_lora_rank", "merge_adapter", "parse_data", "parse_tasks", "quiet_libraries", "read_adapter_config",
    "render_tasks", "set_offline", "shipped_tasks", "split_tasks", "task_manager", "task_summary", "to_number",
]
