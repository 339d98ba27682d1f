/* test_pg_pool: the db layer's pool against the shared fixture cluster, one fresh database
 * per test: queries and parameters, pipelines (results per statement, one sync, all or
 * nothing), the queue cap, timeouts, conninfo merging, shutdown, metrics, and that
 * passwords stay out of the logs. Every test ends with uv_loop_close() == 0. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>
#include <uv.h>

#include "db/db.h"
#include "db_support.h"

typedef struct fx {
    uv_loop_t loop;
    gb_tdb_t db;
    gb_pg_t *pg;
    bool closed;
} fx_t;

static int setup(void **state)
{
    fx_t *fx = calloc(1, sizeof(*fx));
    if (fx == NULL || uv_loop_init(&fx->loop) != 0) {
        return -1;
    }
    gb_tdb_create(&fx->db, NULL);
    *state = fx;
    return 0;
}

static int teardown(void **state)
{
    fx_t *fx = *state;
    int rc = 0;

    if (fx->pg != NULL) {
        /* Only after a failed test: release whatever is left. */
        gb_pg_free(fx->pg);
        gb_tdb_run_until(&fx->loop, NULL, NULL, 500);
    }
    if (gb_tdb_loop_close(&fx->loop) != 0) {
        fprintf(stderr, "loop not closed cleanly\n");
        rc = -1;
    }
    gb_tdb_drop(&fx->db, NULL);
    free(fx);
    return rc;
}

static void open_pool(fx_t *fx, const char *conninfo, unsigned pool_size, unsigned queue_max,
                      unsigned query_timeout_ms)
{
    gb_pg_config_t cfg = {
        .conninfo = conninfo,
        .pool_size = pool_size,
        .queue_max = queue_max,
        .connect_timeout_ms = 2000,
        .query_timeout_ms = query_timeout_ms,
        .reconnect_min_ms = 20,
        .reconnect_max_ms = 200,
    };
    assert_int_equal(gb_pg_new(&fx->loop, &cfg, &fx->pg), 0);
}

static bool pool_up(void *arg)
{
    return gb_pg_state(((fx_t *)arg)->pg) == GB_PG_UP;
}

static void wait_up(fx_t *fx)
{
    assert_true(gb_tdb_run_until(&fx->loop, pool_up, fx, 5000));
}

/* Creates a table with table_sql, then opens a pool of one connection, so that every query of
 * the test runs on the same session, and waits until it is up. */
static void one_session(fx_t *fx, const char *table_sql)
{
    assert_true(gb_tdb_exec(fx->db.url, table_sql));
    open_pool(fx, fx->db.url, 1, 4, 5000);
    wait_up(fx);
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
    gb_pg_shutdown(fx->pg, on_closed, fx);
    assert_true(gb_tdb_run_until(&fx->loop, pool_closed, fx, 5000));
    gb_pg_free(fx->pg);
    fx->pg = NULL;
}

/* Submits op (already initialised) and runs the loop until its callback fires. */
static void run_op(fx_t *fx, gb_tdb_op_t *op)
{
    assert_int_equal(gb_pg_submit(fx->pg, &op->q), 0);
    assert_true(gb_tdb_run_until(&fx->loop, gb_tdb_op_fired, op, 10000));
}

static void query(fx_t *fx, gb_tdb_op_t *op, const char *sql)
{
    gb_tdb_op_reset(op);
    gb_pg_query_init(&op->q, sql, 0, NULL, gb_tdb_on_op);
    run_op(fx, op);
}

static void test_simple_query(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t op = {0};

    open_pool(fx, fx->db.url, 2, 16, 5000);
    wait_up(fx);
    query(fx, &op, "SELECT 1 + 1, 'two'");
    assert_int_equal(op.err, 0);
    assert_int_equal(op.nresults, 1);
    assert_int_equal(op.status[0], PGRES_TUPLES_OK);
    assert_string_equal(op.row[0], "2|two");
    gb_tdb_op_reset(&op);
    close_pool(fx);
}

