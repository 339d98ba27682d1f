/* fleet: the in-memory device table and its start-up load. A snapshot is the fast path; the
 * events are the truth, and a device whose snapshot is missing, unreadable or flagged stale is
 * rebuilt from them before the server serves anything. */
#include "api/fleet.h"

#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/db.h"
#include "protocol/protocol.h"

#undef uthash_malloc
#undef uthash_free
#define uthash_malloc(sz)    gb_xmalloc(sz)
#define uthash_free(ptr, sz) free(ptr)

static int order_cmp(gb_fleet_dev_t *a, gb_fleet_dev_t *b)
{
    return strcmp(a->key, b->key);
}

RB_PROTOTYPE(gb_fleet_order, gb_fleet_dev, rb, order_cmp)
RB_GENERATE(gb_fleet_order, gb_fleet_dev, rb, order_cmp)

void gb_fleet_init(gb_fleet_t *f)
{
    f->table = NULL;
    RB_INIT(&f->order);
    f->count = 0;
    f->gen = 0;
}

void gb_fleet_dispose(gb_fleet_t *f)
{
    gb_fleet_dev_t *d, *tmp;
    HASH_ITER(hh, f->table, d, tmp)
    {
        HASH_DEL(f->table, d);
        RB_REMOVE(gb_fleet_order, &f->order, d);
        if (d->has_work) {
            gb_dev_dispose(d->work);
            free(d->work);
        }
        gb_dev_dispose(&d->dev);
        free(d->key);
        free(d);
    }
    f->count = 0;
}

gb_fleet_dev_t *gb_fleet_find(const gb_fleet_t *f, const char *serial, size_t len)
{
    gb_fleet_dev_t *d = NULL;
    HASH_FIND(hh, f->table, serial, len, d);
    return d;
}

gb_fleet_dev_t *gb_fleet_add(gb_fleet_t *f, const char *serial, size_t len)
{
    gb_fleet_dev_t *d = gb_xcalloc(1, sizeof(*d));
    d->key = gb_xstrndup(serial, len);
    gb_dev_init(&d->dev, d->key);
    HASH_ADD_KEYPTR(hh, f->table, d->key, len, d);
    RB_INSERT(gb_fleet_order, &f->order, d);
    f->count++;
    return d;
}

gb_fleet_dev_t *gb_fleet_first_after(gb_fleet_t *f, const char *after, size_t len)
{
    if (after == NULL) {
        return RB_MIN(gb_fleet_order, &f->order);
    }
    /* Serials hold no NUL (the protocol refuses control bytes), so strcmp order is byte order. */
    char key[128];
    gb_fleet_dev_t probe;
    if (len >= sizeof(key)) {
        len = sizeof(key) - 1;
    }
    memcpy(key, after, len);
    key[len] = '\0';
    probe.key = key;
    gb_fleet_dev_t *d = RB_NFIND(gb_fleet_order, &f->order, &probe);
    if (d != NULL && strcmp(d->key, key) == 0) {
        d = RB_NEXT(gb_fleet_order, &f->order, d);
    }
    return d;
}

gb_fleet_dev_t *gb_fleet_next(gb_fleet_t *f, gb_fleet_dev_t *d)
{
    (void)f;
    return RB_NEXT(gb_fleet_order, &f->order, d);
}

void gb_fleet_dev_edit(gb_fleet_dev_t *d, void (*fn)(gb_dev_t *dev, void *arg), void *arg)
{
    fn(&d->dev, arg);
    if (d->has_work) {
        fn(d->work, arg);
    }
}

void gb_fleet_remove(gb_fleet_t *f, gb_fleet_dev_t *d)
{
    GB_ASSERT(!d->has_work);
    HASH_DEL(f->table, d);
    RB_REMOVE(gb_fleet_order, &f->order, d);
    f->count--;
    gb_dev_dispose(&d->dev);
    free(d->key);
    free(d);
}

const char GB_FLEET_SQL_EVENTS[] = "SELECT body::text FROM events WHERE serial = $1 ORDER BY seq";
const char GB_FLEET_SQL_ACTIONS[] =
    "SELECT after_seq, (extract(epoch FROM at) * 1000)::bigint, action = 'assign_slot', "
    "detail->>'slot' FROM device_actions "
    "WHERE serial = $1 AND action IN ('retry', 'assign_slot') ORDER BY id";

