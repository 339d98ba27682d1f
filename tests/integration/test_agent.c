/* The agent protocol against a real gloveboxd and a real PostgreSQL, driven as agents drive it:
 * replies and the rows behind them (a 200 comes only after COMMIT), retries that store nothing
 * twice, two connections reporting for one device at once, a gap filled late, every vector of
 * agent-protocol/vectors/, and the refusals (413, 415, 401, 403, 405) that must store nothing.
 * A second server on its own database gets the same messages in order: what the first one
 * derived must equal it, row for row. */
#include <dirent.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>
#include <libpq-fe.h>

#include "harness.h"

#define AGENT_PATH   "/api/v1/agent/messages"
#define VECTORS      GB_SOURCE_DIR "/agent-protocol/vectors"
#define CH_AUTOPILOT "Microsoft-Windows-ModernDeployment-Diagnostics-Provider/Autopilot"

/* One gloveboxd with its database, an agent token and a connection for checking rows. */
typedef struct srv {
    char url[512];
    gb_th_server_t proc;
    char *agent;
    char *checker; /* a viewer token, for reading the derived state through the API */
    PGconn *db;
} srv_t;

static srv_t main_srv; /* every test reports here */
static srv_t ref_srv;  /* the reference: the same messages, sent once and in order */
static char *viewer_token;
static char *technician_token;
static char *admin_token;

/* ---- servers ---- */

/* Creates a database, an agent token (and more_tokens' ones, when given) and starts a server:
 * tokens exist before the server starts, as an operator would create them. */
static int srv_start(srv_t *s, const char *const *extra, int (*more_tokens)(const char *url))
{
    memset(s, 0, sizeof(*s));
    if (gb_th_db_create(s->url, sizeof(s->url)) != 0) {
        return -1;
    }
    s->agent = gb_th_token_create(s->url, "agent", "bench-agent");
    s->checker = gb_th_token_create(s->url, "viewer", "checker");
    if (s->agent == NULL || s->checker == NULL ||
        (more_tokens != NULL && more_tokens(s->url) != 0) ||
        gb_th_server_start(&s->proc, s->url, extra) != 0) {
        return -1;
    }
    s->db = PQconnectdb(s->url);
    return PQstatus(s->db) == CONNECTION_OK ? 0 : -1;
}

static int srv_stop(srv_t *s)
{
    int rc = gb_th_server_stop(&s->proc, SIGTERM, 10000);
    PQfinish(s->db);
    free(s->agent);
    free(s->checker);
    memset(s, 0, sizeof(*s));
    return rc;
}

/* The people's tokens on the main server, created with its agent token. */
static int create_people_tokens(const char *url)
{
    viewer_token = gb_th_token_create(url, "viewer", "lead");
    technician_token = gb_th_token_create(url, "technician", "bench-tech");
    admin_token = gb_th_token_create(url, "admin", "it-admin");
    return viewer_token != NULL && technician_token != NULL && admin_token != NULL ? 0 : -1;
}

static int setup(void **state)
{
    const char *extra[] = {"--log-level", "info", NULL};
    if (srv_start(&main_srv, extra, create_people_tokens) != 0) {
        return -1;
    }
    return srv_start(&ref_srv, extra, NULL);
}

static int teardown(void **state)
{
    int a = srv_stop(&main_srv);
    int b = srv_stop(&ref_srv);
    free(viewer_token);
    free(technician_token);
    free(admin_token);
    return a == 0 && b == 0 ? 0 : -1;
}

/* ---- database checks ---- */

static PGresult *query(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = PQexecParams(c, sql, n, NULL, params, NULL, NULL, 0);
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        fail_msg("%s: %s", sql, PQresultErrorMessage(r));
    }
    return r;
}

/* The single value of a one-row query, as a heap string ("" for NULL, NULL for no row). */
static char *query_text(PGconn *c, const char *sql, int n, const char *const *params)
{
    PGresult *r = query(c, sql, n, params);
    char *v = NULL;
    if (PQntuples(r) == 1) {
        v = gb_xstrdup(PQgetvalue(r, 0, 0));
    }
    PQclear(r);
    return v;
}

static long long query_int(PGconn *c, const char *sql, int n, const char *const *params)
{
    char *v = query_text(c, sql, n, params);
    if (v == NULL) {
        fail_msg("%s: no row", sql);
    }
    long long x = atoll(v);
    free(v);
    return x;
}

static long long count_events(PGconn *c, const char *serial)
{
    const char *p[] = {serial};
    return query_int(c, "SELECT count(*) FROM events WHERE serial = $1", 1, p);
}

static long long count_all(PGconn *c, const char *table)
{
    char sql[256];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
    return query_int(c, sql, 0, NULL);
}

/* The device as the server shows it (GET /api/v1/devices/{serial}): its state in memory. */
static char *shown(const srv_t *s, const char *serial)
{
    char path[256];
    gb_th_resp_t r;
    snprintf(path, sizeof(path), "/api/v1/devices/%s", serial);
    gb_th_request_auth(s->proc.port, "GET", path, s->checker, NULL, &r);
    if (r.status != 200) {
        fail_msg("GET %s: %d %s", path, r.status, r.body);
    }
    char *body = gb_xstrdup(r.body);
    gb_th_resp_free(&r);
    return body;
}

/* Everything the server derived and stored for serial, as one text: the devices row's columns
 * that always follow at once (status, attempt, diagnosis; stage, max_seq and the snapshot follow
 * every few dozen messages), every stored message, and the state the server shows. Two servers
 * fed the same messages must give the same text, and so must one server before and after a
 * restart. */
static char *derived(const srv_t *s, const char *serial)
{
    const char *p[] = {serial};
    PGconn *c = s->db;
    gb_buf_t b;
    gb_buf_init(&b);
    static const char *const sql[] = {
        "SELECT concat_ws('|', status, attempt, coalesce(diagnosis, '-'), needs_rebuild) "
        "FROM devices WHERE serial = $1",
        "SELECT coalesce(string_agg(concat_ws(',', seq, type, at, body::text), ';' ORDER BY seq), "
        "'') FROM events WHERE serial = $1",
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(sql); i++) {
        char *v = query_text(c, sql[i], 1, p);
        if (v == NULL) {
            fail_msg("no devices row for %s", serial);
        }
        gb_buf_appendf(&b, "%s\n", v);
        free(v);
    }
    char *view = shown(s, serial);
    gb_buf_appendf(&b, "%s\n", view);
    free(view);
    return gb_buf_steal(&b, NULL);
}

/* Fails showing where two long texts first differ (cmocka cuts long messages short). */
static void fail_diff(const char *serial, const char *what, const char *got, const char *want)
{
    size_t at = 0;
    while (got[at] != '\0' && got[at] == want[at]) {
        at++;
    }
    size_t from = at > 120 ? at - 120 : 0;
    fail_msg("device %s %s at byte %zu:\n got: ...%.240s\nwant: ...%.240s", serial, what, at,
             got + from, want + from);
}

