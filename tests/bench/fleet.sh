#!/usr/bin/env bash
# fleet.sh: a whole simulated fleet against gloveboxd, as fast as it acknowledges. A benchmark,
# not a test: ctest does not run it, and it exits 0 whenever it could measure (non-zero when the
# simulator did not get every message acknowledged). It builds gloveboxd and glovebox-sim
# (optimised, in GB_BENCH_BUILD_DIR) if needed, starts a throwaway PostgreSQL 15 cluster
# (scripts/lib/pg-cluster) and gloveboxd on a loopback port, and runs
#
#   glovebox-sim --devices GB_BENCH_FLEET_DEVICES (10,000) --speed 0 --seed 1 [GB_BENCH_SIM_ARGS]
#
# (the simulator's defaults otherwise: 40 slots, 8 keep-alive connections, up to 100 messages a
# request), bounded to GB_BENCH_FLEET_LIMIT seconds. It prints the messages ingested per second
# two ways: the messages of the simulator's summary over the run's wall time, and the server's
# gb_ingest_messages_total over the same time; the transactions and requests behind them
# (gb_ingest_batches_total, gb_ingest_batch_items_total, gb_ingest_batch_largest); the devices
# the server knows; and gloveboxd's resident memory (VmRSS, VmHWM) at the end. Everything it
# started is stopped on exit, Ctrl-C included.
#
# PostgreSQL, gloveboxd and the simulator (whose model runs on the same loop as its transport)
# share this machine's CPUs (2 cores on the reference machine): the figures are lower than with a
# dedicated server and move with whatever else runs.
#
# Usage: tests/bench/fleet.sh [--help]
# Environment: GB_BENCH_FLEET_DEVICES (default 10000), GB_BENCH_FLEET_LIMIT (600),
#   GB_BENCH_SIM_ARGS (more glovebox-sim flags, e.g. "--connections 32 --batch 200"),
#   GB_BENCH_BUILD_DIR (build, relative to the repository root), GB_BENCH_KEEP=1 (keep the
#   temporary directory, with the simulator's summary and the server's log).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

GB_PROG=bench/fleet
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"
. "$GB_ROOT/scripts/lib/deps"
. "$GB_ROOT/tests/bench/lib.sh"
cd "$GB_ROOT"

DEVICES=${GB_BENCH_FLEET_DEVICES:-10000}
LIMIT=${GB_BENCH_FLEET_LIMIT:-600}
BUILD_DIR=$GB_ROOT/${GB_BENCH_BUILD_DIR:-build}
read -r -a SIM_ARGS <<<"${GB_BENCH_SIM_ARGS:-}"
PG_CLUSTER=$GB_ROOT/scripts/lib/pg-cluster
GLOVEBOXD=$BUILD_DIR/server/src/gloveboxd
SIM=$BUILD_DIR/agent-protocol/sim/glovebox-sim

tmp=
cluster_dir=
server_pid=
sim_pid=

usage() {
    gb_header_help "$0"
}

cleanup() {
    trap - INT TERM EXIT
    bench_cleanup "$cluster_dir" "$tmp" "$sim_pid" "$server_pid"
}

