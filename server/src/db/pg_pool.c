/* pg_pool: the db layer's public face. A pool of connections (pg_conn.c), a FIFO of waiting
 * queries capped at queue_max, the pool state (UP while one connection is ready), shutdown and
 * metrics. Query callbacks fire only from loop callbacks, never from gb_pg_submit() or
 * gb_pg_shutdown(): waiting queries are dispatched or failed by a zero-delay "kick" timer.
 * The pool's memory outlives every handle it owns: it is released after the last close. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/db.h"
#include "db/internal.h"

static void on_kick(uv_timer_t *timer);

void gb_pg_query_init(gb_pg_query_t *q, const char *sql, int nparams, const char *const *values,
                      gb_pg_query_cb cb)
{
    memset(q, 0, sizeof(*q));
    q->stmts[0].sql = sql;
    q->stmts[0].nparams = nparams;
    q->stmts[0].values = values;
    q->nstmts = 1;
    q->cb = cb;
}

void gb_pg_query_add(gb_pg_query_t *q, const char *sql, int nparams, const char *const *values)
{
    GB_ASSERT(q->nstmts < GB_PG_MAX_STMTS);
    gb_pg_stmt_t *s = &q->stmts[q->nstmts++];
    s->sql = sql;
    s->nparams = nparams;
    s->values = values;
    s->lengths = NULL;
    s->formats = NULL;
    s->prepare = false;
}

void gb_pg_query_add_prepared(gb_pg_query_t *q, const char *sql, int nparams,
                              const char *const *values)
{
    gb_pg_query_add(q, sql, nparams, values);
    q->stmts[q->nstmts - 1].prepare = true;
}

static void queue_push(gb_pg_t *pg, gb_pg_query_t *q)
{
    q->next = NULL;
    if (pg->tail != NULL) {
        pg->tail->next = q;
    } else {
        pg->head = q;
    }
    pg->tail = q;
    pg->depth++;
}

static gb_pg_query_t *queue_pop(gb_pg_t *pg)
{
    gb_pg_query_t *q = pg->head;

    pg->head = q->next;
    if (pg->head == NULL) {
        pg->tail = NULL;
    }
    pg->depth--;
    q->next = NULL;
    return q;
}

static void kick(gb_pg_t *pg)
{
    if (!pg->kick_closing) {
        uv_timer_start(&pg->kick, on_kick, 0, 0);
    }
}

static void release(gb_pg_t *pg)
{
    gb_pg__params_dispose(&pg->params);
    free(pg->conns);
    free(pg);
}

void gb_pg__handle_closed(gb_pg_t *pg)
{
    GB_ASSERT(pg->open_handles > 0);
    if (--pg->open_handles > 0) {
        return;
    }
    pg->finished = true;
    void (*done)(void *arg) = pg->done;
    void *arg = pg->done_arg;
    /* done may call gb_pg_free(), which then releases at once: touch nothing after it. */
    if (pg->free_requested) {
        release(pg);
    }
    if (done != NULL) {
        done(arg);
    }
}

static void on_kick_closed(uv_handle_t *handle)
{
    gb_pg__handle_closed(gb_container_of((uv_timer_t *)handle, gb_pg_t, kick));
}

static void maybe_finish_shutdown(gb_pg_t *pg)
{
    if (!pg->closing || pg->kick_closing || pg->head != NULL) {
        return;
    }
    for (unsigned i = 0; i < pg->nconns; i++) {
        if (pg->conns[i].state != GB_PG_CONN_CLOSED) {
            return;
        }
    }
    pg->kick_closing = true;
    uv_close((uv_handle_t *)&pg->kick, on_kick_closed);
}