static void assert_same_derived(const char *serial)
{
    char *got = derived(&main_srv, serial);
    char *want = derived(&ref_srv, serial);
    if (strcmp(got, want) != 0) {
        fail_diff(serial, "differs from the in-order reference", got, want);
    }
    free(got);
    free(want);
}

/* ---- messages ---- */

static int64_t at_ms(const char *rfc3339)
{
    int64_t ms = 0;
    assert_true(gb_time_parse_rfc3339(rfc3339, strlen(rfc3339), &ms));
    return ms;
}

static json_t *msg(uint64_t seq, int64_t at, const char *type)
{
    char s[32];
    gb_time_format_rfc3339(at, s);
    return json_pack("{s:I, s:s, s:s}", "seq", (json_int_t)seq, "at", s, "type", type);
}

static json_t *stage_msg(uint64_t seq, int64_t at, const char *stage, const char *state)
{
    json_t *m = msg(seq, at, "stage");
    json_object_set_new(m, "stage", json_string(stage));
    json_object_set_new(m, "state", json_string(state));
    return m;
}

static json_t *hello_msg(uint64_t seq, int64_t at)
{
    json_t *m = msg(seq, at, "hello");
    json_object_set_new(m, "agent", json_string("glovebox-agent/1.2.0"));
    json_object_set_new(m, "os_build", json_string("10.0.22631"));
    json_object_set_new(m, "hardware",
                        json_pack("{s:s, s:s, s:s, s:b, s:b}", "manufacturer", "HP", "model",
                                  "EliteBook 840 G8", "tpm_version", "2.0", "tpm_attestation", 1,
                                  "virtual_machine", 0));
    json_object_set_new(m, "network",
                        json_pack("{s:s, s:i}", "medium", "ethernet", "link_mbps", 1000));
    json_object_set_new(m, "slot", json_string("A-12"));
    return m;
}

static json_t *winevent_msg(uint64_t seq, int64_t at, const char *channel, int id, const char *text)
{
    json_t *m = msg(seq, at, "winevent");
    json_object_set_new(m, "channel", json_string(channel));
    json_object_set_new(m, "event_id", json_integer(id));
    json_object_set_new(m, "message", json_string(text));
    return m;
}

/* A device's whole life in exactly n messages (n >= 40), 5 s apart on its clock: hello, the
 * technician flow with a component update that fails and is skipped, device setup filled with
 * app and bandwidth messages, the green screen, reseal, and a day later the user flow to the
 * desktop. The state depends on the order: applied out of order it would differ. */
static json_t *device_life(size_t n)
{
    static const char *const tech[][2] = {
        {"oobe", "started"},
        {"enterprise_provisioning", "started"},
        {"profile_download", "started"},
        {"profile_download", "succeeded"},
        {"zdp_update", "started"},
        {"component_update", "started"},
        {"component_update", "failed"},
        {"component_update", "skipped"},
        {"device_rename", "started"},
        {"landing", "started"},
        {"securing_hardware", "started"},
        {"securing_hardware", "succeeded"},
        {"joining_network", "started"},
        {"joining_network", "succeeded"},
        {"registering_mdm", "started"},
        {"registering_mdm", "succeeded"},
        {"preparing_mdm", "started"},
        {"preparing_mdm", "succeeded"},
        {"device_setup", "started"},
    };
    static const char *const tail[][2] = {
        {"device_setup", "succeeded"},
        {"", "green"},
        {"reseal", "started"},
        {"reseal", "succeeded"},
        {"user_oobe", "started"},
        {"user_signin", "started"},
        {"account_setup", "started"},
        {"account_setup", "succeeded"},
        {"hello_provisioning", "started"},
        {"desktop", "succeeded"},
    };
    json_t *a = json_array();
    int64_t t = at_ms("2026-11-24T08:00:00.000Z");
    uint64_t seq = 0;
    size_t filler = n - 1 - GB_ARRAY_LEN(tech) - GB_ARRAY_LEN(tail);

    assert_true(n >= 40);
    json_array_append_new(a, hello_msg(++seq, t));
    for (size_t i = 0; i < GB_ARRAY_LEN(tech); i++) {
        t += 5000;
        json_t *m = stage_msg(++seq, t, tech[i][0], tech[i][1]);
        if (strcmp(tech[i][1], "failed") == 0) {
            json_object_set_new(m, "hresult", json_string("0x80070002"));
        }
        json_array_append_new(a, m);
    }
    for (size_t i = 0; i < filler; i++) {
        char name[32];
        json_t *m;
        t += 5000;
        snprintf(name, sizeof(name), "App %02zu", (i / 4) % 24);
        switch (i % 4) {
        case 0:
            m = msg(++seq, t, "app");
            json_object_set_new(m, "name", json_string(name));
            json_object_set_new(m, "state", json_string("downloading"));
            break;
        case 1:
            m = msg(++seq, t, "download");
            json_object_set_new(m, "bytes", json_integer(52428800 + (json_int_t)i));
            json_object_set_new(m, "ms", json_integer(5000));
            json_object_set_new(m, "http_bytes", json_integer(31457280));
            json_object_set_new(m, "lan_bytes", json_integer(20971520 + (json_int_t)i));
            break;
        case 2:
            m = msg(++seq, t, "heartbeat");
            break;
        default:
            m = msg(++seq, t, "app");
            json_object_set_new(m, "name", json_string(name));
            json_object_set_new(m, "state", json_string("installed"));
            json_object_set_new(m, "bytes", json_integer(104857600 + (json_int_t)i));
            break;
        }
        json_array_append_new(a, m);
    }
    for (size_t i = 0; i < GB_ARRAY_LEN(tail); i++) {
        t += strcmp(tail[i][0], "user_oobe") == 0 ? 24 * 3600 * 1000LL : 5000;
        json_t *m;
        if (tail[i][0][0] == '\0') {
            m = msg(++seq, t, "result");
            json_object_set_new(m, "screen", json_string(tail[i][1]));
        } else {
            m = stage_msg(++seq, t, tail[i][0], tail[i][1]);
        }
        json_array_append_new(a, m);
    }
    assert_int_equal(json_array_size(a), n);
    return a;
}

/* The request body for serial with msgs[from .. from + n) (heap, free()). */
static char *body_of(const char *serial, json_t *msgs, size_t from, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = from; i < from + n; i++) {
        json_array_append(arr, json_array_get(msgs, i));
    }
    json_t *req = json_pack("{s:i, s:{s:s}, s:o}", "protocol", 1, "device", "serial", serial,
                            "messages", arr);
    char *text = json_dumps(req, JSON_COMPACT);
    json_decref(req);
    return text;
}

/* ---- HTTP ---- */

