/* pg_conn: one non-blocking libpq connection on the loop. It connects with PQconnectPoll,
 * runs one query at a time in pipeline mode (every query ends with one sync), rolls back a
 * transaction a query left open before the next one runs, and on any failure drops the
 * PGconn, fails the query in flight with GB_EDBDOWN and retries after a doubling backoff.
 * Invariant: the poll handle is stopped or closed before libpq may close its socket. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/internal.h"

/* The poll handle lives in its own small allocation: libpq may replace the socket while it
 * connects ("do not assume that the socket remains the same across PQconnectPoll calls"), and
 * a poll handle is bound to one descriptor. The old handle is closed (and freed in its close
 * callback) while the connection carries on with a new one. */
struct pg_watch {
    uv_poll_t poll;
    gb_pg_conn_t *conn;
    int fd;
};

static void on_pg_poll(uv_poll_t *handle, int status, int events);
static void on_conn_timer(uv_timer_t *timer);

bool gb_pg__conn_is_up(const gb_pg_conn_t *c)
{
    return c->state == GB_PG_CONN_IDLE || c->state == GB_PG_CONN_FLUSHING ||
           c->state == GB_PG_CONN_READING;
}

static void on_watch_closed(uv_handle_t *handle)
{
    struct pg_watch *w = gb_container_of((uv_poll_t *)handle, struct pg_watch, poll);
    gb_pg_t *pool = w->conn->pool;

    free(w);
    gb_pg__handle_closed(pool);
}

static void on_timer_closed(uv_handle_t *handle)
{
    gb_pg_conn_t *c = gb_container_of((uv_timer_t *)handle, gb_pg_conn_t, timer);

    gb_pg__handle_closed(c->pool);
}

static void watch_close(gb_pg_conn_t *c)
{
    if (c->watch != NULL) {
        /* uv_close stops the watcher at once (the descriptor leaves epoll now), so the socket
         * may be closed right after this returns. */
        uv_close((uv_handle_t *)&c->watch->poll, on_watch_closed);
        c->watch = NULL;
    }
}

/* Watches PQsocket() for events, replacing the handle when libpq has changed the socket. */
static int watch_arm(gb_pg_conn_t *c, int events)
{
    int fd = PQsocket(c->pg);

    if (fd < 0) {
        return UV_EBADF;
    }
    /* A new socket that got the old descriptor number may keep the (stopped) handle: libuv
     * registers the descriptor with epoll afresh when the handle starts again. */
    if (c->watch != NULL && c->watch->fd != fd) {
        watch_close(c);
    }
    if (c->watch == NULL) {
        struct pg_watch *w = gb_xcalloc(1, sizeof(*w));
        int rc = uv_poll_init_socket(c->pool->loop, &w->poll, fd);
        if (rc < 0) {
            /* A failed init leaves the handle unregistered: nothing to close. */
            free(w);
            return rc;
        }
        w->conn = c;
        w->fd = fd;
        c->watch = w;
        c->pool->open_handles++;
    }
    /* On an active handle this only changes the event mask. */
    return uv_poll_start(&c->watch->poll, events, on_pg_poll);
}

/* Drops the connection, saying why: "what: detail", or detail alone when what is NULL. The
 * query in flight (if any) fails with GB_EDBDOWN as the very last step, because its callback
 * may shut the pool down or submit more. */
