# GradES harness workflow: models x settings x seeds -> train -> eval -> tables, figures.
#
#   snakemake --cores all                                   # embedded default (config/config.yaml)
#   snakemake --cores all --configfile config/smoke.yaml    # CI smoke profile
#   snakemake -n --configfile config/paper.yaml --profile workflow/profiles/slurm
#
# All logic lives in the `grades` package; rules only wire files to its CLIs.

import os
import shlex
import sys

from snakemake.exceptions import WorkflowError

from grades import workflow as gw
from grades.config import ConfigError

if not config:  # a --configfile replaces the default instead of being merged into it
    configfile: "config/config.yaml"

try:
    W = gw.load(config)
except ConfigError as e:
    raise WorkflowError(f"invalid configuration, nothing was run:\n{e}")

ENV = "../../environment.yml"  # rule files live in workflow/rules/; used with --use-conda
PY = shlex.quote(sys.executable)  # the interpreter running snakemake, which has grades installed
PROFILE = W["profile"]
RUNS = gw.runs(W)
CACHE = f"cache/{PROFILE}"
RESULTS = f"results/runs/{PROFILE}"
LOGS = f"results/logs/{PROFILE}"
BENCH = f"results/benchmarks/{PROFILE}"
TABLES = f"results/tables/{PROFILE}"
FIGURES = f"figures/{PROFILE}"

wildcard_constraints:
    model="[A-Za-z0-9_.-]+",
    setting="[a-z0-9-]+",
    dataset="[A-Za-z0-9_.-]+",
    seed="[0-9]+",


include: "workflow/rules/common.smk"
include: "workflow/rules/prepare.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"


rule all:
    default_target: True
    input:
        rules.tables.output,
        rules.figures.output,
        MULTIMODAL_OUTPUTS,
