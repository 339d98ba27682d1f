/* snapshot: a device's whole state (identity and everything derived) as compact JSON, so the
 * server can persist it and reload it at start without replaying every message. Enumerations
 * are written as their contract ids (stable if the enums are reordered), times as integer
 * milliseconds, numbers exactly (%.17g), so encode(decode(encode(s))) == encode(s). Decoding
 * checks every invariant the domain relies on; a bad snapshot is an error, never a crash. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "protocol/protocol.h"

/* Version 2 added user_upn; a version 1 snapshot (written before) decodes without it. */
#define SNAPSHOT_VERSION 2

/* ---- encode ---- */

static void put_key(gb_buf_t *b, const char *k)
{
    gb_buf_append(b, ",\"", 2);
    gb_buf_append_str(b, k);
    gb_buf_append(b, "\":", 2);
}

static void put_str(gb_buf_t *b, const char *k, const char *s)
{
    put_key(b, k);
    if (s == NULL) {
        gb_buf_append(b, "null", 4);
    } else {
        gb_json_quote(b, s, strlen(s));
    }
}

static void put_id(gb_buf_t *b, const char *k, const char *id)
{
    put_key(b, k);
    gb_json_quote(b, id, strlen(id));
}

static void put_bool(gb_buf_t *b, const char *k, bool v)
{
    put_key(b, k);
    gb_buf_append_str(b, v ? "true" : "false");
}

static void put_u64(gb_buf_t *b, const char *k, uint64_t v)
{
    put_key(b, k);
    gb_buf_appendf(b, "%llu", (unsigned long long)v);
}

static void time_val(gb_buf_t *b, int64_t ms)
{
    if (ms == GB_TIME_NONE) {
        gb_buf_append(b, "null", 4);
    } else {
        gb_buf_appendf(b, "%lld", (long long)ms);
    }
}

static void put_time(gb_buf_t *b, const char *k, int64_t ms)
{
    put_key(b, k);
    time_val(b, ms);
}

static void hr_val(gb_buf_t *b, bool has, uint32_t hr)
{
    if (has) {
        gb_buf_appendf(b, "%u", (unsigned)hr);
    } else {
        gb_buf_append(b, "null", 4);
    }
}

static void quote_id(gb_buf_t *b, const char *id)
{
    gb_json_quote(b, id, strlen(id));
}

