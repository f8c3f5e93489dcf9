#!/bin/sh
# Sourced by bootstrap-backend.sh and bootstrap-proxy.sh (awsctl pushes it
# beside them): how a service is started, replaced when a bootstrap runs
# again, and waited for. The caller sets dir (its directory), bind and port.
# SERVICE_MODE: systemd (a unit, lb-NAME.service: Amazon Linux 2023), nohup
# (a detached process, its PID in NAME.pid), or auto (systemd where systemd
# runs, else nohup).
# shellcheck disable=SC2154 # dir, bind and port are the caller's
mode=${SERVICE_MODE:-auto}
if [ "$mode" = auto ]; then
    mode="nohup"
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then mode=systemd; fi
fi
sudo=
[ "$(id -u)" = 0 ] || sudo="sudo -n"

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

# start_service NAME DESCRIPTION NOFILE UNIT_LINES COMMAND...: runs COMMAND
# (the binary $dir/NAME) as lb-NAME.service, with UNIT_LINES (newline-ended
# lines, or "") in its [Service] section, or detached with its output in
# $dir/NAME.log; its PID goes in $dir/NAME.pid either way.
start_service() {
    name=$1 desc=$2 nofile=$3 extra=$4
    shift 4
    if [ "$mode" = systemd ]; then
        $sudo tee "/etc/systemd/system/lb-$name.service" >/dev/null <<UNIT
[Unit]
Description=$desc
After=network-online.target
Wants=network-online.target

[Service]
ExecStart=$*
User=$(id -un)
${extra}Restart=always
RestartSec=1
LimitNOFILE=$nofile

[Install]
WantedBy=multi-user.target
UNIT
        $sudo systemctl daemon-reload
        $sudo systemctl enable --quiet "lb-$name.service"
        $sudo systemctl restart "lb-$name.service"
        systemctl show -p MainPID --value "lb-$name.service" >"$dir/$name.pid"
        return
    fi
    stop_old "$dir/$name.pid" "$dir/$name"
    command -v setsid >/dev/null 2>&1 && set -- setsid "$@"
    nohup "$@" >"$dir/$name.log" 2>&1 </dev/null &
    echo $! >"$dir/$name.pid"
}

# wait_answering NAME PATH [CURL_FLAG]: waits up to 10 s for the service to
# answer GET PATH on bind:port (with -f: answer it with a success).
wait_answering() {
    host=$bind
    [ "$host" = 0.0.0.0 ] && host=127.0.0.1
    i=0
    while [ $i -lt 100 ]; do
        pid=$(cat "$dir/$1.pid")
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "$1 exited at start:" >&2
            tail -n 20 "$dir/$1.log" >&2 2>/dev/null || true
            return 1
        fi
        if ! command -v curl >/dev/null 2>&1; then
            sleep 1
            kill -0 "$pid" 2>/dev/null && return 0
        elif curl -sS ${3:+"$3"} -m 2 -o /dev/null "http://$host:$port$2" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
        i=$((i + 1))
    done
    echo "$1 does not answer http://$host:$port$2 after 10 s" >&2
    return 1
}
