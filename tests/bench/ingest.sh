#!/usr/bin/env bash
# ingest.sh: agent ingest throughput, latency and memory of gloveboxd, against PostgreSQL's own
# ceiling on the same machine. A benchmark, not a test: ctest does not run it, and it exits 0
# whenever it could measure and every check held (--strict: also non-zero when a goal is
# missed). It builds gloveboxd (optimised, in GB_BENCH_BUILD_DIR) if needed and starts a
# throwaway PostgreSQL 15 cluster (scripts/lib/pg-cluster) in a temporary directory. Then, each
# step bounded in time:
#
#   (a) PostgreSQL's ceiling, with pgbench on a scratch table shaped as events (same columns,
#       checks, primary key (serial, seq) and received_at index; no foreign key) with jsonb
#       bodies of a download sample (175-190 bytes of JSON text, about 240 bytes as jsonb),
#       pgbench -c 50 -j 2 -T GB_BENCH_PG_SECONDS:
#         single-row INSERT ... ON CONFLICT DO NOTHING transactions per second;
#         rows per second with 100-row transactions (one INSERT ... SELECT FROM unnest(jsonb[])).
#   (b) the HTTP ceiling: nginx (one worker) answering the same wrk runs (200 connections, 1
#       and 10 messages per request) with a fixed acknowledgement and doing nothing else, the
#       most requests/s this client reaches on this machine; then
#       gloveboxd at 50 and 200 connections with 1 and 10 messages per request, wrk -t2 for
#       GB_BENCH_DURATION with tests/bench/agent.lua: each run has a fleet of its own of
#       GB_BENCH_STREAM_DEVICES devices (4,000: at least 20 per connection), half per wrk
#       thread, served round-robin, each request carrying the next 1 or 10 messages of one device
#       (hello, stage messages, then device-setup app and download messages; seqs strictly
#       increasing per device, so every message is new and a device has one request in flight).
#       The same fleet size in every run keeps the mix of message types alike at 50 and 200
#       connections; it is printed (a stage message costs more than a download sample).
#       Messages/s = 2xx requests/s x messages per request; p50/p99 are wrk's (--latency).
#       Afterwards: no non-2xx and no socket errors; the events stored for the run (psql count)
#       equal the messages the server acknowledged (gb_ingest_messages_total), and lie between
#       wrk's 2xx x k and (2xx + connections) x k (requests still in flight when wrk stops are
#       committed and acknowledged, but wrk no longer counts them). The CPU time gloveboxd and
#       PostgreSQL used during each run is printed as a share of one core.
#   (c) Resident memory with GB_BENCH_DEVICES (100,000) devices known: a fresh database, wrk
#       posting one request per new device with its first 8 messages (hello, oobe,
#       enterprise_provisioning and profile_download started and succeeded, zdp_update started),
#       VmRSS once all are acknowledged; then gloveboxd restarted: its start-up time (start to
#       /healthz answering, loading the devices from the database) and VmRSS after it.
#
# It prints every figure against the goals: 1 message per request at 200 connections >= 5 x
# PostgreSQL's single-row commits/s; 10 messages per request >= 50 % of the 100-row-transaction
# rows/s; p99 < 50 ms at 200 connections; RSS < 64 MiB + 1 KiB per device. Everything it
# started is stopped on exit, Ctrl-C included.
#
# PostgreSQL, gloveboxd, pgbench and wrk (two threads) all share this machine's CPUs (2 cores
# on the reference machine), so the client's work is subtracted from the server's: the figures
# are lower than on a dedicated server and move with whatever else runs.
#
# Usage: tests/bench/ingest.sh [--strict] [--help]
# Environment: GB_BENCH_DURATION (default 15s), GB_BENCH_PG_SECONDS (15), GB_BENCH_DEVICES
#   (100000), GB_BENCH_STREAM_DEVICES (4000), GB_BENCH_BUILD_DIR (build, relative to the
#   repository root), GB_BENCH_DB_POOL (gloveboxd's default when unset), GB_BENCH_KEEP=1 (keep
#   the temporary directory, with the wrk and pgbench reports and the servers' logs).
# shellcheck source-path=SCRIPTDIR
set -euo pipefail

GB_PROG=bench/ingest
. "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"
. "$GB_ROOT/scripts/lib/deps"
. "$GB_ROOT/tests/bench/lib.sh"
cd "$GB_ROOT"