main() {
    case "${1:-}" in
        -h | --help) usage; return 0 ;;
        "") ;;
        *) gb_die "unknown argument '$1' (see --help)" ;;
    esac
    local started=$SECONDS
    gb_deps_install build run || gb_die "could not install the packages needed"
    trap 'cleanup; exit 130' INT
    trap 'cleanup; exit 143' TERM
    trap cleanup EXIT
    if ! bench_build "$BUILD_DIR" gloveboxd glovebox-sim; then
        gb_die "gloveboxd or glovebox-sim does not build (log: var/log/build-bench.log)"
    fi
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/glovebox-fleet.XXXXXX")
    chmod 755 "$tmp"
    cluster_dir=$tmp/pg
    "$PG_CLUSTER" start "$cluster_dir" >/dev/null || gb_die "PostgreSQL did not start"
    local url token port gb_url
    url=$("$PG_CLUSTER" url "$cluster_dir")
    "$GLOVEBOXD" migrate --database-url "$url" --log-level warn || gb_die "gloveboxd migrate failed"
    # Created before gloveboxd starts, which reads the tokens at start.
    token=$("$GLOVEBOXD" token create --role agent --name bench-fleet --database-url "$url" \
        --log-level warn)
    port=$(bench_free_port 18480)
    gb_url=http://127.0.0.1:$port
    "$GLOVEBOXD" serve --listen "127.0.0.1:$port" --database-url "$url" --log-level warn \
        >"$tmp/gloveboxd.log" 2>&1 &
    server_pid=$!
    bench_wait_http "$gb_url/healthz" 30 ||
        { tail -n 20 "$tmp/gloveboxd.log" >&2; gb_die "gloveboxd did not answer /healthz"; }

    local cmd=("$SIM" --server "$gb_url" --token "$token" --devices "$DEVICES" --speed 0 --seed 1
        --summary "$tmp/summary.json" "${SIM_ARGS[@]}")
    echo "fleet benchmark: $(nproc) CPU(s) shared by PostgreSQL, gloveboxd and glovebox-sim;" \
        "load average $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "  glovebox-sim --devices $DEVICES --speed 0 --seed 1 --summary FILE" \
        "${SIM_ARGS[*]}"
    local m0 b0 i0 t0 t1 rc=0
    m0=$(bench_metric "$gb_url" gb_ingest_messages_total)
    b0=$(bench_metric "$gb_url" gb_ingest_batches_total)
    i0=$(bench_metric "$gb_url" gb_ingest_batch_items_total)
    t0=$(date +%s.%N)
    timeout "$LIMIT" "${cmd[@]}" >"$tmp/sim.out" 2>"$tmp/sim.err" &
    sim_pid=$!
    wait "$sim_pid" || rc=$?
    sim_pid=
    t1=$(date +%s.%N)
    bench_wait_ingest "$gb_url" 30 || gb_msg "ingest still busy 30 s after the simulator ended"
    if [ "$rc" != 0 ]; then
        tail -n 20 "$tmp/sim.err" >&2
        gb_msg "glovebox-sim exited with status $rc$([ "$rc" = 124 ] && echo " (over ${LIMIT}s)")"
    fi
    local m1 b1 i1 largest devices rss hwm wall sim_msgs sim_run
    m1=$(bench_metric "$gb_url" gb_ingest_messages_total)
    b1=$(bench_metric "$gb_url" gb_ingest_batches_total)
    i1=$(bench_metric "$gb_url" gb_ingest_batch_items_total)
    largest=$(bench_metric "$gb_url" gb_ingest_batch_largest)
    devices=$(bench_metric "$gb_url" gb_devices)
    rss=$(bench_rss_kb "$server_pid")
    hwm=$(bench_hwm_kb "$server_pid")
    wall=$(bench_calc "$t1 - $t0")
    sim_msgs=$(awk '$1 == "messages" { print $2; exit }' "$tmp/sim.out")
    sim_run=$(sed -n 's/^ *run *//p' "$tmp/sim.out")
    if [ -z "$sim_msgs" ]; then
        cat "$tmp/sim.out" "$tmp/sim.err" >&2
        gb_die "no summary from glovebox-sim"
    fi
    printf '  wall time %s s (simulator: %s)\n' "$wall" "$sim_run"
    printf '  simulator: %d messages       -> %10s messages/s\n' "$sim_msgs" \
        "$(bench_calc "$sim_msgs / $wall")"
    printf '  server:    %d acknowledged   -> %10s messages/s (gb_ingest_messages_total)\n' \
        $((m1 - m0)) "$(bench_calc "($m1 - $m0) / $wall")"
    printf '  %d transactions carrying %d requests: %s requests and %s messages per transaction,' \
        $((b1 - b0)) $((i1 - i0)) "$(bench_calc "($i1 - $i0) / ($b1 - $b0)")" \
        "$(bench_calc "($m1 - $m0) / ($b1 - $b0)")"
    printf ' %s messages per request; largest %s requests\n' \
        "$(bench_calc "($m1 - $m0) / ($i1 - $i0)")" "$largest"
    printf '  devices known %s; gloveboxd VmRSS %s MiB (peak %s MiB)\n' "$devices" \
        "$(bench_calc "$rss / 1024")" "$(bench_calc "$hwm / 1024")"
    echo "done in $(gb_elapsed "$started")"
    return "$rc"
}

main "$@"
