#!/usr/bin/env bash
# Quick start: set up dbgfwd in .venv and run the local demo (4 ranks). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/dbgfwd demo "$@"
