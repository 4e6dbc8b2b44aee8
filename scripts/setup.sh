#!/usr/bin/env bash
# Create .venv with Python 3.11 and install bankanom (editable) with its pinned dependencies, and make sure
# the Debian packages the tests start are there: chromium (the console's browser test; Playwright drives
# it, never `playwright install`), postgresql and redis-server (the distributed test's Dagster instance
# and Celery broker, started by the test on free loopback ports).
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
  else
    echo "warning: missing Debian packages: ${missing[*]}; 'apt-get install -y ${missing[*]}' as root," \
      "or the tests that need them fail" >&2
  fi
fi
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"bankanom needs Python 3.11, found {sys.version}"'
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet --no-compile -e ".[dev,deploy]"
# Every installed module is compiled to bytecode here, on all cores (pip would compile them one by one):
# with PYTHONDONTWRITEBYTECODE=1 (set on the development machines here) Python never caches what it
# compiles on import, so without this each process would compile every module it imports from source
.venv/bin/python -m compileall -q -j 0 "$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
