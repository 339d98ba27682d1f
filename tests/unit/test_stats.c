/* test_stats: the fleet statistics of domain/stats.c on hand-made data. Percentiles are nearest
 * rank (always one of the values), hours are UTC and floor toward the past, and the
 * concurrency sweep is checked on overlaps worked out by hand and against a brute-force
 * integration over random intervals. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "domain/domain.h"

#define EPS 1e-9

static void test_stats_percentiles_of_nothing_are_zero(void **state)
{
    gb_stats_pctl_t p;
    memset(&p, 0xff, sizeof(p));
    gb_stats_percentiles(NULL, 0, &p);
    assert_int_equal(p.count, 0);
    assert_int_equal(p.p50, 0);
    assert_int_equal(p.p99, 0);
    assert_int_equal(p.max, 0);
}

static void test_stats_one_value_is_every_percentile(void **state)
{
    int64_t v[] = {4200};
    gb_stats_pctl_t p;
    gb_stats_percentiles(v, 1, &p);
    assert_int_equal(p.count, 1);
    assert_int_equal(p.p50, 4200);
    assert_int_equal(p.p90, 4200);
    assert_int_equal(p.p95, 4200);
    assert_int_equal(p.p99, 4200);
    assert_int_equal(p.max, 4200);
}

static void test_stats_percentiles_are_nearest_rank(void **state)
{
    /* 1..100 shuffled: the p-th percentile is p itself. */
    int64_t v[100];
    for (int i = 0; i < 100; i++) {
        v[i] = (i * 37) % 100 + 1;
    }
    gb_stats_pctl_t p;
    gb_stats_percentiles(v, 100, &p);
    assert_int_equal(p.count, 100);
    assert_int_equal(p.p50, 50);
    assert_int_equal(p.p90, 90);
    assert_int_equal(p.p95, 95);
    assert_int_equal(p.p99, 99);
    assert_int_equal(p.max, 100);
    for (int i = 1; i < 100; i++) {
        assert_true(v[i - 1] <= v[i]); /* sorted in place */
    }

    /* Ten values: ranks ceil(5) = 5, ceil(9) = 9, ceil(9.5) = 10, ceil(9.9) = 10. Nothing is
     * interpolated: 95 and 99 are the largest value, not something between. */
    int64_t t[] = {100, 10, 90, 20, 80, 30, 70, 40, 60, 50};
    gb_stats_percentiles(t, 10, &p);
    assert_int_equal(p.p50, 50);
    assert_int_equal(p.p90, 90);
    assert_int_equal(p.p95, 100);
    assert_int_equal(p.p99, 100);
    assert_int_equal(p.max, 100);

    /* The textbook example: {15, 20, 35, 40, 50}. */
    int64_t w[] = {15, 20, 35, 40, 50};
    assert_int_equal(gb_stats_nearest_rank(w, 5, 5), 15);
    assert_int_equal(gb_stats_nearest_rank(w, 5, 30), 20);
    assert_int_equal(gb_stats_nearest_rank(w, 5, 40), 20);
    assert_int_equal(gb_stats_nearest_rank(w, 5, 50), 35);
    assert_int_equal(gb_stats_nearest_rank(w, 5, 100), 50);

    /* Two values with duplicates and a zero. */
    int64_t d[] = {0, 7, 7, 0};
    gb_stats_percentiles(d, 4, &p);
    assert_int_equal(p.p50, 0); /* rank 2 */
    assert_int_equal(p.p90, 7);
    assert_int_equal(p.max, 7);
}

static void test_stats_hours_floor_toward_the_past(void **state)
{
    int64_t t0 = 1795514400000; /* 2026-11-24T10:00:00Z */
    assert_int_equal(gb_stats_hour_floor(t0), t0);
    assert_int_equal(gb_stats_hour_floor(t0 + GB_HOUR_MS - 1), t0);
    assert_int_equal(gb_stats_hour_floor(t0 + GB_HOUR_MS), t0 + GB_HOUR_MS);
    assert_int_equal(gb_stats_hour_floor(0), 0);
    assert_int_equal(gb_stats_hour_floor(-1), -GB_HOUR_MS);
    assert_int_equal(gb_stats_hour_floor(-GB_HOUR_MS), -GB_HOUR_MS);
}

