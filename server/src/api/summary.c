/* summary: GET /api/v1/summary (the fleet in figures) and GET /api/v1/timings (one point per
 * device whose device setup has run, for the bandwidth view and the capacity model). Both are
 * answered from the in-memory fleet, never from PostgreSQL. Each keeps its rendered body and
 * serves a plain copy of it while the fleet's generation is unchanged and the body is younger
 * than MAX_AGE_MS; otherwise it renders again, in O(n log n) over n devices, with scratch
 * arrays that grow to the fleet's size and are kept from one rendering to the next. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"

/* How long a rendered body may be served while the fleet is unchanged. Some figures move with
 * the clock alone (stalled, last_hour, reseal_expired); one second bounds their lag, and under
 * load nearly every request is still a copy of the cached body. */
#define MAX_AGE_MS 1000

/* last_hour counts greens up to this far ahead of the server's clock: device clocks drift, and a
 * device a little ahead has still just gone green. Five minutes is the skew Kerberos tolerates
 * by default; a device further ahead has a wrong clock, not a recent green screen. */
#define CLOCK_SKEW_MS (5LL * 60 * 1000)

typedef struct gb_api_summary gb_api_summary_t;

typedef struct cached_view {
    gb_buf_t body;     /* the rendered JSON */
    uint64_t gen;      /* the fleet generation it was rendered from */
    uint64_t built_ms; /* loop time (uv_now) when it was rendered */
    bool valid;        /* false until the first rendering */
} cached_view_t;

struct gb_api_summary {
    cached_view_t summary;
    cached_view_t timings;
    /* Scratch for the summary: one slot per device at most. */
    int64_t *prep, *setup, *total, *ends;
    gb_stats_hour_t *hours;
    size_t cap_devices;
    /* Scratch for the timings: the points, and one interval per device_setup run. */
    const gb_fleet_dev_t **points;
    double *concurrency;
    size_t cap_points;
    gb_stats_interval_t *intervals;
    gb_stats_step_t *steps;
    size_t cap_intervals;
};

typedef void (*render_fn)(gb_api_t *api, gb_buf_t *out);

/* ---- scratch ---- */

static void grow_devices(gb_api_summary_t *s, size_t n)
{
    if (n <= s->cap_devices) {
        return;
    }
    size_t cap = s->cap_devices * 2 > n ? s->cap_devices * 2 : n;
    s->prep = gb_xrealloc(s->prep, cap * sizeof(*s->prep));
    s->setup = gb_xrealloc(s->setup, cap * sizeof(*s->setup));
    s->total = gb_xrealloc(s->total, cap * sizeof(*s->total));
    s->ends = gb_xrealloc(s->ends, cap * sizeof(*s->ends));
    s->hours = gb_xrealloc(s->hours, cap * sizeof(*s->hours));
    s->cap_devices = cap;
}

static void grow_points(gb_api_summary_t *s, size_t n)
{
    if (n <= s->cap_points) {
        return;
    }
    size_t cap = s->cap_points * 2 > n ? s->cap_points * 2 : n;
    s->points = gb_xrealloc(s->points, cap * sizeof(const gb_fleet_dev_t *));
    s->concurrency = gb_xrealloc(s->concurrency, cap * sizeof(*s->concurrency));
    s->cap_points = cap;
}

static void grow_intervals(gb_api_summary_t *s, size_t n)
{
    if (n <= s->cap_intervals) {
        return;
    }
    size_t cap = s->cap_intervals * 2 > n ? s->cap_intervals * 2 : n;
    s->intervals = gb_xrealloc(s->intervals, cap * sizeof(*s->intervals));
    s->steps = gb_xrealloc(s->steps, 2 * cap * sizeof(*s->steps));
    s->cap_intervals = cap;
}

/* ---- JSON pieces ---- */

