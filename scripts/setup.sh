#!/usr/bin/env bash
# Creates .venv and installs ditlens with its test dependencies (CPU torch 2.13.0), and
# Debian's headless Chromium for the web-app test. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
# constraints.txt: the exact torch (its CPU build) and diffusers the tests are run with
.venv/bin/python -m pip install -q -c constraints.txt -e '.[test]'

# tests/test_app.py drives the web app in Debian's chromium (no browser download). Best effort:
# where it cannot be installed, that test skips and prints why.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo -n"
  if command -v apt-get >/dev/null \
    && { $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } >/dev/null 2>&1; then
    :
  else
    echo "setup.sh: could not install chromium and chromium-driver; tests/test_app.py will skip" >&2
  fi
fi
