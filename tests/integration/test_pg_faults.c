/* test_pg_faults: the pool when PostgreSQL goes away. A private cluster (never the shared
 * fixture) is killed, stopped and restarted under the pool; a missing socket and a server
 * that accepts but never answers stand for unreachable databases. What must hold: every
 * callback fires with GB_EDBDOWN promptly, submissions fail fast while down, the pool comes
 * back by itself, and the loop closes clean. Timings are printed for the record. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <uv.h>

#include "db/db.h"
#include "db_support.h"

static char cluster_dir[64];
static char *cluster_url;

typedef struct fx {
    uv_loop_t loop;
    gb_pg_t *pg;
    bool closed;
} fx_t;

static int group_setup(void **state)
{
    GB_UNUSED(state);
    gb_tdb_cluster_create(cluster_dir);
    cluster_url = gb_tdb_cluster_url(cluster_dir, "glovebox");
    return 0;
}

static int group_teardown(void **state)
{
    GB_UNUSED(state);
    gb_tdb_cluster_destroy(cluster_dir);
    free(cluster_url);
    return 0;
}

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    if (fx == NULL || uv_loop_init(&fx->loop) != 0) {
        return -1;
    }
    /* A test that failed half-way may have left the cluster down. */
    if (gb_tdb_cluster("status", cluster_dir) != 0 && gb_tdb_cluster("start", cluster_dir) != 0) {
        return -1;
    }
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    int rc = 0;

    if (fx->pg != NULL) {
        gb_pg_free(fx->pg);
        gb_tdb_run_until(&fx->loop, NULL, NULL, 500);
    }
    if (gb_tdb_loop_close(&fx->loop) != 0) {
        fprintf(stderr, "loop not closed cleanly\n");
        rc = -1;
    }
    free(fx);
    return rc;
}

static void open_pool(fx_t *fx, const char *conninfo, unsigned pool_size, unsigned connect_ms)
{
    gb_pg_config_t cfg = {
        .conninfo = conninfo,
        .pool_size = pool_size,
        .queue_max = 16,
        .connect_timeout_ms = connect_ms,
        .query_timeout_ms = 0, /* the long sleeps below must not be cancelled */
        .reconnect_min_ms = 20,
        .reconnect_max_ms = 200,
    };
    assert_int_equal(gb_pg_new(&fx->loop, &cfg, &fx->pg), 0);
}

static bool pool_up(void *arg)
{
    return gb_pg_state(((fx_t *)arg)->pg) == GB_PG_UP;
}

static bool pool_down(void *arg)
{
    return gb_pg_state(((fx_t *)arg)->pg) == GB_PG_DOWN;
}

static void on_closed(void *arg)
{
    ((fx_t *)arg)->closed = true;
}

static bool pool_closed(void *arg)
{
    return ((fx_t *)arg)->closed;
}

static void close_pool(fx_t *fx)
{
    int64_t t0 = gb_time_mono_ms();
    gb_pg_shutdown(fx->pg, on_closed, fx);
    assert_true(gb_tdb_run_until(&fx->loop, pool_closed, fx, 2000));
    assert_true(gb_time_mono_ms() - t0 < 1000);
    gb_pg_free(fx->pg);
    fx->pg = NULL;
}

static void run_query(fx_t *fx, gb_tdb_op_t *op, const char *sql)
{
    gb_tdb_op_reset(op);
    gb_pg_query_init(&op->q, sql, 0, NULL, gb_tdb_on_op);
    assert_int_equal(gb_pg_submit(fx->pg, &op->q), 0);
    assert_true(gb_tdb_run_until(&fx->loop, gb_tdb_op_fired, op, 5000));
}

/* Restarts the cluster and checks the pool comes back by itself, then serves a query. */
static void restart_and_recover(fx_t *fx, const char *what)
{
    gb_tdb_op_t op = {0};

    assert_int_equal(gb_tdb_cluster("start", cluster_dir), 0);
    int64_t t0 = gb_time_mono_ms();
    assert_true(gb_tdb_run_until(&fx->loop, pool_up, fx, 5000));
    print_message("%s: pool up %lld ms after the cluster was back\n", what,
                  (long long)(gb_time_mono_ms() - t0));
    run_query(fx, &op, "SELECT 'back'");
    assert_int_equal(op.err, 0);
    assert_string_equal(op.row[0], "back");
    gb_tdb_op_reset(&op);
}

typedef struct all_fired {
    gb_tdb_op_t *ops;
    size_t n;
} all_fired_t;

static bool ops_fired(void *arg)
{
    all_fired_t *a = arg;
    for (size_t i = 0; i < a->n; i++) {
        if (!a->ops[i].fired) {
            return false;
        }
    }
    return true;
}

