/* batcher: group commit. Up to GB_PG_BATCH_SLOTS transactions are in flight, each in a slot of
 * its own (its query and the arena of its parameters); items that arrive meanwhile wait in a
 * FIFO, and the next transaction takes all of them but those its owner defers. The owner builds
 * the statements and hears the outcome, so the batcher knows nothing of what is stored. */
#include <stdlib.h>
#include <string.h>

#include "db/db.h"

typedef struct slot {
    gb_pg_batcher_t *b;
    gb_pg_batch_item_t *flight; /* the items of the transaction in flight */
    bool in_flight;
    gb_pg_query_t query;
    gb_arena_t arena;
} slot_t;

struct gb_pg_batcher {
    gb_pg_t *pg;
    gb_pg_batcher_ops_t ops;
    void *arg;
    size_t max_waiting;
    gb_pg_batch_item_t *wait_head; /* waiting for the next transaction */
    gb_pg_batch_item_t *wait_tail;
    size_t n_waiting;
    slot_t slots[GB_PG_BATCH_SLOTS];
    unsigned n_in_flight;
    bool closed;
    uint64_t batches;
    uint64_t items_total;
    uint64_t failures;
    uint64_t deferred_total;
    size_t largest;
};

static void start_next(gb_pg_batcher_t *b);

static void finish(slot_t *s, int err, PGresult *const *results, size_t nresults)
{
    gb_pg_batcher_t *b = s->b;
    gb_pg_batch_item_t *items = s->flight;
    s->flight = NULL;
    s->in_flight = false;
    b->n_in_flight--;
    if (err != 0) {
        b->failures++;
    }
    if (items != NULL) {
        b->ops.done(b, items, err, results, nresults, b->arg);
    }
    gb_arena_reset(&s->arena);
}

static void on_batch_done(gb_pg_query_t *q, int err, PGresult *const *results, size_t nresults)
{
    slot_t *s = gb_container_of(q, slot_t, query);
    finish(s, err, results, nresults);
    start_next(s->b);
}

static slot_t *free_slot(gb_pg_batcher_t *b)
{
    for (size_t i = 0; i < GB_PG_BATCH_SLOTS; i++) {
        if (!b->slots[i].in_flight) {
            return &b->slots[i];
        }
    }
    return NULL;
}

/* Puts the deferred items back at the head of the waiting list, in their order. */
static void requeue(gb_pg_batcher_t *b, gb_pg_batch_item_t *deferred)
{
    gb_pg_batch_item_t *last = NULL;
    size_t n = 0;
    for (gb_pg_batch_item_t *it = deferred; it != NULL; it = it->next) {
        last = it;
        n++;
    }
    if (last == NULL) {
        return;
    }
    last->next = b->wait_head;
    if (b->wait_head == NULL) {
        b->wait_tail = last;
    }
    b->wait_head = deferred;
    b->n_waiting += n;
    b->deferred_total += n;
}

static void start_next(gb_pg_batcher_t *b)
{
    slot_t *s;
    while (b->wait_head != NULL && (s = free_slot(b)) != NULL) {
        gb_pg_batch_item_t *items = b->wait_head, *deferred = NULL;
        b->wait_head = b->wait_tail = NULL;
        b->n_waiting = 0;
        s->in_flight = true;
        b->n_in_flight++;
        memset(&s->query, 0, sizeof(s->query));
        s->query.cb = on_batch_done;
        bool send = b->ops.build(b, &items, &deferred, &s->query, &s->arena, b->arg);
        requeue(b, deferred);
        size_t n = 0;
        for (gb_pg_batch_item_t *it = items; it != NULL; it = it->next) {
            n++;
        }
        s->flight = items;
        if (n > 0) {
            b->batches++;
            b->items_total += n;
            if (n > b->largest) {
                b->largest = n;
            }
        }
        if (!send) {
            finish(s, 0, NULL, 0);
            if (n == 0) {
                /* Every item waits for a transaction in flight: its end starts them. */
                break;
            }
            continue;
        }
        int rc = gb_pg_submit(b->pg, &s->query);
        if (rc < 0) {
            finish(s, rc, NULL, 0);
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
    for (size_t i = 0; i < GB_PG_BATCH_SLOTS; i++) {
        b->slots[i].b = b;
        gb_arena_init(&b->slots[i].arena);
    }
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
    return b->n_in_flight == 0 && b->wait_head == NULL;
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
    for (size_t i = 0; i < GB_PG_BATCH_SLOTS; i++) {
        gb_arena_dispose(&b->slots[i].arena);
    }
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
                   "# TYPE gb_ingest_waiting gauge\ngb_ingest_waiting %zu\n"
                   "# HELP gb_ingest_in_flight Ingest transactions in flight.\n"
                   "# TYPE gb_ingest_in_flight gauge\ngb_ingest_in_flight %u\n"
                   "# HELP gb_ingest_deferred_total Requests set aside for a later transaction "
                   "because their device was in one in flight.\n"
                   "# TYPE gb_ingest_deferred_total counter\ngb_ingest_deferred_total %llu\n",
                   (unsigned long long)b->batches, (unsigned long long)b->items_total,
                   (unsigned long long)b->failures, b->largest, b->n_waiting, b->n_in_flight,
                   (unsigned long long)b->deferred_total);
}
