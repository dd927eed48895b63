#!/usr/bin/env bash
# The test suite, including the end-to-end smoke workflow (marked slow).
set -euo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python -m pytest -q -ra --durations=25 "$@"
