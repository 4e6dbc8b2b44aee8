#!/usr/bin/env bash
# README command (2): set up, lint, then the fast tier (`pytest`), then the end-to-end tier (`pytest -m e2e`).
# Arguments go to both pytest runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/pytest "$@"
.venv/bin/pytest -m e2e "$@"