DURATION=${GB_BENCH_DURATION:-15s}
duration_s=$(bench_seconds "$DURATION") || exit 2
PG_SECONDS=${GB_BENCH_PG_SECONDS:-15}
DEVICES=${GB_BENCH_DEVICES:-100000}
BUILD_DIR=$GB_ROOT/${GB_BENCH_BUILD_DIR:-build}
DB_POOL=${GB_BENCH_DB_POOL:-}
STREAM_DEVICES=${GB_BENCH_STREAM_DEVICES:-4000}
THREADS=2
LOAD_MSGS=8
LOAD_CONNS=200
LOAD_LIMIT=300 # seconds allowed to load the devices
PG_CLUSTER=$GB_ROOT/scripts/lib/pg-cluster
PGBIN=${GB_PGBIN:-/usr/lib/postgresql/15/bin}
GLOVEBOXD=$BUILD_DIR/server/src/gloveboxd
AGENT_LUA=$GB_ROOT/tests/bench/agent.lua
CLK_TCK=$(getconf CLK_TCK)

strict=0
tmp=
cluster_dir=
server_pid=
nginx_pid=
wrk_pid=
child_pid=
pgbench_tps=
missed=0
invalid=0

usage() {
    gb_header_help "$0"
}

cleanup() {
    trap - INT TERM EXIT
    bench_cleanup "$cluster_dir" "$tmp" "$child_pid" "$wrk_pid" "$server_pid" "$nginx_pid"
}

# psql_at DB SQL: one value (or rows), unaligned.
psql_at() {
    "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -At "$("$PG_CLUSTER" url "$cluster_dir" "$1")" -c "$2"
}

# ---- (a) PostgreSQL's ceiling ----

# The scratch table: events' columns, checks, primary key and index, without the foreign key.
make_scratch_table() {
    "$PGBIN/createdb" -h "$sockdir" -p "$pgport" -U postgres pgbench_events
    psql_at pgbench_events "
CREATE TABLE bench_events (
    serial      text NOT NULL,
    seq         bigint NOT NULL CHECK (seq >= 1),
    type        text NOT NULL CHECK (type IN ('hello', 'stage', 'app', 'download', 'winevent',
                                              'result', 'heartbeat')),
    at          timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    body        jsonb NOT NULL,
    PRIMARY KEY (serial, seq)
);
CREATE INDEX bench_events_received_idx ON bench_events (received_at);" >/dev/null
}

# A download sample as the server stores it (about 190 bytes of JSON text).
body_json() {
    printf '{"seq":%s,"at":"2026-11-24T10:15:30.123Z","type":"download","bytes":%s,%s,%s}' \
        "$1" "$2" '"ms":30000,"http_bytes":41943040,"lan_bytes":10485760,"cache_bytes":0' \
        '"app":"Microsoft 365 Apps"'
}

# pgbench scripts. Every client counts its transactions in :n (pgbench keeps a client's
# variables between transactions); the single-row script spreads a client's rows over 20
# devices with increasing seqs, the 100-row one writes seq :n of 100 devices of its own.
write_pgbench_scripts() {
    local body
    body=$(body_json "' || :n || '" 52428800)
    cat >"$tmp/single.sql" <<SQL
\\set n :n + 1
INSERT INTO bench_events (serial, seq, type, at, body)
VALUES ('PGS' || :client_id || '-' || (:n % 20), :n, 'download', now(), ('$body')::jsonb)
ON CONFLICT (serial, seq) DO NOTHING;
SQL
    local i elems=()
    for ((i = 1; i <= 100; i++)); do
        body=$(body_json 1 $((52428800 + i)))
        elems+=("\"${body//\"/\\\"}\"")
    done
    local IFS=,
    cat >"$tmp/batch.sql" <<SQL
\\set n :n + 1
INSERT INTO bench_events (serial, seq, type, at, body)
SELECT 'PGB' || :client_id || '-' || u.i, :n, 'download', now(), u.b
FROM unnest('{${elems[*]}}'::jsonb[]) WITH ORDINALITY AS u(b, i)
ON CONFLICT (serial, seq) DO NOTHING;
SQL
}

