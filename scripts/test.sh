#!/usr/bin/env bash
# Set up the full install (training, benchmarks, tests) and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh full
.venv/bin/ruff check ccu_vision tests scripts
.venv/bin/python -m pytest "$@"
