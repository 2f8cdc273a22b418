#!/usr/bin/env bash
# Start one Celery worker for idem_platform (dagster-celery). Run one per process that should execute steps, on
# this machine or any other that has the project installed and reaches the same services:
#
#   IDEM_PG_DSN=postgresql://... IDEM_ES_URL=https://... IDEM_LAKE_DIR=/shared/lake DAGSTER_HOME=/srv/dagster \
#   IDEM_CELERY_BROKER=pyamqp://user:pass@broker-host:5672// deploy/celery/worker.sh [worker-name]
#
# Settings (environment):
#   IDEM_CELERY_BROKER, IDEM_CELERY_BACKEND, IDEM_CELERY_QUEUE   as in deploy/celery/definitions.py: the same values
#                                 everywhere (IDEM_CELERY_QUEUE is the queue the runs send their steps to)
#   IDEM_CELERY_WORKER_QUEUES     the queue(s) this worker takes tasks from, comma-separated
#                                 (default: IDEM_CELERY_QUEUE; `dagster-runs` for CeleryRunLauncher run workers)
#   IDEM_CELERY_CONCURRENCY       steps executed at once by this worker (default 1: start more workers instead)
#   IDEM_VENV                     the virtualenv with the project installed (default: the repository's .venv)
#
# SIGTERM or Ctrl-C (to the process group) is Celery's warm shutdown: the worker finishes its current step first.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bin="${IDEM_VENV:-$root/.venv}/bin"
export PATH="$bin:$PATH"   # dagster-celery starts the `celery` command of the same environment
export IDEM_CELERY_BROKER="${IDEM_CELERY_BROKER:-pyamqp://guest:guest@127.0.0.1:5672//}"
export IDEM_CELERY_BACKEND="${IDEM_CELERY_BACKEND:-rpc://}"
export IDEM_CELERY_QUEUE="${IDEM_CELERY_QUEUE:-dagster}"
: "${DAGSTER_HOME:?set DAGSTER_HOME to the instance directory (deploy/celery/dagster.yaml as its dagster.yaml)}"
: "${IDEM_PG_DSN:?set IDEM_PG_DSN: the workers write the warehouse, the ledger and the instance event log}"
name="${1:-idem-$(hostname -s)-$$}"
queues=()
IFS=',' read -ra listen <<< "${IDEM_CELERY_WORKER_QUEUES:-$IDEM_CELERY_QUEUE}"
for queue in "${listen[@]}"; do queues+=(-q "$queue"); done
exec "$bin/dagster-celery" worker start -A dagster_celery.app -y "$root/deploy/celery/celery.yaml" \
  "${queues[@]}" -n "$name" -l "${IDEM_CELERY_LOGLEVEL:-INFO}" \
  -- --concurrency "${IDEM_CELERY_CONCURRENCY:-1}" --without-gossip --without-mingle