static void conn_fail(gb_pg_conn_t *c, const char *what, const char *detail)
{
    gb_pg_t *pool = c->pool;
    char raw[512];
    char msg[256];

    snprintf(raw, sizeof(raw), "%s%s%s", what != NULL ? what : "", what != NULL ? ": " : "",
             detail);
    gb_pg__copy_message(msg, sizeof(msg), raw);

    bool was_up = gb_pg__conn_is_up(c);
    gb_pg_query_t *q = c->current;
    c->current = NULL;
    c->rolling_back = false;
    c->tried = true;
    uv_timer_stop(&c->timer);
    /* Stop watching before PQfinish closes the socket: libuv must never watch a closed (and
     * possibly reused) descriptor. */
    watch_close(c);
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    snprintf(pool->last_error, sizeof(pool->last_error), "%s", msg);

    if (pool->closing) {
        gb_logk(GB_LOG_DEBUG, "db", c->addr, "closed on failure during shutdown: %s", msg);
        gb_pg__conn_close(c);
    } else {
        c->state = GB_PG_CONN_BACKOFF;
        uv_update_time(pool->loop);
        uv_timer_start(&c->timer, on_conn_timer, c->backoff_ms, 0);
        /* The pool logs "database down" and "database up" once for all its connections;
         * per connection, a loss is worth an info line, and a failed attempt a warning only
         * when it is the first of a run while the others work (else one line per retry). */
        if (was_up) {
            gb_logk(GB_LOG_INFO, "db", c->addr, "connection lost: %s; reconnecting in %u ms", msg,
                    c->backoff_ms);
        } else {
            bool alone = c->failures == 0 && pool->state == GB_PG_UP;
            gb_logk(alone ? GB_LOG_WARN : GB_LOG_DEBUG, "db", c->addr,
                    "connect failed: %s; retrying in %u ms", msg, c->backoff_ms);
        }
        c->failures++;
        c->backoff_ms = c->backoff_ms > pool->cfg.reconnect_max_ms / 2 ? pool->cfg.reconnect_max_ms
                                                                       : c->backoff_ms * 2;
    }
    gb_pg__pool_conn_changed(pool);
    if (q != NULL) {
        /* A shutdown error already seen (57P01 "terminating connection due to administrator
         * command") says more than "server closed the connection unexpectedly"; any other
         * error the query got is beside the point now. */
        if (!c->query_failed || !c->query_down) {
            snprintf(q->error, sizeof(q->error), "%s", msg);
            q->sqlstate[0] = '\0';
        }
        gb_pg__query_deliver(pool, q, GB_EDBDOWN);
    }
}

static void start_connect(gb_pg_conn_t *c)
{
    gb_pg_t *pool = c->pool;

    /* expand_dbname = 0: the user's string was parsed already, a dbname is a name. */
    c->pg = PQconnectStartParams((const char *const *)pool->params.keywords,
                                 (const char *const *)pool->params.values, 0);
    GB_ASSERT(c->pg != NULL); /* NULL only when libpq cannot allocate */
    c->nprepared = 0;         /* a new session has no prepared statements */
    PQsetNoticeReceiver(c->pg, gb_pg__log_notice, c->addr);
    if (PQstatus(c->pg) == CONNECTION_BAD) {
        conn_fail(c, NULL, PQerrorMessage(c->pg));
        return;
    }
    c->state = GB_PG_CONN_CONNECTING;
    /* The loop's clock is cached: after blocking work (start-up migrations, a slow DNS
     * lookup inside PQconnectStartParams) it lags, and the timeout would be cut short. */
    uv_update_time(pool->loop);
    uv_timer_start(&c->timer, on_conn_timer, pool->cfg.connect_timeout_ms, 0);
    /* libpq's rule: before the first PQconnectPoll, act as if it had returned WRITING. */
    int rc = watch_arm(c, UV_WRITABLE);
    if (rc < 0) {
        conn_fail(c, "watch socket", uv_strerror(rc));
    }
}

static void connected(gb_pg_conn_t *c)
{
    uv_timer_stop(&c->timer);
    /* Pipeline mode for every query: a multi-statement unit costs one round trip, and a
     * single statement takes the same path, so there is one way results are collected. */
    if (PQsetnonblocking(c->pg, 1) != 0 || PQenterPipelineMode(c->pg) != 1) {
        conn_fail(c, "setup", PQerrorMessage(c->pg));
        return;
    }
    /* Idle connections stay armed for reading, so a server-side close is seen at once. */
    int rc = watch_arm(c, UV_READABLE);
    if (rc < 0) {
        conn_fail(c, "watch socket", uv_strerror(rc));
        return;
    }
    c->state = GB_PG_CONN_IDLE;
    c->tried = true;
    gb_logk(GB_LOG_DEBUG, "db", c->addr, "connected after %u failed attempts", c->failures);
    c->failures = 0;
    c->backoff_ms = c->pool->cfg.reconnect_min_ms;
    gb_pg__pool_conn_changed(c->pool);
}

static void continue_connect(gb_pg_conn_t *c)
{
    int events;

    /* libpq may close this socket and open another inside PQconnectPoll (next address, SSL
     * fallback): stop watching first. */
    uv_poll_stop(&c->watch->poll);
    switch (PQconnectPoll(c->pg)) {
    case PGRES_POLLING_FAILED:
        conn_fail(c, NULL, PQerrorMessage(c->pg));
        return;
    case PGRES_POLLING_OK:
        connected(c);
        return;
    case PGRES_POLLING_READING:
        events = UV_READABLE;
        break;
    default:
        events = UV_WRITABLE;
        break;
    }
    int rc = watch_arm(c, events);
    if (rc < 0) {
        conn_fail(c, "watch socket", uv_strerror(rc));
    }
}

