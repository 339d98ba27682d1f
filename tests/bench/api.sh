#!/usr/bin/env bash
# api.sh: the read side of the REST API with a stored fleet, against nginx serving static files
# of the same sizes in the same run, and the live stream under an ingest load. A benchmark, not
# a test: ctest does not run it, and it exits 0 whenever it could measure (--strict: non-zero
# when a goal is missed). It builds gloveboxd, glovebox-sim and bench_sse (optimised, in
# GB_BENCH_BUILD_DIR) if needed, starts a throwaway PostgreSQL 15 cluster
# (scripts/lib/pg-cluster) in a temporary directory, applies the migrations, creates an agent
# and a viewer token and starts gloveboxd on a loopback port. Then, each step bounded in time:
#
#   (a) The fleet: glovebox-sim --devices GB_BENCH_API_DEVICES (10,000) --speed 0 --seed 1
#       --connections 16 --batch 200 [GB_BENCH_SIM_ARGS] stores the devices; the run waits until
#       ingest settles and the server knows every device.
#   (b) One answer each of GET /api/v1/devices?limit=100 and GET /api/v1/summary (viewer token)
#       is saved as a static file, and nginx (one worker, its own configuration in the temporary
#       directory, no access log, sendfile for the list's file only) serves both files: the same
#       bytes, so the same sizes.
#   (c) wrk -t2 -c50 --latency for GB_BENCH_DURATION each, in this order: nginx list-sized file,
#       gloveboxd list, nginx summary-sized file, gloveboxd summary. Requests/s, p99 latency,
#       socket errors and non-2xx answers; gloveboxd's requests/s as a share of nginx's, against
#       the goals: the list >= 25 %, the summary >= 50 %.
#   (d) The live stream: tests/bench/sse.c (bench_sse) opens GB_BENCH_SSE_SUBSCRIBERS (200)
#       subscribers on GET /api/v1/stream?access_token=VIEWER, then posts GB_BENCH_SSE_RATE
#       (1,000) agent messages/s for GB_BENCH_SSE_SECONDS (20) from GB_BENCH_SSE_DEVICES (1,000)
#       new devices, round-robin, GB_BENCH_SSE_BATCH (1) messages per request, each message
#       stamped with the wall clock. Once the last answer is in, it waits (up to 15 s) until
#       every subscriber holds every changed device's final state (an event whose last_seen is
#       the device's last acknowledged message), then checks the newest event of every changed
#       device against GET /api/v1/devices/{serial} (the detail's Device part, byte for byte).
#       Reported: subscribers dropped (closed by the server before the end; also the server's
#       gb_stream_dropped_total), subscribers complete (every changed device's final state),
#       the messages/s the load reached and the answers' p50/p99, events per subscriber, the
#       event lag (arrival - last_seen: request, commit, the 250 ms coalescing and delivery)
#       p50/p99/max, and gloveboxd's CPU over the run. Goal: no subscriber dropped, every
#       subscriber complete, every detail equal, at the full rate.
#
# A summary table at the end. Everything it started is stopped on exit, Ctrl-C included.
#
# nginx, gloveboxd, PostgreSQL, wrk and bench_sse share this machine's CPUs (2 cores on the
# reference machine): absolute figures are lower than on a dedicated server and move with
# whatever else runs; the ratio against nginx measured the same way is the figure to compare.
# GB_BENCH_PIN=1 pins the server under test (nginx or gloveboxd) to CPU 0 and the clients (wrk,
# bench_sse) to the other CPUs.
#
# Usage: tests/bench/api.sh [--strict] [--help]
# Environment: GB_BENCH_DURATION (default 10s), GB_BENCH_THREADS (2), GB_BENCH_CONNECTIONS (50),
#   GB_BENCH_API_DEVICES (10000), GB_BENCH_SIM_ARGS (more glovebox-sim flags),
#   GB_BENCH_SIM_LIMIT (seconds allowed to store the fleet, 900), GB_BENCH_SSE_SUBSCRIBERS (200),
#   GB_BENCH_SSE_RATE (1000), GB_BENCH_SSE_SECONDS (20), GB_BENCH_SSE_DEVICES (1000),
#   GB_BENCH_SSE_BATCH (1), GB_BENCH_SSE_CONNECTIONS (200: the load's keep-alive connections),
#   GB_BENCH_PIN (0), GB_BENCH_BUILD_DIR (build, relative to the repository root),
#   GB_BENCH_KEEP=1 (keep the temporary directory, with the wrk reports, the saved answers, the
#   servers' logs and sse-subscribers.txt: one line per subscriber).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

