# lib.sh: helpers for the benchmark scripts in tests/bench (sourced, after scripts/lib/common.sh).
#   bench_free_port START      print the first port from START up that nothing listens on
#   bench_wait_http URL SECS   wait until URL answers 2xx; false after SECS seconds
#   bench_wrk OUT CMD...       run CMD (wrk, possibly behind taskset; bounded in time) with its
#                              report in OUT
#   bench_rps OUT              requests/s from a wrk report
#   bench_errors OUT           "socket errors: ..., non-2xx: N" from a wrk report (zeros if none)
#   bench_ratio A B            A / B with two decimals
#   bench_build DIR TARGET...  configure DIR (under the repository root) as an optimised build
#                              without sanitizers, as gb_build_release does for build/, and
#                              build TARGET...; the log goes to var/log/build-bench.log
#   bench_stop_pid PID         SIGTERM, up to 10 s for PID to exit, then SIGKILL; reaps it
#   bench_metric URL NAME      the value of metric NAME (no labels) in the Prometheus text at URL
#   bench_rss_kb PID           resident memory of PID in KiB (VmRSS)
#   bench_hwm_kb PID           peak resident memory of PID in KiB (VmHWM)
#   bench_wait_ingest URL SECS wait until gloveboxd at URL has no ingest request waiting and its
#                              gb_ingest_messages_total stopped moving; false after SECS seconds
#   bench_field OUT KEY        the value of KEY=... on the "GB_WRK" line of a wrk report written
#                              by tests/bench/agent.lua
#   bench_seconds DURATION     "15s" or "1m" as whole seconds; fails (with a message) otherwise
#   bench_pins PIN             sets the arrays bench_server_pin (core 0) and bench_client_pin (the
#                              other cores) to taskset prefixes when PIN is 1, else to nothing
#   run_child CMD...           runs CMD in the background and waits for it, so that a signal's
#                              trap runs at once (and stops it) rather than after CMD; CMD is a
#                              program (timeout bounds it), not a function; sets child_pid
#   bench_calc EXPR            an awk arithmetic expression, printed with two decimals
#   bench_nginx_start DIR PORT CONNECTIONS HTTP SERVER
#                              nginx with one worker (pinned as the server under test), its
#                              files under DIR, on 127.0.0.1:PORT, with CONNECTIONS worker
#                              connections; HTTP and SERVER are directives for its http and
#                              server blocks; sets nginx_pid (the caller waits for it to answer)
#   bench_cpu_ticks PID...     CPU time (user + system, in clock ticks) used so far by the PIDs
#                              that still run
#   bench_pg_pids DATADIR      the postmaster of the cluster in DATADIR and its children
# shellcheck shell=bash

bench_port_in_use() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

bench_free_port() {
    local port=$1
    while bench_port_in_use "$port"; do
        port=$((port + 1))
    done
    echo "$port"
}

bench_wait_http() {
    local url=$1 i
    for ((i = 0; i < $2 * 10; i++)); do
        if curl -fsS -o /dev/null --max-time 2 "$url" 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    return 1
}

bench_wrk() {
    local out=$1
    shift
    # wrk stops by itself after -d; the outer timeout only guards against a hang.
    timeout 120 "$@" >"$out" 2>&1
}

bench_rps() {
    awk '/^Requests\/sec:/ { print $2 }' "$1"
}

bench_errors() {
    local sock non2xx
    sock=$(sed -n 's/^ *Socket errors: //p' "$1")
    non2xx=$(awk '/Non-2xx or 3xx responses:/ { print $NF }' "$1")
    printf 'socket errors: %s; non-2xx/3xx: %s\n' \
        "${sock:-connect 0, read 0, write 0, timeout 0}" "${non2xx:-0}"
}

bench_ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f\n", a / b; else print "n/a" }'
}

bench_build() {
    local dir=$1 log=$GB_ROOT/var/log/build-bench.log
    shift
    gb_run_logged "$log" cmake -S "$GB_ROOT" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DGB_ASAN=OFF -DGB_UBSAN=OFF -DGB_FUZZ=OFF || return
    local args=() t
    for t in "$@"; do
        args+=(--target "$t")
    done
    gb_run_logged "$log" cmake --build "$dir" -j "$GB_JOBS" "${args[@]}"
}

