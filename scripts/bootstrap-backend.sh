#!/bin/sh
# Starts the backend on a cluster instance: awsctl up pushes it with the
# `backend` binary and runs it in that directory. Safe to rerun: a backend
# it started before is replaced.
#
# Environment: INSTANCE_ID, CLUSTER_NAME (required); BIND_ADDR (0.0.0.0) and
# PORT (8000): where the backend listens; SERVICE_MODE: systemd (a unit,
# lb-backend.service: Amazon Linux 2023), nohup (a detached process, its PID
# in backend.pid), or auto (systemd where systemd runs, else nohup).
set -eu
dir=$(cd "$(dirname "$0")" && pwd)
: "${INSTANCE_ID:?INSTANCE_ID is required}" "${CLUSTER_NAME:?CLUSTER_NAME is required}"
bind=${BIND_ADDR:-0.0.0.0}
port=${PORT:-8000}
mode=${SERVICE_MODE:-auto}
if [ "$mode" = auto ]; then
    mode="nohup"
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then mode=systemd; fi
fi
sudo=
[ "$(id -u)" = 0 ] || sudo="sudo -n"
set -- "$dir/backend" --host "$bind" --port "$port" --instance-id "$INSTANCE_ID" \
    --cluster "$CLUSTER_NAME" --quiet

# Stops the process in pid file $1 if it still runs our binary $2.
stop_old() {
    [ -f "$1" ] || return 0
    old=$(cat "$1")
    if [ -n "$old" ] && kill -0 "$old" 2>/dev/null &&
        tr '\0' ' ' <"/proc/$old/cmdline" 2>/dev/null | grep -q "^$2 "; then
        kill "$old" 2>/dev/null || true
        i=0
        while kill -0 "$old" 2>/dev/null && [ $i -lt 50 ]; do
            sleep 0.1
            i=$((i + 1))
        done
        kill -9 "$old" 2>/dev/null || true
    fi
    rm -f "$1"
}

start_systemd() {
    $sudo tee /etc/systemd/system/lb-backend.service >/dev/null <<UNIT
[Unit]
Description=lb backend $INSTANCE_ID ($CLUSTER_NAME)
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$*
User=$(id -un)
Restart=always
RestartSec=1
LimitNOFILE=65536

[Install]
WantedBy=multi-user.target
UNIT
    $sudo systemctl daemon-reload
    $sudo systemctl enable --quiet lb-backend.service
    $sudo systemctl restart lb-backend.service
    systemctl show -p MainPID --value lb-backend.service >"$dir/backend.pid"
}

start_nohup() {
    stop_old "$dir/backend.pid" "$dir/backend"
    command -v setsid >/dev/null 2>&1 && set -- setsid "$@"
    nohup "$@" >"$dir/backend.log" 2>&1 </dev/null &
    echo $! >"$dir/backend.pid"
}

# Waits up to 10 s for /health to answer 200.
wait_healthy() {
    host=$bind
    [ "$host" = 0.0.0.0 ] && host=127.0.0.1
    i=0
    while [ $i -lt 100 ]; do
        pid=$(cat "$dir/backend.pid")
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "backend exited at start:" >&2
            tail -n 20 "$dir/backend.log" >&2 2>/dev/null || true
            return 1
        fi
        if ! command -v curl >/dev/null 2>&1; then
            sleep 1
            kill -0 "$pid" 2>/dev/null && return 0
        elif curl -fsS -m 2 -o /dev/null "http://$host:$port/health" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    echo "backend does not answer http://$host:$port/health after 10 s" >&2
    return 1
}

"start_$mode" "$@"
wait_healthy
echo "backend $INSTANCE_ID ($CLUSTER_NAME) on $bind:$port, $mode, pid $(cat "$dir/backend.pid")"
