/* capacity: GET /api/v1/capacity answers "N devices on K slots with this uplink" from the
 * fleet's measured timings (domain/capacity.c holds the model), and `gloveboxd plan` answers the
 * same from the command line. Fitting and simulating take a few milliseconds for a room and up
 * to seconds for a large fleet, so the handler copies the devices' samples on the loop and runs
 * the rest in libuv's thread pool: the loop never waits for a plan. Nothing is cached: each
 * answer comes from the fleet as committed when the request arrived. */
#include "api/capacity.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libpq-fe.h>
#include <uv.h>

#include "api/internal.h"

/* Plans computing at once at most; more get 503. Each holds a thread of libuv's pool (four by
 * default), which file-system requests share, so plans never take all of it. */
#define PLANS_IN_FLIGHT_MAX 2

/* Plans in the thread pool now. Only the loop thread reads or writes it (when queueing, and in
 * the after-work callback); gloveboxd runs one loop. */
static unsigned plans_in_flight;

typedef struct params {
    gb_cap_query_t q;
    char profile[GB_PROFILE_NAME_MAX + 1]; /* "" for the whole fleet */
} params_t;

static const char *const param_names[] = {
    "devices",    "slots",       "uplink_mbps",     "payload_mb",
    "peer_share", "cache_share", "esp_timeout_min", "profile",
};

/* ---- parameters ---- */

static int bad_param(gb_error_t *err, const char *field, const char *why)
{
    gb_error_set(err, 400, "invalid_query", field, "query parameter %s: %s", field, why);
    return GB_EINVAL;
}

/* A whole number in [min, max]: digits only. */
static bool parse_whole(gb_str_t v, long min, long max, long *out)
{
    uint64_t x;
    if (!gb_str_to_u64(v, (uint64_t)max, &x) || (long)x < min) {
        return false;
    }
    *out = (long)x;
    return true;
}

/* A plain decimal in [min, max]: digits with at most one point, no sign, no exponent (a
 * planner's figure, not a float syntax: "1e3" or "inf" are refused). */
static bool parse_decimal(gb_str_t v, double min, double max, double *out)
{
    char buf[32];
    size_t points = 0, digits = 0;
    if (v.len == 0 || v.len >= sizeof(buf)) {
        return false;
    }
    for (size_t i = 0; i < v.len; i++) {
        if (v.p[i] == '.') {
            points++;
        } else if (v.p[i] >= '0' && v.p[i] <= '9') {
            digits++;
        } else {
            return false;
        }
    }
    if (points > 1 || digits == 0) {
        return false;
    }
    memcpy(buf, v.p, v.len);
    buf[v.len] = '\0';
    errno = 0;
    double x = strtod(buf, NULL);
    if (errno != 0 || !(x >= min) || !(x <= max)) {
        return false;
    }
    *out = x;
    return true;
}