/* Flushes what the last send left in libpq's buffer and arms the watcher accordingly: both
 * directions while output is pending (reading too, so the server never blocks on a full
 * pipe while we block on ours), reading only afterwards. */
static void flush_and_arm(gb_pg_conn_t *c)
{
    int r = PQflush(c->pg);
    int rc;

    if (r < 0) {
        conn_fail(c, "send", PQerrorMessage(c->pg));
        return;
    }
    if (r > 0) {
        c->state = GB_PG_CONN_FLUSHING;
        rc = watch_arm(c, UV_READABLE | UV_WRITABLE);
    } else {
        c->state = GB_PG_CONN_READING;
        rc = watch_arm(c, UV_READABLE);
    }
    if (rc < 0) {
        conn_fail(c, "watch socket", uv_strerror(rc));
    }
}

/* Starts the I/O of a pipeline of nstmts statements (result_sets result sets: one per
 * statement and one per Parse of a statement being prepared) just queued in libpq. */
static void start_io(gb_pg_conn_t *c, size_t nstmts, size_t result_sets)
{
    const gb_pg_config_t *cfg = &c->pool->cfg;

    c->results_ended = 0;
    c->result_sets = result_sets;
    if (cfg->query_timeout_ms > 0) {
        /* The server cancels each statement after query_timeout_ms. The watchdog covers a
         * server that cannot answer at all (network gone, host frozen) without a reset the
         * socket would show: a connection silent for longer than any statement may run,
         * plus slack, is dead. */
        uint64_t ms = (uint64_t)nstmts * cfg->query_timeout_ms + cfg->connect_timeout_ms;
        uv_update_time(c->pool->loop);
        uv_timer_start(&c->timer, on_conn_timer, ms, 0);
    }
    flush_and_arm(c);
}

static bool send_rollback(gb_pg_conn_t *c)
{
    return PQsendQueryParams(c->pg, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0) == 1 &&
           PQpipelineSync(c->pg) == 1;
}

static void become_idle(gb_pg_conn_t *c)
{
    c->state = GB_PG_CONN_IDLE;
    if (c->pool->closing) {
        gb_pg__conn_close(c);
    }
    gb_pg__pool_conn_changed(c->pool);
}

/* The slot of sql among the session's prepared statements, a new one (*is_new) when it has none
 * and there is room, or -1. */
static int prepared_slot(gb_pg_conn_t *c, const char *sql, bool *is_new)
{
    *is_new = false;
    for (unsigned i = 0; i < c->nprepared; i++) {
        if (c->prepared[i] == sql) {
            return (int)i;
        }
    }
    if (c->nprepared == GB_PG_PREPARED_MAX) {
        return -1;
    }
    *is_new = true;
    c->prepared[c->nprepared] = sql;
    c->prepared_ok[c->nprepared] = false;
    return (int)c->nprepared++;
}

/* Forgets the statements whose Parse the server did not confirm (the pipeline failed before
 * or at it). Those are the last ones added: a pipeline stops at its first error. */
static void drop_unconfirmed(gb_pg_conn_t *c)
{
    while (c->nprepared > 0 && !c->prepared_ok[c->nprepared - 1]) {
        c->nprepared--;
    }
}

/* The sync of the query in flight arrived: every statement has answered. */
static void query_done(gb_pg_conn_t *c)
{
    gb_pg_t *pool = c->pool;
    gb_pg_query_t *q = c->current;
    PGTransactionStatusType ts = PQtransactionStatus(c->pg);

    uv_timer_stop(&c->timer);
    if (ts != PQTRANS_IDLE && ts != PQTRANS_INTRANS && ts != PQTRANS_INERROR) {
        char detail[64];
        snprintf(detail, sizeof(detail), "transaction state %d after sync", (int)ts);
        conn_fail(c, "protocol", detail);
        return;
    }
    if (c->rolling_back) {
        c->rolling_back = false;
        if (ts != PQTRANS_IDLE) {
            conn_fail(c, "rollback", "the transaction did not end");
            return;
        }
        become_idle(c);
        return;
    }
    drop_unconfirmed(c);
    c->current = NULL;
    int err = !c->query_failed ? 0 : c->query_down ? GB_EDBDOWN : GB_EDB;
    if (ts != PQTRANS_IDLE && !pool->closing) {
        /* A pipeline that fails between BEGIN and COMMIT leaves the session in an aborted
         * transaction block (libpq docs, pipeline error handling), and a query may simply not
         * commit: roll back before the connection serves anyone else. */
        c->rolling_back = true;
        if (send_rollback(c)) {
            start_io(c, 1, 1);
        } else {
            conn_fail(c, "send", PQerrorMessage(c->pg));
        }
    } else {
        become_idle(c);
    }
    gb_pg__query_deliver(pool, q, err);
}

