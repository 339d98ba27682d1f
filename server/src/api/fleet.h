/* fleet: the in-memory device table, keyed by serial. It caches what PostgreSQL holds: loaded
 * at start from the devices' snapshots (rebuilding from events where a snapshot is stale) and
 * changed only after a commit. Each entry also carries the ingest bookkeeping of its device. */
#ifndef GB_API_FLEET_H
#define GB_API_FLEET_H

#include <bsd/sys/tree.h>
#include <stdbool.h>
#include <stddef.h>
#include <uthash.h>

#include <libpq-fe.h>

#include "domain/domain.h"
#include "util/util.h"

typedef struct gb_fleet_dev {
    char *key;      /* private: the serial, owned here. The hash key must outlive every state swap:
                       dev.serial changes owner each time a working copy is published. */
    gb_dev_t dev;   /* the published state: what the API shows */
    gb_dev_t *work; /* private: the batch's working copy while has_work (heap; NULL otherwise,
                       so an idle device does not carry a second state) */
    bool has_work;  /* private: work holds this batch's uncommitted state */
    const void *work_batch;   /* private: which transaction (its query) work belongs to */
    bool in_db;               /* a devices row exists */
    bool gap;                 /* private: the batch filled a gap below max_seq: rebuild after it */
    bool stale;               /* private: stored messages are missing from dev (a rebuild failed):
                                 the next committed batch rebuilds it again */
    bool rebuilding;          /* private: a rebuild from stored events is under way */
    bool row_added;           /* private: scratch flag while a batch is built */
    bool snap_now;            /* private: the batch being built writes this device's snapshot */
    uint64_t snap_applied;    /* private: dev.n_applied when its stored snapshot was taken */
    uint32_t runs_dirty_from; /* private: the first stage run whose stored row may differ from
                                 dev's (UINT32_MAX: none) */
    bool row_now;             /* private: the batch being built writes this device's row */
    bool row_stale;    /* private: the stored row lags dev (messages were replayed at start) */
    UT_hash_handle hh; /* private */
    RB_ENTRY(gb_fleet_dev) rb; /* private: the serial-ordered index */
} gb_fleet_dev_t;

RB_HEAD(gb_fleet_order, gb_fleet_dev);

typedef struct gb_fleet {
    gb_fleet_dev_t *table;       /* private: uthash head */
    struct gb_fleet_order order; /* private: the same devices, by serial (byte order) */
    size_t count;                /* read-only */
    uint64_t gen;                /* read-only: bumped on every published change */
} gb_fleet_t;

void gb_fleet_init(gb_fleet_t *f);
void gb_fleet_dispose(gb_fleet_t *f);
gb_fleet_dev_t *gb_fleet_find(const gb_fleet_t *f, const char *serial, size_t len);
/* Adds a device in its initial state (the caller checked it is absent). */
gb_fleet_dev_t *gb_fleet_add(gb_fleet_t *f, const char *serial, size_t len);

/* The statements that read what a rebuild needs, each with the serial as $1: the stored
 * messages in seq order, and the technician's retries and slot assignments (after_seq, at in
 * ms, whether it assigns a slot, the slot) in the order made. */
extern const char GB_FLEET_SQL_EVENTS[];
extern const char GB_FLEET_SQL_ACTIONS[];

/* Rebuilds dev from stored messages: res has one row per message, column 0 its JSON, in seq
 * order (GB_FLEET_SQL_EVENTS); the actions (GB_FLEET_SQL_ACTIONS' result, or NULL) are
 * repeated where they were made. A stored message that no longer decodes is logged and skipped. */
void gb_fleet_rebuild_from_rows(gb_dev_t *dev, const gb_apply_ctx_t *ctx, const PGresult *res,
                                const PGresult *actions);

/* Serial order (bytes, as memcmp; a prefix sorts first), for keyset pagination: the first
 * device whose serial is above after (after NULL: the first of all), and the one after d. NULL
 * at the end. Adding or removing devices never reorders the others, so a walk resumed from a
 * serial sees every device that existed when it began, once. */
gb_fleet_dev_t *gb_fleet_first_after(gb_fleet_t *f, const char *after, size_t len);
gb_fleet_dev_t *gb_fleet_next(gb_fleet_t *f, gb_fleet_dev_t *d);

/* Calls fn on d's published state, and on its working copy when a batch holds one, so that a
 * change made outside ingest (identity, profile, slot) survives the batch's publish. */
void gb_fleet_dev_edit(gb_fleet_dev_t *d, void (*fn)(gb_dev_t *dev, void *arg), void *arg);

/* Removes and frees d (it must hold no working copy). */
void gb_fleet_remove(gb_fleet_t *f, gb_fleet_dev_t *d);

/* A device's ESP timeout in minutes (its profile's; <= 0: the default), for gb_fleet_load. */
typedef int (*gb_fleet_esp_timeout_fn)(void *arg, const gb_dev_t *dev);

/* Loads every device from the database (blocking, at start-up): snapshots are decoded, the
 * messages stored after a snapshot are applied on top of it, and a device flagged needs_rebuild
 * (or without a usable snapshot) is rebuilt from its events; the rebuilt snapshots are saved in
 * one transaction. Messages are applied with each device's ESP timeout from esp_timeout (NULL:
 * the default for all). Returns 0, or GB_EDB with a message in err. */
int gb_fleet_load(gb_fleet_t *f, PGconn *conn, gb_fleet_esp_timeout_fn esp_timeout, void *arg,
                  char *err, size_t errlen) GB_MUST_CHECK;

#endif
