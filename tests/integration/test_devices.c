/* The device resources against a real gloveboxd and PostgreSQL: the list with every filter and
 * its cursor (complete and duplicate-free while ingest adds devices), the detail, the stored
 * events in seq order, the technician's actions (retry only when red, note, assign_slot, each
 * recorded with the token's name), and the refusals (400 naming the field, 404, 401, 403, 405,
 * 415). A retry survives a restart and a rebuild of the device from its stored events. */
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

#define AGENT_PATH "/api/v1/agent/messages"
#define T0         "2026-11-24T08:00:00.000Z"

static char url[512];
static gb_th_server_t srv;
static char *agent, *viewer, *tech;
static PGconn *db;

static int setup(void **state)
{
    (void)state;
    const char *extra[] = {"--log-level", "info", NULL};
    if (gb_th_db_create(url, sizeof(url)) != 0) {
        return -1;
    }
    agent = gb_th_token_create(url, "agent", "bench-agent");
    viewer = gb_th_token_create(url, "viewer", "lead");
    tech = gb_th_token_create(url, "technician", "tech-anna");
    if (agent == NULL || viewer == NULL || tech == NULL ||
        gb_th_server_start(&srv, url, extra) != 0) {
        return -1;
    }
    db = PQconnectdb(url);
    return PQstatus(db) == CONNECTION_OK ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    int rc = gb_th_server_stop(&srv, SIGTERM, 10000);
    PQfinish(db);
    free(agent);
    free(viewer);
    free(tech);
    return rc == 0 ? 0 : -1;
}

static void restart(void)
{
    const char *extra[] = {"--log-level", "info", NULL};
    assert_int_equal(gb_th_server_stop(&srv, SIGTERM, 10000), 0);
    assert_int_equal(gb_th_server_start(&srv, url, extra), 0);
}

static json_t *parse(const gb_th_resp_t *r)
{
    return gb_th_resp_json(r);
}

/* GET path as token; asserts 200 and returns the parsed body. */
static json_t *get_json(const char *path, const char *token)
{
    return gb_th_get_json(srv.port, path, token);
}

/* ---- agent reports ---- */

static json_t *stage(uint64_t seq, int minute, const char *stage, const char *st)
{
    char at[32];
    gb_time_format_rfc3339(1795507200000LL + minute * 60000LL, at);
    return json_pack("{s:I, s:s, s:s, s:s, s:s}", "seq", (json_int_t)seq, "at", at, "type", "stage",
                     "stage", stage, "state", st);
}

static void report(const char *serial, json_t *msgs)
{
    json_t *body = json_pack("{s:i, s:{s:s}, s:o}", "protocol", 1, "device", "serial", serial,
                             "messages", msgs);
    char *text = json_dumps(body, JSON_COMPACT);
    gb_th_resp_t r;
    gb_th_request_auth(srv.port, "POST", AGENT_PATH, agent, text, &r);
    if (r.status != 200) {
        fail_msg("report for %s: %d %s", serial, r.status, r.body);
    }
    gb_th_resp_free(&r);
    free(text);
    json_decref(body);
}

/* A device that went red at securing_hardware (TPM attestation timed out). */
static void report_red(const char *serial)
{
    json_t *m = json_array();
    json_array_append_new(m, stage(1, 0, "securing_hardware", "started"));
    json_t *f = stage(2, 3, "securing_hardware", "failed");
    json_object_set_new(f, "hresult", json_string("0x800705B4"));
    json_array_append_new(m, f);
    report(serial, m);
}

static void report_green(const char *serial)
{
    json_t *m = json_array();
    json_array_append_new(m, stage(1, 0, "securing_hardware", "started"));
    json_array_append_new(m, stage(2, 2, "joining_network", "started"));
    json_array_append_new(m, stage(3, 4, "device_setup", "started"));
    json_array_append_new(m, stage(4, 30, "device_setup", "succeeded"));
    report(serial, m);
}

static void report_provisioning(const char *serial)
{
    json_t *m = json_array();
    json_array_append_new(m, stage(1, 0, "oobe", "started"));
    report(serial, m);
}

/* ---- the list ---- */