/* An hour's start without the always-zero milliseconds: "2026-11-24T10:00:00Z". */
static void put_hour(gb_buf_t *b, int64_t ms)
{
    char t[32];
    gb_time_format_rfc3339(ms, t);
    char *dot = strrchr(t, '.');
    if (dot != NULL) {
        dot[0] = 'Z';
        dot[1] = '\0';
    }
    gb_buf_appendf(b, "\"%s\"", t);
}

/* {"count": n, "p50": x, ...}; sorts v. */
static void put_percentiles(gb_buf_t *b, int64_t *v, size_t n)
{
    gb_stats_pctl_t p;
    gb_stats_percentiles(v, n, &p);
    gb_buf_appendf(b, "{\"count\":%zu", p.count);
    const char *names[] = {"p50", "p90", "p95", "p99", "max"};
    const int64_t values[] = {p.p50, p.p90, p.p95, p.p99, p.max};
    for (size_t i = 0; i < GB_ARRAY_LEN(names); i++) {
        gb_buf_appendf(b, ",\"%s\":", names[i]);
        gb_json_seconds(b, n > 0 ? values[i] : -1);
    }
    gb_buf_append(b, "}", 1);
}

/* ---- the summary ---- */

/* The device went green in its current attempt: its technician ESP is over. */
static bool finished_green(const gb_dev_t *d)
{
    return d->status == GB_DEV_GREEN || d->status == GB_DEV_RESEALED ||
           d->status == GB_DEV_HANDOVER || d->status == GB_DEV_DELIVERED;
}