static void test_submit_before_connected_waits_for_first_connection(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t op = {0};

    open_pool(fx, fx->db.url, 1, 4, 5000);
    /* No loop turn yet: the connection is still being set up, so the query waits. */
    assert_int_equal(gb_pg_state(fx->pg), GB_PG_DOWN);
    query(fx, &op, "SELECT 'early'");
    assert_int_equal(op.err, 0);
    assert_string_equal(op.row[0], "early");
    gb_tdb_op_reset(&op);
    close_pool(fx);
}

static void test_parameters_text_binary_and_null(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t op = {0};
    char bin[32];

    for (size_t i = 0; i < sizeof(bin); i++) {
        bin[i] = (char)(i * 8); /* includes NUL bytes */
    }
    const char *values[4] = {"20", "22", NULL, bin};
    const int lengths[4] = {0, 0, 0, (int)sizeof(bin)};
    const int formats[4] = {0, 0, 0, 1};
    open_pool(fx, fx->db.url, 1, 4, 5000);
    wait_up(fx);
    gb_pg_query_init(&op.q,
                     "SELECT $1::int + $2::int, $3::text IS NULL, length($4::bytea), "
                     "substr(encode($4::bytea, 'hex'), 1, 8)",
                     4, values, gb_tdb_on_op);
    op.q.stmts[0].lengths = lengths;
    op.q.stmts[0].formats = formats;
    run_op(fx, &op);
    assert_int_equal(op.err, 0);
    assert_string_equal(op.row[0], "42|t|32|00081018");

    /* Text parameters are data, never SQL. */
    const char *tricky[1] = {"it's \"quoted\"; DROP TABLE x; -- \xc3\xbc"};
    gb_tdb_op_reset(&op);
    gb_pg_query_init(&op.q, "SELECT $1::text", 1, tricky, gb_tdb_on_op);
    run_op(fx, &op);
    assert_int_equal(op.err, 0);
    assert_string_equal(op.row[0], tricky[0]);
    gb_tdb_op_reset(&op);
    close_pool(fx);
}

static void test_pipeline_transaction_results_per_statement(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t op = {0};
    const char *inc[1] = {"5"};

    one_session(fx, "CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL)");
    gb_pg_query_init(&op.q, "BEGIN", 0, NULL, gb_tdb_on_op);
    gb_pg_query_add(&op.q, "INSERT INTO items VALUES (1, 10), (2, 20)", 0, NULL);
    gb_pg_query_add(&op.q, "UPDATE items SET n = n + $1::int WHERE id = 1 RETURNING n", 1, inc);
    gb_pg_query_add(&op.q, "SELECT count(*) FROM items", 0, NULL);
    gb_pg_query_add(&op.q, "COMMIT", 0, NULL);
    run_op(fx, &op);
    assert_int_equal(op.err, 0);
    assert_int_equal(op.nresults, 5);
    assert_int_equal(op.status[0], PGRES_COMMAND_OK);
    assert_int_equal(op.status[1], PGRES_COMMAND_OK);
    assert_string_equal(op.cmd_tuples[1], "2");
    assert_int_equal(op.status[2], PGRES_TUPLES_OK);
    assert_string_equal(op.row[2], "15");
    assert_int_equal(op.status[3], PGRES_TUPLES_OK);
    assert_string_equal(op.row[3], "2");
    assert_int_equal(op.status[4], PGRES_COMMAND_OK);
    char *sum = gb_tdb_value(fx->db.url, "SELECT sum(n) FROM items");
    assert_string_equal(sum, "35");
    free(sum);

    /* Without BEGIN, statements up to one sync run in one implicit transaction: the same
     * transaction id for both proves they travelled as one unit, one round trip. */
    gb_tdb_op_reset(&op);
    gb_pg_query_init(&op.q, "SELECT txid_current()", 0, NULL, gb_tdb_on_op);
    gb_pg_query_add(&op.q, "SELECT txid_current()", 0, NULL);
    run_op(fx, &op);
    assert_int_equal(op.err, 0);
    assert_int_equal(op.nresults, 2);
    assert_string_equal(op.row[0], op.row[1]);
    gb_tdb_op_reset(&op);
    close_pool(fx);
}