void gb_pg__query_deliver(gb_pg_t *pg, gb_pg_query_t *q, int err)
{
    PGresult *results[GB_PG_MAX_STMTS];
    size_t n = 0;

    if (err == 0) {
        n = q->nresults;
        for (size_t i = 0; i < n; i++) {
            results[i] = q->results[i];
        }
    } else {
        for (size_t i = 0; i < q->nresults; i++) {
            PQclear(q->results[i]);
        }
        if (q->error[0] == '\0') {
            snprintf(q->error, sizeof(q->error), "%s", gb_strerror(err));
        }
    }
    memset(q->results, 0, sizeof(q->results));
    q->nresults = 0;
    switch (err) {
    case 0:
        pg->n_ok++;
        break;
    case GB_EDB:
        pg->n_error++;
        break;
    case GB_ECLOSED:
        pg->n_closed++;
        break;
    default:
        pg->n_down++;
        break;
    }
    /* The callback may free q (it usually frees the operation that embeds it): the results
     * were copied out first, and q is not touched again. */
    q->cb(q, err, err == 0 ? results : NULL, n);
    for (size_t i = 0; i < n; i++) {
        PQclear(results[i]);
    }
}

void gb_pg__pool_conn_changed(gb_pg_t *pg)
{
    unsigned up = 0;
    bool all_tried = true;

    for (unsigned i = 0; i < pg->nconns; i++) {
        if (gb_pg__conn_is_up(&pg->conns[i])) {
            up++;
        }
        if (!pg->conns[i].tried) {
            all_tried = false;
        }
    }
    if (pg->starting && (up > 0 || all_tried)) {
        /* Start-up is over: queries that waited for the first attempts are dispatched, or
         * failed when every attempt failed. */
        pg->starting = false;
        if (up == 0 && !pg->closing) {
            gb_log(GB_LOG_WARN, "db", "database unreachable at start (%s): %s", pg->params.target,
                   pg->last_error);
        }
    }
    gb_pg_state_t state = up > 0 ? GB_PG_UP : GB_PG_DOWN;
    if (state != pg->state) {
        pg->state = state;
        /* During shutdown connections close on purpose: that is no outage. */
        if (!pg->closing && state == GB_PG_UP) {
            gb_log(GB_LOG_INFO, "db", "database up (%s)", pg->params.target);
        } else if (!pg->closing) {
            gb_log(GB_LOG_WARN, "db", "database down (%s): %s", pg->params.target, pg->last_error);
        }
    }
    kick(pg);
}

static gb_pg_conn_t *find_idle(gb_pg_t *pg)
{
    for (unsigned i = 0; i < pg->nconns; i++) {
        if (pg->conns[i].state == GB_PG_CONN_IDLE && !pg->conns[i].rolling_back) {
            return &pg->conns[i];
        }
    }
    return NULL;
}

static void on_kick(uv_timer_t *timer)
{
    gb_pg_t *pg = gb_container_of(timer, gb_pg_t, kick);

    /* Conditions are re-read after every callback, which may submit, shut down or free. */
    while (pg->head != NULL) {
        int err = 0;
        if (pg->closing) {
            err = GB_ECLOSED;
        } else if (pg->state == GB_PG_DOWN && !pg->starting) {
            err = GB_EDBDOWN;
        }
        if (err != 0) {
            gb_pg_query_t *q = queue_pop(pg);
            snprintf(q->error, sizeof(q->error), "%s",
                     err == GB_ECLOSED ? "database pool shutting down" : pg->last_error);
            q->sqlstate[0] = '\0';
            gb_pg__query_deliver(pg, q, err);
            continue;
        }
        gb_pg_conn_t *c = find_idle(pg);
        if (c == NULL) {
            break;
        }
        gb_pg__conn_dispatch(c, queue_pop(pg));
    }
    maybe_finish_shutdown(pg);
}

static bool config_valid(const gb_pg_config_t *cfg)
{
    const char *why = NULL;

    if (cfg->pool_size == 0) {
        why = "pool_size must be at least 1";
    } else if (cfg->connect_timeout_ms == 0) {
        why = "connect_timeout_ms must be positive";
    } else if (cfg->reconnect_min_ms == 0) {
        why = "reconnect_min_ms must be positive";
    } else if (cfg->reconnect_max_ms < cfg->reconnect_min_ms) {
        why = "reconnect_max_ms must not be below reconnect_min_ms";
    }
    if (why != NULL) {
        gb_log(GB_LOG_ERROR, "db", "invalid pool configuration: %s", why);
        return false;
    }
    return true;
}

