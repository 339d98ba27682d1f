/* db: PostgreSQL on the libuv loop. A pool of non-blocking libpq connections (one uv_poll_t
 * each), a capped FIFO of waiting queries, reconnect with backoff, and the migrations runner.
 * Callers embed a gb_pg_query_t in their own operation and recover it with gb_container_of.
 *
 * A query is one or more statements. With more than one they are sent in libpq pipeline mode
 * and end with one sync, so the whole unit costs one round trip; wrap them in BEGIN ... COMMIT
 * to make them one transaction. A transaction still open when a query ends (a pipeline that
 * failed between BEGIN and COMMIT, or no COMMIT at all) is rolled back before the connection
 * serves another query. The callback fires exactly once per submitted query. */
#ifndef GB_DB_H
#define GB_DB_H

#include <stdbool.h>
#include <stddef.h>

#include <libpq-fe.h>
#include <uv.h>

#include "util/util.h"

typedef struct gb_pg gb_pg_t;
typedef struct gb_pg_query gb_pg_query_t;

#define GB_PG_MAX_STMTS    8
#define GB_PG_PREPARED_MAX 16

/* err is 0 on success; then results[i] holds statement i's result (borrowed: the db layer
 * PQclear()s them after the callback returns). On failure err is GB_EDBDOWN (connection lost,
 * database unreachable, query timed out: statement_timeout gives sqlstate 57014), GB_EBUSY
 * (never: submission reports that), GB_ECLOSED (still waiting when gb_pg_shutdown() came), or
 * GB_EDB (the server rejected a statement; q->error holds its message and q->sqlstate its
 * code); no results are passed then. The callback may free q. */
typedef void (*gb_pg_query_cb)(gb_pg_query_t *q, int err, PGresult *const *results,
                               size_t nresults);

typedef struct gb_pg_stmt {
    const char *sql; /* static text; never carries user data */
    int nparams;
    const char *const *values; /* text-format parameters; must stay valid until the callback */
    const int *lengths;        /* may be NULL (text parameters) */
    const int *formats;        /* may be NULL (all text); 1 marks a binary parameter, whose
                                  bytes are values[i] with length lengths[i] */
    bool prepare; /* a hot statement: each connection prepares it once and then only binds and
                     executes it (sql must have static storage: it is the cache's key) */
} gb_pg_stmt_t;

struct gb_pg_query {
    gb_pg_stmt_t stmts[GB_PG_MAX_STMTS]; /* public: fill before submitting */
    size_t nstmts;                       /* public */
    gb_pg_query_cb cb;                   /* public */
    char error[256];                     /* read-only: message on GB_EDB / GB_EDBDOWN */
    char sqlstate[6];                    /* read-only: on GB_EDB, or the server's reason */
    /* private */
    gb_pg_query_t *next;
    PGresult *results[GB_PG_MAX_STMTS];
    size_t nresults;
    int64_t queued_mono_ms;
};

/* Prepares q for one statement: q->stmts[0] = {sql, nparams, values}, nstmts = 1; clears the
 * rest of q (lengths and formats NULL). */
void gb_pg_query_init(gb_pg_query_t *q, const char *sql, int nparams, const char *const *values,
                      gb_pg_query_cb cb);
/* Adds a statement; asserts that fewer than GB_PG_MAX_STMTS are there. */
void gb_pg_query_add(gb_pg_query_t *q, const char *sql, int nparams, const char *const *values);
/* Adds a statement that each connection prepares the first time it runs it (named, in the same
 * pipeline) and runs prepared from then on: the server parses and plans it once per session
 * instead of every time. sql must be a string literal or other static text: the connection
 * recognises it by its address. At most GB_PG_PREPARED_MAX statements per connection are kept;
 * beyond that a statement runs unprepared. A reconnection starts again from none. */
void gb_pg_query_add_prepared(gb_pg_query_t *q, const char *sql, int nparams,
                              const char *const *values);

