#!/bin/sh
# Starts the proxy on the load-balancer instance: awsctl up pushes it with
# the `proxy` binary, its configuration (proxy.json), its environment
# (proxy.env, NAME='value' lines) and lib/libcjson.so.1, and runs it in that
# directory. Safe to rerun: a proxy it started before is replaced.
#
# The proxy links libcurl, libxml2 and cJSON dynamically: missing ones are
# installed with dnf where there is dnf, and cJSON falls back to lib/.
# Environment: BIND_ADDR (0.0.0.0) and PORT (8000): where proxy.json makes
# it listen; SERVICE_MODE: see bootstrap-service.sh (unit lb-proxy.service,
# or PID in proxy.pid).
set -eu
dir=$(cd "$(dirname "$0")" && pwd)
bind=${BIND_ADDR:-0.0.0.0}
port=${PORT:-8000}
# shellcheck source-path=SCRIPTDIR source=bootstrap-service.sh
. "$dir/bootstrap-service.sh"
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

if [ "$mode" = nohup ]; then # a unit reads proxy.env itself (EnvironmentFile)
    set -a
    # shellcheck source=/dev/null
    . "$dir/proxy.env"
    set +a
fi
start_service proxy "lb proxy" 1048576 "EnvironmentFile=$dir/proxy.env
${libpath:+Environment=LD_LIBRARY_PATH=$libpath
}" "$dir/proxy" --config "$dir/proxy.json" --log-level info
wait_answering proxy /
echo "proxy on $bind:$port, $mode, pid $(cat "$dir/proxy.pid")${libpath:+, cJSON from lib/}"
