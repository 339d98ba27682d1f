/* db internals: what pg_pool.c, pg_conn.c, conninfo.c, blocking.c and migrate.c share.
 * The pool owns an array of connections and the FIFO of waiting queries; a connection owns
 * its PGconn, its timer and (through a small separate allocation) its poll handle. The pool's
 * memory is released only when every one of those handles has been closed. */
#ifndef GB_DB_INTERNAL_H
#define GB_DB_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libpq-fe.h>
#include <uv.h>

#include "db/db.h"

/* ---- connection parameters (conninfo.c) ---- */

/* A parsed conninfo as the keyword/value arrays PQconnectStartParams() takes (both
 * NULL-terminated, every string owned). Parsing once and passing arrays lets us add our own
 * settings (statement_timeout in "options", connect_timeout) to a URI or a key=value string
 * alike, without re-quoting anything. */
typedef struct gb_pg__params {
    char **keywords;
    char **values;
    size_t n;
    size_t cap;
    char target[256]; /* "host=... port=... dbname=... user=...": safe to log (no password) */
} gb_pg__params_t;

/* Parses conninfo (URI or key=value). On failure writes a message with any password
 * redacted into err and returns GB_EINVAL. */
int gb_pg__params_init(gb_pg__params_t *p, const char *conninfo, char *err,
                       size_t errlen) GB_MUST_CHECK;
void gb_pg__params_dispose(gb_pg__params_t *p);
/* Returns the value of keyword, or NULL when unset. */
const char *gb_pg__params_get(const gb_pg__params_t *p, const char *keyword);
/* Sets keyword to a copy of value, replacing an earlier value. */
void gb_pg__params_set(gb_pg__params_t *p, const char *keyword, const char *value);
/* Appends "-c statement_timeout=<ms>" to the user's own "options" (kept, ours last so the
 * configured timeout wins). */
void gb_pg__params_add_statement_timeout(gb_pg__params_t *p, unsigned timeout_ms);
/* Copies a libpq message into out as one trimmed line (newlines and tabs become spaces). */
void gb_pg__copy_message(char *out, size_t outlen, const char *msg);
/* Writes a copy of msg into out with every password that appears in conninfo replaced by
 * "***". For libpq's parse errors, which quote the offending piece of the string. */
void gb_pg__redact(const char *conninfo, const char *msg, char *out, size_t outlen);

/* ---- notices (blocking.c) ---- */

/* Logs a server notice or warning as one "db" line instead of libpq's default of printing it
 * to stderr. arg is a "key=value" prefix for the line, or NULL. */
void gb_pg__log_notice(void *arg, const PGresult *res);

/* ---- migrations (migrate.c) ---- */

/* gb_pg_migrate() over an explicit list (sorted by version, versions >= 1, unique), so tests
 * can run lists of their own. Returns 0, GB_EDB (a statement failed; rolled back), GB_EDBDOWN
 * (the connection broke) or GB_EINVAL (the database is newer than the list). */
int gb_pg__migrate_list(PGconn *conn, const gb_migration_t *list, size_t count, int *applied,
                        char *err, size_t errlen) GB_MUST_CHECK;

/* ---- the pool and its connections ---- */

typedef struct gb_pg_conn gb_pg_conn_t;

/* Where a connection sits, and what its timer means there. */
typedef enum gb_pg_conn_state {
    GB_PG_CONN_BACKOFF = 0, /* no PGconn; the timer fires the next connection attempt */
    GB_PG_CONN_CONNECTING,  /* PQconnectPoll in progress; the timer is the connect timeout */
    GB_PG_CONN_IDLE,        /* ready, nothing in flight; armed for UV_READABLE; timer stopped */
    GB_PG_CONN_FLUSHING,    /* a query is sent but libpq still holds output; R|W armed */
    GB_PG_CONN_READING,     /* a query is sent and flushed; waiting for its results */
    GB_PG_CONN_CLOSED,      /* shut down: PGconn finished, handles closed or closing */
} gb_pg_conn_state_t;

struct pg_watch;