static void post_raw(int port, const char *token, const char *content_type, const char *body,
                     size_t len, gb_th_resp_t *r)
{
    gb_buf_t h;
    gb_buf_init(&h);
    if (token != NULL) {
        gb_buf_appendf(&h, "Authorization: Bearer %s\r\n", token);
    }
    if (content_type != NULL) {
        gb_buf_appendf(&h, "Content-Type: %s\r\n", content_type);
    }
    gb_th_request(port, "POST", AGENT_PATH, h.data, body, len, r);
    gb_buf_dispose(&h);
}

static void post(srv_t *s, const char *body, gb_th_resp_t *r)
{
    post_raw(s->proc.port, s->agent, "application/json", body, strlen(body), r);
}

/* Posts until the answer is not 503 (a device being rebuilt), as an agent would. */
static void post_until_answered(srv_t *s, const char *body, gb_th_resp_t *r)
{
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(15000);
    for (;;) {
        post(s, body, r);
        if (r->status != 503 || gb_time_mono_ms() > deadline) {
            return;
        }
        gb_th_resp_free(r);
        gb_th_sleep_ms(10);
    }
}

/* Checks a 200 reply: {"acked_seq": acked, "status": status, "stage": stage | null}. */
static void assert_reply(const gb_th_resp_t *r, long long acked, const char *status,
                         const char *stage)
{
    if (r->status != 200) {
        fail_msg("status %d, want 200; body %s", r->status, r->body != NULL ? r->body : "");
    }
    char *ct = gb_th_resp_header(r, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "application/json"));
    free(ct);
    json_error_t e;
    json_t *j = json_loads(r->body, 0, &e);
    if (j == NULL) {
        fail_msg("reply is not JSON: %s", r->body);
    }
    json_t *st = json_object_get(j, "stage");
    bool ok = json_integer_value(json_object_get(j, "acked_seq")) == acked &&
              json_is_integer(json_object_get(j, "acked_seq")) &&
              json_is_string(json_object_get(j, "status")) &&
              strcmp(json_string_value(json_object_get(j, "status")), status) == 0 &&
              (stage == NULL ? json_is_null(st)
                             : json_is_string(st) && strcmp(json_string_value(st), stage) == 0);
    json_decref(j);
    if (!ok) {
        fail_msg("reply %s, want acked_seq %lld, status %s, stage %s", r->body, acked, status,
                 stage != NULL ? stage : "null");
    }
}

/* Checks an error reply: status, JSON content type and {"error": {"code": code, ...}}. */
static void assert_error(const gb_th_resp_t *r, int status, const char *code)
{
    if (r->status != status) {
        fail_msg("status %d, want %d; body %s", r->status, status, r->body ? r->body : "");
    }
    char *ct = gb_th_resp_header(r, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "application/json"));
    free(ct);
    json_t *j = json_loads(r->body, 0, NULL);
    assert_non_null(j);
    json_t *c = json_object_get(json_object_get(j, "error"), "code");
    if (!json_is_string(c) || strcmp(json_string_value(c), code) != 0) {
        fail_msg("body %s, want code %s", r->body, code);
    }
    assert_true(json_is_string(json_object_get(json_object_get(j, "error"), "message")));
    json_decref(j);
}

/* ---- tests ---- */

static void test_happy_path_rows_are_there_when_the_reply_comes(void **state)
{
    const char *serial = "5CG2041HPY";
    const char *p[] = {serial};
    int64_t t = at_ms("2026-11-24T10:00:00.000Z");
    json_t *msgs = json_array();
    json_array_append_new(msgs, hello_msg(1, t));
    json_array_append_new(msgs, stage_msg(2, t + 5000, "oobe", "started"));
    json_array_append_new(msgs, stage_msg(3, t + 70000, "enterprise_provisioning", "started"));
    json_array_append_new(msgs, stage_msg(4, t + 100000, "profile_download", "started"));
    json_array_append_new(msgs, stage_msg(5, t + 125000, "profile_download", "succeeded"));
    /* An offset is normalised to UTC: this is 10:09:02.500Z. */
    json_t *m6 = stage_msg(6, 0, "securing_hardware", "started");
    json_object_set_new(m6, "at", json_string("2026-11-24T11:09:02.5+01:00"));
    json_array_append_new(msgs, m6);
    json_array_append_new(msgs, stage_msg(7, t + 600000, "securing_hardware", "succeeded"));
    json_array_append_new(msgs, stage_msg(8, t + 600000, "joining_network", "started"));
    json_array_append_new(msgs, stage_msg(9, t + 660000, "device_setup", "started"));
    json_t *dl = msg(10, t + 665000, "download");
    json_object_set_new(dl, "bytes", json_integer(52428800));
    json_object_set_new(dl, "ms", json_integer(5000));
    json_array_append_new(msgs, dl);
    json_array_append_new(msgs, stage_msg(11, t + 1800000, "device_setup", "succeeded"));

    gb_th_resp_t r;
    char *body = body_of(serial, msgs, 0, 6);
    post(&main_srv, body, &r);
    assert_reply(&r, 6, "provisioning", "securing_hardware");
    gb_th_resp_free(&r);
    free(body);
    /* No waiting: the reply came after COMMIT, so the rows are there now. */
    assert_int_equal(count_events(main_srv.db, serial), 6);
    char *v = query_text(main_srv.db,
                         "SELECT concat_ws('|', status, stage, attempt, max_seq, needs_rebuild, "
                         "imported_at IS NULL) FROM devices WHERE serial = $1",
                         1, p);
    assert_non_null(v);
    assert_string_equal(v, "provisioning|securing_hardware|1|6|f|t");
    free(v);
    v = query_text(main_srv.db,
                   "SELECT concat_ws('|', type, at = '2026-11-24T10:09:02.500Z', body->>'at') "
                   "FROM events WHERE serial = $1 AND seq = 6",
                   1, p);
    assert_string_equal(v, "stage|t|2026-11-24T10:09:02.500Z");
    free(v);
    v = query_text(main_srv.db,
                   "SELECT string_agg(stage || ':' || state, ',' ORDER BY idx) FROM stage_runs "
                   "WHERE serial = $1",
                   1, p);
    assert_string_equal(v, "oobe:succeeded,enterprise_provisioning:succeeded,"
                           "profile_download:succeeded,securing_hardware:started");
    free(v);

    body = body_of(serial, msgs, 6, 5);
    post(&main_srv, body, &r);
    assert_reply(&r, 11, "green", "device_setup");
    gb_th_resp_free(&r);
    free(body);
    assert_int_equal(count_events(main_srv.db, serial), 11);
    v = query_text(main_srv.db,
                   "SELECT concat_ws('|', status, stage, max_seq, last_seen = "
                   "'2026-11-24T10:30:00Z') FROM devices WHERE serial = $1",
                   1, p);
    assert_string_equal(v, "green|device_setup|11|t");
    free(v);
    v = shown(&main_srv, serial);
    assert_non_null(strstr(v, "\"bytes_downloaded\":52428800"));
    free(v);
    v = query_text(main_srv.db,
                   "SELECT string_agg(stage || ':' || state, ',' ORDER BY idx) FROM stage_runs "
                   "WHERE serial = $1 AND idx >= 3",
                   1, p);
    assert_string_equal(v, "securing_hardware:succeeded,joining_network:succeeded,"
                           "device_setup:succeeded");
    free(v);
    json_decref(msgs);
}