GB_PROG=bench/api
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"
. "$GB_ROOT/scripts/lib/deps"
. "$GB_ROOT/tests/bench/lib.sh"
cd "$GB_ROOT"

DURATION=${GB_BENCH_DURATION:-10s}
duration_s=$(bench_seconds "$DURATION") || exit 2
THREADS=${GB_BENCH_THREADS:-2}
CONNS=${GB_BENCH_CONNECTIONS:-50}
DEVICES=${GB_BENCH_API_DEVICES:-10000}
SIM_LIMIT=${GB_BENCH_SIM_LIMIT:-900}
read -r -a SIM_ARGS <<<"${GB_BENCH_SIM_ARGS:-}"
SSE_SUBS=${GB_BENCH_SSE_SUBSCRIBERS:-200}
SSE_RATE=${GB_BENCH_SSE_RATE:-1000}
SSE_SECONDS=${GB_BENCH_SSE_SECONDS:-20}
SSE_DEVICES=${GB_BENCH_SSE_DEVICES:-1000}
SSE_BATCH=${GB_BENCH_SSE_BATCH:-1}
SSE_CONNS=${GB_BENCH_SSE_CONNECTIONS:-200}
PIN=${GB_BENCH_PIN:-0}
BUILD_DIR=$GB_ROOT/${GB_BENCH_BUILD_DIR:-build}
LIST_GOAL=0.25
SUMMARY_GOAL=0.50
LIST_PATH='/api/v1/devices?limit=100'
SUMMARY_PATH=/api/v1/summary
PG_CLUSTER=$GB_ROOT/scripts/lib/pg-cluster
GLOVEBOXD=$BUILD_DIR/server/src/gloveboxd
SIM=$BUILD_DIR/agent-protocol/sim/glovebox-sim
BENCH_SSE=$BUILD_DIR/tests/bench_sse

strict=0
tmp=
cluster_dir=
server_pid=
nginx_pid=
child_pid=
missed=0

usage() {
    gb_header_help "$0"
}

cleanup() {
    trap - INT TERM EXIT
    bench_cleanup "$cluster_dir" "$tmp" "$child_pid" "$nginx_pid" "$server_pid"
}

bench_pins "$PIN"

# ---- servers ----

start_gloveboxd() {
    cluster_dir=$tmp/pg
    "$PG_CLUSTER" start "$cluster_dir" >/dev/null || gb_die "PostgreSQL did not start"
    local url
    url=$("$PG_CLUSTER" url "$cluster_dir")
    "$GLOVEBOXD" migrate --database-url "$url" --log-level warn || gb_die "gloveboxd migrate failed"
    # Created before gloveboxd starts, which reads the tokens at start.
    agent_token=$("$GLOVEBOXD" token create --role agent --name bench-agent --database-url "$url" \
        --log-level warn) || gb_die "could not create the agent token"
    viewer_token=$("$GLOVEBOXD" token create --role viewer --name bench-viewer \
        --database-url "$url" --log-level warn) || gb_die "could not create the viewer token"
    gb_port=$(bench_free_port 18780)
    gb_url=http://127.0.0.1:$gb_port
    "${bench_server_pin[@]}" "$GLOVEBOXD" serve --listen "127.0.0.1:$gb_port" --database-url "$url" \
        --log-level warn >"$tmp/gloveboxd.log" 2>&1 &
    server_pid=$!
    bench_wait_http "$gb_url/healthz" 60 ||
        { tail -n 20 "$tmp/gloveboxd.log" >&2; gb_die "gloveboxd did not answer /healthz"; }
}

