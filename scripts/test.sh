#!/usr/bin/env bash
# Set up everything the tests need (system packages, .venv) and run the whole suite.
# Needs root (or sudo) for apt packages and network namespaces: the SSH tests run real sshd hosts.
set -euo pipefail
cd "$(dirname "$0")/.."
source_pkgs=(openssh-server openssh-client socat iproute2 util-linux procps openmpi-bin)
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
missing=()
for pkg in "${source_pkgs[@]}"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
if [ ${#missing[@]} -gt 0 ]; then
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
fi
bash scripts/setup.sh test
# Two pytest-xdist workers, each taking whole test files: the suite mostly waits on real processes and networks, so
# two workers take about half as long on 2 cores. Tests are written so that two workers never meet: each worker
# takes ports from its own range (tests/conftest.py), and nothing is matched machine-wide by name alone.
# DBGFWD_TEST_WORKERS=0 runs everything in this one process (slower; tracebacks read more easily).
exec .venv/bin/python -m pytest -n "${DBGFWD_TEST_WORKERS:-2}" --dist loadfile "$@"