static void render_summary(gb_api_t *api, gb_buf_t *b)
{
    gb_api_summary_t *s = api->summary;
    int64_t now = gb_time_now_ms();
    int64_t stall = api->cfg->stall_timeout_ms;
    size_t devices = 0, stalled = 0, finished = 0, first_time = 0, last_hour = 0;
    size_t by_status[GB_DEV_STATUS_COUNT] = {0}, diags[GB_DIAG_COUNT] = {0};
    size_t warns[GB_WARN_COUNT] = {0};
    size_t n_prep = 0, n_setup = 0, n_total = 0, n_ends = 0;
    int64_t span_start = GB_TIME_NONE, span_end = GB_TIME_NONE;

    grow_devices(s, api->fleet.count);
    for (gb_fleet_dev_t *fd = gb_fleet_first_after(&api->fleet, NULL, 0); fd != NULL;
         fd = gb_fleet_next(&api->fleet, fd)) {
        /* A device first seen in a batch that has not committed yet exists nowhere else. */
        if (!fd->in_db) {
            continue;
        }
        const gb_dev_t *d = &fd->dev;
        devices++;
        by_status[d->status]++;
        if (gb_dev_is_stalled(d, now, stall)) {
            stalled++;
        }
        if (d->status == GB_DEV_RED) {
            /* A red screen nothing explains is still a red device: it counts as unknown. */
            const gb_diagnosis_t *dg = gb_dev_diagnosis(d);
            diags[dg != NULL ? dg->code : GB_DIAG_UNKNOWN]++;
        }
        uint32_t w = gb_dev_warnings(d, now);
        for (int i = 0; i < GB_WARN_COUNT; i++) {
            if (w & GB_WARN_BIT(i)) {
                warns[i]++;
            }
        }
        /* The room's working span: the first device's first stage to the latest green or red
         * screen of any attempt (device times both). A first attempt never starts at a retry,
         * so its start is always a device time. */
        int64_t first = d->attempts[0].started_ms;
        if (first != GB_TIME_NONE && (span_start == GB_TIME_NONE || first < span_start)) {
            span_start = first;
        }
        for (uint32_t i = 0; i < d->n_attempts; i++) {
            int64_t end = d->attempts[i].ended_ms;
            if (end != GB_TIME_NONE && (span_end == GB_TIME_NONE || end > span_end)) {
                span_end = end;
            }
        }
        if (!finished_green(d)) {
            continue;
        }
        finished++;
        if (d->first_time_right) {
            first_time++;
        }
        gb_durations_t du;
        gb_dev_durations(d, &du);
        if (du.device_preparation_ms >= 0) {
            s->prep[n_prep++] = du.device_preparation_ms;
        }
        if (du.device_setup_ms >= 0) {
            s->setup[n_setup++] = du.device_setup_ms;
        }
        /* The technician's ESP only: account setup runs later at the user's desk, and counting
         * it would make the figure depend on how many devices have been handed over. */
        if (du.device_preparation_ms >= 0 || du.device_setup_ms >= 0) {
            s->total[n_total++] = (du.device_preparation_ms > 0 ? du.device_preparation_ms : 0) +
                                  (du.device_setup_ms > 0 ? du.device_setup_ms : 0);
        }
        int64_t green_at = gb_dev_current_attempt(d)->ended_ms;
        if (green_at != GB_TIME_NONE) {
            s->ends[n_ends++] = green_at;
            if (green_at > now - GB_HOUR_MS && green_at <= now + CLOCK_SKEW_MS) {
                last_hour++;
            }
        }
    }

    gb_buf_append_str(b, "{\"generated_at\":");
    gb_json_time(b, now);
    gb_buf_appendf(b, ",\"devices\":%zu,\"by_status\":{", devices);
    for (int i = 0; i < GB_DEV_STATUS_COUNT; i++) {
        gb_buf_appendf(b, "%s\"%s\":%zu", i > 0 ? "," : "", gb_dev_status_id((gb_dev_status_t)i),
                       by_status[i]);
    }
    gb_buf_appendf(b, "},\"stalled\":%zu,\"diagnoses\":{", stalled);
    for (int i = GB_DIAG_NONE + 1; i < GB_DIAG_COUNT; i++) {
        gb_buf_appendf(b, "%s\"%s\":%zu", i > GB_DIAG_NONE + 1 ? "," : "",
                       gb_diag_id((gb_diag_code_t)i), diags[i]);
    }
    gb_buf_append_str(b, "},\"warnings\":{");
    for (int i = 0; i < GB_WARN_COUNT; i++) {
        gb_buf_appendf(b, "%s\"%s\":%zu", i > 0 ? "," : "", gb_warn_id((gb_warn_t)i), warns[i]);
    }
    gb_buf_append_str(b, "},\"esp_durations_s\":{\"device_preparation\":");
    put_percentiles(b, s->prep, n_prep);
    gb_buf_append_str(b, ",\"device_setup\":");
    put_percentiles(b, s->setup, n_setup);
    gb_buf_append_str(b, ",\"total\":");
    put_percentiles(b, s->total, n_total);

    gb_buf_append_str(b, "},\"devices_per_hour\":{\"overall\":");
    if (span_start != GB_TIME_NONE && span_end != GB_TIME_NONE && span_end > span_start) {
        gb_json_number(b, (double)finished * (double)GB_HOUR_MS / (double)(span_end - span_start));
    } else {
        gb_buf_append(b, "null", 4);
    }
    gb_buf_appendf(b, ",\"last_hour\":%zu,\"by_hour\":[", last_hour);
    size_t n_hours = gb_stats_by_hour(s->ends, n_ends, s->hours);
    for (size_t i = 0; i < n_hours; i++) {
        gb_buf_append_str(b, i > 0 ? ",{\"hour\":" : "{\"hour\":");
        put_hour(b, s->hours[i].hour_ms);
        gb_buf_appendf(b, ",\"green\":%u}", s->hours[i].count);
    }
    gb_buf_append_str(b, "]},\"first_time_right\":{\"rate\":");
    if (finished > 0) {
        gb_json_number(b, (double)first_time / (double)finished);
    } else {
        gb_buf_append(b, "null", 4);
    }
    gb_buf_appendf(b, ",\"first_time\":%zu,\"finished\":%zu}}", first_time, finished);
}

/* ---- the timings ---- */