void gb_proto_snapshot_encode(const gb_dev_t *dev, gb_buf_t *out)
{
    gb_buf_appendf(out, "{\"v\":%d", SNAPSHOT_VERSION);
    put_str(out, "serial", dev->serial);
    put_str(out, "group_tag", dev->group_tag);
    put_str(out, "assigned_user", dev->assigned_user);
    put_str(out, "profile", dev->profile);
    put_str(out, "slot", dev->slot);
    put_bool(out, "imported", dev->imported);
    put_bool(out, "hybrid", dev->profile_hybrid);
    put_id(out, "status", gb_dev_status_id(dev->status));
    put_id(out, "stage", gb_stage_id(dev->stage));
    put_id(out, "stage_state", gb_run_state_id(dev->stage_state));
    put_u64(out, "attempt", dev->attempt);
    put_u64(out, "warnings", dev->warnings);
    put_bool(out, "ftr", dev->first_time_right);
    put_time(out, "resealed", dev->resealed_ms);
    put_time(out, "first_seen", dev->first_seen_ms);
    put_time(out, "last_seen", dev->last_seen_ms);
    put_time(out, "last_at", dev->last_at_ms);
    put_time(out, "last_arrival", dev->last_arrival_ms);
    put_u64(out, "max_seq", dev->max_seq);
    put_u64(out, "contig_seq", dev->contig_seq);
    put_u64(out, "applied", dev->n_applied);
    put_key(out, "bytes");
    gb_buf_appendf(out, "[%llu,%llu,%llu,%llu]", (unsigned long long)dev->bytes_total,
                   (unsigned long long)dev->bytes_http, (unsigned long long)dev->bytes_lan,
                   (unsigned long long)dev->bytes_cache);
    put_key(out, "setup");
    gb_buf_appendf(out, "[%llu,%llu]", (unsigned long long)dev->setup_bytes,
                   (unsigned long long)dev->setup_ms);
    put_str(out, "agent", dev->agent);
    put_str(out, "os_build", dev->os_build);
    put_str(out, "manufacturer", dev->manufacturer);
    put_str(out, "model", dev->model);
    put_str(out, "tpm_version", dev->tpm_version);
    put_str(out, "user_upn", dev->user_upn);
    put_u64(out, "tpm_attestation", (uint64_t)dev->tpm_attestation);
    put_u64(out, "vm", (uint64_t)dev->virtual_machine);
    put_id(out, "medium", gb_medium_id(dev->medium));
    put_key(out, "link_mbps");
    if (dev->link_mbps >= 0 && isfinite(dev->link_mbps)) {
        gb_buf_appendf(out, "%.17g", dev->link_mbps);
    } else {
        gb_buf_append(out, "null", 4);
    }

    put_key(out, "runs");
    gb_buf_append(out, "[", 1);
    for (uint32_t i = 0; i < dev->n_runs; i++) {
        const gb_stage_run_t *r = &dev->runs[i];
        gb_buf_append_str(out, i > 0 ? ",[" : "[");
        quote_id(out, gb_stage_id((gb_stage_t)r->stage));
        gb_buf_append(out, ",", 1);
        quote_id(out, gb_run_state_id((gb_run_state_t)r->state));
        gb_buf_appendf(out, ",%u,", (unsigned)r->attempt);
        time_val(out, r->started_ms);
        gb_buf_append(out, ",", 1);
        time_val(out, r->ended_ms);
        gb_buf_append(out, ",", 1);
        hr_val(out, r->has_hresult, r->hresult);
        gb_buf_append(out, "]", 1);
    }
    gb_buf_append(out, "]", 1);

    put_key(out, "attempts");
    gb_buf_append(out, "[", 1);
    for (uint32_t i = 0; i < dev->n_attempts; i++) {
        const gb_attempt_t *a = &dev->attempts[i];
        gb_buf_append_str(out, i > 0 ? ",[" : "[");
        time_val(out, a->started_ms);
        gb_buf_append(out, ",", 1);
        time_val(out, a->ended_ms);
        gb_buf_append(out, ",", 1);
        quote_id(out, gb_dev_status_id(a->outcome));
        gb_buf_append(out, ",", 1);
        quote_id(out, gb_diag_id(a->diagnosis.code));
        gb_buf_append(out, ",", 1);
        quote_id(out, gb_stage_id(a->diagnosis.stage));
        gb_buf_append(out, ",", 1);
        hr_val(out, a->diagnosis.has_hresult, a->diagnosis.hresult);
        gb_buf_appendf(out, ",%u,", (unsigned)a->evidence);
        hr_val(out, a->has_evidence_hresult, a->evidence_hresult);
        gb_buf_appendf(out, ",%d,", (int)a->fail_run);
        quote_id(out, gb_stage_id((gb_stage_t)a->fail_stage));
        gb_buf_append(out, "]", 1);
    }
    gb_buf_append(out, "]", 1);

    put_key(out, "apps");
    gb_buf_append(out, "[", 1);
    for (uint32_t i = 0; i < dev->n_apps; i++) {
        const gb_app_t *a = &dev->apps[i];
        gb_buf_append_str(out, i > 0 ? ",[" : "[");
        gb_json_quote(out, a->name, strlen(a->name));
        gb_buf_append(out, ",", 1);
        quote_id(out, gb_app_state_id((gb_app_state_t)a->state));
        gb_buf_append(out, ",", 1);
        if (a->has_bytes) {
            gb_buf_appendf(out, "%llu", (unsigned long long)a->bytes);
        } else {
            gb_buf_append(out, "null", 4);
        }
        gb_buf_append(out, ",", 1);
        hr_val(out, a->has_hresult, a->hresult);
        gb_buf_append(out, "]", 1);
    }
    gb_buf_append(out, "]}", 2);
}

/* ---- decode ---- */

typedef struct snap {
    gb_error_t *err;
    bool ok;
    json_int_t version;
} snap_t;

static void bad(snap_t *s, const char *field, const char *why)
{
    if (s->ok) {
        gb_error_set(s->err, 500, "invalid_snapshot", field, "snapshot field %s: %s", field, why);
        s->ok = false;
    }
}

/* A string member copied to the heap; null gives NULL. */
static char *get_str(snap_t *s, json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (v == NULL) {
        bad(s, k, "missing");
        return NULL;
    }
    if (json_is_null(v)) {
        return NULL;
    }
    if (!json_is_string(v) || memchr(json_string_value(v), '\0', json_string_length(v))) {
        bad(s, k, "not a string");
        return NULL;
    }
    return gb_xstrndup(json_string_value(v), json_string_length(v));
}