static void test_pipeline_error_fails_whole_query_and_commits_nothing(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t op = {0};

    /* One connection: every query below reuses the session the failure happened on. */
    one_session(fx, "CREATE TABLE items (id int PRIMARY KEY)");
    gb_pg_query_init(&op.q, "BEGIN", 0, NULL, gb_tdb_on_op);
    gb_pg_query_add(&op.q, "INSERT INTO items VALUES (1)", 0, NULL);
    gb_pg_query_add(&op.q, "INSERT INTO items VALUES (1)", 0, NULL);
    gb_pg_query_add(&op.q, "INSERT INTO items VALUES (2)", 0, NULL);
    gb_pg_query_add(&op.q, "COMMIT", 0, NULL);
    run_op(fx, &op);
    assert_int_equal(op.err, GB_EDB);
    assert_string_equal(op.sqlstate, "23505");
    assert_non_null(strstr(op.error, "duplicate key"));
    assert_int_equal(op.nresults, 0);
    /* The session was left in an aborted transaction block; the layer rolled it back. */
    query(fx, &op, "SELECT count(*) FROM items");
    assert_int_equal(op.err, 0);
    assert_string_equal(op.row[0], "0");

    /* The same without BEGIN: the implicit transaction is all or nothing too. */
    gb_tdb_op_reset(&op);
    gb_pg_query_init(&op.q, "INSERT INTO items VALUES (3)", 0, NULL, gb_tdb_on_op);
    gb_pg_query_add(&op.q, "SELECT 1 / 0", 0, NULL);
    gb_pg_query_add(&op.q, "INSERT INTO items VALUES (4)", 0, NULL);
    run_op(fx, &op);
    assert_int_equal(op.err, GB_EDB);
    assert_string_equal(op.sqlstate, "22012");
    query(fx, &op, "SELECT count(*) FROM items");
    assert_string_equal(op.row[0], "0");

    /* A query that never commits leaves nothing behind for the next one on the session,
     * which would otherwise see its own uncommitted row. */
    gb_tdb_op_reset(&op);
    gb_pg_query_init(&op.q, "BEGIN", 0, NULL, gb_tdb_on_op);
    gb_pg_query_add(&op.q, "INSERT INTO items VALUES (5)", 0, NULL);
    run_op(fx, &op);
    assert_int_equal(op.err, 0);
    query(fx, &op, "SELECT count(*) FROM items");
    assert_int_equal(op.err, 0);
    assert_string_equal(op.row[0], "0");
    gb_tdb_op_reset(&op);
    close_pool(fx);
}

/* Prepared statements: the SQL texts are static, as the layer requires. */
static const char PREP_INSERT[] = "INSERT INTO items SELECT * FROM unnest($1::int[])";
static const char PREP_COUNT[] = "SELECT count(*) FROM items WHERE id > $1::int";
static const char PREP_LATE[] = "SELECT count(*) FROM late WHERE id > $1::int";
static const char PREP_KEPT[] = "SELECT $1::int * 2";

/* The names this session has prepared, "gb_p0,gb_p1,..." ("" for none), asked on the same
 * connection (the pool has one). */
static void prepared_names(fx_t *fx, gb_tdb_op_t *op, const char *want)
{
    query(fx, op,
          "SELECT coalesce(string_agg(name, ',' ORDER BY name), '') FROM pg_prepared_statements");
    assert_int_equal(op->err, 0);
    assert_string_equal(op->row[0], want);
}

/* BEGIN; insert ids; count ids above `above`; COMMIT, with both middle statements prepared. */
static void insert_and_count(fx_t *fx, gb_tdb_op_t *op, const char *ids, const char *above)
{
    /* The parameters stay valid until the callback: run_op returns after it. */
    const char *p_ids[1] = {ids};
    const char *p_above[1] = {above};
    gb_tdb_op_reset(op);
    gb_pg_query_init(&op->q, "BEGIN", 0, NULL, gb_tdb_on_op);
    gb_pg_query_add_prepared(&op->q, PREP_INSERT, 1, p_ids);
    gb_pg_query_add_prepared(&op->q, PREP_COUNT, 1, p_above);
    gb_pg_query_add(&op->q, "COMMIT", 0, NULL);
    run_op(fx, op);
}

