/* db_support: see db_support.h. Cluster commands go through scripts/lib/pg-cluster (its path
 * is GB_PG_CLUSTER; the fixture cluster lives in GB_PGDIR). Failures of the helpers fail the
 * running cmocka test rather than returning codes every test would have to check. */
#include "db_support.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <libpq-fe.h>

#include "util/util.h"

/* The URI of a placeholder database, computed once per directory, then edited: the script
 * takes a while as root (it checks every parent directory). */
#define PLACEHOLDER "gbtdb_placeholder"

char *gb_tdb_cluster_url(const char *dir, const char *dbname)
{
    static char cached_dir[256];
    static char cached[512];

    if (strcmp(cached_dir, dir) != 0) {
        char cmd[512];
        snprintf(cmd, sizeof(cmd), "'%s' url '%s' %s", GB_PG_CLUSTER, dir, PLACEHOLDER);
        FILE *p = popen(cmd, "r");
        if (p == NULL || fgets(cached, sizeof(cached), p) == NULL) {
            if (p != NULL) {
                pclose(p);
            }
            fail_msg("pg-cluster url %s failed", dir);
        }
        pclose(p);
        cached[strcspn(cached, "\n")] = '\0';
        snprintf(cached_dir, sizeof(cached_dir), "%s", dir);
    }
    /* postgresql:///PLACEHOLDER?host=...: the name sits between "///" and "?". */
    const char *at = strstr(cached, PLACEHOLDER);
    GB_ASSERT(at != NULL);
    return gb_xasprintf("%.*s%s%s", (int)(at - cached), cached, dbname, at + strlen(PLACEHOLDER));
}

static PGconn *connect_or_fail(const char *url)
{
    PGconn *conn = PQconnectdb(url);
    if (PQstatus(conn) != CONNECTION_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQerrorMessage(conn));
        PQfinish(conn);
        fail_msg("connect %s: %s", url, msg);
    }
    return conn;
}

void gb_tdb_create(gb_tdb_t *db, const char *dir)
{
    static unsigned counter;
    uint32_t rnd = 0;

    if (!gb_random_bytes(&rnd, sizeof(rnd))) {
        fail_msg("no random bytes");
    }
    /* The pid keeps parallel test processes apart; the random part keeps a leftover from an
     * earlier, crashed run with the same pid from colliding. */
    snprintf(db->name, sizeof(db->name), "t_%d_%u_%08x", (int)getpid(), ++counter, rnd);
    char *admin = gb_tdb_cluster_url(dir != NULL ? dir : GB_PGDIR, "postgres");
    PGconn *conn = connect_or_fail(admin);
    free(admin);
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE DATABASE %s", db->name);
    PGresult *res = PQexec(conn, sql);
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        char msg[512];
        snprintf(msg, sizeof(msg), "%s", PQresultErrorMessage(res));
        PQclear(res);
        PQfinish(conn);
        fail_msg("%s: %s", sql, msg);
    }
    PQclear(res);
    PQfinish(conn);
    db->url = gb_tdb_cluster_url(dir != NULL ? dir : GB_PGDIR, db->name);
}

void gb_tdb_drop(gb_tdb_t *db, const char *dir)
{
    char *admin = gb_tdb_cluster_url(dir != NULL ? dir : GB_PGDIR, "postgres");
    char sql[128];

    snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", db->name);
    if (!gb_tdb_exec(admin, sql)) {
        fprintf(stderr, "warning: could not drop %s\n", db->name);
    }
    free(admin);
    free(db->url);
    db->url = NULL;
}

static void quiet_notice(void *arg, const char *message)
{
    /* Checks run "DROP ... IF EXISTS" and the like: their notices are noise. */
    GB_UNUSED(arg);
    GB_UNUSED(message);
}

bool gb_tdb_exec(const char *url, const char *sql)
{
    PGconn *conn = PQconnectdb(url);
    bool ok = false;

    if (PQstatus(conn) == CONNECTION_OK) {
        PQsetNoticeProcessor(conn, quiet_notice, NULL);
        PGresult *res = PQexec(conn, sql);
        ExecStatusType st = PQresultStatus(res);
        ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;
        if (!ok) {
            fprintf(stderr, "gb_tdb_exec: %s: %s", sql, PQresultErrorMessage(res));
        }
        PQclear(res);
    }
    PQfinish(conn);
    return ok;
}

char *gb_tdb_value(const char *url, const char *sql)
{
    PGconn *conn = PQconnectdb(url);
    char *value = NULL;

    if (PQstatus(conn) == CONNECTION_OK) {
        PQsetNoticeProcessor(conn, quiet_notice, NULL);
        PGresult *res = PQexec(conn, sql);
        if (PQresultStatus(res) == PGRES_TUPLES_OK && PQntuples(res) > 0) {
            value = gb_xstrdup(PQgetvalue(res, 0, 0));
        } else if (PQresultStatus(res) != PGRES_TUPLES_OK) {
            fprintf(stderr, "gb_tdb_value: %s: %s", sql, PQresultErrorMessage(res));
        }
        PQclear(res);
    }
    PQfinish(conn);
    return value;
}