static void record_error(gb_pg_conn_t *c, const PGresult *res)
{
    gb_pg_query_t *q = c->current;
    const char *state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
    const char *primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);

    c->query_failed = true;
    /* Class 08 (connection exception) and 57 (operator intervention: statement_timeout's
     * 57014, shutdowns' 57P01..57P03) say the database is unavailable, not that the query
     * was wrong; libpq's own errors carry no SQLSTATE and mean the same. */
    c->query_down = state == NULL || strncmp(state, "08", 2) == 0 || strncmp(state, "57", 2) == 0;
    if (q != NULL) {
        snprintf(q->sqlstate, sizeof(q->sqlstate), "%s", state != NULL ? state : "");
        gb_pg__copy_message(q->error, sizeof(q->error),
                            primary != NULL ? primary : PQresultErrorMessage(res));
    } else {
        gb_pg__copy_message(c->pool->last_error, sizeof(c->pool->last_error),
                            primary != NULL ? primary : PQresultErrorMessage(res));
    }
}

/* Takes each result libpq has complete. A statement's results end with NULL; the sync's
 * PGRES_PIPELINE_SYNC ends the query. After an error the rest of the pipeline reports
 * PGRES_PIPELINE_ABORTED and the first error is what the caller gets. */
static void collect_results(gb_pg_conn_t *c)
{
    while (!PQisBusy(c->pg)) {
        PGresult *res = PQgetResult(c->pg);
        if (res == NULL) {
            if (++c->results_ended > c->result_sets) {
                conn_fail(c, "protocol", "more result sets than statements");
                return;
            }
            continue;
        }
        gb_pg_query_t *q = c->current;
        int kind =
            q != NULL && c->results_ended < c->result_sets ? c->result_kind[c->results_ended] : -1;
        switch (PQresultStatus(res)) {
        case PGRES_PIPELINE_SYNC:
            PQclear(res);
            query_done(c);
            return;
        case PGRES_COMMAND_OK:
        case PGRES_TUPLES_OK:
        case PGRES_EMPTY_QUERY:
            if (kind >= 0) {
                c->prepared_ok[kind] = true; /* a Parse: the statement is there from now on */
            } else if (q != NULL && !c->query_failed && q->nresults < q->nstmts) {
                q->results[q->nresults++] = res;
                res = NULL;
            }
            break;
        case PGRES_PIPELINE_ABORTED:
            break;
        case PGRES_COPY_IN:
        case PGRES_COPY_OUT:
        case PGRES_COPY_BOTH:
            /* The connection is now in COPY mode, which this layer never drives. */
            PQclear(res);
            conn_fail(c, "protocol", "COPY is not supported on the pool");
            return;
        default:
            if (!c->query_failed || q == NULL) {
                record_error(c, res);
            }
            break;
        }
        PQclear(res);
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            conn_fail(c, NULL, PQerrorMessage(c->pg));
            return;
        }
    }
}

static void drain_notifies(gb_pg_conn_t *c)
{
    PGnotify *n;

    /* Nothing LISTENs yet, but a notification left in libpq would pile up forever. */
    while ((n = PQnotifies(c->pg)) != NULL) {
        PQfreemem(n);
    }
}

static void continue_read(gb_pg_conn_t *c)
{
    if (!PQconsumeInput(c->pg)) {
        conn_fail(c, NULL, PQerrorMessage(c->pg));
        return;
    }
    drain_notifies(c);
    if (c->state == GB_PG_CONN_IDLE) {
        /* Nothing is expected on an idle connection: what arrives is a notice (logged by the
         * receiver) or a server's goodbye before it closes, whose EOF fails the next read. */
        if (PQstatus(c->pg) == CONNECTION_BAD) {
            conn_fail(c, NULL, PQerrorMessage(c->pg));
        }
        return;
    }
    collect_results(c);
}

static void continue_flush(gb_pg_conn_t *c, int events)
{
    if ((events & UV_READABLE) != 0 && !PQconsumeInput(c->pg)) {
        conn_fail(c, NULL, PQerrorMessage(c->pg));
        return;
    }
    flush_and_arm(c);
    if (c->state == GB_PG_CONN_READING) {
        collect_results(c);
    }
}