struct gb_pg_conn {
    uv_timer_t timer; /* connect timeout, backoff, or in-flight watchdog (by state) */
    gb_pg_t *pool;    /* owner; outlives every handle of this connection */
    unsigned id;      /* 1-based, for logs */
    gb_pg_conn_state_t state;
    PGconn *pg;             /* NULL in BACKOFF and CLOSED */
    struct pg_watch *watch; /* the poll handle on PQsocket(), NULL when none */
    gb_pg_query_t *current; /* the caller's query in flight, NULL when none */
    bool rolling_back;      /* in flight: our own ROLLBACK, after a query left a transaction */
    bool tried;             /* the first connection attempt has ended (start-up bookkeeping) */
    bool query_failed;      /* the current query (or our ROLLBACK) got an error result */
    bool query_down;        /* ... and that error means the database is unavailable */
    unsigned backoff_ms;    /* delay before the next attempt after a failure */
    unsigned failures;      /* consecutive failed attempts, to log the first one loudly */
    size_t results_ended;   /* result sets of the current query that are complete */
    size_t result_sets;     /* result sets the current query's pipeline gives before its sync */
    /* What each result set of the current query is: -1 a statement's (handed to the caller),
     * else the slot in prepared[] whose Parse it answers. */
    int8_t result_kind[2 * GB_PG_MAX_STMTS];
    /* Statements prepared on this session as "gb_p<slot>", by their static text, in the order
     * they were prepared; prepared_ok[i] once the server has confirmed slot i. */
    const char *prepared[GB_PG_PREPARED_MAX];
    bool prepared_ok[GB_PG_PREPARED_MAX];
    unsigned nprepared;
    char addr[32]; /* "conn=<id>" for log lines */
};

struct gb_pg {
    uv_timer_t kick; /* zero-delay: dispatches and fails waiting queries on the loop */
    uv_loop_t *loop;
    gb_pg_config_t cfg; /* cfg.conninfo is not kept; params holds the parsed form */
    gb_pg__params_t params;
    gb_pg_conn_t *conns; /* pool_size connections */
    unsigned nconns;
    gb_pg_query_t *head; /* FIFO of waiting queries, linked through q->next */
    gb_pg_query_t *tail;
    size_t depth;
    gb_pg_state_t state;
    bool starting; /* no connection has been up yet and first attempts are running */
    bool closing;  /* gb_pg_shutdown() was called */
    bool kick_closing;
    bool finished;         /* every handle is closed */
    bool free_requested;   /* gb_pg_free() came before the handles were closed */
    unsigned open_handles; /* kick + one timer per connection + live poll handles */
    void (*done)(void *arg);
    void *done_arg;
    char last_error[256]; /* the latest connection failure, for DOWN logs and queries */
    uint64_t n_ok, n_error, n_down, n_busy, n_closed, n_reconnects;
};

/* pg_conn.c: the per-connection state machine. */
int gb_pg__conn_init(gb_pg_t *pool, gb_pg_conn_t *c, unsigned id) GB_MUST_CHECK;
/* Starts the first connection attempt. */
void gb_pg__conn_start(gb_pg_conn_t *c);
/* Sends q on an idle connection. On a send failure the connection fails and q's callback
 * fires with GB_EDBDOWN before this returns, so call it only from a loop callback. */
void gb_pg__conn_dispatch(gb_pg_conn_t *c, gb_pg_query_t *q);
/* Shuts the connection down (nothing may be in flight); its timer closes asynchronously. */
void gb_pg__conn_close(gb_pg_conn_t *c);
bool gb_pg__conn_is_up(const gb_pg_conn_t *c);

/* pg_pool.c: what connections report back. */
/* A connection changed state: recomputes the pool state (logging changes) and schedules the
 * kick that dispatches or fails waiting queries. Never fires a query callback itself. */
void gb_pg__pool_conn_changed(gb_pg_t *pg);
/* Fires q's callback with err, then PQclear()s its results. q may be freed by the callback,
 * so the caller must not touch q afterwards. */
void gb_pg__query_deliver(gb_pg_t *pg, gb_pg_query_t *q, int err);
/* One of the pool's handles finished closing. */
void gb_pg__handle_closed(gb_pg_t *pg);

#endif
