/* heap: the model's event queue, a binary min-heap on (time, insertion order). The insertion
 * order breaks ties, so two events due at the same millisecond always run in the order they
 * were scheduled and a run is repeatable bit for bit. Events are never removed early: owners
 * keep a token and ignore events whose token is stale. */
#include <stdlib.h>

#include "internal.h"

void gb_sim__heap_init(gb_sim__heap_t *h)
{
    h->v = NULL;
    h->n = 0;
    h->cap = 0;
    h->next_order = 0;
}

void gb_sim__heap_dispose(gb_sim__heap_t *h)
{
    free(h->v);
    gb_sim__heap_init(h);
}

static bool before(const gb_sim__event_t *a, const gb_sim__event_t *b)
{
    return a->t < b->t || (a->t == b->t && a->order < b->order);
}

void gb_sim__heap_push(gb_sim__heap_t *h, int64_t t, uint32_t kind, uint32_t dev, uint32_t token)
{
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 1024;
        h->v = gb_xrealloc(h->v, h->cap * sizeof(*h->v));
    }
    gb_sim__event_t e = {t, h->next_order++, dev, token, kind};
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!before(&e, &h->v[parent])) {
            break;
        }
        h->v[i] = h->v[parent];
        i = parent;
    }
    h->v[i] = e;
}

const gb_sim__event_t *gb_sim__heap_top(const gb_sim__heap_t *h)
{
    return h->n > 0 ? &h->v[0] : NULL;
}

bool gb_sim__heap_pop(gb_sim__heap_t *h, gb_sim__event_t *out)
{
    if (h->n == 0) {
        return false;
    }
    *out = h->v[0];
    gb_sim__event_t last = h->v[--h->n];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const gb_sim__event_t *best = &last;
        if (l < h->n && before(&h->v[l], best)) {
            m = l;
            best = &h->v[l];
        }
        if (r < h->n && before(&h->v[r], best)) {
            m = r;
        }
        if (m == i) {
            break;
        }
        h->v[i] = h->v[m];
        i = m;
    }
    if (h->n > 0) {
        h->v[i] = last;
    }
    return true;
}
