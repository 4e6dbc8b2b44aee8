#!/usr/bin/env bash
# README command (2): set up, lint, then the fast tier (`pytest`, two workers), then the end-to-end tier
# (`pytest -m e2e -n 0`, one process: its tests share one demo). Arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/pytest "$@"
.venv/bin/pytest -m e2e -n 0 "$@"
