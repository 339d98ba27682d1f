/* GET /api/v1/summary and GET /api/v1/timings against a real gloveboxd and PostgreSQL. The
 * simulator's ground truth fixes every figure: counts by status and diagnosis, first time right,
 * nearest-rank percentiles of the ESP phases, greens by hour, one timings point per device that
 * reached device setup with its bytes and durations, and each point's concurrency worked out
 * here by brute force from the truth's device-setup intervals. Then the cache: a further report
 * changes both answers at once, the clock alone refreshes stalled after a second, and the routes
 * keep their roles. */
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "harness.h"

#define HOUR_MS (3600LL * 1000)

typedef struct fixture {
    char url[512];
    char truth_path[256];
    char *agent;
    char *viewer;
    gb_th_server_t server;
} fixture_t;

static void fixture_start(fixture_t *f, const char *const *extra)
{
    memset(f, 0, sizeof(*f));
    assert_int_equal(gb_th_db_create(f->url, sizeof(f->url)), 0);
    f->agent = gb_th_token_create(f->url, "agent", "summary-sim");
    f->viewer = gb_th_token_create(f->url, "viewer", "summary-viewer");
    assert_non_null(f->agent);
    assert_non_null(f->viewer);
    snprintf(f->truth_path, sizeof(f->truth_path), "/tmp/gb-summary-%d-%lld.json", (int)getpid(),
             (long long)gb_time_mono_ms());
    assert_int_equal(gb_th_server_start(&f->server, f->url, extra), 0);
}

static void fixture_stop(fixture_t *f)
{
    assert_int_equal(gb_th_server_stop(&f->server, SIGTERM, 20000), 0);
    unlink(f->truth_path);
    free(f->agent);
    free(f->viewer);
}

/* Runs the simulator to completion against the fixture's server and loads its ground truth. */
static json_t *run_sim(fixture_t *f, const char *args)
{
    assert_int_equal(gb_th_sh("'%s' --server http://127.0.0.1:%d --token '%s' --summary '%s' "
                              "--quiet --give-up 60 --start 2025-06-02T08:00:00Z %s",
                              GB_SIM, f->server.port, f->agent, f->truth_path, args),
                     0);
    return gb_th_load_json(f->truth_path);
}

/* GET path with the viewer token; the body must be a JSON object. raw (may be NULL) gets the
 * body text (heap). */
static json_t *get_json(const fixture_t *f, const char *path, char **raw)
{
    gb_th_resp_t r;
    gb_th_request_auth(f->server.port, "GET", path, f->viewer, NULL, &r);
    if (r.status != 200) {
        fail_msg("GET %s: status %d, body %s", path, r.status, r.body != NULL ? r.body : "");
    }
    char *ct = gb_th_resp_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "application/json"));
    free(ct);
    json_error_t e;
    json_t *j = json_loadb(r.body, r.body_len, 0, &e);
    if (!json_is_object(j)) {
        fail_msg("GET %s: not a JSON object (%s): %s", path, e.text, r.body);
    }
    if (raw != NULL) {
        *raw = strdup(r.body);
    }
    gb_th_resp_free(&r);
    return j;
}

static long long int_at(json_t *obj, const char *path)
{
    /* path is "a.b.c" */
    char buf[128];
    snprintf(buf, sizeof(buf), "%s", path);
    json_t *j = obj;
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); k != NULL;
         k = strtok_r(NULL, ".", &save)) {
        j = json_object_get(j, k);
    }
    if (!json_is_integer(j)) {
        fail_msg("%s is not an integer", path);
    }
    return json_integer_value(j);
}

static int64_t ms_of(json_t *seconds)
{
    return llround(json_number_value(seconds) * 1000.0);
}