typedef enum gb_pg_state {
    GB_PG_DOWN = 0, /* no connection is up; submissions fail with GB_EDBDOWN */
    GB_PG_UP,       /* at least one connection is ready */
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

/* Starts connecting in the background; does not wait. cfg is copied (conninfo is parsed and
 * not kept). Returns GB_EINVAL for an unparsable conninfo (the message, with any password
 * redacted, is logged), pool_size 0, connect_timeout_ms 0, reconnect_min_ms 0 or
 * reconnect_max_ms < reconnect_min_ms. query_timeout_ms 0 means no statement_timeout. Host
 * names are resolved by libpq at each attempt, synchronously: prefer an address or a socket. */
int gb_pg_new(uv_loop_t *loop, const gb_pg_config_t *cfg, gb_pg_t **out) GB_MUST_CHECK;
/* Queues q. Returns 0 (the callback will fire), GB_EBUSY (queue full), GB_EDBDOWN (no
 * connection up) or GB_ECLOSED (after gb_pg_shutdown); on an error return the callback never
 * fires. The callback never fires from inside gb_pg_submit() or gb_pg_shutdown(), only from
 * the loop. Just after gb_pg_new(), while the first connection attempts are still running,
 * queries wait (at most about connect_timeout_ms) instead of failing. */
int gb_pg_submit(gb_pg_t *pg, gb_pg_query_t *q) GB_MUST_CHECK;
gb_pg_state_t gb_pg_state(const gb_pg_t *pg);
/* Queries waiting for a connection (not counting those in flight). */
size_t gb_pg_queue_depth(const gb_pg_t *pg);
/* Stops reconnecting, fails waiting queries with GB_ECLOSED, lets in-flight ones finish, then
 * closes every connection; done (may be NULL) fires when every handle is released. Call once.
 * An in-flight query is bounded by the query timeout (plus a client-side watchdog). */
void gb_pg_shutdown(gb_pg_t *pg, void (*done)(void *arg), void *arg);
/* Releases pg: at once when done has fired (also from inside done), otherwise it starts a
 * shutdown if none runs and releases the memory once every handle has closed (the loop must
 * run). gb_pg_free(NULL) does nothing. */
void gb_pg_free(gb_pg_t *pg);
/* Appends Prometheus text: gb_db_up, gb_db_queue_depth, gb_db_queue_oldest_wait_seconds,
 * gb_db_connections{state}, gb_db_queries_total{result}, gb_db_reconnects_total. */
void gb_pg_write_metrics(const gb_pg_t *pg, gb_buf_t *out);

/* ---- array parameters ----
 * Builds a PostgreSQL array literal in text form ('{"a","b",NULL}') for one parameter, so a
 * whole batch of rows goes into a statement as a few arrays and comes out with unnest(). */
typedef struct gb_pg_array {
    gb_buf_t buf; /* read-only */
    size_t n;     /* read-only: elements so far */
} gb_pg_array_t;

void gb_pg_array_init(gb_pg_array_t *a);
void gb_pg_array_dispose(gb_pg_array_t *a);
/* Appends a text element (quoted; any bytes but NUL). */
void gb_pg_array_text(gb_pg_array_t *a, const char *s, size_t len);
void gb_pg_array_cstr(gb_pg_array_t *a, const char *s); /* NULL appends NULL */
void gb_pg_array_null(gb_pg_array_t *a);
void gb_pg_array_i64(gb_pg_array_t *a, int64_t v);
/* A timestamptz from UTC milliseconds; GB_TIME_NONE-like values (INT64_MIN) append NULL. */
void gb_pg_array_time_ms(gb_pg_array_t *a, int64_t ms);
/* Closes the literal and returns it (owned by the array until dispose). */
const char *gb_pg_array_finish(gb_pg_array_t *a);

/* ---- group commit ----
 * A batcher keeps up to GB_PG_BATCH_SLOTS transactions in flight, each on its own connection of
 * the pool. Items that arrive while every slot is busy wait; when a transaction ends, the next
 * one takes every waiting item (a lone item commits at once, a crowd shares one commit and one
 * fsync), and while one transaction waits for its COMMIT the next can already be on its way.
 * What the statements are is the owner's business: build() fills the query for a list of items
 * and may set aside the items that must not run beside a transaction in flight (the owner
 * knows which: e.g. the same device); done() hears how it ended. Items are embedded in the
 * owner's objects (gb_container_of). */
#define GB_PG_BATCH_SLOTS 2
typedef struct gb_pg_batcher gb_pg_batcher_t;
typedef struct gb_pg_batch_item gb_pg_batch_item_t;

struct gb_pg_batch_item {
    gb_pg_batch_item_t *next; /* private */
};

typedef struct gb_pg_batcher_ops {
    /* Fills q (statements and parameters) for *items, in arrival order. Items that cannot run
     * now go, in order, to the list *deferred: they wait for the next transaction, ahead of
     * later arrivals (there must be a transaction in flight whose end makes them possible).
     * *items is left holding the items taken. Parameters may live in arena, which is reset
     * after done(). May drop every item taken by returning false: nothing is sent and done()
     * is called at once with err 0 and no results. */
    bool (*build)(gb_pg_batcher_t *b, gb_pg_batch_item_t **items, gb_pg_batch_item_t **deferred,
                  gb_pg_query_t *q, gb_arena_t *arena, void *arg);
    /* The transaction ended: err 0 after COMMIT (results borrowed), else a gb_pg_query_cb
     * error. Every item of the batch is passed; the batcher forgets them afterwards. */
    void (*done)(gb_pg_batcher_t *b, gb_pg_batch_item_t *items, int err, PGresult *const *results,
                 size_t nresults, void *arg);
} gb_pg_batcher_ops_t;

/* max_waiting bounds the items waiting for the next transaction; beyond it, add fails. */
gb_pg_batcher_t *gb_pg_batcher_new(gb_pg_t *pg, const gb_pg_batcher_ops_t *ops, void *arg,
                                   size_t max_waiting);
/* Queues item. Returns 0 (done() will see it), GB_EBUSY (too many waiting), GB_EDBDOWN (the
 * database is down) or GB_ECLOSED; on error the item is not kept. */
int gb_pg_batcher_add(gb_pg_batcher_t *b, gb_pg_batch_item_t *item) GB_MUST_CHECK;
/* True while no transaction is in flight and nothing waits. (Deferred items wait too.) */
bool gb_pg_batcher_idle(const gb_pg_batcher_t *b);
/* Fails waiting items with GB_ECLOSED (via done) and refuses new ones; the transaction in
 * flight ends normally. */
void gb_pg_batcher_close(gb_pg_batcher_t *b);
/* Frees the batcher; it must be idle. */
void gb_pg_batcher_free(gb_pg_batcher_t *b);
/* Appends Prometheus text: gb_ingest_batches_total, gb_ingest_batch_items (histogram-ish sum
 * and count), gb_ingest_waiting. */
void gb_pg_batcher_write_metrics(const gb_pg_batcher_t *b, gb_buf_t *out);

/* Describes which database a conninfo names ("host=... port=... dbname=... user=..."), safe
 * to log: never the password. */
void gb_pg_conninfo_describe(const char *conninfo, char *out, size_t outlen);

/* ---- blocking helpers, for start-up and the command line only (never on the loop) ---- */
/* Connects with a timeout; on failure writes a trimmed message into err and returns NULL. */
PGconn *gb_pg_connect_blocking(const char *conninfo, unsigned timeout_ms, char *err, size_t errlen);
/* Applies every migration not yet in schema_migrations, in order, each in its own transaction,
 * under an advisory lock so concurrent starts are safe. *applied (applied may be NULL) counts
 * the new ones. Returns 0; GB_EDB when a migration fails (it is rolled back and err names its
 * version and the server's message; earlier ones stay applied); GB_EDBDOWN when the connection
 * broke; GB_EINVAL when the database holds a version newer than any this binary knows. Migration
 * files must not contain transaction control (BEGIN/COMMIT). */
int gb_pg_migrate(PGconn *conn, int *applied, char *err, size_t errlen) GB_MUST_CHECK;

/* Copies the error of a blocking call as one trimmed line: the result's message when there is
 * one, else the connection's. */
void gb_pg_error_text(PGconn *conn, const PGresult *res, char *out, size_t outlen);

/* The migrations compiled into the binary (from migrations/NNNN_name.sql). */
typedef struct gb_migration {
    int version;
    const char *name;
    const char *sql;
} gb_migration_t;
extern const gb_migration_t gb_migrations[];
extern const size_t gb_migrations_count;

#endif