static int parse_params(gb_api_capacity_param_cb get, void *ctx, params_t *p, gb_error_t *err)
{
    gb_str_t v;
    long n;
    gb_cap_query_init(&p->q);
    p->profile[0] = '\0';
    if (get(ctx, "devices", &v)) {
        if (!parse_whole(v, 1, GB_CAP_DEVICES_MAX, &n)) {
            return bad_param(err, "devices", "must be a whole number from 1 to 20000");
        }
        p->q.devices = (uint32_t)n;
    }
    if (get(ctx, "slots", &v)) {
        if (!parse_whole(v, 1, GB_CAP_SLOTS_MAX, &n)) {
            return bad_param(err, "slots", "must be a whole number from 1 to 10000");
        }
        p->q.slots = (uint32_t)n;
    }
    if (get(ctx, "uplink_mbps", &v)) {
        if (!parse_decimal(v, 0, GB_CAP_UPLINK_MAX, &p->q.uplink_mbps) || p->q.uplink_mbps <= 0) {
            return bad_param(err, "uplink_mbps", "must be a number above 0 and at most 10000000");
        }
    }
    if (get(ctx, "payload_mb", &v) && !parse_decimal(v, 0, GB_CAP_PAYLOAD_MAX, &p->q.payload_mb)) {
        return bad_param(err, "payload_mb", "must be a number from 0 to 10000000");
    }
    if (get(ctx, "peer_share", &v) && !parse_decimal(v, 0, 1, &p->q.peer_share)) {
        return bad_param(err, "peer_share", "must be a number from 0 to 1");
    }
    if (get(ctx, "cache_share", &v) && !parse_decimal(v, 0, 1, &p->q.cache_share)) {
        return bad_param(err, "cache_share", "must be a number from 0 to 1");
    }
    if (p->q.peer_share >= 0 && p->q.cache_share >= 0 && p->q.peer_share + p->q.cache_share > 1) {
        return bad_param(err, "cache_share", "the peer and cache shares add up to more than 1");
    }
    if (get(ctx, "esp_timeout_min", &v)) {
        if (!parse_whole(v, 1, GB_ESP_TIMEOUT_MAX_MIN, &n)) {
            return bad_param(err, "esp_timeout_min",
                             "must be a whole number of minutes from 1 to 1440");
        }
        p->q.esp_timeout_min = (int)n;
    }
    if (get(ctx, "profile", &v)) {
        char why[128];
        if (v.len > GB_PROFILE_NAME_MAX) {
            return bad_param(err, "profile", "a profile name has at most 64 characters");
        }
        memcpy(p->profile, v.p, v.len);
        p->profile[v.len] = '\0';
        if (!gb_profile_name_check(p->profile, why, sizeof(why))) {
            return bad_param(err, "profile", why);
        }
    }
    return 0;
}

/* Refuses a parameter the route does not know, by name: a misspelt one ("slot=40") would
 * otherwise plan silently with the fitted default. */
static int check_names(gb_str_t query, gb_error_t *err)
{
    size_t i = 0;
    while (i < query.len) {
        size_t j = i;
        while (j < query.len && query.p[j] != '&') {
            j++;
        }
        size_t k = i;
        while (k < j && query.p[k] != '=') {
            k++;
        }
        gb_str_t name = {query.p + i, k - i};
        bool known = name.len == 0;
        for (size_t x = 0; x < GB_ARRAY_LEN(param_names) && !known; x++) {
            known = gb_str_eq_cstr(name, param_names[x]);
        }
        if (!known) {
            char field[64];
            snprintf(field, sizeof(field), "%.*s", (int)(name.len < 48 ? name.len : 48), name.p);
            return bad_param(err, field,
                             "unknown; the parameters are devices, slots, uplink_mbps, "
                             "payload_mb, peer_share, cache_share, esp_timeout_min and profile");
        }
        i = j + 1;
    }
    return 0;
}

/* ---- samples ---- */

typedef struct sample_set {
    gb_cap_sample_t *v;
    size_t n;
    gb_arena_t arena; /* the slots' names, copied: the fleet may change while a plan runs */
} sample_set_t;

static void samples_collect(gb_api_t *api, const char *profile, sample_set_t *out)
{
    gb_arena_init(&out->arena);
    out->n = 0;
    out->v = gb_xmalloc((api->fleet.count ? api->fleet.count : 1) * sizeof(*out->v));
    for (gb_fleet_dev_t *fd = gb_fleet_first_after(&api->fleet, NULL, 0); fd != NULL;
         fd = gb_fleet_next(&api->fleet, fd)) {
        const gb_dev_t *d = &fd->dev;
        /* A device first seen in a batch that has not committed yet exists nowhere else. */
        if (!fd->in_db ||
            (profile[0] != '\0' && (d->profile == NULL || strcmp(d->profile, profile) != 0))) {
            continue;
        }
        gb_cap_sample_t *s = &out->v[out->n++];
        gb_cap_sample_from_dev(d, gb_api__profile_esp_timeout_min(api, d), s);
        if (s->slot != NULL) {
            s->slot = gb_arena_strndup(&out->arena, s->slot, strlen(s->slot));
        }
    }
}

static void samples_dispose(sample_set_t *s)
{
    free(s->v);
    gb_arena_dispose(&s->arena);
}

/* ---- rendering ---- */

