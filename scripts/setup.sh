#!/usr/bin/env bash
# Install the project into the active Python environment (a venv is created by the
# callers when none is active). CPU torch comes first so that nothing pulls a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -c constraints.txt -e ".[dev]"
python -c "import torch, transformers, peft, lm_eval, snakemake; print('torch', torch.__version__, '| transformers', transformers.__version__, '| peft', peft.__version__, '| lm_eval', lm_eval.__version__, '| snakemake', snakemake.__version__)"
# the released GradES (PyPI grades==1.0.6) as a peer method ("grades-official"); its import
# name clashes with ours, so it lives in its own folder (git-ignored) and is loaded by path
python -m pip install -q --no-deps --target .peers/grades_official "grades==1.0.6"
