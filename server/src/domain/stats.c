/* stats: fleet statistics as pure functions over caller-owned arrays: nearest-rank percentiles,
 * counts by UTC hour, and the concurrency sweep over device-setup intervals. Nothing allocates
 * and nothing reads a clock, so the same arrays always give the same answers, and the API layer
 * can run them over the whole fleet with buffers it keeps from one computation to the next. */
#include <stdlib.h>

#include "domain/domain.h"

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int64_t gb_stats_nearest_rank(const int64_t *sorted, size_t n, unsigned pct)
{
    GB_ASSERT(n > 0);
    /* rank = ceil(pct * n / 100), split so that pct * n cannot overflow for any n. */
    size_t rank = (size_t)pct * (n / 100) + ((size_t)pct * (n % 100) + 99) / 100;
    if (rank < 1) {
        rank = 1;
    }
    if (rank > n) {
        rank = n;
    }
    return sorted[rank - 1];
}

void gb_stats_percentiles(int64_t *v, size_t n, gb_stats_pctl_t *out)
{
    out->count = n;
    if (n == 0) {
        out->p50 = out->p90 = out->p95 = out->p99 = out->max = 0;
        return;
    }
    qsort(v, n, sizeof(*v), cmp_i64);
    out->p50 = gb_stats_nearest_rank(v, n, 50);
    out->p90 = gb_stats_nearest_rank(v, n, 90);
    out->p95 = gb_stats_nearest_rank(v, n, 95);
    out->p99 = gb_stats_nearest_rank(v, n, 99);
    out->max = v[n - 1];
}

int64_t gb_stats_hour_floor(int64_t ms)
{
    /* C division truncates toward zero; a time before 1970 belongs to the hour below it. */
    int64_t rem = ms % GB_HOUR_MS;
    if (rem < 0) {
        rem += GB_HOUR_MS;
    }
    return ms - rem;
}

size_t gb_stats_by_hour(int64_t *times, size_t n, gb_stats_hour_t *out)
{
    size_t k = 0;
    if (n == 0) {
        return 0; /* times may be NULL then, and qsort's pointer must not be */
    }
    qsort(times, n, sizeof(*times), cmp_i64);
    for (size_t i = 0; i < n; i++) {
        int64_t h = gb_stats_hour_floor(times[i]);
        if (k > 0 && out[k - 1].hour_ms == h) {
            out[k - 1].count++;
        } else {
            out[k].hour_ms = h;
            out[k].count = 1;
            k++;
        }
    }
    return k;
}

static int cmp_step(const void *a, const void *b)
{
    const gb_stats_step_t *x = a, *y = b;
    return (x->at_ms > y->at_ms) - (x->at_ms < y->at_ms);
}

/* Index of the step at exactly at_ms. Every interval's ends are steps, so the search never
 * misses for the times it is asked about. */
static size_t find_step(const gb_stats_step_t *steps, size_t n, int64_t at_ms)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (steps[mid].at_ms <= at_ms) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    GB_ASSERT(steps[lo].at_ms == at_ms);
    return lo;
}

void gb_stats_concurrency(const gb_stats_interval_t *iv, size_t n, size_t n_out,
                          gb_stats_step_t *steps, double *out)
{
    GB_ASSERT(n_out <= n);
    if (n == 0) {
        return;
    }
    /* Each interval adds one at its start and removes one at its end; level holds that delta
     * until the steps are merged below. */
    for (size_t i = 0; i < n; i++) {
        int64_t s = iv[i].start_ms;
        int64_t e = iv[i].end_ms > s ? iv[i].end_ms : s;
        steps[2 * i] = (gb_stats_step_t){.at_ms = s, .level = 1, .area = 0};
        steps[2 * i + 1] = (gb_stats_step_t){.at_ms = e, .level = -1, .area = 0};
    }
    qsort(steps, 2 * n, sizeof(*steps), cmp_step);

    /* Merge the deltas of equal times into one step each (in place: the write index never
     * passes the read index), keeping the running count after the step and the area under the
     * count up to it. The order of deltas within one instant does not matter: the count there
     * lasts no time. Since an interval adds to the area only while it runs, the area is at most
     * the sum of the intervals' lengths. */
    size_t w = 0;
    int64_t level = 0;
    double area = 0;
    for (size_t r = 0; r < 2 * n; r++) {
        int64_t at = steps[r].at_ms, delta = steps[r].level;
        if (w > 0 && steps[w - 1].at_ms == at) {
            level += delta;
            steps[w - 1].level = level;
            continue;
        }
        if (w > 0) {
            area += (double)steps[w - 1].level * (double)(at - steps[w - 1].at_ms);
        }
        level += delta;
        steps[w++] = (gb_stats_step_t){.at_ms = at, .level = level, .area = area};
    }
    GB_ASSERT(level == 0);

    for (size_t i = 0; i < n_out; i++) {
        int64_t s = iv[i].start_ms;
        int64_t e = iv[i].end_ms > s ? iv[i].end_ms : s;
        size_t ks = find_step(steps, w, s);
        if (e == s) {
            /* An empty interval runs nowhere, so the level there does not hold it. */
            out[i] = (double)steps[ks].level + 1.0;
            continue;
        }
        size_t ke = find_step(steps, w, e);
        out[i] = (steps[ke].area - steps[ks].area) / (double)(e - s);
    }
}