static gb_str_t get_id(snap_t *s, json_t *v, const char *k)
{
    if (!json_is_string(v)) {
        bad(s, k, "not a string");
        return GB_STR_LIT("");
    }
    return (gb_str_t){json_string_value(v), json_string_length(v)};
}

static int64_t get_int(snap_t *s, json_t *v, const char *k, int64_t min, int64_t max)
{
    if (!json_is_integer(v)) {
        bad(s, k, "not an integer");
        return min;
    }
    json_int_t x = json_integer_value(v);
    if (x < min || x > max) {
        bad(s, k, "out of range");
        return min;
    }
    return (int64_t)x;
}

static int64_t get_time(snap_t *s, json_t *v, const char *k)
{
    if (json_is_null(v)) {
        return GB_TIME_NONE;
    }
    return get_int(s, v, k, INT64_MIN + 1, INT64_MAX);
}

static bool get_hr(snap_t *s, json_t *v, const char *k, uint32_t *out)
{
    *out = 0;
    if (json_is_null(v)) {
        return false;
    }
    *out = (uint32_t)get_int(s, v, k, 0, UINT32_MAX);
    return true;
}

static bool get_bool(snap_t *s, json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_boolean(v)) {
        bad(s, k, "not a boolean");
        return false;
    }
    return json_is_true(v);
}

static gb_stage_t parse_stage(snap_t *s, json_t *v, const char *k)
{
    gb_str_t id = get_id(s, v, k);
    gb_stage_t st = GB_STAGE_NONE;
    if (id.len > 0 && !gb_stage_parse(id, &st)) {
        bad(s, k, "unknown stage");
    }
    return st;
}

static gb_run_state_t parse_run_state(snap_t *s, json_t *v, const char *k)
{
    gb_str_t id = get_id(s, v, k);
    gb_run_state_t st = GB_RUN_NONE;
    if (id.len > 0 && !gb_run_state_parse(id, &st)) {
        bad(s, k, "unknown run state");
    }
    return st;
}

static gb_dev_status_t parse_status(snap_t *s, json_t *v, const char *k)
{
    gb_dev_status_t st = GB_DEV_REGISTERED;
    if (!gb_dev_status_parse(get_id(s, v, k), &st)) {
        bad(s, k, "unknown status");
    }
    return st;
}

/* Member k of o as an array of exactly n elements (n == 0: any length). */
static json_t *get_array(snap_t *s, json_t *o, const char *k, size_t n)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_array(v) || (n > 0 && json_array_size(v) != n)) {
        bad(s, k, "not an array of the right size");
        return NULL;
    }
    return v;
}

static void decode_runs(snap_t *s, json_t *arr, gb_dev_t *dev)
{
    size_t i;
    json_t *e;
    uint32_t prev_attempt = 1;
    json_array_foreach(arr, i, e)
    {
        if (!json_is_array(e) || json_array_size(e) != 6) {
            bad(s, "runs", "not an array of 6");
            return;
        }
        gb_stage_run_t r = {0};
        gb_stage_t st = parse_stage(s, json_array_get(e, 0), "runs.stage");
        gb_run_state_t state = parse_run_state(s, json_array_get(e, 1), "runs.state");
        r.stage = (uint8_t)st;
        r.state = (uint8_t)state;
        r.attempt =
            (uint8_t)get_int(s, json_array_get(e, 2), "runs.attempt", 1, (int64_t)dev->n_attempts);
        r.started_ms = get_time(s, json_array_get(e, 3), "runs.started");
        r.ended_ms = get_time(s, json_array_get(e, 4), "runs.ended");
        r.has_hresult = get_hr(s, json_array_get(e, 5), "runs.hresult", &r.hresult);
        if (s->ok && (st == GB_STAGE_NONE || state == GB_RUN_NONE || r.attempt < prev_attempt)) {
            bad(s, "runs", "inconsistent run");
        }
        if (!s->ok) {
            return;
        }
        prev_attempt = r.attempt;
        gb_dev_restore_run(dev, &r);
    }
}