# run_pgbench NAME SCRIPT: sets pgbench_tps to the transactions per second (without connection
# time). Not run in a command substitution, so that the traps reach run_child at once.
run_pgbench() {
    local out=$tmp/$1.pgbench
    local url
    url=$("$PG_CLUSTER" url "$cluster_dir" pgbench_events)
    if ! run_child timeout $((PG_SECONDS + 60)) "$PGBIN/pgbench" -n -f "$2" -c 50 -j 2 \
        -T "$PG_SECONDS" -D n=0 "$url" >"$out" 2>&1; then
        cat "$out" >&2
        gb_die "pgbench ($1) failed"
    fi
    local tps failed
    tps=$(awk '/^tps = / { print $3 }' "$out")
    failed=$(awk '/^number of failed transactions:/ { print $5 }' "$out")
    [ -n "$tps" ] || { cat "$out" >&2; gb_die "no tps in pgbench's report ($1)"; }
    [ "${failed:-0}" = 0 ] || gb_msg "pgbench ($1): $failed transactions failed"
    pgbench_tps=$tps
}

# ---- gloveboxd ----

# prepare_db DB: applies the migrations to database DB and prints a new agent token. The token
# exists before gloveboxd starts, which reads the tokens at start (later only every few seconds).
prepare_db() {
    local url
    url=$("$PG_CLUSTER" url "$cluster_dir" "$1")
    "$GLOVEBOXD" migrate --database-url "$url" --log-level warn >&2 ||
        gb_die "gloveboxd migrate failed on $1"
    "$GLOVEBOXD" token create --role agent --name "bench-$1" --log-level warn --database-url "$url"
}

# start_server DB PORT LOG: starts gloveboxd on database DB; sets server_pid.
start_server() {
    local url pool=()
    url=$("$PG_CLUSTER" url "$cluster_dir" "$1")
    if [ -n "$DB_POOL" ]; then
        pool=(--db-pool "$DB_POOL")
    fi
    "$GLOVEBOXD" serve --listen "127.0.0.1:$2" --database-url "$url" --log-level warn \
        --max-connections 2000 "${pool[@]}" >>"$3" 2>&1 &
    server_pid=$!
    if ! bench_wait_http "http://127.0.0.1:$2/healthz" "$LOAD_LIMIT"; then
        tail -n 20 "$3" >&2
        gb_die "gloveboxd did not answer /healthz"
    fi
}

stop_server() {
    bench_stop_pid "$server_pid"
    server_pid=
}

# ---- (b) throughput and latency ----

