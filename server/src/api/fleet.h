/* fleet: the in-memory device table, keyed by serial. It caches what PostgreSQL holds: loaded
 * at start from the devices' snapshots (rebuilding from events where a snapshot is stale) and
 * changed only after a commit. Each entry also carries the ingest bookkeeping of its device. */
#ifndef GB_API_FLEET_H
#define GB_API_FLEET_H

#include <stdbool.h>
#include <stddef.h>
#include <uthash.h>

#include <libpq-fe.h>

#include "domain/domain.h"
#include "util/util.h"

typedef struct gb_fleet_dev {
    char *key;       /* private: the serial, owned here. The hash key must outlive every state swap:
                        dev.serial changes owner each time a working copy is published. */
    gb_dev_t dev;    /* the published state: what the API shows */
    gb_dev_t work;   /* private: the batch's working copy while has_work */
    bool has_work;   /* private: work holds this batch's uncommitted state */
    bool in_db;      /* a devices row exists */
    bool gap;        /* private: the batch filled a gap below max_seq: rebuild after it */
    bool stale;      /* private: stored messages are missing from dev (a rebuild failed):
                        the next committed batch rebuilds it again */
    bool rebuilding; /* private: a rebuild from stored events is under way */
    bool row_added;  /* private: scratch flag while a batch is built */
    UT_hash_handle hh; /* private */
} gb_fleet_dev_t;

typedef struct gb_fleet {
    gb_fleet_dev_t *table; /* private: uthash head */
    size_t count;          /* read-only */
} gb_fleet_t;

void gb_fleet_init(gb_fleet_t *f);
void gb_fleet_dispose(gb_fleet_t *f);
gb_fleet_dev_t *gb_fleet_find(const gb_fleet_t *f, const char *serial, size_t len);
/* Adds a device in its initial state (the caller checked it is absent). */
gb_fleet_dev_t *gb_fleet_add(gb_fleet_t *f, const char *serial, size_t len);

/* Rebuilds dev from stored messages: res has one row per message, column 0 its JSON, in seq
 * order (SELECT body::text FROM events WHERE serial = $1 ORDER BY seq). A stored message that
 * no longer decodes is logged and skipped. */
void gb_fleet_rebuild_from_rows(gb_dev_t *dev, const gb_apply_ctx_t *ctx, const PGresult *res);

/* Removes and frees d (it must hold no working copy). */
void gb_fleet_remove(gb_fleet_t *f, gb_fleet_dev_t *d);

/* Loads every device from the database (blocking, at start-up): snapshots are decoded, and a
 * device flagged needs_rebuild (or without a usable snapshot) is rebuilt from its events and
 * saved. Returns 0, or GB_EDB with a message in err. */
int gb_fleet_load(gb_fleet_t *f, PGconn *conn, const gb_apply_ctx_t *ctx, char *err,
                  size_t errlen) GB_MUST_CHECK;

#endif