static int64_t time_of(json_t *s)
{
    int64_t ms;
    const char *t = json_string_value(s);
    assert_non_null(t);
    assert_true(gb_time_parse_rfc3339(t, strlen(t), &ms));
    return ms;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* The nearest-rank percentile, written out here independently of the server: the value of rank
 * ceil(p * n / 100) among the sorted values. */
static int64_t nearest_rank(int64_t *v, size_t n, unsigned p)
{
    qsort(v, n, sizeof(*v), cmp_i64);
    size_t rank = (p * n + 99) / 100;
    return v[(rank < 1 ? 1 : rank) - 1];
}

/* P = {"count", "p50", "p90", "p95", "p99", "max"} equals the percentiles of v, to the
 * millisecond (server and truth read the same `at` values). */
static void check_percentiles(json_t *p, int64_t *v, size_t n, const char *what)
{
    assert_int_equal(json_integer_value(json_object_get(p, "count")), n);
    const char *names[] = {"p50", "p90", "p95", "p99", "max"};
    const unsigned pcts[] = {50, 90, 95, 99, 100};
    for (size_t i = 0; i < 5; i++) {
        json_t *x = json_object_get(p, names[i]);
        if (n == 0) {
            assert_true(json_is_null(x));
            continue;
        }
        int64_t want = nearest_rank(v, n, pcts[i]);
        if (!json_is_number(x) || llabs(ms_of(x) - want) > 1) {
            fail_msg("%s %s: server %s, truth %.3f", what, names[i], json_dumps(x, JSON_ENCODE_ANY),
                     (double)want / 1000.0);
        }
    }
}

static bool truth_green(json_t *d)
{
    const char *st = json_string_value(json_object_get(d, "status"));
    return strcmp(st, "resealed") == 0 || strcmp(st, "delivered") == 0;
}

static void test_summary_matches_the_ground_truth(void **state)
{
    fixture_t f;
    fixture_start(&f, NULL);
    json_t *truth =
        run_sim(&f, "--devices 200 --seed 7 --serial-prefix Y --uplink-mbps 250 --cache-share 0.1 "
                    "--mix 0.3 --fault-rate tpm_attestation=0.03,device_object_missing=0.03,"
                    "multiple_mdm=0.03,profile_unavailable=0.03,no_wired_network=0.03,"
                    "app_install_failed=0.05,certificate_failed=0.03,component_update_error=0.05");
    json_t *sum = get_json(&f, "/api/v1/summary", NULL);
    json_t *per = json_object_get(truth, "per_device");
    size_t n = json_array_size(per);
    assert_int_equal(n, 200);
    assert_int_equal(int_at(truth, "unfinished"), 0);

    /* Counts by status, exactly; nothing is left in between at the end of a run. */
    assert_int_equal(int_at(sum, "devices"), n);
    assert_int_equal(int_at(sum, "by_status.red"), int_at(truth, "red"));
    assert_int_equal(int_at(sum, "by_status.resealed"), int_at(truth, "resealed"));
    assert_int_equal(int_at(sum, "by_status.delivered"), int_at(truth, "delivered"));
    const char *idle[] = {"registered", "provisioning", "green", "handover"};
    for (size_t i = 0; i < GB_ARRAY_LEN(idle); i++) {
        json_t *c = json_object_get(json_object_get(sum, "by_status"), idle[i]);
        assert_true(json_is_integer(c));
        assert_int_equal(json_integer_value(c), 0);
    }
    assert_true(int_at(truth, "red") > 0);
    assert_int_equal(int_at(sum, "stalled"), 0);

    /* Red devices by diagnosis: every code is there, and each equals the truth. */
    json_t *diags = json_object_get(sum, "diagnoses");
    const char *codes[] = {"tpm_attestation",     "device_object_missing", "multiple_mdm",
                           "profile_unavailable", "no_wired_network",      "app_install_failed",
                           "certificate_failed",  "esp_timeout",           "unknown"};
    assert_int_equal(json_object_size(diags), GB_ARRAY_LEN(codes));
    json_t *want_diags = json_object_get(truth, "by_diagnosis");
    for (size_t i = 0; i < GB_ARRAY_LEN(codes); i++) {
        json_t *got = json_object_get(diags, codes[i]);
        assert_true(json_is_integer(got));
        json_t *want = json_object_get(want_diags, codes[i]);
        if (json_integer_value(got) != (want != NULL ? json_integer_value(want) : 0)) {
            fail_msg("diagnosis %s: server %lld, truth %lld", codes[i],
                     (long long)json_integer_value(got),
                     want != NULL ? (long long)json_integer_value(want) : 0LL);
        }
    }

    /* Warnings: every code; the simulator imports nothing, and the rest is in the truth. */
    json_t *warns = json_object_get(sum, "warnings");
    assert_int_equal(json_object_size(warns), 8);
    assert_int_equal(int_at(sum, "warnings.not_imported"), n);
    const char *tw[] = {"component_update_error", "virtual_machine", "tpm_not_2_0"};
    for (size_t i = 0; i < GB_ARRAY_LEN(tw); i++) {
        json_t *want = json_object_get(json_object_get(truth, "warnings"), tw[i]);
        assert_int_equal(json_integer_value(json_object_get(warns, tw[i])),
                         json_integer_value(want));
    }

    /* First time right, of the devices that went green. */
    long long green = int_at(truth, "green"), ftr = 0;
    size_t i;
    json_t *d;
    json_array_foreach(per, i, d)
    {
        if (json_is_true(json_object_get(d, "first_time_right"))) {
            ftr++;
        }
    }
    assert_true(ftr < green); /* some green devices needed a retry */
    assert_int_equal(int_at(sum, "first_time_right.finished"), green);
    assert_int_equal(int_at(sum, "first_time_right.first_time"), ftr);
    assert_float_equal(
        json_number_value(json_object_get(json_object_get(sum, "first_time_right"), "rate")),
        (double)ftr / (double)green, 0.0006);

    /* ESP percentiles over the green devices. */
    int64_t *prep = calloc(n, sizeof(*prep)), *setup = calloc(n, sizeof(*setup));
    int64_t *total = calloc(n, sizeof(*total)), *ends = calloc(n, sizeof(*ends));
    size_t np = 0, ns = 0, nt = 0, ne = 0;
    json_array_foreach(per, i, d)
    {
        if (!truth_green(d)) {
            continue;
        }
        json_t *p = json_object_get(d, "device_preparation_s");
        json_t *s = json_object_get(d, "device_setup_s");
        if (json_is_number(p)) {
            prep[np++] = ms_of(p);
        }
        if (json_is_number(s)) {
            setup[ns++] = ms_of(s);
        }
        total[nt++] = (json_is_number(p) ? ms_of(p) : 0) + (json_is_number(s) ? ms_of(s) : 0);
        ends[ne++] = time_of(json_object_get(d, "result_at"));
    }
    json_t *esp = json_object_get(sum, "esp_durations_s");
    check_percentiles(json_object_get(esp, "device_preparation"), prep, np, "device_preparation");
    check_percentiles(json_object_get(esp, "device_setup"), setup, ns, "device_setup");
    check_percentiles(json_object_get(esp, "total"), total, nt, "total");

    /* Greens by the hour of their green screen, hour by hour. */
    json_t *dph = json_object_get(sum, "devices_per_hour");
    json_t *by_hour = json_object_get(dph, "by_hour");
    qsort(ends, ne, sizeof(*ends), cmp_i64);
    size_t k = 0;
    for (size_t a = 0; a < ne;) {
        int64_t h = ends[a] - ends[a] % HOUR_MS;
        long long c = 0;
        while (a < ne && ends[a] - ends[a] % HOUR_MS == h) {
            c++;
            a++;
        }
        json_t *b = json_array_get(by_hour, k++);
        if (b == NULL || time_of(json_object_get(b, "hour")) != h ||
            json_integer_value(json_object_get(b, "green")) != c) {
            fail_msg("by_hour[%zu]: server %s, truth %lld greens in hour %lld", k - 1,
                     b != NULL ? json_dumps(b, 0) : "(none)", c, (long long)h);
        }
    }
    assert_int_equal(json_array_size(by_hour), k);
    assert_true(k >= 3);
    const char *hour0 = json_string_value(json_object_get(json_array_get(by_hour, 0), "hour"));
    assert_string_equal(hour0 + 13, ":00:00Z"); /* "2025-06-02T08:00:00Z" */
    /* The run lies in the past: nothing went green in the last hour. */
    assert_int_equal(int_at(dph, "last_hour"), 0);
    /* overall: greens per hour from the first stage to the last screen; the truth counts from
     * the clock's start, a few minutes earlier. */
    double overall = json_number_value(json_object_get(dph, "overall"));
    double truth_dph = json_number_value(json_object_get(truth, "devices_per_hour"));
    if (fabs(overall - truth_dph) > 0.03 * truth_dph) {
        fail_msg("devices_per_hour: server %.3f, truth %.3f", overall, truth_dph);
    }

    /* Timings: a point per device whose last attempt reached device setup, in serial order,
     * with the truth's bytes and durations. */
    json_t *tim = get_json(&f, "/api/v1/timings", NULL);
    json_t *points = json_object_get(tim, "points");
    size_t reached = 0;
    json_array_foreach(per, i, d)
    {
        if (json_object_get(json_object_get(d, "stages"), "device_setup") != NULL) {
            reached++;
        }
    }
    assert_true(reached > 150 && reached < n);
    assert_int_equal(json_array_size(points), reached);
    const char *prev = "";
    json_t *pt;
    json_array_foreach(points, i, pt)
    {
        const char *serial = json_string_value(json_object_get(pt, "serial"));
        assert_non_null(serial);
        assert_true(strcmp(prev, serial) < 0);
        prev = serial;
        json_t *td = NULL;
        size_t j;
        json_array_foreach(per, j, td)
        {
            if (strcmp(json_string_value(json_object_get(td, "serial")), serial) == 0) {
                break;
            }
        }
        assert_true(j < n);
        json_t *tb = json_object_get(td, "bytes");
        assert_string_equal(json_string_value(json_object_get(pt, "status")),
                            json_string_value(json_object_get(td, "status")));
        assert_int_equal(int_at(pt, "attempt"), int_at(td, "attempts"));
        assert_int_equal(int_at(pt, "bytes"), int_at(tb, "total"));
        assert_int_equal(int_at(pt, "bytes_http"), int_at(tb, "http"));
        assert_int_equal(int_at(pt, "bytes_lan"), int_at(tb, "lan"));
        assert_int_equal(int_at(pt, "bytes_cache"), int_at(tb, "cache"));
        assert_int_equal(int_at(pt, "setup_bytes"), int_at(td, "setup_bytes"));
        assert_true(llabs(ms_of(json_object_get(pt, "device_setup_s")) -
                          ms_of(json_object_get(td, "device_setup_s"))) <= 1);
        assert_true(llabs(ms_of(json_object_get(pt, "device_preparation_s")) -
                          ms_of(json_object_get(td, "device_preparation_s"))) <= 1);
        json_t *mb = json_object_get(td, "mean_mbps");
        if (json_is_number(mb)) {
            assert_float_equal(json_number_value(json_object_get(pt, "mean_mbps")),
                               json_number_value(mb), 0.0011);
        } else {
            assert_true(json_is_null(json_object_get(pt, "mean_mbps")));
        }
        int64_t started = time_of(json_object_get(pt, "started_at"));
        int64_t ended = time_of(json_object_get(pt, "ended_at"));
        assert_int_equal(ended - started, ms_of(json_object_get(pt, "device_setup_s")));
        assert_true(json_number_value(json_object_get(pt, "concurrency")) >= 1.0);
        assert_true(json_is_null(json_object_get(pt, "group_tag")));
    }

    free(prep);
    free(setup);
    free(total);
    free(ends);
    json_decref(tim);
    json_decref(sum);
    json_decref(truth);
    fixture_stop(&f);
}

/* With one attempt per device every device-setup run is some device's point, so the truth's
 * device_setup intervals are the whole sweep: each point's concurrency is computed here by
 * integrating over the elementary segments, O(n^2), and must equal the server's. */
static void test_timings_concurrency_matches_the_ground_truth(void **state)
{
    fixture_t f;
    fixture_start(&f, NULL);
    json_t *truth = run_sim(&f, "--devices 150 --seed 8 --serial-prefix C --max-attempts 1 "
                                "--uplink-mbps 400 --mix 0.5");
    int64_t start = time_of(json_object_get(json_object_get(truth, "settings"), "start"));
    json_t *per = json_object_get(truth, "per_device");
    size_t n = json_array_size(per), m = 0;
    const char **serials = calloc(n, sizeof(*serials));
    int64_t *s = calloc(n, sizeof(*s)), *e = calloc(n, sizeof(*e));
    size_t i;
    json_t *d;
    json_array_foreach(per, i, d)
    {
        json_t *st = json_object_get(json_object_get(d, "stages"), "device_setup");
        if (st == NULL) {
            continue;
        }
        serials[m] = json_string_value(json_object_get(d, "serial"));
        s[m] = start + ms_of(json_object_get(st, "start_s"));
        e[m] = s[m] + ms_of(json_object_get(st, "duration_s"));
        m++;
    }
    assert_true(m > 100);

    json_t *tim = get_json(&f, "/api/v1/timings", NULL);
    json_t *points = json_object_get(tim, "points");
    assert_int_equal(json_array_size(points), m);
    double max_conc = 0;
    json_t *pt;
    json_array_foreach(points, i, pt)
    {
        const char *serial = json_string_value(json_object_get(pt, "serial"));
        size_t me = 0;
        while (me < m && strcmp(serials[me], serial) != 0) {
            me++;
        }
        assert_true(me < m);
        assert_int_equal(time_of(json_object_get(pt, "started_at")), s[me]);
        assert_int_equal(time_of(json_object_get(pt, "ended_at")), e[me]);
        /* Every start and end inside this interval cuts it into segments of constant count. */
        double area = 0;
        for (int64_t lo = s[me]; lo < e[me];) {
            int64_t hi = e[me];
            for (size_t j = 0; j < m; j++) {
                if (s[j] > lo && s[j] < hi) {
                    hi = s[j];
                }
                if (e[j] > lo && e[j] < hi) {
                    hi = e[j];
                }
            }
            int running = 0;
            for (size_t j = 0; j < m; j++) {
                if (s[j] <= lo && lo < e[j]) {
                    running++;
                }
            }
            area += (double)running * (double)(hi - lo);
            lo = hi;
        }
        double want = e[me] > s[me] ? area / (double)(e[me] - s[me]) : 1.0;
        double got = json_number_value(json_object_get(pt, "concurrency"));
        if (fabs(got - want) > 0.0006) {
            fail_msg("%s: concurrency %.4f, brute force %.4f", serial, got, want);
        }
        if (got > max_conc) {
            max_conc = got;
        }
    }
    assert_true(max_conc > 5); /* the room really was shared */

    free(serials);
    free(s);
    free(e);
    json_decref(tim);
    json_decref(truth);
    fixture_stop(&f);
}

static void post_stage(const fixture_t *f, const char *serial, uint64_t seq, int64_t at,
                       const char *stage, const char *state)
{
    char t[32], body[512];
    gb_time_format_rfc3339(at, t);
    snprintf(body, sizeof(body),
             "{\"protocol\":1,\"device\":{\"serial\":\"%s\"},\"messages\":[{\"seq\":%llu,"
             "\"at\":\"%s\",\"type\":\"stage\",\"stage\":\"%s\",\"state\":\"%s\"}]}",
             serial, (unsigned long long)seq, t, stage, state);
    gb_th_resp_t r;
    /* Like an agent, retry a 503: the server answers before its database pool has connected. */
    for (int tries = 0;; tries++) {
        gb_th_request_auth(f->server.port, "POST", "/api/v1/agent/messages", f->agent, body, &r);
        if (r.status != 503 || tries == 50) {
            break;
        }
        gb_th_resp_free(&r);
        gb_th_sleep_ms(100);
    }
    if (r.status != 200) {
        fail_msg("agent report: %d %s", r.status, r.body != NULL ? r.body : "");
    }
    gb_th_resp_free(&r);
}

static void test_summary_follows_reports_and_the_clock(void **state)
{
    fixture_t f;
    const char *extra[] = {"--stall-timeout", "2s", NULL};
    fixture_start(&f, extra);

    /* An empty fleet: zeros, and null wherever there is nothing to divide. */
    char *raw1, *raw2;
    json_t *sum = get_json(&f, "/api/v1/summary", &raw1);
    assert_int_equal(int_at(sum, "devices"), 0);
    assert_int_equal(int_at(sum, "esp_durations_s.total.count"), 0);
    assert_true(json_is_null(
        json_object_get(json_object_get(json_object_get(sum, "esp_durations_s"), "total"), "p50")));
    assert_true(json_is_null(json_object_get(json_object_get(sum, "devices_per_hour"), "overall")));
    assert_true(json_is_null(json_object_get(json_object_get(sum, "first_time_right"), "rate")));
    assert_int_equal(
        json_array_size(json_object_get(json_object_get(sum, "devices_per_hour"), "by_hour")), 0);
    json_decref(sum);
    free(raw1);
    /* Asked again 50 ms later, nothing has changed: the very same body, generated_at (which has
     * milliseconds) included, so it was not rendered again. A pair may straddle the one-second
     * refresh on a busy machine: three tries. */
    bool same = false;
    for (int tries = 0; tries < 3 && !same; tries++) {
        json_decref(get_json(&f, "/api/v1/summary", &raw1));
        gb_th_sleep_ms(50);
        json_decref(get_json(&f, "/api/v1/summary", &raw2));
        same = strcmp(raw1, raw2) == 0;
        free(raw1);
        free(raw2);
    }
    assert_true(same);
    json_t *tim = get_json(&f, "/api/v1/timings", NULL);
    assert_int_equal(json_array_size(json_object_get(tim, "points")), 0);
    json_decref(tim);

    /* A device starts device setup: the next answer has it, provisioning and not stalled. */
    int64_t now = gb_time_now_ms();
    int64_t setup_at = now - 10LL * 60000, green_at = now - 60000;
    post_stage(&f, "SUMMARY-1", 1, setup_at, "device_setup", "started");
    sum = get_json(&f, "/api/v1/summary", &raw1);
    assert_int_equal(int_at(sum, "devices"), 1);
    assert_int_equal(int_at(sum, "by_status.provisioning"), 1);
    assert_int_equal(int_at(sum, "stalled"), 0);
    json_decref(sum);
    /* Still in device setup: not yet a timings point. */
    tim = get_json(&f, "/api/v1/timings", NULL);
    assert_int_equal(json_array_size(json_object_get(tim, "points")), 0);
    json_decref(tim);

    /* Silent past the stall timeout: the fleet has not changed, but the answer is at most a
     * second old, so the clock alone makes the device stalled. */
    gb_th_sleep_ms(3200);
    sum = get_json(&f, "/api/v1/summary", &raw2);
    assert_string_not_equal(raw1, raw2);
    assert_int_equal(int_at(sum, "stalled"), 1);
    json_decref(sum);
    free(raw1);
    free(raw2);

    /* Device setup succeeds a minute ago: green, first time right, in the last hour. */
    post_stage(&f, "SUMMARY-1", 2, green_at, "device_setup", "succeeded");
    sum = get_json(&f, "/api/v1/summary", NULL);
    assert_int_equal(int_at(sum, "by_status.provisioning"), 0);
    assert_int_equal(int_at(sum, "by_status.green"), 1);
    assert_int_equal(int_at(sum, "stalled"), 0);
    assert_int_equal(int_at(sum, "first_time_right.finished"), 1);
    assert_int_equal(int_at(sum, "first_time_right.first_time"), 1);
    assert_float_equal(
        json_number_value(json_object_get(json_object_get(sum, "first_time_right"), "rate")), 1.0,
        1e-9);
    json_t *dph = json_object_get(sum, "devices_per_hour");
    assert_int_equal(int_at(dph, "last_hour"), 1);
    json_t *by_hour = json_object_get(dph, "by_hour");
    assert_int_equal(json_array_size(by_hour), 1);
    assert_int_equal(time_of(json_object_get(json_array_get(by_hour, 0), "hour")),
                     green_at - green_at % HOUR_MS);
    assert_int_equal(int_at(json_array_get(by_hour, 0), "green"), 1);
    /* overall: one green over the nine minutes from the first stage to the last screen. */
    assert_float_equal(json_number_value(json_object_get(dph, "overall")),
                       1.0 * HOUR_MS / (double)(green_at - setup_at), 0.0006);
    json_t *setup = json_object_get(json_object_get(sum, "esp_durations_s"), "device_setup");
    assert_int_equal(int_at(setup, "count"), 1);
    assert_int_equal(ms_of(json_object_get(setup, "p50")), green_at - setup_at);
    assert_int_equal(ms_of(json_object_get(setup, "max")), green_at - setup_at);
    json_decref(sum);

    tim = get_json(&f, "/api/v1/timings", NULL);
    json_t *points = json_object_get(tim, "points");
    assert_int_equal(json_array_size(points), 1);
    json_t *pt = json_array_get(points, 0);
    assert_string_equal(json_string_value(json_object_get(pt, "serial")), "SUMMARY-1");
    assert_string_equal(json_string_value(json_object_get(pt, "status")), "green");
    assert_int_equal(ms_of(json_object_get(pt, "device_setup_s")), green_at - setup_at);
    assert_int_equal(time_of(json_object_get(pt, "started_at")), setup_at);
    assert_int_equal(time_of(json_object_get(pt, "ended_at")), green_at);
    assert_float_equal(json_number_value(json_object_get(pt, "concurrency")), 1.0, 1e-9);
    assert_true(json_is_null(json_object_get(pt, "mean_mbps")));
    assert_int_equal(int_at(pt, "bytes"), 0);
    json_decref(tim);

    /* A device whose clock is two hours ahead goes green: a green of its own hour, but not one
     * of the last hour. */
    int64_t ahead = now + 2 * HOUR_MS;
    post_stage(&f, "SUMMARY-2", 1, ahead - 10LL * 60000, "device_setup", "started");
    post_stage(&f, "SUMMARY-2", 2, ahead, "device_setup", "succeeded");
    sum = get_json(&f, "/api/v1/summary", NULL);
    dph = json_object_get(sum, "devices_per_hour");
    assert_int_equal(int_at(sum, "by_status.green"), 2);
    assert_int_equal(int_at(dph, "last_hour"), 1);
    by_hour = json_object_get(dph, "by_hour");
    assert_int_equal(json_array_size(by_hour), 2);
    assert_int_equal(time_of(json_object_get(json_array_get(by_hour, 1), "hour")),
                     ahead - ahead % HOUR_MS);
    json_decref(sum);
    tim = get_json(&f, "/api/v1/timings", NULL);
    assert_int_equal(json_array_size(json_object_get(tim, "points")), 2);
    json_decref(tim);

    /* Roles: viewer and up only; GET only. */
    const char *paths[] = {"/api/v1/summary", "/api/v1/timings"};
    for (size_t i = 0; i < GB_ARRAY_LEN(paths); i++) {
        gb_th_resp_t r;
        gb_th_request_auth(f.server.port, "GET", paths[i], NULL, NULL, &r);
        gb_th_assert_json_error(&r, 401, "unauthorized");
        gb_th_resp_free(&r);
        gb_th_request_auth(f.server.port, "GET", paths[i], "not-a-token", NULL, &r);
        gb_th_assert_json_error(&r, 401, "unauthorized");
        gb_th_resp_free(&r);
        gb_th_request_auth(f.server.port, "GET", paths[i], f.agent, NULL, &r);
        gb_th_assert_json_error(&r, 403, "forbidden");
        gb_th_resp_free(&r);
        gb_th_request_auth(f.server.port, "POST", paths[i], f.viewer, "{}", &r);
        gb_th_assert_json_error(&r, 405, "method_not_allowed");
        gb_th_resp_free(&r);
    }
    fixture_stop(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_summary_matches_the_ground_truth),
        cmocka_unit_test(test_timings_concurrency_matches_the_ground_truth),
        cmocka_unit_test(test_summary_follows_reports_and_the_clock),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
