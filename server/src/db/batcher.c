/* batcher: group commit. At most one transaction is in flight; items that arrive meanwhile wait
 * in a FIFO, and the next transaction takes all of them. The owner builds the statements and
 * hears the outcome, so the batcher knows nothing of what is stored. */
#include <stdlib.h>
#include <string.h>

#include "db/db.h"

struct gb_pg_batcher {
    gb_pg_t *pg;
    gb_pg_batcher_ops_t ops;
    void *arg;
    size_t max_waiting;
    gb_pg_batch_item_t *wait_head; /* waiting for the next transaction */
    gb_pg_batch_item_t *wait_tail;
    size_t n_waiting;
    gb_pg_batch_item_t *flight; /* the items of the transaction in flight */
    bool in_flight;
    bool closed;
    gb_pg_query_t query;
    gb_arena_t arena;
    uint64_t batches;
    uint64_t items_total;
    uint64_t failures;
    size_t largest;
};

static void start_next(gb_pg_batcher_t *b);

static void finish(gb_pg_batcher_t *b, int err, PGresult *const *results, size_t nresults)
{
    gb_pg_batch_item_t *items = b->flight;
    b->flight = NULL;
    b->in_flight = false;
    if (err != 0) {
        b->failures++;
    }
    b->ops.done(b, items, err, results, nresults, b->arg);
    gb_arena_reset(&b->arena);
}

static void on_batch_done(gb_pg_query_t *q, int err, PGresult *const *results, size_t nresults)
{
    gb_pg_batcher_t *b = gb_container_of(q, gb_pg_batcher_t, query);
    finish(b, err, results, nresults);
    start_next(b);
}

static void start_next(gb_pg_batcher_t *b)
{
    while (!b->in_flight && b->wait_head != NULL) {
        gb_pg_batch_item_t *items = b->wait_head;
        size_t n = b->n_waiting;
        b->wait_head = b->wait_tail = NULL;
        b->n_waiting = 0;
        b->flight = items;
        b->in_flight = true;
        b->batches++;
        b->items_total += n;
        if (n > b->largest) {
            b->largest = n;
        }
        memset(&b->query, 0, sizeof(b->query));
        b->query.cb = on_batch_done;
        if (!b->ops.build(b, items, &b->query, &b->arena, b->arg)) {
            finish(b, 0, NULL, 0);
            continue;
        }
        int rc = gb_pg_submit(b->pg, &b->query);
        if (rc < 0) {
            finish(b, rc, NULL, 0);
        }
    }
}

gb_pg_batcher_t *gb_pg_batcher_new(gb_pg_t *pg, const gb_pg_batcher_ops_t *ops, void *arg,
                                   size_t max_waiting)
{
    gb_pg_batcher_t *b = gb_xcalloc(1, sizeof(*b));
    b->pg = pg;
    b->ops = *ops;
    b->arg = arg;
    b->max_waiting = max_waiting;
    gb_arena_init(&b->arena);
    return b;
}

int gb_pg_batcher_add(gb_pg_batcher_t *b, gb_pg_batch_item_t *item)
{
    if (b->closed) {
        return GB_ECLOSED;
    }
    if (b->n_waiting >= b->max_waiting) {
        return GB_EBUSY;
    }
    /* No check of the database here: while it is down, the transaction's submission fails at
     * once (and done() answers), while it is still being connected to at start-up, the
     * transaction waits for it. */
    item->next = NULL;
    if (b->wait_tail != NULL) {
        b->wait_tail->next = item;
    } else {
        b->wait_head = item;
    }
    b->wait_tail = item;
    b->n_waiting++;
    start_next(b);
    return 0;
}

bool gb_pg_batcher_idle(const gb_pg_batcher_t *b)
{
    return !b->in_flight && b->wait_head == NULL;
}

void gb_pg_batcher_close(gb_pg_batcher_t *b)
{
    b->closed = true;
    if (b->wait_head != NULL) {
        gb_pg_batch_item_t *items = b->wait_head;
        b->wait_head = b->wait_tail = NULL;
        b->n_waiting = 0;
        b->ops.done(b, items, GB_ECLOSED, NULL, 0, b->arg);
    }
}

void gb_pg_batcher_free(gb_pg_batcher_t *b)
{
    if (b == NULL) {
        return;
    }
    GB_ASSERT(gb_pg_batcher_idle(b));
    gb_arena_dispose(&b->arena);
    free(b);
}

void gb_pg_batcher_write_metrics(const gb_pg_batcher_t *b, gb_buf_t *out)
{
    gb_buf_appendf(out,
                   "# HELP gb_ingest_batches_total Ingest transactions started.\n"
                   "# TYPE gb_ingest_batches_total counter\ngb_ingest_batches_total %llu\n"
                   "# HELP gb_ingest_batch_items_total Requests carried by ingest transactions.\n"
                   "# TYPE gb_ingest_batch_items_total counter\n"
                   "gb_ingest_batch_items_total %llu\n"
                   "# HELP gb_ingest_batch_failures_total Ingest transactions that failed.\n"
                   "# TYPE gb_ingest_batch_failures_total counter\n"
                   "gb_ingest_batch_failures_total %llu\n"
                   "# HELP gb_ingest_batch_largest Most requests in one transaction so far.\n"
                   "# TYPE gb_ingest_batch_largest gauge\ngb_ingest_batch_largest %zu\n"
                   "# HELP gb_ingest_waiting Requests waiting for the next transaction.\n"
                   "# TYPE gb_ingest_waiting gauge\ngb_ingest_waiting %zu\n",
                   (unsigned long long)b->batches, (unsigned long long)b->items_total,
                   (unsigned long long)b->failures, b->largest, b->n_waiting);
}