/* Walks the whole list with filter query q and page size limit; between pages calls between
 * (may be NULL). Returns every serial seen, in order, as a JSON array. */
static json_t *walk(const char *q, int limit, void (*between)(int page))
{
    json_t *seen = json_array();
    char cursor[512] = "";
    for (int page = 0;; page++) {
        char path[1024];
        snprintf(path, sizeof(path), "/api/v1/devices?limit=%d%s%s%s%s", limit,
                 q[0] != '\0' ? "&" : "", q, cursor[0] != '\0' ? "&cursor=" : "", cursor);
        json_t *j = get_json(path, viewer);
        json_t *devs = json_object_get(j, "devices");
        assert_true(json_is_array(devs));
        assert_true(json_array_size(devs) <= (size_t)limit);
        size_t i;
        json_t *d;
        json_array_foreach(devs, i, d)
        {
            json_array_append(seen, json_object_get(d, "serial"));
        }
        json_t *next = json_object_get(j, "next_cursor");
        if (json_is_null(next)) {
            json_decref(j);
            break;
        }
        assert_true(json_is_string(next));
        snprintf(cursor, sizeof(cursor), "%s", json_string_value(next));
        json_decref(j);
        if (between != NULL) {
            between(page);
        }
        assert_true(page < 1000);
    }
    return seen;
}

static bool has(json_t *arr, const char *s)
{
    size_t i;
    json_t *v;
    json_array_foreach(arr, i, v)
    {
        if (strcmp(json_string_value(v), s) == 0) {
            return true;
        }
    }
    return false;
}

static void assert_sorted_unique(json_t *arr)
{
    for (size_t i = 1; i < json_array_size(arr); i++) {
        const char *a = json_string_value(json_array_get(arr, i - 1));
        const char *b = json_string_value(json_array_get(arr, i));
        if (strcmp(a, b) >= 0) {
            fail_msg("list out of order or doubled: %s then %s", a, b);
        }
    }
}

static int added_between;

/* Adds devices both before and after the cursor's position while the walk goes on. */
static void add_during_walk(int page)
{
    char serial[32];
    snprintf(serial, sizeof(serial), "LST-%03d-A", page); /* sorts among the walked ones */
    report_provisioning(serial);
    snprintf(serial, sizeof(serial), "LSZ-NEW-%03d", page); /* sorts after all of them */
    report_provisioning(serial);
    added_between += 2;
}

static void test_list_walk_is_complete_while_devices_arrive(void **state)
{
    (void)state;
    char serial[32];
    for (int i = 0; i < 45; i++) {
        snprintf(serial, sizeof(serial), "LST-%03d", i);
        report_provisioning(serial);
    }
    json_t *all = walk("q=lst-", 1000, NULL);
    assert_int_equal(json_array_size(all), 45);
    assert_sorted_unique(all);

    json_t *seen = walk("q=LST-", 7, add_during_walk);
    assert_sorted_unique(seen);
    for (int i = 0; i < 45; i++) {
        snprintf(serial, sizeof(serial), "LST-%03d", i);
        if (!has(seen, serial)) {
            fail_msg("the walk missed %s", serial);
        }
    }
    assert_true(added_between > 0);
    json_decref(all);
    json_decref(seen);
}