static void test_the_same_batch_twice_is_stored_once(void **state)
{
    const char *serial = "PF3RETRY1";
    const char *p[] = {serial};
    json_t *msgs = device_life(64);
    gb_th_resp_t r1, r2;

    char *a = body_of(serial, msgs, 0, 20);
    post(&main_srv, a, &r1);
    assert_int_equal(r1.status, 200);
    char *before = derived(&main_srv, serial);
    post(&main_srv, a, &r2);
    /* The same reply, the same acked_seq, nothing stored twice, nothing derived twice. */
    assert_int_equal(r2.status, 200);
    assert_string_equal(r1.body, r2.body);
    assert_reply(&r2, 20, "provisioning", "device_setup");
    gb_th_resp_free(&r1);
    gb_th_resp_free(&r2);
    assert_int_equal(count_events(main_srv.db, serial), 20);
    char *after = derived(&main_srv, serial);
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* A resend that overlaps what is held stores only what is new. */
    char *b = body_of(serial, msgs, 10, 30);
    post(&main_srv, b, &r1);
    assert_reply(&r1, 40, "provisioning", "device_setup");
    gb_th_resp_free(&r1);
    assert_int_equal(count_events(main_srv.db, serial), 40);

    /* An old batch once more: acked_seq stays the highest seq held; nothing changes. */
    before = derived(&main_srv, serial);
    post(&main_srv, a, &r1);
    assert_reply(&r1, 40, "provisioning", "device_setup");
    gb_th_resp_free(&r1);
    after = derived(&main_srv, serial);
    assert_string_equal(before, after);
    free(before);
    free(after);

    /* A seq the server holds is ignored even when its content differs: the first one stays. */
    json_t *other = json_array();
    json_array_append_new(other, msg(5, at_ms("2026-11-24T09:00:00.000Z"), "heartbeat"));
    char *c = body_of(serial, other, 0, 1);
    post(&main_srv, c, &r1);
    assert_reply(&r1, 40, "provisioning", "device_setup");
    gb_th_resp_free(&r1);
    char *type =
        query_text(main_srv.db, "SELECT type FROM events WHERE serial = $1 AND seq = 5", 1, p);
    assert_string_equal(type, "stage");
    free(type);
    assert_int_equal(count_events(main_srv.db, serial), 40);

    /* And all of it equals the same 40 messages sent once, in order. */
    char *ref = body_of(serial, msgs, 0, 40);
    post(&ref_srv, ref, &r1);
    assert_reply(&r1, 40, "provisioning", "device_setup");
    gb_th_resp_free(&r1);
    assert_same_derived(serial);

    free(a);
    free(b);
    free(c);
    free(ref);
    json_decref(other);
    json_decref(msgs);
}

/* ---- two connections for one device ---- */

enum { CONC_REQUESTS = 100, CONC_PER_REQUEST = 3 };

typedef struct conc_thread {
    pthread_t thread;
    int parity;      /* sends the requests whose index has this parity */
    bool descending; /* newest first (a backlog sent backwards), else oldest first */
    char **bodies;   /* CONC_REQUESTS request bodies */
    const char *serial;
    int refused; /* 503s received (the device was being rebuilt) */
    char failure[512];
} conc_thread_t;

/* One agent connection (keep-alive) sending its share of the requests. Failures are written
 * into t->failure: cmocka's checks must stay on the main thread. */
static void *conc_run(void *arg)
{
    conc_thread_t *t = arg;
    gb_th_conn_t c;
    gb_th_resp_t r;
    gb_buf_t req;
    PGconn *db = PQconnectdb(main_srv.url);
    int64_t deadline = gb_time_mono_ms() + gb_th_scale_ms(30000);

    gb_buf_init(&req);
    if (PQstatus(db) != CONNECTION_OK || gb_th_conn_open(&c, main_srv.proc.port) != 0) {
        snprintf(t->failure, sizeof(t->failure), "cannot connect");
        PQfinish(db);
        return NULL;
    }
    int count = (CONC_REQUESTS - t->parity + 1) / 2;
    for (int n = 0; n < count && t->failure[0] == '\0'; n++) {
        int i = t->parity + 2 * (t->descending ? count - 1 - n : n);
        const char *body = t->bodies[i];
        gb_buf_reset(&req);
        gb_buf_appendf(&req,
                       "POST " AGENT_PATH " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Authorization: Bearer %s\r\nContent-Type: application/json\r\n"
                       "Content-Length: %zu\r\n\r\n%s",
                       main_srv.agent, strlen(body), body);
        for (;;) {
            memset(&r, 0, sizeof(r));
            if (gb_th_conn_send(&c, req.data, req.len) == 0) {
                gb_th_conn_read(&c, &r, 10000);
            }
            if (r.status == 0 || r.closed) {
                /* The server may close a keep-alive connection between requests. */
                gb_th_conn_close(&c);
                if (gb_th_conn_open(&c, main_srv.proc.port) != 0) {
                    snprintf(t->failure, sizeof(t->failure), "cannot reconnect");
                    break;
                }
            }
            if (r.status == 503) {
                t->refused++;
                gb_th_resp_free(&r);
                gb_th_sleep_ms(2);
            } else if (r.status == 0) {
                gb_th_resp_free(&r);
            } else {
                break;
            }
            if (gb_time_mono_ms() > deadline) {
                snprintf(t->failure, sizeof(t->failure), "request %d not stored in time", i);
                break;
            }
        }
        if (t->failure[0] != '\0') {
            break;
        }
        long long first = (long long)i * CONC_PER_REQUEST + 1;
        long long last = first + CONC_PER_REQUEST - 1;
        json_t *j = r.status == 200 ? json_loads(r.body, 0, NULL) : NULL;
        long long acked = json_integer_value(json_object_get(j, "acked_seq"));
        json_decref(j);
        if (r.status != 200 || acked < last) {
            snprintf(t->failure, sizeof(t->failure), "request %d: status %d, body %s", i, r.status,
                     r.body != NULL ? r.body : "");
        } else {
            /* Acknowledged means committed: every message of the request is a row now. */
            char lo[24], hi[24];
            snprintf(lo, sizeof(lo), "%lld", first);
            snprintf(hi, sizeof(hi), "%lld", last);
            const char *p[] = {t->serial, lo, hi};
            PGresult *res = PQexecParams(db,
                                         "SELECT count(*) FROM events WHERE serial = $1 AND "
                                         "seq BETWEEN $2::bigint AND $3::bigint",
                                         3, NULL, p, NULL, NULL, 0);
            if (PQresultStatus(res) != PGRES_TUPLES_OK ||
                atoi(PQgetvalue(res, 0, 0)) != CONC_PER_REQUEST) {
                snprintf(t->failure, sizeof(t->failure),
                         "request %d acknowledged but its rows are not all there", i);
            }
            PQclear(res);
        }
        gb_th_resp_free(&r);
    }
    gb_th_conn_close(&c);
    gb_buf_dispose(&req);
    PQfinish(db);
    return NULL;
}

