/* db: PostgreSQL on the libuv loop. A pool of non-blocking libpq connections (one uv_poll_t
 * each), a capped FIFO of waiting queries, reconnect with backoff, and the migrations runner.
 * Callers embed a gb_pg_query_t in their own operation and recover it with gb_container_of.
 *
 * A query is one or more statements. With more than one they are sent in libpq pipeline mode
 * and end with one sync, so the whole unit costs one round trip; wrap them in BEGIN ... COMMIT
 * to make them one transaction. The callback fires exactly once per submitted query. */
#ifndef GB_DB_H
#define GB_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <libpq-fe.h>
#include <uv.h>

#include "util/util.h"

typedef struct gb_pg gb_pg_t;
typedef struct gb_pg_query gb_pg_query_t;

#define GB_PG_MAX_STMTS 8

/* err is 0 on success; then results[i] holds statement i's result (borrowed: the db layer
 * PQclear()s them after the callback returns). On failure err is GB_EDBDOWN (connection lost,
 * database unreachable, query timed out), GB_EBUSY (never: submission reports that), or GB_EDB
 * (the server rejected a statement; q->error holds its message and q->sqlstate its code); no
 * results are passed then. */
typedef void (*gb_pg_query_cb)(gb_pg_query_t *q, int err, PGresult *const *results,
                               size_t nresults);

typedef struct gb_pg_stmt {
    const char *sql;           /* static text; never carries user data */
    int nparams;
    const char *const *values; /* text-format parameters; must stay valid until the callback */
    const int *lengths;        /* may be NULL (text parameters) */
} gb_pg_stmt_t;

struct gb_pg_query {
    gb_pg_stmt_t stmts[GB_PG_MAX_STMTS]; /* public: fill before submitting */
    size_t nstmts;                        /* public */
    gb_pg_query_cb cb;                    /* public */
    char error[256];                      /* read-only: message on GB_EDB / GB_EDBDOWN */
    char sqlstate[6];                     /* read-only: on GB_EDB */
    /* private */
    gb_pg_query_t *next;
    PGresult *results[GB_PG_MAX_STMTS];
    size_t nresults;
    int64_t queued_mono_ms;
};

/* Prepares q for one statement: q->stmts[0] = {sql, nparams, values}, nstmts = 1. */
void gb_pg_query_init(gb_pg_query_t *q, const char *sql, int nparams, const char *const *values,
                      gb_pg_query_cb cb);
/* Adds a statement; asserts that fewer than GB_PG_MAX_STMTS are there. */
void gb_pg_query_add(gb_pg_query_t *q, const char *sql, int nparams, const char *const *values);

typedef enum gb_pg_state {
    GB_PG_DOWN = 0,  /* no connection is up; submissions fail with GB_EDBDOWN */
    GB_PG_UP,        /* at least one connection is ready */
} gb_pg_state_t;

typedef struct gb_pg_config {
    const char *conninfo;        /* libpq URI or key=value string */
    unsigned pool_size;          /* connections, >= 1 */
    unsigned queue_max;          /* waiting queries beyond the in-flight ones; full: GB_EBUSY */
    unsigned connect_timeout_ms; /* bounds one connection attempt */
    unsigned query_timeout_ms;   /* statement_timeout, set through the conninfo options */
    unsigned reconnect_min_ms;   /* first backoff after a failure; doubles up to max */
    unsigned reconnect_max_ms;
} gb_pg_config_t;

/* Starts connecting in the background; does not wait. */
int gb_pg_new(uv_loop_t *loop, const gb_pg_config_t *cfg, gb_pg_t **out) GB_MUST_CHECK;
/* Queues q. Returns 0 (the callback will fire), GB_EBUSY (queue full) or GB_EDBDOWN (no
 * connection up); on an error return the callback never fires. */
int gb_pg_submit(gb_pg_t *pg, gb_pg_query_t *q) GB_MUST_CHECK;
gb_pg_state_t gb_pg_state(const gb_pg_t *pg);
/* Queries waiting for a connection (not counting those in flight). */
size_t gb_pg_queue_depth(const gb_pg_t *pg);
/* Stops reconnecting, fails waiting queries with GB_ECLOSED, lets in-flight ones finish, then
 * closes every connection; done fires when every handle is released. */
void gb_pg_shutdown(gb_pg_t *pg, void (*done)(void *arg), void *arg);
void gb_pg_free(gb_pg_t *pg);
/* Appends Prometheus text: gb_db_up, gb_db_queue_depth, gb_db_connections{state},
 * gb_db_queries_total{result}, gb_db_reconnects_total. */
void gb_pg_write_metrics(const gb_pg_t *pg, gb_buf_t *out);

/* ---- blocking helpers, for start-up and the command line only (never on the loop) ---- */
/* Connects with a timeout; on failure writes a trimmed message into err and returns NULL. */
PGconn *gb_pg_connect_blocking(const char *conninfo, unsigned timeout_ms, char *err,
                               size_t errlen);
/* Applies every migration not yet in schema_migrations, in order, each in its own transaction,
 * under an advisory lock so concurrent starts are safe. *applied counts the new ones. */
int gb_pg_migrate(PGconn *conn, int *applied, char *err, size_t errlen) GB_MUST_CHECK;

/* The migrations compiled into the binary (from migrations/NNNN_name.sql). */
typedef struct gb_migration {
    int version;
    const char *name;
    const char *sql;
} gb_migration_t;
extern const gb_migration_t gb_migrations[];
extern const size_t gb_migrations_count;

#endif