static void test_filters_narrow_the_list(void **state)
{
    (void)state;
    report_red("FLT-RED-1");
    report_red("FLT-RED-2");
    report_green("FLT-GRN-1");
    report_provisioning("FLT-PRV-1");

    json_t *red = walk("q=FLT-&status=red", 100, NULL);
    assert_int_equal(json_array_size(red), 2);
    assert_true(has(red, "FLT-RED-1") && has(red, "FLT-RED-2"));
    json_t *two = walk("q=flt-&status=red,green", 100, NULL);
    assert_int_equal(json_array_size(two), 3);
    json_t *diag = walk("q=FLT&diagnosis=tpm_attestation", 100, NULL);
    assert_int_equal(json_array_size(diag), 2);
    json_t *stg = walk("q=FLT&stage=oobe", 100, NULL);
    assert_int_equal(json_array_size(stg), 1);
    assert_true(has(stg, "FLT-PRV-1"));
    json_t *fresh = walk("q=FLT&stalled=true", 100, NULL);
    assert_int_equal(json_array_size(fresh), 0);
    json_t *q = walk("q=grn", 100, NULL);
    assert_int_equal(json_array_size(q), 1);

    /* The Device objects carry what the filters looked at. */
    json_t *j = get_json("/api/v1/devices?q=FLT-RED-1", viewer);
    json_t *d = json_array_get(json_object_get(j, "devices"), 0);
    assert_string_equal(json_string_value(json_object_get(d, "status")), "red");
    json_t *dg = json_object_get(d, "diagnosis");
    assert_string_equal(json_string_value(json_object_get(dg, "code")), "tpm_attestation");
    assert_string_equal(json_string_value(json_object_get(dg, "hresult")), "0x800705B4");
    assert_true(json_is_string(json_object_get(dg, "remedy")));
    json_decref(j);
    json_decref(red);
    json_decref(two);
    json_decref(diag);
    json_decref(stg);
    json_decref(fresh);
    json_decref(q);
}

/* fields= narrows each Device to the members named (serial always), the filters still apply, and
 * a page walk with it sees the same devices as one without. */
static void test_fields_narrow_each_device(void **state)
{
    (void)state;
    report_red("FLD-RED-1");
    report_provisioning("FLD-PRV-1");

    json_t *j = get_json("/api/v1/devices?q=FLD-&fields=status,diagnosis", viewer);
    json_t *devs = json_object_get(j, "devices");
    assert_int_equal(json_array_size(devs), 2);
    size_t i;
    json_t *d;
    json_array_foreach(devs, i, d)
    {
        assert_int_equal(json_object_size(d), 3);
        assert_true(json_is_string(json_object_get(d, "serial")));
        assert_true(json_is_string(json_object_get(d, "status")));
        assert_non_null(json_object_get(d, "diagnosis"));
    }
    json_t *red = json_array_get(devs, 0);
    assert_string_equal(json_string_value(json_object_get(red, "serial")), "FLD-PRV-1");
    red = json_array_get(devs, 1);
    assert_string_equal(json_string_value(json_object_get(red, "status")), "red");
    assert_string_equal(
        json_string_value(json_object_get(json_object_get(red, "diagnosis"), "code")),
        "tpm_attestation");
    json_decref(j);

    json_t *narrow = walk("fields=serial", 3, NULL);
    json_t *whole = walk("", 3, NULL);
    assert_true(json_array_size(whole) >= 2);
    assert_true(json_equal(narrow, whole));
    json_decref(narrow);
    json_decref(whole);

    /* A hostile name comes back plain, with its other bytes as '?'. */
    gb_th_resp_t r;
    gb_th_request_auth(srv.port, "GET", "/api/v1/devices?fields=status,%3Cb%3E%0A%C3%A9", viewer,
                       NULL, &r);
    gb_th_assert_json_error(&r, 400, "invalid_query");
    j = parse(&r);
    const char *msg = json_string_value(json_object_get(json_object_get(j, "error"), "message"));
    assert_non_null(msg);
    if (strstr(msg, "\"?b????\"") == NULL) {
        fail_msg("message: %s", msg);
    }
    json_decref(j);
    gb_th_resp_free(&r);
}

static void test_bad_list_queries_name_the_field(void **state)
{
    (void)state;
    static const char *const cases[][2] = {
        {"/api/v1/devices?status=purple", "status"},
        {"/api/v1/devices?status=red,", "status"},
        {"/api/v1/devices?stage=lunch", "stage"},
        {"/api/v1/devices?diagnosis=gremlins", "diagnosis"},
        {"/api/v1/devices?limit=0", "limit"},
        {"/api/v1/devices?limit=1001", "limit"},
        {"/api/v1/devices?limit=ten", "limit"},
        {"/api/v1/devices?cursor=zz", "cursor"},
        {"/api/v1/devices?cursor=s4", "cursor"},
        {"/api/v1/devices?stalled=maybe", "stalled"},
        {"/api/v1/devices?slot=", "slot"},
        {"/api/v1/devices?fields=", "fields"},
        {"/api/v1/devices?fields=status,", "fields"},
        {"/api/v1/devices?fields=status,timeline", "fields"},
        {"/api/v1/devices?fields=status%00", "fields"},
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(cases); i++) {
        gb_th_resp_t r;
        gb_th_request_auth(srv.port, "GET", cases[i][0], viewer, NULL, &r);
        gb_th_assert_json_error(&r, 400, "invalid_query");
        json_t *j = parse(&r);
        const char *field =
            json_string_value(json_object_get(json_object_get(j, "error"), "field"));
        if (field == NULL || strcmp(field, cases[i][1]) != 0) {
            fail_msg("%s: field %s, want %s", cases[i][0], field != NULL ? field : "(none)",
                     cases[i][1]);
        }
        json_decref(j);
        gb_th_resp_free(&r);
    }
}

