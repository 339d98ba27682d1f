/* audit: the handover audit trail. Entries are written by the transactions that make the
 * changes they record (agent.c for status changes, attempts, the user's sign-in and technician
 * actions; import.c for imports; profiles.c for profile changes); the database numbers and
 * chains them (migrations/0007_audit_log.sql, 0009_audit_ids_in_commit_order.sql). Appending
 * takes a lock held to the end of the transaction, which keeps ids in commit order: a
 * transaction appends in its last statement, after every row lock it needs, so that it waits
 * for nothing while it holds that lock. This file builds the entries of a device's change and
 * answers the reads:
 *   GET /api/v1/devices/{serial}/audit[?format=csv]   entries, with the chain re-verified here
 *   GET /api/v1/devices/{serial}/handover[?format=html]  the record handed to the end user
 *   GET /api/v1/audit/export?since=&after_id=&limit=  every device's entries as NDJSON
 * A device's entries and its chain's head are read in one REPEATABLE READ transaction, so an
 * entry committed meanwhile cannot look like a removed one. */
#include "domain/audit.h"

#include <csv.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <jansson.h>

#include "api/internal.h"

#define EXPORT_LIMIT_DEFAULT 1000
#define EXPORT_LIMIT_MAX     10000

/* The text shown on the handover record about compliance, which pre-provisioning cannot
 * settle: user-targeted policies and apps arrive with the user. */
static const char COMPLIANCE_NOTE[] =
    "Compliance is not evaluated until the user signs in: the user's own policies, apps and "
    "conditional-access checks apply at the first sign-in, so the device may show as not "
    "compliant until the user has completed setup.";

/* ---- entries of a change (written by the batches) ---- */

const char GB_API_SQL_INSERT_AUDIT[] =
    "INSERT INTO audit_log (serial, actor, action, detail) "
    "SELECT s, a, c, d FROM unnest($1::text[], $2::text[], $3::text[], $4::jsonb[]) "
    "WITH ORDINALITY AS u(s, a, c, d, o) ORDER BY s, o";

void gb_api__audit_rows_init(gb_api_audit_rows_t *r)
{
    for (size_t i = 0; i < GB_API_AUDIT_COLS; i++) {
        gb_pg_array_init(&r->col[i]);
    }
    gb_buf_init(&r->detail);
}

void gb_api__audit_rows_dispose(gb_api_audit_rows_t *r)
{
    for (size_t i = 0; i < GB_API_AUDIT_COLS; i++) {
        gb_pg_array_dispose(&r->col[i]);
    }
    gb_buf_dispose(&r->detail);
}

void gb_api__audit_add(gb_api_audit_rows_t *r, const char *serial, const char *actor,
                       const char *action, const char *detail, size_t detail_len)
{
    gb_pg_array_cstr(&r->col[0], serial);
    gb_pg_array_cstr(&r->col[1], actor);
    gb_pg_array_cstr(&r->col[2], action);
    gb_pg_array_text(&r->col[3], detail, detail_len);
}

void gb_api__audit_mark(gb_api_audit_mark_t *m, const gb_dev_t *dev)
{
    m->status = dev->status;
    m->attempt = dev->attempt;
    m->has_upn = dev->user_upn != NULL;
    if (m->has_upn) {
        snprintf(m->upn, sizeof(m->upn), "%s", dev->user_upn);
    }
}

static void put_key(gb_buf_t *b, const char *key)
{
    gb_buf_append_str(b, ",\"");
    gb_buf_append_str(b, key);
    gb_buf_append_str(b, "\":");
}

/* The ESP's figures for this attempt: what a green or a reseal is recorded with. */
static void put_esp(gb_buf_t *b, const gb_dev_t *dev)
{
    double mbps;
    put_key(b, "esp");
    gb_proto_durations_json(dev, b);
    put_key(b, "bytes_downloaded");
    gb_buf_append_u64(b, dev->bytes_total);
    put_key(b, "mean_mbps");
    if (gb_dev_mean_mbps(dev, &mbps)) {
        gb_json_number(b, mbps);
    } else {
        gb_buf_append_str(b, "null");
    }
}

static void status_detail(gb_buf_t *b, gb_dev_status_t from, const gb_dev_t *dev, const char *cause)
{
    gb_buf_reset(b);
    gb_buf_append_str(b, "{\"from\":\"");
    gb_buf_append_str(b, gb_dev_status_id(from));
    gb_buf_append_str(b, "\",\"to\":\"");
    gb_buf_append_str(b, gb_dev_status_id(dev->status));
    gb_buf_append_str(b, "\"");
    put_key(b, "attempt");
    gb_buf_append_u64(b, dev->attempt);
    put_key(b, "stage");
    gb_json_str_or_null(b, dev->stage != GB_STAGE_NONE ? gb_stage_id(dev->stage) : NULL);
    put_key(b, "device_at");
    gb_json_time(b, dev->last_at_ms);
    switch (dev->status) {
    case GB_DEV_RED: {
        const gb_diagnosis_t *d = gb_dev_diagnosis(dev);
        put_key(b, "diagnosis");
        gb_proto_diagnosis_json(b, d);
        break;
    }
    case GB_DEV_GREEN:
        put_esp(b, dev);
        break;
    case GB_DEV_RESEALED:
        put_esp(b, dev);
        put_key(b, "resealed_at");
        gb_json_time(b, dev->resealed_ms);
        put_key(b, "ready_for_user_at");
        gb_json_time(b, gb_dev_ready_for_user_ms(dev));
        put_key(b, "reseal_expires_at");
        gb_json_time(b, gb_dev_reseal_expires_ms(dev));
        break;
    default:
        break;
    }
    if (cause != NULL) {
        put_key(b, "cause");
        gb_json_quote(b, cause, strlen(cause));
    }
    gb_buf_append_str(b, "}");
}