static void test_prepared_statements_are_parsed_once_per_session(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t op = {0};

    one_session(fx, "CREATE TABLE items (id int PRIMARY KEY)");
    prepared_names(fx, &op, "");

    /* The first run prepares both in its own pipeline; the Parse results are not the
     * caller's: one result per statement, as without preparing. */
    insert_and_count(fx, &op, "{1,2,3}", "1");
    assert_int_equal(op.err, 0);
    assert_int_equal(op.nresults, 4);
    assert_string_equal(op.cmd_tuples[1], "3");
    assert_string_equal(op.row[2], "2");
    prepared_names(fx, &op, "gb_p0,gb_p1");

    /* Later runs bind and execute them (preparing again would fail: the names exist). */
    insert_and_count(fx, &op, "{4,5}", "0");
    assert_int_equal(op.err, 0);
    assert_int_equal(op.nresults, 4);
    assert_string_equal(op.row[2], "5");
    prepared_names(fx, &op, "gb_p0,gb_p1");

    /* A statement prepared in a pipeline that fails after it stays prepared: the session
     * keeps it through the rollback. */
    const char *zero[1] = {"0"};
    const char *twenty_one[1] = {"21"};
    gb_tdb_op_reset(&op);
    gb_pg_query_init(&op.q, "BEGIN", 0, NULL, gb_tdb_on_op);
    gb_pg_query_add_prepared(&op.q, PREP_KEPT, 1, twenty_one);
    gb_pg_query_add(&op.q, "SELECT 1 / 0", 0, NULL);
    gb_pg_query_add(&op.q, "COMMIT", 0, NULL);
    run_op(fx, &op);
    assert_int_equal(op.err, GB_EDB);
    assert_string_equal(op.sqlstate, "22012");
    prepared_names(fx, &op, "gb_p0,gb_p1,gb_p2");
    gb_tdb_op_reset(&op);
    gb_pg_query_init(&op.q, PREP_KEPT, 1, twenty_one, gb_tdb_on_op);
    op.q.stmts[0].prepare = true;
    run_op(fx, &op);
    assert_int_equal(op.err, 0);
    assert_string_equal(op.row[0], "42");
    prepared_names(fx, &op, "gb_p0,gb_p1,gb_p2");

    /* A statement that fails to prepare fails its query, and is prepared afresh next time. */
    gb_tdb_op_reset(&op);
    gb_pg_query_init(&op.q, "SELECT 1", 0, NULL, gb_tdb_on_op);
    gb_pg_query_add_prepared(&op.q, PREP_LATE, 1, zero);
    run_op(fx, &op);
    assert_int_equal(op.err, GB_EDB);
    assert_string_equal(op.sqlstate, "42P01");
    prepared_names(fx, &op, "gb_p0,gb_p1,gb_p2");
    assert_true(gb_tdb_exec(fx->db.url, "CREATE TABLE late (id int); INSERT INTO late VALUES (7)"));
    /* Twice in one pipeline: one Parse, two executions. */
    gb_tdb_op_reset(&op);
    gb_pg_query_init(&op.q, "SELECT 1", 0, NULL, gb_tdb_on_op);
    gb_pg_query_add_prepared(&op.q, PREP_LATE, 1, zero);
    gb_pg_query_add_prepared(&op.q, PREP_LATE, 1, zero);
    run_op(fx, &op);
    assert_int_equal(op.err, 0);
    assert_int_equal(op.nresults, 3);
    assert_string_equal(op.row[1], "1");
    assert_string_equal(op.row[2], "1");
    prepared_names(fx, &op, "gb_p0,gb_p1,gb_p2,gb_p3");

    /* A new session (the old one killed) starts from none and prepares again. */
    assert_true(gb_tdb_exec(fx->db.url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE datname = current_database() "
                                        "AND pid <> pg_backend_pid()"));
    int64_t deadline = gb_time_mono_ms() + 10000;
    do {
        insert_and_count(fx, &op, "{6}", "5");
    } while (op.err == GB_EDBDOWN && gb_time_mono_ms() < deadline &&
             gb_tdb_run_until(&fx->loop, pool_up, fx, 5000));
    assert_int_equal(op.err, 0);
    assert_string_equal(op.row[2], "1");
    prepared_names(fx, &op, "gb_p0,gb_p1");
    gb_tdb_op_reset(&op);
    close_pool(fx);
}

