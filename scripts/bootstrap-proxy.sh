#!/bin/sh
# Starts the proxy on the load-balancer instance: awsctl up pushes it with
# the `proxy` binary, its configuration (proxy.json), its environment
# (proxy.env, NAME='value' lines) and lib/libcjson.so.1, and runs it in that
# directory. Safe to rerun: a proxy it started before is replaced.
#
# The proxy links libcurl, libxml2 and cJSON dynamically: missing ones are
# installed with dnf where there is dnf, and cJSON falls back to lib/.
# Environment: BIND_ADDR (0.0.0.0) and PORT (8000): where proxy.json makes
# it listen; SERVICE_MODE: systemd (unit lb-proxy.service), nohup (PID in
# proxy.pid) or auto, as for bootstrap-backend.sh.
set -eu
dir=$(cd "$(dirname "$0")" && pwd)
bind=${BIND_ADDR:-0.0.0.0}
port=${PORT:-8000}
mode=${SERVICE_MODE:-auto}
if [ "$mode" = auto ]; then
    mode="nohup"
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then mode=systemd; fi
fi
sudo=
[ "$(id -u)" = 0 ] || sudo="sudo -n"
touch "$dir/proxy.env"

missing_libs() {
    ldd "$dir/proxy" 2>/dev/null | grep "not found" || true
}

if [ -n "$(missing_libs)" ] && command -v dnf >/dev/null 2>&1; then
    $sudo dnf install -y -q libcurl-minimal libxml2 cjson >/dev/null 2>&1 ||
        echo "dnf could not install all of libcurl-minimal libxml2 cjson" >&2
fi
libpath=
if [ -n "$(missing_libs)" ]; then
    libpath=$dir/lib
    LD_LIBRARY_PATH=$libpath
    export LD_LIBRARY_PATH
    if [ -n "$(missing_libs)" ]; then
        echo "libraries the proxy needs are missing:" >&2
        missing_libs >&2
        exit 1
    fi
fi
if ! "$dir/proxy" --config "$dir/proxy.json" --check >"$dir/proxy.check" 2>&1; then
    echo "the proxy refuses proxy.json:" >&2
    cat "$dir/proxy.check" >&2
    exit 1
fi
set -- "$dir/proxy" --config "$dir/proxy.json" --log-level info

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
    $sudo tee /etc/systemd/system/lb-proxy.service >/dev/null <<UNIT
[Unit]
Description=lb proxy
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$*
EnvironmentFile=$dir/proxy.env
${libpath:+Environment=LD_LIBRARY_PATH=$libpath}
User=$(id -un)
Restart=always
RestartSec=1
LimitNOFILE=1048576

[Install]
WantedBy=multi-user.target
UNIT
    $sudo systemctl daemon-reload
    $sudo systemctl enable --quiet lb-proxy.service
    $sudo systemctl restart lb-proxy.service
    systemctl show -p MainPID --value lb-proxy.service >"$dir/proxy.pid"
}

start_nohup() {
    stop_old "$dir/proxy.pid" "$dir/proxy"
    set -a
    # shellcheck source=/dev/null
    . "$dir/proxy.env"
    set +a
    command -v setsid >/dev/null 2>&1 && set -- setsid "$@"
    nohup "$@" >"$dir/proxy.log" 2>&1 </dev/null &
    echo $! >"$dir/proxy.pid"
}

# Waits up to 10 s for the proxy to answer anything on its port.
wait_listening() {
    host=$bind
    [ "$host" = 0.0.0.0 ] && host=127.0.0.1
    i=0
    while [ $i -lt 100 ]; do
        pid=$(cat "$dir/proxy.pid")
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "proxy exited at start:" >&2
            tail -n 20 "$dir/proxy.log" >&2 2>/dev/null || true
            return 1
        fi
        if ! command -v curl >/dev/null 2>&1; then
            sleep 1
            kill -0 "$pid" 2>/dev/null && return 0
        elif curl -sS -m 2 -o /dev/null "http://$host:$port/" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    echo "proxy does not answer on http://$host:$port/ after 10 s" >&2
    return 1
}

"start_$mode" "$@"
wait_listening
echo "proxy on $bind:$port, $mode, pid $(cat "$dir/proxy.pid")${libpath:+, cJSON from lib/}"