void gb_api__audit_changes(gb_api_audit_rows_t *r, const gb_api_audit_mark_t *before,
                           const gb_dev_t *dev, const char *actor, const char *cause)
{
    gb_buf_t *b = &r->detail;
    if (dev->attempt > before->attempt) {
        gb_buf_reset(b);
        gb_buf_append_str(b, "{\"attempt\":");
        gb_buf_append_u64(b, dev->attempt);
        gb_buf_append_str(b, ",\"after\":\"");
        gb_buf_append_str(b, gb_dev_status_id(before->status));
        gb_buf_append_str(b, "\"");
        if (cause != NULL) {
            put_key(b, "cause");
            gb_json_quote(b, cause, strlen(cause));
        }
        gb_buf_append_str(b, "}");
        gb_api__audit_add(r, dev->serial, actor, "attempt", b->data, b->len);
    }
    if (dev->status != before->status) {
        status_detail(b, before->status, dev, cause);
        gb_api__audit_add(r, dev->serial, actor, "status", b->data, b->len);
    }
    if (dev->user_upn != NULL && (!before->has_upn || strcmp(before->upn, dev->user_upn) != 0)) {
        gb_buf_reset(b);
        gb_buf_append_str(b, "{\"upn\":");
        gb_json_quote(b, dev->user_upn, strlen(dev->user_upn));
        put_key(b, "assigned_user");
        gb_json_str_or_null(b, dev->assigned_user);
        put_key(b, "matches_assigned_user");
        if (dev->assigned_user == NULL) {
            gb_buf_append_str(b, "null");
        } else {
            gb_buf_append_str(b, strcasecmp(dev->assigned_user, dev->user_upn) == 0 ? "true"
                                                                                    : "false");
        }
        gb_buf_append_str(b, "}");
        gb_api__audit_add(r, dev->serial, actor, "user_signin", b->data, b->len);
    }
}

/* ---- reading a device's chain ---- */

static const char SQL_DEVICE_ENTRIES[] =
    "SELECT seq, trunc(extract(epoch FROM at) * 1000000)::bigint, actor, action, detail::text, "
    "encode(prev_hash, 'hex'), encode(hash, 'hex') FROM audit_log WHERE serial = $1 ORDER BY seq";
static const char SQL_DEVICE_HEAD[] =
    "SELECT seq, encode(hash, 'hex') FROM audit_heads WHERE serial = $1";

enum { E_SEQ, E_AT, E_ACTOR, E_ACTION, E_DETAIL, E_PREV, E_HASH };

typedef enum read_kind {
    READ_AUDIT_JSON,
    READ_AUDIT_CSV,
    READ_HANDOVER_JSON,
    READ_HANDOVER_HTML
} read_kind_t;

typedef struct chain_op {
    gb_pg_query_t query;
    gb_api_t *api;
    gb_http_req_t *req;
    read_kind_t kind;
    const char *params[1];
} chain_op_t;

/* A device's chain as read: the entries (views into the query's results) and the verdict. */
typedef struct chain {
    gb_str_t serial;
    gb_audit_entry_t *entries;
    size_t n;
    bool has_head;
    char head_hex[GB_AUDIT_HEX_LEN + 1];
    gb_audit_check_t check;
} chain_t;

static gb_str_t cell(const PGresult *res, int row, int col)
{
    return (gb_str_t){PQgetvalue(res, row, col), (size_t)PQgetlength(res, row, col)};
}

/* Reads the rows and verifies them; a row that is not what the schema promises (a hash that is
 * not 32 bytes of hex) fails verification at that entry. */
static void chain_read(chain_t *c, gb_arena_t *arena, const PGresult *rows, const PGresult *head)
{
    int n = PQntuples(rows);
    c->entries = gb_arena_alloc(arena, (size_t)(n > 0 ? n : 1) * sizeof(*c->entries));
    c->n = (size_t)n;
    bool readable = true;
    size_t bad_at = 0;
    for (int r = 0; r < n; r++) {
        gb_audit_entry_t *e = &c->entries[r];
        long long seq = 0, at = 0;
        e->serial = c->serial;
        if (!gb_api__parse_int(cell(rows, r, E_SEQ), 0, INT64_MAX, &seq)) {
            seq = -1;
        }
        e->seq = (uint64_t)seq;
        at = strtoll(PQgetvalue(rows, r, E_AT), NULL, 10);
        e->at_us = at;
        e->actor = cell(rows, r, E_ACTOR);
        e->action = cell(rows, r, E_ACTION);
        e->detail = cell(rows, r, E_DETAIL);
        gb_str_t prev = cell(rows, r, E_PREV), hash = cell(rows, r, E_HASH);
        if (readable &&
            (seq < 0 || !gb_hex_decode(prev.p, prev.len, e->prev_hash, GB_AUDIT_HASH_LEN) ||
             !gb_hex_decode(hash.p, hash.len, e->hash, GB_AUDIT_HASH_LEN))) {
            readable = false;
            bad_at = (size_t)r;
        }
    }
    uint8_t head_hash[GB_AUDIT_HASH_LEN] = {0};
    long long head_seq = 0;
    c->has_head = PQntuples(head) == 1;
    c->head_hex[0] = '\0';
    if (c->has_head) {
        gb_str_t h = cell(head, 0, 1);
        if (!gb_api__parse_int(cell(head, 0, 0), 1, INT64_MAX, &head_seq) ||
            !gb_hex_decode(h.p, h.len, head_hash, GB_AUDIT_HASH_LEN)) {
            head_seq = 0;
        }
        snprintf(c->head_hex, sizeof(c->head_hex), "%.*s", (int)h.len, h.p);
    }
    c->check = gb_audit_verify(c->serial, c->entries, readable ? c->n : bad_at, c->has_head,
                               (uint64_t)head_seq, head_hash);
    /* An unreadable row is the first fault unless one was found before it. */
    if (!readable && (c->check.fault == GB_AUDIT_OK || c->check.index >= bad_at)) {
        c->check = (gb_audit_check_t){GB_AUDIT_HASH, bad_at};
    }
}

