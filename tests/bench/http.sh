#!/usr/bin/env bash
# http.sh: HTTP throughput of gloveboxd against nginx, with wrk. A benchmark, not a test: ctest
# does not run it, and it exits 0 whenever it could measure (--strict: non-zero when a goal is
# missed). It builds build/ (optimised) if needed, starts a throwaway PostgreSQL cluster and
# gloveboxd on loopback ports with a temporary web directory holding a 1 KiB bench.txt, and nginx
# with one worker (its own configuration in the temporary directory, no access log, tuned for
# small files) serving the same file. Then, each run bounded to GB_BENCH_DURATION:
#   wrk -t2 -c50     nginx /bench.txt, gloveboxd /bench.txt, gloveboxd /healthz; requests/s
#                    and the gloveboxd/nginx ratios against the goal (>= 0.8)
#   wrk -t2 -c1000   gloveboxd /healthz; socket errors and non-2xx responses (goal: none)
# Everything it started is stopped on exit, Ctrl-C included.
#
# Both servers are single-threaded here (nginx: worker_processes 1; gloveboxd: one event loop),
# but on a 2-core machine they share the cores with wrk's two threads, so the absolute figures
# are lower than on a dedicated server and depend on what else runs; the ratio against nginx
# measured the same way is the figure to compare. GB_BENCH_PIN=1 pins the server under test to
# CPU 0 and wrk to the other CPUs instead.
#
# Usage: tests/bench/http.sh [--strict] [--help]
# Environment: GB_BENCH_DURATION (default 10s), GB_BENCH_THREADS (2), GB_BENCH_CONNECTIONS (50),
#   GB_BENCH_MANY (1000), GB_BENCH_GOAL (0.8), GB_BENCH_PIN (0), GB_BENCH_NGINX_ONLY=1 (measure
#   nginx alone, e.g. while gloveboxd does not build).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

GB_PROG=bench/http
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"
. "$GB_ROOT/scripts/lib/deps"
. "$GB_ROOT/tests/bench/lib.sh"
cd "$GB_ROOT"

DURATION=${GB_BENCH_DURATION:-10s}
THREADS=${GB_BENCH_THREADS:-2}
CONNS=${GB_BENCH_CONNECTIONS:-50}
MANY=${GB_BENCH_MANY:-1000}
GOAL=${GB_BENCH_GOAL:-0.8}
PIN=${GB_BENCH_PIN:-0}
PG_CLUSTER=$GB_ROOT/scripts/lib/pg-cluster
GLOVEBOXD=$GB_ROOT/build/server/src/gloveboxd

strict=0
tmp=
nginx_pid=
server_pid=
cluster_dir=
missed=0

usage() {
    gb_header_help "$0"
}

cleanup() {
    trap - INT TERM EXIT
    bench_cleanup "$cluster_dir" "$tmp" "$server_pid" "$nginx_pid"
}

bench_pins "$PIN"

# measure NAME URL CONNECTIONS: one wrk run; prints requests/s, the report stays in $tmp/NAME.
measure() {
    local out=$tmp/$1.wrk
    if ! bench_wrk "$out" "${bench_client_pin[@]}" wrk -t"$THREADS" -c"$3" -d"$DURATION" \
        --timeout 5s "$2"; then
        cat "$out" >&2
        gb_die "wrk against $2 failed"
    fi
    local rps
    rps=$(bench_rps "$out")
    [ -n "$rps" ] || { cat "$out" >&2; gb_die "no Requests/sec in wrk's report for $2"; }
    echo "$rps"
}

raise_fd_limit() {
    local want=$((MANY * 2 + 1024)) hard
    hard=$(ulimit -Hn)
    if [ "$hard" != unlimited ] && [ "$hard" -lt "$want" ]; then
        ulimit -Hn "$want" 2>/dev/null || gb_die "open files limited to $hard; $MANY connections need $want"
    fi
    ulimit -n "$want"
}

make_web_dir() {
    mkdir -p "$tmp/web"
    local i
    for ((i = 1; i <= 16; i++)); do
        printf '%063d\n' "$i"
    done >"$tmp/web/bench.txt" # 16 lines of 64 bytes: 1 KiB
    chmod 755 "$tmp" "$tmp/web"
    chmod 644 "$tmp/web/bench.txt"
}

start_nginx() {
    nginx_port=$(bench_free_port 18180)
    # Tuned for a small static file: descriptors and metadata cached, and no sendfile, so a
    # 1 KiB body leaves with its header in one write (both measured faster than the defaults).
    bench_nginx_start "$tmp/nginx" "$nginx_port" $((MANY + 1024)) "
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    sendfile off;
    default_type text/plain;" "
        root $tmp/web;"
    bench_wait_http "http://127.0.0.1:$nginx_port/bench.txt" 10 ||
        { cat "$tmp/nginx/error.log" >&2; gb_die "nginx did not start"; }
}

