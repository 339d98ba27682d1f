/* decode: the agent protocol from JSON (jansson) into validated gb_msg_t, and back as canonical
 * JSON. Every check names the field at fault by its full path ("messages[3].at") and the
 * message's index; the first fault found rejects the whole request. Strings are copied into the
 * request's arena, NUL-terminated, so the parsed tree is freed before returning. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "protocol/protocol.h"

/* Decoding context: where strings go, where errors go, and how fields are named. */
typedef struct dec {
    gb_arena_t *arena;
    gb_error_t *err;
    long index;      /* message index; -1 for a lone message (fields have no prefix) */
    const char *obj; /* nested object name ("hardware.") or "" */
} dec_t;

/* Sets invalid_message for key (NULL: the message itself) with why; returns false. */
static bool fail(dec_t *d, const char *key, const char *why)
{
    char prefix[32] = "", field[96];

    /* The path is only spelled out on failure: formatting it for every message costs time. */
    if (d->index >= 0 && key != NULL) {
        snprintf(prefix, sizeof(prefix), "messages[%ld].", d->index);
    } else if (d->index >= 0) {
        snprintf(prefix, sizeof(prefix), "messages[%ld]", d->index);
    }
    snprintf(field, sizeof(field), "%s%s%s", prefix, key != NULL ? d->obj : "",
             key != NULL ? key : "");
    gb_error_set(d->err, 400, "invalid_message", field, "%s", why);
    d->err->index = d->index;
    return false;
}

/* A JSON string, checked; copied into the arena when it outlives the decode (copy), else
 * pointing into the parsed tree. p == NULL (and no error) when absent and optional. */
static bool get_str_ex(dec_t *d, json_t *obj, const char *key, bool required, size_t min,
                       size_t max, bool copy, gb_str_t *out)
{
    json_t *v = json_object_get(obj, key);
    out->p = NULL;
    out->len = 0;
    if (v == NULL || json_is_null(v)) {
        if (required) {
            return fail(d, key, "required");
        }
        return true;
    }
    if (!json_is_string(v)) {
        return fail(d, key, "must be a string");
    }
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (memchr(s, '\0', n) != NULL) {
        return fail(d, key, "must not contain U+0000");
    }
    if (n < min) {
        return fail(d, key, min == 1 ? "must not be empty" : "too short");
    }
    if (n > max) {
        char why[48];
        snprintf(why, sizeof(why), "longer than %zu bytes", max);
        return fail(d, key, why);
    }
    out->p = copy ? gb_arena_strndup(d->arena, s, n) : s;
    out->len = n;
    return true;
}

static bool get_str(dec_t *d, json_t *obj, const char *key, bool required, size_t min, size_t max,
                    gb_str_t *out)
{
    return get_str_ex(d, obj, key, required, min, max, true, out);
}

/* An identifier that is parsed right away (type, stage, state...): no copy. */
static bool get_id(dec_t *d, json_t *obj, const char *key, size_t max, gb_str_t *out)
{
    return get_str_ex(d, obj, key, true, 1, max, false, out);
}

/* A JSON integer in [min, max]. *present says whether it was there (absent: *out untouched). */
static bool get_int(dec_t *d, json_t *obj, const char *key, bool required, long long min,
                    long long max, long long *out, bool *present)
{
    json_t *v = json_object_get(obj, key);
    if (present != NULL) {
        *present = false;
    }
    if (v == NULL || json_is_null(v)) {
        if (required) {
            return fail(d, key, "required");
        }
        return true;
    }
    if (!json_is_integer(v)) {
        return fail(d, key, "must be an integer");
    }
    long long x = json_integer_value(v);
    if (x < min || x > max) {
        char why[80];
        snprintf(why, sizeof(why), "must be between %lld and %lld", min, max);
        return fail(d, key, why);
    }
    *out = x;
    if (present != NULL) {
        *present = true;
    }
    return true;
}

static bool get_tri(dec_t *d, json_t *obj, const char *key, gb_tri_t *out)
{
    json_t *v = json_object_get(obj, key);
    *out = GB_TRI_UNSET;
    if (v == NULL || json_is_null(v)) {
        return true;
    }
    if (!json_is_boolean(v)) {
        return fail(d, key, "must be true or false");
    }
    *out = json_is_true(v) ? GB_TRI_TRUE : GB_TRI_FALSE;
    return true;
}

