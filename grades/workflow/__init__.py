"""The workflow config: validation, expansion into runs, and what each job gets.

This package is the Snakefile's only logic.

The Snakefile imports this package as ``gw`` (``from grades import workflow as gw``) and
calls :func:`load` once at parse time; everything else it asks for comes from here:

* :mod:`grades.workflow.config` reads and loads a config (schema, defaults, sources, compare and sweeps);
* :mod:`grades.workflow.names` says which names may become paths and wildcards;
* :mod:`grades.workflow.plan` lists the runs of both targets and builds each run's config;
* :mod:`grades.workflow.jobs` gives each job its resources, launcher and evaluation arguments;
* :mod:`grades.workflow.memory` plans every GPU run's memory and refuses a run that cannot fit;
* :mod:`grades.workflow.launch` runs the shipped workflow from any directory
  (``python -m grades.workflow run``).
"""

from .config import SCHEMA, check_configfiles, check_sources, check_vlm_tasks, expand_extra, load, read_config
from .jobs import (IMAGE_DATASETS, conda_pythonpath, dumps, eval_args, eval_gpus, eval_tasks, is_image_dataset, is_vlm,
                   job_resources, model_regex, quote, tensor_parallel_size, train_launcher, train_nodes, uses_conda,
                   vllm_args, vlm_eval_args, vlm_models, vlm_prompt)
from .memory import check_memory, gpu_runs, plan_memory, plan_text
from .names import WILDCARD, check_names
from .plan import (PAPER_TABLES, PlannedRun, compare_models, compare_runs, deep_merge, enabled_models, run_config,
                   runs, setting_by_slug, slug, sweep_settings, write_run_config)

__all__ = ["SCHEMA", "IMAGE_DATASETS", "PAPER_TABLES", "WILDCARD", "PlannedRun", "check_configfiles", "check_memory",
           "check_names", "check_sources", "check_vlm_tasks", "read_config",
           "compare_models", "compare_runs", "conda_pythonpath", "deep_merge", "dumps", "enabled_models", "eval_args", "eval_gpus",
           "eval_tasks", "expand_extra", "gpu_runs", "is_image_dataset", "is_vlm", "job_resources", "load", "model_regex",
           "plan_memory", "plan_text", "quote", "run_config", "runs", "setting_by_slug", "slug", "sweep_settings", "tensor_parallel_size", "train_launcher", "train_nodes", "uses_conda",
           "vllm_args", "vlm_eval_args", "vlm_models", "vlm_prompt", "write_run_config"]