static void test_stats_by_hour_counts_each_hour_once(void **state)
{
    int64_t t0 = 1795514400000; /* 2026-11-24T10:00:00Z */
    int64_t h = GB_HOUR_MS;
    int64_t times[] = {t0 + h + 5, t0, t0 - h / 2, t0 + h - 1, t0 + 3 * h, t0 + 1234};
    gb_stats_hour_t out[GB_ARRAY_LEN(times)];
    size_t k = gb_stats_by_hour(times, GB_ARRAY_LEN(times), out);
    assert_int_equal(k, 4); /* hours without a time (t0 + 2h) are left out */
    assert_int_equal(out[0].hour_ms, t0 - h);
    assert_int_equal(out[0].count, 1);
    assert_int_equal(out[1].hour_ms, t0);
    assert_int_equal(out[1].count, 3);
    assert_int_equal(out[2].hour_ms, t0 + h);
    assert_int_equal(out[2].count, 1);
    assert_int_equal(out[3].hour_ms, t0 + 3 * h);
    assert_int_equal(out[3].count, 1);

    assert_int_equal(gb_stats_by_hour(times, 0, out), 0);
}

/* Runs the sweep over n intervals and returns the first n_out results in out. */
static void sweep(const gb_stats_interval_t *iv, size_t n, size_t n_out, double *out)
{
    gb_stats_step_t *steps = calloc(2 * n + 1, sizeof(*steps));
    gb_stats_concurrency(iv, n, n_out, steps, out);
    free(steps);
}

static void test_stats_concurrency_by_hand(void **state)
{
    double out[8];

    /* Alone: 1. */
    gb_stats_interval_t one[] = {{0, 10}};
    sweep(one, 1, 1, out);
    assert_float_equal(out[0], 1.0, EPS);

    /* Two identical intervals: 2 each. */
    gb_stats_interval_t same[] = {{100, 200}, {100, 200}};
    sweep(same, 2, 2, out);
    assert_float_equal(out[0], 2.0, EPS);
    assert_float_equal(out[1], 2.0, EPS);

    /* Half overlap: 5 ms alone and 5 ms together, (5 * 1 + 5 * 2) / 10 = 1.5 each. */
    gb_stats_interval_t half[] = {{0, 10}, {5, 15}};
    sweep(half, 2, 2, out);
    assert_float_equal(out[0], 1.5, EPS);
    assert_float_equal(out[1], 1.5, EPS);

    /* Touching ends do not overlap: 1 each. */
    gb_stats_interval_t touch[] = {{0, 10}, {10, 20}};
    sweep(touch, 2, 2, out);
    assert_float_equal(out[0], 1.0, EPS);
    assert_float_equal(out[1], 1.0, EPS);

    /* A long one with two short ones inside: (100 + 10 + 10) / 100 = 1.2 for the long one, 2
     * for each short one. */
    gb_stats_interval_t nest[] = {{0, 100}, {10, 20}, {30, 40}};
    sweep(nest, 3, 3, out);
    assert_float_equal(out[0], 1.2, EPS);
    assert_float_equal(out[1], 2.0, EPS);
    assert_float_equal(out[2], 2.0, EPS);

    /* A staircase: A [0,30), B [10,40), C [20,50), D [20,25).
     * A: 0-10 one, 10-20 two, 20-25 four, 25-30 three: 10 + 20 + 20 + 15 = 65 / 30.
     * B: 10-20 two, 20-25 four, 25-30 three, 30-40 two: 20 + 20 + 15 + 20 = 75 / 30.
     * C: 20-25 four, 25-30 three, 30-40 two, 40-50 one: 20 + 15 + 20 + 10 = 65 / 30.
     * D: four throughout. */
    gb_stats_interval_t stair[] = {{0, 30}, {10, 40}, {20, 50}, {20, 25}};
    sweep(stair, 4, 4, out);
    assert_float_equal(out[0], 65.0 / 30.0, EPS);
    assert_float_equal(out[1], 75.0 / 30.0, EPS);
    assert_float_equal(out[2], 65.0 / 30.0, EPS);
    assert_float_equal(out[3], 4.0, EPS);
}