static void test_two_connections_for_one_device_equal_a_sequential_replay(void **state)
{
    const char *serial = "PF3TWIN01";
    json_t *msgs = device_life(CONC_REQUESTS * CONC_PER_REQUEST);
    char *bodies[CONC_REQUESTS];
    conc_thread_t t[2];
    gb_th_resp_t r;

    for (size_t i = 0; i < CONC_REQUESTS; i++) {
        bodies[i] = body_of(serial, msgs, i * CONC_PER_REQUEST, CONC_PER_REQUEST);
    }
    for (int k = 0; k < 2; k++) {
        memset(&t[k], 0, sizeof(t[k]));
        t[k].parity = k;
        /* One connection sends newest first: most of its requests fill gaps below what the
         * other has stored, so the device is rebuilt again and again while both report. */
        t[k].descending = k == 1;
        t[k].bodies = bodies;
        t[k].serial = serial;
        assert_int_equal(pthread_create(&t[k].thread, NULL, conc_run, &t[k]), 0);
    }
    for (int k = 0; k < 2; k++) {
        pthread_join(t[k].thread, NULL);
    }
    for (int k = 0; k < 2; k++) {
        if (t[k].failure[0] != '\0') {
            fail_msg("connection %d: %s", k, t[k].failure);
        }
    }
    print_message("two connections: %d and %d requests refused while the device was rebuilt\n",
                  t[0].refused, t[1].refused);

    /* A retry of the last message: answered once no rebuild is under way. */
    json_t *last = json_array();
    json_array_append(last, json_array_get(msgs, CONC_REQUESTS * CONC_PER_REQUEST - 1));
    char *sync = body_of(serial, last, 0, 1);
    post_until_answered(&main_srv, sync, &r);
    assert_reply(&r, CONC_REQUESTS * CONC_PER_REQUEST, "delivered", "desktop");
    gb_th_resp_free(&r);
    assert_int_equal(count_events(main_srv.db, serial), CONC_REQUESTS * CONC_PER_REQUEST);

    /* The reference gets the same requests, one at a time, in order. */
    for (size_t i = 0; i < CONC_REQUESTS; i++) {
        post(&ref_srv, bodies[i], &r);
        assert_int_equal(r.status, 200);
        gb_th_resp_free(&r);
    }
    assert_same_derived(serial);

    for (size_t i = 0; i < CONC_REQUESTS; i++) {
        free(bodies[i]);
    }
    free(sync);
    json_decref(last);
    json_decref(msgs);
}

static void test_a_gap_filled_later_equals_the_in_order_result(void **state)
{
    const char *serial = "PF3GAP01";
    const char *p[] = {serial};
    int64_t t = at_ms("2026-11-24T10:00:00.000Z");
    json_t *msgs = json_array();
    json_array_append_new(msgs, hello_msg(1, t));
    json_array_append_new(msgs, stage_msg(2, t + 5000, "oobe", "started"));
    json_array_append_new(msgs, stage_msg(3, t + 480000, "securing_hardware", "started"));
    json_array_append_new(
        msgs, winevent_msg(4, t + 1020000, CH_AUTOPILOT, 156,
                           "AutopilotManager reported that MSA TPM is not configured for hardware "
                           "TPM attestation even though profile indicates it is required. "
                           "Autopilot cannot proceed."));
    json_t *red = msg(5, t + 1021000, "result");
    json_object_set_new(red, "screen", json_string("red"));
    json_array_append_new(msgs, red);
    gb_th_resp_t r;

    /* Seqs 1, 2, then 5: the request carrying 3 and 4 was lost on the way. */
    char *b12 = body_of(serial, msgs, 0, 2);
    char *b5 = body_of(serial, msgs, 4, 1);
    char *b34 = body_of(serial, msgs, 2, 2);
    post(&main_srv, b12, &r);
    assert_reply(&r, 2, "provisioning", "oobe");
    gb_th_resp_free(&r);
    post(&main_srv, b5, &r);
    /* Without 3 and 4 the red screen finds the device in oobe. */
    assert_reply(&r, 5, "red", "oobe");
    gb_th_resp_free(&r);
    assert_int_equal(count_events(main_srv.db, serial), 3);

    /* 3 and 4 arrive: stored, and the device rebuilt from its events in seq order. The reply
     * waits for the rebuild, so it already shows the in-order state. */
    post_until_answered(&main_srv, b34, &r);
    assert_reply(&r, 5, "red", "securing_hardware");
    gb_th_resp_free(&r);
    assert_int_equal(count_events(main_srv.db, serial), 5);
    char *v = query_text(main_srv.db,
                         "SELECT concat_ws('|', status, stage, diagnosis, max_seq, needs_rebuild) "
                         "FROM devices WHERE serial = $1",
                         1, p);
    assert_string_equal(v, "red|securing_hardware|tpm_attestation|5|f");
    free(v);
    /* Later requests are served as usual. */
    post_until_answered(&main_srv, b5, &r);
    assert_reply(&r, 5, "red", "securing_hardware");
    gb_th_resp_free(&r);

    char *all = body_of(serial, msgs, 0, 5);
    post(&ref_srv, all, &r);
    assert_reply(&r, 5, "red", "securing_hardware");
    gb_th_resp_free(&r);
    assert_same_derived(serial);

    free(b12);
    free(b5);
    free(b34);
    free(all);
    json_decref(msgs);
}

/* ---- the vectors ---- */

static int cmp_names(const void *a, const void *b)
{
    return strcmp(a, b);
}

/* The names of dir's *.json files, sorted; returns how many. */
static size_t list_vectors(const char *dir, char names[][128], size_t max)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    size_t n = 0;
    assert_non_null(d);
    while ((e = readdir(d)) != NULL) {
        size_t len = strlen(e->d_name);
        if (len > 5 && len < 128 && strcmp(e->d_name + len - 5, ".json") == 0 && n < max) {
            memcpy(names[n], e->d_name, len + 1);
            n++;
        }
    }
    closedir(d);
    qsort(names, n, sizeof(names[0]), cmp_names);
    return n;
}