static void put_key_number(gb_buf_t *b, const char *key, double x)
{
    gb_buf_appendf(b, ",\"%s\":", key);
    gb_json_number(b, x);
}

static void put_prediction(gb_buf_t *b, const gb_cap_prediction_t *p)
{
    gb_buf_appendf(b, "{\"devices\":%u,\"slots\":%u", p->devices, p->slots);
    put_key_number(b, "per_device_s", p->per_device_s);
    put_key_number(b, "makespan_s", p->makespan_s);
    put_key_number(b, "devices_per_hour", p->devices_per_hour);
    gb_buf_appendf(b, ",\"esp_timeouts\":%u,\"green\":%u,\"red\":%u", p->esp_timeouts, p->green,
                   p->red);
    put_key_number(b, "download_s", p->download_s);
    put_key_number(b, "uplink_busy_share", p->uplink_busy);
    gb_buf_append_str(b, "}");
}

static void render_json(const params_t *p, const gb_cap_fit_t *f, const gb_cap_plan_t *pl,
                        gb_buf_t *b)
{
    const gb_cap_query_t *q = &pl->query;
    gb_buf_append_str(b, "{\"model\":{\"profile\":");
    if (p->profile[0] != '\0') {
        gb_json_quote(b, p->profile, strlen(p->profile));
    } else {
        gb_buf_append_str(b, "null");
    }
    put_key_number(b, "fixed_s", f->fixed_s);
    put_key_number(b, "pre_setup_s", f->pre_setup_s);
    put_key_number(b, "setup_fixed_s", f->setup_fixed_s);
    put_key_number(b, "changeover_s", f->changeover_s);
    put_key_number(b, "reseal_s", f->reseal_s);
    put_key_number(b, "rework_s", f->rework_s);
    put_key_number(b, "uplink_mbps", f->uplink_known ? f->uplink_mbps : NAN);
    put_key_number(b, "payload_mb", f->payload_mb);
    put_key_number(b, "uplink_payload_mb", f->payload_mb * (1 - f->peer_share - f->cache_share));
    put_key_number(b, "peer_share", f->peer_share);
    put_key_number(b, "cache_share", f->cache_share);
    put_key_number(b, "nic_mbps", f->nic_mbps > 0 ? f->nic_mbps : NAN);
    put_key_number(b, "download_s", f->download_s);
    put_key_number(b, "red_share", f->red_share);
    gb_buf_appendf(b, ",\"esp_timeout_min\":%d,\"slots\":%u,\"max_attempts\":%u}",
                   f->esp_timeout_min, f->slots, f->max_attempts);

    gb_buf_appendf(b,
                   ",\"basis\":{\"samples\":%zu,\"uplink_samples\":%zu,\"devices\":%zu,"
                   "\"red\":%zu,\"esp_timeouts\":%zu,\"changeovers\":%zu",
                   f->samples, f->uplink_samples, f->devices, f->red, f->esp_timeouts,
                   f->changeovers);
    put_key_number(b, "r2", f->r2);
    put_key_number(b, "mae_s", f->mae_s);
    put_key_number(b, "uplink_saturated_share", f->uplink_known ? f->saturated_share : NAN);
    gb_buf_append_str(
        b, ",\"method\":\"per-device time = fixed work + downloads over a max-min fair uplink "
           "(NIC caps, LAN-peer and cache shares); uplink fitted by a Huber M-estimate of log "
           "download-time ratios against a replay of the measured device-setup runs; fixed "
           "parts by Huber location; predictions by an event simulation of the slots\"}");

    gb_buf_appendf(b, ",\"query\":{\"devices\":%u,\"slots\":%u", q->devices, q->slots);
    put_key_number(b, "uplink_mbps", q->uplink_mbps > 0 ? q->uplink_mbps : NAN);
    put_key_number(b, "payload_mb", q->payload_mb >= 0 ? q->payload_mb : f->payload_mb);
    put_key_number(b, "peer_share", q->peer_share);
    put_key_number(b, "cache_share", q->cache_share);
    gb_buf_appendf(b, ",\"esp_timeout_min\":%d}",
                   q->esp_timeout_min > 0 ? q->esp_timeout_min : f->esp_timeout_min);

    gb_buf_append_str(b, ",\"prediction\":");
    put_prediction(b, &pl->prediction);
    if (pl->recommended_slots > 0) {
        gb_buf_appendf(b, ",\"recommended_slots\":%u", pl->recommended_slots);
    } else {
        gb_buf_append_str(b, ",\"recommended_slots\":null");
    }
    gb_buf_appendf(b, ",\"bound\":\"%s\",\"throughput_by_slots\":[",
                   pl->bandwidth_bound ? "bandwidth" : "install");
    for (size_t i = 0; i < pl->n_chart; i++) {
        const gb_cap_prediction_t *c = &pl->chart[i];
        gb_buf_appendf(b, "%s{\"slots\":%u", i > 0 ? "," : "", c->slots);
        put_key_number(b, "devices_per_hour", c->devices_per_hour);
        put_key_number(b, "makespan_s", c->makespan_s);
        put_key_number(b, "per_device_s", c->per_device_s);
        gb_buf_appendf(b, ",\"esp_timeouts\":%u}", c->esp_timeouts);
    }
    gb_buf_append_str(b, "],\"what_if\":[");
    for (size_t i = 0; i < pl->n_what_if; i++) {
        const gb_cap_what_if_t *w = &pl->what_if[i];
        gb_buf_appendf(b, "%s{\"change\":\"%s\",\"value\":", i > 0 ? "," : "",
                       gb_cap_change_id(w->change));
        gb_json_number(b, w->value);
        gb_buf_append_str(b, ",\"prediction\":");
        put_prediction(b, &w->prediction);
        gb_buf_append_str(b, "}");
    }
    gb_buf_append_str(b, "],\"explain\":[");
    for (size_t i = 0; i < pl->n_explain; i++) {
        if (i > 0) {
            gb_buf_append_str(b, ",");
        }
        gb_json_quote(b, pl->explain[i], strlen(pl->explain[i]));
    }
    gb_buf_append_str(b, "]}");
}

