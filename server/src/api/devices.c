/* devices: the staging room's device resources.
 *   GET  /api/v1/devices                   list, filtered, in serial order, keyset-paginated
 *   GET  /api/v1/devices/{serial}          one device in detail, with its recent actions
 *   GET  /api/v1/devices/{serial}/events   the stored messages, in seq order
 *   POST /api/v1/devices/{serial}/actions  retry, note, assign_slot (technician)
 *
 * The list and the detail are answered from the in-memory table (what was last committed);
 * only the events and the actions' history are read from PostgreSQL. Pagination is by serial:
 * the cursor names the last serial of a page and the next page starts after it, so a walk
 * stays complete and free of duplicates while new devices arrive (a device added behind the
 * cursor is simply not in this walk). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "api/internal.h"

#define LIST_LIMIT_DEFAULT   100
#define LIST_LIMIT_MAX       1000
#define EVENTS_LIMIT_DEFAULT 100
#define EVENTS_LIMIT_MAX     1000
#define DETAIL_ACTIONS_MAX   50
#define NOTE_MAX_BYTES       2000
#define SLOT_MAX_BYTES       32
#define QUERY_MAX_BYTES      64

void gb_api__db_unavailable(gb_http_req_t *req, int err)
{
    gb_http_respond_errorf(req, 503, "unavailable", "the database is unavailable (%s); retry later",
                           gb_strerror(err));
}

void gb_api__bad_query(gb_http_req_t *req, const char *field, const char *why)
{
    gb_error_t e;
    gb_error_clear(&e);
    gb_error_set(&e, 400, "invalid_query", field, "query parameter %s: %s", field, why);
    gb_http_respond_error(req, &e);
}

bool gb_api__parse_page(gb_http_req_t *req, const char *after_name, long long limit_default,
                        long long limit_max, long long *after, long long *limit)
{
    gb_str_t v;
    *after = 0;
    *limit = limit_default;
    if (gb_http_req_query(req, after_name, &v) && !gb_api__parse_int(v, 0, INT64_MAX, after)) {
        gb_api__bad_query(req, after_name, "must be an integer of 0 or more");
        return false;
    }
    if (gb_http_req_query(req, "limit", &v) && !gb_api__parse_int(v, 1, limit_max, limit)) {
        char why[64];
        snprintf(why, sizeof(why), "must be an integer from 1 to %lld", limit_max);
        gb_api__bad_query(req, "limit", why);
        return false;
    }
    return true;
}

gb_api_page_op_t *gb_api__page_op_new(gb_http_req_t *req, long long limit)
{
    gb_api_page_op_t *op = gb_arena_alloc(&req->arena, sizeof(*op));
    memset(op, 0, sizeof(*op));
    op->req = req;
    op->limit = limit;
    return op;
}

gb_api_page_op_t *gb_api__page_loaded(gb_pg_query_t *q, int err, size_t nresults)
{
    gb_api_page_op_t *op = gb_container_of(q, gb_api_page_op_t, query);
    if (err != 0 || nresults != 1) {
        gb_api__db_unavailable(op->req, err != 0 ? err : GB_EDB);
        return NULL;
    }
    return op;
}

static void respond_bad_body(gb_http_req_t *req, const char *field, const char *why)
{
    gb_error_t e;
    gb_error_clear(&e);
    gb_error_set(&e, 400, "invalid_request", field, "%s: %s", field, why);
    gb_http_respond_error(req, &e);
}

bool gb_api__parse_fields(gb_http_req_t *req, uint32_t *mask)
{
    gb_str_t v;
    gb_str_t bad;
    if (!gb_http_req_query(req, "fields", &v)) {
        *mask = 0;
        return true;
    }
    if (gb_proto_device_fields_parse(v, mask, &bad)) {
        return true;
    }
    /* The name is shown as far as it is plain: other bytes become '?'. */
    char name[49];
    size_t n = bad.len < sizeof(name) - 1 ? bad.len : sizeof(name) - 1;
    for (size_t i = 0; i < n; i++) {
        char c = bad.p[i];
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                     c == '_' || c == '-';
        name[i] = '?';
        if (plain) {
            name[i] = c;
        }
    }
    name[n] = '\0';
    char why[160];
    snprintf(why, sizeof(why),
             "\"%s\" is not a member of Device (expected a comma-separated list of them)", name);
    gb_api__bad_query(req, "fields", why);
    return false;
}

