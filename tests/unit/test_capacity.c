/* test_capacity: the capacity model of domain/capacity.c. The fit recovers the parameters of
 * synthetic rooms built here from the model's facts (waves of devices sharing an uplink, NIC
 * caps, noise, outliers, failed devices); predictions match closed forms worked out by hand;
 * the recommendation holds against brute force; degenerate inputs give clear errors; and a
 * device's state becomes the sample it should. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "domain/domain.h"

#define T0      1795510800000LL /* 2026-11-24T09:00:00Z */
#define S       1000LL          /* ms per second */
#define MBIT    125000.0        /* bytes/s per Mbit/s */
#define REL_EPS 1e-9

/* A reproducible noise in [-1, 1] (a fixed LCG: the same rooms on every run). */
static double noise(uint64_t *state)
{
    *state = *state * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*state >> 11) / 4503599627370496.0 - 1.0;
}

static void assert_near(double got, double want, double rel, const char *what)
{
    if (!(fabs(got - want) <= rel * fabs(want) + 1e-9)) {
        fail_msg("%s: got %.6f, want %.6f (within %.1f%%)", what, got, want, 100 * rel);
    }
}

/* A green device: first stage at start_ms, device setup from setup_ms for download_s + inst_s,
 * green at its end, resealed hold_s later. */
static gb_cap_sample_t green(int64_t start_ms, int64_t setup_ms, double download_s, double inst_s,
                             double bytes, double hold_s)
{
    gb_cap_sample_t s;
    memset(&s, 0, sizeof(s));
    s.outcome = GB_CAP_GREEN;
    s.bench_ms = s.start_ms = start_ms;
    s.setup_start_ms = setup_ms;
    s.setup_end_ms = setup_ms + llround((download_s + inst_s) * S);
    s.result_ms = s.setup_end_ms;
    s.release_ms = s.result_ms + llround(hold_s * S);
    s.prev_setup_ms = s.prev_setup_end_ms = GB_TIME_NONE;
    s.reset_ms = -1;
    s.setup_bytes = bytes;
    s.download_s = download_s;
    s.lan_share = 0;
    s.esp_timeout_min = 60;
    s.attempts = 1;
    return s;
}

static gb_cap_sample_t red(int64_t start_ms, double block_s)
{
    gb_cap_sample_t s;
    memset(&s, 0, sizeof(s));
    s.outcome = GB_CAP_RED;
    s.bench_ms = s.start_ms = start_ms;
    s.setup_start_ms = s.setup_end_ms = GB_TIME_NONE;
    s.prev_setup_ms = s.prev_setup_end_ms = GB_TIME_NONE;
    s.result_ms = s.release_ms = start_ms + llround(block_s * S);
    s.reset_ms = -1;
    s.attempts = 1;
    return s;
}

/* ---- the fit ---- */

/* Waves of 1 to 8 devices start device setup together; each wave's devices share the uplink
 * (capacity U / 0.8 in total bytes: peers serve a fifth), so each download takes c * B / C.
 * Single devices on a 100 Mbit/s NIC are capped by it instead. Preparation and installs get
 * +-10% noise, the measured download times +-5% (an agent samples every 30 s); two devices
 * downloaded five times slower than their share (bad cables), five failed before device setup, one
 * timed out. */
typedef struct room {
    gb_cap_sample_t s[256];
    size_t n;
    double fixed_sum;
    size_t greens;
} room_t;