static bool get_hresult(dec_t *d, json_t *obj, const char *key, bool *has, uint32_t *out)
{
    gb_str_t s;
    *has = false;
    *out = 0;
    if (!get_str_ex(d, obj, key, false, 1, 10, false, &s)) {
        return false;
    }
    if (s.p == NULL) {
        return true;
    }
    if (!gb_hresult_parse(s, out)) {
        return fail(d, key, "must be a hex HRESULT such as 0x800705B4");
    }
    *has = true;
    return true;
}

static bool decode_hello(dec_t *d, json_t *m, gb_msg_hello_t *h)
{
    memset(h, 0, sizeof(*h));
    h->link_mbps = -1;
    if (!get_str(d, m, "agent", true, 1, GB_PROTO_AGENT_MAX, &h->agent) ||
        !get_str(d, m, "os_build", false, 0, GB_PROTO_OS_BUILD_MAX, &h->os_build) ||
        !get_str(d, m, "slot", false, 1, GB_PROTO_SLOT_MAX, &h->slot)) {
        return false;
    }
    json_t *hw = json_object_get(m, "hardware");
    if (hw != NULL && !json_is_null(hw)) {
        if (!json_is_object(hw)) {
            return fail(d, "hardware", "must be an object");
        }
        d->obj = "hardware.";
        bool ok = get_str(d, hw, "manufacturer", false, 0, GB_PROTO_HW_STR_MAX, &h->manufacturer) &&
                  get_str(d, hw, "model", false, 0, GB_PROTO_HW_STR_MAX, &h->model) &&
                  get_str(d, hw, "tpm_version", false, 0, GB_PROTO_TPM_VER_MAX, &h->tpm_version) &&
                  get_tri(d, hw, "tpm_attestation", &h->tpm_attestation) &&
                  get_tri(d, hw, "virtual_machine", &h->virtual_machine);
        d->obj = "";
        if (!ok) {
            return false;
        }
    }
    json_t *net = json_object_get(m, "network");
    if (net != NULL && !json_is_null(net)) {
        if (!json_is_object(net)) {
            return fail(d, "network", "must be an object");
        }
        d->obj = "network.";
        gb_str_t medium;
        bool ok = get_str_ex(d, net, "medium", false, 1, GB_PROTO_MEDIUM_MAX, false, &medium);
        if (ok && medium.p != NULL) {
            h->medium = gb_medium_parse(medium);
        }
        json_t *link = json_object_get(net, "link_mbps");
        if (ok && link != NULL && !json_is_null(link)) {
            double x = json_is_number(link) ? json_number_value(link) : -1;
            if (!json_is_number(link)) {
                ok = fail(d, "link_mbps", "must be a number");
            } else if (!(x >= 0 && x <= GB_PROTO_LINK_MBPS_MAX)) {
                ok = fail(d, "link_mbps", "must be between 0 and 1000000");
            } else {
                h->link_mbps = x;
            }
        }
        d->obj = "";
        if (!ok) {
            return false;
        }
    }
    return true;
}

static bool decode_stage(dec_t *d, json_t *m, gb_msg_stage_t *s)
{
    gb_str_t v;
    memset(s, 0, sizeof(*s));
    if (!get_id(d, m, "stage", 64, &v)) {
        return false;
    }
    if (!gb_stage_parse(v, &s->stage)) {
        return fail(d, "stage", "unknown stage id");
    }
    if (!get_id(d, m, "state", 16, &v)) {
        return false;
    }
    if (!gb_run_state_parse(v, &s->state)) {
        return fail(d, "state", "must be started, succeeded, failed or skipped");
    }
    if (!get_str(d, m, "upn", false, 1, GB_PROTO_UPN_MAX, &s->upn)) {
        return false;
    }
    if (s->upn.p != NULL) {
        char why[160];
        if (s->stage != GB_STAGE_USER_SIGNIN) {
            return fail(d, "upn", "only a user_signin stage names the user who signed in");
        }
        if (!gb_assigned_user_check(s->upn.p, why, sizeof(why))) {
            return fail(d, "upn", why);
        }
    }
    return get_hresult(d, m, "hresult", &s->has_hresult, &s->hresult);
}

static bool decode_app(dec_t *d, json_t *m, gb_msg_app_t *a)
{
    gb_str_t v;
    long long bytes = -1;
    memset(a, 0, sizeof(*a));
    if (!get_str(d, m, "name", true, 1, GB_PROTO_APP_NAME_MAX, &a->name) ||
        !get_id(d, m, "state", 16, &v)) {
        return false;
    }
    if (!gb_app_state_parse(v, &a->state)) {
        return fail(d, "state", "must be downloading, installing, installed or failed");
    }
    if (!get_int(d, m, "bytes", false, 0, GB_PROTO_MAX_INT, &bytes, NULL)) {
        return false;
    }
    a->bytes = bytes;
    return get_hresult(d, m, "hresult", &a->has_hresult, &a->hresult);
}