static void put_hex(gb_buf_t *b, const uint8_t h[GB_AUDIT_HASH_LEN])
{
    char hex[GB_AUDIT_HEX_LEN + 1];
    gb_hex_encode(h, GB_AUDIT_HASH_LEN, hex);
    gb_buf_append(b, "\"", 1);
    gb_buf_append(b, hex, GB_AUDIT_HEX_LEN);
    gb_buf_append(b, "\"", 1);
}

static void put_time_us(gb_buf_t *b, int64_t us)
{
    /* Whole milliseconds for people; the hash covers the stored microseconds. */
    gb_json_time(b, us >= 0 ? us / 1000 : -((-us + 999) / 1000));
}

/* "verified", "head" and "problem" members (after a first member). */
static void put_verdict(gb_buf_t *b, const chain_t *c)
{
    put_key(b, "verified");
    gb_buf_append_str(b, c->check.fault == GB_AUDIT_OK ? "true" : "false");
    put_key(b, "head");
    gb_json_str_or_null(b, c->has_head ? c->head_hex : NULL);
    put_key(b, "problem");
    if (c->check.fault == GB_AUDIT_OK) {
        gb_buf_append_str(b, "null");
        return;
    }
    gb_buf_append_str(b, "{\"fault\":\"");
    gb_buf_append_str(b, gb_audit_fault_id(c->check.fault));
    gb_buf_append_str(b, "\",\"seq\":");
    if (c->check.index < c->n) {
        gb_buf_append_u64(b, c->entries[c->check.index].seq);
    } else {
        gb_buf_append_str(b, "null");
    }
    gb_buf_append_str(b, ",\"message\":");
    const char *why = gb_audit_fault_text(c->check.fault);
    gb_json_quote(b, why, strlen(why));
    gb_buf_append_str(b, "}");
}

static void respond_audit_json(gb_http_req_t *req, const chain_t *c)
{
    gb_buf_t out;
    gb_buf_init(&out);
    gb_buf_append_str(&out, "{\"serial\":");
    gb_json_quote(&out, c->serial.p, c->serial.len);
    put_key(&out, "entries");
    gb_buf_append_str(&out, "[");
    for (size_t i = 0; i < c->n; i++) {
        const gb_audit_entry_t *e = &c->entries[i];
        gb_buf_append_str(&out, i > 0 ? ",{\"seq\":" : "{\"seq\":");
        gb_buf_append_u64(&out, e->seq);
        put_key(&out, "at");
        put_time_us(&out, e->at_us);
        put_key(&out, "actor");
        gb_json_quote(&out, e->actor.p, e->actor.len);
        put_key(&out, "action");
        gb_json_quote(&out, e->action.p, e->action.len);
        put_key(&out, "detail");
        gb_buf_append(&out, e->detail.p, e->detail.len); /* jsonb's text: JSON already */
        put_key(&out, "prev_hash");
        put_hex(&out, e->prev_hash);
        put_key(&out, "hash");
        put_hex(&out, e->hash);
        gb_buf_append_str(&out, "}");
    }
    gb_buf_append_str(&out, "]");
    put_verdict(&out, c);
    gb_buf_append_str(&out, "}");
    gb_http_respond_json(req, 200, &out);
    gb_buf_dispose(&out);
}

/* One CSV field, quoted by libcsv. A field a spreadsheet would read as a formula (=, +, -, @,
 * a tab or a carriage return first) is prefixed with an apostrophe, as OWASP advises: the CSV
 * is for reading; the JSON form is the one to verify hashes against. */
static void csv_field(gb_buf_t *b, const char *p, size_t len, bool last)
{
    bool formula = len > 0 && strchr("=+-@\t\r", p[0]) != NULL;
    const char *src = p;
    char *tmp = NULL;
    if (formula) {
        tmp = gb_xmalloc(len + 1);
        tmp[0] = '\'';
        memcpy(tmp + 1, p, len);
        src = tmp;
        len++;
    }
    size_t need = csv_write(NULL, 0, src, len);
    gb_buf_reserve(b, need);
    (void)csv_write(b->data + b->len, need, src, len);
    b->len += need;
    free(tmp);
    gb_buf_append_str(b, last ? "\r\n" : ",");
}

static void respond_audit_csv(gb_http_req_t *req, const chain_t *c)
{
    gb_buf_t out;
    char num[24], at[32], hex[GB_AUDIT_HEX_LEN + 1];
    gb_buf_init(&out);
    gb_buf_append_str(&out, "seq,at,actor,action,detail,prev_hash,hash\r\n");
    for (size_t i = 0; i < c->n; i++) {
        const gb_audit_entry_t *e = &c->entries[i];
        int n = snprintf(num, sizeof(num), "%llu", (unsigned long long)e->seq);
        csv_field(&out, num, (size_t)n, false);
        gb_time_format_rfc3339(e->at_us / 1000, at);
        csv_field(&out, at, strlen(at), false);
        csv_field(&out, e->actor.p, e->actor.len, false);
        csv_field(&out, e->action.p, e->action.len, false);
        csv_field(&out, e->detail.p, e->detail.len, false);
        gb_hex_encode(e->prev_hash, GB_AUDIT_HASH_LEN, hex);
        csv_field(&out, hex, GB_AUDIT_HEX_LEN, false);
        gb_hex_encode(e->hash, GB_AUDIT_HASH_LEN, hex);
        csv_field(&out, hex, GB_AUDIT_HEX_LEN, true);
    }
    char headers[160];
    snprintf(headers, sizeof(headers),
             "Glovebox-Audit-Verified: %s\r\nContent-Disposition: attachment; "
             "filename=\"audit.csv\"\r\n",
             c->check.fault == GB_AUDIT_OK ? "true" : "false");
    gb_http_respond(req, 200, "text/csv; charset=utf-8", headers, out.data, out.len);
    gb_buf_dispose(&out);
}