static void text_duration(char *out, size_t n, double s)
{
    if (s >= 2 * 3600) {
        snprintf(out, n, "%.1f h", s / 3600);
    } else if (s >= 120) {
        snprintf(out, n, "%.1f min", s / 60);
    } else {
        snprintf(out, n, "%.0f s", s);
    }
}

static void text_prediction(gb_buf_t *b, const char *label, const gb_cap_prediction_t *p)
{
    char per[32], span[32];
    text_duration(per, sizeof(per), p->per_device_s);
    text_duration(span, sizeof(span), p->makespan_s);
    gb_buf_appendf(b,
                   "  %-28s %5u slots: %5.1f devices/h, all %u in %s, %s per device, %u ESP "
                   "timeouts\n",
                   label, p->slots, p->devices_per_hour, p->devices, span, per, p->esp_timeouts);
}

static void render_text(const params_t *p, const gb_cap_fit_t *f, const gb_cap_plan_t *pl,
                        gb_buf_t *b)
{
    const gb_cap_query_t *q = &pl->query;
    char d1[32], d2[32];
    gb_buf_appendf(b, "Capacity plan%s%s: %u devices on %u slots", p->profile[0] ? " for " : "",
                   p->profile, q->devices, q->slots);
    if (q->uplink_mbps > 0) {
        gb_buf_appendf(b, ", uplink %.0f Mbit/s", q->uplink_mbps);
    }
    gb_buf_appendf(b, ", payload %.0f MB, peers %.0f%%, cache %.0f%%, ESP timeout %d min\n\n",
                   q->payload_mb >= 0 ? q->payload_mb : f->payload_mb, 100 * q->peer_share,
                   100 * q->cache_share,
                   q->esp_timeout_min > 0 ? q->esp_timeout_min : f->esp_timeout_min);

    gb_buf_appendf(b,
                   "Model, fitted from %zu green devices (%zu with measured downloads) of %zu:\n",
                   f->samples, f->uplink_samples, f->devices);
    text_duration(d1, sizeof(d1), f->fixed_s);
    gb_buf_appendf(b, "  %-28s %s (to device setup %.0f s, setup without downloads %.0f s)\n",
                   "fixed work per device", d1, f->pre_setup_s, f->setup_fixed_s);
    gb_buf_appendf(b, "  %-28s %.0f s, then %.0f s to reseal\n", "changeover per device",
                   f->changeover_s, f->reseal_s);
    if (f->uplink_known) {
        gb_buf_appendf(b, "  %-28s %.0f Mbit/s (full %.0f%% of the download time)\n",
                       "effective uplink", f->uplink_mbps, 100 * f->saturated_share);
    } else {
        gb_buf_appendf(b, "  %-28s unknown (no download waited for it)\n", "effective uplink");
    }
    gb_buf_appendf(b, "  %-28s %.0f MB (LAN peers %.0f%%, cache %.0f%%)\n", "payload per device",
                   f->payload_mb, 100 * f->peer_share, 100 * f->cache_share);
    gb_buf_appendf(b, "  %-28s R2 %.2f, mean absolute error %.0f s\n", "fit of per-device time",
                   f->r2, f->mae_s);

    gb_buf_append_str(b, "\nPrediction:\n");
    text_prediction(b, "as asked", &pl->prediction);
    for (size_t i = 0; i < pl->n_chart; i++) {
        if (pl->chart[i].slots == pl->recommended_slots) {
            text_prediction(b, "recommended", &pl->chart[i]);
        }
    }
    if (pl->recommended_slots == 0) {
        gb_buf_append_str(b, "  recommended                  none: every slot count hits the "
                             "ESP timeout\n");
    }
    gb_buf_appendf(b, "  %-28s %s\n", "bound by",
                   pl->bandwidth_bound ? "bandwidth (the uplink)" : "install (the fixed work)");

    gb_buf_append_str(b, "\nWhat if:\n");
    for (size_t i = 0; i < pl->n_what_if; i++) {
        char label[64];
        const gb_cap_what_if_t *w = &pl->what_if[i];
        snprintf(label, sizeof(label), "%s %.4g", gb_cap_change_id(w->change), w->value);
        text_prediction(b, label, &w->prediction);
    }

    gb_buf_appendf(b, "\nThroughput by slots:\n  %6s  %10s  %10s  %10s  %12s\n", "slots",
                   "devices/h", "makespan", "per device", "ESP timeouts");
    for (size_t i = 0; i < pl->n_chart; i++) {
        const gb_cap_prediction_t *c = &pl->chart[i];
        text_duration(d1, sizeof(d1), c->makespan_s);
        text_duration(d2, sizeof(d2), c->per_device_s);
        gb_buf_appendf(b, "  %6u  %10.1f  %10s  %10s  %12u\n", c->slots, c->devices_per_hour, d1,
                       d2, c->esp_timeouts);
    }
    gb_buf_append_str(b, "\nWhy:\n");
    for (size_t i = 0; i < pl->n_explain; i++) {
        gb_buf_appendf(b, "  - %s\n", pl->explain[i]);
    }
}