/* Parses a decimal integer in [min, max]; false for anything else. */
bool gb_api__parse_int(gb_str_t s, long long min, long long max, long long *out)
{
    char buf[24];
    if (s.len == 0 || s.len >= sizeof(buf)) {
        return false;
    }
    memcpy(buf, s.p, s.len);
    buf[s.len] = '\0';
    for (size_t i = 0; i < s.len; i++) {
        if (buf[i] < '0' || buf[i] > '9') {
            return false;
        }
    }
    errno = 0;
    long long v = strtoll(buf, NULL, 10);
    if (errno != 0 || v < min || v > max) {
        return false;
    }
    *out = v;
    return true;
}

/* The device named by the route's {serial}, or NULL after answering 404. */
gb_fleet_dev_t *gb_api__find_or_404(gb_api_t *api, gb_http_req_t *req)
{
    gb_str_t serial = req->params[0];
    gb_fleet_dev_t *fd = NULL;
    if (gb_proto_serial_valid(serial.p, serial.len)) {
        fd = gb_fleet_find(&api->fleet, serial.p, serial.len);
    }
    if (fd == NULL) {
        gb_http_respond_errorf(req, 404, "not_found", "no device has this serial");
    }
    return fd;
}

/* ---- cursor: "s" + the hex of the page's last serial ---- */

static void cursor_encode(const char *serial, gb_buf_t *out)
{
    size_t n = strlen(serial);
    char *hex = gb_xmalloc(2 * n + 1);
    gb_hex_encode((const uint8_t *)serial, n, hex);
    gb_buf_append_str(out, "\"s");
    gb_buf_append_str(out, hex);
    gb_buf_append_str(out, "\"");
    free(hex);
}

/* Decodes a cursor into out (a serial, NUL-terminated); false when it is not one of ours. */
static bool cursor_decode(gb_str_t c, char *out, size_t outlen, size_t *len)
{
    if (c.len < 3 || c.p[0] != 's' || (c.len - 1) % 2 != 0 || (c.len - 1) / 2 >= outlen) {
        return false;
    }
    size_t n = (c.len - 1) / 2;
    for (size_t i = 0; i < n; i++) {
        int hi = gb_hex_value(c.p[1 + 2 * i]);
        int lo = gb_hex_value(c.p[2 + 2 * i]);
        if (hi < 0 || lo < 0) {
            return false;
        }
        out[i] = (char)(hi << 4 | lo);
    }
    out[n] = '\0';
    *len = n;
    return gb_proto_serial_valid(out, n);
}

/* ---- the list ---- */

typedef struct list_filter {
    uint32_t statuses; /* bit per gb_dev_status_t; 0: any */
    bool has_stage;
    gb_stage_t stage;
    bool has_diag;
    gb_diag_code_t diag;
    gb_str_t slot; /* p == NULL: any */
    gb_str_t q;    /* case-insensitive substring of the serial; p == NULL: any */
    int stalled;   /* -1 any, 0 not stalled, 1 stalled */
} list_filter_t;

static bool contains_nocase(const char *hay, gb_str_t needle)
{
    size_t n = strlen(hay);
    if (needle.len > n) {
        return false;
    }
    for (size_t i = 0; i + needle.len <= n; i++) {
        if (strncasecmp(hay + i, needle.p, needle.len) == 0) {
            return true;
        }
    }
    return false;
}

