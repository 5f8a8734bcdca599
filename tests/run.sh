#!/usr/bin/env bash
# Set up everything and run the whole test suite: the README's second quick-start command and
# exactly what CI runs (.ci/run). Works on a fresh Debian machine with Python 3.10+.
set -euo pipefail
cd "$(dirname "$0")/.."

bash tests/install-tools.sh
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[test]'

.venv/bin/ruff check exporter tests bench
.venv/bin/python -m pytest "$@"