static void test_stats_concurrency_edges(void **state)
{
    double out[4];

    /* An empty interval inside another: the other runs there, plus itself: 2. The other does not
     * notice it (it lasts no time). */
    gb_stats_interval_t inside[] = {{5, 5}, {0, 10}};
    sweep(inside, 2, 2, out);
    assert_float_equal(out[0], 2.0, EPS);
    assert_float_equal(out[1], 1.0, EPS);

    /* At the instant one ends and another starts, only the starting one runs. */
    gb_stats_interval_t at_end[] = {{10, 10}, {0, 10}};
    sweep(at_end, 2, 1, out);
    assert_float_equal(out[0], 1.0, EPS);
    gb_stats_interval_t at_start[] = {{10, 10}, {10, 20}};
    sweep(at_start, 2, 1, out);
    assert_float_equal(out[0], 2.0, EPS);

    /* An end before the start is taken as empty. */
    gb_stats_interval_t back[] = {{50, 40}, {0, 100}};
    sweep(back, 2, 2, out);
    assert_float_equal(out[0], 2.0, EPS);
    assert_float_equal(out[1], 1.0, EPS);

    /* Intervals past n_out count for the others but get no result of their own. */
    gb_stats_interval_t tail[] = {{0, 10}, {0, 10}, {0, 10}};
    out[1] = -1;
    sweep(tail, 3, 1, out);
    assert_float_equal(out[0], 3.0, EPS);
    assert_float_equal(out[1], -1.0, EPS);

    /* Nothing at all. */
    gb_stats_concurrency(NULL, 0, 0, NULL, NULL);

    /* Real device times (about 1.8e12 ms) lose nothing: two 40-minute runs overlapping by 10. */
    int64_t t0 = 1795514400000, m = 60000;
    gb_stats_interval_t real[] = {{t0, t0 + 40 * m}, {t0 + 30 * m, t0 + 70 * m}};
    sweep(real, 2, 2, out);
    assert_float_equal(out[0], 50.0 / 40.0, EPS);
    assert_float_equal(out[1], 50.0 / 40.0, EPS);
}

/* The definition, integrated segment by segment over every distinct end: O(n^2). */
static double brute_concurrency(const gb_stats_interval_t *iv, size_t n, size_t i)
{
    int64_t s = iv[i].start_ms, e = iv[i].end_ms > s ? iv[i].end_ms : s;
    if (e == s) {
        double c = 1;
        for (size_t j = 0; j < n; j++) {
            if (iv[j].start_ms <= s && s < iv[j].end_ms) {
                c++;
            }
        }
        return c;
    }
    /* Every end inside [s, e) starts a segment of constant count. */
    int64_t *cuts = calloc(2 * n + 2, sizeof(*cuts));
    size_t k = 0;
    cuts[k++] = s;
    cuts[k++] = e;
    for (size_t j = 0; j < n; j++) {
        int64_t ends[2] = {iv[j].start_ms, iv[j].end_ms};
        for (int x = 0; x < 2; x++) {
            if (ends[x] > s && ends[x] < e) {
                cuts[k++] = ends[x];
            }
        }
    }
    for (size_t a = 1; a < k; a++) { /* insertion sort: the lists are short */
        for (size_t b = a; b > 0 && cuts[b - 1] > cuts[b]; b--) {
            int64_t tmp = cuts[b];
            cuts[b] = cuts[b - 1];
            cuts[b - 1] = tmp;
        }
    }
    double area = 0;
    for (size_t a = 0; a + 1 < k; a++) {
        int64_t lo = cuts[a], hi = cuts[a + 1];
        int c = 0;
        for (size_t j = 0; j < n; j++) {
            if (iv[j].start_ms <= lo && lo < iv[j].end_ms) {
                c++;
            }
        }
        area += (double)c * (double)(hi - lo);
    }
    free(cuts);
    return area / (double)(e - s);
}

static void test_stats_concurrency_matches_brute_force(void **state)
{
    uint64_t x = 7;
    for (int round = 0; round < 50; round++) {
        size_t n = 1 + (size_t)(round * 3 % 40);
        gb_stats_interval_t iv[40];
        for (size_t i = 0; i < n; i++) {
            /* A small time range makes ties, shared ends and empty intervals common. */
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            int64_t s = (int64_t)((x >> 33) % 60);
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            int64_t len = (int64_t)((x >> 33) % 30) - 3; /* some empty or backwards */
            iv[i].start_ms = s;
            iv[i].end_ms = s + len;
        }
        double out[40];
        sweep(iv, n, n, out);
        for (size_t i = 0; i < n; i++) {
            double want = brute_concurrency(iv, n, i);
            if (out[i] < want - EPS || out[i] > want + EPS) {
                fail_msg("round %d interval %zu [%lld, %lld): sweep %.9f, brute force %.9f", round,
                         i, (long long)iv[i].start_ms, (long long)iv[i].end_ms, out[i], want);
            }
            assert_true(out[i] >= 1.0 - EPS);
        }
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stats_percentiles_of_nothing_are_zero),
        cmocka_unit_test(test_stats_one_value_is_every_percentile),
        cmocka_unit_test(test_stats_percentiles_are_nearest_rank),
        cmocka_unit_test(test_stats_hours_floor_toward_the_past),
        cmocka_unit_test(test_stats_by_hour_counts_each_hour_once),
        cmocka_unit_test(test_stats_concurrency_by_hand),
        cmocka_unit_test(test_stats_concurrency_edges),
        cmocka_unit_test(test_stats_concurrency_matches_brute_force),
    };
    return cmocka_run_group_tests_name("stats", tests, NULL, NULL);
}
