#!/usr/bin/env bash
# The API against its own OpenAPI document: schemathesis with every check, a fixed seed, one worker.
#   scripts/schemathesis.sh URL KEY [EXAMPLES] [SEED] [more `st run` options...]
# e.g. scripts/schemathesis.sh http://127.0.0.1:8080 change-me 200 42 --max-time 900
# Exit status 0 means no failure. tests/test_schemathesis.py runs it with a few examples per operation.
# One worker: with several, Python 3.11's ast module can fail inside Hypothesis ("AST constructor
# recursion depth mismatch"), a tool error rather than the API's.
set -euo pipefail
url=${1:?usage: scripts/schemathesis.sh URL KEY [EXAMPLES] [SEED] [st run options...]}
key=${2:?usage: scripts/schemathesis.sh URL KEY [EXAMPLES] [SEED] [st run options...]}
examples=${3:-200}
seed=${4:-42}
shift $(($# < 4 ? $# : 4))
python=${PYTHON:-"$(dirname "$0")/../.venv/bin/python"}
exec "$python" -m schemathesis.cli run "$url/openapi.json" -H "X-API-Key: $key" \
  --checks all --max-examples "$examples" --seed "$seed" --workers 1 "$@"