/* ---- the handover record ---- */

/* The handover's facts, gathered once for both forms. */
typedef struct handover {
    const gb_dev_t *dev;
    gb_api_profile_info_t prof;
    bool has_prof;
    const char *assigned_user;      /* the device's, else the profile's */
    int64_t started_ms;             /* the current attempt's first stage */
    int64_t green_ms;               /* device_setup succeeded in this attempt */
    int64_t desktop_ms;             /* desktop reached */
    const gb_audit_entry_t *reseal; /* the audit entry that recorded the reseal */
} handover_t;

static bool entry_is_reseal(const gb_audit_entry_t *e)
{
    if (!gb_str_eq_cstr(e->action, "status")) {
        return false;
    }
    json_t *d = json_loadb(e->detail.p, e->detail.len, 0, NULL);
    const char *to = json_string_value(json_object_get(d, "to"));
    bool yes = to != NULL && strcmp(to, "resealed") == 0;
    json_decref(d);
    return yes;
}

static void handover_gather(handover_t *h, gb_api_t *api, const gb_dev_t *dev, const chain_t *c)
{
    memset(h, 0, sizeof(*h));
    h->dev = dev;
    h->has_prof = gb_api__profile_info(api, dev, &h->prof);
    h->assigned_user = dev->assigned_user != NULL ? dev->assigned_user
                       : h->has_prof              ? h->prof.assigned_user
                                                  : NULL;
    h->started_ms = h->green_ms = h->desktop_ms = GB_TIME_NONE;
    for (uint32_t i = 0; i < dev->n_runs; i++) {
        const gb_stage_run_t *r = &dev->runs[i];
        if (r->attempt != dev->attempt) {
            continue;
        }
        if (h->started_ms == GB_TIME_NONE && gb_stage_flow((gb_stage_t)r->stage) != GB_FLOW_USER) {
            h->started_ms = r->started_ms != GB_TIME_NONE ? r->started_ms : r->ended_ms;
        }
        if (r->stage == GB_STAGE_DEVICE_SETUP && r->state == GB_RUN_SUCCEEDED) {
            h->green_ms = r->ended_ms;
        }
        if (r->stage == GB_STAGE_DESKTOP) {
            h->desktop_ms = r->started_ms != GB_TIME_NONE ? r->started_ms : r->ended_ms;
        }
    }
    for (size_t i = c->n; i > 0; i--) {
        if (entry_is_reseal(&c->entries[i - 1])) {
            h->reseal = &c->entries[i - 1];
            break;
        }
    }
}

static const char *result_id(const gb_dev_t *dev)
{
    switch (dev->status) {
    case GB_DEV_GREEN:
    case GB_DEV_RESEALED:
    case GB_DEV_HANDOVER:
    case GB_DEV_DELIVERED:
        return "green";
    case GB_DEV_RED:
        return "red";
    default:
        return NULL;
    }
}