/* ---- detail and events ---- */

static void test_detail_and_events(void **state)
{
    (void)state;
    report_green("DET-1");
    json_t *j = get_json("/api/v1/devices/DET-1", viewer);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "green");
    json_t *tl = json_object_get(j, "timeline");
    assert_true(json_is_array(tl));
    assert_int_equal(json_array_size(tl), 3);
    assert_true(json_is_array(json_object_get(j, "actions")));
    assert_int_equal(json_array_size(json_object_get(j, "actions")), 0);
    json_decref(j);

    /* Events in seq order, paged by after_seq. */
    j = get_json("/api/v1/devices/DET-1/events?limit=3", viewer);
    json_t *ev = json_object_get(j, "events");
    assert_int_equal(json_array_size(ev), 3);
    for (size_t i = 0; i < 3; i++) {
        json_t *e = json_array_get(ev, i);
        assert_int_equal(json_integer_value(json_object_get(e, "seq")), (json_int_t)i + 1);
        assert_string_equal(json_string_value(json_object_get(e, "type")), "stage");
        json_t *m = json_object_get(e, "message");
        assert_int_equal(json_integer_value(json_object_get(m, "seq")), (json_int_t)i + 1);
        assert_true(json_is_string(json_object_get(e, "received_at")));
    }
    assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 0), "at")),
                        "2026-11-24T08:00:00.000Z");
    assert_int_equal(json_integer_value(json_object_get(j, "next_after_seq")), 3);
    json_decref(j);
    j = get_json("/api/v1/devices/DET-1/events?after_seq=3&limit=3", viewer);
    ev = json_object_get(j, "events");
    assert_int_equal(json_array_size(ev), 1);
    assert_int_equal(json_integer_value(json_object_get(json_array_get(ev, 0), "seq")), 4);
    assert_true(json_is_null(json_object_get(j, "next_after_seq")));
    json_decref(j);

    gb_th_resp_t r;
    gb_th_request_auth(srv.port, "GET", "/api/v1/devices/NOPE-404", viewer, NULL, &r);
    gb_th_assert_json_error(&r, 404, "not_found");
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "GET", "/api/v1/devices/NOPE-404/events", viewer, NULL, &r);
    gb_th_assert_json_error(&r, 404, "not_found");
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "GET", "/api/v1/devices/DET-1/events?after_seq=-1", viewer, NULL,
                       &r);
    gb_th_assert_json_error(&r, 400, "invalid_query");
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "GET", "/api/v1/devices/DET-1/events?limit=5000", viewer, NULL,
                       &r);
    gb_th_assert_json_error(&r, 400, "invalid_query");
    gb_th_resp_free(&r);
}

/* ---- actions ---- */

static void post_action(const char *serial, const char *token, const char *body, gb_th_resp_t *r)
{
    char path[256];
    snprintf(path, sizeof(path), "/api/v1/devices/%s/actions", serial);
    gb_th_request_auth(srv.port, "POST", path, token, body, r);
}

static long long db_int(const char *sql, const char *param)
{
    const char *p[] = {param};
    PGresult *res = PQexecParams(db, sql, 1, NULL, p, NULL, NULL, 0);
    if (PQresultStatus(res) != PGRES_TUPLES_OK || PQntuples(res) != 1) {
        fail_msg("%s: %s", sql, PQresultErrorMessage(res));
    }
    long long v = atoll(PQgetvalue(res, 0, 0));
    PQclear(res);
    return v;
}