static json_t *load_vector(const char *dir, const char *name)
{
    char path[512];
    json_error_t e;
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    json_t *v = json_load_file(path, 0, &e);
    if (v == NULL) {
        fail_msg("%s: %s (line %d)", path, e.text, e.line);
    }
    return v;
}

static void check_valid_vector(const char *name, json_t *v)
{
    json_t *req = json_object_get(v, "request");
    json_t *want = json_object_get(json_object_get(v, "expect"), "reply");
    const char *serial =
        json_string_value(json_object_get(json_object_get(req, "device"), "serial"));
    assert_non_null(serial);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(v, "expect"), "status")),
                     200);
    char *body = json_dumps(req, JSON_COMPACT);
    json_t *st = json_object_get(want, "stage");
    gb_th_resp_t r;

    /* Twice: a retry of the same request gets the same reply. */
    for (int round = 0; round < 2; round++) {
        post(&main_srv, body, &r);
        if (r.status != 200) {
            fail_msg("%s: status %d, body %s", name, r.status, r.body ? r.body : "");
        }
        assert_reply(&r, json_integer_value(json_object_get(want, "acked_seq")),
                     json_string_value(json_object_get(want, "status")),
                     json_is_string(st) ? json_string_value(st) : NULL);
        gb_th_resp_free(&r);
        /* Every distinct seq of the request is a row, each stored once. */
        size_t i;
        json_t *m;
        long long distinct = 0;
        json_array_foreach(json_object_get(req, "messages"), i, m)
        {
            bool seen = false;
            for (size_t k = 0; k < i; k++) {
                seen = seen || json_integer_value(json_object_get(
                                   json_array_get(json_object_get(req, "messages"), k), "seq")) ==
                                   json_integer_value(json_object_get(m, "seq"));
            }
            distinct += !seen;
        }
        if (count_events(main_srv.db, serial) != distinct) {
            fail_msg("%s: %lld rows for %lld messages", name, count_events(main_srv.db, serial),
                     distinct);
        }
    }
    free(body);
}

static void check_invalid_vector(const char *name, json_t *v, bool *codes_seen, bool *types_seen)
{
    static const char *const codes[] = {"malformed_json", "unsupported_protocol", "invalid_request",
                                        "invalid_message"};
    static const char *const types[] = {"hello",    "stage",  "app",      "download",
                                        "winevent", "result", "heartbeat"};
    json_t *expect = json_object_get(v, "expect");
    const char *code = json_string_value(json_object_get(expect, "code"));
    json_t *want_index = json_object_get(expect, "index");
    json_t *want_field = json_object_get(expect, "field");
    json_t *text = json_object_get(v, "request_text");
    json_t *req = json_object_get(v, "request");
    char *body = json_is_string(text) ? gb_xstrdup(json_string_value(text))
                                      : json_dumps(req, JSON_COMPACT | JSON_ENCODE_ANY);
    assert_non_null(code);
    assert_non_null(body);
    assert_true(json_is_null(want_index) || json_is_integer(want_index));
    assert_true(json_is_null(want_field) || json_is_string(want_field));

    long long events = count_all(main_srv.db, "events");
    long long devices = count_all(main_srv.db, "devices");
    gb_th_resp_t r;
    post(&main_srv, body, &r);
    if (r.status != json_integer_value(json_object_get(expect, "status"))) {
        fail_msg("%s: status %d, body %s", name, r.status, r.body ? r.body : "");
    }
    json_t *j = json_loads(r.body, 0, NULL);
    json_t *e = json_object_get(j, "error");
    json_t *got_index = json_object_get(e, "index");
    json_t *got_field = json_object_get(e, "field");
    bool ok = json_is_string(json_object_get(e, "code")) &&
              strcmp(json_string_value(json_object_get(e, "code")), code) == 0 &&
              json_is_string(json_object_get(e, "message")) &&
              (json_is_null(want_index)
                   ? got_index == NULL
                   : json_integer_value(got_index) == json_integer_value(want_index)) &&
              (json_is_null(want_field)
                   ? got_field == NULL
                   : json_is_string(got_field) &&
                         strcmp(json_string_value(got_field), json_string_value(want_field)) == 0);
    if (!ok) {
        fail_msg("%s: got %s", name, r.body);
    }
    char *ct = gb_th_resp_header(&r, "Content-Type");
    assert_non_null(ct);
    assert_non_null(strstr(ct, "application/json"));
    free(ct);
    json_decref(j);
    gb_th_resp_free(&r);
    /* Nothing of a rejected request is stored, not even its good messages. */
    if (count_all(main_srv.db, "events") != events ||
        count_all(main_srv.db, "devices") != devices) {
        fail_msg("%s: a rejected request left rows behind", name);
    }
    for (size_t i = 0; i < GB_ARRAY_LEN(codes); i++) {
        codes_seen[i] = codes_seen[i] || strcmp(codes[i], code) == 0;
    }
    if (strcmp(code, "invalid_message") == 0) {
        json_t *m = json_array_get(json_object_get(req, "messages"),
                                   (size_t)json_integer_value(want_index));
        const char *type = json_string_value(json_object_get(m, "type"));
        for (size_t i = 0; type != NULL && i < GB_ARRAY_LEN(types); i++) {
            types_seen[i] = types_seen[i] || strcmp(types[i], type) == 0;
        }
    }
    free(body);
}

static void test_every_protocol_vector(void **state)
{
    static char names[64][128];
    bool codes_seen[4] = {false}, types_seen[7] = {false};

    size_t n = list_vectors(VECTORS "/valid", names, 64);
    assert_true(n >= 4);
    for (size_t i = 0; i < n; i++) {
        json_t *v = load_vector(VECTORS "/valid", names[i]);
        check_valid_vector(names[i], v);
        json_decref(v);
    }
    n = list_vectors(VECTORS "/invalid", names, 64);
    assert_in_range(n, 20, 60);
    for (size_t i = 0; i < n; i++) {
        json_t *v = load_vector(VECTORS "/invalid", names[i]);
        check_invalid_vector(names[i], v, codes_seen, types_seen);
        json_decref(v);
    }
    /* The vectors cover every error code and a field error of every message type. */
    for (size_t i = 0; i < GB_ARRAY_LEN(codes_seen); i++) {
        assert_true(codes_seen[i]);
    }
    for (size_t i = 0; i < GB_ARRAY_LEN(types_seen); i++) {
        assert_true(types_seen[i]);
    }
}

/* ---- refusals and limits ---- */

