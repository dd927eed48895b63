# GradES harness workflow: models x settings x seeds -> train -> eval -> tables, figures.
#
#   snakemake --cores all                                   # embedded default (config/config.yaml)
#   snakemake --cores all --configfile config/smoke.yaml    # CI smoke profile
#   snakemake -n --configfile config/paper.yaml --profile workflow/profiles/slurm
#   snakemake prefetch --configfile config/paper.yaml       # Hub downloads, on a login node
#   snakemake --cores all compare                           # second target: stopping methods compared
#   snakemake --cores all partial                           # tables and figures of the runs that exist now
#   snakemake --report report.html                          # browsable record of a finished run
#
# The wheel ships this file with workflow/ beside it (grades/_shipped/); without a checkout,
# `python -m grades.workflow run ARGS` takes the same arguments in any directory.
#
# All logic lives in the `grades` package; rules only wire files to its CLIs. Every rule
# runs the interpreter that runs Snakemake (`{params.py}`), so the environment that runs
# Snakemake (environment.yml, or `pip install 'grades-harness[workflow]'`) is the jobs'
# environment; with --use-conda each job runs in workflow/envs/grades.yaml instead.

import os
import shlex
import sys

from snakemake.exceptions import WorkflowError

from grades import resources as gr
from grades import workflow as gw
from grades.config import ConfigError

DEFAULT_CONFIG = str(gr.default_configfile())
if not config:  # a --configfile replaces the default instead of being merged into it
    try:  # the strict reader first: Snakemake's keeps the last of two equal keys, names no line
        gw.check_configfiles([DEFAULT_CONFIG])
    except ConfigError as e:
        raise WorkflowError(f"invalid configuration, nothing was run:\n{e}")

    configfile: DEFAULT_CONFIG


# jobs read the Hugging Face cache only (the `prefetch` target downloads, on a login node);
# an explicit HF_HUB_OFFLINE=0 in the environment is kept
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

try:
    gw.check_configfiles(workflow.configfiles)  # the --configfile files, read by the strict reader
    W = gw.load(config)
    if workflow.is_main_process:  # where jobs are submitted; not again inside each cluster job
        gw.check_memory(W)  # every GPU run fits its GPUs' memory (nothing to check without GPUs)
except ConfigError as e:
    raise WorkflowError(f"invalid configuration, nothing was run:\n{e}")

# Without --use-conda every job runs the interpreter running Snakemake (which has grades installed);
# with it, the `python` of the rule's conda environment (workflow/envs/grades.yaml), importing grades
# from this checkout (gw.conda_pythonpath).
USE_CONDA = gw.uses_conda(workflow)
PY = "python" if USE_CONDA else shlex.quote(sys.executable)
ENV = "../envs/grades.yaml"  # relative to workflow/rules/
PROFILE = W["profile"]
RUNS = gw.runs(W)
CACHE = f"cache/{PROFILE}"
RESULTS = f"results/runs/{PROFILE}"
LOGS = f"results/logs/{PROFILE}"
BENCH = f"results/benchmarks/{PROFILE}"
TABLES = f"results/tables/{PROFILE}"
FIGURES = f"figures/{PROFILE}"


report: "workflow/report/workflow.rst"


wildcard_constraints:  # names that can be wildcards and paths (grades.workflow.names)
    model=gw.WILDCARD,
    setting="[a-z0-9-]+",
    dataset=gw.WILDCARD,
    seed="[0-9]+",


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/bench.smk"
include: "workflow/rules/prefetch.smk"
include: "workflow/rules/compare.smk"


# cheap bookkeeping, and the prefetch that needs the login node's internet: never cluster jobs
localrules:
    run_config,
    matched_budget,
    tables,
    figures,
    partial,
    prefetch,


rule all:
    default_target: True
    input:
        rules.tables.output,
        rules.figures.output,
        MULTIMODAL_OUTPUTS,