static void test_actions(void **state)
{
    (void)state;
    gb_th_resp_t r;
    report_green("ACT-GRN");
    report_red("ACT-RED");

    post_action("ACT-GRN", tech, "{\"action\":\"retry\"}", &r);
    gb_th_assert_json_error(&r, 409, "conflict");
    gb_th_resp_free(&r);

    post_action("ACT-RED", tech, "{\"action\":\"retry\"}", &r);
    assert_int_equal(r.status, 200);
    json_t *j = parse(&r);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "provisioning");
    assert_int_equal(json_integer_value(json_object_get(j, "attempt")), 2);
    json_t *acts = json_object_get(j, "actions");
    assert_int_equal(json_array_size(acts), 1);
    json_t *a0 = json_array_get(acts, 0);
    assert_string_equal(json_string_value(json_object_get(a0, "action")), "retry");
    assert_string_equal(json_string_value(json_object_get(a0, "actor")), "tech-anna");
    json_decref(j);
    gb_th_resp_free(&r);
    /* Not red any more: a second retry conflicts. */
    post_action("ACT-RED", tech, "{\"action\":\"retry\"}", &r);
    gb_th_assert_json_error(&r, 409, "conflict");
    gb_th_resp_free(&r);

    post_action("ACT-GRN", tech, "{\"action\":\"note\",\"text\":\"keyboard \\\"sticky\\\"\"}", &r);
    assert_int_equal(r.status, 200);
    gb_th_resp_free(&r);
    /* The agent names its slot first; the technician's assignment replaces it. */
    json_t *hello =
        json_pack("{s:I, s:s, s:s, s:s, s:s}", "seq", (json_int_t)5, "at",
                  "2026-11-24T08:40:00.000Z", "type", "hello", "agent", "test/1", "slot", "A-12");
    report("ACT-GRN", json_pack("[o]", hello));
    post_action("ACT-GRN", tech, "{\"action\":\"assign_slot\",\"slot\":\"B-07\"}", &r);
    assert_int_equal(r.status, 200);
    j = parse(&r);
    assert_string_equal(json_string_value(json_object_get(j, "slot")), "B-07");
    acts = json_object_get(j, "actions");
    assert_int_equal(json_array_size(acts), 2); /* newest first */
    assert_string_equal(json_string_value(json_object_get(json_array_get(acts, 0), "action")),
                        "assign_slot");
    json_t *note = json_object_get(json_array_get(acts, 1), "detail");
    assert_string_equal(json_string_value(json_object_get(note, "text")), "keyboard \"sticky\"");
    json_decref(j);
    gb_th_resp_free(&r);

    json_t *slot = walk("slot=B-07", 100, NULL);
    assert_int_equal(json_array_size(slot), 1);
    assert_true(has(slot, "ACT-GRN"));
    json_decref(slot);

    assert_int_equal(db_int("SELECT count(*) FROM device_actions WHERE serial = $1 AND actor = "
                            "'tech-anna'",
                            "ACT-GRN"),
                     2);
    assert_int_equal(
        db_int("SELECT count(*) FROM devices WHERE serial = $1 AND slot = 'B-07'", "ACT-GRN"), 1);
    assert_int_equal(db_int("SELECT attempt FROM devices WHERE serial = $1", "ACT-RED"), 2);

    /* The retry and the slot are kept across a restart (snapshot) and across a rebuild from the
     * events. */
    restart();
    j = get_json("/api/v1/devices/ACT-RED", viewer);
    assert_int_equal(json_integer_value(json_object_get(j, "attempt")), 2);
    json_decref(j);
    PQclear(PQexec(db, "UPDATE devices SET needs_rebuild = true "
                       "WHERE serial IN ('ACT-RED', 'ACT-GRN')"));
    restart();
    j = get_json("/api/v1/devices/ACT-RED", viewer);
    assert_int_equal(json_integer_value(json_object_get(j, "attempt")), 2);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "provisioning");
    json_decref(j);
    j = get_json("/api/v1/devices/ACT-GRN", viewer);
    assert_string_equal(json_string_value(json_object_get(j, "slot")), "B-07");
    json_decref(j);
}