static void respond_handover_json(gb_http_req_t *req, const handover_t *h, const chain_t *c)
{
    const gb_dev_t *dev = h->dev;
    gb_buf_t out;
    gb_buf_init(&out);
    gb_buf_append_str(&out, "{\"serial\":");
    gb_json_quote(&out, dev->serial, strlen(dev->serial));
    put_key(&out, "generated_at");
    gb_json_time(&out, gb_time_now_ms());
    put_key(&out, "status");
    gb_json_quote(&out, gb_dev_status_id(dev->status), strlen(gb_dev_status_id(dev->status)));
    put_key(&out, "organization");
    gb_json_str_or_null(&out, h->has_prof ? h->prof.tenant_domain : NULL);
    put_key(&out, "profile");
    gb_json_str_or_null(&out, h->has_prof ? h->prof.name : NULL);
    put_key(&out, "join");
    gb_json_str_or_null(&out, h->has_prof ? h->prof.join : NULL);
    put_key(&out, "group_tag");
    gb_json_str_or_null(&out, dev->group_tag);
    put_key(&out, "assigned_user");
    gb_json_str_or_null(&out, h->assigned_user);
    put_key(&out, "signed_in_user");
    gb_json_str_or_null(&out, dev->user_upn);
    put_key(&out, "hardware");
    gb_buf_append_str(&out, "{\"manufacturer\":");
    gb_json_str_or_null(&out, dev->manufacturer);
    gb_buf_append_str(&out, ",\"model\":");
    gb_json_str_or_null(&out, dev->model);
    gb_buf_append_str(&out, ",\"os_build\":");
    gb_json_str_or_null(&out, dev->os_build);
    gb_buf_append_str(&out, "}");

    put_key(&out, "preprovisioning");
    gb_buf_append_str(&out, "{\"result\":");
    gb_json_str_or_null(&out, result_id(dev));
    gb_buf_append_str(&out, ",\"attempts\":");
    gb_buf_append_u64(&out, dev->attempt);
    gb_buf_append_str(&out, ",\"first_time_right\":");
    gb_buf_append_str(&out, dev->first_time_right ? "true" : "false");
    gb_buf_append_str(&out, ",\"started_at\":");
    gb_json_time(&out, h->started_ms);
    gb_buf_append_str(&out, ",\"green_at\":");
    gb_json_time(&out, h->green_ms);
    gb_buf_append_str(&out, ",\"durations\":");
    gb_proto_durations_json(dev, &out);
    gb_buf_append_str(&out, ",\"bytes_downloaded\":");
    gb_buf_append_u64(&out, dev->bytes_total);
    gb_buf_append_str(&out, ",\"diagnosis\":");
    gb_proto_diagnosis_json(&out, dev->status == GB_DEV_RED ? gb_dev_diagnosis(dev) : NULL);
    gb_buf_append_str(&out, "}");

    put_key(&out, "reseal");
    gb_buf_append_str(&out, "{\"resealed_at\":");
    gb_json_time(&out, dev->resealed_ms);
    gb_buf_append_str(&out, ",\"resealed_by\":");
    if (h->reseal != NULL) {
        gb_json_quote(&out, h->reseal->actor.p, h->reseal->actor.len);
    } else {
        gb_buf_append_str(&out, "null");
    }
    gb_buf_append_str(&out, ",\"recorded_at\":");
    if (h->reseal != NULL) {
        put_time_us(&out, h->reseal->at_us);
    } else {
        gb_buf_append_str(&out, "null");
    }
    gb_buf_append_str(&out, ",\"ready_for_user_at\":");
    gb_json_time(&out, gb_dev_ready_for_user_ms(dev));
    gb_buf_append_str(&out, ",\"reseal_expires_at\":");
    gb_json_time(&out, gb_dev_reseal_expires_ms(dev));
    gb_buf_append_str(&out, "}");

    put_key(&out, "apps_installed");
    gb_buf_append_str(&out, "[");
    bool first = true;
    for (uint32_t i = 0; i < dev->n_apps; i++) {
        const gb_app_t *a = &dev->apps[i];
        if (a->state != GB_APP_INSTALLED) {
            continue;
        }
        gb_buf_append_str(&out, first ? "{\"name\":" : ",{\"name\":");
        first = false;
        gb_json_quote(&out, a->name, strlen(a->name));
        gb_buf_append_str(&out, ",\"bytes\":");
        if (a->has_bytes) {
            gb_buf_append_u64(&out, a->bytes);
        } else {
            gb_buf_append_str(&out, "null");
        }
        gb_buf_append_str(&out, "}");
    }
    gb_buf_append_str(&out, "]");
    put_key(&out, "compliance_note");
    gb_json_quote(&out, COMPLIANCE_NOTE, strlen(COMPLIANCE_NOTE));

    put_key(&out, "user_flow");
    gb_buf_append_str(&out, "[");
    first = true;
    for (uint32_t i = 0; i < dev->n_runs; i++) {
        const gb_stage_run_t *r = &dev->runs[i];
        if (r->attempt != dev->attempt || gb_stage_flow((gb_stage_t)r->stage) != GB_FLOW_USER) {
            continue;
        }
        const char *id = gb_stage_id((gb_stage_t)r->stage);
        gb_buf_append_str(&out, first ? "{\"stage\":" : ",{\"stage\":");
        first = false;
        gb_json_quote(&out, id, strlen(id));
        gb_buf_append_str(&out, ",\"state\":\"");
        gb_buf_append_str(&out, gb_run_state_id((gb_run_state_t)r->state));
        gb_buf_append_str(&out, "\",\"started_at\":");
        gb_json_time(&out, r->started_ms);
        gb_buf_append_str(&out, ",\"ended_at\":");
        gb_json_time(&out, r->ended_ms);
        gb_buf_append_str(&out, "}");
    }
    gb_buf_append_str(&out, "]");
    put_key(&out, "desktop_at");
    gb_json_time(&out, h->desktop_ms);

    put_key(&out, "audit");
    gb_buf_append_str(&out, "{\"entries\":");
    gb_buf_append_u64(&out, c->n);
    put_verdict(&out, c);
    gb_buf_append_str(&out, "}}");
    gb_http_respond_json(req, 200, &out);
    gb_buf_dispose(&out);
}

/* Text for HTML: & < > " ' escaped, so no user-controlled string can open markup. */
static void html(gb_buf_t *b, const char *p, size_t len)
{
    size_t from = 0;
    for (size_t i = 0; i < len; i++) {
        const char *rep = NULL;
        switch (p[i]) {
        case '&':
            rep = "&amp;";
            break;
        case '<':
            rep = "&lt;";
            break;
        case '>':
            rep = "&gt;";
            break;
        case '"':
            rep = "&quot;";
            break;
        case '\'':
            rep = "&#39;";
            break;
        default:
            continue;
        }
        gb_buf_append(b, p + from, i - from);
        gb_buf_append_str(b, rep);
        from = i + 1;
    }
    gb_buf_append(b, p + from, len - from);
}

static void html_c(gb_buf_t *b, const char *s)
{
    if (s == NULL) {
        gb_buf_append_str(b, "<span class=\"none\">not recorded</span>");
    } else {
        html(b, s, strlen(s));
    }
}

static void html_time(gb_buf_t *b, int64_t ms)
{
    char t[32];
    if (ms == GB_TIME_NONE) {
        html_c(b, NULL);
        return;
    }
    gb_time_format_rfc3339(ms, t);
    gb_buf_append_str(b, "<time>");
    gb_buf_append_str(b, t);
    gb_buf_append_str(b, "</time>");
}