static void build_room(room_t *r, double uplink_mbps, double bytes)
{
    const double share = 0.8, capacity = uplink_mbps * MBIT / share;
    uint64_t rng = 42;
    int64_t t = T0;
    memset(r, 0, sizeof(*r));
    for (int wave = 0; wave < 40; wave++, t += 20000 * S) {
        int c = wave % 8 + 1;
        bool capped = wave % 10 == 9; /* a lone device on a USB 2.0 adapter */
        bool slow = wave == 13 || wave == 27;
        if (capped || slow) {
            c = 1;
        }
        for (int i = 0; i < c; i++) {
            double pre = 900 * (1 + 0.1 * noise(&rng)), inst = 1000 * (1 + 0.1 * noise(&rng));
            double rate = capacity / c;
            if (capped && rate > 100 * MBIT) {
                rate = 100 * MBIT;
            }
            double dl = bytes / rate * (slow ? 5 : 1) * (1 + 0.05 * noise(&rng));
            gb_cap_sample_t *s = &r->s[r->n++];
            *s = green(t - llround(pre * S), t, dl, inst, bytes, 140);
            s->lan_share = 1 - share;
            s->link_mbps = capped ? 100 : 1000;
            r->fixed_sum += pre + inst;
            r->greens++;
        }
    }
    for (int i = 0; i < 5; i++, t += 5000 * S) {
        r->s[r->n++] = red(t, 600);
    }
    /* A timeout alone in its own hour: load for the replay, never a point. */
    gb_cap_sample_t *x = &r->s[r->n++];
    *x = green(t, t + 900 * S, 3000, 600, bytes / 2, 0);
    x->outcome = GB_CAP_ESP_TIMEOUT;
    x->lan_share = 1 - share;
    x->release_ms = x->result_ms;
}

static void test_capacity_fit_recovers_known_parameters(void **state)
{
    static room_t r;
    gb_cap_fit_t f;
    gb_error_t err;
    /* Two rooms: one where the uplink binds hard, one where it rarely does. */
    const double uplinks[] = {100, 400};
    for (size_t k = 0; k < GB_ARRAY_LEN(uplinks); k++) {
        build_room(&r, uplinks[k], 2e9);
        gb_cap_fit_init(&f);
        gb_error_clear(&err);
        assert_int_equal(gb_cap_fit(&f, r.s, r.n, &err), 0);
        assert_true(f.uplink_known);
        assert_near(f.uplink_mbps, uplinks[k], 0.05, "uplink");
        assert_near(f.fixed_s, r.fixed_sum / (double)r.greens, 0.05, "fixed part");
        assert_near(f.pre_setup_s, 900, 0.05, "to device setup");
        assert_near(f.setup_fixed_s, 1000, 0.05, "setup without downloads");
        assert_near(f.payload_mb, 2000, 0.05, "payload");
        assert_near(f.peer_share, 0.2, 0.05, "peer share");
        assert_near(f.reseal_s, 140, 0.05, "reseal");
        assert_int_equal(f.samples, r.greens);
        assert_int_equal(f.uplink_samples, r.greens);
        assert_int_equal(f.red, 5);
        assert_int_equal(f.esp_timeouts, 1);
        assert_int_equal(f.devices, r.n);
        assert_near(f.red_share, 5.0 / (double)(r.greens + 6), REL_EPS, "red share");
        /* Where the uplink binds, download times vary eightfold with the waves and the model
         * explains most of the per-device time; where it hardly binds, the noise of the fixed
         * work is most of what varies. Either way it misses by about that noise. */
        assert_true(f.r2 > (k == 0 ? 0.8 : 0.2));
        assert_true(f.mae_s < 120);
        gb_cap_fit_dispose(&f);
    }
}

static void test_capacity_fit_ignores_outliers(void **state)
{
    static room_t r;
    gb_cap_fit_t clean, dirty;
    gb_error_t err;
    build_room(&r, 150, 1.5e9);
    gb_cap_fit_init(&clean);
    gb_cap_fit_init(&dirty);
    assert_int_equal(gb_cap_fit(&clean, r.s, r.n, &err), 0);
    /* A third of the waves' devices report downloads ten times too long (a broken agent
     * clock): Huber's weights keep the uplink within 5%. A plain mean of log ratios would be
     * off by a factor of two. */
    for (size_t i = 0; i < r.n; i += 3) {
        r.s[i].download_s *= 10;
    }
    assert_int_equal(gb_cap_fit(&dirty, r.s, r.n, &err), 0);
    assert_near(clean.uplink_mbps, 150, 0.05, "uplink, clean");
    assert_near(dirty.uplink_mbps, 150, 0.1, "uplink, a third corrupted");
    gb_cap_fit_dispose(&clean);
    gb_cap_fit_dispose(&dirty);
}

/* K slots, devices in turn on each: changeover, 900 s to device setup, 1000 s of setup without
 * downloads, 100 s to reseal, exact. */
