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

void gb_fleet_init(gb_fleet_t *f)
{
    f->table = NULL;
    f->count = 0;
}

void gb_fleet_dispose(gb_fleet_t *f)
{
    gb_fleet_dev_t *d, *tmp;
    HASH_ITER(hh, f->table, d, tmp)
    {
        HASH_DEL(f->table, d);
        if (d->has_work) {
            gb_dev_dispose(&d->work);
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
    f->count++;
    return d;
}

void gb_fleet_remove(gb_fleet_t *f, gb_fleet_dev_t *d)
{
    GB_ASSERT(!d->has_work);
    HASH_DEL(f->table, d);
    f->count--;
    gb_dev_dispose(&d->dev);
    free(d->key);
    free(d);
}

void gb_fleet_rebuild_from_rows(gb_dev_t *dev, const gb_apply_ctx_t *ctx, const PGresult *res)
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
    gb_dev_rebuild(dev, ctx, msgs, n, NULL, 0);
    free(msgs);
    gb_arena_dispose(&arena);
}

/* Rebuilds d from its stored events and saves the result (blocking). */
static int rebuild_from_events(gb_fleet_dev_t *d, PGconn *conn, const gb_apply_ctx_t *ctx,
                               char *err, size_t errlen)
{
    const char *params[1] = {d->dev.serial};
    PGresult *res =
        PQexecParams(conn, "SELECT body::text FROM events WHERE serial = $1 ORDER BY seq", 1, NULL,
                     params, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        gb_pg_error_text(conn, res, err, errlen);
        PQclear(res);
        return GB_EDB;
    }
    gb_fleet_rebuild_from_rows(&d->dev, ctx, res);
    PQclear(res);

    gb_buf_t snap;
    gb_buf_init(&snap);
    gb_proto_snapshot_encode(&d->dev, &snap);
    const char *up[2] = {d->dev.serial, snap.data};
    res = PQexecParams(conn,
                       "UPDATE devices SET state = $2::jsonb, needs_rebuild = false, "
                       "updated_at = now() WHERE serial = $1",
                       2, NULL, up, NULL, NULL, 0);
    gb_buf_dispose(&snap);
    int rc = 0;
    if (PQresultStatus(res) != PGRES_COMMAND_OK) {
        gb_pg_error_text(conn, res, err, errlen);
        rc = GB_EDB;
    }
    PQclear(res);
    return rc;
}

int gb_fleet_load(gb_fleet_t *f, PGconn *conn, const gb_apply_ctx_t *ctx, char *err, size_t errlen)
{
    PGresult *res = PQexec(conn, "SELECT serial, state::text, needs_rebuild, imported_at IS NOT "
                                 "NULL, group_tag, assigned_user, slot FROM devices");
    if (PQresultStatus(res) != PGRES_TUPLES_OK) {
        gb_pg_error_text(conn, res, err, errlen);
        PQclear(res);
        return GB_EDB;
    }
    int rows = PQntuples(res);
    size_t rebuilt = 0;
    for (int r = 0; r < rows; r++) {
        const char *serial = PQgetvalue(res, r, 0);
        gb_fleet_dev_t *d = gb_xcalloc(1, sizeof(*d));
        bool stale = PQgetvalue(res, r, 2)[0] == 't' || PQgetisnull(res, r, 1);
        gb_error_t e;
        gb_error_clear(&e);
        if (!stale) {
            const char *snap = PQgetvalue(res, r, 1);
            if (gb_proto_snapshot_decode(snap, strlen(snap), &d->dev, &e) != 0) {
                gb_log(GB_LOG_WARN, "fleet", "device %s: snapshot unreadable (%s): rebuilding",
                       serial, e.message);
                stale = true;
            }
        }
        if (stale) {
            gb_dev_init(&d->dev, serial);
        }
        /* The identity columns are the truth for identity. */
        gb_dev_set_imported(&d->dev, PQgetvalue(res, r, 3)[0] == 't');
        gb_dev_set_group_tag(&d->dev, PQgetisnull(res, r, 4) ? NULL : PQgetvalue(res, r, 4));
        gb_dev_set_assigned_user(&d->dev, PQgetisnull(res, r, 5) ? NULL : PQgetvalue(res, r, 5));
        gb_dev_set_slot(&d->dev, PQgetisnull(res, r, 6) ? NULL : PQgetvalue(res, r, 6));
        d->in_db = true;
        d->key = gb_xstrdup(serial);
        HASH_ADD_KEYPTR(hh, f->table, d->key, strlen(d->key), d);
        f->count++;
        if (stale) {
            int rc = rebuild_from_events(d, conn, ctx, err, errlen);
            if (rc < 0) {
                PQclear(res);
                return rc;
            }
            rebuilt++;
        }
    }
    PQclear(res);
    /* The whole result and the decoding's temporaries were freed just now; hand that memory
     * back to the system rather than keep the start-up peak for the process's lifetime. */
    malloc_trim(0);
    gb_log(GB_LOG_INFO, "fleet", "loaded %zu devices (%zu rebuilt from events)", f->count, rebuilt);
    return 0;
}
