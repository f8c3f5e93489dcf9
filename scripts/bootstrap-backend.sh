#!/bin/sh
# Starts the backend on a cluster instance: awsctl up pushes it with the
# `backend` binary and runs it in that directory. Safe to rerun: a backend
# it started before is replaced.
#
# Environment: INSTANCE_ID, CLUSTER_NAME (required); BIND_ADDR (0.0.0.0) and
# PORT (8000): where the backend listens; SERVICE_MODE: see
# bootstrap-service.sh (unit lb-backend.service, or PID in backend.pid).
set -eu
dir=$(cd "$(dirname "$0")" && pwd)
: "${INSTANCE_ID:?INSTANCE_ID is required}" "${CLUSTER_NAME:?CLUSTER_NAME is required}"
bind=${BIND_ADDR:-0.0.0.0}
port=${PORT:-8000}
# shellcheck source-path=SCRIPTDIR source=bootstrap-service.sh
. "$dir/bootstrap-service.sh"

start_service backend "lb backend $INSTANCE_ID ($CLUSTER_NAME)" 65536 "" \
    "$dir/backend" --host "$bind" --port "$port" --instance-id "$INSTANCE_ID" \
    --cluster "$CLUSTER_NAME" --quiet
wait_answering backend /health -f
echo "backend $INSTANCE_ID ($CLUSTER_NAME) on $bind:$port, $mode, pid $(cat "$dir/backend.pid")"