static void html_row(gb_buf_t *b, const char *label, const char *value)
{
    gb_buf_append_str(b, "<tr><th scope=\"row\">");
    gb_buf_append_str(b, label);
    gb_buf_append_str(b, "</th><td>");
    html_c(b, value);
    gb_buf_append_str(b, "</td></tr>\n");
}

static void html_time_row(gb_buf_t *b, const char *label, int64_t ms)
{
    gb_buf_append_str(b, "<tr><th scope=\"row\">");
    gb_buf_append_str(b, label);
    gb_buf_append_str(b, "</th><td>");
    html_time(b, ms);
    gb_buf_append_str(b, "</td></tr>\n");
}

static const char HTML_HEAD[] =
    "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
    "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
    "<title>Handover record</title><style>"
    "body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:52em;color:#111}"
    "h1{font-size:1.5em}h2{font-size:1.1em;margin-top:1.6em;border-bottom:1px solid #999}"
    "table{border-collapse:collapse;width:100%}th,td{text-align:left;vertical-align:top;"
    "padding:.2em .6em .2em 0}th[scope=row]{width:14em;font-weight:600}"
    ".none{color:#666;font-style:italic}code{font-size:.85em;word-break:break-all}"
    ".ok{color:#0a5d00}.bad{color:#a00000;font-weight:700}"
    "table.audit td,table.audit th{border-bottom:1px solid #ddd;font-size:.9em}"
    "@media print{body{margin:0;max-width:none}}"
    "</style></head><body>\n";

static void respond_handover_html(gb_http_req_t *req, const handover_t *h, const chain_t *c)
{
    const gb_dev_t *dev = h->dev;
    gb_buf_t b;
    char num[64];
    gb_durations_t d;
    gb_dev_durations(dev, &d);
    gb_buf_init(&b);
    gb_buf_append_str(&b, HTML_HEAD);
    gb_buf_append_str(&b, "<h1>Handover record: <span class=\"serial\">");
    html_c(&b, dev->serial);
    gb_buf_append_str(&b, "</span></h1>\n<p>Prepared ");
    html_time(&b, gb_time_now_ms());
    gb_buf_append_str(&b, ".</p>\n<h2>Device and organization</h2><table>\n");
    html_row(&b, "Serial number", dev->serial);
    html_row(&b, "Manufacturer", dev->manufacturer);
    html_row(&b, "Model", dev->model);
    html_row(&b, "Windows build", dev->os_build);
    html_row(&b, "Organization", h->has_prof ? h->prof.tenant_domain : NULL);
    html_row(&b, "Deployment profile", h->has_prof ? h->prof.name : NULL);
    html_row(&b, "Group tag", dev->group_tag);
    html_row(&b, "Assigned user", h->assigned_user);
    gb_buf_append_str(&b, "</table>\n<h2>Pre-provisioning</h2><table>\n");
    const char *res = result_id(dev);
    html_row(&b, "Result", res == NULL ? NULL : strcmp(res, "green") == 0 ? "Green" : "Red");
    snprintf(num, sizeof(num), "%u%s", dev->attempt,
             dev->first_time_right ? " (first time right)" : "");
    html_row(&b, "Attempts", num);
    html_time_row(&b, "Started", h->started_ms);
    html_time_row(&b, "Green", h->green_ms);
    if (d.device_preparation_ms >= 0) {
        snprintf(num, sizeof(num), "%.0f s", (double)d.device_preparation_ms / 1000.0);
    }
    html_row(&b, "Device preparation", d.device_preparation_ms >= 0 ? num : NULL);
    if (d.device_setup_ms >= 0) {
        snprintf(num, sizeof(num), "%.0f s", (double)d.device_setup_ms / 1000.0);
    }
    html_row(&b, "Device setup", d.device_setup_ms >= 0 ? num : NULL);
    snprintf(num, sizeof(num), "%.1f MB", (double)dev->bytes_total / 1e6);
    html_row(&b, "Downloaded", num);
    gb_buf_append_str(&b, "</table>\n<h2>Reseal</h2><table>\n");
    html_time_row(&b, "Resealed", dev->resealed_ms);
    gb_buf_append_str(&b, "<tr><th scope=\"row\">Resealed by</th><td>");
    if (h->reseal != NULL) {
        html(&b, h->reseal->actor.p, h->reseal->actor.len);
    } else {
        html_c(&b, NULL);
    }
    gb_buf_append_str(&b, "</td></tr>\n");
    html_time_row(&b, "Ready for the user from (reseal + 90 min)", gb_dev_ready_for_user_ms(dev));
    html_time_row(&b, "Hand over before (reseal + 6 months)", gb_dev_reseal_expires_ms(dev));
    gb_buf_append_str(&b, "</table>\n<h2>Apps installed</h2><ul>\n");
    for (uint32_t i = 0; i < dev->n_apps; i++) {
        if (dev->apps[i].state == GB_APP_INSTALLED) {
            gb_buf_append_str(&b, "<li>");
            html_c(&b, dev->apps[i].name);
            gb_buf_append_str(&b, "</li>\n");
        }
    }
    gb_buf_append_str(&b, "</ul>\n<h2>Compliance</h2><p>");
    html(&b, COMPLIANCE_NOTE, strlen(COMPLIANCE_NOTE));
    gb_buf_append_str(&b, "</p>\n<h2>The user's setup</h2><table>\n");
    html_row(&b, "Signed in as", dev->user_upn);
    for (uint32_t i = 0; i < dev->n_runs; i++) {
        const gb_stage_run_t *r = &dev->runs[i];
        if (r->attempt == dev->attempt && gb_stage_flow((gb_stage_t)r->stage) == GB_FLOW_USER) {
            html_time_row(&b, gb_stage_name((gb_stage_t)r->stage),
                          r->started_ms != GB_TIME_NONE ? r->started_ms : r->ended_ms);
        }
    }
    html_time_row(&b, "Desktop", h->desktop_ms);
    gb_buf_append_str(&b, "</table>\n<h2>Audit trail</h2>\n");
    if (c->check.fault == GB_AUDIT_OK) {
        gb_buf_append_str(&b, "<p class=\"ok\">The hash chain verifies: ");
        gb_buf_append_u64(&b, c->n);
        gb_buf_append_str(&b, " entries, none changed or removed.</p>\n");
    } else {
        gb_buf_append_str(&b, "<p class=\"bad\">The hash chain does NOT verify: ");
        html_c(&b, gb_audit_fault_text(c->check.fault));
        if (c->check.index < c->n) {
            gb_buf_append_str(&b, " (entry ");
            gb_buf_append_u64(&b, c->entries[c->check.index].seq);
            gb_buf_append_str(&b, ")");
        }
        gb_buf_append_str(&b, ".</p>\n");
    }
    gb_buf_append_str(&b, "<p>Head hash (to verify this record later): <code>");
    html_c(&b, c->has_head ? c->head_hex : NULL);
    gb_buf_append_str(&b, "</code></p>\n<table class=\"audit\"><thead><tr><th scope=\"col\">#"
                          "</th><th scope=\"col\">When</th><th scope=\"col\">Who</th>"
                          "<th scope=\"col\">What</th><th scope=\"col\">Detail</th></tr></thead>"
                          "<tbody>\n");
    for (size_t i = 0; i < c->n; i++) {
        const gb_audit_entry_t *e = &c->entries[i];
        gb_buf_append_str(&b, "<tr><td>");
        gb_buf_append_u64(&b, e->seq);
        gb_buf_append_str(&b, "</td><td>");
        html_time(&b, e->at_us / 1000);
        gb_buf_append_str(&b, "</td><td>");
        html(&b, e->actor.p, e->actor.len);
        gb_buf_append_str(&b, "</td><td>");
        html(&b, e->action.p, e->action.len);
        gb_buf_append_str(&b, "</td><td><code>");
        html(&b, e->detail.p, e->detail.len);
        gb_buf_append_str(&b, "</code></td></tr>\n");
    }
    gb_buf_append_str(&b, "</tbody></table>\n</body></html>\n");
    /* No script at all, and styles only from the page itself. */
    gb_http_respond(req, 200, "text/html; charset=utf-8",
                    "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'; "
                    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'\r\n"
                    "X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n",
                    b.data, b.len);
    gb_buf_dispose(&b);
}