static bool depth_is_two(void *arg)
{
    return gb_pg_queue_depth(((fx_t *)arg)->pg) == 2;
}

static void test_queue_cap_returns_busy(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t ops[5];
    unsigned done = 0;

    memset(ops, 0, sizeof(ops));
    open_pool(fx, fx->db.url, 1, 2, 5000);
    wait_up(fx);
    for (int i = 0; i < 5; i++) {
        gb_pg_query_init(&ops[i].q, "SELECT pg_sleep(0.05)", 0, NULL, gb_tdb_on_op);
        ops[i].counter = &done;
    }
    /* One idle connection and two waiting places. */
    assert_int_equal(gb_pg_submit(fx->pg, &ops[0].q), 0);
    assert_int_equal(gb_pg_submit(fx->pg, &ops[1].q), 0);
    assert_int_equal(gb_pg_submit(fx->pg, &ops[2].q), 0);
    assert_int_equal(gb_pg_submit(fx->pg, &ops[3].q), GB_EBUSY);
    assert_true(gb_tdb_run_until(&fx->loop, depth_is_two, fx, 2000));
    assert_int_equal(gb_pg_submit(fx->pg, &ops[4].q), GB_EBUSY);
    assert_true(gb_tdb_run_until(&fx->loop, gb_tdb_op_fired, &ops[2], 5000));
    gb_tdb_run_until(&fx->loop, NULL, NULL, 50);
    assert_int_equal(done, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(ops[i].err, 0);
    }
    assert_false(ops[3].fired);
    assert_false(ops[4].fired);

    gb_buf_t m;
    gb_buf_init(&m);
    gb_pg_write_metrics(fx->pg, &m);
    assert_non_null(strstr(m.data, "gb_db_queries_total{result=\"busy\"} 2\n"));
    gb_buf_dispose(&m);
    for (int i = 0; i < 5; i++) {
        gb_tdb_op_reset(&ops[i]);
    }
    close_pool(fx);
}

/* The fixture's URI in key=value form, with options added. */
static char *keyvalue_conninfo(const char *uri, const char *options)
{
    PQconninfoOption *opts = PQconninfoParse(uri, NULL);
    gb_buf_t b;

    assert_non_null(opts);
    gb_buf_init(&b);
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (o->val != NULL) {
            gb_buf_appendf(&b, "%s='%s' ", o->keyword, o->val);
        }
    }
    gb_buf_appendf(&b, "options='%s'", options);
    PQconninfoFree(opts);
    return gb_buf_steal(&b, NULL);
}

static void check_timeout_and_options(fx_t *fx, const char *conninfo)
{
    gb_tdb_op_t op = {0};

    open_pool(fx, conninfo, 1, 4, 300);
    wait_up(fx);
    /* The user's own options are kept next to ours. */
    query(fx, &op, "SELECT current_setting('work_mem'), current_setting('statement_timeout')");
    assert_int_equal(op.err, 0);
    assert_string_equal(op.row[0], "7MB|300ms");
    query(fx, &op, "SELECT current_setting('application_name')");
    assert_string_equal(op.row[0], "gloveboxd");

    int64_t t0 = gb_time_mono_ms();
    query(fx, &op, "SELECT pg_sleep(5)");
    int64_t took = gb_time_mono_ms() - t0;
    assert_int_equal(op.err, GB_EDBDOWN); /* "query timed out" */
    assert_string_equal(op.sqlstate, "57014");
    assert_true(took < 2000);
    print_message("statement_timeout 300 ms: callback after %lld ms\n", (long long)took);

    /* A cancelled statement leaves the connection usable. */
    query(fx, &op, "SELECT 1");
    assert_int_equal(op.err, 0);
    gb_tdb_op_reset(&op);
    close_pool(fx);
}