int gb_pg_new(uv_loop_t *loop, const gb_pg_config_t *cfg, gb_pg_t **out)
{
    char err[256];

    *out = NULL;
    if (!config_valid(cfg)) {
        return GB_EINVAL;
    }
    gb_pg_t *pg = gb_xcalloc(1, sizeof(*pg));
    if (gb_pg__params_init(&pg->params, cfg->conninfo, err, sizeof(err)) != 0) {
        gb_log(GB_LOG_ERROR, "db", "invalid connection string: %s", err);
        free(pg);
        return GB_EINVAL;
    }
    if (cfg->query_timeout_ms > 0) {
        gb_pg__params_add_statement_timeout(&pg->params, cfg->query_timeout_ms);
    }
    pg->loop = loop;
    pg->cfg = *cfg;
    pg->cfg.conninfo = NULL;
    pg->state = GB_PG_DOWN;
    pg->starting = true;
    snprintf(pg->last_error, sizeof(pg->last_error), "not connected yet");
    int rc = uv_timer_init(loop, &pg->kick);
    if (rc < 0) {
        gb_pg__params_dispose(&pg->params);
        free(pg);
        return rc;
    }
    pg->open_handles = 1;
    pg->nconns = cfg->pool_size;
    pg->conns = gb_xcalloc(pg->nconns, sizeof(pg->conns[0]));
    for (unsigned i = 0; i < pg->nconns; i++) {
        rc = gb_pg__conn_init(pg, &pg->conns[i], i + 1);
        GB_ASSERT(rc == 0); /* uv_timer_init cannot fail once the loop has accepted the kick */
        pg->open_handles++;
    }
    gb_log(GB_LOG_INFO, "db", "connecting (%s) pool_size=%u queue_max=%u", pg->params.target,
           cfg->pool_size, cfg->queue_max);
    /* Every handle exists before the first attempt, which may fail (and report) at once. */
    for (unsigned i = 0; i < pg->nconns; i++) {
        gb_pg__conn_start(&pg->conns[i]);
    }
    *out = pg;
    return 0;
}

int gb_pg_submit(gb_pg_t *pg, gb_pg_query_t *q)
{
    GB_ASSERT(q->cb != NULL && q->nstmts >= 1 && q->nstmts <= GB_PG_MAX_STMTS);
    for (size_t i = 0; i < q->nstmts; i++) {
        const gb_pg_stmt_t *s = &q->stmts[i];
        GB_ASSERT(s->sql != NULL && s->nparams >= 0 && s->nparams <= 65535);
        GB_ASSERT(s->nparams == 0 || s->values != NULL);
    }
    if (pg->closing) {
        pg->n_closed++;
        return GB_ECLOSED;
    }
    if (pg->state == GB_PG_DOWN && !pg->starting) {
        pg->n_down++;
        return GB_EDBDOWN;
    }
    /* Queries go through the queue even when a connection is idle (the kick dispatches them
     * on the next loop turn), so the cap counts the idle connections that will take some. */
    size_t idle = 0;
    for (unsigned i = 0; i < pg->nconns; i++) {
        if (pg->conns[i].state == GB_PG_CONN_IDLE && !pg->conns[i].rolling_back) {
            idle++;
        }
    }
    if (pg->depth >= (size_t)pg->cfg.queue_max + idle) {
        pg->n_busy++;
        return GB_EBUSY;
    }
    q->queued_mono_ms = gb_time_mono_ms();
    q->nresults = 0;
    q->error[0] = '\0';
    q->sqlstate[0] = '\0';
    queue_push(pg, q);
    kick(pg);
    return 0;
}

gb_pg_state_t gb_pg_state(const gb_pg_t *pg)
{
    return pg->state;
}

size_t gb_pg_queue_depth(const gb_pg_t *pg)
{
    return pg->depth;
}

