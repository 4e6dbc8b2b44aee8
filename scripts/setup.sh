#!/usr/bin/env bash
# Create .venv with Python 3.11 and install bankanom (editable) with its pinned dependencies, and make sure
# Debian's chromium is there for the console's browser tests (Playwright drives it; never `playwright install`).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
  else
    echo "warning: /usr/bin/chromium is missing and this is not root: 'apt-get install -y chromium' as root," \
      "or the console's browser test fails" >&2
  fi
fi
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11), f"bankanom needs Python 3.11, found {sys.version}"'
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
