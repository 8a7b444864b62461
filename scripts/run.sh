#!/usr/bin/env bash
# Set up (scripts/setup.sh) and run the main job: `hcx run` on the bundled tiny recipe, every
# stage from the shared raw text to the eval report of PPO next to SFT, as the event-driven
# pipeline (docs/pipeline.md). A re-run skips finished stages and resumes interrupted ones.
# RECIPE=... picks another recipe; extra arguments go to `hcx run` (e.g. --set ...).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/hcx run "${RECIPE:-recipes/tiny.yaml}" "$@"