static bool decode_download(dec_t *d, json_t *m, gb_msg_download_t *dl)
{
    long long v[5] = {0, 0, -1, -1, -1};
    if (!get_int(d, m, "bytes", true, 0, GB_PROTO_MAX_INT, &v[0], NULL) ||
        !get_int(d, m, "ms", true, 1, GB_PROTO_MS_MAX, &v[1], NULL) ||
        !get_int(d, m, "http_bytes", false, 0, GB_PROTO_MAX_INT, &v[2], NULL) ||
        !get_int(d, m, "lan_bytes", false, 0, GB_PROTO_MAX_INT, &v[3], NULL) ||
        !get_int(d, m, "cache_bytes", false, 0, GB_PROTO_MAX_INT, &v[4], NULL)) {
        return false;
    }
    dl->bytes = v[0];
    dl->ms = v[1];
    dl->http_bytes = v[2];
    dl->lan_bytes = v[3];
    dl->cache_bytes = v[4];
    return true;
}

static bool decode_winevent(dec_t *d, json_t *m, gb_msg_winevent_t *w)
{
    long long id = 0;
    memset(w, 0, sizeof(*w));
    if (!get_str(d, m, "channel", true, 1, GB_PROTO_CHANNEL_MAX, &w->channel) ||
        !get_int(d, m, "event_id", true, 0, 65535, &id, NULL) ||
        !get_str(d, m, "message", false, 0, GB_PROTO_EVENT_MSG_MAX, &w->message)) {
        return false;
    }
    w->event_id = (uint32_t)id;
    if (w->message.p == NULL) {
        w->message.p = "";
    }
    return true;
}

static bool decode_result(dec_t *d, json_t *m, gb_screen_t *out)
{
    gb_str_t v;
    if (!get_id(d, m, "screen", 16, &v)) {
        return false;
    }
    if (!gb_screen_parse(v, out)) {
        return fail(d, "screen", "must be green or red");
    }
    return true;
}

static bool decode_msg(dec_t *d, json_t *m, gb_msg_t *out)
{
    long long seq = 0;
    gb_str_t at, type;

    if (!json_is_object(m)) {
        return fail(d, NULL, "must be an object");
    }
    memset(out, 0, sizeof(*out));
    if (!get_int(d, m, "seq", true, 1, GB_PROTO_MAX_INT, &seq, NULL) ||
        !get_id(d, m, "at", GB_PROTO_AT_MAX, &at)) {
        return false;
    }
    if (!gb_time_parse_rfc3339(at.p, at.len, &out->at_ms)) {
        return fail(d, "at", "must be an RFC 3339 date-time such as 2026-11-24T10:00:00.000Z");
    }
    if (!get_id(d, m, "type", 16, &type)) {
        return false;
    }
    if (!gb_msg_type_parse(type, &out->type)) {
        return fail(d, "type", "unknown message type");
    }
    out->seq = (uint64_t)seq;
    out->index = d->index >= 0 ? (uint32_t)d->index : 0;
    switch (out->type) {
    case GB_MSG_HELLO:
        return decode_hello(d, m, &out->u.hello);
    case GB_MSG_STAGE:
        return decode_stage(d, m, &out->u.stage);
    case GB_MSG_APP:
        return decode_app(d, m, &out->u.app);
    case GB_MSG_DOWNLOAD:
        return decode_download(d, m, &out->u.download);
    case GB_MSG_WINEVENT:
        return decode_winevent(d, m, &out->u.winevent);
    case GB_MSG_RESULT:
        return decode_result(d, m, &out->u.result);
    case GB_MSG_HEARTBEAT:
    case GB_MSG_TYPE_COUNT:
        break;
    }
    return true;
}

static json_t *parse(const char *text, size_t len, gb_error_t *err)
{
    json_error_t jerr;
    /* A string holding U+0000, or a bare scalar, is valid JSON: the checks below name the fault. */
    json_t *root = json_loadb(text, len, JSON_ALLOW_NUL | JSON_DECODE_ANY, &jerr);
    if (root == NULL) {
        gb_error_set(err, 400, "malformed_json", NULL, "malformed JSON at line %d column %d: %s",
                     jerr.line, jerr.column, jerr.text);
    }
    return root;
}