static size_t bench(gb_cap_sample_t *s, int slots, int per_slot, double changeover)
{
    static char names[16][16];
    size_t n = 0;
    for (int k = 0; k < slots; k++) {
        snprintf(names[k], sizeof(names[k]), "A-%d", k + 1);
        int64_t t = T0 + llround(changeover * S);
        for (int i = 0; i < per_slot; i++) {
            s[n] = green(t, t + 900 * S, 0, 1000, 0, 100);
            s[n].slot = names[k];
            t = s[n++].release_ms + llround(changeover * S);
        }
    }
    return n;
}

static void test_capacity_fit_measures_the_bench(void **state)
{
    gb_cap_sample_t s[64];
    gb_cap_fit_t f;
    gb_error_t err;
    size_t n = bench(s, 4, 5, 120);
    gb_cap_fit_init(&f);
    assert_int_equal(gb_cap_fit(&f, s, n, &err), 0);
    assert_int_equal(f.slots, 4);
    assert_int_equal(f.changeovers, 16);
    assert_near(f.changeover_s, 120, REL_EPS, "changeover");
    assert_near(f.reseal_s, 100, REL_EPS, "reseal");
    assert_near(f.fixed_s, 1900, REL_EPS, "fixed");
    assert_false(f.uplink_known); /* nothing was downloaded */
    assert_int_equal(f.uplink_samples, 0);
    assert_near(f.payload_mb, 0, REL_EPS, "payload");
    gb_cap_fit_dispose(&f);

    /* Without slot names, the bench size is the most devices on it at once. */
    for (size_t i = 0; i < n; i++) {
        s[i].slot = NULL;
    }
    assert_int_equal(gb_cap_fit(&f, s, n, &err), 0);
    assert_int_equal(f.slots, 4);
    assert_int_equal(f.changeovers, 0);
    gb_cap_fit_dispose(&f);
}

/* ---- degenerate inputs ---- */

static void assert_insufficient(const gb_cap_sample_t *s, size_t n, const char *says)
{
    gb_cap_fit_t f;
    gb_error_t err;
    gb_cap_fit_init(&f);
    gb_error_clear(&err);
    assert_int_equal(gb_cap_fit(&f, s, n, &err), GB_EINVAL);
    assert_int_equal(err.status, 422);
    assert_string_equal(err.code, "insufficient_data");
    if (strstr(err.message, says) == NULL) {
        fail_msg("message \"%s\" lacks \"%s\"", err.message, says);
    }
    assert_int_equal(f.n_green, 0);
    /* An unfitted model answers no question. */
    gb_cap_query_t q;
    gb_cap_prediction_t p;
    gb_cap_query_init(&q);
    assert_int_equal(gb_cap_predict(&f, &q, &p, &err), GB_EINVAL);
    assert_int_equal(err.status, 422);
    gb_cap_fit_dispose(&f);
}

static void test_capacity_no_samples_is_an_error(void **state)
{
    assert_insufficient(NULL, 0, "devices 0: green 0");
}

static void test_capacity_one_sample_is_an_error(void **state)
{
    gb_cap_sample_t s = green(T0, T0 + 900 * S, 100, 1000, 1e9, 100);
    assert_insufficient(&s, 1, "devices 1: green 1 (1 with measured downloads)");
}

static void test_capacity_all_failed_is_an_error(void **state)
{
    gb_cap_sample_t s[10];
    for (int i = 0; i < 10; i++) {
        s[i] = red(T0 + (int64_t)i * 1000 * S, 600);
    }
    assert_insufficient(s, 10, "green 0 (0 with measured downloads), red 10");
    /* Devices still running count as not finished, not as samples. */
    for (int i = 0; i < 10; i++) {
        s[i].outcome = GB_CAP_OPEN;
    }
    assert_insufficient(s, 10, "not finished 10");
}

static void test_capacity_zero_bandwidth_is_an_error(void **state)
{
    gb_cap_sample_t s[10];
    for (int i = 0; i < 10; i++) {
        s[i] = green(T0, T0 + 900 * S, 300, 1000, 0, 100); /* 300 s of downloading, 0 bytes */
    }
    assert_insufficient(s, 10, "zero bandwidth");
    for (int i = 0; i < 10; i++) {
        s[i] = green(T0, T0 + 900 * S, 0, 1000, 1e9, 100); /* 1 GB in no time */
    }
    assert_insufficient(s, 10, "moved bytes in no time");
    /* Too few devices measured a download: the uplink fit needs five. */
    for (int i = 0; i < 10; i++) {
        s[i] = green(T0, T0 + 900 * S, i < 3 ? 100 : 0, 1000, i < 3 ? 1e9 : 0, 100);
    }
    assert_insufficient(s, 10, "green 10 (3 with measured downloads)");
}