start_nginx() {
    nginx_port=$(bench_free_port 18680)
    nginx_url=http://127.0.0.1:$nginx_port
    # Descriptors and metadata cached; sendfile for the large file, not for the small one (each
    # measured faster than the other way on its file).
    bench_nginx_start "$tmp/nginx" "$nginx_port" 1024 "
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 60s;
    tcp_nopush on;
    default_type application/json;" "
        root $tmp/web;
        location = /list.json {
            sendfile on;
        }
        location = /summary.json {
            sendfile off;
        }"
    bench_wait_http "$nginx_url/list.json" 10 ||
        { cat "$tmp/nginx/error.log" >&2; gb_die "nginx did not start"; }
}

# ---- (a) the fleet ----

store_fleet() {
    local cmd=("$SIM" --server "$gb_url" --token "$agent_token" --devices "$DEVICES" --speed 0
        --seed 1 --connections 16 --batch 200 --summary "$tmp/sim-summary.json" "${SIM_ARGS[@]}")
    echo "fleet: glovebox-sim --devices $DEVICES --speed 0 --seed 1 --connections 16 --batch 200" \
        "${SIM_ARGS[*]}"
    local t0 rc=0
    t0=$(date +%s.%N)
    run_child timeout "$SIM_LIMIT" "${cmd[@]}" >"$tmp/sim.out" 2>"$tmp/sim.err" || rc=$?
    if [ "$rc" != 0 ]; then
        tail -n 20 "$tmp/sim.err" >&2
        gb_die "glovebox-sim exited with status $rc$([ "$rc" = 124 ] && echo " (over ${SIM_LIMIT}s)")"
    fi
    bench_wait_ingest "$gb_url" 60 || gb_die "ingest still busy 60 s after the simulator ended"
    local devices msgs
    devices=$(bench_metric "$gb_url" gb_devices)
    msgs=$(awk '$1 == "messages" { print $2; exit }' "$tmp/sim.out")
    [ "$devices" = "$DEVICES" ] || gb_die "the server knows $devices devices, not $DEVICES"
    printf '  %s devices stored (%s messages) in %s s\n' "$devices" "${msgs:-?}" \
        "$(bench_calc "$(date +%s.%N) - $t0")"
}

# ---- (b) the reference files ----

# save_answer PATH FILE: one answer of gloveboxd to GET PATH (viewer token) into FILE.
save_answer() {
    curl -fsS --max-time 30 -H "Authorization: Bearer $viewer_token" -o "$2" "$gb_url$1" ||
        gb_die "GET $1 failed"
}

make_web_dir() {
    mkdir -p "$tmp/web"
    save_answer "$LIST_PATH" "$tmp/web/list.json"
    save_answer "$SUMMARY_PATH" "$tmp/web/summary.json"
    chmod 755 "$tmp" "$tmp/web"
    chmod 644 "$tmp/web/list.json" "$tmp/web/summary.json"
    local n
    n=$(grep -o '"serial":' "$tmp/web/list.json" | wc -l)
    [ "$n" = 100 ] || gb_die "GET $LIST_PATH returned $n devices, not 100"
    list_bytes=$(stat -c %s "$tmp/web/list.json")
    summary_bytes=$(stat -c %s "$tmp/web/summary.json")
}

# ---- (c) wrk ----

# to_ms VALUE: a wrk latency ("812.00us", "1.23ms", "1.02s", "1.5m") in milliseconds.
to_ms() {
    awk -v v="$1" 'BEGIN {
        n = v + 0; u = v; sub(/^[0-9.]+/, "", u)
        if (u == "us") n /= 1000; else if (u == "s") n *= 1000; else if (u == "m") n *= 60000
        printf "%.2f\n", n
    }'
}