void gb_fleet_rebuild_from_rows(gb_dev_t *dev, const gb_apply_ctx_t *ctx, const PGresult *res,
                                const PGresult *actions)
{
    int rows = PQntuples(res);
    gb_arena_t arena;
    gb_arena_init(&arena);
    gb_msg_t *msgs = gb_xcalloc((size_t)rows + 1, sizeof(*msgs));
    size_t n = 0;
    for (int r = 0; r < rows; r++) {
        gb_error_t e;
        gb_error_clear(&e);
        const char *body = PQgetvalue(res, r, 0);
        if (gb_proto_decode_message(body, strlen(body), &arena, &msgs[n], &e) == 0) {
            n++;
        } else {
            gb_log(GB_LOG_WARN, "fleet", "device %s: stored message %d unreadable: %s", dev->serial,
                   r, e.message);
        }
    }
    int nr = actions != NULL ? PQntuples(actions) : 0;
    gb_action_mark_t *marks = gb_xcalloc((size_t)nr + 1, sizeof(*marks));
    for (int r = 0; r < nr; r++) {
        marks[r].after_seq = strtoull(PQgetvalue(actions, r, 0), NULL, 10);
        marks[r].at_ms = strtoll(PQgetvalue(actions, r, 1), NULL, 10);
        marks[r].assign_slot = PQgetvalue(actions, r, 2)[0] == 't';
        marks[r].slot = PQgetisnull(actions, r, 3) ? NULL : PQgetvalue(actions, r, 3);
    }
    gb_dev_rebuild(dev, ctx, msgs, n, marks, (size_t)nr);
    free(marks);
    free(msgs);
    gb_arena_dispose(&arena);
}

/* The outcome of a command's result (which it clears): 0, or GB_EDB with the error in err. */
static int command_done(PGconn *conn, PGresult *res, char *err, size_t errlen)
{
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        gb_pg_error_text(conn, res, err, errlen);
        rc = GB_EDB;
    }
    PQclear(res);
    return rc;
}

/* Rebuilds d from its stored events and saves the result (blocking). */
static int rebuild_from_events(gb_fleet_dev_t *d, PGconn *conn, const gb_apply_ctx_t *ctx,
                               char *err, size_t errlen)
{
    const char *params[1] = {d->dev.serial};
    PGresult *res = PQexecParams(conn, GB_FLEET_SQL_EVENTS, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        gb_pg_error_text(conn, res, err, errlen);
        PQclear(res);
        return GB_EDB;
    }
    PGresult *actions = PQexecParams(conn, GB_FLEET_SQL_ACTIONS, 1, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(actions) != PGRES_TUPLES_OK) {
        gb_pg_error_text(conn, actions, err, errlen);
        PQclear(actions);
        PQclear(res);
        return GB_EDB;
    }
    gb_fleet_rebuild_from_rows(&d->dev, ctx, res, actions);
    PQclear(actions);
    PQclear(res);

    gb_buf_t snap;
    gb_buf_init(&snap);
    gb_proto_snapshot_encode(&d->dev, &snap);
    char seq[24];
    snprintf(seq, sizeof(seq), "%llu", (unsigned long long)d->dev.max_seq);
    const char *up[3] = {d->dev.serial, snap.data, seq};
    res = PQexecParams(conn,
                       "UPDATE devices SET state = $2::jsonb, snap_seq = $3::bigint, "
                       "needs_rebuild = false, updated_at = now() WHERE serial = $1",
                       3, NULL, up, NULL, NULL, 0);
    gb_buf_dispose(&snap);
    return command_done(conn, res, err, errlen);
}

/* Runs sql in single-row mode, calling fn for each row, so that a large table never sits in
 * memory whole (a snapshot is a kilobyte or more; a hundred thousand of them at once would be the
 * process's peak for good). */