static void assert_bad_query(const gb_cap_fit_t *f, const gb_cap_query_t *q, const char *field)
{
    gb_cap_prediction_t p;
    gb_error_t err;
    gb_error_clear(&err);
    assert_int_equal(gb_cap_predict(f, q, &p, &err), GB_EINVAL);
    assert_int_equal(err.status, 400);
    assert_string_equal(err.code, "invalid_query");
    assert_string_equal(err.field, field);
}

static void test_capacity_bad_queries_name_their_field(void **state)
{
    gb_cap_sample_t s[64];
    gb_cap_fit_t f;
    gb_cap_query_t q;
    gb_error_t err;
    gb_cap_fit_init(&f);
    assert_int_equal(gb_cap_fit(&f, s, bench(s, 4, 5, 120), &err), 0);

    gb_cap_query_init(&q);
    q.uplink_mbps = 0; /* zero bandwidth: no download could ever finish */
    assert_bad_query(&f, &q, "uplink_mbps");
    gb_cap_query_init(&q);
    q.devices = GB_CAP_DEVICES_MAX + 1;
    assert_bad_query(&f, &q, "devices");
    gb_cap_query_init(&q);
    q.slots = GB_CAP_SLOTS_MAX + 1;
    assert_bad_query(&f, &q, "slots");
    gb_cap_query_init(&q);
    q.peer_share = 0.7;
    q.cache_share = 0.4;
    assert_bad_query(&f, &q, "cache_share");
    gb_cap_query_init(&q);
    q.peer_share = 1.5;
    assert_bad_query(&f, &q, "peer_share");
    gb_cap_query_init(&q);
    q.esp_timeout_min = GB_ESP_TIMEOUT_MAX_MIN + 1;
    assert_bad_query(&f, &q, "esp_timeout_min");
    gb_cap_query_init(&q);
    q.payload_mb = 1e8;
    assert_bad_query(&f, &q, "payload_mb");
    /* These devices downloaded nothing: a payload needs an uplink to plan with. */
    gb_cap_query_init(&q);
    q.payload_mb = 1000;
    assert_bad_query(&f, &q, "uplink_mbps");
    gb_cap_fit_dispose(&f);
}

/* ---- predictions against closed forms ---- */

static gb_cap_prediction_t predict(const gb_cap_fit_t *f, gb_cap_query_t q)
{
    gb_cap_prediction_t p;
    gb_error_t err;
    gb_error_clear(&err);
    if (gb_cap_predict(f, &q, &p, &err) != 0) {
        fail_msg("predict: %s", err.message);
    }
    return p;
}

static void test_capacity_predicts_rounds_of_fixed_work(void **state)
{
    gb_cap_sample_t s[64];
    gb_cap_fit_t f;
    gb_cap_query_t q;
    gb_error_t err;
    gb_cap_fit_init(&f);
    assert_int_equal(gb_cap_fit(&f, s, bench(s, 3, 4, 120), &err), 0);
    /* 10 devices on 3 slots: one slot takes 4 in turn. A stay is 120 + 900 + 1000 + 100 s; the
     * last green screen comes 3 stays and 2020 s after the room opens. */
    gb_cap_query_init(&q);
    q.devices = 10;
    q.slots = 3;
    gb_cap_prediction_t p = predict(&f, q);
    assert_near(p.makespan_s, 3 * 2120 + 2020, REL_EPS, "makespan");
    assert_near(p.per_device_s, 1900, REL_EPS, "per device");
    assert_near(p.devices_per_hour, 10 * 3600.0 / (3 * 2120 + 2020), REL_EPS, "devices/h");
    assert_int_equal(p.green, 10);
    assert_int_equal(p.esp_timeouts, 0);
    /* Defaults come from the fit: 12 devices on the 3 slots seen. */
    gb_cap_query_init(&q);
    p = predict(&f, q);
    assert_int_equal(p.devices, 12);
    assert_int_equal(p.slots, 3);
    assert_near(p.makespan_s, 3 * 2120 + 2020, REL_EPS, "makespan by default");
    gb_cap_fit_dispose(&f);
}

