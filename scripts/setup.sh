#!/usr/bin/env bash
# Create .venv with dbgfwd installed (editable). Usage: scripts/setup.sh [extra, e.g. test]
# Works on a fresh Debian with Python >= 3.10: installs python3-venv when the venv module is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
extra="${1:-}"
PY="${PYTHON:-python3}"

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  # Install only what is missing; apt-get update once.
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' || {
  echo "dbgfwd needs Python 3.10 or newer; $PY is $("$PY" --version 2>&1)" >&2; exit 2; }
if [ ! -x .venv/bin/python ]; then
  if ! "$PY" -m venv .venv 2>/dev/null; then
    rm -rf .venv
    ver=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    apt_install "python${ver}-venv" || apt_install python3-venv
    "$PY" -m venv .venv
  fi
fi
# Skip pip when this venv was already set up from the same pyproject.toml (demo.sh runs this every time).
stamp=".venv/.dbgfwd-setup${extra:+-$extra}"
want="$(sha256sum pyproject.toml | cut -d' ' -f1) $("$PY" --version 2>&1)"
mods="dbgfwd"; [ "$extra" = test ] && mods="dbgfwd torch pytest"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && .venv/bin/python -c 'import importlib.util as u, sys
sys.exit(not all(u.find_spec(m) for m in sys.argv[1:]))' $mods 2>/dev/null; then
  exit 0
fi
# pip's own chatter (build-backend notices, index warnings) only matters when it fails.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
pip_quiet() { .venv/bin/python -m pip install -q "$@" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }; }
echo "dbgfwd: setting up .venv (the first run downloads the dependencies)..." >&2
pip_quiet --upgrade pip
if [ -n "$extra" ]; then
  pip_quiet -e ".[$extra]"
else
  pip_quiet -e .
fi
if [ "$extra" = test ] && ! .venv/bin/python -c 'import torch' 2>/dev/null; then
  # The real-torchrun tests need torch; its CPU build is ~900 MB where plain `torch` is a 5 GB CUDA build.
  echo "dbgfwd: installing torch (CPU build) for the distributed-training tests..." >&2
  pip_quiet "torch==2.13.0+cpu" || pip_quiet torch
fi
echo "$want" > "$stamp"