static bool filter_match(const list_filter_t *f, const gb_dev_t *d, const gb_proto_view_opts_t *o)
{
    if (f->statuses != 0 && (f->statuses & (1u << d->status)) == 0) {
        return false;
    }
    if (f->has_stage && d->stage != f->stage) {
        return false;
    }
    if (f->has_diag) {
        const gb_diagnosis_t *dg = gb_dev_diagnosis(d);
        if (dg == NULL || dg->code != f->diag) {
            return false;
        }
    }
    if (f->slot.p != NULL && (d->slot == NULL || strlen(d->slot) != f->slot.len ||
                              memcmp(d->slot, f->slot.p, f->slot.len) != 0)) {
        return false;
    }
    if (f->q.p != NULL && !contains_nocase(d->serial, f->q)) {
        return false;
    }
    if (f->stalled >= 0 &&
        gb_dev_is_stalled(d, o->now_ms, o->stall_timeout_ms) != (f->stalled == 1)) {
        return false;
    }
    return true;
}

/* Reads the filters; answers 400 and returns false on a bad one. */
static bool parse_filter(gb_http_req_t *req, list_filter_t *f)
{
    gb_str_t v;
    memset(f, 0, sizeof(*f));
    f->stalled = -1;
    if (gb_http_req_query(req, "status", &v)) {
        size_t i = 0;
        while (i <= v.len) {
            size_t j = i;
            while (j < v.len && v.p[j] != ',') {
                j++;
            }
            gb_dev_status_t st;
            if (!gb_dev_status_parse((gb_str_t){v.p + i, j - i}, &st)) {
                gb_api__bad_query(req, "status",
                                  "expected registered, provisioning, green, red, resealed, "
                                  "handover or delivered (a comma-separated list is allowed)");
                return false;
            }
            f->statuses |= 1u << st;
            i = j + 1;
        }
    }
    if (gb_http_req_query(req, "stage", &v)) {
        if (!gb_stage_parse(v, &f->stage)) {
            gb_api__bad_query(req, "stage", "not a stage id of the contract");
            return false;
        }
        f->has_stage = true;
    }
    if (gb_http_req_query(req, "diagnosis", &v)) {
        if (!gb_diag_parse(v, &f->diag)) {
            gb_api__bad_query(req, "diagnosis", "not a diagnosis code of the contract");
            return false;
        }
        f->has_diag = true;
    }
    if (gb_http_req_query(req, "slot", &v)) {
        if (v.len == 0 || v.len > SLOT_MAX_BYTES) {
            gb_api__bad_query(req, "slot", "must be 1 to 32 bytes");
            return false;
        }
        f->slot = v;
    }
    if (gb_http_req_query(req, "q", &v) && v.len > 0) {
        if (v.len > QUERY_MAX_BYTES) {
            gb_api__bad_query(req, "q", "must be at most 64 bytes");
            return false;
        }
        f->q = v;
    }
    if (gb_http_req_query(req, "stalled", &v)) {
        if (gb_str_eq_cstr(v, "true")) {
            f->stalled = 1;
        } else if (gb_str_eq_cstr(v, "false")) {
            f->stalled = 0;
        } else {
            gb_api__bad_query(req, "stalled", "expected true or false");
            return false;
        }
    }
    return true;
}

static void on_list(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    (void)who;
    list_filter_t f;
    gb_str_t v;
    long long limit = LIST_LIMIT_DEFAULT;
    char after[128];
    size_t after_len = 0;
    bool has_after = false;

    if (!parse_filter(req, &f)) {
        return;
    }
    if (gb_http_req_query(req, "limit", &v) && !gb_api__parse_int(v, 1, LIST_LIMIT_MAX, &limit)) {
        gb_api__bad_query(req, "limit", "must be an integer from 1 to 1000");
        return;
    }
    if (gb_http_req_query(req, "cursor", &v) && v.len > 0) {
        if (!cursor_decode(v, after, sizeof(after), &after_len)) {
            gb_api__bad_query(req, "cursor", "not a cursor this server gave out");
            return;
        }
        has_after = true;
    }

    gb_proto_view_opts_t opts;
    gb_api__view_opts(api, &opts);
    if (!gb_api__parse_fields(req, &opts.fields)) {
        return;
    }
    gb_buf_t out;
    gb_buf_init(&out);
    /* A Device is 500 to 900 bytes; fewer fields make it smaller. */
    gb_buf_reserve(&out, (size_t)limit * (opts.fields != 0 ? 256 : 768));
    gb_buf_append_str(&out, "{\"devices\":[");
    long long n = 0;
    const gb_fleet_dev_t *last = NULL;
    bool more = false;
    for (gb_fleet_dev_t *fd =
             gb_fleet_first_after(&api->fleet, has_after ? after : NULL, after_len);
         fd != NULL; fd = gb_fleet_next(&api->fleet, fd)) {
        if (!filter_match(&f, &fd->dev, &opts)) {
            continue;
        }
        if (n == limit) {
            more = true;
            break;
        }
        if (n > 0) {
            gb_buf_append_str(&out, ",");
        }
        gb_proto_device_json(&fd->dev, &opts, &out);
        last = fd;
        n++;
    }
    gb_buf_append_str(&out, "],\"next_cursor\":");
    if (more && last != NULL) {
        cursor_encode(last->key, &out);
    } else {
        gb_buf_append_str(&out, "null");
    }
    gb_buf_append_str(&out, "}");
    gb_http_respond_json(req, 200, &out);
    gb_buf_dispose(&out);
}