static void on_pg_poll(uv_poll_t *handle, int status, int events)
{
    gb_pg_conn_t *c = gb_container_of(handle, struct pg_watch, poll)->conn;

    if (status < 0) {
        conn_fail(c, "poll", uv_strerror(status));
        return;
    }
    switch (c->state) {
    case GB_PG_CONN_CONNECTING:
        continue_connect(c);
        break;
    case GB_PG_CONN_FLUSHING:
        continue_flush(c, events);
        break;
    case GB_PG_CONN_IDLE:
    case GB_PG_CONN_READING:
        continue_read(c);
        break;
    default:
        break;
    }
}

static void on_conn_timer(uv_timer_t *timer)
{
    gb_pg_conn_t *c = gb_container_of(timer, gb_pg_conn_t, timer);
    const gb_pg_config_t *cfg = &c->pool->cfg;

    switch (c->state) {
    case GB_PG_CONN_BACKOFF:
        if (c->tried) {
            c->pool->n_reconnects++;
        }
        start_connect(c);
        break;
    case GB_PG_CONN_CONNECTING: {
        char detail[64];
        snprintf(detail, sizeof(detail), "no answer from the server within %u ms",
                 cfg->connect_timeout_ms);
        conn_fail(c, NULL, detail);
        break;
    }
    case GB_PG_CONN_FLUSHING:
    case GB_PG_CONN_READING:
        conn_fail(c, NULL, "query got no answer within the query timeout; connection abandoned");
        break;
    default:
        break;
    }
}

int gb_pg__conn_init(gb_pg_t *pool, gb_pg_conn_t *c, unsigned id)
{
    c->pool = pool;
    c->id = id;
    c->state = GB_PG_CONN_BACKOFF;
    c->backoff_ms = pool->cfg.reconnect_min_ms;
    snprintf(c->addr, sizeof(c->addr), "conn=%u", id);
    return uv_timer_init(pool->loop, &c->timer);
}

void gb_pg__conn_start(gb_pg_conn_t *c)
{
    /* The first attempt starts on the loop's first turn rather than now: the caller may block
     * for a while before the loop runs (loading the device table at start-up), and an attempt
     * begun now would have timed out by then. */
    uv_timer_start(&c->timer, on_conn_timer, 0, 0);
}

/* Queues one statement in libpq: prepared by name when asked for (with its Parse first, the
 * first time on this session), else with its text. Records what its result sets are. */
static bool send_stmt(gb_pg_conn_t *c, const gb_pg_stmt_t *s, size_t *sets)
{
    bool is_new = false;
    int slot = s->prepare ? prepared_slot(c, s->sql, &is_new) : -1;
    if (slot < 0) {
        c->result_kind[(*sets)++] = -1;
        return PQsendQueryParams(c->pg, s->sql, s->nparams, NULL, s->values, s->lengths, s->formats,
                                 0) == 1;
    }
    char name[16];
    snprintf(name, sizeof(name), "gb_p%d", slot);
    if (is_new) {
        c->result_kind[(*sets)++] = (int8_t)slot;
        if (PQsendPrepare(c->pg, name, s->sql, s->nparams, NULL) != 1) {
            return false;
        }
    }
    c->result_kind[(*sets)++] = -1;
    return PQsendQueryPrepared(c->pg, name, s->nparams, s->values, s->lengths, s->formats, 0) == 1;
}

void gb_pg__conn_dispatch(gb_pg_conn_t *c, gb_pg_query_t *q)
{
    GB_ASSERT(c->state == GB_PG_CONN_IDLE && c->current == NULL);
    c->current = q;
    c->query_failed = false;
    c->query_down = false;
    q->nresults = 0;
    q->error[0] = '\0';
    q->sqlstate[0] = '\0';
    size_t sets = 0;
    for (size_t i = 0; i < q->nstmts; i++) {
        if (!send_stmt(c, &q->stmts[i], &sets)) {
            conn_fail(c, "send", PQerrorMessage(c->pg));
            return;
        }
    }
    if (PQpipelineSync(c->pg) != 1) {
        conn_fail(c, "send", PQerrorMessage(c->pg));
        return;
    }
    start_io(c, q->nstmts, sets);
}

void gb_pg__conn_close(gb_pg_conn_t *c)
{
    GB_ASSERT(c->current == NULL);
    if (c->state == GB_PG_CONN_CLOSED) {
        return;
    }
    uv_timer_stop(&c->timer);
    watch_close(c);
    if (c->pg != NULL) {
        PQfinish(c->pg);
        c->pg = NULL;
    }
    c->rolling_back = false;
    c->state = GB_PG_CONN_CLOSED;
    uv_close((uv_handle_t *)&c->timer, on_timer_closed);
}
