#!/usr/bin/env bash
# The vllm backend for real, on the CPU: hf <-> vLLM parity on SmolLM2-135M and Social IQa,
# with and without LoRA (docs/guides/vllm-cpu.md). Sets up .venv-vllm if needed
# (scripts/setup-vllm.sh), runs tests/vllm_parity there, exits non-zero on any failure and
# prints the parity figures last.
#
#   bash scripts/test-vllm.sh                 # everything (over an hour on a busy 2-core machine)
#   bash scripts/test-vllm.sh -k generation   # any pytest arguments
#
# Knobs (environment): GRADES_VLLM_THREADS (2), GRADES_VLLM_LIMIT (200 documents),
# GRADES_VLLM_GEN_LIMIT (50), GRADES_VLLM_LORA_STEPS (20), GRADES_VLLM_WORK
# (cache/vllm-parity), VLLM_VENV (.venv-vllm), VLLM_CPU_KVCACHE_SPACE (2 GiB).
set -uo pipefail
cd "$(dirname "$0")/.."

VENV=${VLLM_VENV:-.venv-vllm}
WORK=${GRADES_VLLM_WORK:-cache/vllm-parity}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false

t0=$SECONDS
VLLM_VENV="$VENV" bash scripts/setup-vllm.sh || { echo "test-vllm: setup failed" >&2; exit 1; }
setup_s=$((SECONDS - t0))
echo "test-vllm: setup took ${setup_s} s"

GRADES_VLLM_WORK="$WORK" "$VENV/bin/python" -m pytest -q -ra -p no:cacheprovider tests/vllm_parity "$@"
rc=$?
"$VENV/bin/python" tests/vllm_parity/parity_report.py "$WORK/parity.json" --setup-seconds "$setup_s"
exit $rc
