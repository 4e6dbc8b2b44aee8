#!/bin/sh
# Every container checks the deployment settings first (storage mode, lake root, Celery broker, Dagster's
# Postgres), so a wrong setting stops it at once with a message naming the variable, not a stack trace
# deep inside a run. BANKANOM_SKIP_CHECK=1 skips it (e.g. for a one-off shell).
set -e
if [ "${BANKANOM_SKIP_CHECK:-0}" != 1 ]; then
  bankanom check-deployment >&2 || exit 2
fi
exec "$@"