# start_gloveboxd: false (with a message) when gloveboxd cannot be built or does not serve.
start_gloveboxd() {
    if ! gb_build_release gloveboxd; then
        gb_msg "gloveboxd does not build (log: var/log/build-release.log)"
        return 1
    fi
    cluster_dir=$tmp/pg
    "$PG_CLUSTER" start "$cluster_dir" || { gb_msg "PostgreSQL did not start"; return 1; }
    export GLOVEBOX_DATABASE_URL
    GLOVEBOX_DATABASE_URL=$("$PG_CLUSTER" url "$cluster_dir")
    gloveboxd_port=$(bench_free_port 18280)
    "${bench_server_pin[@]}" "$GLOVEBOXD" serve --listen "127.0.0.1:$gloveboxd_port" --web-dir "$tmp/web" \
        --max-connections $((MANY + 1024)) --log-level warn >"$tmp/gloveboxd.log" 2>&1 &
    server_pid=$!
    if ! bench_wait_http "http://127.0.0.1:$gloveboxd_port/healthz" 30; then
        tail -n 20 "$tmp/gloveboxd.log" >&2
        gb_msg "gloveboxd did not answer /healthz"
        return 1
    fi
    local body
    body=$(curl -fsS --max-time 5 "http://127.0.0.1:$gloveboxd_port/bench.txt" 2>&1) || {
        gb_msg "gloveboxd does not serve /bench.txt: $body"
        return 1
    }
    [ "$body" = "$(cat "$tmp/web/bench.txt")" ] ||
        { gb_msg "gloveboxd serves a different /bench.txt"; return 1; }
}

# verdict RATIO: sets v to "met" or "MISSED" against GOAL (and missed=1 when missed). It sets a
# variable rather than printing: inside $(...) the missed flag would be lost with the subshell.
verdict() {
    if awk -v r="$1" -v g="$GOAL" 'BEGIN { exit !(r != "n/a" && r >= g) }'; then
        v=met
    else
        missed=1
        v=MISSED
    fi
}

main() {
    case "${1:-}" in
        -h | --help) usage; return 0 ;;
        --strict) strict=1 ;;
        "") ;;
        *) gb_die "unknown argument '$1' (see --help)" ;;
    esac
    gb_deps_install build run bench || gb_die "could not install the packages needed"
    raise_fd_limit
    trap 'cleanup; exit 130' INT
    trap 'cleanup; exit 143' TERM
    trap cleanup EXIT
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/glovebox-bench.XXXXXX")
    make_web_dir
    start_nginx

    local gloveboxd_ok=0
    if [ "${GB_BENCH_NGINX_ONLY:-0}" = 1 ]; then
        gb_msg "GB_BENCH_NGINX_ONLY=1: gloveboxd is not measured"
    elif start_gloveboxd; then
        gloveboxd_ok=1
    fi
    # The idle server keeps no CPU busy while the other is measured.
    local nginx_url=http://127.0.0.1:$nginx_port gb_url
    local n_file g_file g_health r_file r_health
    echo "wrk -t$THREADS -c$CONNS -d$DURATION, 1 KiB static file, $(nproc) CPU(s) shared by" \
        "server and wrk$([ "$PIN" = 1 ] && echo ', server pinned to CPU 0')"
    n_file=$(measure nginx-file "$nginx_url/bench.txt" "$CONNS")
    printf '  %-22s %-12s %10s req/s\n' "nginx (1 worker)" /bench.txt "$n_file"
    if [ "${GB_BENCH_NGINX_ONLY:-0}" = 1 ]; then
        return 0
    elif [ "$gloveboxd_ok" != 1 ]; then
        echo "  gloveboxd: not run (see the messages above)"
        return 1
    fi
    gb_url=http://127.0.0.1:$gloveboxd_port
    g_file=$(measure gloveboxd-file "$gb_url/bench.txt" "$CONNS")
    r_file=$(bench_ratio "$g_file" "$n_file")
    local v
    verdict "$r_file"
    printf '  %-22s %-12s %10s req/s  %s x nginx (goal >= %s: %s)\n' gloveboxd /bench.txt \
        "$g_file" "$r_file" "$GOAL" "$v"
    g_health=$(measure gloveboxd-healthz "$gb_url/healthz" "$CONNS")
    r_health=$(bench_ratio "$g_health" "$n_file")
    verdict "$r_health"
    printf '  %-22s %-12s %10s req/s  %s x nginx file (goal >= %s: %s)\n' gloveboxd /healthz \
        "$g_health" "$r_health" "$GOAL" "$v"

    local many errors
    many=$(measure gloveboxd-many "$gb_url/healthz" "$MANY")
    errors=$(bench_errors "$tmp/gloveboxd-many.wrk")
    local ok=met
    if ! printf '%s\n' "$errors" |
        grep -q -x 'socket errors: connect 0, read 0, write 0, timeout 0; non-2xx/3xx: 0'; then
        ok=MISSED
        missed=1
    fi
    echo "wrk -t$THREADS -c$MANY -d$DURATION gloveboxd /healthz: $many req/s"
    echo "  $errors (goal: none: $ok)"
    if ! kill -0 "$server_pid" 2>/dev/null; then
        tail -n 20 "$tmp/gloveboxd.log" >&2
        gb_die "gloveboxd exited during the benchmark"
    fi
    if [ "$strict" = 1 ] && [ "$missed" = 1 ]; then
        return 1
    fi
}

main "$@"
