#!/usr/bin/env bash
# Idempotent set-up: system packages, a virtualenv at .venv, torch, and agentrl (editable).
#   scripts/setup.sh          runtime only
#   scripts/setup.sh dev      plus test tools
# torch: an already-installed torch (CPU, CUDA or ROCm build) is kept. Otherwise torch==$AGENTRL_TORCH
# is installed (default 2.13.0, the version this project's CI pins; on a CPU-only pip index it is
# the CPU wheel). Set AGENTRL_TORCH to choose another version.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

if ! command -v bwrap >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  if command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing bubblewrap (the python tool's sandbox)"
    $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bubblewrap >/dev/null
  else
    echo "[setup] WARNING: bubblewrap is missing and apt-get is not available; the python tool will refuse to run" >&2
  fi
fi

py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv"
  "$py" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch==${AGENTRL_TORCH:-2.13.0}"
  .venv/bin/pip install -q "torch==${AGENTRL_TORCH:-2.13.0}"
fi
torch_version=$(.venv/bin/python -c "import torch; print(torch.__version__.split('+')[0])")
spec="."
[ -n "$extras" ] && spec=".[$extras]"
stamp=".venv/.agentrl-setup-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras:-base}"
if [ ! -f "$stamp" ]; then
  echo "[setup] installing agentrl ${extras:+with [$extras] }(keeping torch $torch_version)"
  # The torch pin in the same command stops pip from replacing the installed build.
  .venv/bin/pip install -q -e "$spec" "torch==$torch_version"
  touch "$stamp"
fi
echo "[setup] ready: $(.venv/bin/python -c 'import agentrl, torch; print(f"agentrl {agentrl.__version__}, torch {torch.__version__}")')"
