#!/usr/bin/env bash
# README command (1): set up, then run the main job on the embedded DuckDB file under data/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export DAGSTER_HOME="$PWD/dagster_home"
exec .venv/bin/bankanom demo "$@"
