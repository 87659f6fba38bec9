#!/usr/bin/env bash
# The README's test command: set up, then the lint and type checks (scripts/check.sh) beside the
# test suite. The suite runs mostly on one core, so the checks (a cold mypy takes about a minute)
# run on the other meanwhile; their output follows the suite's. Fails if either fails.
set -uo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh || exit
checks_log=$(mktemp)
bash scripts/check.sh > "$checks_log" 2>&1 &
checks=$!
.venv/bin/python -m pytest "$@"
tests=$?
wait "$checks"
checked=$?
echo "--- scripts/check.sh (ruff, mypy) ---"
cat "$checks_log"
rm -f "$checks_log"
[ "$tests" -eq 0 ] && [ "$checked" -eq 0 ]