static void test_capacity_predicts_a_shared_uplink(void **state)
{
    gb_cap_sample_t s[64];
    gb_cap_fit_t f;
    gb_cap_query_t q;
    gb_error_t err;
    gb_cap_fit_init(&f);
    size_t n = bench(s, 4, 2, 120);
    assert_int_equal(gb_cap_fit(&f, s, n, &err), 0);
    /* 4 devices at once download 1000 MB each over 80 Mbit/s (10 MB/s): each gets a quarter,
     * so 400 s, all together. */
    gb_cap_query_init(&q);
    q.devices = 4;
    q.slots = 4;
    q.payload_mb = 1000;
    q.uplink_mbps = 80;
    q.peer_share = 0;
    q.cache_share = 0;
    gb_cap_prediction_t p = predict(&f, q);
    assert_near(p.download_s, 400, 1e-6, "download");
    assert_near(p.per_device_s, 900 + 400 + 1000, 1e-6, "per device");
    assert_near(p.makespan_s, 120 + 2300, 1e-6, "makespan");
    assert_near(p.uplink_busy, 400 / 2420.0, 1e-6, "uplink busy");
    /* Peers serve half: half the bytes cross the uplink. */
    q.peer_share = 0.5;
    p = predict(&f, q);
    assert_near(p.download_s, 200, 1e-6, "download with peers");
    /* A cache serves the rest: nothing crosses it, and with no NIC known downloads take no
     * time. */
    q.cache_share = 0.5;
    p = predict(&f, q);
    assert_near(p.download_s, 0, 1e-6, "download from peers and cache");
    /* One device, capped by its 100 Mbit/s NIC under a 1 Gbit/s uplink: 80 s for 1000 MB. */
    for (size_t i = 0; i < n; i++) {
        s[i].link_mbps = 100;
    }
    gb_cap_fit_dispose(&f);
    assert_int_equal(gb_cap_fit(&f, s, n, &err), 0);
    gb_cap_query_init(&q);
    q.devices = 1;
    q.slots = 1;
    q.payload_mb = 1000;
    q.uplink_mbps = 1000;
    q.peer_share = 0;
    q.cache_share = 0;
    p = predict(&f, q);
    assert_near(p.download_s, 80, 1e-6, "download at the NIC's speed");
    /* Two of them on 150 Mbit/s: the uplink's fair share (75) is below the NIC, so 1000 MB
     * take 106.7 s each. */
    q.devices = 2;
    q.slots = 2;
    q.uplink_mbps = 150;
    p = predict(&f, q);
    assert_near(p.download_s, 1000 * 8 / 75.0, 1e-6, "download at the fair share");
    gb_cap_fit_dispose(&f);
}

static void test_capacity_predicts_esp_timeouts(void **state)
{
    gb_cap_sample_t s[64];
    gb_cap_fit_t f;
    gb_cap_query_t q;
    gb_error_t err;
    gb_cap_fit_init(&f);
    size_t n = bench(s, 4, 2, 120);
    assert_int_equal(gb_cap_fit(&f, s, n, &err), 0);
    /* 4 devices share 8 Mbit/s for 1000 MB each: 4000 s of downloading, past the 60 minutes.
     * Each is cut off at 3600 s of device setup and, with one attempt seen, set aside red. */
    gb_cap_query_init(&q);
    q.devices = 4;
    q.slots = 4;
    q.payload_mb = 1000;
    q.uplink_mbps = 8;
    q.peer_share = 0;
    q.cache_share = 0;
    gb_cap_prediction_t p = predict(&f, q);
    assert_int_equal(p.esp_timeouts, 4);
    assert_int_equal(p.red, 4);
    assert_int_equal(p.green, 0);
    assert_near(p.per_device_s, 900 + 3600, 1e-6, "per device");
    assert_near(p.makespan_s, 120 + 900 + 3600, 1e-6, "makespan");
    assert_near(p.devices_per_hour, 0, REL_EPS, "devices/h");
    /* Two hours of ESP timeout: 4000 s of downloads and 1000 s of installs fit. */
    q.esp_timeout_min = 120;
    p = predict(&f, q);
    assert_int_equal(p.esp_timeouts, 0);
    assert_int_equal(p.green, 4);
    assert_near(p.per_device_s, 900 + 4000 + 1000, 1e-6, "per device");
    /* A room that retried: the timed-out attempt is reset (300 s) and run again; the second
     * attempt downloads alone once the others are done. */
    for (size_t i = 0; i < n; i++) {
        s[i].attempts = 2;
        s[i].reset_ms = 300 * S;
    }
    gb_cap_fit_dispose(&f);
    assert_int_equal(gb_cap_fit(&f, s, n, &err), 0);
    q.devices = 1;
    q.slots = 1;
    q.esp_timeout_min = 0;
    q.uplink_mbps = 1; /* 1000 MB at 1 Mbit/s: 8000 s, past any 60 minutes */
    p = predict(&f, q);
    assert_int_equal(p.esp_timeouts, 2); /* both attempts */
    assert_int_equal(p.red, 1);
    assert_near(p.makespan_s, 120 + 900 + 3600 + 300 + 900 + 3600, 1e-6, "makespan, retried");
    gb_cap_fit_dispose(&f);
}

