/* bandwidth: the staging room's shared uplink as a fluid processor-sharing queue. Each active
 * download gets min(its NIC, the fair level), where the level is the max-min fair share of the
 * uplink (water-filling over the groups of equal NIC, in ascending order). Rates are constant
 * between changes of the active set, so the bytes served between two events are integrated
 * exactly and completion times follow in closed form (rounded up to the millisecond). */
#include <math.h>
#include <stdlib.h>

#include "internal.h"

/* Completion tolerance: a download is done when served is within this of its finish mark.
 * Rounding completion times up to the next millisecond always lands past the mark, so the
 * tolerance only absorbs floating-point error. */
static double tolerance(double finish)
{
    return 1e-3 + fabs(finish) * 1e-12;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y ? 1 : 0;
}

void gb_sim__bw_init(gb_sim__bw_t *bw, double uplink, double http_share, const double *caps,
                     uint32_t n_caps, gb_sim__bw_live_cb live, void *live_arg)
{
    double *sorted = gb_xmalloc((n_caps ? n_caps : 1) * sizeof(*sorted));
    uint32_t n = 0;

    for (uint32_t i = 0; i < n_caps; i++) {
        sorted[i] = caps[i];
    }
    qsort(sorted, n_caps, sizeof(*sorted), cmp_double);
    bw->groups = gb_xcalloc(n_caps ? n_caps : 1, sizeof(*bw->groups));
    for (uint32_t i = 0; i < n_caps; i++) {
        if (n > 0 && bw->groups[n - 1].cap == sorted[i]) {
            continue;
        }
        bw->groups[n++].cap = sorted[i];
    }
    free(sorted);
    bw->n_groups = n;
    bw->uplink = uplink;
    bw->http_share = http_share;
    bw->t = 0;
    bw->active = 0;
    bw->active_ms = 0;
    bw->live = live;
    bw->live_arg = live_arg;
}

void gb_sim__bw_dispose(gb_sim__bw_t *bw)
{
    for (uint32_t g = 0; g < bw->n_groups; g++) {
        free(bw->groups[g].marks);
    }
    free(bw->groups);
    bw->groups = NULL;
    bw->n_groups = 0;
}

uint32_t gb_sim__bw_group_of(const gb_sim__bw_t *bw, double cap)
{
    for (uint32_t g = 0; g < bw->n_groups; g++) {
        if (bw->groups[g].cap == cap) {
            return g;
        }
    }
    GB_ASSERT(!"cap not given to gb_sim__bw_init");
    return 0;
}

void gb_sim__bw_advance(gb_sim__bw_t *bw, int64_t t)
{
    if (t <= bw->t) {
        return;
    }
    double dt = (double)(t - bw->t);
    for (uint32_t g = 0; g < bw->n_groups; g++) {
        gb_sim__bw_group_t *gr = &bw->groups[g];
        if (gr->members > 0) {
            gr->served += gr->rate * dt;
        }
    }
    bw->active_ms += (double)bw->active * dt;
    bw->t = t;
}

void gb_sim__bw_rebalance(gb_sim__bw_t *bw)
{
    double left = bw->uplink;
    uint32_t n_left = bw->active;
    bool capped = bw->http_share > 0;

    for (uint32_t g = 0; g < bw->n_groups; g++) {
        gb_sim__bw_group_t *gr = &bw->groups[g];
        gr->version++;
        if (gr->members == 0) {
            gr->rate = 0;
            continue;
        }
        if (!capped) {
            gr->rate = gr->cap; /* every byte from LAN peers or the cache: the NIC decides */
            continue;
        }
        /* The fair level for the downloads not yet settled; groups come in ascending cap, so
         * once a group is above the level, every later one is too and they share it. */
        double level = left > 0 ? left / (bw->http_share * (double)n_left) : 0;
        if (gr->cap <= level) {
            gr->rate = gr->cap;
            left -= bw->http_share * gr->cap * (double)gr->members;
            n_left -= gr->members;
        } else {
            gr->rate = level;
        }
    }
}

