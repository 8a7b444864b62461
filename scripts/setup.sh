#!/usr/bin/env bash
# Create .venv and install hcx with its test tools. Safe to re-run.
# torch is installed first at the pinned CPU-friendly version so that the package's
# torch range is already satisfied (no multi-GB CUDA download on CPU machines).
# Set HCX_TORCH_SPEC to install another build, e.g. HCX_TORCH_SPEC="torch==2.13.0 --index-url ...".
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  .venv/bin/python -m pip install -q ${HCX_TORCH_SPEC:-torch==2.13.0}
fi
.venv/bin/python -m pip install -q -e ".[dev]"