static void test_refusals_store_nothing(void **state)
{
    const char *serial = "PF3REFUSE1";
    json_t *msgs = device_life(40);
    char *body = body_of(serial, msgs, 0, 5);
    size_t len = strlen(body);
    int port = main_srv.proc.port;
    long long events = count_all(main_srv.db, "events");
    gb_th_resp_t r;

    post_raw(port, main_srv.agent, "text/plain", body, len, &r);
    assert_error(&r, 415, "unsupported_media_type");
    gb_th_resp_free(&r);
    post_raw(port, main_srv.agent, NULL, body, len, &r);
    assert_error(&r, 415, "unsupported_media_type");
    gb_th_resp_free(&r);

    post_raw(port, NULL, "application/json", body, len, &r);
    assert_error(&r, 401, "unauthorized");
    char *www = gb_th_resp_header(&r, "WWW-Authenticate");
    assert_non_null(www);
    free(www);
    gb_th_resp_free(&r);
    post_raw(port, "gbt_not-a-real-token", "application/json", body, len, &r);
    assert_error(&r, 401, "unauthorized");
    gb_th_resp_free(&r);
    post_raw(port, viewer_token, "application/json", body, len, &r);
    assert_error(&r, 403, "forbidden");
    gb_th_resp_free(&r);
    post_raw(port, technician_token, "application/json", body, len, &r);
    assert_error(&r, 403, "forbidden");
    gb_th_resp_free(&r);

    gb_th_request(port, "GET", AGENT_PATH, NULL, NULL, 0, &r);
    assert_error(&r, 405, "method_not_allowed");
    char *allow = gb_th_resp_header(&r, "Allow");
    assert_non_null(allow);
    assert_non_null(strstr(allow, "POST"));
    free(allow);
    gb_th_resp_free(&r);
    gb_th_request(port, "PUT", AGENT_PATH, "Content-Type: application/json\r\n", body, len, &r);
    assert_error(&r, 405, "method_not_allowed");
    gb_th_resp_free(&r);

    assert_int_equal(count_all(main_srv.db, "events"), events);
    const char *p[] = {serial};
    assert_int_equal(query_int(main_srv.db, "SELECT count(*) FROM devices WHERE serial = $1", 1, p),
                     0);

    /* The same body passes with a media type parameter, in any case, and an admin token. */
    post_raw(port, admin_token, "Application/JSON; charset=utf-8", body, len, &r);
    assert_reply(&r, 5, "provisioning", "profile_download");
    gb_th_resp_free(&r);
    assert_int_equal(count_events(main_srv.db, serial), 5);
    free(body);
    json_decref(msgs);
}

static void test_an_unknown_serial_is_accepted_and_flagged_not_imported(void **state)
{
    const char *serial = "NEVER-IMPORTED-7";
    const char *p[] = {serial};
    json_t *msgs = json_array();
    json_array_append_new(msgs, hello_msg(1, at_ms("2026-11-24T10:00:00.000Z")));
    char *body = body_of(serial, msgs, 0, 1);
    gb_th_resp_t r;

    post(&main_srv, body, &r);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"acked_seq\":1,\"status\":\"registered\",\"stage\":null}");
    gb_th_resp_free(&r);
    /* Never imported: no import time, and the state says so (the views show not_imported). */
    char *v = query_text(main_srv.db,
                         "SELECT concat_ws('|', status, stage IS NULL, imported_at IS NULL, "
                         "state->>'imported', state->>'model', state->>'slot') "
                         "FROM devices WHERE serial = $1",
                         1, p);
    assert_non_null(v);
    assert_string_equal(v, "registered|t|t|false|EliteBook 840 G8|A-12");
    free(v);
    free(body);
    json_decref(msgs);
}

/* A request of exactly len bytes for serial: n events the server does not translate (so the
 * device stays registered), their texts padded to the size. */
static char *body_of_size(const char *serial, size_t n, size_t len)
{
    json_t *msgs = json_array();
    for (size_t i = 0; i < n; i++) {
        json_array_append_new(
            msgs, winevent_msg(i + 1, at_ms("2026-11-24T10:00:00.000Z"), CH_AUTOPILOT, 9999, ""));
    }
    char *empty = body_of(serial, msgs, 0, n);
    size_t base = strlen(empty);
    free(empty);
    assert_true(len >= base);
    size_t extra = len - base;
    for (size_t i = 0; i < n; i++) {
        size_t k = extra / n + (i == n - 1 ? extra % n : 0);
        char *text = gb_xmalloc(k + 1);
        memset(text, 'x', k);
        text[k] = '\0';
        json_object_set_new(json_array_get(msgs, i), "message", json_string(text));
        free(text);
    }
    char *body = body_of(serial, msgs, 0, n);
    assert_int_equal(strlen(body), len);
    json_decref(msgs);
    return body;
}

/* Announces a body of len bytes and sends none of it: the answer comes from the head alone. */
static void announce_body(int port, const char *token, size_t len, bool chunked, gb_th_resp_t *r)
{
    gb_th_conn_t c;
    char head[512];
    assert_int_equal(gb_th_conn_open(&c, port), 0);
    if (chunked) {
        snprintf(head, sizeof(head),
                 "POST " AGENT_PATH " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                 "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n",
                 token, len);
    } else {
        snprintf(head, sizeof(head),
                 "POST " AGENT_PATH " HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                 "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                 token, len);
    }
    assert_int_equal(gb_th_conn_send(&c, head, strlen(head)), 0);
    gb_th_conn_read(&c, r, 5000);
    gb_th_conn_close(&c);
}

static void test_body_limits(void **state)
{
    gb_th_resp_t r;

    /* The default limit is 1 MiB: exactly that much is taken, one byte more is refused. */
    char *body = body_of_size("PF3BIG01", 17, 1048576);
    post(&main_srv, body, &r);
    assert_reply(&r, 17, "registered", NULL);
    gb_th_resp_free(&r);
    free(body);
    assert_int_equal(count_events(main_srv.db, "PF3BIG01"), 17);
    announce_body(main_srv.proc.port, main_srv.agent, 1048577, false, &r);
    assert_error(&r, 413, "body_too_large");
    gb_th_resp_free(&r);

    /* A server started with --max-body 64K. */
    srv_t small;
    const char *extra[] = {"--log-level", "info", "--max-body", "64K", NULL};
    assert_int_equal(srv_start(&small, extra, NULL), 0);
    body = body_of_size("PF3SMALL1", 2, 65536);
    post(&small, body, &r);
    assert_reply(&r, 2, "registered", NULL);
    gb_th_resp_free(&r);
    free(body);
    announce_body(small.proc.port, small.agent, 65537, false, &r);
    assert_error(&r, 413, "body_too_large");
    gb_th_resp_free(&r);
    announce_body(small.proc.port, small.agent, 65537, true, &r);
    assert_error(&r, 413, "body_too_large");
    gb_th_resp_free(&r);
    /* A whole body over the limit, sent in full, is refused and leaves nothing behind. */
    body = body_of_size("PF3SMALL2", 2, 65537);
    post(&small, body, &r);
    assert_true(r.status == 413 || r.status == 0);
    gb_th_resp_free(&r);
    free(body);
    assert_int_equal(count_all(small.db, "events"), 2);
    assert_int_equal(srv_stop(&small), 0);
}

