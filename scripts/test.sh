#!/usr/bin/env bash
# README command (2): set up, lint, then the fast tier (`pytest`, two workers), then the end-to-end tier
# (`pytest -m e2e -n 0`). Arguments go to every pytest run.
#
# The end-to-end tests mostly wait on the servers, daemons and pipeline runs they start, so one process
# running them leaves a core idle: they run as four streams side by side, each a `pytest -m e2e -n 0` over
# whole files, grouped so that the streams take about as long and the files sharing a session fixture
# (the transactions world: console, schemathesis, transactions API) stay in one process. The one full demo
# they all read (tests/demo_world.py) is built beside the fast tier and handed to them in
# BANKANOM_TEST_DEMO, so no stream waits for it. The tiny platform (tests/tiny_platform.py), which tests of
# both tiers copy, is built once before the fast tier (beside the demo's start) and handed to every worker
# and stream in BANKANOM_TEST_TINY, instead of once in each process that uses it.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/lint-imports

temp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$temp"' EXIT
# the online engine's numba kernel compiled once into its cache (20-40 CPU-s on a fresh clone), before the
# demo, the tiny platform and the test workers load it instead of each compiling it (docs/online.md)
.venv/bin/python -m bankanom_pipeline.online.compiled
.venv/bin/python -m tests.demo_world "$temp/demo" &
demo=$!
.venv/bin/python -m tests.tiny_platform "$temp/tiny" >"$temp/tiny.log" 2>&1 || {
  cat "$temp/tiny.log"
  exit 1
}
export BANKANOM_TEST_TINY="$temp/tiny"
.venv/bin/pytest "$@"
wait "$demo"
export BANKANOM_TEST_DEMO="$temp/demo"

# on two cores the tier is CPU-bound: grouped by each file's measured CPU-seconds (and the last run's
# seconds per stream), the distributed test's stream (which mostly waits on its deployment's backfill)
# taking more files than its CPU share; the crash and predict tests share the tiny day's run (the
# tiny_day_run fixture: one process, one run)
streams=(
  "tests/test_distributed.py tests/test_wheel.py tests/test_published.py tests/test_infra.py tests/test_mock_server.py tests/test_up_live.py tests/test_stream_kill9.py tests/test_snapshot_integrity.py tests/test_reconcile.py"
  "tests/test_crash_recovery.py tests/test_reader_during_run.py tests/test_predict_context.py"
  "tests/test_automation_e2e.py tests/test_lake.py tests/test_transactions.py tests/test_scale_out.py tests/test_api_abuse.py tests/test_demo_feedback.py tests/test_transaction_reranker.py"
)
pids=()
declare -A taken
for i in "${!streams[@]}"; do
  read -ra files <<<"${streams[$i]}"
  for f in "${files[@]}"; do taken[$f]=1; done
  .venv/bin/pytest -m e2e -n 0 --basetemp="$temp/stream$i" "$@" "${files[@]}" >"$temp/stream$i.log" 2>&1 &
  pids+=($!)
done
# the last stream, in the foreground: every other end-to-end file, that is every other test file that
# names the marker (collecting only those, not each fast-tier module again: ~6 CPU-s)
rest=()
while read -r f; do
  [ -n "${taken[$f]:-}" ] || rest+=("$f")
done < <(grep -rl --include='test_*.py' --include='*_test.py' e2e tests | sort)
status=0
.venv/bin/pytest -m e2e -n 0 --basetemp="$temp/rest" "$@" "${rest[@]}" || status=$?
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || status=$?
  echo "--- end-to-end tests run beside the others: ${streams[$i]}"
  cat "$temp/stream$i.log"
done
exit "$status"