/* The span of one device_setup run in device time, as gb_dev_durations measures it: a run
 * known only by its end is empty, and a run still going lasts up to the latest device time
 * seen. False for a run with neither end known. */
static bool setup_interval(const gb_dev_t *d, const gb_stage_run_t *r, gb_stats_interval_t *out)
{
    int64_t s = r->started_ms != GB_TIME_NONE ? r->started_ms : r->ended_ms;
    if (s == GB_TIME_NONE) {
        return false;
    }
    int64_t e = r->ended_ms != GB_TIME_NONE ? r->ended_ms : d->last_seen_ms;
    out->start_ms = s;
    out->end_ms = e != GB_TIME_NONE && e > s ? e : s;
    return true;
}

/* The device's current attempt has a device_setup run that is over (it succeeded, failed, or
 * the attempt went red or green during it): the device is a point, and this is its run. */
static const gb_stage_run_t *point_run(const gb_dev_t *d)
{
    const gb_stage_run_t *r = gb_dev_find_run(d, d->attempt, GB_STAGE_DEVICE_SETUP);
    return r != NULL && r->ended_ms != GB_TIME_NONE ? r : NULL;
}

static void put_point(gb_buf_t *b, const gb_dev_t *d, const gb_stats_interval_t *iv, double conc)
{
    gb_durations_t du;
    gb_dev_durations(d, &du);
    gb_buf_append_str(b, "{\"serial\":");
    gb_json_str_or_null(b, d->serial);
    gb_buf_appendf(b,
                   ",\"status\":\"%s\",\"attempt\":%u,\"group_tag\":", gb_dev_status_id(d->status),
                   d->attempt);
    gb_json_str_or_null(b, d->group_tag);
    gb_buf_append_str(b, ",\"profile\":");
    gb_json_str_or_null(b, d->profile);
    gb_buf_append_str(b, ",\"mean_mbps\":");
    double mbps;
    if (gb_dev_mean_mbps(d, &mbps)) {
        gb_json_number(b, mbps);
    } else {
        gb_buf_append(b, "null", 4);
    }
    gb_buf_appendf(b,
                   ",\"bytes\":%llu,\"bytes_http\":%llu,\"bytes_lan\":%llu,\"bytes_cache\":%llu,"
                   "\"setup_bytes\":%llu,\"device_preparation_s\":",
                   (unsigned long long)d->bytes_total, (unsigned long long)d->bytes_http,
                   (unsigned long long)d->bytes_lan, (unsigned long long)d->bytes_cache,
                   (unsigned long long)d->setup_bytes);
    gb_json_seconds(b, du.device_preparation_ms);
    gb_buf_append_str(b, ",\"device_setup_s\":");
    gb_json_seconds(b, du.device_setup_ms);
    gb_buf_append_str(b, ",\"total_s\":");
    gb_json_seconds(b, du.total_ms);
    gb_buf_append_str(b, ",\"started_at\":");
    gb_json_time(b, iv->start_ms);
    gb_buf_append_str(b, ",\"ended_at\":");
    gb_json_time(b, iv->end_ms);
    gb_buf_append_str(b, ",\"concurrency\":");
    gb_json_number(b, conc);
    gb_buf_append(b, "}", 1);
}