bool gb_proto_serial_valid(const char *s, size_t len)
{
    if (len == 0 || len > GB_PROTO_SERIAL_MAX) {
        return false;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x21 || c > 0x7e || c == '/' || c == '\\' || c == '?' || c == '#' || c == '%') {
            return false;
        }
    }
    return true;
}

static int decode_body(json_t *root, gb_arena_t *arena, gb_proto_request_t *out, gb_error_t *err)
{
    if (!json_is_object(root)) {
        gb_error_set(err, 400, "invalid_request", NULL, "the body must be a JSON object");
        return GB_EINVAL;
    }
    json_t *proto = json_object_get(root, "protocol");
    if (!json_is_integer(proto) || json_integer_value(proto) != GB_PROTO_VERSION) {
        gb_error_set(err, 400, "unsupported_protocol", "protocol", "this server speaks protocol %d",
                     GB_PROTO_VERSION);
        return GB_EINVAL;
    }
    json_t *device = json_object_get(root, "device");
    if (!json_is_object(device)) {
        gb_error_set(err, 400, "invalid_request", "device", "device must be an object");
        return GB_EINVAL;
    }
    json_t *serial = json_object_get(device, "serial");
    if (!json_is_string(serial) ||
        !gb_proto_serial_valid(json_string_value(serial), json_string_length(serial))) {
        gb_error_set(err, 400, "invalid_request", "device.serial",
                     "serial must be 1 to %d printable ASCII characters without spaces or "
                     "/ \\ ? # %%",
                     GB_PROTO_SERIAL_MAX);
        return GB_EINVAL;
    }
    json_t *msgs = json_object_get(root, "messages");
    if (!json_is_array(msgs)) {
        gb_error_set(err, 400, "invalid_request", "messages", "messages must be an array");
        return GB_EINVAL;
    }
    size_t n = json_array_size(msgs);
    if (n < 1 || n > GB_PROTO_MAX_MESSAGES) {
        gb_error_set(err, 400, "invalid_request", "messages",
                     "a request carries 1 to %d messages, not %zu", GB_PROTO_MAX_MESSAGES, n);
        return GB_EINVAL;
    }

    gb_msg_t *decoded = gb_arena_alloc(arena, n * sizeof(*decoded));
    dec_t d = {.arena = arena, .err = err, .obj = ""};
    for (size_t i = 0; i < n; i++) {
        d.index = (long)i;
        if (!decode_msg(&d, json_array_get(msgs, i), &decoded[i])) {
            return GB_EINVAL;
        }
    }
    out->serial_len = json_string_length(serial);
    out->serial = gb_arena_strndup(arena, json_string_value(serial), out->serial_len);
    out->msgs = decoded;
    out->n_msgs = n;
    return 0;
}

int gb_proto_decode_request(const char *body, size_t len, gb_arena_t *arena,
                            gb_proto_request_t *out, gb_error_t *err)
{
    json_t *root = parse(body, len, err);
    if (root == NULL) {
        return GB_EINVAL;
    }
    int rc = decode_body(root, arena, out, err);
    json_decref(root);
    return rc;
}

int gb_proto_decode_message(const char *json, size_t len, gb_arena_t *arena, gb_msg_t *out,
                            gb_error_t *err)
{
    json_t *root = parse(json, len, err);
    if (root == NULL) {
        return GB_EINVAL;
    }
    gb_msg_t m;
    dec_t d = {.arena = arena, .err = err, .index = -1, .obj = ""};
    bool ok = decode_msg(&d, root, &m);
    json_decref(root);
    if (!ok) {
        return GB_EINVAL;
    }
    *out = m;
    return 0;
}

/* ---- canonical JSON of one message ---- */

static void put_key(gb_buf_t *b, const char *key)
{
    gb_buf_append(b, ",\"", 2);
    gb_buf_append_str(b, key);
    gb_buf_append(b, "\":", 2);
}

static void put_str(gb_buf_t *b, const char *key, gb_str_t s)
{
    if (s.p == NULL) {
        return;
    }
    put_key(b, key);
    gb_json_quote(b, s.p, s.len);
}

static void put_cstr(gb_buf_t *b, const char *key, const char *s)
{
    put_key(b, key);
    gb_json_quote(b, s, strlen(s));
}

static void put_int(gb_buf_t *b, const char *key, long long v)
{
    put_key(b, key);
    gb_buf_appendf(b, "%lld", v);
}