static void on_chain_loaded(gb_pg_query_t *q, int err, PGresult *const *results, size_t nresults)
{
    chain_op_t *op = gb_container_of(q, chain_op_t, query);
    gb_http_req_t *req = op->req;
    /* BEGIN, the entries, the head, COMMIT. */
    if (err != 0 || nresults != 4) {
        gb_api__db_unavailable(req, err != 0 ? err : GB_EDB);
        return;
    }
    chain_t c;
    memset(&c, 0, sizeof(c));
    c.serial = gb_str_from_cstr(op->params[0]);
    chain_read(&c, &req->arena, results[1], results[2]);
    if (op->kind == READ_AUDIT_JSON) {
        respond_audit_json(req, &c);
        return;
    }
    if (op->kind == READ_AUDIT_CSV) {
        respond_audit_csv(req, &c);
        return;
    }
    /* The device was there when the read began; devices are never removed once stored. */
    gb_fleet_dev_t *fd = gb_fleet_find(&op->api->fleet, c.serial.p, c.serial.len);
    if (fd == NULL) {
        gb_http_respond_errorf(req, 404, "not_found", "no device has this serial");
        return;
    }
    handover_t h;
    handover_gather(&h, op->api, &fd->dev, &c);
    if (op->kind == READ_HANDOVER_HTML) {
        respond_handover_html(req, &h, &c);
    } else {
        respond_handover_json(req, &h, &c);
    }
}

static void read_chain(gb_api_t *api, gb_http_req_t *req, read_kind_t kind)
{
    gb_fleet_dev_t *fd = gb_api__find_or_404(api, req);
    if (fd == NULL) {
        return;
    }
    chain_op_t *op = gb_arena_alloc(&req->arena, sizeof(*op));
    memset(op, 0, sizeof(*op));
    op->api = api;
    op->req = req;
    op->kind = kind;
    op->params[0] = gb_arena_strndup(&req->arena, fd->key, strlen(fd->key));
    gb_pg_query_init(&op->query, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL,
                     on_chain_loaded);
    gb_pg_query_add(&op->query, SQL_DEVICE_ENTRIES, 1, op->params);
    gb_pg_query_add(&op->query, SQL_DEVICE_HEAD, 1, op->params);
    gb_pg_query_add(&op->query, "COMMIT", 0, NULL);
    int rc = gb_pg_submit(api->pg, &op->query);
    if (rc < 0) {
        gb_api__db_unavailable(req, rc);
    }
}

/* format=json (the default) or the alternative; false after answering 400. */
static bool pick_format(gb_http_req_t *req, const char *alt, bool *use_alt)
{
    gb_str_t v;
    *use_alt = false;
    if (!gb_http_req_query(req, "format", &v) || gb_str_eq_cstr(v, "json")) {
        return true;
    }
    if (gb_str_eq_cstr(v, alt)) {
        *use_alt = true;
        return true;
    }
    char why[64];
    snprintf(why, sizeof(why), "must be json or %s", alt);
    gb_api__bad_query(req, "format", why);
    return false;
}

