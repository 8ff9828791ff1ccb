#!/usr/bin/env bash
# Set up the light scanner install and run the main job on the embedded demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh light
.venv/bin/ccu-vision demo --out "${1:-demo-out}"
