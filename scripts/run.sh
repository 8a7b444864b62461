#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job on the bundled tiny recipe.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/hcx data build recipes/tiny.yaml "$@"
