#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job on the bundled tiny recipe: every stage built
# so far, each resuming or skipping what an earlier run finished. Extra arguments go to every
# stage, e.g. `bash scripts/run.sh --set ...` is not useful across sections; use RECIPE=... instead.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
RECIPE=${RECIPE:-recipes/tiny.yaml}
hcx=.venv/bin/hcx
stage() { echo; echo "=== hcx $* ($(date +%H:%M:%S))"; "$hcx" "$@"; }
stage data build "$RECIPE"
stage tokenizer train "$RECIPE"
stage pretrain "$RECIPE"
stage sft "$RECIPE"
stage rm "$RECIPE"
stage ppo "$RECIPE"
echo; echo "=== done ($(date +%H:%M:%S)); artifacts under runs/"
