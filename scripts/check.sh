#!/usr/bin/env bash
# Lint, format and type checks, configured in pyproject.toml ([tool.ruff], [tool.mypy]).
# Run after scripts/setup.sh, which installs the pinned ruff and mypy (the test extras).
set -euo pipefail
cd "$(dirname "$0")/.."
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