static void test_statement_timeout_merges_with_user_options(void **state)
{
    fx_t *fx = *state;

    char *uri = gb_xasprintf("%s&options=-c%%20work_mem%%3D7MB", fx->db.url);
    check_timeout_and_options(fx, uri);
    free(uri);
    char *kv = keyvalue_conninfo(fx->db.url, "-c work_mem=7MB");
    check_timeout_and_options(fx, kv);
    free(kv);
}

static void test_watchdog_abandons_connection_without_answer(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t op = {0};

    gb_pg_config_t cfg = {
        .conninfo = fx->db.url,
        .pool_size = 1,
        .queue_max = 4,
        .connect_timeout_ms = 300,
        .query_timeout_ms = 100,
        .reconnect_min_ms = 20,
        .reconnect_max_ms = 200,
    };
    assert_int_equal(gb_pg_new(&fx->loop, &cfg, &fx->pg), 0);
    wait_up(fx);
    /* The server would cancel the sleep; switching that off stands in for a server that no
     * longer answers. The watchdog allows 2 x 100 ms plus the 300 ms connect timeout. */
    gb_pg_query_init(&op.q, "SET statement_timeout = 0", 0, NULL, gb_tdb_on_op);
    gb_pg_query_add(&op.q, "SELECT pg_sleep(10)", 0, NULL);
    int64_t t0 = gb_time_mono_ms();
    run_op(fx, &op);
    int64_t took = gb_time_mono_ms() - t0;
    assert_int_equal(op.err, GB_EDBDOWN);
    assert_true(took >= 450 && took < 2000);
    print_message("watchdog: callback after %lld ms\n", (long long)took);
    /* The pool reconnects by itself. */
    wait_up(fx);
    query(fx, &op, "SELECT 1");
    assert_int_equal(op.err, 0);
    gb_tdb_op_reset(&op);
    close_pool(fx);
}

static bool depth_is_one(void *arg)
{
    return gb_pg_queue_depth(((fx_t *)arg)->pg) == 1;
}

static void test_shutdown_lets_inflight_finish_and_cancels_waiting(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t running = {0}, waiting = {0}, late = {0};

    open_pool(fx, fx->db.url, 1, 4, 5000);
    wait_up(fx);
    gb_pg_query_init(&running.q, "SELECT pg_sleep(0.2), 'finished'", 0, NULL, gb_tdb_on_op);
    gb_pg_query_init(&waiting.q, "SELECT 1", 0, NULL, gb_tdb_on_op);
    gb_pg_query_init(&late.q, "SELECT 1", 0, NULL, gb_tdb_on_op);
    assert_int_equal(gb_pg_submit(fx->pg, &running.q), 0);
    assert_int_equal(gb_pg_submit(fx->pg, &waiting.q), 0);
    assert_true(gb_tdb_run_until(&fx->loop, depth_is_one, fx, 2000));

    gb_pg_shutdown(fx->pg, on_closed, fx);
    /* Callbacks never fire inside the caller's own call. */
    assert_false(waiting.fired);
    assert_int_equal(gb_pg_submit(fx->pg, &late.q), GB_ECLOSED);
    assert_true(gb_tdb_run_until(&fx->loop, pool_closed, fx, 5000));
    assert_int_equal(running.err, 0);
    assert_string_equal(running.row[0], "|finished");
    assert_true(waiting.fired);
    assert_int_equal(waiting.err, GB_ECLOSED);
    assert_false(late.fired);
    gb_pg_free(fx->pg);
    fx->pg = NULL;
    gb_tdb_op_reset(&running);
    gb_tdb_op_reset(&waiting);
    gb_tdb_op_reset(&late);
}

static void test_free_without_shutdown_releases_everything(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t op = {0};

    open_pool(fx, fx->db.url, 3, 4, 5000);
    wait_up(fx);
    gb_pg_query_init(&op.q, "SELECT 1", 0, NULL, gb_tdb_on_op);
    assert_int_equal(gb_pg_submit(fx->pg, &op.q), 0);
    gb_pg_free(fx->pg);
    fx->pg = NULL;
    assert_true(gb_tdb_run_until(&fx->loop, gb_tdb_op_fired, &op, 2000));
    assert_int_equal(op.err, GB_ECLOSED);
    gb_tdb_run_until(&fx->loop, NULL, NULL, 100);
    gb_tdb_op_reset(&op);
}