int gb_tdb_cluster(const char *cmd, const char *dir)
{
    char line[512];

    snprintf(line, sizeof(line), "'%s' %s '%s' >/dev/null", GB_PG_CLUSTER, cmd, dir);
    int rc = system(line);
    return rc == -1 ? -1 : WEXITSTATUS(rc);
}

void gb_tdb_cluster_create(char dir[64])
{
    snprintf(dir, 64, "/tmp/gbdbtest.XXXXXX");
    if (mkdtemp(dir) == NULL) {
        fail_msg("mkdtemp failed");
    }
    if (gb_tdb_cluster("start", dir) != 0) {
        fail_msg("pg-cluster start %s failed", dir);
    }
}

void gb_tdb_cluster_destroy(const char *dir)
{
    char line[512];

    (void)gb_tdb_cluster("stop", dir);
    /* Only ever a directory this process made with mkdtemp(). */
    if (strncmp(dir, "/tmp/gbdbtest.", 14) == 0) {
        snprintf(line, sizeof(line), "rm -rf '%s'", dir);
        if (system(line) != 0) {
            fprintf(stderr, "warning: could not remove %s\n", dir);
        }
    }
}

static void on_tick(uv_timer_t *timer)
{
    /* Only wakes the loop so the condition is checked again. */
    GB_UNUSED(timer);
}

bool gb_tdb_run_until(uv_loop_t *loop, bool (*done)(void *arg), void *arg, unsigned timeout_ms)
{
    uv_timer_t tick;
    int64_t deadline = gb_time_mono_ms() + timeout_ms;
    bool ok = false;

    uv_timer_init(loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    for (;;) {
        ok = done != NULL && done(arg);
        if (ok || gb_time_mono_ms() >= deadline) {
            break;
        }
        uv_run(loop, UV_RUN_ONCE);
    }
    uv_close((uv_handle_t *)&tick, NULL);
    /* One more turn runs the close (and whatever else is ready). */
    uv_run(loop, UV_RUN_NOWAIT);
    return ok;
}

static void on_walk(uv_handle_t *handle, void *arg)
{
    GB_UNUSED(arg);
    fprintf(stderr, "handle still open: type=%s closing=%d active=%d\n",
            uv_handle_type_name(uv_handle_get_type(handle)), uv_is_closing(handle),
            uv_is_active(handle));
}

int gb_tdb_loop_close(uv_loop_t *loop)
{
    for (int i = 0; i < 10; i++) {
        uv_run(loop, UV_RUN_NOWAIT);
    }
    int rc = uv_loop_close(loop);
    if (rc != 0) {
        uv_walk(loop, on_walk, NULL);
    }
    return rc;
}

void gb_tdb_on_op(gb_pg_query_t *q, int err, PGresult *const *results, size_t nresults)
{
    gb_tdb_op_t *op = gb_container_of(q, gb_tdb_op_t, q);

    op->fired = true;
    op->fired_ms = gb_time_mono_ms();
    op->err = err;
    op->nresults = nresults;
    for (size_t i = 0; i < nresults && i < GB_PG_MAX_STMTS; i++) {
        op->status[i] = PQresultStatus(results[i]);
        snprintf(op->cmd_tuples[i], sizeof(op->cmd_tuples[i]), "%s", PQcmdTuples(results[i]));
        if (PQntuples(results[i]) > 0) {
            gb_buf_t b;
            gb_buf_init(&b);
            for (int col = 0; col < PQnfields(results[i]); col++) {
                if (col > 0) {
                    gb_buf_append_str(&b, "|");
                }
                gb_buf_append_str(
                    &b, PQgetisnull(results[i], 0, col) ? "NULL" : PQgetvalue(results[i], 0, col));
            }
            op->row[i] = gb_buf_steal(&b, NULL);
        }
    }
    snprintf(op->sqlstate, sizeof(op->sqlstate), "%s", q->sqlstate);
    snprintf(op->error, sizeof(op->error), "%s", q->error);
    if (op->counter != NULL) {
        (*op->counter)++;
    }
}

void gb_tdb_op_reset(gb_tdb_op_t *op)
{
    for (size_t i = 0; i < GB_PG_MAX_STMTS; i++) {
        free(op->row[i]);
    }
    memset(op, 0, sizeof(*op));
}

bool gb_tdb_op_fired(void *op)
{
    return ((gb_tdb_op_t *)op)->fired;
}
