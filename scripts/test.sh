#!/usr/bin/env bash
# Set up (system packages the tests drive, then scripts/setup.sh), lint, and run the whole test
# suite on the shared data. The tests use real programs, never stand-ins:
#   chromium + fonts-nanum  the pages' browser tests (Playwright drives Debian's Chromium; Hangul glyphs)
#   postgresql              a throwaway PostgreSQL server for the event-store and red-team tests
#   bubblewrap              the code sandbox's read-only filesystem view
# Missing ones are installed with apt when it is there (as root, or through sudo); otherwise
# the script names them and stops.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v chromium >/dev/null || missing+=(chromium)
fc-list 2>/dev/null | grep -i nanum >/dev/null || missing+=(fonts-nanum)
command -v initdb >/dev/null || compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
command -v bwrap >/dev/null || missing+=(bubblewrap)
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=$([ "$(id -u)" = 0 ] && echo "" || { command -v sudo >/dev/null && echo "sudo -n"; } || echo "none")
  if ! command -v apt-get >/dev/null || [ "$SUDO" = none ]; then
    echo "The tests need these system packages: ${missing[*]}." >&2
    echo "Install them (Debian/Ubuntu: sudo apt-get install ${missing[*]}), then run this again." >&2
    exit 1
  fi
  echo "installing ${missing[*]} with apt-get"
  $SUDO apt-get install -y -q "${missing[@]}" >/dev/null 2>&1 \
    || { $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q "${missing[@]}" >/dev/null; }
fi

bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/python -m pytest -q "$@"