/* Heap operations that free themselves in their callback and submit the next one. */
typedef struct chain {
    gb_pg_t *pg;
    unsigned started, finished, failed;
} chain_t;

typedef struct chain_op {
    gb_pg_query_t q;
    chain_t *chain;
    char param[16];
    const char *values[1];
} chain_op_t;

static void chain_next(chain_t *chain);

static void on_chain_op(gb_pg_query_t *q, int err, PGresult *const *results, size_t n)
{
    chain_op_t *op = gb_container_of(q, chain_op_t, q);
    chain_t *chain = op->chain;
    bool ok = err == 0 && n == 1 && strcmp(PQgetvalue(results[0], 0, 0), op->param) == 0;

    chain->finished++;
    chain->failed += !ok;
    free(op);
    chain_next(chain);
}

static void chain_next(chain_t *chain)
{
    if (chain->started == 100) {
        return;
    }
    chain_op_t *op = calloc(1, sizeof(*op));
    assert_non_null(op);
    op->chain = chain;
    snprintf(op->param, sizeof(op->param), "%u", chain->started++);
    op->values[0] = op->param;
    gb_pg_query_init(&op->q, "SELECT $1::int", 1, op->values, on_chain_op);
    if (gb_pg_submit(chain->pg, &op->q) != 0) {
        chain->failed++;
        free(op);
    }
}

static bool chain_done(void *arg)
{
    return ((chain_t *)arg)->finished == 100;
}

static void test_callbacks_may_free_their_query_and_submit_more(void **state)
{
    fx_t *fx = *state;
    chain_t chain = {0};

    open_pool(fx, fx->db.url, 3, 8, 5000);
    wait_up(fx);
    chain.pg = fx->pg;
    for (int i = 0; i < 6; i++) {
        chain_next(&chain);
    }
    assert_true(gb_tdb_run_until(&fx->loop, chain_done, &chain, 10000));
    assert_int_equal(chain.failed, 0);
    close_pool(fx);
}

static bool both_idle(void *arg)
{
    gb_buf_t m;
    gb_buf_init(&m);
    gb_pg_write_metrics(((fx_t *)arg)->pg, &m);
    bool yes = strstr(m.data, "gb_db_connections{state=\"idle\"} 2\n") != NULL;
    gb_buf_dispose(&m);
    return yes;
}

static void test_metrics_text(void **state)
{
    fx_t *fx = *state;
    gb_tdb_op_t op = {0};
    gb_buf_t m;

    open_pool(fx, fx->db.url, 2, 4, 5000);
    assert_true(gb_tdb_run_until(&fx->loop, both_idle, fx, 5000));
    query(fx, &op, "SELECT 1");
    query(fx, &op, "SELECT nope");
    assert_int_equal(op.err, GB_EDB);
    assert_string_equal(op.sqlstate, "42703");
    gb_buf_init(&m);
    gb_pg_write_metrics(fx->pg, &m);
    const char *expect[] = {
        "# HELP gb_db_up ",
        "# TYPE gb_db_up gauge\ngb_db_up 1\n",
        "# TYPE gb_db_queue_depth gauge\ngb_db_queue_depth 0\n",
        "# TYPE gb_db_queue_oldest_wait_seconds gauge\n",
        "# HELP gb_db_connections ",
        "# TYPE gb_db_connections gauge\n",
        "gb_db_connections{state=\"idle\"} 2\n",
        "# TYPE gb_db_queries_total counter\n",
        "gb_db_queries_total{result=\"ok\"} 1\n",
        "gb_db_queries_total{result=\"error\"} 1\n",
        "# TYPE gb_db_reconnects_total counter\ngb_db_reconnects_total 0\n",
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(expect); i++) {
        if (strstr(m.data, expect[i]) == NULL) {
            fail_msg("metrics lack \"%s\":\n%s", expect[i], m.data);
        }
    }
    gb_buf_dispose(&m);
    gb_tdb_op_reset(&op);
    close_pool(fx);
}