static void test_capacity_plan_recommends_the_fewest_slots(void **state)
{
    gb_cap_sample_t s[64];
    gb_cap_fit_t f;
    gb_cap_query_t q;
    gb_error_t err;
    static gb_cap_plan_t plan, again;
    uint64_t rng = 7;
    size_t n = bench(s, 4, 5, 120);
    /* Some spread, so that slots desynchronise as in a real room. */
    for (size_t i = 0; i < n; i++) {
        s[i].setup_end_ms += llround(200 * noise(&rng) * S);
        s[i].result_ms = s[i].setup_end_ms;
        s[i].release_ms = s[i].result_ms + 100 * S;
    }
    gb_cap_fit_init(&f);
    assert_int_equal(gb_cap_fit(&f, s, n, &err), 0);
    gb_cap_query_init(&q);
    q.devices = 60;
    q.slots = 10;
    q.payload_mb = 2000;
    q.uplink_mbps = 100;
    q.peer_share = 0.2;
    q.cache_share = 0;
    assert_int_equal(gb_cap_plan(&f, &q, &plan, &err), 0);

    /* The chart climbs in slots, holds the query's count, and its best without timeouts is
     * what the recommendation aims at. */
    double best = 0;
    bool has_query = false, has_rec = false;
    for (size_t i = 0; i < plan.n_chart; i++) {
        if (i > 0) {
            assert_true(plan.chart[i].slots > plan.chart[i - 1].slots);
        }
        has_query = has_query || plan.chart[i].slots == 10;
        has_rec = has_rec || plan.chart[i].slots == plan.recommended_slots;
        if (plan.chart[i].esp_timeouts == 0 && plan.chart[i].devices_per_hour > best) {
            best = plan.chart[i].devices_per_hour;
        }
    }
    assert_true(has_query);
    assert_true(has_rec);
    assert_true(plan.recommended_slots > 1);
    /* Against brute force: the recommended count reaches 95% of the best with no timeout; one
     * slot fewer does not. */
    gb_cap_query_t k = q;
    k.slots = plan.recommended_slots;
    gb_cap_prediction_t at = predict(&f, k);
    assert_int_equal(at.esp_timeouts, 0);
    assert_true(at.devices_per_hour >= 0.95 * best);
    k.slots = plan.recommended_slots - 1;
    gb_cap_prediction_t below = predict(&f, k);
    assert_false(below.esp_timeouts == 0 && below.devices_per_hour >= 0.95 * best);

    /* 2000 MB at 80% over 100 Mbit/s: 128 s of uplink per device, 28 devices/h at most, while
     * 10 slots of 2120 s stays could do 17: installs bind. Twice the slots help more than twice
     * the uplink. */
    assert_false(plan.bandwidth_bound);
    q.slots = 40;
    assert_int_equal(gb_cap_plan(&f, &q, &plan, &err), 0);
    assert_true(plan.bandwidth_bound);
    assert_true(plan.n_what_if == 4);
    assert_string_equal(gb_cap_change_id(plan.what_if[0].change), "peer_share");
    /* More peers, a cache or more uplink all help a bandwidth-bound room. */
    for (size_t i = 0; i < 3; i++) {
        assert_true(plan.what_if[i].prediction.devices_per_hour > plan.prediction.devices_per_hour);
    }
    assert_true(plan.n_explain >= 4);
    assert_non_null(strstr(plan.explain[1], "Bandwidth-bound"));

    /* The same question, the same answer. */
    assert_int_equal(gb_cap_plan(&f, &q, &again, &err), 0);
    assert_int_equal(again.recommended_slots, plan.recommended_slots);
    assert_int_equal(again.n_chart, plan.n_chart);
    for (size_t i = 0; i < plan.n_chart; i++) {
        assert_true(again.chart[i].makespan_s == plan.chart[i].makespan_s);
    }
    gb_cap_fit_dispose(&f);
}