static void on_audit(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    (void)who;
    bool csv;
    if (pick_format(req, "csv", &csv)) {
        read_chain(api, req, csv ? READ_AUDIT_CSV : READ_AUDIT_JSON);
    }
}

static void on_handover(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    (void)who;
    bool as_html;
    if (pick_format(req, "html", &as_html)) {
        read_chain(api, req, as_html ? READ_HANDOVER_HTML : READ_HANDOVER_JSON);
    }
}

/* ---- export ---- */

enum { X_ID, X_SERIAL, X_SEQ, X_AT, X_ACTOR, X_ACTION, X_DETAIL, X_PREV, X_HASH };

static void on_export_loaded(gb_pg_query_t *q, int err, PGresult *const *results, size_t nresults)
{
    gb_api_page_op_t *op = gb_api__page_loaded(q, err, nresults);
    if (op == NULL) {
        return;
    }
    gb_http_req_t *req = op->req;
    const PGresult *res = results[0];
    int rows = PQntuples(res);
    gb_buf_t out;
    gb_buf_init(&out);
    for (int r = 0; r < rows; r++) {
        gb_buf_append_str(&out, "{\"id\":");
        gb_buf_append(&out, PQgetvalue(res, r, X_ID), (size_t)PQgetlength(res, r, X_ID));
        put_key(&out, "serial");
        gb_json_quote(&out, PQgetvalue(res, r, X_SERIAL), (size_t)PQgetlength(res, r, X_SERIAL));
        put_key(&out, "seq");
        gb_buf_append(&out, PQgetvalue(res, r, X_SEQ), (size_t)PQgetlength(res, r, X_SEQ));
        put_key(&out, "at");
        gb_buf_append_str(&out, "\"");
        gb_buf_append(&out, PQgetvalue(res, r, X_AT), (size_t)PQgetlength(res, r, X_AT));
        gb_buf_append_str(&out, "\"");
        put_key(&out, "actor");
        gb_json_quote(&out, PQgetvalue(res, r, X_ACTOR), (size_t)PQgetlength(res, r, X_ACTOR));
        put_key(&out, "action");
        gb_json_quote(&out, PQgetvalue(res, r, X_ACTION), (size_t)PQgetlength(res, r, X_ACTION));
        put_key(&out, "detail");
        gb_buf_append(&out, PQgetvalue(res, r, X_DETAIL), (size_t)PQgetlength(res, r, X_DETAIL));
        put_key(&out, "prev_hash");
        gb_buf_append_str(&out, "\"");
        gb_buf_append(&out, PQgetvalue(res, r, X_PREV), (size_t)PQgetlength(res, r, X_PREV));
        gb_buf_append_str(&out, "\"");
        put_key(&out, "hash");
        gb_buf_append_str(&out, "\"");
        gb_buf_append(&out, PQgetvalue(res, r, X_HASH), (size_t)PQgetlength(res, r, X_HASH));
        gb_buf_append_str(&out, "\"}\n");
    }
    /* A full page may have more after it: the header says where the next one starts. */
    char headers[96] = "";
    if (rows > 0 && rows == op->limit) {
        snprintf(headers, sizeof(headers), "Glovebox-Next-After-Id: %s\r\n",
                 PQgetvalue(res, rows - 1, X_ID));
    }
    gb_http_respond(req, 200, "application/x-ndjson", headers, out.data, out.len);
    gb_buf_dispose(&out);
}

static void on_export(gb_api_t *api, gb_http_req_t *req, const gb_auth_identity_t *who)
{
    (void)who;
    gb_str_t v;
    long long after, limit;
    int64_t since_ms = GB_TIME_NONE;
    if (!gb_api__parse_page(req, "after_id", EXPORT_LIMIT_DEFAULT, EXPORT_LIMIT_MAX, &after,
                            &limit)) {
        return;
    }
    if (gb_http_req_query(req, "since", &v) && !gb_time_parse_rfc3339(v.p, v.len, &since_ms)) {
        gb_api__bad_query(req, "since", "must be an RFC 3339 time such as 2026-11-24T08:00:00Z");
        return;
    }
    gb_api_page_op_t *op = gb_api__page_op_new(req, limit);
    op->params[0] = gb_arena_sprintf(&req->arena, "%lld", after);
    op->params[1] = since_ms == GB_TIME_NONE
                        ? NULL
                        : gb_arena_sprintf(&req->arena, "%lld", (long long)since_ms);
    op->params[2] = gb_arena_sprintf(&req->arena, "%lld", limit);
    gb_pg_query_init(
        &op->query,
        "SELECT id, serial, seq, to_char(at AT TIME ZONE 'UTC', "
        "'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), actor, action, detail::text, "
        "encode(prev_hash, 'hex'), encode(hash, 'hex') FROM audit_log WHERE id > $1::bigint "
        "AND ($2::bigint IS NULL OR at >= to_timestamp($2::bigint / 1000.0)) ORDER BY id "
        "LIMIT $3::int",
        3, op->params, on_export_loaded);
    int rc = gb_pg_submit(api->pg, &op->query);
    if (rc < 0) {
        gb_api__db_unavailable(req, rc);
    }
}

void gb_api__audit_register(gb_api_t *api)
{
    gb_api__route(api, GB_HTTP_GET, "/api/v1/devices/{serial}/audit", GB_ROLE_VIEWER, on_audit);
    gb_api__route(api, GB_HTTP_GET, "/api/v1/devices/{serial}/handover", GB_ROLE_VIEWER,
                  on_handover);
    gb_api__route(api, GB_HTTP_GET, "/api/v1/audit/export", GB_ROLE_VIEWER, on_export);
}