# measure NAME URL [HEADER]: one wrk run; its report goes to $tmp/NAME.wrk; sets rps and p99.
measure() {
    local out=$tmp/$1.wrk hdr=()
    if [ -n "${3:-}" ]; then
        hdr=(-H "$3")
    fi
    if ! run_child timeout $((duration_s + 60)) "${bench_client_pin[@]}" wrk -t"$THREADS" -c"$CONNS" \
        -d"$DURATION" --timeout 5s --latency "${hdr[@]}" "$2" >"$out" 2>&1; then
        cat "$out" >&2
        gb_die "wrk against $2 failed"
    fi
    rps=$(bench_rps "$out")
    [ -n "$rps" ] || { cat "$out" >&2; gb_die "no Requests/sec in wrk's report for $2"; }
    local raw
    raw=$(awk '$1 == "99%" { print $2; exit }' "$out")
    [ -n "$raw" ] || { cat "$out" >&2; gb_die "no 99% latency in wrk's report for $2"; }
    p99=$(to_ms "$raw")
}

# verdict VAR VALUE GOAL: sets VAR to PASS or MISS (VALUE >= GOAL).
verdict() {
    if awk -v r="$2" -v g="$3" 'BEGIN { exit !(r != "n/a" && r >= g) }'; then
        printf -v "$1" PASS
    else
        missed=1
        printf -v "$1" MISS
    fi
}

# errors_of NAME: "none" or wrk's socket errors and non-2xx count for run NAME.
errors_of() {
    local e
    e=$(bench_errors "$tmp/$1.wrk")
    if [ "$e" = 'socket errors: connect 0, read 0, write 0, timeout 0; non-2xx/3xx: 0' ]; then
        echo none
    else
        echo "$e"
    fi
}

# wrk_row SERVER PATH BYTES RPS P99 ERRORS: one line of the wrk runs.
wrk_row() {
    printf '  %-10s %-24s %8s B %10s req/s  p99 %8s ms  errors: %s\n' "$@"
}

run_wrk() {
    local auth="Authorization: Bearer $viewer_token"
    echo "wrk -t$THREADS -c$CONNS -d$DURATION --latency; $(nproc) CPU(s) shared by the server," \
        "PostgreSQL and wrk$([ "$PIN" = 1 ] && echo ', server pinned to CPU 0')" \
        "(load average $(cut -d' ' -f1-3 /proc/loadavg))"
    measure nginx-list "$nginx_url/list.json"
    n_list=$rps n_list_p99=$p99
    wrk_row nginx /list.json "$list_bytes" "$n_list" "$n_list_p99" "$(errors_of nginx-list)"
    measure gloveboxd-list "$gb_url$LIST_PATH" "$auth"
    g_list=$rps g_list_p99=$p99
    wrk_row gloveboxd "$LIST_PATH" "$list_bytes" "$g_list" "$g_list_p99" \
        "$(errors_of gloveboxd-list)"
    measure nginx-summary "$nginx_url/summary.json"
    n_summary=$rps n_summary_p99=$p99
    wrk_row nginx /summary.json "$summary_bytes" "$n_summary" "$n_summary_p99" \
        "$(errors_of nginx-summary)"
    measure gloveboxd-summary "$gb_url$SUMMARY_PATH" "$auth"
    g_summary=$rps g_summary_p99=$p99
    wrk_row gloveboxd "$SUMMARY_PATH" "$summary_bytes" "$g_summary" "$g_summary_p99" \
        "$(errors_of gloveboxd-summary)"
    list_errors=$(errors_of gloveboxd-list)
    summary_errors=$(errors_of gloveboxd-summary)
    r_list=$(bench_ratio "$g_list" "$n_list")
    r_summary=$(bench_ratio "$g_summary" "$n_summary")
    verdict v_list "$r_list" "$LIST_GOAL"
    verdict v_summary "$r_summary" "$SUMMARY_GOAL"
    # An answer that is not 2xx does not count as served.
    if [ "$list_errors" != none ]; then
        v_list="MISS ($list_errors)"
        missed=1
    fi
    if [ "$summary_errors" != none ]; then
        v_summary="MISS ($summary_errors)"
        missed=1
    fi
}

# ---- (d) the live stream ----

# cpu_ticks PID: user + system clock ticks PID has used.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

sse_field() {
    awk -v k="$1" '$1 == "GB_SSE" {
        for (i = 2; i <= NF; i++) {
            if (index($i, k "=") == 1) { print substr($i, length(k) + 2); exit }
        }
    }' "$tmp/sse.out"
}