/* Fits and plans; pure, so it may run on any thread. */
static int compute(const params_t *p, const sample_set_t *s, bool json, gb_buf_t *out,
                   gb_error_t *err)
{
    gb_cap_fit_t fit;
    gb_cap_fit_init(&fit);
    int rc = gb_cap_fit(&fit, s->v, s->n, err);
    if (rc == 0) {
        gb_cap_plan_t *plan = gb_xmalloc(sizeof(*plan));
        rc = gb_cap_plan(&fit, &p->q, plan, err);
        if (rc == 0 && json) {
            render_json(p, &fit, plan, out);
        } else if (rc == 0) {
            render_text(p, &fit, plan, out);
        }
        free(plan);
    }
    gb_cap_fit_dispose(&fit);
    return rc;
}

/* ---- the route ---- */

typedef struct plan_work {
    uv_work_t work;
    gb_http_req_t *req;
    params_t params;
    sample_set_t samples;
    gb_error_t err;
    int rc;
    gb_buf_t body;
} plan_work_t;

static void plan_work_free(plan_work_t *pw)
{
    samples_dispose(&pw->samples);
    gb_buf_dispose(&pw->body);
    free(pw);
}

static void on_plan_work(uv_work_t *w)
{
    plan_work_t *pw = gb_container_of(w, plan_work_t, work);
    pw->rc = compute(&pw->params, &pw->samples, true, &pw->body, &pw->err);
}