# ingest_run NAME CONNS K: one wrk run; leaves "msgs_per_s p50_ms p99_ms" in $tmp/NAME.result.
ingest_run() {
    local name=$1 conns=$2 k=$3 out=$tmp/$1.wrk
    local prefix devs before after batches0 items0 batches1 items1
    # A serial prefix of its own per run: its events are counted apart from the others'.
    prefix=$(printf 'R%sx%02d' "$conns" "$k")
    devs=$((STREAM_DEVICES / THREADS))
    before=$(bench_metric "$gb_url" gb_ingest_messages_total)
    batches0=$(bench_metric "$gb_url" gb_ingest_batches_total)
    items0=$(bench_metric "$gb_url" gb_ingest_batch_items_total)
    local pg_pids gb_cpu0 pg_cpu0 gb_cpu1 pg_cpu1 t_start t_end
    read -r -a pg_pids <<<"$(bench_pg_pids "$cluster_dir/data")"
    gb_cpu0=$(bench_cpu_ticks "$server_pid")
    pg_cpu0=$(bench_cpu_ticks "${pg_pids[@]}")
    t_start=$(date +%s.%N)
    # wrk stops by itself after -d; timeout only guards against a hang.
    if ! GB_BENCH_TOKEN=$token run_child timeout $((duration_s + 60)) wrk -t"$THREADS" \
        -c"$conns" -d"$DURATION" --timeout 10s --latency -s "$AGENT_LUA" "$gb_url" -- \
        stream "$prefix" "$k" "$devs" >"$out" 2>&1; then
        cat "$out" >&2
        gb_die "wrk ($name) failed"
    fi
    gb_cpu1=$(bench_cpu_ticks "$server_pid")
    pg_cpu1=$(bench_cpu_ticks "${pg_pids[@]}")
    t_end=$(date +%s.%N)
    bench_wait_ingest "$gb_url" 30 || gb_msg "$name: ingest still busy 30 s after wrk ended"
    after=$(bench_metric "$gb_url" gb_ingest_messages_total)
    batches1=$(bench_metric "$gb_url" gb_ingest_batches_total)
    items1=$(bench_metric "$gb_url" gb_ingest_batch_items_total)
    local reqs st_err conn_err read_err write_err to_err dur p50 p99 ok2xx stored acked
    reqs=$(bench_field "$out" requests)
    [ -n "$reqs" ] || { cat "$out" >&2; gb_die "no GB_WRK line in wrk's report ($name)"; }
    st_err=$(bench_field "$out" status_errors)
    conn_err=$(bench_field "$out" connect)
    read_err=$(bench_field "$out" read)
    write_err=$(bench_field "$out" write)
    to_err=$(bench_field "$out" timeout)
    dur=$(bench_field "$out" duration_us)
    p50=$(bench_calc "$(bench_field "$out" p50_us) / 1000")
    p99=$(bench_calc "$(bench_field "$out" p99_us) / 1000")
    ok2xx=$((reqs - st_err))
    stored=$(psql_at glovebox "SELECT count(*) FROM events WHERE serial LIKE '$prefix%'")
    acked=$((after - before))
    local msgs_s check=ok
    msgs_s=$(bench_calc "$ok2xx * $k / ($dur / 1000000)")
    if [ "$st_err" != 0 ] || [ "$conn_err" != 0 ] || [ "$read_err" != 0 ] ||
        [ "$write_err" != 0 ] || [ "$to_err" != 0 ]; then
        check="FAILED (non-2xx $st_err; socket errors connect $conn_err read $read_err"
        check+=" write $write_err timeout $to_err)"
    elif [ "$stored" != "$acked" ] || [ "$stored" -lt $((ok2xx * k)) ] ||
        [ "$stored" -gt $(((ok2xx + conns) * k)) ]; then
        check="FAILED (stored $stored, acknowledged $acked, wrk 2xx x k $((ok2xx * k)))"
    fi
    printf '  %-9s %4d conns %2d msg/req: %9d 2xx in %5.1f s  %10s msg/s' "$name" \
        "$conns" "$k" "$ok2xx" "$(bench_calc "$dur / 1000000")" "$msgs_s"
    printf '  p50 %7s ms  p99 %7s ms\n' "$p50" "$p99"
    printf '  %-9s stored %d events = acknowledged %d; wrk 2xx x k = %d' "" "$stored" "$acked" \
        $((ok2xx * k))
    printf ' (+ %d in flight at the end): %s\n' $((stored - ok2xx * k)) "$check"
    printf '  %-9s %d transactions, %s requests per transaction on average; messages: %s\n' "" \
        $((batches1 - batches0)) \
        "$(bench_calc "($items1 - $items0) / ($batches1 - $batches0 + ($batches1 == $batches0))")" \
        "$(psql_at glovebox "SELECT string_agg(type || ' ' || pct || '%', ', ' ORDER BY n DESC)
            FROM (SELECT type, count(*) AS n, round(100.0 * count(*) / sum(count(*)) OVER ()) AS pct
                  FROM events WHERE serial LIKE '$prefix%' GROUP BY type) t")"
    # CPU time over the run as a share of one core: what wrk left of the machine's $(nproc).
    local cpu_s
    cpu_s=$(bench_calc "$CLK_TCK * ($t_end - $t_start) / 100")
    printf '  %-9s CPU: gloveboxd %s %%, PostgreSQL %s %% (of %d %% for all %d cores;' "" \
        "$(bench_calc "($gb_cpu1 - $gb_cpu0) / $cpu_s")" \
        "$(bench_calc "($pg_cpu1 - $pg_cpu0) / $cpu_s")" $((100 * $(nproc))) "$(nproc)"
    printf ' the rest went to wrk and the system)\n'
    if [ "$check" != ok ]; then
        invalid=1
    fi
    echo "$msgs_s $p50 $p99" >"$tmp/$name.result"
}

