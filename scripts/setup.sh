#!/usr/bin/env bash
# Creates .venv and installs ditlens with its test dependencies (CPU torch 2.13.0).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test]'