/* ---- samples from devices ---- */

typedef struct feed {
    gb_dev_t dev;
    uint64_t seq;
} feed_t;

static void apply(feed_t *fd, gb_msg_t m)
{
    m.seq = ++fd->seq;
    assert_int_equal(gb_dev_apply(&fd->dev, NULL, &m), 0);
}

static void stage(feed_t *fd, int64_t at_s, gb_stage_t st, gb_run_state_t state)
{
    gb_msg_t m = {.at_ms = T0 + at_s * S, .type = GB_MSG_STAGE};
    m.u.stage.stage = st;
    m.u.stage.state = state;
    apply(fd, m);
}

static void hello(feed_t *fd, int64_t at_s)
{
    gb_msg_t m = {.at_ms = T0 + at_s * S, .type = GB_MSG_HELLO};
    m.u.hello.slot = GB_STR_LIT("B-7");
    m.u.hello.medium = GB_MEDIUM_ETHERNET;
    m.u.hello.link_mbps = 1000;
    apply(fd, m);
}

static void app(feed_t *fd, int64_t at_s, const char *name, int64_t bytes)
{
    gb_msg_t m = {.at_ms = T0 + at_s * S, .type = GB_MSG_APP};
    m.u.app.name = gb_str_from_cstr(name);
    m.u.app.state = GB_APP_DOWNLOADING;
    m.u.app.bytes = bytes;
    apply(fd, m);
}

static void download(feed_t *fd, int64_t at_s, int64_t bytes, int64_t ms, int64_t lan)
{
    gb_msg_t m = {.at_ms = T0 + at_s * S, .type = GB_MSG_DOWNLOAD};
    m.u.download.bytes = bytes;
    m.u.download.ms = ms;
    m.u.download.http_bytes = bytes - lan;
    m.u.download.lan_bytes = lan;
    m.u.download.cache_bytes = 0;
    apply(fd, m);
}

/* One attempt from oobe through device setup: its downloads, then green (or red). */
static void attempt(feed_t *fd, int64_t t, bool fails)
{
    hello(fd, t);
    stage(fd, t, GB_STAGE_OOBE, GB_RUN_STARTED);
    stage(fd, t + 600, GB_STAGE_SECURING_HARDWARE, GB_RUN_STARTED);
    stage(fd, t + 900, GB_STAGE_DEVICE_SETUP, GB_RUN_STARTED);
    app(fd, t + 960, "Microsoft 365 Apps", 1500000000);
    download(fd, t + 1060, 1500000000, 100000, 300000000);
    app(fd, t + 1500, "Microsoft Teams", 500000000);
    download(fd, t + 1550, 500000000, 50000, 100000000);
    stage(fd, t + 2000, GB_STAGE_DEVICE_SETUP, fails ? GB_RUN_FAILED : GB_RUN_SUCCEEDED);
}