static void render_timings(gb_api_t *api, gb_buf_t *b)
{
    gb_api_summary_t *s = api->summary;
    int64_t now = gb_time_now_ms();
    size_t n_points = 0, n_intervals = 0;

    /* First count, so that the arrays are sized once. Every device_setup run takes part in
     * the sweep, those of earlier attempts and those still going included: each of them was
     * downloading over the same uplink at the time. */
    for (gb_fleet_dev_t *fd = gb_fleet_first_after(&api->fleet, NULL, 0); fd != NULL;
         fd = gb_fleet_next(&api->fleet, fd)) {
        if (!fd->in_db) {
            continue;
        }
        const gb_dev_t *d = &fd->dev;
        gb_stats_interval_t iv;
        for (uint32_t i = 0; i < d->n_runs; i++) {
            if (d->runs[i].stage == GB_STAGE_DEVICE_SETUP && setup_interval(d, &d->runs[i], &iv)) {
                n_intervals++;
            }
        }
        if (point_run(d) != NULL) {
            n_points++;
        }
    }
    grow_points(s, n_points);
    grow_intervals(s, n_intervals);

    /* The points' own intervals go first, in serial order (the sweep answers for the first
     * n_points); the other runs fill the array from its end. */
    size_t front = 0, back = n_intervals;
    for (gb_fleet_dev_t *fd = gb_fleet_first_after(&api->fleet, NULL, 0); fd != NULL;
         fd = gb_fleet_next(&api->fleet, fd)) {
        if (!fd->in_db) {
            continue;
        }
        const gb_dev_t *d = &fd->dev;
        const gb_stage_run_t *own = point_run(d);
        for (uint32_t i = 0; i < d->n_runs; i++) {
            const gb_stage_run_t *r = &d->runs[i];
            gb_stats_interval_t iv;
            if (r->stage != GB_STAGE_DEVICE_SETUP || !setup_interval(d, r, &iv)) {
                continue;
            }
            if (r == own) {
                s->points[front] = fd;
                s->intervals[front++] = iv;
            } else {
                s->intervals[--back] = iv;
            }
        }
    }
    GB_ASSERT(front == n_points && back == n_points);
    gb_stats_concurrency(s->intervals, n_intervals, n_points, s->steps, s->concurrency);

    gb_buf_append_str(b, "{\"generated_at\":");
    gb_json_time(b, now);
    gb_buf_append_str(b, ",\"points\":[");
    for (size_t i = 0; i < n_points; i++) {
        if (i > 0) {
            gb_buf_append(b, ",", 1);
        }
        put_point(b, &s->points[i]->dev, &s->intervals[i], s->concurrency[i]);
    }
    gb_buf_append_str(b, "]}");
}

/* ---- handlers ---- */

/* Serves v, rendering it again first when the fleet has changed since, or it has grown older
 * than MAX_AGE_MS. The cached path is one copy of the body into the response. */
static void respond_cached(gb_api_t *api, gb_http_req_t *req, cached_view_t *v, render_fn render)
{
    uint64_t now = uv_now(api->loop);
    if (!v->valid || v->gen != api->fleet.gen || now - v->built_ms >= MAX_AGE_MS) {
        gb_buf_reset(&v->body);
        render(api, &v->body);
        v->gen = api->fleet.gen;
        v->built_ms = now;
        v->valid = true;
    }
    gb_http_respond(req, 200, "application/json", NULL, v->body.data, v->body.len);
}

static void on_summary(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    respond_cached(api, req, &api->summary->summary, render_summary);
}

static void on_timings(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    respond_cached(api, req, &api->summary->timings, render_timings);
}

void gb_api__summary_register(gb_api_t *api)
{
    gb_api_summary_t *s = gb_xcalloc(1, sizeof(*s));
    gb_buf_init(&s->summary.body);
    gb_buf_init(&s->timings.body);
    api->summary = s;
    gb_api__route(api, GB_HTTP_GET, "/api/v1/summary", GB_ROLE_VIEWER, on_summary);
    gb_api__route(api, GB_HTTP_GET, "/api/v1/timings", GB_ROLE_VIEWER, on_timings);
}

void gb_api__summary_free(gb_api_t *api)
{
    gb_api_summary_t *s = api->summary;
    if (s == NULL) {
        return;
    }
    gb_buf_dispose(&s->summary.body);
    gb_buf_dispose(&s->timings.body);
    free(s->prep);
    free(s->setup);
    free(s->total);
    free(s->ends);
    free(s->hours);
    free(s->points);
    free(s->concurrency);
    free(s->intervals);
    free(s->steps);
    free(s);
    api->summary = NULL;
}