static bool two_dispatched(void *arg)
{
    return gb_pg_queue_depth(((fx_t *)arg)->pg) == 4;
}

static void test_kill_fails_inflight_and_waiting_promptly(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t ops[6];

    assert_true(
        gb_tdb_exec(cluster_url, "DROP TABLE IF EXISTS killed; CREATE TABLE killed (id int)"));
    memset(ops, 0, sizeof(ops));
    open_pool(fx, cluster_url, 2, 1000);
    assert_true(gb_tdb_run_until(&fx->loop, pool_up, fx, 5000));
    /* Let both connections come up, so both take a query. */
    gb_tdb_run_until(&fx->loop, NULL, NULL, 100);
    /* In flight: a transaction half done, and a long statement. Then four waiting. */
    gb_pg_query_init(&ops[0].q, "BEGIN", 0, NULL, gb_tdb_on_op);
    gb_pg_query_add(&ops[0].q, "INSERT INTO killed VALUES (1)", 0, NULL);
    gb_pg_query_add(&ops[0].q, "SELECT pg_sleep(30)", 0, NULL);
    gb_pg_query_add(&ops[0].q, "COMMIT", 0, NULL);
    gb_pg_query_init(&ops[1].q, "SELECT pg_sleep(30)", 0, NULL, gb_tdb_on_op);
    for (int i = 2; i < 6; i++) {
        gb_pg_query_init(&ops[i].q, "SELECT 1", 0, NULL, gb_tdb_on_op);
    }
    for (int i = 0; i < 6; i++) {
        assert_int_equal(gb_pg_submit(fx->pg, &ops[i].q), 0);
    }
    assert_true(gb_tdb_run_until(&fx->loop, two_dispatched, fx, 2000));
    gb_tdb_run_until(&fx->loop, NULL, NULL, 200); /* the statements reach the server */
    assert_false(ops[0].fired || ops[1].fired);

    int64_t t0 = gb_time_mono_ms();
    assert_int_equal(gb_tdb_cluster("kill", cluster_dir), 0);
    int64_t killed = gb_time_mono_ms();
    all_fired_t all = {ops, 6};
    assert_true(gb_tdb_run_until(&fx->loop, ops_fired, &all, 3000));
    int64_t last = 0;
    for (int i = 0; i < 6; i++) {
        assert_int_equal(ops[i].err, GB_EDBDOWN);
        assert_true(ops[i].error[0] != '\0');
        if (ops[i].fired_ms > last) {
            last = ops[i].fired_ms;
        }
    }
    print_message("kill: pg-cluster kill took %lld ms; all 6 callbacks within %lld ms after\n",
                  (long long)(killed - t0), (long long)(last - killed));
    assert_true(last - killed < 1000);
    assert_true(gb_tdb_run_until(&fx->loop, pool_down, fx, 1000));

    /* Down: submissions fail at once, without a callback. */
    gb_tdb_op_t refused = {0};
    gb_pg_query_init(&refused.q, "SELECT 1", 0, NULL, gb_tdb_on_op);
    int64_t t1 = gb_time_mono_ms();
    assert_int_equal(gb_pg_submit(fx->pg, &refused.q), GB_EDBDOWN);
    assert_true(gb_time_mono_ms() - t1 < 50);
    gb_tdb_run_until(&fx->loop, NULL, NULL, 100);
    assert_false(refused.fired);

    restart_and_recover(fx, "kill");
    /* The transaction killed half-way left nothing. */
    gb_tdb_op_t count = {0};
    run_query(fx, &count, "SELECT count(*) FROM killed");
    assert_string_equal(count.row[0], "0");
    gb_tdb_op_reset(&count);
    for (int i = 0; i < 6; i++) {
        gb_tdb_op_reset(&ops[i]);
    }
    close_pool(fx);
}

static void test_stop_while_idle_is_noticed_at_once(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t op = {0};
    gb_buf_t m;

    open_pool(fx, cluster_url, 3, 1000);
    assert_true(gb_tdb_run_until(&fx->loop, pool_up, fx, 5000));
    gb_tdb_run_until(&fx->loop, NULL, NULL, 100);
    /* No query runs: only the armed idle connections can notice. */
    assert_int_equal(gb_tdb_cluster("stop", cluster_dir), 0);
    int64_t stopped = gb_time_mono_ms();
    assert_true(gb_tdb_run_until(&fx->loop, pool_down, fx, 1000));
    int64_t took = gb_time_mono_ms() - stopped;
    print_message("stop while idle: pool down %lld ms after pg-cluster stop returned\n",
                  (long long)took);
    assert_true(took < 500);
    gb_pg_query_init(&op.q, "SELECT 1", 0, NULL, gb_tdb_on_op);
    assert_int_equal(gb_pg_submit(fx->pg, &op.q), GB_EDBDOWN);

    /* A while down: retries keep going with backoff (capped at 200 ms here). */
    gb_tdb_run_until(&fx->loop, NULL, NULL, 500);
    gb_buf_init(&m);
    gb_pg_write_metrics(fx->pg, &m);
    assert_non_null(strstr(m.data, "gb_db_up 0\n"));
    assert_non_null(strstr(m.data, "gb_db_connections{state=\"idle\"} 0\n"));
    assert_null(strstr(m.data, "gb_db_reconnects_total 0\n"));
    gb_buf_dispose(&m);

    restart_and_recover(fx, "stop");
    gb_tdb_op_reset(&op);
    close_pool(fx);
}