static void decode_attempts(snap_t *s, json_t *arr, gb_dev_t *dev, size_t n_runs)
{
    size_t i;
    json_t *e;
    if (json_array_size(arr) < 1 || json_array_size(arr) > GB_DEV_MAX_ATTEMPTS) {
        bad(s, "attempts", "wrong number of attempts");
        return;
    }
    json_array_foreach(arr, i, e)
    {
        if (!json_is_array(e) || json_array_size(e) != 10) {
            bad(s, "attempts", "not an array of 10");
            return;
        }
        gb_attempt_t a;
        memset(&a, 0, sizeof(a));
        a.started_ms = get_time(s, json_array_get(e, 0), "attempts.started");
        a.ended_ms = get_time(s, json_array_get(e, 1), "attempts.ended");
        a.outcome = parse_status(s, json_array_get(e, 2), "attempts.outcome");
        gb_str_t code = get_id(s, json_array_get(e, 3), "attempts.code");
        if (code.len > 0 && !gb_diag_parse(code, &a.diagnosis.code)) {
            bad(s, "attempts.code", "unknown diagnosis");
        }
        a.diagnosis.stage = parse_stage(s, json_array_get(e, 4), "attempts.stage");
        a.diagnosis.has_hresult =
            get_hr(s, json_array_get(e, 5), "attempts.hresult", &a.diagnosis.hresult);
        a.evidence = (uint32_t)get_int(s, json_array_get(e, 6), "attempts.evidence", 0, UINT32_MAX);
        a.has_evidence_hresult =
            get_hr(s, json_array_get(e, 7), "attempts.evidence_hresult", &a.evidence_hresult);
        a.fail_run =
            (int32_t)get_int(s, json_array_get(e, 8), "attempts.fail_run", -1, (int64_t)n_runs - 1);
        a.fail_stage = (uint8_t)parse_stage(s, json_array_get(e, 9), "attempts.fail_stage");
        if (!s->ok) {
            return;
        }
        gb_dev_restore_attempt(dev, &a);
    }
}

static void decode_apps(snap_t *s, json_t *arr, gb_dev_t *dev)
{
    size_t i;
    json_t *e;
    if (json_array_size(arr) > GB_DEV_MAX_APPS) {
        bad(s, "apps", "too many apps");
        return;
    }
    json_array_foreach(arr, i, e)
    {
        if (!json_is_array(e) || json_array_size(e) != 4) {
            bad(s, "apps", "not an array of 4");
            return;
        }
        gb_app_t a;
        memset(&a, 0, sizeof(a));
        json_t *name = json_array_get(e, 0);
        if (!json_is_string(name) || json_string_length(name) > GB_APP_NAME_MAX ||
            memchr(json_string_value(name), '\0', json_string_length(name))) {
            bad(s, "apps.name", "not a valid name");
            return;
        }
        gb_app_state_t st = GB_APP_NONE;
        gb_str_t sid = get_id(s, json_array_get(e, 1), "apps.state");
        if (s->ok && !gb_app_state_parse(sid, &st)) {
            bad(s, "apps.state", "unknown app state");
        }
        a.state = (uint8_t)st;
        json_t *bytes = json_array_get(e, 2);
        if (!json_is_null(bytes)) {
            a.has_bytes = true;
            a.bytes = (uint64_t)get_int(s, bytes, "apps.bytes", 0, INT64_MAX);
        }
        a.has_hresult = get_hr(s, json_array_get(e, 3), "apps.hresult", &a.hresult);
        if (!s->ok) {
            return;
        }
        gb_dev_restore_app(dev, json_string_value(name), &a);
    }
}

static uint64_t get_u64(snap_t *s, json_t *o, const char *k)
{
    return (uint64_t)get_int(s, json_object_get(o, k), k, 0, INT64_MAX);
}