void gb_pg_shutdown(gb_pg_t *pg, void (*done)(void *arg), void *arg)
{
    unsigned in_flight = 0;

    GB_ASSERT(!pg->closing);
    pg->closing = true;
    pg->done = done;
    pg->done_arg = arg;
    for (unsigned i = 0; i < pg->nconns; i++) {
        gb_pg_conn_t *c = &pg->conns[i];
        if (c->current != NULL) {
            in_flight++; /* closes when its query completes (or fails) */
        } else {
            gb_pg__conn_close(c);
        }
    }
    gb_log(GB_LOG_INFO, "db", "shutting down: %zu waiting queries cancelled, %u in flight",
           pg->depth, in_flight);
    /* The kick fails the waiting queries with GB_ECLOSED and closes the kick itself once
     * every connection is closed; done fires after the last close callback. */
    gb_pg__pool_conn_changed(pg);
}

void gb_pg_free(gb_pg_t *pg)
{
    if (pg == NULL) {
        return;
    }
    if (pg->finished) {
        release(pg);
        return;
    }
    pg->free_requested = true;
    if (!pg->closing) {
        gb_pg_shutdown(pg, NULL, NULL);
    }
}

void gb_pg_write_metrics(const gb_pg_t *pg, gb_buf_t *out)
{
    unsigned connecting = 0, idle = 0, busy = 0, down = 0, closed = 0;

    for (unsigned i = 0; i < pg->nconns; i++) {
        switch (pg->conns[i].state) {
        case GB_PG_CONN_CONNECTING:
            connecting++;
            break;
        case GB_PG_CONN_IDLE:
            idle++;
            break;
        case GB_PG_CONN_FLUSHING:
        case GB_PG_CONN_READING:
            busy++;
            break;
        case GB_PG_CONN_BACKOFF:
            down++;
            break;
        case GB_PG_CONN_CLOSED:
            closed++;
            break;
        }
    }
    double oldest = 0;
    if (pg->head != NULL) {
        oldest = (double)(gb_time_mono_ms() - pg->head->queued_mono_ms) / 1000.0;
    }
    gb_buf_appendf(out,
                   "# HELP gb_db_up Whether at least one database connection is ready.\n"
                   "# TYPE gb_db_up gauge\n"
                   "gb_db_up %d\n"
                   "# HELP gb_db_queue_depth Queries waiting for a free database connection.\n"
                   "# TYPE gb_db_queue_depth gauge\n"
                   "gb_db_queue_depth %zu\n"
                   "# HELP gb_db_queue_oldest_wait_seconds How long the oldest waiting query has "
                   "waited.\n"
                   "# TYPE gb_db_queue_oldest_wait_seconds gauge\n"
                   "gb_db_queue_oldest_wait_seconds %.3f\n",
                   pg->state == GB_PG_UP ? 1 : 0, pg->depth, oldest);
    gb_buf_appendf(out,
                   "# HELP gb_db_connections Database connections by state.\n"
                   "# TYPE gb_db_connections gauge\n"
                   "gb_db_connections{state=\"connecting\"} %u\n"
                   "gb_db_connections{state=\"idle\"} %u\n"
                   "gb_db_connections{state=\"busy\"} %u\n"
                   "gb_db_connections{state=\"down\"} %u\n"
                   "gb_db_connections{state=\"closed\"} %u\n",
                   connecting, idle, busy, down, closed);
    gb_buf_appendf(out,
                   "# HELP gb_db_queries_total Queries by outcome; busy, down and closed include "
                   "those refused at submission.\n"
                   "# TYPE gb_db_queries_total counter\n"
                   "gb_db_queries_total{result=\"ok\"} %" PRIu64 "\n"
                   "gb_db_queries_total{result=\"error\"} %" PRIu64 "\n"
                   "gb_db_queries_total{result=\"down\"} %" PRIu64 "\n"
                   "gb_db_queries_total{result=\"busy\"} %" PRIu64 "\n"
                   "gb_db_queries_total{result=\"closed\"} %" PRIu64 "\n"
                   "# HELP gb_db_reconnects_total Connection attempts after a failed or lost "
                   "connection.\n"
                   "# TYPE gb_db_reconnects_total counter\n"
                   "gb_db_reconnects_total %" PRIu64 "\n",
                   pg->n_ok, pg->n_error, pg->n_down, pg->n_busy, pg->n_closed, pg->n_reconnects);
}