static void test_missing_socket_fails_fast(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t op = {0};

    int64_t t0 = gb_time_mono_ms();
    open_pool(fx, "host=/nonexistent-gbdbtest dbname=x user=postgres", 2, 1000);
    /* The first attempts start on the loop's first turn and fail at once: after that there is
     * nothing to wait for. */
    gb_tdb_run_until(&fx->loop, NULL, NULL, 20);
    assert_int_equal(gb_pg_state(fx->pg), GB_PG_DOWN);
    gb_pg_query_init(&op.q, "SELECT 1", 0, NULL, gb_tdb_on_op);
    assert_int_equal(gb_pg_submit(fx->pg, &op.q), GB_EDBDOWN);
    print_message("missing socket: refused %lld ms after gb_pg_new\n",
                  (long long)(gb_time_mono_ms() - t0));
    assert_true(gb_time_mono_ms() - t0 < 200);
    gb_tdb_run_until(&fx->loop, NULL, NULL, 200);
    assert_false(op.fired);
    assert_int_equal(gb_pg_state(fx->pg), GB_PG_DOWN);
    close_pool(fx);
}

/* A TCP listener that never accepts: the kernel completes the handshake, libpq sends its
 * startup packet, and no answer ever comes. */
static int silent_listener(int *port)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    int fd = socket(AF_INET, SOCK_STREAM, 0);

    assert_true(fd >= 0);
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void test_silent_server_bounded_by_connect_timeout(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t op = {0};
    char err[256];
    int port;
    int fd = silent_listener(&port);
    char *conninfo = gb_xasprintf(
        "host=127.0.0.1 port=%d dbname=x user=postgres sslmode=disable gssencmode=disable", port);

    open_pool(fx, conninfo, 2, 300);
    /* During start-up a query waits for the first attempts, which time out. */
    gb_pg_query_init(&op.q, "SELECT 1", 0, NULL, gb_tdb_on_op);
    int64_t t0 = gb_time_mono_ms();
    assert_int_equal(gb_pg_submit(fx->pg, &op.q), 0);
    assert_true(gb_tdb_run_until(&fx->loop, gb_tdb_op_fired, &op, 3000));
    int64_t took = gb_time_mono_ms() - t0;
    print_message("silent server: waiting query failed after %lld ms (connect timeout 300)\n",
                  (long long)took);
    assert_int_equal(op.err, GB_EDBDOWN);
    assert_true(took >= 250 && took < 1000);
    assert_int_equal(gb_pg_state(fx->pg), GB_PG_DOWN);
    close_pool(fx);

    /* The blocking helper: 1000 ms rounds up to libpq's whole seconds (its minimum is 2). */
    t0 = gb_time_mono_ms();
    assert_null(gb_pg_connect_blocking(conninfo, 1000, err, sizeof(err)));
    took = gb_time_mono_ms() - t0;
    print_message("silent server: blocking connect gave up after %lld ms: %s\n", (long long)took,
                  err);
    assert_true(took < 4000);
    close(fd);
    free(conninfo);
    gb_tdb_op_reset(&op);
}

static void test_shutdown_while_down_is_prompt(void **state)
{
    fx_t *fx = *state;

    open_pool(fx, cluster_url, 2, 1000);
    assert_true(gb_tdb_run_until(&fx->loop, pool_up, fx, 5000));
    assert_int_equal(gb_tdb_cluster("kill", cluster_dir), 0);
    assert_true(gb_tdb_run_until(&fx->loop, pool_down, fx, 1000));
    gb_tdb_run_until(&fx->loop, NULL, NULL, 100); /* in backoff or reconnecting */
    close_pool(fx);
    assert_int_equal(gb_tdb_cluster("start", cluster_dir), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_kill_fails_inflight_and_waiting_promptly, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_stop_while_idle_is_noticed_at_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_socket_fails_fast, setup, teardown),
        cmocka_unit_test_setup_teardown(test_silent_server_bounded_by_connect_timeout, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_while_down_is_prompt, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