static void test_connect_blocking_rounds_timeout_up(void **state)
{
    fx_t *fx = *state;
    char err[256];

    PGconn *conn = gb_pg_connect_blocking(fx->db.url, 1500, err, sizeof(err));
    assert_non_null(conn);
    PQconninfoOption *opts = PQconninfo(conn);
    const char *timeout = NULL;
    for (PQconninfoOption *o = opts; o->keyword != NULL; o++) {
        if (strcmp(o->keyword, "connect_timeout") == 0) {
            timeout = o->val;
            break;
        }
    }
    assert_non_null(timeout);
    assert_string_equal(timeout, "2");
    PQconninfoFree(opts);
    PQfinish(conn);

    char *bad = gb_xasprintf("%s&dbname=no_such_database_here", fx->db.url);
    assert_null(gb_pg_connect_blocking(bad, 1000, err, sizeof(err)));
    assert_non_null(strstr(err, "no_such_database_here"));
    assert_null(strchr(err, '\n'));
    free(bad);
}

static void test_passwords_never_logged(void **state)
{
    fx_t *fx = *state;
    char path[] = "/tmp/gbdblog.XXXXXX";
    char err[256];
    int fd = mkstemp(path);
    assert_true(fd >= 0);

    /* Capture our own stderr, where gb_log writes. */
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    gb_pg_t *pg = NULL;
    gb_pg_config_t cfg = {
        .conninfo = "postgresql://postgres:s3cretpw@/nodb?host=/nonexistent-gbdbtest",
        .pool_size = 2,
        .queue_max = 4,
        .connect_timeout_ms = 500,
        .reconnect_min_ms = 10,
        .reconnect_max_ms = 20,
    };
    int rc_new = gb_pg_new(&fx->loop, &cfg, &pg);
    if (rc_new == 0) {
        gb_tdb_run_until(&fx->loop, NULL, NULL, 100);
        gb_pg_free(pg);
        gb_tdb_run_until(&fx->loop, NULL, NULL, 50);
    }
    gb_pg_t *bad = NULL;
    cfg.conninfo = "postgresql://postgres:s3cret%zz@/nodb";
    int rc_bad_uri = gb_pg_new(&fx->loop, &cfg, &bad);
    cfg.conninfo = "password='s3cret kv' bogus=1";
    int rc_bad_kv = gb_pg_new(&fx->loop, &cfg, &bad);
    PGconn *c1 = gb_pg_connect_blocking("postgresql://u:s3cret%zz@/x", 1000, err, sizeof(err));
    char err1[256];
    snprintf(err1, sizeof(err1), "%s", err);
    PGconn *c2 = gb_pg_connect_blocking("host=/nonexistent-gbdbtest password=s3cretpw dbname=x",
                                        1000, err, sizeof(err));
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);

    size_t len = 0;
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char *log = calloc(1, 65536);
    assert_non_null(log);
    len = fread(log, 1, 65535, f);
    fclose(f);
    unlink(path);
    print_message("captured %zu bytes of log:\n%s", len, log);

    assert_int_equal(rc_new, 0);
    assert_int_equal(rc_bad_uri, GB_EINVAL);
    assert_int_equal(rc_bad_kv, GB_EINVAL);
    assert_null(c1);
    assert_null(c2);
    assert_null(strstr(err1, "s3cret"));
    assert_non_null(strstr(err1, "***"));
    assert_null(strstr(err, "s3cret"));
    assert_null(strstr(log, "s3cret"));
    assert_non_null(strstr(log, "database unreachable at start"));
    assert_non_null(strstr(log, "invalid connection string"));
    free(log);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_simple_query, setup, teardown),
        cmocka_unit_test_setup_teardown(test_submit_before_connected_waits_for_first_connection,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_parameters_text_binary_and_null, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_transaction_results_per_statement, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_pipeline_error_fails_whole_query_and_commits_nothing,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_prepared_statements_are_parsed_once_per_session, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_queue_cap_returns_busy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_statement_timeout_merges_with_user_options, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_watchdog_abandons_connection_without_answer, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_lets_inflight_finish_and_cancels_waiting,
                                        setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_without_shutdown_releases_everything, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_callbacks_may_free_their_query_and_submit_more, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_metrics_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_blocking_rounds_timeout_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_passwords_never_logged, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