static void test_capacity_sample_from_a_device(void **state)
{
    feed_t fd = {0};
    gb_cap_sample_t s;
    gb_dev_init(&fd.dev, "PF3ABC12");
    attempt(&fd, 0, false);
    stage(&fd, 2100, GB_STAGE_RESEAL, GB_RUN_STARTED);
    stage(&fd, 2110, GB_STAGE_RESEAL, GB_RUN_SUCCEEDED);

    gb_cap_sample_from_dev(&fd.dev, 45, &s);
    assert_int_equal(s.outcome, GB_CAP_GREEN);
    assert_string_equal(s.slot, "B-7");
    assert_int_equal(s.bench_ms, T0);
    assert_int_equal(s.start_ms, T0);
    assert_int_equal(s.setup_start_ms, T0 + 900 * S);
    assert_int_equal(s.setup_end_ms, T0 + 2000 * S);
    assert_int_equal(s.result_ms, T0 + 2000 * S);
    assert_int_equal(s.release_ms, T0 + 2110 * S);
    assert_near(s.setup_bytes, 2e9, REL_EPS, "setup bytes");
    assert_near(s.download_s, 150, REL_EPS, "download time");
    assert_near(s.lan_share, 0.2, REL_EPS, "lan share");
    assert_near(s.cache_share, 0, REL_EPS, "cache share");
    assert_near(s.link_mbps, 1000, REL_EPS, "link");
    assert_int_equal(s.esp_timeout_min, 45);
    assert_int_equal(s.attempts, 1);
    assert_int_equal(s.rework_ms, 0);
    assert_int_equal(s.reset_ms, -1);
    assert_int_equal(s.n_apps, 2);
    assert_near(s.app_share[0], 0.75, REL_EPS, "first app");
    assert_near(s.app_share[1], 0.25, REL_EPS, "second app");
    assert_near(s.prev_bytes, 0, REL_EPS, "earlier bytes");
    gb_dev_dispose(&fd.dev);
}

static void test_capacity_sample_from_a_retried_device(void **state)
{
    feed_t fd = {0};
    gb_cap_sample_t s;
    gb_dev_init(&fd.dev, "5CG2341K7Q");
    attempt(&fd, 0, true); /* red at 2000 s (an app failed): reset, then attempt 2 at 3000 s */
    gb_cap_sample_from_dev(&fd.dev, 0, &s);
    assert_int_equal(s.outcome, GB_CAP_RED);
    assert_int_equal(s.release_ms, T0 + 2000 * S);

    attempt(&fd, 3000, false);
    gb_cap_sample_from_dev(&fd.dev, 0, &s);
    assert_int_equal(s.outcome, GB_CAP_GREEN);
    assert_int_equal(s.attempts, 2);
    assert_int_equal(s.bench_ms, T0);
    assert_int_equal(s.start_ms, T0 + 3000 * S);
    assert_int_equal(s.rework_ms, 3000 * S);
    assert_int_equal(s.reset_ms, 1000 * S);
    assert_int_equal(s.prev_setup_ms, T0 + 900 * S);
    assert_int_equal(s.prev_setup_end_ms, T0 + 2000 * S);
    assert_near(s.prev_bytes, 2e9, REL_EPS, "earlier bytes");
    assert_near(s.setup_bytes, 2e9, REL_EPS, "this attempt's bytes");
    assert_int_equal(s.release_ms, GB_TIME_NONE); /* green, not resealed yet */
    gb_dev_dispose(&fd.dev);

    /* Still in device setup: not a sample yet. */
    gb_dev_init(&fd.dev, "PFNEW001");
    fd.seq = 0;
    hello(&fd, 0);
    stage(&fd, 0, GB_STAGE_OOBE, GB_RUN_STARTED);
    stage(&fd, 900, GB_STAGE_DEVICE_SETUP, GB_RUN_STARTED);
    gb_cap_sample_from_dev(&fd.dev, 0, &s);
    assert_int_equal(s.outcome, GB_CAP_OPEN);
    gb_dev_dispose(&fd.dev);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_capacity_fit_recovers_known_parameters),
        cmocka_unit_test(test_capacity_fit_ignores_outliers),
        cmocka_unit_test(test_capacity_fit_measures_the_bench),
        cmocka_unit_test(test_capacity_no_samples_is_an_error),
        cmocka_unit_test(test_capacity_one_sample_is_an_error),
        cmocka_unit_test(test_capacity_all_failed_is_an_error),
        cmocka_unit_test(test_capacity_zero_bandwidth_is_an_error),
        cmocka_unit_test(test_capacity_bad_queries_name_their_field),
        cmocka_unit_test(test_capacity_predicts_rounds_of_fixed_work),
        cmocka_unit_test(test_capacity_predicts_a_shared_uplink),
        cmocka_unit_test(test_capacity_predicts_esp_timeouts),
        cmocka_unit_test(test_capacity_plan_recommends_the_fewest_slots),
        cmocka_unit_test(test_capacity_sample_from_a_device),
        cmocka_unit_test(test_capacity_sample_from_a_retried_device),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