/* ---- the detail ---- */

typedef struct detail_op {
    gb_pg_query_t query;
    gb_api_t *api;
    gb_http_req_t *req;
    const char *params[1];
} detail_op_t;

/* Appends the detail with "actions" (the rows of res, newest first; null when res is NULL). */
static void write_detail(gb_api_t *api, const gb_fleet_dev_t *fd, const PGresult *res,
                         gb_buf_t *out)
{
    gb_proto_view_opts_t opts;
    gb_api__view_opts(api, &opts);
    gb_proto_device_detail_json(&fd->dev, &opts, out);
    GB_ASSERT(out->len > 0 && out->data[out->len - 1] == '}');
    out->len--; /* reopen the object */
    gb_buf_append_str(out, ",\"actions\":");
    if (res == NULL) {
        gb_buf_append_str(out, "null}");
        return;
    }
    gb_buf_append_str(out, "[");
    char at[32];
    for (int r = 0; r < PQntuples(res); r++) {
        if (r > 0) {
            gb_buf_append_str(out, ",");
        }
        gb_time_format_rfc3339(strtoll(PQgetvalue(res, r, 0), NULL, 10), at);
        gb_buf_appendf(out, "{\"at\":\"%s\",\"actor\":", at);
        gb_json_quote(out, PQgetvalue(res, r, 1), (size_t)PQgetlength(res, r, 1));
        gb_buf_append_str(out, ",\"action\":");
        gb_json_quote(out, PQgetvalue(res, r, 2), (size_t)PQgetlength(res, r, 2));
        gb_buf_append_str(out, ",\"detail\":");
        gb_buf_append(out, PQgetvalue(res, r, 3), (size_t)PQgetlength(res, r, 3));
        gb_buf_append_str(out, "}");
    }
    gb_buf_append_str(out, "]}");
}

static void respond_detail(gb_api_t *api, gb_http_req_t *req, const PGresult *res)
{
    const char *serial = req->params[0].p;
    gb_fleet_dev_t *fd = NULL;
    if (gb_proto_serial_valid(serial, req->params[0].len)) {
        fd = gb_fleet_find(&api->fleet, serial, req->params[0].len);
    }
    if (fd == NULL) {
        gb_http_respond_errorf(req, 404, "not_found", "no device has this serial");
        return;
    }
    gb_buf_t out;
    gb_buf_init(&out);
    write_detail(api, fd, res, &out);
    gb_http_respond_json(req, 200, &out);
    gb_buf_dispose(&out);
}

static void on_detail_actions(gb_pg_query_t *q, int err, PGresult *const *results, size_t nresults)
{
    detail_op_t *op = gb_container_of(q, detail_op_t, query);
    /* Without the database the detail is still worth having: actions is null then. The device
     * is looked up again, as the table may have changed while the query ran. */
    respond_detail(op->api, op->req, err == 0 && nresults == 1 ? results[0] : NULL);
}