static void decode_fields(snap_t *s, json_t *root, gb_dev_t *dev)
{
    dev->group_tag = get_str(s, root, "group_tag");
    dev->assigned_user = get_str(s, root, "assigned_user");
    dev->profile = get_str(s, root, "profile");
    dev->slot = get_str(s, root, "slot");
    dev->imported = get_bool(s, root, "imported");
    dev->profile_hybrid = get_bool(s, root, "hybrid");
    dev->status = parse_status(s, json_object_get(root, "status"), "status");
    dev->stage = parse_stage(s, json_object_get(root, "stage"), "stage");
    dev->stage_state = parse_run_state(s, json_object_get(root, "stage_state"), "stage_state");
    dev->attempt =
        (uint32_t)get_int(s, json_object_get(root, "attempt"), "attempt", 1, GB_DEV_MAX_ATTEMPTS);
    dev->warnings = (uint32_t)get_int(s, json_object_get(root, "warnings"), "warnings", 0,
                                      (1 << GB_WARN_COUNT) - 1);
    dev->first_time_right = get_bool(s, root, "ftr");
    dev->resealed_ms = get_time(s, json_object_get(root, "resealed"), "resealed");
    dev->first_seen_ms = get_time(s, json_object_get(root, "first_seen"), "first_seen");
    dev->last_seen_ms = get_time(s, json_object_get(root, "last_seen"), "last_seen");
    dev->last_at_ms = get_time(s, json_object_get(root, "last_at"), "last_at");
    dev->last_arrival_ms = get_time(s, json_object_get(root, "last_arrival"), "last_arrival");
    dev->max_seq = get_u64(s, root, "max_seq");
    dev->contig_seq = get_u64(s, root, "contig_seq");
    dev->n_applied = get_u64(s, root, "applied");
    if (s->ok && dev->contig_seq > dev->max_seq) {
        bad(s, "contig_seq", "above max_seq");
    }
    json_t *bytes = get_array(s, root, "bytes", 4);
    json_t *setup = get_array(s, root, "setup", 2);
    if (bytes != NULL && setup != NULL) {
        dev->bytes_total = (uint64_t)get_int(s, json_array_get(bytes, 0), "bytes", 0, INT64_MAX);
        dev->bytes_http = (uint64_t)get_int(s, json_array_get(bytes, 1), "bytes", 0, INT64_MAX);
        dev->bytes_lan = (uint64_t)get_int(s, json_array_get(bytes, 2), "bytes", 0, INT64_MAX);
        dev->bytes_cache = (uint64_t)get_int(s, json_array_get(bytes, 3), "bytes", 0, INT64_MAX);
        dev->setup_bytes = (uint64_t)get_int(s, json_array_get(setup, 0), "setup", 0, INT64_MAX);
        dev->setup_ms = (uint64_t)get_int(s, json_array_get(setup, 1), "setup", 0, INT64_MAX);
    }
    dev->agent = get_str(s, root, "agent");
    dev->os_build = get_str(s, root, "os_build");
    dev->manufacturer = get_str(s, root, "manufacturer");
    dev->model = get_str(s, root, "model");
    dev->tpm_version = get_str(s, root, "tpm_version");
    dev->user_upn = s->version >= 2 ? get_str(s, root, "user_upn") : NULL;
    dev->tpm_attestation =
        (gb_tri_t)get_int(s, json_object_get(root, "tpm_attestation"), "tpm_attestation", 0, 2);
    dev->virtual_machine = (gb_tri_t)get_int(s, json_object_get(root, "vm"), "vm", 0, 2);
    dev->medium = gb_medium_parse(get_id(s, json_object_get(root, "medium"), "medium"));
    json_t *link = json_object_get(root, "link_mbps");
    if (json_is_number(link) && json_number_value(link) >= 0) {
        dev->link_mbps = json_number_value(link);
    } else if (!json_is_null(link)) {
        bad(s, "link_mbps", "not a number or null");
    }
}

int gb_proto_snapshot_decode(const char *json, size_t len, gb_dev_t *dev, gb_error_t *err)
{
    json_error_t jerr;
    snap_t s = {err, true, 0};

    memset(dev, 0, sizeof(*dev));
    json_t *root = json_loadb(json, len, 0, &jerr);
    if (root == NULL || !json_is_object(root)) {
        gb_error_set(err, 500, "invalid_snapshot", NULL, "snapshot is not a JSON object");
        json_decref(root);
        return GB_EINVAL;
    }
    json_t *v = json_object_get(root, "v");
    json_t *serial = json_object_get(root, "serial");
    s.version = json_is_integer(v) ? json_integer_value(v) : 0;
    if (s.version < 1 || s.version > SNAPSHOT_VERSION) {
        bad(&s, "v", "unsupported version");
    } else if (!json_is_string(serial) ||
               memchr(json_string_value(serial), '\0', json_string_length(serial))) {
        bad(&s, "serial", "not a string");
    }
    if (!s.ok) {
        json_decref(root);
        return GB_EINVAL;
    }

    gb_dev_init(dev, json_string_value(serial));
    dev->n_attempts = 0; /* restored below */
    decode_fields(&s, root, dev);
    json_t *runs = get_array(&s, root, "runs", 0);
    json_t *attempts = get_array(&s, root, "attempts", 0);
    json_t *apps = get_array(&s, root, "apps", 0);
    if (s.ok) {
        decode_attempts(&s, attempts, dev, json_array_size(runs));
    }
    if (s.ok) {
        decode_runs(&s, runs, dev);
    }
    if (s.ok) {
        decode_apps(&s, apps, dev);
    }
    if (s.ok && dev->attempt != dev->n_attempts) {
        bad(&s, "attempt", "does not match the attempts");
    }
    json_decref(root);
    if (!s.ok) {
        gb_dev_dispose(dev);
        return GB_EINVAL;
    }
    return 0;
}