static void on_plan_done(uv_work_t *w, int status)
{
    plan_work_t *pw = gb_container_of(w, plan_work_t, work);
    plans_in_flight--;
    /* The request stays valid while a handler has work in flight, even if its client left:
     * answering is what releases it. */
    if (status < 0) {
        gb_http_respond_errorf(pw->req, 503, "unavailable", "the plan was cancelled");
    } else if (pw->rc != 0) {
        gb_http_respond_error(pw->req, &pw->err);
    } else {
        gb_http_respond_json(pw->req, 200, &pw->body);
    }
    plan_work_free(pw);
}

static bool req_param(void *ctx, const char *name, gb_str_t *value)
{
    return gb_http_req_query(ctx, name, value);
}

static void on_capacity(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    GB_UNUSED(who);
    params_t p;
    gb_error_t e;
    gb_error_clear(&e);
    if (check_names(req->query, &e) != 0 || parse_params(req_param, req, &p, &e) != 0) {
        gb_http_respond_error(req, &e);
        return;
    }
    if (plans_in_flight >= PLANS_IN_FLIGHT_MAX) {
        gb_http_respond_errorf(req, 503, "unavailable",
                               "%d capacity plans are being computed; retry in a moment",
                               PLANS_IN_FLIGHT_MAX);
        return;
    }
    plan_work_t *pw = gb_xcalloc(1, sizeof(*pw));
    pw->req = req;
    pw->params = p;
    gb_error_clear(&pw->err);
    gb_buf_init(&pw->body);
    samples_collect(api, p.profile, &pw->samples);
    int rc = uv_queue_work(api->loop, &pw->work, on_plan_work, on_plan_done);
    if (rc < 0) {
        gb_http_respond_errorf(req, 503, "unavailable", "cannot start the plan: %s",
                               uv_strerror(rc));
        plan_work_free(pw);
        return;
    }
    plans_in_flight++;
}

void gb_api__capacity_register(gb_api_t *api)
{
    gb_api__route(api, GB_HTTP_GET, "/api/v1/capacity", GB_ROLE_VIEWER, on_capacity);
}

/* ---- gloveboxd plan ---- */

int gb_api_capacity_cli(const gb_config_t *cfg, gb_api_capacity_param_cb get, void *ctx, bool json,
                        gb_buf_t *out, gb_error_t *err)
{
    params_t p;
    char msg[512];
    int rc = parse_params(get, ctx, &p, err);
    if (rc != 0) {
        return rc;
    }
    PGconn *conn =
        gb_pg_connect_blocking(cfg->database_url, cfg->db_connect_timeout_ms, msg, sizeof(msg));
    if (conn == NULL) {
        gb_error_set(err, 503, "unavailable", NULL, "cannot reach PostgreSQL: %s", msg);
        return GB_EDB;
    }
    /* The api as the server builds it, without a loop, a pool or a listener: loading needs
     * only the connection, and the route table is simply never served. */
    gb_http_router_t *router = gb_http_router_new();
    gb_api_deps_t deps = {.loop = NULL, .cfg = cfg, .pg = NULL, .auth = NULL, .router = router};
    gb_api_t *api = gb_api_new(&deps);
    rc = gb_api_load(api, conn, msg, sizeof(msg));
    PQfinish(conn);
    if (rc < 0) {
        gb_error_set(err, 503, "unavailable", NULL, "loading the devices: %s", msg);
    } else {
        sample_set_t s;
        samples_collect(api, p.profile, &s);
        rc = compute(&p, &s, json, out, err);
        samples_dispose(&s);
    }
    gb_api_free(api);
    gb_http_router_free(router);
    return rc;
}