static void mark_push(gb_sim__bw_group_t *gr, gb_sim__bw_mark_t m)
{
    if (gr->n_marks == gr->cap_marks) {
        gr->cap_marks = gr->cap_marks ? gr->cap_marks * 2 : 16;
        gr->marks = gb_xrealloc(gr->marks, gr->cap_marks * sizeof(*gr->marks));
    }
    size_t i = gr->n_marks++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (gr->marks[p].finish <= m.finish) {
            break;
        }
        gr->marks[i] = gr->marks[p];
        i = p;
    }
    gr->marks[i] = m;
}

static void mark_pop(gb_sim__bw_group_t *gr)
{
    gb_sim__bw_mark_t last = gr->marks[--gr->n_marks];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        double best = last.finish;
        if (l < gr->n_marks && gr->marks[l].finish < best) {
            m = l;
            best = gr->marks[l].finish;
        }
        if (r < gr->n_marks && gr->marks[r].finish < best) {
            m = r;
        }
        if (m == i) {
            break;
        }
        gr->marks[i] = gr->marks[m];
        i = m;
    }
    if (gr->n_marks > 0) {
        gr->marks[i] = last;
    }
}

/* Drops cancelled downloads from the top of the group's heap. */
static const gb_sim__bw_mark_t *live_top(gb_sim__bw_t *bw, gb_sim__bw_group_t *gr)
{
    while (gr->n_marks > 0 && !bw->live(bw->live_arg, gr->marks[0].dev, gr->marks[0].token)) {
        mark_pop(gr);
    }
    return gr->n_marks > 0 ? &gr->marks[0] : NULL;
}

double gb_sim__bw_add(gb_sim__bw_t *bw, int64_t t, uint32_t group, uint32_t dev, uint32_t token,
                      double bytes)
{
    gb_sim__bw_advance(bw, t);
    gb_sim__bw_group_t *gr = &bw->groups[group];
    double start = gr->served;
    gb_sim__bw_mark_t m = {start + bytes, dev, token};
    mark_push(gr, m);
    gr->members++;
    bw->active++;
    gb_sim__bw_rebalance(bw);
    return start;
}

void gb_sim__bw_cancel(gb_sim__bw_t *bw, int64_t t, uint32_t group)
{
    gb_sim__bw_advance(bw, t);
    GB_ASSERT(bw->groups[group].members > 0);
    bw->groups[group].members--;
    bw->active--;
    gb_sim__bw_rebalance(bw);
}

int64_t gb_sim__bw_next_finish(gb_sim__bw_t *bw, uint32_t group)
{
    gb_sim__bw_group_t *gr = &bw->groups[group];
    const gb_sim__bw_mark_t *m = gr->members > 0 ? live_top(bw, gr) : NULL;

    if (m == NULL) {
        return GB_SIM_NEVER;
    }
    double slack = gr->served + tolerance(m->finish) - m->finish;
    if (slack >= 0) {
        return bw->t;
    }
    double left = -slack;
    if (gr->rate <= 0) {
        return GB_SIM_NEVER; /* starved (an uplink of 0): it waits for a change */
    }
    double dt = ceil(left / gr->rate);
    if (dt > 1e15) {
        return GB_SIM_NEVER;
    }
    return bw->t + (int64_t)dt;
}

bool gb_sim__bw_take_finished(gb_sim__bw_t *bw, uint32_t group, gb_sim__bw_mark_t *mark)
{
    gb_sim__bw_group_t *gr = &bw->groups[group];
    const gb_sim__bw_mark_t *m = gr->members > 0 ? live_top(bw, gr) : NULL;

    /* The same test as gb_sim__bw_next_finish(), so a completion it announces is taken. */
    if (m == NULL || gr->served + tolerance(m->finish) - m->finish < 0) {
        return false;
    }
    *mark = *m;
    mark_pop(gr);
    gr->members--;
    bw->active--;
    return true;
}