run_sse() {
    echo "live stream: $SSE_SUBS subscribers; $SSE_RATE messages/s for ${SSE_SECONDS}s from" \
        "$SSE_DEVICES new devices, $SSE_BATCH per request, over $SSE_CONNS connections" \
        "(load average $(cut -d' ' -f1-3 /proc/loadavg))"
    local d0 e0 c0 c1 t0 t1 rc=0
    d0=$(bench_metric "$gb_url" gb_stream_dropped_total)
    e0=$(bench_metric "$gb_url" gb_stream_events_total)
    c0=$(cpu_ticks "$server_pid")
    t0=$(date +%s.%N)
    GB_BENCH_VIEWER=$viewer_token GB_BENCH_TOKEN=$agent_token run_child \
        timeout $((SSE_SECONDS + 300)) "${bench_client_pin[@]}" "$BENCH_SSE" --port "$gb_port" \
        --subscribers "$SSE_SUBS" --rate "$SSE_RATE" --seconds "$SSE_SECONDS" \
        --devices "$SSE_DEVICES" --batch "$SSE_BATCH" --connections "$SSE_CONNS" \
        --subscriber-report "$tmp/sse-subscribers.txt" >"$tmp/sse.out" 2>"$tmp/sse.err" || rc=$?
    t1=$(date +%s.%N)
    c1=$(cpu_ticks "$server_pid")
    if [ "$rc" != 0 ] || ! grep -q '^GB_SSE ' "$tmp/sse.out"; then
        cat "$tmp/sse.out" "$tmp/sse.err" >&2
        gb_die "bench_sse failed (status $rc)"
    fi
    if [ -s "$tmp/sse.err" ]; then
        head -n 20 "$tmp/sse.err" >&2
    fi
    sse_server_dropped=$(($(bench_metric "$gb_url" gb_stream_dropped_total) - d0))
    sse_server_events=$(($(bench_metric "$gb_url" gb_stream_events_total) - e0))
    sse_cpu=$(bench_calc "100 * ($c1 - $c0) / $(getconf CLK_TCK) / ($t1 - $t0)")
    local f
    for f in dropped complete changed msgs_per_s post_errors conn_errors ack_p50_ms ack_p99_ms \
        events events_min events_max mbytes lag_p50_ms lag_p99_ms lag_max_ms missing behind \
        settled settle_ms details details_equal max_backlog client_cpu_s load_s; do
        printf -v "sse_$f" '%s' "$(sse_field "$f")"
    done
    # shellcheck disable=SC2154 # set by the loop above
    {
        printf '  load: %s messages/s reached (goal %s), %s post errors, %s connection errors;' \
            "$sse_msgs_per_s" "$SSE_RATE" "$sse_post_errors" "$sse_conn_errors"
        printf ' answers p50 %s ms, p99 %s ms; most messages behind schedule %s\n' \
            "$sse_ack_p50_ms" "$sse_ack_p99_ms" "$sse_max_backlog"
        printf '  subscribers: %s dropped (server: %s), %s of %s complete (every one of the %s' \
            "$sse_dropped" "$sse_server_dropped" "$sse_complete" "$SSE_SUBS" "$sse_changed"
        printf ' changed devices in its final state; %s missing, %s behind)\n' "$sse_missing" \
            "$sse_behind"
        printf '  events: %s to each subscriber (min %s, max %s), %s in all (server: %s),' \
            "$(awk -v e="$sse_events" -v s="$SSE_SUBS" 'BEGIN { printf "%.0f", e / s }')" \
            "$sse_events_min" "$sse_events_max" \
            "$sse_events" "$sse_server_events"
        printf ' %s MiB read\n' "$sse_mbytes"
        printf '  event lag (arrival - last_seen): p50 %s ms, p99 %s ms, max %s ms;' \
            "$sse_lag_p50_ms" "$sse_lag_p99_ms" "$sse_lag_max_ms"
        printf ' all final states in %s ms after the last answer%s\n' "$sse_settle_ms" \
            "$([ "$sse_settled" = 1 ] || echo ' (NOT all within the settle time)')"
        printf '  REST check: %s of %s newest events equal GET /api/v1/devices/{serial}\n' \
            "$sse_details_equal" "$sse_details"
        printf '  CPU: gloveboxd %s %% of one core over the run; bench_sse %s s in %s s\n' \
            "$sse_cpu" "$sse_client_cpu_s" "$(bench_calc "$t1 - $t0")"
    }
    local why=()
    if [ "$sse_dropped" != 0 ] || [ "$sse_server_dropped" != 0 ]; then
        why+=("$sse_dropped dropped (server: $sse_server_dropped)")
    fi
    if [ "$sse_complete" != "$SSE_SUBS" ]; then
        why+=("$((SSE_SUBS - sse_complete)) incomplete")
    fi
    if [ "$sse_changed" = 0 ] || [ "$sse_details_equal" != "$sse_changed" ]; then
        why+=("$((sse_changed - sse_details_equal)) of $sse_changed details differ")
    fi
    if [ "$sse_post_errors" != 0 ]; then
        why+=("$sse_post_errors post errors")
    fi
    if ! awk -v r="$sse_msgs_per_s" -v g="$SSE_RATE" 'BEGIN { exit !(r >= 0.95 * g) }'; then
        why+=("load reached $sse_msgs_per_s messages/s")
    fi
    if [ ${#why[@]} -eq 0 ]; then
        v_sse=PASS
    else
        local IFS=,
        v_sse="MISS (${why[*]})"
        missed=1
    fi
}

# summary_row LABEL RPS P99 RATIO GOAL: one line of the summary table.
summary_row() {
    printf '  %-38s %10s %8s %8s  %s\n' "$@"
}

main() {
    case "${1:-}" in
        -h | --help) usage; return 0 ;;
        --strict) strict=1 ;;
        "") ;;
        *) gb_die "unknown argument '$1' (see --help)" ;;
    esac
    local started=$SECONDS
    gb_deps_install build run bench || gb_die "could not install the packages needed"
    trap 'cleanup; exit 130' INT
    trap 'cleanup; exit 143' TERM
    trap cleanup EXIT
    if ! bench_build "$BUILD_DIR" gloveboxd glovebox-sim bench_sse; then
        gb_die "gloveboxd, glovebox-sim or bench_sse does not build (log: var/log/build-bench.log)"
    fi
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/glovebox-api.XXXXXX")
    chmod 755 "$tmp"
    echo "api benchmark: $(nproc) CPU(s); build $BUILD_DIR"
    start_gloveboxd
    store_fleet
    make_web_dir
    start_nginx
    run_wrk
    run_sse
    if ! kill -0 "$server_pid" 2>/dev/null; then
        tail -n 20 "$tmp/gloveboxd.log" >&2
        gb_die "gloveboxd exited during the benchmark"
    fi

    echo
    echo "summary ($DEVICES devices stored; wrk -c$CONNS -d$DURATION; $(nproc) CPU(s)):"
    summary_row "" "req/s" "p99 ms" "x nginx" "goal"
    summary_row "nginx, list-sized file ($list_bytes B)" "$n_list" "$n_list_p99" "" ""
    summary_row "GET $LIST_PATH" "$g_list" "$g_list_p99" "$r_list" ">= $LIST_GOAL: $v_list"
    summary_row "nginx, summary-sized file ($summary_bytes B)" "$n_summary" "$n_summary_p99" "" ""
    summary_row "GET $SUMMARY_PATH" "$g_summary" "$g_summary_p99" "$r_summary" \
        ">= $SUMMARY_GOAL: $v_summary"
    printf '  %-34s %s msg/s, %s subscribers: %s dropped, %s complete, lag p99 %s ms: %s\n' \
        "GET /api/v1/stream" "$sse_msgs_per_s" "$SSE_SUBS" "$sse_dropped" "$sse_complete" \
        "$sse_lag_p99_ms" "$v_sse"
    echo "done in $(gb_elapsed "$started")"
    if [ "$strict" = 1 ] && [ "$missed" = 1 ]; then
        return 1
    fi
}

main "$@"