static int stream_rows(PGconn *conn, const char *sql, void (*fn)(const PGresult *row, void *arg),
                       void *arg, char *err, size_t errlen)
{
    if (!PQsendQuery(conn, sql) || !PQsetSingleRowMode(conn)) {
        gb_pg_error_text(conn, NULL, err, errlen);
        PQclear(PQgetResult(conn));
        return GB_EDB;
    }
    int rc = 0;
    PGresult *res;
    while ((res = PQgetResult(conn)) != NULL) {
        ExecStatusType st = PQresultStatus(res);
        if (st == PGRES_SINGLE_TUPLE) {
            if (rc == 0) {
                fn(res, arg);
            }
        } else if (st != PGRES_TUPLES_OK && rc == 0) {
            gb_pg_error_text(conn, res, err, errlen);
            rc = GB_EDB;
        }
        PQclear(res);
    }
    return rc;
}

typedef struct load_state {
    gb_fleet_t *f;
    gb_fleet_dev_t **stale; /* devices to rebuild from their events once the stream is done */
    size_t n_stale;
    size_t cap_stale;
    size_t replayed;
    gb_arena_t arena;
    gb_fleet_esp_timeout_fn esp_timeout;
    void *esp_timeout_arg;
} load_state_t;

/* The context a stored message of dev is applied with: its profile's ESP timeout. */
static gb_apply_ctx_t load_ctx(const load_state_t *ls, const gb_dev_t *dev, int64_t received_ms)
{
    return (gb_apply_ctx_t){
        .esp_timeout_min = ls->esp_timeout != NULL ? ls->esp_timeout(ls->esp_timeout_arg, dev) : 0,
        .hybrid_join = false,
        .received_ms = received_ms};
}

static void on_device_row(const PGresult *res, void *arg)
{
    load_state_t *ls = arg;
    gb_fleet_t *f = ls->f;
    const char *serial = PQgetvalue(res, 0, 0);
    gb_fleet_dev_t *d = gb_xcalloc(1, sizeof(*d));
    bool stale = PQgetvalue(res, 0, 2)[0] == 't' || PQgetisnull(res, 0, 1);
    gb_error_t e;
    gb_error_clear(&e);
    if (!stale) {
        const char *snap = PQgetvalue(res, 0, 1);
        if (gb_proto_snapshot_decode(snap, (size_t)PQgetlength(res, 0, 1), &d->dev, &e) != 0) {
            gb_log(GB_LOG_WARN, "fleet", "device %s: snapshot unreadable (%s): rebuilding", serial,
                   e.message);
            stale = true;
        }
    }
    if (stale) {
        gb_dev_init(&d->dev, serial);
    }
    /* The identity columns are the truth for identity. */
    gb_dev_set_imported(&d->dev, PQgetvalue(res, 0, 3)[0] == 't');
    gb_dev_set_group_tag(&d->dev, PQgetisnull(res, 0, 4) ? NULL : PQgetvalue(res, 0, 4));
    gb_dev_set_assigned_user(&d->dev, PQgetisnull(res, 0, 5) ? NULL : PQgetvalue(res, 0, 5));
    gb_dev_set_slot(&d->dev, PQgetisnull(res, 0, 6) ? NULL : PQgetvalue(res, 0, 6));
    d->in_db = true;
    d->snap_applied = d->dev.n_applied;
    d->runs_dirty_from = UINT32_MAX;
    d->key = gb_xstrdup(serial);
    HASH_ADD_KEYPTR(hh, f->table, d->key, strlen(d->key), d);
    RB_INSERT(gb_fleet_order, &f->order, d);
    f->count++;
    if (stale) {
        if (ls->n_stale == ls->cap_stale) {
            ls->cap_stale = ls->cap_stale != 0 ? 2 * ls->cap_stale : 64;
            ls->stale = gb_xrealloc(ls->stale, ls->cap_stale * sizeof(*ls->stale));
        }
        ls->stale[ls->n_stale++] = d;
    }
}