# ceiling_run NAME CONNS K: the same wrk run against nginx answering every request with a
# fixed acknowledgement and doing nothing else: the most requests/s this client reaches on
# this machine. Leaves requests/s in $tmp/NAME.result.
ceiling_run() {
    local name=$1 conns=$2 k=$3 out=$tmp/$1.wrk
    if ! GB_BENCH_TOKEN=unused run_child timeout $((duration_s + 60)) wrk -t"$THREADS" \
        -c"$conns" -d"$DURATION" --timeout 10s --latency -s "$AGENT_LUA" "$nginx_url" -- \
        stream "N$name" "$k" $((STREAM_DEVICES / THREADS)) >"$out" 2>&1; then
        cat "$out" >&2
        gb_die "wrk ($name) failed"
    fi
    local reqs st_err dur rps
    reqs=$(bench_field "$out" requests)
    [ -n "$reqs" ] || { cat "$out" >&2; gb_die "no GB_WRK line in wrk's report ($name)"; }
    st_err=$(bench_field "$out" status_errors)
    dur=$(bench_field "$out" duration_us)
    rps=$(bench_calc "($reqs - $st_err) / ($dur / 1000000)")
    printf '  %-9s %4d conns %2d msg/req: %10s requests/s  p99 %7s ms\n' "$name" "$conns" "$k" \
        "$rps" "$(bench_calc "$(bench_field "$out" p99_us) / 1000")"
    echo "$rps" >"$tmp/$name.result"
}

# ---- (c) memory ----

# load_devices: posts DEVICES new devices; the seconds it took go to $tmp/load.seconds.
load_devices() {
    local out=$tmp/load.wrk n=0
    GB_BENCH_TOKEN=$token wrk -t"$THREADS" -c"$LOAD_CONNS" -d"${LOAD_LIMIT}s" --timeout 10s \
        -s "$AGENT_LUA" "$gb_url" -- devices M "$LOAD_MSGS" "$DEVICES" "$THREADS" >"$out" 2>&1 &
    wrk_pid=$!
    local t0 total last=-1 still=0
    t0=$(date +%s.%N)
    while kill -0 "$wrk_pid" 2>/dev/null; do
        n=$(bench_metric "$gb_url" gb_devices || echo 0)
        if [ "${n:-0}" -ge "$DEVICES" ]; then
            break
        fi
        # Give up when nothing was acknowledged for 30 s.
        total=$(bench_metric "$gb_url" gb_ingest_messages_total || echo 0)
        if [ "$total" = "$last" ]; then
            still=$((still + 1))
            [ "$still" -lt 150 ] || break
        else
            still=0
        fi
        last=$total
        sleep 0.2
    done
    local t1
    t1=$(date +%s.%N)
    # wrk's threads stop by themselves once their devices are acknowledged; wrk itself waits
    # for its -d unless interrupted, and prints its report then.
    kill -INT "$wrk_pid" 2>/dev/null || true
    wait "$wrk_pid" 2>/dev/null || true
    wrk_pid=
    bench_wait_ingest "$gb_url" 30 || true
    n=$(bench_metric "$gb_url" gb_devices)
    if [ "$n" -lt "$DEVICES" ]; then
        cat "$out" >&2
        gb_die "only $n of $DEVICES devices were acknowledged within ${LOAD_LIMIT}s"
    fi
    local errs
    errs=$(bench_field "$out" status_errors)
    [ "${errs:-0}" = 0 ] || gb_msg "loading the devices: $errs non-2xx responses"
    bench_calc "$t1 - $t0" >"$tmp/load.seconds"
}

# ---- verdicts ----