static void test_action_refusals(void **state)
{
    (void)state;
    gb_th_resp_t r;
    report_red("REF-1");
    static const char *const bad[][2] = {
        {"[]", "action"},
        {"{}", "action"},
        {"{\"action\":\"reboot\"}", "action"},
        {"{\"action\":42}", "action"},
        {"{\"action\":\"note\"}", "text"},
        {"{\"action\":\"note\",\"text\":\"\"}", "text"},
        {"{\"action\":\"note\",\"text\":\"bell\\u0007\"}", "text"},
        {"{\"action\":\"assign_slot\",\"slot\":\"\"}", "slot"},
        {"{\"action\":\"assign_slot\",\"slot\":\"123456789012345678901234567890123\"}", "slot"},
        {"{\"action\":\"assign_slot\",\"slot\":7}", "slot"},
    };
    for (size_t i = 0; i < GB_ARRAY_LEN(bad); i++) {
        post_action("REF-1", tech, bad[i][0], &r);
        gb_th_assert_json_error(&r, 400, "invalid_request");
        json_t *j = parse(&r);
        const char *field =
            json_string_value(json_object_get(json_object_get(j, "error"), "field"));
        if (field == NULL || strcmp(field, bad[i][1]) != 0) {
            fail_msg("%s: field %s, want %s", bad[i][0], field != NULL ? field : "(none)",
                     bad[i][1]);
        }
        json_decref(j);
        gb_th_resp_free(&r);
    }
    post_action("REF-1", tech, "{\"action\":", &r);
    gb_th_assert_json_error(&r, 400, "malformed_json");
    gb_th_resp_free(&r);
    post_action("NOPE-404", tech, "{\"action\":\"retry\"}", &r);
    gb_th_assert_json_error(&r, 404, "not_found");
    gb_th_resp_free(&r);
    post_action("REF-1", viewer, "{\"action\":\"retry\"}", &r);
    gb_th_assert_json_error(&r, 403, "forbidden");
    gb_th_resp_free(&r);
    post_action("REF-1", agent, "{\"action\":\"retry\"}", &r);
    gb_th_assert_json_error(&r, 403, "forbidden");
    gb_th_resp_free(&r);
    gb_th_request(srv.port, "POST", "/api/v1/devices/REF-1/actions",
                  "Content-Type: application/json\r\n", "{\"action\":\"retry\"}", 18, &r);
    gb_th_assert_json_error(&r, 401, "unauthorized");
    gb_th_resp_free(&r);
    char auth[256];
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s\r\nContent-Type: text/plain\r\n", tech);
    gb_th_request(srv.port, "POST", "/api/v1/devices/REF-1/actions", auth, "{\"action\":\"retry\"}",
                  18, &r);
    gb_th_assert_json_error(&r, 415, "unsupported_media_type");
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "DELETE", "/api/v1/devices/REF-1", tech, NULL, &r);
    gb_th_assert_json_error(&r, 405, "method_not_allowed");
    gb_th_resp_free(&r);
    gb_th_request_auth(srv.port, "GET", "/api/v1/devices", agent, NULL, &r);
    gb_th_assert_json_error(&r, 403, "forbidden");
    gb_th_resp_free(&r);
    gb_th_request(srv.port, "GET", "/api/v1/devices", NULL, NULL, 0, &r);
    gb_th_assert_json_error(&r, 401, "unauthorized");
    gb_th_resp_free(&r);
    /* Nothing of the refused requests was stored; the device is still red. */
    assert_int_equal(db_int("SELECT count(*) FROM device_actions WHERE serial = $1", "REF-1"), 0);
    json_t *j = get_json("/api/v1/devices/REF-1", viewer);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "red");
    json_decref(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_list_walk_is_complete_while_devices_arrive),
        cmocka_unit_test(test_filters_narrow_the_list),
        cmocka_unit_test(test_fields_narrow_each_device),
        cmocka_unit_test(test_bad_list_queries_name_the_field),
        cmocka_unit_test(test_detail_and_events),
        cmocka_unit_test(test_actions),
        cmocka_unit_test(test_action_refusals),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