bench_stop_pid() {
    local pid=$1 i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# bench_cleanup CLUSTER_DIR TMP_DIR [PID...]: what every benchmark does on exit: stops the
# processes in the order given (empty ones skipped), stops the cluster in CLUSTER_DIR and removes
# TMP_DIR (kept when GB_BENCH_KEEP=1). Empty directory arguments are skipped too.
bench_cleanup() {
    local cluster=$1 tmpdir=$2 pid
    shift 2
    for pid in "$@"; do
        if [ -n "$pid" ]; then
            bench_stop_pid "$pid"
        fi
    done
    if [ -n "$cluster" ]; then
        "$GB_ROOT/scripts/lib/pg-cluster" stop "$cluster" || true
    fi
    if [ -n "$tmpdir" ]; then
        if [ "${GB_BENCH_KEEP:-0}" = 1 ]; then
            gb_msg "kept $tmpdir"
        else
            rm -rf "$tmpdir"
        fi
    fi
}

bench_metric() {
    # awk reads to the end: leaving early would cut curl's pipe and fail the pipeline.
    curl -fsS --max-time 5 "$1/metrics" | awk -v n="$2" '$1 == n && v == "" { v = $2 } END { print v }'
}

bench_rss_kb() {
    awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"
}

bench_hwm_kb() {
    awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"
}

bench_wait_ingest() {
    local url=$1 i waiting total last=
    for ((i = 0; i < $2 * 5; i++)); do
        waiting=$(bench_metric "$url" gb_ingest_waiting || true)
        total=$(bench_metric "$url" gb_ingest_messages_total || true)
        if [ "$waiting" = 0 ] && [ -n "$total" ] && [ "$total" = "$last" ]; then
            return 0
        fi
        last=$total
        sleep 0.2
    done
    return 1
}

bench_field() {
    awk -v k="$2" '$1 == "GB_WRK" {
        for (i = 2; i <= NF; i++) {
            if (index($i, k "=") == 1) { print substr($i, length(k) + 2); exit }
        }
    }' "$1"
}

bench_calc() {
    awk "BEGIN { printf \"%.2f\\n\", $1 }"
}

bench_seconds() {
    local s
    case "$1" in
        *m) s=$((${1%m} * 60)) ;;
        *s) s=${1%s} ;;
        *) s=$1 ;;
    esac
    if ! [[ "$s" =~ ^[0-9]+$ ]]; then
        echo "GB_BENCH_DURATION: seconds (15s) or minutes (1m), not '$1'" >&2
        return 1
    fi
    echo "$s"
}

# The arrays are for the sourcing script.
# shellcheck disable=SC2034
bench_pins() {
    bench_server_pin=()
    bench_client_pin=()
    if [ "$1" = 1 ]; then
        bench_server_pin=(taskset -c 0)
        if [ "$(nproc)" -gt 1 ]; then
            bench_client_pin=(taskset -c "1-$(($(nproc) - 1))")
        fi
    fi
}

run_child() {
    "$@" &
    child_pid=$!
    local rc=0
    wait "$child_pid" || rc=$?
    child_pid=
    return "$rc"
}

bench_nginx_start() {
    local dir=$1 port=$2 conns=$3 http=$4 server=$5
    mkdir -p "$dir"
    cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile $((conns * 2 + 64));
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
    worker_connections $conns;
}
http {
    access_log off;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 60s;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
$http
    server {
        listen 127.0.0.1:$port;
$server
    }
}
CONF
    "${bench_server_pin[@]}" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" &
    nginx_pid=$!
}

bench_cpu_ticks() {
    local pid total=0 t
    for pid in "$@"; do
        # Fields 14 and 15 of /proc/PID/stat, counted after the command name's closing ")".
        # A PID that has exited gives no line, and counts 0.
        t=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | awk '{ print $12 + $13 }')
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

bench_pg_pids() {
    local pm
    pm=$(head -n 1 "$1/postmaster.pid" 2>/dev/null) || return 1
    echo "$pm" $(pgrep -P "$pm")
}