# goal LABEL VALUE OP LIMIT: one line of the goals table; OP is >= or <.
goal() {
    local verdict=met
    if ! awk -v v="$2" -v l="$4" -v op="$3" \
        'BEGIN { exit !((op == ">=" && v >= l) || (op == "<" && v < l)) }'; then
        verdict=MISSED
        missed=1
    fi
    printf '  %-74s %10s %2s %10s  %s\n' "$1" "$2" "$3" "$4" "$verdict"
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
    ulimit -n 8192 2>/dev/null || true
    trap 'cleanup; exit 130' INT
    trap 'cleanup; exit 143' TERM
    trap cleanup EXIT
    if ! bench_build "$BUILD_DIR" gloveboxd; then
        gb_die "gloveboxd does not build (log: var/log/build-bench.log)"
    fi
    tmp=$(mktemp -d "${TMPDIR:-/tmp}/glovebox-ingest.XXXXXX")
    chmod 755 "$tmp"
    cluster_dir=$tmp/pg
    "$PG_CLUSTER" start "$cluster_dir" >/dev/null || gb_die "PostgreSQL did not start"
    local url
    url=$("$PG_CLUSTER" url "$cluster_dir")
    sockdir=$(printf '%s' "$url" | sed -n 's/.*host=\([^&]*\).*/\1/p')
    pgport=$(cat "$cluster_dir/port")

    echo "ingest benchmark: $(nproc) CPU(s) shared by PostgreSQL, gloveboxd and the client" \
        "(pgbench or wrk -t$THREADS); load average $(cut -d' ' -f1-3 /proc/loadavg)"

    # (a)
    make_scratch_table
    write_pgbench_scripts
    echo "(a) PostgreSQL ceiling: pgbench -c 50 -j 2 -T $PG_SECONDS, table shaped as events," \
        "jsonb body of $(body_json 1 52428800 | wc -c) bytes"
    local pg_single pg_batch_tps pg_rows
    run_pgbench single "$tmp/single.sql"
    pg_single=$pgbench_tps
    printf '  single-row INSERT transactions: %12s tx/s\n' "$pg_single"
    run_pgbench batch "$tmp/batch.sql"
    pg_batch_tps=$pgbench_tps
    pg_rows=$(bench_calc "$pg_batch_tps * 100")
    printf '  100-row INSERT transactions:    %12s tx/s = %s rows/s\n' "$pg_batch_tps" "$pg_rows"
    "$PGBIN/dropdb" -h "$sockdir" -p "$pgport" -U postgres pgbench_events

    # (b)
    local port
    nginx_url=http://127.0.0.1:$(bench_free_port 18370)
    bench_nginx_start "$tmp/nginx" "${nginx_url##*:}" 2048 "    default_type application/json;" "
        location = /api/v1/agent/messages {
            return 200 '{\"acked_seq\":1,\"status\":\"provisioning\",\"stage\":\"device_setup\"}';
        }
        location = /healthz {
            return 200 'ok';
        }"
    bench_wait_http "$nginx_url/healthz" 10 ||
        { cat "$tmp/nginx/error.log" >&2; gb_die "nginx did not start"; }
    echo "(b) the HTTP ceiling: nginx (1 worker) answering the same requests with a fixed" \
        "acknowledgement, doing no work"
    ceiling_run n200k1 200 1
    ceiling_run n200k10 200 10
    bench_stop_pid "$nginx_pid"
    nginx_pid=
    port=$(bench_free_port 18380)
    gb_url=http://127.0.0.1:$port
    token=$(prepare_db glovebox)
    start_server glovebox "$port" "$tmp/gloveboxd.log"
    echo "(b) gloveboxd: wrk -t$THREADS -d$DURATION --latency -s tests/bench/agent.lua" \
        "(stream mode, a fleet of $STREAM_DEVICES devices per run)"
    ingest_run c50k1 50 1
    ingest_run c200k1 200 1
    ingest_run c50k10 50 10
    ingest_run c200k10 200 10
    if ! kill -0 "$server_pid" 2>/dev/null; then
        tail -n 20 "$tmp/gloveboxd.log" >&2
        gb_die "gloveboxd exited during the benchmark"
    fi
    stop_server

    # (c)
    "$PGBIN/createdb" -h "$sockdir" -p "$pgport" -U postgres glovebox_mem
    port=$(bench_free_port 18390)
    gb_url=http://127.0.0.1:$port
    token=$(prepare_db glovebox_mem)
    start_server glovebox_mem "$port" "$tmp/gloveboxd-mem.log"
    local rss0 load_s rss_loaded hwm_loaded
    rss0=$(bench_rss_kb "$server_pid")
    echo "(c) memory: $DEVICES devices, $LOAD_MSGS messages each, one request per device" \
        "(wrk -t$THREADS -c$LOAD_CONNS, devices mode); RSS at start $((rss0 / 1024)) MiB"
    load_devices
    load_s=$(cat "$tmp/load.seconds")
    rss_loaded=$(bench_rss_kb "$server_pid")
    hwm_loaded=$(bench_hwm_kb "$server_pid")
    printf '  loaded through the API in %s s (%s devices/s, %s messages/s)\n' "$load_s" \
        "$(bench_calc "$DEVICES / $load_s")" "$(bench_calc "$DEVICES * $LOAD_MSGS / $load_s")"
    printf '  VmRSS %s MiB (peak %s MiB): %s KiB per device above the start\n' \
        "$(bench_calc "$rss_loaded / 1024")" "$(bench_calc "$hwm_loaded / 1024")" \
        "$(bench_calc "($rss_loaded - $rss0) / $DEVICES")"
    stop_server
    local t0 t1 startup_s rss_restart hwm_restart known
    t0=$(date +%s.%N)
    start_server glovebox_mem "$port" "$tmp/gloveboxd-mem.log"
    t1=$(date +%s.%N)
    startup_s=$(bench_calc "$t1 - $t0")
    rss_restart=$(bench_rss_kb "$server_pid")
    hwm_restart=$(bench_hwm_kb "$server_pid")
    known=$(bench_metric "$gb_url" gb_devices)
    printf '  restarted: %s devices loaded from the database, /healthz answered after %s s\n' \
        "$known" "$startup_s"
    printf '  VmRSS %s MiB (peak %s MiB)\n' "$(bench_calc "$rss_restart / 1024")" \
        "$(bench_calc "$hwm_restart / 1024")"
    stop_server

    # The goals.
    local limit_kb=$((64 * 1024 + DEVICES)) r
    share() { bench_calc "100 * $1 / $pg_rows"; }
    echo "Goals: figure, goal, verdict (PG: the ceilings of (a))"
    read -r -a r <"$tmp/c200k1.result"
    local times
    times=$(bench_ratio "${r[0]}" "$pg_single")
    goal "1 msg/req, 200 conns: msg/s ($times x PG single-row tx/s; goal 5 x)" "${r[0]}" ">=" \
        "$(bench_calc "5 * $pg_single")"
    goal "1 msg/req, 200 conns: p99 ms" "${r[2]}" "<" 50
    read -r -a r <"$tmp/c200k10.result"
    goal "10 msg/req, 200 conns: msg/s ($(share "${r[0]}") % of PG 100-row rows/s; goal 50 %)" \
        "${r[0]}" ">=" "$(bench_calc "0.5 * $pg_rows")"
    goal "10 msg/req, 200 conns: p99 ms" "${r[2]}" "<" 50
    read -r -a r <"$tmp/c50k10.result"
    goal "10 msg/req,  50 conns: msg/s ($(share "${r[0]}") % of PG 100-row rows/s; goal 50 %)" \
        "${r[0]}" ">=" "$(bench_calc "0.5 * $pg_rows")"
    goal "VmRSS KiB, $DEVICES devices loaded through the API (goal 64 MiB + 1 KiB/device)" \
        "$rss_loaded" "<" "$limit_kb"
    goal "VmRSS KiB, $DEVICES devices loaded at start-up (goal 64 MiB + 1 KiB/device)" \
        "$rss_restart" "<" "$limit_kb"
    local ceil1 ceil10 goal1
    read -r ceil1 <"$tmp/n200k1.result"
    read -r ceil10 <"$tmp/n200k10.result"
    read -r -a r <"$tmp/c200k1.result"
    goal1=$(bench_calc "5 * $pg_single")
    printf '  (no goal: with 1 msg/req at 200 conns, nginx doing no work answers %s requests/s here;\n' \
        "$ceil1"
    printf '   gloveboxd reached %s %% of that, and the 5 x goal is %s %% of it)\n' \
        "$(bench_calc "100 * ${r[0]} / $ceil1")" "$(bench_calc "100 * $goal1 / $ceil1")"
    read -r -a r <"$tmp/c200k10.result"
    printf '  (no goal: with 10 msg/req at 200 conns, nginx doing no work answers %s messages/s;' \
        "$(bench_calc "10 * $ceil10")"
    printf ' gloveboxd reached %s %% of that)\n' "$(bench_calc "10 * ${r[0]} / $ceil10")"
    read -r -a r <"$tmp/c50k1.result"
    printf '  (no goal: 1 msg/req at 50 conns %s msg/s = %s x PG single-row tx/s, p99 %s ms)\n' \
        "${r[0]}" "$(bench_ratio "${r[0]}" "$pg_single")" "${r[2]}"
    echo "done in $(gb_elapsed "$started")"
    if [ "$invalid" = 1 ]; then
        gb_msg "a run failed its check (see FAILED above): its figures do not count"
        return 1
    fi
    if [ "$strict" = 1 ] && [ "$missed" = 1 ]; then
        return 1
    fi
}

main "$@"
