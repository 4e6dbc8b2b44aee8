#!/usr/bin/env bash
# README command (2): set up, lint, then the fast tier (`pytest`, two workers), then the end-to-end tier
# (`pytest -m e2e -n 0`). Arguments go to every pytest run.
#
# The end-to-end tier runs as two streams side by side. The distributed, crash-recovery and
# reader-during-run tests bring their own servers and pipeline runs (the last two share one tiny
# prepared world per process: tests/tiny_k.py); the rest share one demo, so they stay in one process.
# Each stream mostly waits on its subprocesses (about one core busy), so two of them fit two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports
.venv/bin/pytest "$@"

apart=(tests/test_distributed.py tests/test_crash_recovery.py tests/test_reader_during_run.py)
temp=$(mktemp -d)
trap 'rm -rf "$temp"' EXIT
.venv/bin/pytest -m e2e -n 0 --basetemp="$temp/apart" "$@" "${apart[@]}" >"$temp/apart.log" 2>&1 &
side=$!
status=0
.venv/bin/pytest -m e2e -n 0 --basetemp="$temp/shared" "$@" "${apart[@]/#/--ignore=}" || status=$?
wait "$side" || status=$?
echo "--- end-to-end tests run beside the others: ${apart[*]}"
cat "$temp/apart.log"
exit "$status"