void gb_api__device_detail_respond(gb_api_t *api, gb_http_req_t *req, gb_fleet_dev_t *fd)
{
    detail_op_t *op = gb_arena_alloc(&req->arena, sizeof(*op));
    memset(op, 0, sizeof(*op));
    op->api = api;
    op->req = req;
    op->params[0] = gb_arena_strndup(&req->arena, fd->key, strlen(fd->key));
    /* The route's serial is what respond_detail looks up; an action's request has it too. */
    gb_pg_query_init(&op->query,
                     "SELECT (extract(epoch FROM at) * 1000)::bigint, actor, action, detail::text "
                     "FROM device_actions WHERE serial = $1 ORDER BY id DESC LIMIT 50",
                     1, op->params, on_detail_actions);
    if (gb_pg_submit(api->pg, &op->query) < 0) {
        respond_detail(api, req, NULL);
    }
}

static void on_detail(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    (void)who;
    gb_fleet_dev_t *fd = gb_api__find_or_404(api, req);
    if (fd != NULL) {
        gb_api__device_detail_respond(api, req, fd);
    }
}

/* ---- events ---- */

static void on_events_loaded(gb_pg_query_t *q, int err, PGresult *const *results, size_t nresults)
{
    gb_api_page_op_t *op = gb_api__page_loaded(q, err, nresults);
    if (op == NULL) {
        return;
    }
    gb_http_req_t *req = op->req;
    const PGresult *res = results[0];
    int rows = PQntuples(res);
    bool more = rows > op->limit;
    if (more) {
        rows = (int)op->limit;
    }
    gb_buf_t out;
    char at[32];
    gb_buf_init(&out);
    gb_buf_append_str(&out, "{\"serial\":");
    gb_json_quote(&out, op->params[0], strlen(op->params[0]));
    gb_buf_append_str(&out, ",\"events\":[");
    for (int r = 0; r < rows; r++) {
        if (r > 0) {
            gb_buf_append_str(&out, ",");
        }
        gb_buf_appendf(&out, "{\"seq\":%s,\"type\":", PQgetvalue(res, r, 0));
        gb_json_quote(&out, PQgetvalue(res, r, 1), (size_t)PQgetlength(res, r, 1));
        gb_time_format_rfc3339(strtoll(PQgetvalue(res, r, 2), NULL, 10), at);
        gb_buf_appendf(&out, ",\"at\":\"%s\"", at);
        gb_time_format_rfc3339(strtoll(PQgetvalue(res, r, 3), NULL, 10), at);
        gb_buf_appendf(&out, ",\"received_at\":\"%s\",\"message\":", at);
        gb_buf_append(&out, PQgetvalue(res, r, 4), (size_t)PQgetlength(res, r, 4));
        gb_buf_append_str(&out, "}");
    }
    gb_buf_append_str(&out, "],\"next_after_seq\":");
    if (more && rows > 0) {
        gb_buf_append_str(&out, PQgetvalue(res, rows - 1, 0));
    } else {
        gb_buf_append_str(&out, "null");
    }
    gb_buf_append_str(&out, "}");
    gb_http_respond_json(req, 200, &out);
    gb_buf_dispose(&out);
}

static void on_events(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    (void)who;
    long long after, limit;
    if (!gb_api__parse_page(req, "after_seq", EVENTS_LIMIT_DEFAULT, EVENTS_LIMIT_MAX, &after,
                            &limit)) {
        return;
    }
    gb_fleet_dev_t *fd = gb_api__find_or_404(api, req);
    if (fd == NULL) {
        return;
    }
    gb_api_page_op_t *op = gb_api__page_op_new(req, limit);
    op->params[0] = gb_arena_strndup(&req->arena, fd->key, strlen(fd->key));
    char num[24];
    snprintf(num, sizeof(num), "%lld", after);
    op->params[1] = gb_arena_strndup(&req->arena, num, strlen(num));
    snprintf(num, sizeof(num), "%lld", limit + 1); /* one more tells whether a next page exists */
    op->params[2] = gb_arena_strndup(&req->arena, num, strlen(num));
    gb_pg_query_init(&op->query,
                     "SELECT seq, type, (extract(epoch FROM at) * 1000)::bigint, "
                     "(extract(epoch FROM received_at) * 1000)::bigint, body::text FROM events "
                     "WHERE serial = $1 AND seq > $2::bigint ORDER BY seq LIMIT $3::int",
                     3, op->params, on_events_loaded);
    int rc = gb_pg_submit(api->pg, &op->query);
    if (rc < 0) {
        gb_api__db_unavailable(req, rc);
    }
}