/* One stored message above a device's snapshot: applied on top of it, as ingest did. */
static void on_replay_row(const PGresult *res, void *arg)
{
    load_state_t *ls = arg;
    const char *serial = PQgetvalue(res, 0, 0);
    gb_fleet_dev_t *d = gb_fleet_find(ls->f, serial, strlen(serial));
    gb_msg_t m;
    gb_error_t e;
    gb_error_clear(&e);
    if (d == NULL) {
        return;
    }
    gb_arena_reset(&ls->arena);
    if (gb_proto_decode_message(PQgetvalue(res, 0, 1), (size_t)PQgetlength(res, 0, 1), &ls->arena,
                                &m, &e) != 0) {
        gb_log(GB_LOG_WARN, "fleet", "device %s: stored message unreadable: %s", serial, e.message);
        return;
    }
    gb_apply_ctx_t ctx = load_ctx(ls, &d->dev, strtoll(PQgetvalue(res, 0, 2), NULL, 10));
    gb_dev_set_last_arrival(&d->dev, ctx.received_ms);
    if (gb_dev_apply(&d->dev, &ctx, &m) == 0) {
        /* The stored row and stage runs lag too: the device's next batch rewrites them. */
        d->row_stale = true;
        d->runs_dirty_from = 0;
        ls->replayed++;
    }
}

/* Runs one statement without parameters or rows (BEGIN, COMMIT, ROLLBACK). */
static int exec_command(PGconn *conn, const char *sql, char *err, size_t errlen)
{
    return command_done(conn, PQexec(conn, sql), err, errlen);
}

int gb_fleet_load(gb_fleet_t *f, PGconn *conn, gb_fleet_esp_timeout_fn esp_timeout, void *arg,
                  char *err, size_t errlen)
{
    load_state_t ls;
    memset(&ls, 0, sizeof(ls));
    ls.f = f;
    ls.esp_timeout = esp_timeout;
    ls.esp_timeout_arg = arg;
    gb_arena_init(&ls.arena);
    int rc = stream_rows(conn,
                         "SELECT serial, state::text, needs_rebuild, imported_at IS NOT NULL, "
                         "group_tag, assigned_user, slot FROM devices",
                         on_device_row, &ls, err, errlen);
    /* Snapshots lag their devices by up to a few dozen messages: replay what came after. */
    if (rc == 0) {
        rc = stream_rows(
            conn,
            "SELECT e.serial, e.body::text, (extract(epoch FROM e.received_at) * 1000)::bigint "
            "FROM devices d JOIN events e ON e.serial = d.serial AND e.seq > d.snap_seq "
            "WHERE d.state IS NOT NULL AND NOT d.needs_rebuild "
            "ORDER BY e.serial, e.seq",
            on_replay_row, &ls, err, errlen);
    }
    /* One transaction for every rebuilt snapshot: one commit to wait for, not one per device. */
    if (rc == 0 && ls.n_stale > 0) {
        rc = exec_command(conn, "BEGIN", err, errlen);
    }
    for (size_t i = 0; rc == 0 && i < ls.n_stale; i++) {
        gb_apply_ctx_t ctx = load_ctx(&ls, &ls.stale[i]->dev, GB_TIME_NONE);
        rc = rebuild_from_events(ls.stale[i], conn, &ctx, err, errlen);
        ls.stale[i]->snap_applied = ls.stale[i]->dev.n_applied;
        /* Only the snapshot was saved: the row and the runs are rewritten by the next batch. */
        ls.stale[i]->row_stale = true;
        ls.stale[i]->runs_dirty_from = 0;
    }
    if (ls.n_stale > 0) {
        if (rc == 0) {
            rc = exec_command(conn, "COMMIT", err, errlen);
        } else if (PQtransactionStatus(conn) != PQTRANS_IDLE) {
            char ignored[128];
            (void)exec_command(conn, "ROLLBACK", ignored, sizeof(ignored));
        }
    }
    free(ls.stale);
    gb_arena_dispose(&ls.arena);
    if (rc < 0) {
        return rc;
    }
    /* Hand the decoding's temporaries back to the system rather than keep the start-up peak
     * for the process's lifetime. */
    malloc_trim(0);
    gb_log(GB_LOG_INFO, "fleet",
           "loaded %zu devices (%zu rebuilt from events, %zu messages replayed onto snapshots)",
           f->count, ls.n_stale, ls.replayed);
    return 0;
}