/* Snapshots are written only now and then; a restart (even a SIGKILL) replays the messages
 * stored after them, so every device shows what it showed before. */
static void test_a_restart_shows_the_same_states(void **state)
{
    /* At least one device has a stored snapshot that lags its stored messages, or this proves
     * nothing (which devices lag depends on where each one's snapshots fall). */
    char *lagging = query_text(main_srv.db,
                               "SELECT min(serial) FROM devices d WHERE snap_seq < "
                               "(SELECT max(seq) FROM events e WHERE e.serial = d.serial)",
                               0, NULL);
    assert_non_null(lagging);
    assert_true(lagging[0] != '\0');
    const char *const serials[] = {"PF3RETRY1", "PF3TWIN01", "PF3GAP01", "NEVER-IMPORTED-7",
                                   lagging};
    char *before[GB_ARRAY_LEN(serials)];
    const char *extra[] = {"--log-level", "info", NULL};
    for (size_t i = 0; i < GB_ARRAY_LEN(serials); i++) {
        before[i] = derived(&main_srv, serials[i]);
    }
    assert_int_equal(gb_th_server_stop(&main_srv.proc, SIGKILL, 10000), 128 + SIGKILL);
    assert_int_equal(gb_th_server_start(&main_srv.proc, main_srv.url, extra), 0);
    for (size_t i = 0; i < GB_ARRAY_LEN(serials); i++) {
        char *after = derived(&main_srv, serials[i]);
        if (strcmp(before[i], after) != 0) {
            fail_diff(serials[i], "differs after a restart", after, before[i]);
        }
        free(after);
        free(before[i]);
    }
    /* The lagging device's stored row and stage runs lagged the replayed state: its next report
     * brings them up to date. */
    const char *p[] = {lagging};
    long long seq =
        query_int(main_srv.db, "SELECT max(seq) + 1 FROM events WHERE serial = $1", 1, p);
    char *view = shown(&main_srv, lagging);
    json_t *j = json_loads(view, 0, NULL);
    assert_non_null(j);
    json_t *hb = json_array();
    /* Five seconds after the last message, on the device's clock. */
    json_t *seen = json_object_get(j, "last_seen");
    assert_true(json_is_string(seen));
    json_array_append_new(hb,
                          msg((uint64_t)seq, at_ms(json_string_value(seen)) + 5000, "heartbeat"));
    char *body = body_of(lagging, hb, 0, 1);
    gb_th_resp_t r;
    post(&main_srv, body, &r);
    assert_reply(&r, seq, json_string_value(json_object_get(j, "status")),
                 json_string_value(json_object_get(j, "stage")));
    gb_th_resp_free(&r);
    free(body);
    json_decref(hb);
    assert_int_equal(query_int(main_srv.db, "SELECT max_seq FROM devices WHERE serial = $1", 1, p),
                     seq);
    json_t *timeline = json_object_get(j, "timeline");
    assert_true(json_array_size(timeline) > 0);
    assert_int_equal(
        query_int(main_srv.db, "SELECT count(*) FROM stage_runs WHERE serial = $1", 1, p),
        (long long)json_array_size(timeline));
    json_t *run = json_array_get(timeline, json_array_size(timeline) - 1);
    char want[128];
    snprintf(want, sizeof(want), "%s:%s", json_string_value(json_object_get(run, "stage")),
             json_string_value(json_object_get(run, "state")));
    char *last = query_text(main_srv.db,
                            "SELECT stage || ':' || state FROM stage_runs WHERE serial = $1 "
                            "ORDER BY idx DESC LIMIT 1",
                            1, p);
    assert_string_equal(last, want);
    free(last);
    json_decref(j);
    free(view);
    free(lagging);
}

/* Devices that report in step (each sends its next messages in turn, as a fleet started
 * together does) do not all store their snapshots in the same batches: the snapshots end at
 * different seqs, and none lags its device by SNAPSHOT_EVERY (32) messages or more. */
static void test_devices_in_step_spread_their_snapshots(void **state)
{
    (void)state;
    enum { DEVICES = 32, ROUNDS = 10, PER_REQUEST = 4 };
    int64_t t0 = at_ms("2026-11-24T08:00:00.000Z");
    for (int round = 0; round < ROUNDS; round++) {
        for (int d = 0; d < DEVICES; d++) {
            char serial[32];
            snprintf(serial, sizeof(serial), "PF3STEP%02d", d);
            json_t *msgs = json_array();
            for (int i = 0; i < PER_REQUEST; i++) {
                uint64_t seq = (uint64_t)round * PER_REQUEST + (uint64_t)i + 1;
                int64_t at = t0 + (int64_t)seq * 5000;
                json_array_append_new(msgs,
                                      seq == 1 ? hello_msg(seq, at) : msg(seq, at, "heartbeat"));
            }
            char *body = body_of(serial, msgs, 0, PER_REQUEST);
            gb_th_resp_t r;
            post(&main_srv, body, &r);
            assert_int_equal(r.status, 200);
            gb_th_resp_free(&r);
            free(body);
            json_decref(msgs);
        }
    }
    /* The stored rows lag too (written with a snapshot or a change that people query by):
     * the stored messages say how far each device is. */
    assert_int_equal(count_all(main_srv.db, "devices WHERE serial LIKE 'PF3STEP%'"), DEVICES);
    assert_int_equal(count_all(main_srv.db, "events WHERE serial LIKE 'PF3STEP%'"),
                     DEVICES * ROUNDS * PER_REQUEST);
    assert_int_equal(count_all(main_srv.db, "devices d WHERE serial LIKE 'PF3STEP%' AND "
                                            "snap_seq <= (SELECT max(seq) FROM events e "
                                            "WHERE e.serial = d.serial) - 32"),
                     0);
    /* In step, every device would otherwise take its second snapshot at seq 36. */
    long long distinct = query_int(main_srv.db,
                                   "SELECT count(DISTINCT snap_seq) FROM devices "
                                   "WHERE serial LIKE 'PF3STEP%'",
                                   0, NULL);
    print_message("snapshots of %d devices in step end at %lld different seqs\n", DEVICES,
                  distinct);
    assert_true(distinct >= 4);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_happy_path_rows_are_there_when_the_reply_comes),
        cmocka_unit_test(test_the_same_batch_twice_is_stored_once),
        cmocka_unit_test(test_two_connections_for_one_device_equal_a_sequential_replay),
        cmocka_unit_test(test_a_gap_filled_later_equals_the_in_order_result),
        cmocka_unit_test(test_every_protocol_vector),
        cmocka_unit_test(test_refusals_store_nothing),
        cmocka_unit_test(test_an_unknown_serial_is_accepted_and_flagged_not_imported),
        cmocka_unit_test(test_body_limits),
        cmocka_unit_test(test_a_restart_shows_the_same_states),
        cmocka_unit_test(test_devices_in_step_spread_their_snapshots),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