/* ---- actions ---- */

/* A slot or a note: printable, no control characters (tabs and newlines allowed in notes). */
static bool text_ok(const char *s, size_t len, bool multiline)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 && !(multiline && (c == '\n' || c == '\t' || c == '\r'))) {
            return false;
        }
        if (c == 0x7f) {
            return false;
        }
    }
    return true;
}

static void on_action(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    if (!gb_api__is_json(req)) {
        gb_http_respond_errorf(req, 415, "unsupported_media_type",
                               "actions must be sent as Content-Type: application/json");
        return;
    }
    json_error_t jerr;
    json_t *root =
        json_loadb(req->body.data != NULL ? req->body.data : "", req->body.len, 0, &jerr);
    if (root == NULL) {
        gb_http_respond_errorf(req, 400, "malformed_json", "the body is not JSON: %s", jerr.text);
        return;
    }
    gb_api_action_t action = GB_API_ACTION_NONE;
    const char *arg = NULL;
    const char *name =
        json_is_object(root) ? json_string_value(json_object_get(root, "action")) : NULL;
    if (!json_is_object(root)) {
        respond_bad_body(req, "action",
                         "the body must be an object such as {\"action\": \"retry\"}");
        goto out;
    }
    if (name == NULL) {
        respond_bad_body(req, "action", "required: \"retry\", \"note\" or \"assign_slot\"");
        goto out;
    }
    if (strcmp(name, "retry") == 0) {
        action = GB_API_ACTION_RETRY;
    } else if (strcmp(name, "note") == 0) {
        json_t *t = json_object_get(root, "text");
        size_t len = json_string_length(t);
        if (!json_is_string(t) || len == 0 || len > NOTE_MAX_BYTES ||
            !text_ok(json_string_value(t), len, true)) {
            respond_bad_body(req, "text",
                             "a note needs a text of 1 to 2000 bytes without control characters");
            goto out;
        }
        action = GB_API_ACTION_NOTE;
        arg = json_string_value(t);
    } else if (strcmp(name, "assign_slot") == 0) {
        json_t *t = json_object_get(root, "slot");
        if (json_is_null(t)) {
            arg = NULL;
        } else {
            size_t len = json_string_length(t);
            if (!json_is_string(t) || len == 0 || len > SLOT_MAX_BYTES ||
                !text_ok(json_string_value(t), len, false)) {
                respond_bad_body(req, "slot",
                                 "a slot is 1 to 32 bytes without control characters, or null");
                goto out;
            }
            arg = json_string_value(t);
        }
        action = GB_API_ACTION_ASSIGN_SLOT;
    } else {
        respond_bad_body(req, "action", "expected \"retry\", \"note\" or \"assign_slot\"");
        goto out;
    }
    gb_fleet_dev_t *fd = gb_api__find_or_404(api, req);
    if (fd != NULL) {
        gb_api__ingest_action(api, req, who, fd->key, action, arg);
    }
out:
    json_decref(root);
}

void gb_api__devices_register(gb_api_t *api)
{
    gb_api__route(api, GB_HTTP_GET, "/api/v1/devices", GB_ROLE_VIEWER, on_list);
    gb_api__route(api, GB_HTTP_GET, "/api/v1/devices/{serial}", GB_ROLE_VIEWER, on_detail);
    gb_api__route(api, GB_HTTP_GET, "/api/v1/devices/{serial}/events", GB_ROLE_VIEWER, on_events);
    gb_api__route(api, GB_HTTP_POST, "/api/v1/devices/{serial}/actions", GB_ROLE_TECHNICIAN,
                  on_action);
}