static void put_hresult(gb_buf_t *b, const char *key, bool has, uint32_t hr)
{
    char s[11];
    if (!has) {
        return;
    }
    gb_hresult_format(hr, s);
    put_cstr(b, key, s);
}

static void put_tri(gb_buf_t *b, const char *key, gb_tri_t t)
{
    if (t == GB_TRI_UNSET) {
        return;
    }
    put_key(b, key);
    gb_buf_append_str(b, t == GB_TRI_TRUE ? "true" : "false");
}

static void encode_hello(gb_buf_t *b, const gb_msg_hello_t *h)
{
    put_str(b, "agent", h->agent);
    put_str(b, "os_build", h->os_build);
    if (h->manufacturer.p || h->model.p || h->tpm_version.p || h->tpm_attestation ||
        h->virtual_machine) {
        put_key(b, "hardware");
        gb_buf_append(b, "{", 1);
        size_t inner = b->len;
        put_str(b, "manufacturer", h->manufacturer);
        put_str(b, "model", h->model);
        put_str(b, "tpm_version", h->tpm_version);
        put_tri(b, "tpm_attestation", h->tpm_attestation);
        put_tri(b, "virtual_machine", h->virtual_machine);
        /* Drop the leading comma of the first member. */
        memmove(b->data + inner, b->data + inner + 1, b->len - inner - 1);
        b->len--;
        gb_buf_append(b, "}", 1);
    }
    if (h->medium != GB_MEDIUM_UNKNOWN || h->link_mbps >= 0) {
        put_key(b, "network");
        gb_buf_append(b, "{", 1);
        const char *sep = "";
        if (h->medium != GB_MEDIUM_UNKNOWN) {
            gb_buf_append_str(b, "\"medium\":");
            gb_json_quote(b, gb_medium_id(h->medium), strlen(gb_medium_id(h->medium)));
            sep = ",";
        }
        if (h->link_mbps >= 0) {
            gb_buf_appendf(b, "%s\"link_mbps\":%.17g", sep, h->link_mbps);
        }
        gb_buf_append(b, "}", 1);
    }
    put_str(b, "slot", h->slot);
}

void gb_proto_encode_message(const gb_msg_t *msg, gb_buf_t *out)
{
    char at[32];
    gb_time_format_rfc3339(msg->at_ms, at);
    gb_buf_appendf(out, "{\"seq\":%llu,\"at\":\"%s\",\"type\":\"%s\"", (unsigned long long)msg->seq,
                   at, gb_msg_type_id(msg->type));
    switch (msg->type) {
    case GB_MSG_HELLO:
        encode_hello(out, &msg->u.hello);
        break;
    case GB_MSG_STAGE:
        put_cstr(out, "stage", gb_stage_id(msg->u.stage.stage));
        put_cstr(out, "state", gb_run_state_id(msg->u.stage.state));
        put_hresult(out, "hresult", msg->u.stage.has_hresult, msg->u.stage.hresult);
        if (msg->u.stage.upn.p != NULL) {
            put_str(out, "upn", msg->u.stage.upn);
        }
        break;
    case GB_MSG_APP:
        put_str(out, "name", msg->u.app.name);
        put_cstr(out, "state", gb_app_state_id(msg->u.app.state));
        if (msg->u.app.bytes >= 0) {
            put_int(out, "bytes", msg->u.app.bytes);
        }
        put_hresult(out, "hresult", msg->u.app.has_hresult, msg->u.app.hresult);
        break;
    case GB_MSG_DOWNLOAD: {
        const gb_msg_download_t *d = &msg->u.download;
        put_int(out, "bytes", d->bytes);
        put_int(out, "ms", d->ms);
        if (d->http_bytes >= 0) {
            put_int(out, "http_bytes", d->http_bytes);
        }
        if (d->lan_bytes >= 0) {
            put_int(out, "lan_bytes", d->lan_bytes);
        }
        if (d->cache_bytes >= 0) {
            put_int(out, "cache_bytes", d->cache_bytes);
        }
        break;
    }
    case GB_MSG_WINEVENT:
        put_str(out, "channel", msg->u.winevent.channel);
        put_int(out, "event_id", msg->u.winevent.event_id);
        put_str(out, "message", msg->u.winevent.message);
        break;
    case GB_MSG_RESULT:
        put_cstr(out, "screen", gb_screen_id(msg->u.result));
        break;
    case GB_MSG_HEARTBEAT:
    case GB_MSG_TYPE_COUNT:
        break;
    }
    gb_buf_append(out, "}", 1);
}
